//! Test fixtures: a copy of the example flake ready for an offline nix, agentenv and nix
//! commands pointed at it, running with a deadline, a pseudo-terminal, and loud skips.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn agentenv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentenv"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Records a skipped test where people will see it: stderr and target/test-skips.log, which
/// scripts/test.sh prints at the end.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    let log = repo_root().join("target/test-skips.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{test}: {reason}");
    }
}

/// Evaluates to the container runtime `$make` gives, or skips the calling test (loudly) when
/// that engine cannot run here.
#[macro_export]
macro_rules! runtime {
    ($test:expr, $make:expr) => {
        match $make {
            Ok(rt) => rt,
            Err(reason) => {
                $crate::support::skip(concat!(module_path!(), "::", $test), &reason);
                return;
            }
        }
    };
}

/// Skips the calling test (loudly) unless the fixture can be made.
#[macro_export]
macro_rules! fixture {
    () => {
        match $crate::support::Fixture::hello() {
            Ok(f) => f,
            Err(reason) => {
                $crate::support::skip(module_path!(), &reason);
                return;
            }
        }
    };
}

fn prerequisites() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            for (path, pkg) in [
                ("/bin/bash-static", "bash-static"),
                ("/bin/busybox", "busybox-static"),
            ] {
                if !Path::new(path).exists() {
                    return Err(format!(
                        "{path} is missing (Debian package {pkg}; scripts/test.sh installs it)"
                    ));
                }
            }
            for tool in ["nix", "git"] {
                let ok = Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!(
                        "`{tool}` is not installed (scripts/test.sh installs it)"
                    ));
                }
            }
            let mut probe = Command::new("unshare");
            if !is_root() {
                probe.args(["-U", "-r"]);
            }
            let ok = probe
                .args(["-m", "-p", "-f", "true"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(
                    "this machine refuses mount/PID namespaces (see `agentenv doctor`)".into(),
                );
            }
            Ok(())
        })
        .clone()
}

/// A private copy of examples/hello (a git repository, as flakes need) with its own agentenv
/// state directory and an offline nix configuration.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub flake: PathBuf,
    pub state: PathBuf,
    pub nix_config: String,
}

impl Fixture {
    pub fn hello() -> Result<Self, String> {
        prerequisites()?;
        let tmp = tempfile::Builder::new()
            .prefix("agentenv-test-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = std::fs::canonicalize(tmp.path()).map_err(|e| e.to_string())?;
        let flake = root.join("hello");
        let script = format!(
            ". '{}/scripts/lib.sh' && prepare_example '{}/examples/hello' '{}' && offline_nix_config '{}'",
            repo_root().display(),
            repo_root().display(),
            flake.display(),
            root.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "cannot prepare the example: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let nix_config = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(Self {
            state: root.join("state"),
            flake,
            nix_config,
            tmp,
        })
    }

    /// agentenv, run from the flake's directory with this fixture's state.
    pub fn agentenv(&self) -> Command {
        let mut c = Command::new(agentenv_bin());
        c.env("AGENTENV_HOME", &self.state)
            .env("NIX_CONFIG", &self.nix_config)
            .current_dir(&self.flake);
        c
    }

