//! Real containers for the attach tests: images built here from busybox-static (no registry is
//! reachable), run by podman (as root, or rootless as the test user) or docker with the flags
//! this machine needs, and removed when the test ends. Also what a target looks like from the
//! host: its mount table, `podman diff`, its file tree and its processes' fds.
//!
//! Every container carries the pid and start time of the test process that made it; the first
//! use of an engine in a run removes the containers of test processes that are gone (a run
//! killed half-way), and never one of a live run or one without those labels.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::support::{run, stderr, stdout};

/// The unprivileged account scripts/test.sh creates; it has subordinate ids for rootless podman.
const TEST_USER: &str = "agentenv-test";

/// The labels naming the test process that made a container.
const LABEL_PID: &str = "agentenv-test.pid";
const LABEL_START: &str = "agentenv-test.start";

/// `--label` options naming this test process.
fn own_labels() -> Vec<String> {
    let pid = std::process::id() as i32;
    let start = agentenv::runtime::process_start_time(pid).unwrap_or(0);
    vec![
        "--label".into(),
        format!("{LABEL_PID}={pid}"),
        "--label".into(),
        format!("{LABEL_START}={start}"),
    ]
}

/// The root filesystems the tests use. The version in the tag changes with their content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    /// busybox with a few applets linked in /bin, and /etc/passwd with root and ana (1000).
    Busybox,
    /// One file, `/sleep`: a static binary. No shell, no libc, nothing else.
    NoShell,
    /// Busybox, and a store of its own: /nix/store/<hash>-target-tool/bin/target-tool.
    OwnNix,
}

pub const TARGET_TOOL: &str =
    "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-target-tool/bin/target-tool";

impl Image {
    fn tag(self) -> &'static str {
        match self {
            Image::Busybox => "agentenv-attach-busybox:1",
            Image::NoShell => "agentenv-attach-noshell:1",
            Image::OwnNix => "agentenv-attach-ownnix:1",
        }
    }

    /// Writes the root filesystem into `dir`.
    fn build(self, dir: &Path) {
        let put = |rel: &str, data: &[u8], mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
        if self == Image::NoShell {
            put("sleep", &busybox, 0o755);
            return;
        }
        put("bin/busybox", &busybox, 0o755);
        for applet in [
            "sh", "sleep", "cat", "ls", "echo", "id", "touch", "rm", "env",
        ] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        put(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nana:x:1000:1000:Ana:/home/ana:/bin/sh\n",
            0o644,
        );
        put("etc/group", b"root:x:0:\nana:x:1000:\n", 0o644);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        std::fs::create_dir_all(dir.join("home/ana")).unwrap();
        if self == Image::OwnNix {
            put(
                TARGET_TOOL.trim_start_matches('/'),
                b"#!/bin/sh\necho target-tool-ok\n",
                0o755,
            );
        }
    }
}

/// Who runs containers: podman as root, podman as the unprivileged test user, or docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    Podman,
    RootlessPodman { uid: u32, gid: u32, home: PathBuf },
    Docker,
}

/// A container engine that works on this machine, or why not (for a loud skip).
pub struct Runtime {
    pub engine: Engine,
    _state: Option<tempfile::TempDir>,
}

