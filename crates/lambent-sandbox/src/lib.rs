//! Lambent's sandbox: every execution environment isolated by the kernel.
//!
//! An environment is started by re-executing the `lambent` binary as a small init (see
//! [`init_main`]) that puts itself into new PID, mount, IPC and UTS namespaces and the
//! environment's network namespace, builds a minimal read-only root ([`mounts`]), and starts
//! the function's processes as an unprivileged uid without capabilities, with
//! `no_new_privs` and a seccomp filter. Each environment has its cgroups ([`cgroup`]) and its
//! Runtime API listener at 127.0.0.1:9001 inside its own network namespace, opened by the
//! server before the environment starts. All unsafe code and raw syscalls of Lambent live in
//! this crate.
//!
//! `--sandbox=none` runs the same init without isolation, for development.

pub mod cgroup;
mod init;
pub mod mounts;
mod net;
mod netns;
mod seccomp;

use std::collections::VecDeque;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

pub use cgroup::{CgroupRoot, CgroupVersion, EnvCgroup};
pub use init::{INIT_ARG, init_main};
pub use net::Bridge;
pub use netns::RUNTIME_API_PORT;

use init::{InitSpec, Isolation, ProcessSpec, command};
use mounts::{RealHost, RootRequest, plan_root};
use netns::{NetFactory, NetSlot};

/// How environments are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Namespaces, a private root, an unprivileged uid, seccomp and cgroups.
    Namespaces,
    /// Host processes with the server's privileges (development only).
    None,
}

/// An environment's outbound network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// A veth pair on the server's bridge with NAT to the outside; the host's ports and
    /// other environments are unreachable.
    Bridge,
    /// The host's network (development only; needs `--allow-host-network`).
    Host,
}

impl NetworkMode {
    /// The setting's value as written in the `lambent:network` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bridge => "bridge",
            Self::Host => "host",
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "bridge" => Ok(Self::Bridge),
            "host" => Ok(Self::Host),
            other => Err(format!(
                "unknown network mode {other:?}: expected none, bridge or host"
            )),
        }
    }
}

/// Settings of the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Isolation level.
    pub mode: SandboxMode,
    /// The `lambent` binary, re-executed as each environment's init.
    pub init_program: PathBuf,
    /// A directory of the server's where environments' roots are mounted (privately).
    pub state_dir: PathBuf,
    /// The cgroup mount (normally `/sys/fs/cgroup`); `None` only with `SandboxMode::None`.
    pub cgroup_mount: Option<PathBuf>,
    /// Most processes and threads one environment may have.
    pub pids_max: u32,
    /// The uid functions run as.
    pub uid: u32,
    /// The gid functions run as.
    pub gid: u32,
    /// The default network mode; `None` picks bridge when the host supports it, else none.
    pub default_network: Option<NetworkMode>,
    /// Whether functions may use the host's network.
    pub allow_host_network: bool,
    /// Name of the bridge device for bridge mode (≤ 15 characters).
    pub bridge_name: String,
    /// The bridge's IPv4 subnet and prefix length.
    pub bridge_subnet: (std::net::Ipv4Addr, u8),
    /// Host paths shown read-only at the same place in every environment (interpreters
    /// installed outside `/usr`).
    pub extra_read_only: Vec<PathBuf>,
}

/// Why the sandbox cannot run environments.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The host lacks something the sandbox needs.
    #[error(
        "cannot sandbox functions: {0}. Run `lambent serve` as root on a Linux kernel with namespaces, cgroups and seccomp, or start it with --sandbox=none for development (functions then run unisolated)"
    )]
    Unsupported(String),
    /// A function asked for something the sandbox does not allow.
    #[error("{0}")]
    Refused(String),
    /// The sandbox cannot be set up as configured.
    #[error("cannot set up the sandbox: {0}")]
    Config(String),
    /// Preparing an environment failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Its cgroups could not be made.
    #[error("{0}")]
    Cgroup(#[from] cgroup::CgroupError),
}

