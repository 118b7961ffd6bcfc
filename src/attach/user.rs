//! Who the session runs as: by default the user of the target's main process (root, for most
//! containers) with its groups, or `--user NAME|UID[:GROUP|GID]` looked up in the target's own
//! `/etc/passwd` and `/etc/group` (read through `/proc/PID/root`), as the target's processes
//! would see them. Parsing is pure; only `resolve_user` and `default_user` read files.

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

/// The id `text` names if it is all digits (None: a name). 4294967295 is refused: it is -1
/// to setresuid and setresgid, which leave the id unchanged, so the session would stay root.
fn numeric_id(text: &str, what: &str) -> Result<Option<u32>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(id) if id != u32::MAX => Ok(Some(id)),
        _ => Err(Diagnostic::new(format!(
            "{what} id {text} is out of range: ids go from 0 to {}",
            u32::MAX - 1
        ))
        .hint("pass an id of the target's, e.g. `--user 1000` or `--user 1000:1000`")
        .into()),
    }
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
    let entry = match numeric_id(user_part, "user")? {
        Some(uid) => users.iter().find(|e| e.uid == uid).cloned(),
        None => Some(
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
        None => numeric_id(user_part, "user")?.unwrap_or(0),
    };
    let gid = match group_part {
        Some(g) => match numeric_id(g, "group")? {
            Some(gid) => gid,
            None => groups
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

/// The session's user in the target whose main process is `pid`: `spec` (`--user`) resolved
/// in its root, else the user of that process (root for most containers), checked against
/// its user namespace's maps.
pub fn session_user(pid: i32, spec: Option<&str>) -> Result<SessionUser> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let own = match spec {
        Some(_) => None,
        None => default_user(&super::facts::read_privileges(pid)?, &proc_dir, &root)?,
    };
    let user = match own {
        Some(user) => user,
        None => resolve_user(spec, &root)?,
    };
    check_mapped(&user, &proc_dir)?;
    Ok(user)
}

/// Resolves `spec` in the root of the target at `root` (`/proc/PID/root`).
pub fn resolve_user(spec: Option<&str>, root: &Path) -> Result<SessionUser> {
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
    choose_user(spec, &read("etc/passwd"), &read("etc/group"))
}

/// The session's user when no `--user` is given: that of the target's main process, whose
/// host ids `privileges` has (its uid and gid, and its groups), in the terms of the target's
/// user namespace (`/proc/PID` is `proc_dir`, its root `root`). None: root, or ids its maps
/// do not show.
pub fn default_user(
    privileges: &super::facts::Privileges,
    proc_dir: &Path,
    root: &Path,
) -> Result<Option<SessionUser>> {
    let read = |file: &str| std::fs::read_to_string(proc_dir.join(file)).unwrap_or_default();
    let (uid_map, gid_map) = (read("uid_map"), read("gid_map"));
    let inside = |map: &str, id: u32| match map.is_empty() {
        true => Some(id),
        false => inside_id(map, id),
    };
    let (Some(uid), Some(gid)) = (
        inside(&uid_map, privileges.uid),
        inside(&gid_map, privileges.gid),
    ) else {
        return Ok(None);
    };
    if uid == 0 {
        return Ok(None);
    }
    let mut user = resolve_user(Some(&format!("{uid}:{gid}")), root)?;
    user.groups = std::iter::once(gid)
        .chain(
            privileges
                .groups
                .iter()
                .filter_map(|g| inside(&gid_map, *g)),
        )
        .fold(Vec::new(), |mut all, g| {
            if !all.contains(&g) {
                all.push(g);
            }
            all
        });
    user.explicit = false;
    Ok(Some(user))
}

/// The id inside a user namespace of the outside id `outer`, by its `uid_map` or `gid_map`
/// as read from outside (inside, outside, count).
fn inside_id(map: &str, outer: u32) -> Option<u32> {
    map.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let (inner, outside, count) = (*f.first()?, *f.get(1)?, *f.get(2)?);
        let outer = u64::from(outer);
        (outer >= outside && outer < outside + count)
            .then(|| u32::try_from(inner + (outer - outside)).ok())
            .flatten()
    })
}

/// Refuses a session whose ids the target's user namespace does not map, which the kernel
/// would refuse later with a bare EINVAL. `proc_dir` is the target's `/proc/PID`; a map that
/// cannot be read is not checked.
pub fn check_mapped(user: &SessionUser, proc_dir: &Path) -> Result<()> {
    let mut gids = vec![user.gid];
    gids.extend(user.groups.iter().filter(|g| **g != user.gid));
    for (what, file, ids) in [("uid", "uid_map", vec![user.uid]), ("gid", "gid_map", gids)] {
        let Ok(map) = std::fs::read_to_string(proc_dir.join(file)) else {
            continue;
        };
        let ranges = id_ranges(&map);
        if let Some(id) = ids.iter().find(|id| !is_mapped(&ranges, **id)) {
            return Err(unmapped(what, *id)
                .detail(format!("it maps {what}s {}", describe_ranges(&ranges)))
                .into());
        }
    }
    Ok(())
}