    /// `agentenv up OPTS...` in the flake; returns the environment's id.
    pub fn up(&self, opts: &[&str]) -> String {
        let mut c = self.agentenv();
        c.arg("up").args(opts);
        let o = run(c);
        assert!(
            o.status.success(),
            "up: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8(o.stdout).unwrap();
        out.lines().last().expect("up prints the id").to_string()
    }

    /// `agentenv exec ID -- ARGS...`
    pub fn exec(&self, id: &str, args: &[&str]) -> Output {
        let mut c = self.agentenv();
        c.args(["exec", id, "--"]).args(args);
        run(c)
    }

    /// `agentenv down ID`, which must succeed.
    pub fn down(&self, id: &str) {
        let mut c = self.agentenv();
        c.args(["down", id]);
        let o = run(c);
        assert!(
            o.status.success(),
            "down: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `agentenv OPTS... . -- ARGS...`
    pub fn run_in_with(&self, opts: &[&str], args: &[&str]) -> Output {
        let mut c = self.agentenv();
        c.args(opts).arg(".").arg("--").args(args);
        run(c)
    }

    /// `agentenv . -- ARGS...`
    pub fn run_in(&self, args: &[&str]) -> Output {
        let mut c = self.agentenv();
        c.arg(".").arg("--").args(args);
        run(c)
    }

    /// `agentenv attach OPTS TARGET -- CMD`.
    pub fn attach_cmd(&self, target: &str, opts: &[&str], cmd: &[&str]) -> Command {
        let mut c = self.agentenv();
        c.arg("attach").args(opts).arg(target).arg("--").args(cmd);
        c
    }

    /// A private copy of examples/profile next to the flake, at its canonical path.
    pub fn profile_copy(&self) -> PathBuf {
        let dir = self.tmp.path().join("config");
        let ok = Command::new("cp")
            .arg("-r")
            .arg(repo_root().join("examples/profile"))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::canonicalize(dir).unwrap()
    }

    /// `profile_copy` without `tools` in its agentenv.toml: their flake needs nixpkgs.
    pub fn profile_copy_without_tools(&self) -> PathBuf {
        let dir = self.profile_copy();
        let manifest = dir.join("agentenv.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("tools =")).collect();
        std::fs::write(&manifest, kept.join("\n")).unwrap();
        dir
    }

    /// nix with the same offline configuration.
    pub fn nix(&self) -> Command {
        let mut c = Command::new("nix");
        c.env("NIX_CONFIG", &self.nix_config)
            .current_dir(&self.flake);
        c
    }

    /// Writes a file in the flake and `git add`s it.
    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.flake.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        let ok = Command::new("git")
            .arg("-C")
            .arg(&self.flake)
            .args(["add", "-A"])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Replaces `from` with `to` in the flake's flake.nix.
    pub fn edit_flake(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.flake.join("flake.nix")).unwrap();
        assert!(text.contains(from), "flake.nix has no {from:?}");
        self.write("flake.nix", &text.replacen(from, to, 1));
    }

    /// The entries of the dev-environment cache.
    pub fn cache_entries(&self) -> Vec<PathBuf> {
        list(&self.state.join("cache/devenv/entries"))
    }

    /// The environments' state directories.
    pub fn envs(&self) -> Vec<PathBuf> {
        list(&self.state.join("data/envs"))
    }
}

pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cmd` with stdin closed and a deadline.
pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    wait_output(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    )
}

/// Waits for a child with piped stdout/stderr, killing it at the deadline.
pub fn wait_output(mut child: Child) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut b);
        }
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut b);
        }
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("command did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// A command running on a pseudo-terminal, as on a user's terminal: its own session with the
/// terminal as controlling tty.
pub struct Pty {
    pub child: Child,
    master: std::fs::File,
    pub output: Arc<Mutex<Vec<u8>>>,
    /// Reads the terminal's output until the last slave is closed (EIO).
    reader: std::thread::JoinHandle<()>,
}

impl Pty {
    pub fn spawn(mut cmd: Command) -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Ctrl-C and hang-ups typed at the terminal must act as on a user's.
        with_default_signals(&mut cmd);
        let child = cmd.spawn().expect("spawn on pty");
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        let reader_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        drop(cmd);
        Pty {
            child,
            master,
            output,
            reader: reader_thread,
        }
    }

    pub fn master(&self) -> &std::fs::File {
        &self.master
    }

    pub fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle`.
    pub fn expect(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            if t.contains(needle) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {needle:?} in output:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // What it wrote last may still be in the terminal's buffer: read on until no
                // slave is left (a process it left running may hold one: not for long).
                let drained = Instant::now();
                while !self.reader.is_finished() && drained.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "pty command did not exit:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Makes `cmd` start with the default dispositions of the signals tests send or type
/// (SIGINT, SIGHUP, SIGQUIT, SIGTERM), whatever the suite's caller left ignored (`nohup`
/// ignores SIGHUP, a shell's `&` SIGINT): ignored on entry, a shell could not even trap them.
pub fn with_default_signals(cmd: &mut Command) {
    // SAFETY: only signal(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGTERM] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// The first `name` on PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Makes `cmd` start with the host's `/` open at fd 9 (not close-on-exec), as a careless or
/// hostile caller might leave it.
pub fn with_host_root_at_fd_9(cmd: &mut Command) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let root = std::fs::File::open("/").unwrap();
    // SAFETY: only dup2 (async-signal-safe) between fork and exec; `root` outlives the spawn
    // because the closure owns it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(root.as_raw_fd(), 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts `cmd` (stdin from /dev/null, output piped) and returns it with its stdout up to a
/// line `ready`, which it prints once set up.
pub fn spawn_until_ready(mut cmd: Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "ready\n" {
            break;
        }
        out.push_str(&line);
    }
    (child, out)
}
