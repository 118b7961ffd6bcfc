//! A `VzPlan` as Virtualization.framework objects, and the running virtual machine. Nothing
//! is decided here (see `plan`); this only builds what the plan says. Every call on the
//! `VZVirtualMachine` runs on the VM's own serial dispatch queue: VZ aborts the process when a
//! VM is touched from any other.

use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchQueueAttr, DispatchRetained};
use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2::{define_class, msg_send, AllocAnyThread, DefinedClass};
use objc2_foundation::{NSArray, NSError, NSObject, NSObjectProtocol, NSString, NSURL};
use objc2_virtualization::{
    VZDirectorySharingDeviceConfiguration, VZDiskImageCachingMode,
    VZDiskImageStorageDeviceAttachment, VZDiskImageSynchronizationMode,
    VZEntropyDeviceConfiguration, VZFileSerialPortAttachment, VZGenericPlatformConfiguration,
    VZLinuxBootLoader, VZSerialPortConfiguration, VZSharedDirectory, VZSingleDirectoryShare,
    VZSocketDeviceConfiguration, VZStorageDeviceConfiguration, VZVirtioBlockDeviceConfiguration,
    VZVirtioConsoleDeviceSerialPortConfiguration, VZVirtioEntropyDeviceConfiguration,
    VZVirtioFileSystemDeviceConfiguration, VZVirtioSocketConnection, VZVirtioSocketDevice,
    VZVirtioSocketDeviceConfiguration, VZVirtioSocketListener, VZVirtioSocketListenerDelegate,
    VZVirtualMachine, VZVirtualMachineConfiguration, VZVirtualMachineState,
};

use super::plan::{Caching, DiskSync, VzConsole, VzPlan};

/// A value that crosses to or from the VM's queue. VZ objects are not `Send`, but they may be
/// used from any one thread at a time; the queue is serial and `on_queue` waits for it.
struct OnQueue<T>(T);

// SAFETY: the value is used either by the thread that made it or, while that thread waits in
// `exec_sync`, on the serial queue: never by two threads at once.
unsafe impl<T> Send for OnQueue<T> {}

impl<T> OnQueue<T> {
    fn into_inner(self) -> T {
        self.0
    }
}

/// Runs `f` on `queue` and waits for its result.
fn on_queue<R>(queue: &DispatchQueue, f: impl FnOnce() -> R) -> R {
    let mut out = None;
    let slot = OnQueue(&mut out);
    let f = OnQueue(f);
    queue.exec_sync(move || {
        let (slot, f) = (slot.into_inner(), f.into_inner());
        *slot = Some(f());
    });
    out.expect("exec_sync returns after its work ran")
}

/// What an `NSError` says, with its domain and code (`VZErrorDomain` 2 is a missing entitlement).
fn describe(err: &NSError) -> String {
    format!(
        "{} ({} {})",
        err.localizedDescription(),
        err.domain(),
        err.code()
    )
}

fn file_url(path: &Path) -> Result<Retained<NSURL>> {
    NSURL::from_file_path(path).ok_or_else(|| anyhow!("{} is not a file URL", path.display()))
}

fn dir_url(path: &Path) -> Result<Retained<NSURL>> {
    NSURL::from_directory_path(path)
        .ok_or_else(|| anyhow!("{} is not a directory URL", path.display()))
}