/// How many environments of the default network mode are kept prepared: cgroups joined,
/// network namespace entered, init waiting for its spec. Joining a cgroup v1 can wait for an
/// RCU grace period (tens of milliseconds), which this keeps off the cold-start path.
const PREPARED_TARGET: usize = 4;

/// The server's sandbox: checks done, shared parts (cgroup root, bridge, namespace factory)
/// set up, a few environments prepared ahead, ready to make more.
pub struct Sandbox {
    shared: Arc<Shared>,
}

/// What a [`Sandbox`] and its preparing task share.
struct Shared {
    config: SandboxConfig,
    cgroups: Option<CgroupRoot>,
    bridge: Option<Arc<Bridge>>,
    factory: Option<NetFactory>,
    default_network: NetworkMode,
    notes: Vec<String>,
    prepared: Mutex<VecDeque<Cell>>,
    refill: Arc<tokio::sync::Notify>,
    closing: std::sync::atomic::AtomicBool,
    /// Held while this server owns its bridge, so a second server cannot tear it down.
    _bridge_lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("mode", &self.shared.config.mode)
            .field("default_network", &self.shared.default_network)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Checks the host and prepares the shared parts, then starts preparing environments
    /// ahead (when called within a Tokio runtime). With [`SandboxMode::Namespaces`], a
    /// missing privilege or kernel feature is an error naming it.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let shared = Arc::new(Shared::new(config)?);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(keep_prepared(
                Arc::downgrade(&shared),
                shared.refill.clone(),
            ));
        }
        Ok(Self { shared })
    }

    /// Lines describing the sandbox, for the server's start-up output.
    pub fn notes(&self) -> &[String] {
        &self.shared.notes
    }

    /// True when environments are isolated (their paths are `/var/task`, `/opt`, …).
    pub fn isolated(&self) -> bool {
        self.shared.isolated()
    }

    /// The network mode for a function's `lambent:network` setting (absent: the default),
    /// or why it is refused.
    pub fn network_mode(&self, setting: Option<&str>) -> Result<NetworkMode, String> {
        self.shared.network_mode(setting)
    }

    /// The host's address on the bridge, which `bridge` environments reach it by; `None`
    /// without bridge networking.
    pub fn bridge_gateway(&self) -> Option<std::net::Ipv4Addr> {
        self.shared.bridge.as_ref().map(|bridge| bridge.gateway())
    }

    /// Lets `bridge` environments reach TCP `port` on the bridge gateway (the platform's API
    /// listener for them); every other host port stays closed to them.
    pub fn allow_api_port(&self, port: u16) -> Result<(), SandboxError> {
        match &self.shared.bridge {
            Some(bridge) => bridge
                .allow_api_port(port)
                .map_err(|e| SandboxError::Config(e.to_string())),
            None => Ok(()),
        }
    }

    /// One environment's sandbox with its memory limit set: a prepared one when one of
    /// `network` is waiting, else made now.
    pub async fn cell(&self, memory_mb: u32, network: NetworkMode) -> Result<Cell, SandboxError> {
        let prepared = if network == self.shared.prepared_mode() {
            self.shared
                .prepared
                .lock()
                .ok()
                .and_then(|mut ready| ready.pop_front())
        } else {
            None
        };
        let cell = match prepared {
            Some(cell) => {
                self.shared.refill.notify_one();
                cell
            }
            None => self.shared.prepare(network).await?,
        };
        if let Some(cgroup) = &cell.cgroup {
            cgroup.limit(memory_mb)?;
        }
        Ok(cell)
    }

    /// Cgroup directories of environments still present (for leak checks and shutdown).
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        self.shared
            .cgroups
            .as_ref()
            .map(CgroupRoot::environments)
            .unwrap_or_default()
    }

    /// Stops preparing environments and discards the prepared ones.
    pub fn stop_preparing(&self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.refill.notify_one();
        let discarded: Vec<Cell> = self
            .shared
            .prepared
            .lock()
            .map(|mut ready| ready.drain(..).collect())
            .unwrap_or_default();
        drop(discarded);
    }

    /// Releases the shared parts at shutdown, once every environment has ended.
    pub fn shutdown(&self) {
        self.stop_preparing();
        if let Some(factory) = &self.shared.factory {
            factory.drain();
        }
        if let Some(cgroups) = &self.shared.cgroups {
            cgroups.remove();
        }
        if let Some(bridge) = &self.shared.bridge {
            bridge.teardown();
            if self.shared._bridge_lock.is_some() {
                // Still holding the lock: no other server uses this file.
                let _ = std::fs::remove_file(bridge_lock_path(&self.shared.config.bridge_name));
            }
        }
    }
}

