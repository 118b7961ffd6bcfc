//! `/init` of a VM: agentenv as PID 1 of its own kernel. It loads the modules the VM needs, in
//! an order that works, mounts the pseudo-filesystems, takes its instructions (clock, disks,
//! shares) from the host over vsock, builds the environment's root (the read-only guest root
//! with a tmpfs overlay, the environment's `/nix` disk, the project and profile at their own
//! paths), moves into it, and serves the guest agent on vsock. Log lines from before the
//! console exists are kept and written once it does.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};

use super::vm_agent;
use crate::compute::vm::boot::{self, BootConfig, BootReply, MountSource};

/// The console until `/dev/hvc0` exists: lines wait here.
static CONSOLE: Mutex<Console> = Mutex::new(Console {
    file: None,
    pending: Vec::new(),
});

struct Console {
    file: Option<std::fs::File>,
    pending: Vec<u8>,
}

/// Writes a line to the VM's console, or keeps it until the console exists.
pub fn log(line: &str) {
    let mut c = CONSOLE.lock().unwrap_or_else(|e| e.into_inner());
    let text = format!("agentenv-vm: {line}\n");
    match c.file.as_mut() {
        Some(f) => {
            let _ = f.write_all(text.as_bytes());
        }
        None => c.pending.extend_from_slice(text.as_bytes()),
    }
}

/// Opens `/dev/hvc0` (waiting for it a little), writes what was kept, and makes it stdio.
fn open_console() {
    let deadline = Instant::now() + Duration::from_secs(5);
    let file = loop {
        match std::fs::OpenOptions::new().write(true).open("/dev/hvc0") {
            Ok(f) => break Some(f),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let mut c = CONSOLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut f) = file {
        let _ = f.write_all(&std::mem::take(&mut c.pending));
        for fd in [1, 2] {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
        c.file = Some(f);
    }
}

/// PID 1 of a VM. Never returns: the VM powers off when the agent ends, or on failure.
pub fn main() -> ! {
    let started = Instant::now();
    let result = boot_and_serve(started);
    if let Err(e) = &result {
        log(&format!("error: {e:#}"));
    }
    log("powering off");
    // SAFETY: sync and reboot(POWER_OFF) end the VM; nothing runs after them.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(1)
}

fn boot_and_serve(started: Instant) -> Result<()> {
    mount_pseudo("/")?;
    let loaded = load_modules()?;
    open_console();
    log(&format!(
        "{loaded} modules loaded in {} ms",
        started.elapsed().as_millis()
    ));

    let mut boot_conn = connect_host(boot::BOOT_PORT, Duration::from_secs(20))
        .context("cannot reach the host over vsock")?;
    let mut line = String::new();
    BufReader::new(&boot_conn)
        .read_line(&mut line)
        .context("cannot read the boot instructions")?;
    let config: BootConfig =
        serde_json::from_str(&line).context("malformed boot instructions from the host")?;
    set_clock(&config);

    let reply = match setup(&config).and_then(|()| listen_vsock(config.agent_port)) {
        Ok(listener) => {
            let (machine, kernel) = uname();
            log(&format!(
                "ready in {} ms ({machine}, Linux {kernel})",
                started.elapsed().as_millis()
            ));
            let reply = BootReply::Ready { machine, kernel };
            send_reply(&mut boot_conn, &reply)?;
            return vm_agent::serve(listener, boot_conn);
        }
        Err(e) => BootReply::Failed {
            message: format!("{e:#}"),
        },
    };
    send_reply(&mut boot_conn, &reply)?;
    if let BootReply::Failed { message } = reply {
        bail!("{message}");
    }
    Ok(())
}

fn send_reply(conn: &mut std::fs::File, reply: &BootReply) -> Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    conn.write_all(&line).context("cannot answer the host")
}

fn set_clock(config: &BootConfig) {
    set_clock_to(config.time_secs, config.time_nanos);
}

/// Sets the guest's clock (at boot, and from the host's later `ClockUpdate`s).
pub(crate) fn set_clock_to(secs: i64, nanos: u32) {
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec, which lives for the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log(&format!(
            "cannot set the clock: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn uname() -> (String, String) {
    let u = nix::sys::utsname::uname().ok();
    let machine = u
        .as_ref()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default();
    let release = u
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    (machine, release)
}

fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(target).ok();
    mount(Some(source), target, Some(fstype), flags, data)
        .with_context(|| format!("cannot mount {fstype} {source} on {}", target.display()))
}

/// proc, sys, dev (devtmpfs, so that device nodes appear as drivers load) below `root`.
fn mount_pseudo(root: &str) -> Result<()> {
    let root = Path::new(root);
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_fs("proc", &root.join("proc"), "proc", quiet, None)?;
    mount_fs("sysfs", &root.join("sys"), "sysfs", quiet, None)?;
    mount_fs(
        "devtmpfs",
        &root.join("dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        None,
    )?;
    Ok(())
}

/// Loads the modules listed in `modules.load`, in its order.
fn load_modules() -> Result<usize> {
    let (_, release) = uname();
    let dir = PathBuf::from("/lib/modules").join(&release);
    let list = match std::fs::read_to_string(dir.join("modules.load")) {
        Ok(l) => l,
        // A kernel with the drivers built in (nixpkgs' assets) needs none.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}/modules.load", dir.display()))
        }
    };
    let mut n = 0;
    for rel in list.lines().filter(|l| !l.is_empty()) {
        let path = dir.join(rel);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let params = CString::default();
        // SAFETY: finit_module reads the module from the open descriptor and the parameters
        // from a NUL-terminated string; both outlive the call.
        let r =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                log(&format!("cannot load {rel}: {err}"));
                continue;
            }
        }
        n += 1;
    }
    Ok(n)
}