/// The configuration the plan describes, validated by VZ.
fn configuration(plan: &VzPlan) -> Result<Retained<VZVirtualMachineConfiguration>> {
    // SAFETY: VZ's configuration objects are plain values with no threading requirement;
    // every argument is a live object of the type the method takes.
    unsafe {
        let config = VZVirtualMachineConfiguration::new();

        let kernel = file_url(&plan.kernel)?;
        let boot = VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &kernel);
        boot.setCommandLine(&NSString::from_str(&plan.cmdline));
        if let Some(initrd) = &plan.initrd {
            let initrd = file_url(initrd)?;
            boot.setInitialRamdiskURL(Some(&initrd));
        }
        config.setBootLoader(Some(&boot));
        config.setPlatform(&VZGenericPlatformConfiguration::new());
        config.setCPUCount(plan.cpus as usize);
        config.setMemorySize(plan.memory_bytes);

        let mut serial: Vec<Retained<VZSerialPortConfiguration>> = Vec::new();
        if let VzConsole::File(path) = &plan.console {
            let port = VZVirtioConsoleDeviceSerialPortConfiguration::new();
            let url = file_url(path)?;
            let attachment = VZFileSerialPortAttachment::initWithURL_append_error(
                VZFileSerialPortAttachment::alloc(),
                &url,
                true,
            )
            .map_err(|e| anyhow!("console file {}: {}", path.display(), describe(&e)))?;
            port.setAttachment(Some(&attachment));
            serial.push(Retained::into_super(port));
        }
        config.setSerialPorts(&NSArray::from_retained_slice(&serial));

        let mut storage: Vec<Retained<VZStorageDeviceConfiguration>> = Vec::new();
        for disk in &plan.disks {
            let (Caching::Cached, DiskSync::Fsync) = (disk.caching, disk.sync);
            let url = file_url(&disk.image)?;
            let attachment =
                VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_cachingMode_synchronizationMode_error(
                    VZDiskImageStorageDeviceAttachment::alloc(),
                    &url,
                    disk.read_only,
                    VZDiskImageCachingMode::Cached,
                    VZDiskImageSynchronizationMode::Fsync,
                )
                .map_err(|e| anyhow!("disk image {}: {}", disk.image.display(), describe(&e)))?;
            let device = VZVirtioBlockDeviceConfiguration::initWithAttachment(
                VZVirtioBlockDeviceConfiguration::alloc(),
                &attachment,
            );
            device.setBlockDeviceIdentifier(&NSString::from_str(&disk.id));
            storage.push(Retained::into_super(device));
        }
        config.setStorageDevices(&NSArray::from_retained_slice(&storage));

        let mut shares: Vec<Retained<VZDirectorySharingDeviceConfiguration>> = Vec::new();
        for share in &plan.shares {
            let tag = NSString::from_str(&share.tag);
            VZVirtioFileSystemDeviceConfiguration::validateTag_error(&tag)
                .map_err(|e| anyhow!("share tag {:?}: {}", share.tag, describe(&e)))?;
            let url = dir_url(&share.dir)?;
            let dir = VZSharedDirectory::initWithURL_readOnly(
                VZSharedDirectory::alloc(),
                &url,
                share.read_only,
            );
            let single =
                VZSingleDirectoryShare::initWithDirectory(VZSingleDirectoryShare::alloc(), &dir);
            let device = VZVirtioFileSystemDeviceConfiguration::initWithTag(
                VZVirtioFileSystemDeviceConfiguration::alloc(),
                &tag,
            );
            device.setShare(Some(&single));
            shares.push(Retained::into_super(device));
        }
        config.setDirectorySharingDevices(&NSArray::from_retained_slice(&shares));

        let vsock: Retained<VZSocketDeviceConfiguration> =
            Retained::into_super(VZVirtioSocketDeviceConfiguration::new());
        config.setSocketDevices(&NSArray::from_retained_slice(&[vsock]));

        let mut entropy: Vec<Retained<VZEntropyDeviceConfiguration>> = Vec::new();
        if plan.entropy {
            entropy.push(Retained::into_super(
                VZVirtioEntropyDeviceConfiguration::new(),
            ));
        }
        config.setEntropyDevices(&NSArray::from_retained_slice(&entropy));

        config
            .validateWithError()
            .map_err(|e| anyhow!("Virtualization.framework refused the VM: {}", describe(&e)))?;
        Ok(config)
    }
}

/// A virtual machine and the serial queue it lives on.
pub struct Machine {
    queue: DispatchRetained<DispatchQueue>,
    /// Released on the queue, in `drop`.
    vm: ManuallyDrop<Retained<VZVirtualMachine>>,
    /// VZ holds listeners' delegates weakly: they live here, and go in `drop` with the VM.
    listeners: ManuallyDrop<
        Vec<(
            Retained<VZVirtioSocketListener>,
            Retained<GuestPortListener>,
        )>,
    >,
}

// SAFETY: every use of the VM and its listeners runs on the serial queue (`on_queue`), which
// is what VZ requires; the queue itself may be used from any thread.
unsafe impl Send for Machine {}
// SAFETY: as for Send: `&Machine` only ever reaches the VM through the queue.
unsafe impl Sync for Machine {}

/// What the listener delegate does with a guest's connection.
type OnConnection = Box<dyn Fn(OwnedFd) + 'static>;