/// The error for an id the target's user namespace does not map.
pub fn unmapped(what: &str, id: u32) -> Diagnostic {
    Diagnostic::new(format!(
        "{what} {id} is not mapped in the target's user namespace"
    ))
    .hint(UNMAPPED_HINT)
}

/// What to do about an id the target's user namespace does not map.
pub const UNMAPPED_HINT: &str =
    "run as an id the target maps, e.g. a user of its /etc/passwd: `--user NAME`";

/// The ids inside the namespace that a `uid_map` or `gid_map` maps, as sorted, merged
/// (first, count) ranges. The first column is the namespace's own id whoever reads the file.
fn id_ranges(map: &str) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = map
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            (f.len() == 3 && f[2] > 0).then(|| (f[0], f[2]))
        })
        .collect();
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (first, count) in ranges {
        match merged.last_mut() {
            Some(last) if last.0 + last.1 >= first => {
                last.1 = last.1.max(first + count - last.0);
            }
            _ => merged.push((first, count)),
        }
    }
    merged
}

fn is_mapped(ranges: &[(u64, u64)], id: u32) -> bool {
    let id = u64::from(id);
    ranges
        .iter()
        .any(|(first, count)| id >= *first && id < first + count)
}

fn describe_ranges(ranges: &[(u64, u64)]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    ranges
        .iter()
        .map(|(first, count)| match count {
            1 => first.to_string(),
            _ => format!("{first}-{}", first + count - 1),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    fn ids_that_setresuid_would_ignore_or_that_do_not_fit_are_refused() {
        for spec in ["4294967295:1000", "1000:4294967295", "4294967295"] {
            let e = choose_user(Some(spec), PASSWD, GROUP).unwrap_err();
            assert!(e.to_string().contains("4294967295 is out of range"), "{e}");
            assert!(e.to_string().contains("0 to 4294967294"), "{e}");
        }
        let e = choose_user(Some("99999999999"), PASSWD, GROUP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "user id 99999999999 is out of range: ids go from 0 to 4294967294"
        );
        let e = choose_user(Some("ana:99999999999"), PASSWD, GROUP).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("group id 99999999999 is out of range"));
        let u = choose_user(Some("4294967294"), "", "").unwrap();
        assert_eq!(u.uid, 4294967294);
    }

    #[test]
    fn id_maps_are_read_as_ranges_inside_the_namespace() {
        let rootless = "         0       1000          1\n         1     100000      65536\n";
        let ranges = id_ranges(rootless);
        assert_eq!(ranges, vec![(0, 65537)]);
        assert!(is_mapped(&ranges, 0) && is_mapped(&ranges, 65536));
        assert!(!is_mapped(&ranges, 70000));
        assert_eq!(describe_ranges(&ranges), "0-65536");
        let host = id_ranges("0 0 4294967295\n");
        assert!(is_mapped(&host, 4294967294));
        let gaps = id_ranges("1000 5000 10\n0 4000 1\n");
        assert_eq!(describe_ranges(&gaps), "0, 1000-1009");
        assert_eq!(describe_ranges(&id_ranges("")), "none");
    }

    #[test]
    fn unmapped_ids_are_named_before_the_kernel_refuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("uid_map"), "0 100000 65536\n").unwrap();
        std::fs::write(tmp.path().join("gid_map"), "0 100000 65536\n").unwrap();
        let mut u = choose_user(Some("70000:1000"), "", "").unwrap();
        let e = check_mapped(&u, tmp.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "uid 70000 is not mapped in the target's user namespace"
        );
        u.uid = 1000;
        check_mapped(&u, tmp.path()).unwrap();
        u.groups.push(80000);
        let e = check_mapped(&u, tmp.path()).unwrap_err();
        assert!(e.to_string().starts_with("gid 80000 is not mapped"), "{e}");
        let none = tempfile::tempdir().unwrap();
        check_mapped(&u, none.path()).unwrap();
    }

    #[test]
    fn outside_ids_are_read_back_through_the_maps() {
        let rootless = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(inside_id(rootless, 1000), Some(0));
        assert_eq!(inside_id(rootless, 100999), Some(1000));
        assert_eq!(inside_id(rootless, 5), None);
        assert_eq!(inside_id("0 0 4294967295\n", 1000), Some(1000));
    }

    #[test]
    fn unknown_names_are_refused_with_a_hint() {
        let e = choose_user(Some("bob"), PASSWD, GROUP).unwrap_err();
        assert_eq!(e.to_string(), "no user 'bob' in the target's /etc/passwd");
        assert!(choose_user(Some("ana:nogroup"), PASSWD, GROUP).is_err());
    }
}
