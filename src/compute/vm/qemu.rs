//! A `VmSpec` as QEMU and its vhost-user helpers run it: one `virtiofsd` per share, one
//! `vhost-device-vsock` for the vsock device, and `qemu-system-<arch>` connected to their
//! sockets. Pure translation: nothing here starts a process (see `launch`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::spec::{Arch, Console, VmSpec};

/// The host programs a VM needs, found on PATH (or in `~/.cargo/bin` for the helpers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub qemu: PathBuf,
    pub virtiofsd: PathBuf,
    pub vsock: PathBuf,
}

/// Hardware virtualisation or QEMU's emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` opens and the guest has the host's architecture; TCG otherwise.
    pub fn detect(arch: Arch) -> Self {
        if arch == Arch::host() && kvm_works() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// Whether `/dev/kvm` can make a VM (it may exist where the CPU has no virtualisation, as
/// in a VM without nested virtualisation).
fn kvm_works() -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let Ok(dev) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    // SAFETY: KVM_CREATE_VM takes a machine type (0) and returns a new descriptor or -1.
    let vm = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return false;
    }
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    true
}

/// One process to start: program and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl Cmd {
    fn new(program: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            args: Vec::new(),
        }
    }

    fn arg(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.args.push(a.into());
        self
    }

    /// `-flag value`
    fn opt(&mut self, flag: &str, value: impl Into<OsString>) -> &mut Self {
        self.arg(flag).arg(value)
    }
}

/// A helper and the vhost-user socket it creates; QEMU starts once the socket exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    pub cmd: Cmd,
    pub socket: PathBuf,
}

/// Everything to start, in order: helpers first, then QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub helpers: Vec<Helper>,
    pub qemu: Cmd,
    /// Where QEMU writes the kernel's own early messages (before `hvc0` exists).
    pub kernel_log: PathBuf,
}

/// `a,b` joined for a QEMU option whose value may hold a path: commas in paths are doubled.
fn path_opt(path: &Path) -> OsString {
    let s = path.as_os_str().to_string_lossy().replace(',', ",,");
    OsString::from(s)
}