struct ListenerIvars {
    on_connection: OnConnection,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements, and this class does not implement Drop.
    #[unsafe(super(NSObject))]
    #[name = "AgentenvGuestPortListener"]
    #[ivars = ListenerIvars]
    struct GuestPortListener;

    unsafe impl NSObjectProtocol for GuestPortListener {}

    unsafe impl VZVirtioSocketListenerDelegate for GuestPortListener {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            _device: &VZVirtioSocketDevice,
        ) -> bool {
            // SAFETY: the connection's descriptor is open while VZ calls its delegate.
            match dup_fd(unsafe { connection.fileDescriptor() }) {
                Ok(fd) => {
                    (self.ivars().on_connection)(fd);
                    true
                }
                Err(e) => {
                    tracing::warn!("a guest connection was refused: {e}");
                    false
                }
            }
        }
    }
);

impl GuestPortListener {
    fn new(on_connection: OnConnection) -> Retained<Self> {
        let this = Self::alloc().set_ivars(ListenerIvars { on_connection });
        // SAFETY: NSObject's init, on an object whose ivars are set.
        unsafe { msg_send![super(this), init] }
    }
}

/// The VM's state as VZ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    /// Stopped, or stopped by an error: either way nothing runs any more.
    Stopped,
    /// Pausing, paused, resuming, saving, restoring, stopping.
    Other,
}

impl Machine {
    /// Builds the VM that `plan` describes (it does not start yet).
    pub fn create(plan: &VzPlan) -> Result<Machine> {
        let config = OnQueue(configuration(plan)?);
        let queue = DispatchQueue::new(
            &format!("agentenv.vz.{}", plan.name),
            DispatchQueueAttr::SERIAL,
        );
        let q = OnQueue(queue.clone());
        let vm = on_queue(&queue, move || {
            let (config, q) = (config.into_inner(), q.into_inner());
            // SAFETY: the configuration was validated; `q` is serial and every later call on
            // this VM is made on it (`on_queue`).
            OnQueue(unsafe {
                VZVirtualMachine::initWithConfiguration_queue(
                    VZVirtualMachine::alloc(),
                    &config,
                    &q,
                )
            })
        });
        Ok(Machine {
            queue,
            vm: ManuallyDrop::new(vm.into_inner()),
            listeners: ManuallyDrop::new(Vec::new()),
        })
    }

    /// Hands each connection the guest makes to host port `port` to `on_connection`, as a
    /// descriptor of its own (duplicated before VZ's delegate call returns). It runs on the
    /// VM's queue: it should hand the work to a thread and return.
    pub fn listen(&mut self, port: u32, on_connection: OnConnection) -> Result<()> {
        let vm = OnQueue(&*self.vm);
        let on_connection = OnQueue(on_connection);
        let pair = on_queue(&self.queue, move || -> Result<_> {
            let (vm, on_connection) = (vm.into_inner(), on_connection.into_inner());
            let device = virtio_socket_device(vm)?;
            let delegate = GuestPortListener::new(on_connection);
            // SAFETY: on the VM's queue; the listener and its delegate are kept in `self`
            // for as long as the VM lives.
            let listener = unsafe { VZVirtioSocketListener::new() };
            // SAFETY: as above.
            unsafe {
                listener.setDelegate(Some(ProtocolObject::from_ref(&*delegate)));
                device.setSocketListener_forPort(&listener, port);
            }
            Ok(OnQueue((listener, delegate)))
        })?;
        self.listeners.push(pair.into_inner());
        Ok(())
    }

