//! Who the session runs as: root by default, or `--user NAME|UID[:GROUP|GID]` looked up in the
//! target's own `/etc/passwd` and `/etc/group` (read through `/proc/PID/root`), as the target's
//! processes would see them. Parsing is pure; only `resolve_user` reads files.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::diag::Diagnostic;

/// The identity the session's shell gets, in the target's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The account name, when the target knows one.
    pub name: Option<String>,
    /// The home directory from the target's passwd, if any.
    pub home: Option<PathBuf>,
    /// Whether `--user` was given (then HOME, USER and LOGNAME are set from it).
    pub explicit: bool,
}

/// One line of passwd: name, uid, gid, home.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: PathBuf::from(f.get(5)?),
            })
        })
        .collect()
}

/// (name, gid, members) of each line of group.
fn parse_group(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// Resolves `spec` (None: root) against the target's passwd and group texts.
pub fn choose_user(spec: Option<&str>, passwd: &str, group: &str) -> Result<SessionUser> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let (user_part, group_part) = match spec {
        Some(s) => match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        },
        None => ("0", None),
    };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid).cloned(),
        Err(_) => Some(
            users
                .iter()
                .find(|e| e.name == user_part)
                .cloned()
                .ok_or_else(|| {
                    Diagnostic::new(format!("no user '{user_part}' in the target's /etc/passwd"))
                        .hint("pass a numeric id instead: `--user 1000` or `--user 1000:1000`")
                })?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user_part.parse().unwrap_or(0),
    };
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| {
                    Diagnostic::new(format!("no group '{g}' in the target's /etc/group"))
                        .hint("pass a numeric id instead: `--user 1000:1000`")
                })?,
        },
        None => entry.as_ref().map(|e| e.gid).unwrap_or(uid),
    };
    let mut supplementary = vec![gid];
    if let Some(e) = &entry {
        for (_, g, members) in &groups {
            if members.contains(&e.name) && !supplementary.contains(g) {
                supplementary.push(*g);
            }
        }
    }
    Ok(SessionUser {
        uid,
        gid,
        groups: supplementary,
        name: entry.as_ref().map(|e| e.name.clone()),
        home: entry.map(|e| e.home),
        explicit: spec.is_some(),
    })
}

/// Resolves `spec` in the root of the target at `root` (`/proc/PID/root`).
pub fn resolve_user(spec: Option<&str>, root: &Path) -> Result<SessionUser> {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    choose_user(spec, &read("etc/passwd"), &read("etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nana:x:1000:1000:Ana:/home/ana:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nana:x:1000:\nwheel:x:10:ana,bob\n";

    #[test]
    fn default_is_root_with_roots_home() {
        let u = choose_user(None, PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.explicit), (0, 0, false));
        assert_eq!(u.home, Some(PathBuf::from("/root")));
    }

    #[test]
    fn names_are_looked_up_with_their_groups() {
        let u = choose_user(Some("ana"), PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 10]);
        assert_eq!(u.name.as_deref(), Some("ana"));
        assert_eq!(u.home, Some(PathBuf::from("/home/ana")));
        let u = choose_user(Some("ana:wheel"), PASSWD, GROUP).unwrap();
        assert_eq!(u.gid, 10);
    }

    #[test]
    fn numeric_ids_need_no_passwd() {
        let u = choose_user(Some("4242:4343"), "", "").unwrap();
        assert_eq!((u.uid, u.gid, u.name, u.home), (4242, 4343, None, None));
        let u = choose_user(Some("4242"), "", "").unwrap();
        assert_eq!(u.gid, 4242);
    }

    #[test]
    fn unknown_names_are_refused_with_a_hint() {
        let e = choose_user(Some("bob"), PASSWD, GROUP).unwrap_err();
        assert_eq!(e.to_string(), "no user 'bob' in the target's /etc/passwd");
        assert!(choose_user(Some("ana:nogroup"), PASSWD, GROUP).is_err());
    }
}
