//! The generated `/etc` of an environment: just enough for tools to know who and where they
//! are (passwd, group, hosts, hostname, resolv.conf, nix.conf). Nothing of the host's `/etc`
//! is shown but what is passed in here.

use std::path::{Path, PathBuf};

use super::rootfs::RootOp;

/// The CA bundle path shown inside, and the variables that point tools at it.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The user processes run as inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub group: String,
    pub home: PathBuf,
}

/// What of the host goes into the generated `/etc`.
#[derive(Debug, Clone, Default)]
pub struct EtcInputs {
    pub hostname: String,
    /// The host's resolv.conf, when the network is shared.
    pub resolv_conf: Option<Vec<u8>>,
    /// The host's nix.conf, if any.
    pub nix_conf: Option<Vec<u8>>,
}

fn file(path: &str, contents: impl Into<Vec<u8>>) -> RootOp {
    RootOp::File {
        path: PathBuf::from(path),
        contents: contents.into(),
        mode: 0o644,
    }
}

/// The files of `/etc`, as root steps.
pub fn etc_files(user: &UserIdentity, inputs: &EtcInputs) -> Vec<RootOp> {
    let shell = Path::new("/bin/sh");
    let mut passwd = format!("root:x:0:0:root:/root:{}\n", shell.display());
    let mut group = String::from("root:x:0:\n");
    if user.uid != 0 {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            user.name,
            user.uid,
            user.gid,
            user.name,
            user.home.display(),
            shell.display()
        ));
    }
    if user.gid != 0 {
        group.push_str(&format!("{}:x:{}:\n", user.group, user.gid));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
    group.push_str("nogroup:x:65534:\n");

    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        inputs.hostname
    );
    // Builds inside use the environment's own store layer; there are no build users there.
    let mut nix_conf = inputs.nix_conf.clone().unwrap_or_default();
    if !nix_conf.is_empty() && !nix_conf.ends_with(b"\n") {
        nix_conf.push(b'\n');
    }
    nix_conf.extend_from_slice(
        b"# set by agentenv for the environment\nbuild-users-group =\nsandbox = false\n",
    );

    let mut ops = vec![
        file("/etc/passwd", passwd),
        file("/etc/group", group),
        file("/etc/hosts", hosts),
        file("/etc/hostname", format!("{}\n", inputs.hostname)),
        file("/etc/nix/nix.conf", nix_conf),
    ];
    if let Some(r) = &inputs.resolv_conf {
        ops.push(file("/etc/resolv.conf", r.clone()));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_names_the_user_with_the_home_inside() {
        let user = UserIdentity {
            uid: 1000,
            gid: 1000,
            name: "ana".into(),
            group: "ana".into(),
            home: "/home/ana".into(),
        };
        let ops = etc_files(
            &user,
            &EtcInputs {
                hostname: "agentenv".into(),
                ..Default::default()
            },
        );
        let RootOp::File { contents, .. } = &ops[0] else {
            panic!()
        };
        let text = String::from_utf8(contents.clone()).unwrap();
        assert!(
            text.contains("ana:x:1000:1000:ana:/home/ana:/bin/sh\n"),
            "{text}"
        );
        assert!(!ops
            .iter()
            .any(|o| o.path() == Path::new("/etc/resolv.conf")));
    }
}