    /// Starts the VM and waits until VZ says it runs (the kernel has been handed control).
    pub fn start(&self, timeout: Duration) -> Result<()> {
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let vm = OnQueue(&*self.vm);
        on_queue(&self.queue, move || {
            let vm = vm.into_inner();
            let done = RcBlock::new(move |err: *mut NSError| {
                // SAFETY: VZ passes nil or a live NSError for the duration of the call.
                let r = match unsafe { err.as_ref() } {
                    None => Ok(()),
                    Some(e) => Err(describe(e)),
                };
                let _ = tx.send(r);
            });
            // SAFETY: on the VM's queue; the block lives as long as VZ keeps it (retained).
            unsafe { vm.startWithCompletionHandler(&done) };
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => bail!("the VM did not start: {e}"),
            Err(_) => bail!("the VM did not start within {} s", timeout.as_secs()),
        }
    }

    /// The VM's state now.
    pub fn state(&self) -> State {
        let vm = OnQueue(&*self.vm);
        let state = on_queue(&self.queue, move || {
            // SAFETY: on the VM's queue.
            unsafe { vm.into_inner().state() }
        });
        match state {
            VZVirtualMachineState::Starting => State::Starting,
            VZVirtualMachineState::Running => State::Running,
            VZVirtualMachineState::Stopped | VZVirtualMachineState::Error => State::Stopped,
            _ => State::Other,
        }
    }

    /// Connects to vsock `port` in the guest. The descriptor is a duplicate made inside VZ's
    /// handler: the connection's own closes when the handler returns and VZ drops it.
    pub fn connect(&self, port: u32, timeout: Duration) -> Result<OwnedFd> {
        let (tx, rx) = mpsc::channel::<Result<OwnedFd, String>>();
        let vm = OnQueue(&*self.vm);
        on_queue(&self.queue, move || -> Result<()> {
            let vm = vm.into_inner();
            let device = virtio_socket_device(vm)?;
            let done = RcBlock::new(
                move |conn: *mut VZVirtioSocketConnection, err: *mut NSError| {
                    // SAFETY: VZ passes nil or live objects for the duration of the call.
                    let r = match unsafe { (conn.as_ref(), err.as_ref()) } {
                        // SAFETY: the descriptor is open until the handler returns.
                        (Some(conn), _) => dup_fd(unsafe { conn.fileDescriptor() }),
                        (None, Some(e)) => Err(describe(e)),
                        (None, None) => Err("no connection and no error".into()),
                    };
                    let _ = tx.send(r);
                },
            );
            // SAFETY: on the VM's queue; VZ retains the block until it has called it.
            unsafe { device.connectToPort_completionHandler(port, &done) };
            Ok(())
        })?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(fd)) => Ok(fd),
            Ok(Err(e)) => bail!("vsock port {port} in the guest: {e}"),
            Err(_) => bail!(
                "vsock port {port} in the guest: no answer within {} ms",
                timeout.as_millis()
            ),
        }
    }

    /// Stops the VM at once (the guest gets no say) and waits for VZ to confirm.
    pub fn stop(&self, timeout: Duration) -> Result<()> {
        if self.state() == State::Stopped {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let vm = OnQueue(&*self.vm);
        on_queue(&self.queue, move || {
            let vm = vm.into_inner();
            let done = RcBlock::new(move |err: *mut NSError| {
                // SAFETY: VZ passes nil or a live NSError for the duration of the call.
                let r = match unsafe { err.as_ref() } {
                    None => Ok(()),
                    Some(e) => Err(describe(e)),
                };
                let _ = tx.send(r);
            });
            // SAFETY: on the VM's queue.
            unsafe { vm.stopWithCompletionHandler(&done) };
        });
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(|e| anyhow!("the VM did not stop: {e}")),
            Err(_) => bail!("the VM did not stop within {} s", timeout.as_secs()),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // The VM is released on its own queue, like every other use of it.
        // SAFETY: `self.vm` and `self.listeners` are not used again after this.
        let both = OnQueue(unsafe {
            (
                ManuallyDrop::take(&mut self.vm),
                ManuallyDrop::take(&mut self.listeners),
            )
        });
        on_queue(&self.queue, move || drop(both.into_inner()));
    }
}

/// The VM's vsock device. Call on the VM's queue.
fn virtio_socket_device(vm: &VZVirtualMachine) -> Result<Retained<VZVirtioSocketDevice>> {
    // SAFETY: the caller is on the VM's queue.
    let devices = unsafe { vm.socketDevices() };
    devices
        .firstObject()
        .ok_or_else(|| anyhow!("the VM has no vsock device"))?
        .downcast::<VZVirtioSocketDevice>()
        .map_err(|_| anyhow!("the VM's socket device is not a virtio vsock device"))
}

fn dup_fd(fd: i32) -> Result<OwnedFd, String> {
    // SAFETY: `fd` is the connection's open descriptor for the duration of the handler;
    // F_DUPFD_CLOEXEC makes a new one that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(format!(
            "cannot duplicate the vsock descriptor: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `new` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Whether this Mac can run VMs at all (Apple silicon or a VT-x Intel Mac, macOS 11+).
pub fn supported() -> bool {
    // SAFETY: a class method without arguments or threading requirements.
    unsafe { VZVirtualMachine::isSupported() }
}
