//! The sandbox init: the program (the `lambent` binary re-executed with [`INIT_ARG`]) that
//! turns itself into an environment.
//!
//! It runs single-threaded, which is what makes namespaces, mounts and forks safe here
//! rather than in the multi-threaded server. The server starts it with three descriptors: a
//! control pipe (a length-prefixed [`InitSpec`], then one-byte commands), an event pipe
//! (lines: `started I PID`, `spawn-failed I ERRNO`, `exited I code N`/`exited I signal N`,
//! `setup-failed MESSAGE`), and the environment's network namespace (or `-1`).
//!
//! The first process (the outer init, in the host's PID namespace) joins the cgroups, enters
//! the network namespace, unshares mount, UTS, IPC and PID namespaces and forks the inner
//! init, PID 1 of the new PID namespace, which builds the root, pivots into it, mounts
//! `/proc`, and then starts the function's processes — each in its own session, as the
//! unprivileged uid with no capabilities, `no_new_privs` and the seccomp filter — reaping
//! every process of the namespace until the runtime and all extensions are gone. When PID 1
//! exits, the kernel kills whatever is left in the namespace.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use serde::{Deserialize, Serialize};

use crate::mounts::{MountKernel, MountOp, apply};
use crate::seccomp::Filters;

/// The argument that makes the `lambent` binary run as a sandbox init.
pub const INIT_ARG: &str = "__lambent-sandbox-init";

/// One-byte commands on the control pipe.
pub(crate) mod command {
    /// Start the processes held back until the extensions registered.
    pub const START_HELD: u8 = b'g';
    /// SIGTERM to the runtime's process group.
    pub const TERM_RUNTIME: u8 = b't';
    /// SIGKILL to the runtime's process group.
    pub const KILL_RUNTIME: u8 = b'k';
    /// SIGTERM to every process group.
    pub const TERM_ALL: u8 = b'T';
}

/// What an init is to build and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    /// Namespaces, root and identity; `None` runs the processes unisolated (`--sandbox=none`).
    pub isolation: Option<Isolation>,
    /// The processes' complete environment.
    pub env: Vec<(String, String)>,
    /// Their working directory.
    pub cwd: PathBuf,
    /// Extensions first, the runtime last.
    pub processes: Vec<ProcessSpec>,
}

/// The isolated part of an [`InitSpec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Isolation {
    /// Host directory the new root (a tmpfs) is mounted on, inside the new mount namespace.
    pub root: PathBuf,
    /// How to fill it.
    pub plan: Vec<MountOp>,
    /// UTS host name.
    pub hostname: String,
    /// Identity of the function's processes.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
}

/// One process to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProcessSpec {
    /// The executable, as the environment sees it.
    pub program: PathBuf,
    /// Its arguments (not including argv\[0\]).
    pub args: Vec<String>,
    /// True for the runtime: its process group gets the runtime signals.
    pub runtime: bool,
    /// Held back until [`command::START_HELD`].
    pub held: bool,
}

/// Runs the init; `args` are the arguments after [`INIT_ARG`]. Never returns.
pub fn init_main(args: &[String]) -> ! {
    let code = match outer(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("lambent sandbox init: {message}");
            125
        }
    };
    std::process::exit(code)
}

fn fd_arg(args: &[String], index: usize) -> Result<Option<OwnedFd>, String> {
    let raw: RawFd = args
        .get(index)
        .and_then(|a| a.parse().ok())
        .ok_or("usage: lambent __lambent-sandbox-init CONTROL_FD EVENTS_FD NETNS_FD")?;
    if raw < 0 {
        return Ok(None);
    }
    // SAFETY: the server passed these descriptors to this process for it alone to own.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(raw) }))
}

fn cloexec(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
}