fn works(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Runtime {
    pub fn podman() -> Result<Self, String> {
        if !crate::support::is_root() {
            return Err("attaching needs root".into());
        }
        if !works(Command::new("podman").arg("--version")) {
            return Err("podman is not installed (scripts/test.sh installs it)".into());
        }
        if !works(Command::new("runc").arg("--version")) {
            return Err("runc is not installed (scripts/test.sh installs it)".into());
        }
        Ok(Self {
            engine: Engine::Podman,
            _state: None,
        }
        .swept_once())
    }

    pub fn docker() -> Result<Self, String> {
        if !crate::support::is_root() {
            return Err("attaching needs root".into());
        }
        if !works(Command::new("docker").arg("version")) {
            return Err("no Docker Engine answers on this machine".into());
        }
        Ok(Self {
            engine: Engine::Docker,
            _state: None,
        }
        .swept_once())
    }

    /// This runtime, after the first use of its engine in this run swept what killed runs left.
    fn swept_once(self) -> Self {
        static SWEPT: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let key = format!("{:?}", self.engine);
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if !swept.contains(&key) {
            swept.push(key);
            let removed = self.sweep_leftovers();
            if !removed.is_empty() {
                eprintln!("removed containers of test runs that are gone: {removed:?}");
            }
        }
        self
    }

    /// Removes the containers whose creating test process is gone: labelled by a test, with a
    /// pid that no longer runs or now runs a process started at another time. Returns their ids.
    pub fn sweep_leftovers(&self) -> Vec<String> {
        let mut ps = self.cli();
        ps.args(["ps", "-a", "-q", "--filter", &format!("label={LABEL_PID}")]);
        let o = run(ps);
        let mut removed = Vec::new();
        for id in stdout(&o).split_whitespace() {
            let mut c = self.cli();
            c.args([
                "inspect",
                "-f",
                &format!(
                    "{{{{index .Config.Labels \"{LABEL_PID}\"}}}} {{{{index .Config.Labels \"{LABEL_START}\"}}}}"
                ),
                id,
            ]);
            let labels = stdout(&run(c));
            let mut it = labels.split_whitespace();
            let (Some(Ok(pid)), Some(Ok(start))) = (
                it.next().map(str::parse::<i32>),
                it.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            if agentenv::runtime::process_start_time(pid) == Some(start) {
                continue;
            }
            let mut rm = self.cli();
            rm.args(["rm", "-f", id]);
            if run(rm).status.success() {
                removed.push(id.to_string());
            }
        }
        removed
    }

    /// Podman run by the test user, with its own storage and runtime directory.
    pub fn rootless_podman() -> Result<Self, String> {
        Self::podman()?;
        let user = nix::unistd::User::from_name(TEST_USER)
            .ok()
            .flatten()
            .ok_or(format!("no user {TEST_USER} (scripts/test.sh creates it)"))?;
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        if !subuid
            .lines()
            .any(|l| l.starts_with(&format!("{TEST_USER}:")))
        {
            return Err(format!("{TEST_USER} has no subordinate ids in /etc/subuid"));
        }
        if !Path::new("/usr/bin/newuidmap").exists() {
            return Err("newuidmap is missing (package uidmap)".into());
        }
        sweep_rootless_leftovers(user.uid.as_raw(), user.gid.as_raw());
        let pid = std::process::id();
        let start = agentenv::runtime::process_start_time(pid as i32).unwrap_or(0);
        // Named after this test process, so that a later run can tell a killed run's storage.
        let state = tempfile::Builder::new()
            .prefix(&format!("agentenv-rootless-{pid}-{start}-"))
            .tempdir()
            .unwrap();
        for d in ["home", "run"] {
            std::fs::create_dir(state.path().join(d)).unwrap();
        }
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", user.uid, user.gid))
            .arg(state.path())
            .status()
            .unwrap();
        assert!(chown.success());
        Ok(Self {
            engine: Engine::RootlessPodman {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                home: state.path().to_path_buf(),
            },
            _state: Some(state),
        })
    }

    /// The engine's CLI, with the global flags this machine needs.
    pub fn cli(&self) -> Command {
        let podman_flags = [
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "--runtime=runc",
        ];
        match &self.engine {
            Engine::Podman => {
                let mut c = Command::new("podman");
                c.args(podman_flags);
                c
            }
            Engine::RootlessPodman { uid, gid, home } => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg("env")
                    .arg(format!("HOME={}", home.join("home").display()))
                    .arg(format!("XDG_RUNTIME_DIR={}", home.join("run").display()))
                    .arg("podman")
                    .args(podman_flags)
                    .current_dir(home);
                c
            }
            Engine::Docker => Command::new("docker"),
        }
    }

    pub fn image(&self, image: Image) -> String {
        static BUILT: OnceLock<Mutex<Vec<(String, Image)>>> = OnceLock::new();
        let key = format!("{:?}", self.engine);
        let built = BUILT.get_or_init(Default::default);
        let mut built = built.lock().unwrap();
        let name = match self.engine {
            Engine::Docker => image.tag().to_string(),
            _ => format!("localhost/{}", image.tag()),
        };
        if built.contains(&(key.clone(), image)) {
            return name;
        }
        // The tag's version changes with the content: an image of that tag is the same one.
        let mut exists = self.cli();
        exists.args(["image", "inspect", &name]);
        if works(&mut exists) {
            built.push((key, image));
            return name;
        }
        let dir = tempfile::Builder::new()
            .prefix("agentenv-image-")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        image.build(&rootfs);
        let tar = dir.path().join("rootfs.tar");
        let mut t = Command::new("tar");
        t.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
        assert!(works(&mut t), "tar failed");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let mut c = self.cli();
        c.arg("import").arg(&tar).arg(&name);
        let o = run(c);
        assert!(o.status.success(), "import {name}: {}", stderr(&o));
        built.push((key, image));
        name
    }

    /// Starts a container of `image` running `cmd`, with `opts` before the image.
    pub fn start(&self, image: Image, opts: &[&str], cmd: &[&str]) -> Container<'_> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let image_name = self.image(image);
        let name = format!(
            "agentenv-attach-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = self.cli();
        c.args(["run", "-d", "--name", &name]).args(own_labels());
        if self.engine != Engine::Docker {
            c.args([
                "--ulimit",
                "nofile=1024:20000",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        }
        c.args(opts).arg(&image_name).args(cmd);
        let o = run(c);
        assert!(o.status.success(), "run {name}: {}", stderr(&o));
        let id = stdout(&o).trim().to_string();
        let mut container = Container {
            runtime: self,
            name,
            id,
            pid: 0,
        };
        container.pid = container.inspect("{{.State.Pid}}").parse().unwrap();
        container
    }
}

/// Rootless podman keeps each run's containers in that run's own storage directory: those of
/// test processes that are gone are removed with their containers and pause process, once.
fn sweep_rootless_leftovers(uid: u32, gid: u32) {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("agentenv-rootless-") else {
                continue;
            };
            let mut parts = rest.splitn(3, '-');
            let (Some(Ok(pid)), Some(Ok(start))) = (
                parts.next().map(str::parse::<i32>),
                parts.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            if agentenv::runtime::process_start_time(pid) == Some(start) {
                continue;
            }
            let leftover = Runtime {
                engine: Engine::RootlessPodman {
                    uid,
                    gid,
                    home: e.path(),
                },
                _state: None,
            };
            let mut rm = leftover.cli();
            rm.args(["rm", "-a", "-f", "-t", "0"]);
            let _ = run(rm);
            // Dropping it ends its pause process.
            drop(leftover);
            let _ = std::fs::remove_dir_all(e.path());
            eprintln!("removed the rootless podman storage of a test run that is gone: {name}");
        }
    });
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Rootless podman keeps a pause process holding its user namespace; end it.
        if let Engine::RootlessPodman { home, .. } = &self.engine {
            let pid_file = home.join("run/libpod/tmp/pause.pid");
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A running container, removed on drop.
pub struct Container<'a> {
    pub runtime: &'a Runtime,
    pub name: String,
    pub id: String,
    /// Its main process on the host.
    pub pid: i32,
}

impl Container<'_> {
    pub fn inspect(&self, format: &str) -> String {
        let mut c = self.runtime.cli();
        c.args(["inspect", "-f", format, &self.id]);
        let o = run(c);
        assert!(o.status.success(), "inspect: {}", stderr(&o));
        stdout(&o).trim().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// The engine's own record of changes to the container's files, sorted (some storage
    /// drivers list them in no fixed order).
    pub fn diff(&self) -> Vec<String> {
        let mut c = self.runtime.cli();
        c.args(["diff", &self.id]);
        let o = run(c);
        assert!(o.status.success(), "diff: {}", stderr(&o));
        let mut lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
        lines.sort();
        lines
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut c = self.runtime.cli();
        c.args(["exec", &self.id]).args(args);
        run(c)
    }

    /// Everything that could show a trace of a session: the target's mount table, the
    /// engine's diff, the target's file tree, the fds of its processes.
    pub fn snapshot(&self) -> Snapshot {
        let proc_dir = PathBuf::from(format!("/proc/{}", self.pid));
        Snapshot {
            mountinfo: std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap(),
            diff: self.diff(),
            files: file_tree(&proc_dir.join("root")),
            fds: std::fs::read_dir(proc_dir.join("fd")).unwrap().count(),
        }
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let mut c = self.runtime.cli();
        c.args(["rm", "-f", &self.id]);
        if self.runtime.engine != Engine::Docker {
            c.args(["-t", "0"]);
        }
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// What a target looks like from the host at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub mountinfo: String,
    pub diff: Vec<String>,
    pub files: Vec<String>,
    pub fds: usize,
}

/// Every path in the container's own root file system (not /proc, /sys or /dev).
fn file_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if ["proc", "sys", "dev"].contains(&rel.as_str()) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}