/// The command lines for `spec`, with the helpers' sockets in `run_dir`.
pub fn plan(spec: &VmSpec, tools: &Tools, accel: Accel, run_dir: &Path) -> Plan {
    let mut helpers = Vec::new();

    let vhost_vsock = run_dir.join("vsock.vhost");
    let mut vs = Cmd::new(&tools.vsock);
    vs.arg("--vm").arg(format!(
        "guest-cid={},socket={},uds-path={}",
        spec.vsock.guest_cid,
        vhost_vsock.display(),
        spec.vsock.host_socket.display()
    ));
    helpers.push(Helper {
        cmd: vs,
        socket: vhost_vsock.clone(),
    });

    for (i, share) in spec.shares.iter().enumerate() {
        let socket = run_dir.join(format!("fs{i}.vhost"));
        let mut fs = Cmd::new(&tools.virtiofsd);
        fs.arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", share.host_dir.display()))
            .arg("--cache=auto")
            // The VM is the sandbox; as root, virtiofsd's own namespaces would only hide
            // the files from the user who owns them.
            .arg("--sandbox=none")
            .arg("--log-level=error");
        if share.read_only {
            fs.arg("--readonly");
        }
        helpers.push(Helper { cmd: fs, socket });
    }

    let mut q = Cmd::new(&tools.qemu);
    q.opt("-name", format!("{},process={}", spec.name, spec.name));
    match (spec.arch, accel) {
        (Arch::Aarch64, Accel::Kvm) => q.opt("-M", "virt").opt("-accel", "kvm").opt("-cpu", "host"),
        (Arch::Aarch64, Accel::Tcg) => q
            .opt("-M", "virt")
            .opt("-accel", "tcg")
            .opt("-cpu", "cortex-a72"),
        (Arch::X86_64, Accel::Kvm) => q.opt("-M", "q35").opt("-accel", "kvm").opt("-cpu", "host"),
        (Arch::X86_64, Accel::Tcg) => q.opt("-M", "q35").opt("-accel", "tcg").opt("-cpu", "max"),
    };
    q.opt("-smp", spec.cpus.to_string());
    // virtio-fs needs the guest's memory shared with virtiofsd.
    q.opt("-m", format!("{}M", spec.memory_mib));
    q.opt(
        "-object",
        format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            spec.memory_mib
        ),
    );
    q.opt("-numa", "node,memdev=mem");
    // No network card (the guest has none; without it QEMU also wants a ROM it lacks), no
    // display, no monitor, no default devices.
    q.arg("-nodefaults")
        .opt("-nic", "none")
        .opt("-display", "none");
    q.opt("-kernel", &spec.kernel);
    if let Some(initrd) = &spec.initrd {
        q.opt("-initrd", initrd);
    }
    // The kernel's own messages (a panic before the virtio console exists) go to the board's
    // UART as well, which QEMU writes to `kernel_log`.
    let uart = match spec.arch {
        Arch::Aarch64 => "ttyAMA0",
        Arch::X86_64 => "ttyS0",
    };
    q.opt("-append", format!("console={uart} {}", spec.cmdline));

    for (i, disk) in spec.disks.iter().enumerate() {
        let mut drive = OsString::from(format!("if=none,id=disk{i},format=raw,file="));
        drive.push(path_opt(&disk.image));
        if disk.read_only {
            drive.push(",readonly=on");
        }
        q.opt("-drive", drive);
        q.opt(
            "-device",
            format!("virtio-blk-pci,drive=disk{i},serial={}", disk.id),
        );
    }

    for (i, share) in spec.shares.iter().enumerate() {
        let mut chardev = OsString::from(format!("socket,id=fs{i},path="));
        chardev.push(path_opt(&helpers[i + 1].socket));
        q.opt("-chardev", chardev);
        q.opt(
            "-device",
            format!("vhost-user-fs-pci,chardev=fs{i},tag={}", share.tag),
        );
    }

    let mut chardev = OsString::from("socket,id=vsock,path=");
    chardev.push(path_opt(&vhost_vsock));
    q.opt("-chardev", chardev);
    q.opt("-device", "vhost-user-vsock-pci,chardev=vsock");

    // The console: a virtio console (hvc0), as on Virtualization.framework.
    q.opt("-device", "virtio-serial-pci,id=serial");
    match &spec.console {
        Console::File { path } => {
            let mut c = OsString::from("file,id=console,append=on,path=");
            c.push(path_opt(path));
            q.opt("-chardev", c)
        }
        Console::None => q.opt("-chardev", "null,id=console"),
    };
    q.opt("-device", "virtconsole,chardev=console");
    // The kernel's own messages before virtio_console is loaded: the board's UART.
    let kernel_log = run_dir.join("kernel.log");
    let mut serial = OsString::from("file:");
    serial.push(&kernel_log);
    q.opt("-serial", serial);
    q.opt("-monitor", "none");
    // A guest that reboots (or panics, with panic=-1) ends the VM.
    q.arg("-no-reboot");

    Plan {
        helpers,
        qemu: q.clone(),
        kernel_log,
    }
}