/// The outer init: joins the cgroups and namespaces named on its command line, then waits
/// for the spec (a prepared environment waits here until it is taken into use), forks PID 1
/// and waits for it.
fn outer(args: &[String]) -> Result<i32, String> {
    let control = fd_arg(args, 0)?.ok_or("no control descriptor")?;
    let events = fd_arg(args, 1)?.ok_or("no event descriptor")?;
    let netns = fd_arg(args, 2)?;
    let isolated = args.get(3).map(String::as_str) == Some("isolated");
    for fd in [Some(&control), Some(&events), netns.as_ref()]
        .into_iter()
        .flatten()
    {
        cloexec(fd);
    }
    for procs in args.iter().skip(4) {
        std::fs::write(procs, std::process::id().to_string())
            .map_err(|e| format!("cannot join {procs}: {e}"))?;
    }
    if isolated {
        if let Some(netns) = &netns {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter the network namespace: {e}"))?;
        }
        unshare(
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWPID,
        )
        .map_err(|e| format!("cannot create namespaces: {e}"))?;
    }
    drop(netns);
    let mut control = File::from(control);
    let mut events = File::from(events);
    // A prepared environment discarded unused (at shutdown) sees the pipe closed: done.
    let Some(spec) = read_spec(&mut control)? else {
        return Ok(0);
    };
    // SAFETY: this process is single-threaded (a fresh exec that started no threads).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = inner(spec, control, &mut events);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(control);
            drop(events);
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("waitpid: {e}")),
                }
            }
        }
    }
}

/// Reads the spec; `None` when the pipe is closed before it.
fn read_spec(control: &mut File) -> Result<Option<InitSpec>, String> {
    let mut len = [0u8; 4];
    match control.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("reading the spec: {e}")),
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    control
        .read_exact(&mut buf)
        .map_err(|e| format!("reading the spec: {e}"))?;
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| format!("bad spec: {e}"))
}

/// Encodes a spec for the control pipe.
pub(crate) fn encode_spec(spec: &InitSpec) -> Vec<u8> {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    let mut out = (json.len() as u32).to_le_bytes().to_vec();
    out.extend(json);
    out
}

fn event(events: &mut File, line: &str) {
    let _ = events.write_all(format!("{line}\n").as_bytes());
}

/// The inner init (PID 1 when isolated). Returns its exit code.
fn inner(spec: InitSpec, control: File, events: &mut File) -> i32 {
    // Dies with the outer init, which dies with the environment.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let mut filters = None;
    if let Some(isolation) = &spec.isolation {
        if let Err(message) = build_root(isolation) {
            event(events, &format!("setup-failed {message}"));
            return 125;
        }
        match Filters::compile() {
            Ok(compiled) => filters = Some(compiled),
            Err(e) => {
                event(events, &format!("setup-failed {e}"));
                return 125;
            }
        }
    }
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(signal);
    }
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_err() {
        event(events, "setup-failed cannot block signals");
        return 125;
    }
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    else {
        event(events, "setup-failed cannot create a signalfd");
        return 125;
    };
    let launcher = Launcher::new(&spec, filters);
    let mut running: Vec<Option<Pid>> = vec![None; spec.processes.len()];
    let mut runtime_status: Option<i32> = None;
    let mut held_started = false;
    for (index, process) in spec.processes.iter().enumerate() {
        if !process.held {
            running[index] = launcher.start(index, process, events);
        }
    }
    let mut control = control;
    let mut control_open = true;
    loop {
        let runtime_done = spec
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.runtime)
            .all(|(i, p)| running[i].is_none() && (!p.held || held_started));
        if runtime_done && running.iter().all(Option::is_none) {
            break;
        }
        if !control_open && running.iter().all(Option::is_none) {
            break;
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if control_open {
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
        let control_ready = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty());
        let signal_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        drop(fds);
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo == Signal::SIGTERM as u32
                    || info.ssi_signo == Signal::SIGINT as u32
                {
                    signal_all(&running, Signal::SIGTERM);
                }
            }
            reap(&spec, &mut running, &mut runtime_status, events);
        }
        if control_ready {
            let mut byte = [0u8; 1];
            match control.read(&mut byte) {
                Ok(1) => match byte[0] {
                    command::START_HELD if !held_started => {
                        held_started = true;
                        for (index, process) in spec.processes.iter().enumerate() {
                            if process.held {
                                running[index] = launcher.start(index, process, events);
                            }
                        }
                    }
                    command::TERM_RUNTIME => signal_runtime(&spec, &running, Signal::SIGTERM),
                    command::KILL_RUNTIME => signal_runtime(&spec, &running, Signal::SIGKILL),
                    command::TERM_ALL => signal_all(&running, Signal::SIGTERM),
                    _ => {}
                },
                Ok(_) | Err(_) => {
                    // The server is gone or done with this environment.
                    control_open = false;
                    signal_all(&running, Signal::SIGKILL);
                }
            }
        }
    }
    if spec.isolation.is_none() {
        signal_all(&running, Signal::SIGKILL);
    }
    runtime_status.unwrap_or(0)
}

