//! Network namespaces for environments, made ahead of need on a dedicated thread (a thread
//! that enters a namespace must not be one of the async runtime's), each with its Runtime
//! API listener already bound to 127.0.0.1:9001 inside and, in bridge mode, its veth pair.

use std::collections::{BTreeSet, VecDeque};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sched::{CloneFlags, setns, unshare};

use crate::NetworkMode;
use crate::net::{Bridge, Veth};

/// The port of the Runtime API inside an environment, as on AWS.
pub const RUNTIME_API_PORT: u16 = 9001;

/// How many namespaces of the default mode are kept ready.
const READY_TARGET: usize = 4;

/// One environment's network: its namespace, the Runtime API listener inside it, its veth.
/// Dropping it closes the namespace, which takes the veth pair with it.
pub struct NetSlot {
    /// The namespace (kept open so it lives as long as the environment).
    pub netns: OwnedFd,
    /// Bound to 127.0.0.1:9001 inside the namespace (taken by the environment).
    pub listener: Option<TcpListener>,
    /// The veth pair, in bridge mode (held for the environment's lifetime).
    _veth: Option<Veth>,
    /// Its bridge address slot, free again when this is dropped.
    _slot: Option<SlotGuard>,
}

/// Holds a bridge address slot while an environment uses it.
struct SlotGuard {
    slot: u32,
    used: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(&self.slot);
        }
    }
}

/// Bridge address slots: handed out round-robin (so a freed address is not reused at once,
/// while the kernel still removes its old interface), never two at a time.
struct Slots {
    used: Arc<Mutex<BTreeSet<u32>>>,
    cursor: u32,
    capacity: u32,
}

impl Slots {
    fn take(&mut self) -> Option<SlotGuard> {
        let mut used = self.used.lock().ok()?;
        for _ in 0..self.capacity {
            let slot = self.cursor;
            self.cursor = (self.cursor + 1) % self.capacity.max(1);
            if used.insert(slot) {
                return Some(SlotGuard {
                    slot,
                    used: self.used.clone(),
                });
            }
        }
        None
    }
}

enum Request {
    /// Make a slot now and send it back.
    Make(
        NetworkMode,
        tokio::sync::oneshot::Sender<std::io::Result<NetSlot>>,
    ),
    /// A ready slot was taken: top the pool up.
    Refill,
}

/// The factory thread's handle.
pub struct NetFactory {
    ready: Arc<Mutex<VecDeque<NetSlot>>>,
    mode: NetworkMode,
    requests: Sender<Request>,
}

impl NetFactory {
    /// Starts the factory, keeping a few namespaces of `default_mode` ready.
    pub fn start(default_mode: NetworkMode, bridge: Option<Arc<Bridge>>) -> std::io::Result<Self> {
        let host = std::fs::File::open("/proc/thread-self/ns/net")?;
        let ready = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pool = ready.clone();
        std::thread::Builder::new()
            .name("lambent-netns".into())
            .spawn(move || factory(OwnedFd::from(host), bridge, default_mode, pool, rx))?;
        Ok(Self {
            ready,
            mode: default_mode,
            requests: tx,
        })
    }

    /// A namespace of `mode` (none or bridge), ready-made when one is waiting.
    pub async fn take(&self, mode: NetworkMode) -> std::io::Result<NetSlot> {
        let requests = &self.requests;
        if mode == self.mode {
            let slot = self
                .ready
                .lock()
                .ok()
                .and_then(|mut ready| ready.pop_front());
            if let Some(slot) = slot {
                let _ = requests.send(Request::Refill);
                return Ok(slot);
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        requests
            .send(Request::Make(mode, tx))
            .map_err(|_| std::io::Error::other("the network namespace factory stopped"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the network namespace factory stopped"))?
    }

    /// Drops the namespaces kept ready (at shutdown).
    pub fn drain(&self) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.clear();
        }
    }
}

fn factory(
    host: OwnedFd,
    bridge: Option<Arc<Bridge>>,
    default_mode: NetworkMode,
    ready: Arc<Mutex<VecDeque<NetSlot>>>,
    requests: Receiver<Request>,
) {
    let mut slots = Slots {
        used: Arc::new(Mutex::new(BTreeSet::new())),
        cursor: 0,
        capacity: bridge.as_ref().map_or(0, |b| b.capacity()),
    };
    let mut make = |mode: NetworkMode| {
        let bridge = if mode == NetworkMode::Bridge {
            bridge.as_deref()
        } else {
            None
        };
        let slot = match bridge {
            Some(_) => match slots.take() {
                Some(slot) => Some(slot),
                None => {
                    return Ok(Err(std::io::Error::other(
                        "every address of the bridge subnet is in use (use a larger --bridge-subnet)",
                    )));
                }
            },
            None => None,
        };
        make_slot(&host, bridge.zip(slot))
    };
    loop {
        let short = ready
            .lock()
            .map(|r| r.len() < READY_TARGET)
            .unwrap_or(false);
        let wait = if short {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        };
        match requests.recv_timeout(wait) {
            Ok(Request::Make(mode, reply)) => match make(mode) {
                Ok(made) => {
                    let _ = reply.send(made);
                }
                Err(Stranded(e)) => return stranded(e),
            },
            Ok(Request::Refill) | Err(RecvTimeoutError::Timeout) => {
                if !short {
                    continue;
                }
                match make(default_mode) {
                    Err(Stranded(e)) => return stranded(e),
                    Ok(Ok(slot)) => {
                        if let Ok(mut ready) = ready.lock() {
                            ready.push_back(slot);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("cannot prepare a network namespace: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn stranded(e: nix::errno::Errno) {
    // Every later slot would be made from the wrong namespace: stop; takers get an error.
    tracing::error!(
        "the network namespace factory cannot return to the host namespace ({e}); no more environments can start"
    );
}

/// Makes one namespace on the calling thread, which leaves it again before returning.
fn make_slot(
    host: &OwnedFd,
    bridge: Option<(&Bridge, SlotGuard)>,
) -> Result<std::io::Result<NetSlot>, Stranded> {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
        return Ok(Err(e.into()));
    }
    let made = (|| {
        let netns = OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net")?);
        loopback_up()?;
        let listener = TcpListener::bind(("127.0.0.1", RUNTIME_API_PORT))?;
        listener.set_nonblocking(true)?;
        Ok((netns, listener))
    })();
    if let Err(e) = setns(host, CloneFlags::CLONE_NEWNET) {
        return Err(Stranded(e));
    }
    let (netns, listener) = match made {
        Ok(parts) => parts,
        Err(e) => return Ok(Err(e)),
    };
    // Back in the host namespace: the host side of the veth pair is made here, the inside
    // through the namespace's descriptor.
    let (veth, slot) = match bridge {
        Some((bridge, slot)) => {
            let path = PathBuf::from(format!("/proc/self/fd/{}", netns.as_raw_fd()));
            match bridge.attach(&path, slot.slot) {
                Ok(veth) => (Some(veth), Some(slot)),
                Err(e) => return Ok(Err(std::io::Error::other(e))),
            }
        }
        None => (None, None),
    };
    Ok(Ok(NetSlot {
        netns,
        listener: Some(listener),
        _veth: veth,
        _slot: slot,
    }))
}

/// The factory thread could not return to the host's network namespace.
struct Stranded(nix::errno::Errno);

/// Brings up `lo` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `request`, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS filled in.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS sets the flags from the same valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