/// Connects to the host's vsock `port`, retrying while the device comes up.
fn connect_host(port: u32, timeout: Duration) -> Result<std::fs::File> {
    let deadline = Instant::now() + timeout;
    loop {
        let fd = socket::socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("cannot create a vsock socket (is the vsock driver loaded?)")?;
        match socket::connect(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_HOST, port)) {
            Ok(()) => return Ok(std::fs::File::from(fd)),
            Err(e) if Instant::now() < deadline => {
                tracing::trace!("vsock connect: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => bail!("connect to host port {port}: {e}"),
        }
    }
}

fn listen_vsock(port: u32) -> Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))
        .with_context(|| format!("cannot listen on vsock port {port}"))?;
    socket::listen(&fd, socket::Backlog::new(64)?)?;
    Ok(fd)
}

/// The block device whose virtio serial is `id`.
fn disk_by_id(id: &str) -> Result<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for entry in std::fs::read_dir("/sys/block")?.flatten() {
            let serial = std::fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
            if serial.trim_end_matches(['\n', '\0']) == id {
                return Ok(Path::new("/dev").join(entry.file_name()));
            }
        }
        if Instant::now() > deadline {
            bail!("no disk with id {id:?} (is virtio_blk loaded?)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const NEWROOT: &str = "/newroot";

/// Builds the environment's root at `/newroot` and moves into it.
fn setup(config: &BootConfig) -> Result<()> {
    nix::unistd::sethostname(&config.hostname).ok();
    // The guest root: read-only, with a tmpfs on top for what the environment writes there.
    let lower = Path::new("/mnt/lower");
    let rw = Path::new("/mnt/rw");
    let root_dev = disk_by_id(&config.root_disk)?;
    mount_fs(
        &root_dev.to_string_lossy(),
        lower,
        "erofs",
        MsFlags::MS_RDONLY,
        None,
    )?;
    mount_fs("tmpfs", rw, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    std::fs::create_dir_all(rw.join("upper"))?;
    std::fs::create_dir_all(rw.join("work"))?;
    mount_fs(
        "overlay",
        Path::new(NEWROOT),
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work"),
    )?;
    let new = Path::new(NEWROOT);
    // Before the shares: a project under /tmp is mounted on top of this tmpfs, not hidden.
    mount_fs(
        "tmpfs",
        &new.join("tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=1777"),
    )?;
    mount_fs(
        "tmpfs",
        &new.join("run"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    for m in &config.mounts {
        let target = Path::new(NEWROOT).join(m.target.strip_prefix("/").unwrap_or(&m.target));
        let flags = if m.read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        match &m.source {
            MountSource::Disk { id, fstype } => {
                let dev = disk_by_id(id)?;
                mount_fs(&dev.to_string_lossy(), &target, fstype, flags, None)?;
            }
            MountSource::Share { tag } => mount_fs(tag, &target, "virtiofs", flags, None)?,
        }
    }
    for d in ["proc", "sys", "dev"] {
        let t = new.join(d);
        std::fs::create_dir_all(&t).ok();
        mount(
            Some(Path::new("/").join(d).as_path()),
            &t,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .with_context(|| format!("cannot move /{d} into the new root"))?;
    }
    // Terminals (nix and `exec -t` open ptys) and POSIX shared memory.
    mount_fs(
        "devpts",
        &new.join("dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620,gid=5"),
    )?;
    // What devtmpfs lacks and shells need (`<(...)` is /dev/fd/N).
    for (link, to) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, new.join(link));
    }
    let ptmx = new.join("dev/ptmx");
    let _ = std::fs::remove_file(&ptmx);
    std::os::unix::fs::symlink("pts/ptmx", &ptmx).context("cannot link /dev/ptmx")?;
    mount_fs(
        "tmpfs",
        &new.join("dev/shm"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    // agentenv itself inside, for what runs in the guest (the dev shell's evaluation).
    let inside = new.join("usr/bin/agentenv");
    std::fs::write(&inside, b"").context("cannot place agentenv in the guest root")?;
    mount(
        Some("/init"),
        &inside,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("cannot bind agentenv into the guest root")?;
    // An initramfs cannot be pivoted away from: move the new root over it and chroot.
    std::env::set_current_dir(new)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("cannot move the new root to /")?;
    nix::unistd::chroot(".").context("cannot chroot into the new root")?;
    std::env::set_current_dir("/")?;
    // SAFETY: PID 1 is single-threaded here; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
        std::env::set_var("HOME", "/root");
    }
    Ok(())
}