fn signal_runtime(spec: &InitSpec, running: &[Option<Pid>], signal: Signal) {
    for (index, process) in spec.processes.iter().enumerate() {
        if process.runtime
            && let Some(pid) = running[index]
        {
            let _ = killpg(pid, signal);
            let _ = kill(pid, signal);
        }
    }
}

fn signal_all(running: &[Option<Pid>], signal: Signal) {
    for pid in running.iter().flatten() {
        let _ = killpg(*pid, signal);
        let _ = kill(*pid, signal);
    }
}

/// Reaps every exited child (orphans of the namespace included) and reports the tracked ones.
fn reap(
    spec: &InitSpec,
    running: &mut [Option<Pid>],
    runtime_status: &mut Option<i32>,
    events: &mut File,
) {
    loop {
        let (pid, description, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, format!("code {code}"), code),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (
                pid,
                format!("signal {}", signal as i32),
                128 + signal as i32,
            ),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if let Some(index) = running.iter().position(|p| *p == Some(pid)) {
            running[index] = None;
            if spec.processes[index].runtime {
                *runtime_status = Some(code);
            }
            event(events, &format!("exited {index} {description}"));
        }
    }
}

/// Everything a process start needs, prepared before forking.
struct Launcher {
    env: Vec<CString>,
    cwd: CString,
    identity: Option<(Uid, Gid)>,
    filters: Option<Filters>,
}

impl Launcher {
    fn new(spec: &InitSpec, filters: Option<Filters>) -> Self {
        Self {
            env: spec
                .env
                .iter()
                .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
                .collect(),
            cwd: cstring(&spec.cwd),
            identity: spec
                .isolation
                .as_ref()
                .map(|i| (Uid::from_raw(i.uid), Gid::from_raw(i.gid))),
            filters,
        }
    }