/// Keeps [`PREPARED_TARGET`] environments of the default network mode prepared.
async fn keep_prepared(shared: std::sync::Weak<Shared>, refill: Arc<tokio::sync::Notify>) {
    loop {
        let notified = refill.notified();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let short = shared
            .prepared
            .lock()
            .map(|ready| ready.len() < PREPARED_TARGET)
            .unwrap_or(false);
        if short {
            match shared.prepare(shared.prepared_mode()).await {
                Ok(cell) => {
                    if let Ok(mut ready) = shared.prepared.lock() {
                        ready.push_back(cell);
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot prepare an execution environment: {e}");
                    drop(shared);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        drop(shared);
        notified.await;
    }
}

impl Shared {
    fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let mut notes = Vec::new();
        if config.mode == SandboxMode::None {
            let cgroups =
                config
                    .cgroup_mount
                    .as_deref()
                    .and_then(|mount| match CgroupRoot::create(mount) {
                        Ok(root) => Some(root),
                        Err(e) => {
                            notes.push(format!("no cgroup limits: {e}"));
                            None
                        }
                    });
            notes.insert(
                0,
                "sandbox: NONE (--sandbox=none): functions run as host processes with the server's privileges. Development only.".into(),
            );
            return Ok(Self {
                config,
                cgroups,
                bridge: None,
                factory: None,
                default_network: NetworkMode::Host,
                notes,
                prepared: Mutex::new(VecDeque::new()),
                refill: Arc::new(tokio::sync::Notify::new()),
                closing: std::sync::atomic::AtomicBool::new(false),
                _bridge_lock: None,
            });
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::Unsupported(
                "the server is not running as root (namespaces, mounts and cgroups need it)".into(),
            ));
        }
        for ns in ["pid", "mnt", "ipc", "uts", "net"] {
            if !std::path::Path::new("/proc/self/ns").join(ns).exists() {
                return Err(SandboxError::Unsupported(format!(
                    "the kernel has no {ns} namespaces (/proc/self/ns/{ns} is missing)"
                )));
            }
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if !status.lines().any(|l| l.starts_with("Seccomp:")) {
            return Err(SandboxError::Unsupported(
                "the kernel has no seccomp support".into(),
            ));
        }
        let mount = config.cgroup_mount.as_deref().ok_or_else(|| {
            SandboxError::Unsupported("cgroups are disabled (--no-cgroups)".into())
        })?;
        let cgroups =
            CgroupRoot::create(mount).map_err(|e| SandboxError::Unsupported(e.to_string()))?;
        if !config.init_program.is_file() {
            return Err(SandboxError::Unsupported(format!(
                "the init program {} is missing",
                config.init_program.display()
            )));
        }
        std::fs::create_dir_all(config.state_dir.join("root"))?;

        let want_bridge = matches!(config.default_network, None | Some(NetworkMode::Bridge));
        let mut bridge_lock = None;
        let bridge = if want_bridge {
            let locked = lock_bridge(&config.bridge_name).map(|lock| bridge_lock = Some(lock));
            match locked.and_then(|()| Bridge::probe()).and_then(|()| {
                Bridge::setup(
                    &config.bridge_name,
                    config.bridge_subnet.0,
                    config.bridge_subnet.1,
                )
                .map_err(|e| e.to_string())
            }) {
                Ok(bridge) => Some(Arc::new(bridge)),
                Err(reason) if config.default_network.is_none() => {
                    notes.push(format!(
                        "bridge networking is not available ({reason}): functions default to network mode none"
                    ));
                    None
                }
                Err(reason) => {
                    return Err(SandboxError::Config(format!(
                        "bridge networking (--default-network bridge) is not available: {reason}"
                    )));
                }
            }
        } else {
            None
        };
        let default_network = config.default_network.unwrap_or(if bridge.is_some() {
            NetworkMode::Bridge
        } else {
            NetworkMode::None
        });
        let factory_mode = if default_network == NetworkMode::Host {
            NetworkMode::None
        } else {
            default_network
        };
        if bridge.is_none() {
            bridge_lock = None;
        }
        let factory = NetFactory::start(factory_mode, bridge.clone())?;
        notes.insert(
            0,
            format!(
                "sandbox: namespaces (pid, mount, ipc, uts, net), read-only root, uid {}:{}, no capabilities, seccomp, cgroup {} (memory, pids {}, cpu); default network {}{}",
                config.uid,
                config.gid,
                match cgroups.version() {
                    CgroupVersion::V1 => "v1",
                    CgroupVersion::V2 => "v2",
                },
                config.pids_max,
                default_network.as_str(),
                match (&bridge, default_network) {
                    (Some(_), NetworkMode::Bridge) => format!(
                        " (bridge {} {}/{})",
                        config.bridge_name, config.bridge_subnet.0, config.bridge_subnet.1
                    ),
                    _ => String::new(),
                }
            ),
        );
        if config.allow_host_network {
            notes.push("WARNING: --allow-host-network: functions tagged lambent:network=host share the host's network. Development only.".into());
        }
        Ok(Self {
            config,
            cgroups: Some(cgroups),
            bridge,
            factory: Some(factory),
            default_network,
            notes,
            prepared: Mutex::new(VecDeque::new()),
            refill: Arc::new(tokio::sync::Notify::new()),
            closing: std::sync::atomic::AtomicBool::new(false),
            _bridge_lock: bridge_lock,
        })
    }

    fn isolated(&self) -> bool {
        self.config.mode == SandboxMode::Namespaces
    }

    /// The network mode prepared environments have.
    fn prepared_mode(&self) -> NetworkMode {
        self.default_network
    }

    fn network_mode(&self, setting: Option<&str>) -> Result<NetworkMode, String> {
        let Some(setting) = setting else {
            return Ok(self.default_network);
        };
        let mode: NetworkMode = setting.parse()?;
        if !self.isolated() {
            return Ok(mode);
        }
        match mode {
            NetworkMode::Host if !self.config.allow_host_network => Err(
                "network mode host is only allowed when the server runs with --allow-host-network"
                    .into(),
            ),
            NetworkMode::Bridge if self.bridge.is_none() => {
                Err("network mode bridge is not available on this server".into())
            }
            mode => Ok(mode),
        }
    }

    /// Prepares one environment: its cgroups, its network with the Runtime API listener, its
    /// log pipe, and its init, started and waiting for the spec.
    async fn prepare(&self, network: NetworkMode) -> Result<Cell, SandboxError> {
        let id = uuid_like();
        let cgroup = match &self.cgroups {
            Some(root) => Some(Arc::new(root.environment(&id, self.config.pids_max)?)),
            None => None,
        };
        let mut cell = Cell {
            id,
            listener: None,
            runtime_api: String::new(),
            net: None,
            cgroup,
            isolation: self.isolated().then(|| {
                (
                    self.config.state_dir.join("root"),
                    self.config.uid,
                    self.config.gid,
                    self.config.extra_read_only.clone(),
                )
            }),
            output: None,
            init: None,
        };
        let isolated_net = self.isolated() && network != NetworkMode::Host;
        match (&self.factory, isolated_net) {
            (Some(factory), true) => {
                let mut slot = factory.take(network).await?;
                cell.listener = slot.listener.take();
                cell.runtime_api = format!("127.0.0.1:{RUNTIME_API_PORT}");
                cell.net = Some(slot);
            }
            _ => {
                let listener = TcpListener::bind("127.0.0.1:0")?;
                listener.set_nonblocking(true)?;
                cell.runtime_api = listener.local_addr()?.to_string();
                cell.listener = Some(listener);
            }
        }
        let (control_read, control_write) = std::io::pipe()?;
        let (events_read, events_write) = std::io::pipe()?;
        let (output_read, output_write) = std::io::pipe()?;
        let netns_fd = cell.net.as_ref().map(|n| n.netns.as_raw_fd());
        let inherited: Vec<i32> = [control_read.as_raw_fd(), events_write.as_raw_fd()]
            .into_iter()
            .chain(netns_fd)
            .collect();
        let procs = cell
            .cgroup
            .as_ref()
            .map(|c| c.procs_files())
            .unwrap_or_default();
        let mut command = tokio::process::Command::new(&self.config.init_program);
        command
            .arg(INIT_ARG)
            .args(init::init_args(
                &control_read,
                &events_write,
                netns_fd,
                self.isolated(),
                &procs,
            ))
            .env_clear()
            // The binary's allocator (mimalloc) would commit a 4 MiB arena up front in every
            // init; lazily it is a few hundred KiB (the processes inside get their own env).
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(output_write.try_clone()?))
            .stderr(std::process::Stdio::from(output_write))
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
        // which is async-signal-safe, on descriptors that are open in the child.
        unsafe {
            command.pre_exec(move || {
                for fd in &inherited {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(control_read);
        drop(events_write);
        let events = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(events_read))?;
        cell.output = Some(OwnedFd::from(output_read));
        cell.init = Some(WaitingInit {
            child,
            control: std::fs::File::from(OwnedFd::from(control_write)),
            events: Events {
                lines: BufReader::new(events).lines(),
            },
        });
        Ok(cell)
    }
}

/// The lock file of bridge `name`.
fn bridge_lock_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/lambent/bridge-{name}.lock"))
}

/// Takes the host-wide lock of bridge `name` (a file under /run), or says who holds it.
fn lock_bridge(name: &str) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let path = bridge_lock_path(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            use std::io::{Seek, Write};
            let _ = lock.set_len(0);
            let _ = lock.seek(std::io::SeekFrom::Start(0));
            let _ = write!(lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((file, _)) => {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            drop(file);
            Err(format!(
                "the bridge {name} belongs to another Lambent server (pid {}); give this one its own --bridge-name and --bridge-subnet",
                owner.trim()
            ))
        }
    }
}

/// A random 32-hex-digit id for an environment.
fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut random, &mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    bytes[..8]
        .iter_mut()
        .zip(nanos.to_le_bytes())
        .for_each(|(b, n)| *b ^= n);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An init started ahead, waiting for its spec.
struct WaitingInit {
    child: tokio::process::Child,
    control: std::fs::File,
    events: Events,
}

/// One environment's sandbox before its processes start: cgroups joined, network ready,
/// init waiting.
pub struct Cell {
    id: String,
    listener: Option<TcpListener>,
    runtime_api: String,
    net: Option<NetSlot>,
    cgroup: Option<Arc<EnvCgroup>>,
    isolation: Option<(PathBuf, u32, u32, Vec<PathBuf>)>,
    output: Option<OwnedFd>,
    init: Option<WaitingInit>,
}

/// The host directories of an environment's filesystem.
#[derive(Debug, Clone)]
pub struct Directories {
    /// The unpacked code.
    pub task: PathBuf,
    /// The merged layers.
    pub opt: Option<PathBuf>,
    /// Lambent's managed bootstraps.
    pub runtime_dir: PathBuf,
    /// Size of `/tmp`, MB.
    pub tmp_mb: u32,
}

/// A process to start in an environment.
#[derive(Debug, Clone)]
pub struct Process {
    /// The executable, as the environment sees it.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// True for the runtime (last), false for an extension.
    pub runtime: bool,
    /// Wait for [`Supervisor::start_held`] before starting it.
    pub held: bool,
}

impl Cell {
    /// The environment's id (its cgroup's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Runtime API listener (once).
    pub fn take_listener(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    /// The read end of the pipe the environment's processes write their output to (once).
    pub fn take_output(&mut self) -> Option<OwnedFd> {
        self.output.take()
    }

    /// `AWS_LAMBDA_RUNTIME_API` for this environment.
    pub fn runtime_api(&self) -> &str {
        &self.runtime_api
    }

    /// Hands the waiting init its spec: `processes`, their environment `env` and working
    /// directory `cwd` (as the environment sees them), in a root built from `dirs`.
    pub fn launch(
        mut self,
        dirs: &Directories,
        processes: Vec<Process>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
    ) -> std::io::Result<(Supervisor, Events)> {
        let mut init = self
            .init
            .take()
            .ok_or_else(|| std::io::Error::other("the environment's init is gone"))?;
        let isolation = self
            .isolation
            .take()
            .map(|(root, uid, gid, extra)| Isolation {
                root,
                plan: plan_root(
                    &RealHost,
                    &RootRequest {
                        task: dirs.task.clone(),
                        opt: dirs.opt.clone(),
                        runtime_dir: dirs.runtime_dir.clone(),
                        extra_read_only: extra,
                        tmp_mb: dirs.tmp_mb,
                        uid,
                        gid,
                    },
                ),
                hostname: format!("lambent-{}", &self.id[..self.id.len().min(12)]),
                uid,
                gid,
            });
        let spec = InitSpec {
            isolation,
            env,
            cwd,
            processes: processes
                .into_iter()
                .map(|p| ProcessSpec {
                    program: p.program,
                    args: p.args,
                    runtime: p.runtime,
                    held: p.held,
                })
                .collect(),
        };
        // The spec fits the pipe's buffer (environment variables are limited to 4 KB).
        std::io::Write::write_all(&mut init.control, &init::encode_spec(&spec))?;
        let pid = init.child.id().unwrap_or_default();
        Ok((
            Supervisor {
                pid,
                child: tokio::sync::Mutex::new(Some(init.child)),
                control: Mutex::new(Some(init.control)),
                cgroup: self.cgroup.take(),
                net: Mutex::new(self.net.take()),
            },
            init.events,
        ))
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        // Unused: the init (killed on drop) and its cgroups go.
        if let Some(mut init) = self.init.take() {
            let _ = init.child.start_kill();
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.kill_all_and_remove();
        }
    }
}

/// What the init reports.
#[derive(Debug)]
pub enum InitEvent {
    /// Process `index` was started (pid as the environment sees it).
    Started {
        /// Index in the launch list.
        index: usize,
        /// Its pid.
        pid: u32,
    },
    /// Process `index` could not be started.
    SpawnFailed {
        /// Index in the launch list.
        index: usize,
        /// Why (from exec).
        error: std::io::Error,
    },
    /// Process `index` ended (`exit status 1`, `signal: killed`, as Lambda words it).
    Exited {
        /// Index in the launch list.
        index: usize,
        /// How it ended.
        description: String,
    },
    /// The sandbox could not be built.
    SetupFailed(String),
}

/// The init's event stream; ends when the environment's last process is gone.
pub struct Events {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::pipe::Receiver>>,
}

impl Events {
    /// The next event, or `None` once the init has exited.
    pub async fn next(&mut self) -> Option<InitEvent> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            if let Some(event) = parse_event(&line) {
                return Some(event);
            }
        }
    }
}

fn parse_event(line: &str) -> Option<InitEvent> {
    let mut words = line.splitn(3, ' ');
    let kind = words.next()?;
    let first = words.next()?;
    if kind == "setup-failed" {
        return Some(InitEvent::SetupFailed(
            line.strip_prefix("setup-failed ")?.to_string(),
        ));
    }
    let index: usize = first.parse().ok()?;
    let rest = words.next()?;
    Some(match kind {
        "started" => InitEvent::Started {
            index,
            pid: rest.parse().ok()?,
        },
        "spawn-failed" => InitEvent::SpawnFailed {
            index,
            error: std::io::Error::from_raw_os_error(rest.parse().ok()?),
        },
        "exited" => InitEvent::Exited {
            index,
            description: describe_exit(rest),
        },
        _ => return None,
    })
}

/// `code N` / `signal N` as Lambda describes an exit.
fn describe_exit(how: &str) -> String {
    let (kind, n) = how.split_once(' ').unwrap_or((how, ""));
    match (kind, n) {
        ("code", n) => format!("exit status {n}"),
        ("signal", "9") => "signal: killed".into(),
        ("signal", "15") => "signal: terminated".into(),
        ("signal", "11") => "signal: segmentation fault".into(),
        ("signal", "6") => "signal: aborted".into(),
        ("signal", n) => format!("signal: {n}"),
        _ => "exited".into(),
    }
}

/// A running environment's init: commands to its processes, its cgroups and network.
pub struct Supervisor {
    pid: u32,
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    control: Mutex<Option<std::fs::File>>,
    cgroup: Option<Arc<EnvCgroup>>,
    net: Mutex<Option<NetSlot>>,
}

impl Supervisor {
    /// The init's pid on the host.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn send(&self, byte: u8) {
        if let Ok(mut control) = self.control.lock()
            && let Some(file) = control.as_mut()
        {
            let _ = std::io::Write::write_all(file, &[byte]);
        }
    }

    /// Starts the processes held back (the runtime, once extensions registered).
    pub fn start_held(&self) {
        self.send(command::START_HELD);
    }

    /// SIGTERM to the runtime's process group.
    pub fn term_runtime(&self) {
        self.send(command::TERM_RUNTIME);
    }

    /// SIGKILL to the runtime's process group.
    pub fn kill_runtime(&self) {
        self.send(command::KILL_RUNTIME);
    }

    /// SIGTERM to every process of the environment.
    pub fn term_all(&self) {
        self.send(command::TERM_ALL);
    }

    /// Kills every process of the environment at once: closing the control pipe makes the
    /// init kill its children and exit; the cgroup and SIGKILL to the init make sure.
    pub fn kill_all(&self) {
        if let Ok(mut control) = self.control.lock() {
            control.take();
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_members();
        }
        if self.pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// True when the kernel's OOM killer struck inside the environment.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_killed())
    }

    /// Peak memory of the environment, MB, when it has cgroups.
    pub fn max_memory_mb(&self) -> Option<u64> {
        self.cgroup.as_ref()?.max_memory_mb()
    }

    /// After the environment ended (its events stream closed, or it is being torn down):
    /// kills anything left, reaps the init, removes the cgroups and releases the network.
    pub async fn cleanup(&self) {
        self.kill_all();
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        if let Some(cgroup) = &self.cgroup {
            let members = cgroup.clone();
            let _ = tokio::task::spawn_blocking(move || members.kill_all_and_remove()).await;
        }
        if let Ok(mut net) = self.net.lock() {
            net.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_exits_read_like_lambda() {
        assert!(matches!(
            parse_event("started 1 7"),
            Some(InitEvent::Started { index: 1, pid: 7 })
        ));
        match parse_event("spawn-failed 0 13") {
            Some(InitEvent::SpawnFailed { index: 0, error }) => {
                assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied)
            }
            other => panic!("{other:?}"),
        }
        match parse_event("exited 2 signal 9") {
            Some(InitEvent::Exited {
                index: 2,
                description,
            }) => {
                assert_eq!(description, "signal: killed")
            }
            other => panic!("{other:?}"),
        }
        match parse_event("exited 0 code 3") {
            Some(InitEvent::Exited { description, .. }) => assert_eq!(description, "exit status 3"),
            other => panic!("{other:?}"),
        }
        match parse_event("setup-failed mounting /proc: EPERM") {
            Some(InitEvent::SetupFailed(message)) => assert_eq!(message, "mounting /proc: EPERM"),
            other => panic!("{other:?}"),
        }
        assert!(parse_event("nonsense").is_none());
        assert!(parse_event("started x 1").is_none());
    }

    #[test]
    fn network_modes_parse() {
        assert_eq!("bridge".parse::<NetworkMode>(), Ok(NetworkMode::Bridge));
        assert!("wide-open".parse::<NetworkMode>().is_err());
        assert_eq!(NetworkMode::Host.as_str(), "host");
    }
}