/// The QEMU program for a guest architecture.
pub fn qemu_program(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "qemu-system-aarch64",
        Arch::X86_64 => "qemu-system-x86_64",
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::tests::example;
    use super::*;

    fn tools() -> Tools {
        Tools {
            qemu: "/usr/bin/qemu-system-aarch64".into(),
            virtiofsd: "/bin/virtiofsd".into(),
            vsock: "/bin/vhost-device-vsock".into(),
        }
    }

    fn argv(cmd: &Cmd) -> Vec<String> {
        cmd.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value after each occurrence of `flag`.
    fn values(cmd: &Cmd, flag: &str) -> Vec<String> {
        let a = argv(cmd);
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn tcg_boots_the_virt_board_with_a_cortex_a72_and_no_nic() {
        let p = plan(&example(), &tools(), Accel::Tcg, Path::new("/run/vm"));
        assert_eq!(
            p.qemu.program,
            PathBuf::from("/usr/bin/qemu-system-aarch64")
        );
        assert_eq!(values(&p.qemu, "-M"), ["virt"]);
        assert_eq!(values(&p.qemu, "-accel"), ["tcg"]);
        assert_eq!(values(&p.qemu, "-cpu"), ["cortex-a72"]);
        assert_eq!(values(&p.qemu, "-nic"), ["none"]);
        assert_eq!(values(&p.qemu, "-smp"), ["2"]);
        assert_eq!(values(&p.qemu, "-kernel"), ["/a/kernel"]);
        assert_eq!(values(&p.qemu, "-initrd"), ["/a/initrd"]);
        // hvc0 last: the guest's /dev/console.
        assert_eq!(
            values(&p.qemu, "-append"),
            ["console=ttyAMA0 console=hvc0 quiet"]
        );
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let p = plan(&example(), &tools(), Accel::Kvm, Path::new("/run/vm"));
        assert_eq!(values(&p.qemu, "-accel"), ["kvm"]);
        assert_eq!(values(&p.qemu, "-cpu"), ["host"]);
    }

    #[test]
    fn memory_is_a_shared_memfd_for_virtiofs() {
        let p = plan(&example(), &tools(), Accel::Tcg, Path::new("/run/vm"));
        assert_eq!(values(&p.qemu, "-m"), ["512M"]);
        assert_eq!(
            values(&p.qemu, "-object"),
            ["memory-backend-memfd,id=mem,size=512M,share=on"]
        );
        assert_eq!(values(&p.qemu, "-numa"), ["node,memdev=mem"]);
    }

    #[test]
    fn disks_are_found_by_serial_and_read_only_ones_say_so() {
        let p = plan(&example(), &tools(), Accel::Tcg, Path::new("/run/vm"));
        assert_eq!(
            values(&p.qemu, "-drive"),
            [
                "if=none,id=disk0,format=raw,file=/a/root.img,readonly=on",
                "if=none,id=disk1,format=raw,file=/e/store.img"
            ]
        );
        let devices = values(&p.qemu, "-device");
        assert!(devices.contains(&"virtio-blk-pci,drive=disk0,serial=root".to_string()));
        assert!(devices.contains(&"virtio-blk-pci,drive=disk1,serial=store".to_string()));
    }

    #[test]
    fn each_share_has_its_own_virtiofsd_and_socket() {
        let mut spec = example();
        spec.shares.push(super::super::spec::Share {
            tag: "profile".into(),
            host_dir: "/home/u/config".into(),
            read_only: true,
        });
        let p = plan(&spec, &tools(), Accel::Tcg, Path::new("/run/vm"));
        let fs: Vec<_> = p
            .helpers
            .iter()
            .filter(|h| h.cmd.program.ends_with("virtiofsd"))
            .collect();
        assert_eq!(fs.len(), 2);
        assert_eq!(
            argv(&fs[0].cmd)[..2],
            ["--socket-path=/run/vm/fs0.vhost", "--shared-dir=/src/app"]
        );
        assert!(!argv(&fs[0].cmd).contains(&"--readonly".to_string()));
        assert!(argv(&fs[1].cmd).contains(&"--readonly".to_string()));
        assert_eq!(
            values(&p.qemu, "-chardev")[..2],
            [
                "socket,id=fs0,path=/run/vm/fs0.vhost",
                "socket,id=fs1,path=/run/vm/fs1.vhost"
            ]
        );
        let devices = values(&p.qemu, "-device");
        assert!(devices.contains(&"vhost-user-fs-pci,chardev=fs0,tag=project".to_string()));
        assert!(devices.contains(&"vhost-user-fs-pci,chardev=fs1,tag=profile".to_string()));
    }

    #[test]
    fn vsock_goes_through_vhost_device_vsock_with_the_hybrid_socket() {
        let p = plan(&example(), &tools(), Accel::Tcg, Path::new("/run/vm"));
        let vs = &p.helpers[0];
        assert_eq!(vs.cmd.program, PathBuf::from("/bin/vhost-device-vsock"));
        assert_eq!(
            argv(&vs.cmd),
            [
                "--vm",
                "guest-cid=3,socket=/run/vm/vsock.vhost,uds-path=/run/vm/vsock"
            ]
        );
        assert!(values(&p.qemu, "-chardev")
            .contains(&"socket,id=vsock,path=/run/vm/vsock.vhost".to_string()));
        assert!(
            values(&p.qemu, "-device").contains(&"vhost-user-vsock-pci,chardev=vsock".to_string())
        );
    }

    #[test]
    fn the_console_is_a_virtio_console_appended_to_its_file() {
        let p = plan(&example(), &tools(), Accel::Tcg, Path::new("/run/vm"));
        assert!(values(&p.qemu, "-chardev")
            .contains(&"file,id=console,append=on,path=/run/vm/console.log".to_string()));
        assert!(values(&p.qemu, "-device").contains(&"virtconsole,chardev=console".to_string()));
        assert_eq!(values(&p.qemu, "-serial"), ["file:/run/vm/kernel.log"]);
    }

    #[test]
    fn commas_in_paths_are_doubled_for_qemu() {
        let mut spec = example();
        spec.disks[0].image = "/a,b/root.img".into();
        let p = plan(&spec, &tools(), Accel::Tcg, Path::new("/run/vm"));
        assert!(values(&p.qemu, "-drive")[0].contains("file=/a,,b/root.img"));
    }
}