    /// Starts one process; reports `started` or `spawn-failed`.
    fn start(&self, index: usize, process: &ProcessSpec, events: &mut File) -> Option<Pid> {
        let program = cstring(&process.program);
        let mut argv = vec![program.clone()];
        argv.extend(
            process
                .args
                .iter()
                .filter_map(|a| CString::new(a.as_str()).ok()),
        );
        let (err_read, err_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pair) => pair,
            Err(e) => {
                event(events, &format!("spawn-failed {index} {}", e as i32));
                return None;
            }
        };
        // SAFETY: the init is single-threaded, so the child may do anything before exec.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(err_read);
                let errno = self.exec(&program, &argv);
                let mut pipe = File::from(err_write);
                let _ = pipe.write_all(&(errno as i32).to_le_bytes());
                // SAFETY: leaves the forked child at once, without the parent's atexit work.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(err_write);
                let mut errno = [0u8; 4];
                let mut pipe = File::from(err_read);
                match pipe.read_exact(&mut errno) {
                    Ok(()) => {
                        let _ = waitpid(child, None);
                        event(
                            events,
                            &format!("spawn-failed {index} {}", i32::from_le_bytes(errno)),
                        );
                        None
                    }
                    Err(_) => {
                        event(events, &format!("started {index} {child}"));
                        Some(child)
                    }
                }
            }
            Err(e) => {
                event(events, &format!("spawn-failed {index} {}", e as i32));
                None
            }
        }
    }

    /// In the forked child: drops privileges and execs. Returns only on failure, with errno.
    fn exec(&self, program: &CString, argv: &[CString]) -> nix::errno::Errno {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        let _ = nix::unistd::setsid();
        if let Some((uid, gid)) = self.identity {
            if let Err(e) = drop_privileges(uid, gid) {
                return e;
            }
            if let Err(e) = nix::sys::prctl::set_no_new_privs() {
                return e;
            }
            if let Some(filters) = &self.filters
                && filters.install().is_err()
            {
                return nix::errno::Errno::EPERM;
            }
        }
        if let Err(e) = nix::unistd::chdir(self.cwd.as_c_str()) {
            return e;
        }
        match nix::unistd::execve(program, argv, &self.env) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}

fn cstring(path: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// Clears the capability bounding and ambient sets, then becomes `uid`/`gid` with no
/// supplementary groups (which clears the permitted and effective sets).
fn drop_privileges(uid: Uid, gid: Gid) -> Result<(), nix::errno::Errno> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only; EINVAL past the last capability.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            break;
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)?;
    Ok(())
}

/// The kernel side of [`MountKernel`].
struct Kernel;

impl MountKernel for Kernel {
    fn bind(
        &mut self,
        source: &Path,
        target: &Path,
        exec: bool,
        devices: bool,
    ) -> std::io::Result<()> {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )?;
        let mut flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
        if !exec {
            flags |= MsFlags::MS_NOEXEC;
        }
        if !devices {
            flags |= MsFlags::MS_NODEV;
        }
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
        Ok(())
    }

    fn tmpfs(
        &mut self,
        target: &Path,
        size_bytes: u64,
        mode: u32,
        exec: bool,
    ) -> std::io::Result<()> {
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if !exec {
            flags |= MsFlags::MS_NOEXEC;
        }
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            flags,
            Some(format!("size={size_bytes},mode={mode:o}").as_str()),
        )?;
        Ok(())
    }

    fn is_dir(&self, source: &Path) -> bool {
        source.is_dir()
    }
}

/// Builds the environment's root on a fresh tmpfs and pivots into it.
fn build_root(isolation: &Isolation) -> Result<(), String> {
    let fail = |what: &str, e: nix::errno::Errno| format!("{what}: {e}");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("making mounts private", e))?;
    let root = &isolation.root;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=755"),
    )
    .map_err(|e| fail("mounting the root tmpfs", e))?;
    apply(&isolation.plan, root, &mut Kernel)?;
    nix::unistd::chdir(root).map_err(|e| fail("entering the new root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| fail("mounting /proc", e))?;
    nix::unistd::sethostname(&isolation.hostname).map_err(|e| fail("sethostname", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| fail("making the root read-only", e))?;
    Ok(())
}

/// The init's command line after [`INIT_ARG`]: its descriptors, whether it isolates, and
/// the `cgroup.procs` files it joins.
pub(crate) fn init_args(
    control: &impl AsRawFd,
    events: &impl AsRawFd,
    netns: Option<RawFd>,
    isolated: bool,
    cgroup_procs: &[PathBuf],
) -> Vec<String> {
    let mut args = vec![
        control.as_raw_fd().to_string(),
        events.as_raw_fd().to_string(),
        netns.unwrap_or(-1).to_string(),
        if isolated { "isolated" } else { "host" }.to_string(),
    ];
    args.extend(
        cgroup_procs
            .iter()
            .map(|p| p.to_string_lossy().into_owned()),
    );
    args
}
