//! Sandbox probe for Lambent's end-to-end suite, built with the official
//! `lambda_runtime` crate and deployed as a `provided.al2023` `bootstrap`.
//!
//! The event's `"action"` selects what it does:
//!
//! - `{"action": "ping"}` answers `{"pong": true, "pid": ...}`.
//! - `{"action": "accepted"}` answers `{"accepted": n}`: connections taken
//!   by the last `listen` attack.
//! - `{"action": "report"}` describes the environment from inside: ids,
//!   capabilities, seccomp and no-new-privs from `/proc/self/status`,
//!   namespaces, cgroups, mounts, visible PIDs, network interfaces and
//!   addresses, hostname, cwd, `/tmp` size and the Runtime API address.
//! - `{"action": "attack", "name": <name>, ...args}` tries one thing a
//!   function must not be able to do and answers
//!   `{"name", "ok", "error", "errno", "message", "detail"}`, where `ok`
//!   says whether the attack got through and `error` is the errno name
//!   (`"EPERM"`, `"ENOSPC"`, ...) of the first failure.
//!
//! Attacks: `read_file` {path, redact?, max?}, `list_dir` {path},
//! `write_file` {path, content?, existing?, keep?}, `fill_tmp` {mb, keep?},
//! `connect` {host, port, http_path?, timeout_ms?}, `steal_invocation`
//! {host, port}, `listen` {port, seconds}, `kill` {pid, signal?}, `ptrace`
//! {pid}, `fork_bomb` {seconds?, max?}, `alloc` {mb}, `mount`, `umount`
//! {path}, `pivot_root`, `load_module`, `kexec`, `unshare` {flags: net |
//! user | mnt | pid | ipc | uts | cgroup}, `setns` {ns}, `chroot`,
//! `setuid0`, `reboot`, `bpf`, `perf_event_open`, `keyctl`, `swapon`,
//! `raw_socket`, `sysctl_write`, `mknod` {path?}.
//!
//! Every attack is built to be harmless when it unexpectedly succeeds, even
//! on an unsandboxed host as root (`--sandbox none`): privileged syscalls
//! are made with arguments the kernel rejects *after* its permission check
//! (so `EPERM` means "refused", anything else means "the permission check
//! passed"), state-changing calls run in a forked child that exits at once,
//! anything created is removed again, and signals other than 0 and
//! unmounts outside `/tmp/m` are refused when the probe runs as root.
//! The probe never panics on purpose: a failed attack is a normal answer.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Map, Value, json};

const MIB: u64 = 1024 * 1024;

// --------------------------------------------------------------------------
// errors

fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOKEY => "ENOKEY",
        libc::EDQUOT => "EDQUOT",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EHOSTDOWN => "EHOSTDOWN",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The outcome of one attack.
struct Outcome {
    ok: bool,
    errno: Option<i32>,
    error: Option<String>,
    message: Option<String>,
    detail: Value,
}

impl Outcome {
    fn success(detail: Value) -> Self {
        Outcome {
            ok: true,
            errno: None,
            error: None,
            message: None,
            detail,
        }
    }

    fn errno(errno: i32, detail: Value) -> Self {
        Outcome {
            ok: false,
            errno: Some(errno),
            error: Some(errno_name(errno)),
            message: Some(io::Error::from_raw_os_error(errno).to_string()),
            detail,
        }
    }

    fn io(err: &io::Error, detail: Value) -> Self {
        match err.raw_os_error() {
            Some(errno) => Outcome::errno(errno, detail),
            None => {
                let name = match err.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "ETIMEDOUT".to_owned(),
                    io::ErrorKind::NotFound => "ENOENT".to_owned(),
                    kind => format!("{kind:?}"),
                };
                Outcome {
                    ok: false,
                    errno: None,
                    error: Some(name),
                    message: Some(err.to_string()),
                    detail,
                }
            }
        }
    }

    /// Not attempted: the probe refused to do something that could harm an
    /// unsandboxed host, or the arguments were unusable.
    fn refused(why: &str, detail: Value) -> Self {
        Outcome {
            ok: false,
            errno: None,
            error: Some("REFUSED".to_owned()),
            message: Some(why.to_owned()),
            detail,
        }
    }

    /// For privileged syscalls made with arguments the kernel rejects after
    /// its permission check: `ret >= 0` or an error other than EPERM/EACCES
    /// means the permission check passed, i.e. the attack got through.
    /// ENOSYS (a kernel built without the syscall) proves nothing either
    /// way and counts as not got through; `error` tells it apart.
    fn privileged(ret: i64, errno: i32, mut detail: Value) -> Self {
        if let Value::Object(map) = &mut detail {
            map.insert("ret".into(), json!(ret));
        }
        if ret >= 0 {
            return Outcome::success(detail);
        }
        let mut out = Outcome::errno(errno, detail);
        out.ok = !matches!(errno, libc::EPERM | libc::EACCES | libc::ENOSYS);
        out
    }

    fn into_json(self, name: &str) -> Value {
        json!({
            "name": name,
            "ok": self.ok,
            "error": self.error,
            "errno": self.errno,
            "message": self.message,
            "detail": self.detail,
        })
    }
}

fn is_root() -> bool {
    // SAFETY: getuid/geteuid cannot fail.
    unsafe { libc::getuid() == 0 || libc::geteuid() == 0 }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

// --------------------------------------------------------------------------
// forked children

enum Child {
    /// The call returned a non-negative value.
    Ok,
    /// The call failed with this errno.
    Errno(i32),
    /// The child died from this signal.
    Signaled(i32),
    /// fork itself failed.
    ForkFailed(i32),
}

impl Child {
    fn to_outcome(&self, mut detail: Value) -> Outcome {
        match *self {
            Child::Ok => Outcome::success(detail),
            Child::Errno(e) => Outcome::privileged(-1, e, detail),
            Child::Signaled(sig) => {
                if let Value::Object(map) = &mut detail {
                    map.insert("child_signal".into(), json!(sig));
                }
                Outcome::refused(&format!("the child died from signal {sig}"), detail)
            }
            Child::ForkFailed(e) => {
                let mut out = Outcome::errno(e, detail);
                out.message = Some(format!("fork failed: {}", out.message.unwrap_or_default()));
                out
            }
        }
    }
}

/// Runs `f` in a forked child that exits right after it, so nothing it
/// changes (ids, root, namespaces, tracing) outlives the attempt. `f` runs
/// after `fork` in a multi-threaded process: it must only make raw syscalls
/// (no allocation, no locks).
fn in_child<F: FnOnce() -> libc::c_long>(f: F) -> Child {
    // SAFETY: the child only runs `f` (raw syscalls) and `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Child::ForkFailed(last_errno());
    }
    if pid == 0 {
        let ret = f();
        let code = if ret >= 0 {
            0
        } else {
            // SAFETY: reading the thread's errno.
            let e = unsafe { *libc::__errno_location() };
            if (1..255).contains(&e) { e } else { 255 }
        };
        // SAFETY: leaving the child without running any Rust destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && last_errno() != libc::EINTR {
            return Child::ForkFailed(last_errno());
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Child::Ok,
            e => Child::Errno(e),
        }
    } else if libc::WIFSIGNALED(status) {
        Child::Signaled(libc::WTERMSIG(status))
    } else {
        Child::Signaled(0)
    }
}

// --------------------------------------------------------------------------
// report

fn read_string(path: &str) -> Value {
    match fs::read_to_string(path) {
        Ok(s) => Value::String(s),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn status_fields() -> Value {
    let wanted = [
        "Name",
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
        "NSpid",
    ];
    let mut out = Map::new();
    match fs::read_to_string("/proc/self/status") {
        Ok(text) => {
            for line in text.lines() {
                if let Some((key, value)) = line.split_once(':')
                    && wanted.contains(&key)
                {
                    out.insert(key.to_owned(), Value::String(value.trim().to_owned()));
                }
            }
        }
        Err(e) => {
            out.insert("error".into(), Value::String(e.to_string()));
        }
    }
    Value::Object(out)
}

fn namespaces() -> Value {
    let mut out = Map::new();
    for ns in ["pid", "mnt", "ipc", "uts", "net", "user", "cgroup", "time"] {
        let v = match fs::read_link(format!("/proc/self/ns/{ns}")) {
            Ok(p) => Value::String(p.to_string_lossy().into_owned()),
            Err(e) => Value::String(format!("error: {e}")),
        };
        out.insert(ns.to_owned(), v);
    }
    Value::Object(out)
}

fn proc_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

fn interfaces() -> Vec<String> {
    fs::read_to_string("/proc/net/dev")
        .map(|text| {
            text.lines()
                .skip(2)
                .filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn ipv4_addresses() -> Value {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return json!({ "error": io::Error::last_os_error().to_string() });
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: walking the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_name.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // SAFETY: ifa_name is a NUL-terminated string.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned();
                out.entry(name).or_default().push(addr.to_string());
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing what getifaddrs allocated.
    unsafe { libc::freeifaddrs(ifap) };
    json!(out)
}

/// The default route's gateway from /proc/net/route, if any.
fn default_gateway() -> Value {
    let Ok(text) = fs::read_to_string("/proc/net/route") else {
        return Value::Null;
    };
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 2
            && cols[1] == "00000000"
            && let Ok(gw) = u32::from_str_radix(cols[2], 16)
        {
            return json!({
                "interface": cols[0],
                "gateway": Ipv4Addr::from(gw.to_le_bytes()).to_string(),
            });
        }
    }
    Value::Null
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is large enough for any hostname.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return format!("error: {}", io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn statvfs(path: &str) -> Result<(u64, u64), i32> {
    let c = cstring(path);
    // SAFETY: statvfs fills the zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and struct pointers.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(last_errno());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

fn groups() -> Vec<u32> {
    // SAFETY: asking for the count only.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut buf = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds n entries.
    let got = unsafe { libc::getgroups(n, buf.as_mut_ptr()) };
    buf.truncate(got.max(0) as usize);
    buf
}

fn report() -> Value {
    // SAFETY: these id getters cannot fail.
    let (uid, gid, euid, egid, pid, ppid) = unsafe {
        (
            libc::getuid(),
            libc::getgid(),
            libc::geteuid(),
            libc::getegid(),
            libc::getpid(),
            libc::getppid(),
        )
    };
    let tmp = match statvfs("/tmp") {
        Ok((total, free)) => json!({ "total_bytes": total, "free_bytes": free }),
        Err(e) => json!({ "error": errno_name(e) }),
    };
    json!({
        "uid": uid,
        "gid": gid,
        "euid": euid,
        "egid": egid,
        "groups": groups(),
        "status": status_fields(),
        "ns": namespaces(),
        "cgroup": read_string("/proc/self/cgroup"),
        "mounts": fs::read_to_string("/proc/self/mounts")
            .map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default(),
        "pids": proc_pids(),
        "interfaces": interfaces(),
        "addresses": ipv4_addresses(),
        "route": default_gateway(),
        "hostname": hostname(),
        "cwd": std::env::current_dir().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|e| format!("error: {e}")),
        "env_runtime_api": std::env::var("AWS_LAMBDA_RUNTIME_API").ok(),
        "pid": pid,
        "ppid": ppid,
        "tmp": tmp,
        "exe": fs::read_link("/proc/self/exe").map(|p| p.to_string_lossy().into_owned()).ok(),
    })
}

// --------------------------------------------------------------------------
// attacks

fn arg_str<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

fn arg_u64(args: &Value, key: &str) -> Option<u64> {
    args.get(key).and_then(Value::as_u64)
}

fn arg_i64(args: &Value, key: &str) -> Option<i64> {
    args.get(key).and_then(Value::as_i64)
}

fn arg_bool(args: &Value, key: &str) -> bool {
    args.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn read_file(args: &Value) -> Outcome {
    let Some(path) = arg_str(args, "path") else {
        return Outcome::refused("missing path", Value::Null);
    };
    let max = arg_u64(args, "max").unwrap_or(4096).min(1 << 20);
    let redact = arg_bool(args, "redact");
    let mut detail = json!({ "path": path });
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Outcome::io(&e, detail),
    };
    let mut buf = Vec::new();
    if let Err(e) = file.take(max).read_to_end(&mut buf) {
        return Outcome::io(&e, detail);
    }
    detail["bytes"] = json!(buf.len());
    if !redact {
        detail["content"] = json!(String::from_utf8_lossy(&buf));
    }
    Outcome::success(detail)
}

fn list_dir(args: &Value) -> Outcome {
    let Some(path) = arg_str(args, "path") else {
        return Outcome::refused("missing path", Value::Null);
    };
    let mut detail = json!({ "path": path });
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => return Outcome::io(&e, detail),
    };
    let mut entries = Vec::new();
    for entry in rd {
        match entry {
            Ok(e) => entries.push(e.file_name().to_string_lossy().into_owned()),
            Err(e) => return Outcome::io(&e, detail),
        }
    }
    entries.sort();
    detail["count"] = json!(entries.len());
    entries.truncate(1000);
    detail["entries"] = json!(entries);
    Outcome::success(detail)
}

/// Creates a new file (never overwrites one: O_EXCL) and writes `content`;
/// the file is removed again unless `keep`. With `existing`, opens an
/// existing file for writing (no truncation, nothing written) to see whether
/// it is writable.
fn write_file(args: &Value) -> Outcome {
    let Some(path) = arg_str(args, "path") else {
        return Outcome::refused("missing path", Value::Null);
    };
    let content = arg_str(args, "content").unwrap_or("lambent-probe\n");
    let mut detail = json!({ "path": path });
    if arg_bool(args, "existing") {
        detail["mode"] = json!("open existing for writing (O_WRONLY|O_APPEND, nothing written)");
        return match fs::OpenOptions::new().append(true).open(path) {
            Ok(_) => Outcome::success(detail),
            Err(e) => Outcome::io(&e, detail),
        };
    }
    detail["mode"] = json!("create new (O_CREAT|O_EXCL)");
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Outcome::io(&e, detail),
    };
    let written = file.write_all(content.as_bytes());
    drop(file);
    let removed = !arg_bool(args, "keep") && fs::remove_file(path).is_ok();
    detail["removed"] = json!(removed);
    match written {
        Ok(()) => {
            detail["bytes"] = json!(content.len());
            Outcome::success(detail)
        }
        Err(e) => Outcome::io(&e, detail),
    }
}

/// Writes zeros in 1 MiB chunks until a write fails or `mb` MiB are
/// written. When the filesystem is larger than `mb` MiB (not a sandbox's
/// small /tmp), it also stops 256 MiB short of filling it.
fn fill_tmp(args: &Value) -> Outcome {
    let path = arg_str(args, "path").unwrap_or("/tmp/fill");
    if !path.starts_with("/tmp/") || path.contains("..") {
        return Outcome::refused("fill_tmp only writes under /tmp/", json!({ "path": path }));
    }
    let mb = arg_u64(args, "mb").unwrap_or(64);
    let mut limit = mb * MIB;
    let mut detail = json!({ "path": path, "requested_bytes": limit });
    let mut capped = false;
    match statvfs("/tmp") {
        Ok((total, free)) => {
            detail["fs_total_bytes"] = json!(total);
            detail["fs_free_bytes_before"] = json!(free);
            if total > limit {
                let safe = free.saturating_sub(256 * MIB);
                if safe < limit {
                    limit = safe;
                    capped = true;
                }
            }
        }
        Err(e) => detail["statvfs_error"] = json!(errno_name(e)),
    }
    detail["limit_bytes"] = json!(limit);
    detail["capped"] = json!(capped);
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return Outcome::io(&e, detail),
    };
    let chunk = vec![0u8; MIB as usize];
    let mut written: u64 = 0;
    let mut failure: Option<io::Error> = None;
    'outer: while written < limit {
        let want = (limit - written).min(MIB) as usize;
        let mut off = 0;
        while off < want {
            match file.write(&chunk[off..want]) {
                Ok(0) => {
                    failure = Some(io::Error::from_raw_os_error(libc::ENOSPC));
                    break 'outer;
                }
                Ok(n) => {
                    off += n;
                    written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break 'outer;
                }
            }
        }
    }
    drop(file);
    detail["written_bytes"] = json!(written);
    detail["written_mb"] = json!(written as f64 / MIB as f64);
    if !arg_bool(args, "keep") {
        detail["removed"] = json!(fs::remove_file(path).is_ok());
    }
    match failure {
        Some(e) => Outcome::io(&e, detail),
        None => Outcome::success(detail),
    }
}

fn resolve(host: &str, port: u16) -> io::Result<std::net::SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EADDRNOTAVAIL))
}

fn http_request(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    timeout: Duration,
) -> io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn connect(args: &Value) -> Outcome {
    let host = arg_str(args, "host").unwrap_or("127.0.0.1");
    let Some(port) = arg_u64(args, "port").and_then(|p| u16::try_from(p).ok()) else {
        return Outcome::refused("missing or bad port", Value::Null);
    };
    let timeout = Duration::from_millis(arg_u64(args, "timeout_ms").unwrap_or(1000));
    let mut detail = json!({ "host": host, "port": port, "connected": false });
    let addr = match resolve(host, port) {
        Ok(a) => a,
        Err(e) => return Outcome::io(&e, detail),
    };
    let started = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            detail["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
            return Outcome::io(&e, detail);
        }
    };
    detail["connected"] = json!(true);
    detail["elapsed_ms"] = json!(started.elapsed().as_millis() as u64);
    if let Some(path) = arg_str(args, "http_path") {
        match http_request(&mut stream, host, path, Duration::from_secs(2)) {
            Ok(resp) => {
                detail["status_line"] = json!(resp.lines().next().unwrap_or(""));
            }
            Err(e) => {
                detail["http_error"] = json!(
                    e.raw_os_error()
                        .map(errno_name)
                        .unwrap_or_else(|| e.to_string())
                )
            }
        }
    }
    Outcome::success(detail)
}

static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// Listens on 0.0.0.0:`port` (0 = any free port) for `seconds` in a
/// background thread, counting accepted connections (see the `accepted`
/// action), so another environment can try to reach this one.
fn listen(args: &Value) -> Outcome {
    let port = arg_u64(args, "port")
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let seconds = arg_u64(args, "seconds").unwrap_or(10).min(120);
    let mut detail = json!({ "port": port, "seconds": seconds });
    let listener = match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => return Outcome::io(&e, detail),
    };
    if let Ok(addr) = listener.local_addr() {
        detail["port"] = json!(addr.port());
    }
    if let Err(e) = listener.set_nonblocking(true) {
        return Outcome::io(&e, detail);
    }
    ACCEPTED.store(0, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            match listener.accept() {
                Ok(_) => {
                    ACCEPTED.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Outcome::success(detail)
}

/// Asks another Runtime API for the next invocation; ok = it handed one out.
fn steal_invocation(args: &Value) -> Outcome {
    let host = arg_str(args, "host").unwrap_or("127.0.0.1");
    let Some(port) = arg_u64(args, "port").and_then(|p| u16::try_from(p).ok()) else {
        return Outcome::refused("missing or bad port", Value::Null);
    };
    let mut detail = json!({ "host": host, "port": port, "connected": false });
    let addr = match resolve(host, port) {
        Ok(a) => a,
        Err(e) => return Outcome::io(&e, detail),
    };
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => return Outcome::io(&e, detail),
    };
    detail["connected"] = json!(true);
    let resp = match http_request(
        &mut stream,
        &format!("{host}:{port}"),
        "/2018-06-01/runtime/invocation/next",
        Duration::from_secs(2),
    ) {
        Ok(r) => r,
        Err(e) => return Outcome::io(&e, detail),
    };
    let status_line = resp.lines().next().unwrap_or("").to_owned();
    let request_id = resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("lambda-runtime-aws-request-id")
            .then(|| v.trim().to_owned())
    });
    let got = status_line.split_whitespace().nth(1) == Some("200") && request_id.is_some();
    detail["status_line"] = json!(status_line);
    detail["request_id"] = json!(request_id);
    if got {
        Outcome::success(detail)
    } else {
        Outcome::refused("no invocation handed out", detail)
    }
}

fn kill(args: &Value) -> Outcome {
    let Some(pid) = arg_i64(args, "pid") else {
        return Outcome::refused("missing pid", Value::Null);
    };
    let signal = arg_i64(args, "signal").unwrap_or(0);
    let detail = json!({ "pid": pid, "signal": signal });
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return Outcome::refused("pid must be a positive process id", detail);
    }
    if signal != 0 && is_root() {
        return Outcome::refused(
            "running as root (unsandboxed): only signal 0 (a permission check) is sent",
            detail,
        );
    }
    // SAFETY: plain syscall; pid > 0 addresses one process.
    let r = unsafe { libc::kill(pid as libc::pid_t, signal as libc::c_int) };
    if r == 0 {
        Outcome::success(detail)
    } else {
        Outcome::errno(last_errno(), detail)
    }
}

/// PTRACE_SEIZE (same permission check as PTRACE_ATTACH, but the tracee is
/// never stopped) from a forked child whose exit detaches again.
fn ptrace(args: &Value) -> Outcome {
    let Some(pid) = arg_i64(args, "pid") else {
        return Outcome::refused("missing pid", Value::Null);
    };
    let detail = json!({ "pid": pid, "method": "PTRACE_SEIZE from a child that exits at once" });
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return Outcome::refused("pid must be a positive process id", detail);
    }
    let child = in_child(|| {
        // SAFETY: raw syscall in the forked child.
        unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        }
    });
    match child {
        Child::Ok => Outcome::success(detail),
        Child::Errno(e) => Outcome::errno(e, detail),
        other => other.to_outcome(detail),
    }
}

/// Forks sleeping children for `seconds` (at most `max` of them), then
/// kills and reaps them all. ok = no fork failed.
fn fork_bomb(args: &Value) -> Outcome {
    let seconds = arg_u64(args, "seconds").unwrap_or(3).min(60);
    let max = arg_u64(args, "max").unwrap_or(2000).min(4000) as usize;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut children: Vec<libc::pid_t> = Vec::with_capacity(max);
    let mut first_error: Option<i32> = None;
    let mut failures: u64 = 0;
    let alarm_secs = (seconds + 30) as libc::c_uint;
    while Instant::now() < deadline && children.len() < max {
        // SAFETY: the child only makes raw syscalls until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe calls only; the child dies with its
            // parent thread, on SIGALRM, or when the parent kills it.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::alarm(alarm_secs);
                loop {
                    libc::pause();
                }
            }
        }
        if pid > 0 {
            children.push(pid);
        } else {
            let e = last_errno();
            first_error.get_or_insert(e);
            failures += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let forked = children.len();
    let elapsed = started.elapsed();
    for &pid in &children {
        // SAFETY: our own unreaped children; their pids cannot be reused yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut reaped = 0;
    for &pid in &children {
        let mut status = 0;
        // SAFETY: reaping our own child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            reaped += 1;
        }
    }
    let detail = json!({
        "forks": forked,
        "failures": failures,
        "first_error": first_error.map(errno_name),
        "max": max,
        "seconds": seconds,
        "elapsed_ms": elapsed.as_millis() as u64,
        "reaped": reaped,
    });
    match first_error {
        Some(e) => Outcome::errno(e, detail),
        None => Outcome::success(detail),
    }
}

fn mem_available() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Maps `mb` MiB and touches every page. Inside a memory cgroup smaller than
/// that, the kernel OOM-kills the probe; unsandboxed it is capped at half of
/// MemAvailable and released again.
fn alloc(args: &Value) -> Outcome {
    let mb = arg_u64(args, "mb").unwrap_or(256);
    let mut len = mb * MIB;
    let mut detail = json!({ "requested_mb": mb });
    if let Some(avail) = mem_available()
        && len > avail / 2
    {
        len = avail / 2 / MIB * MIB;
        detail["capped_mb"] = json!(len / MIB);
    }
    if len == 0 {
        return Outcome::refused("nothing to allocate", detail);
    }
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Outcome::errno(last_errno(), detail);
    }
    let base = ptr.cast::<u8>();
    let mut touched: u64 = 0;
    while touched < len {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(base.add(touched as usize), 1) };
        touched += 4096;
        if touched.is_multiple_of(64 * MIB) {
            eprintln!("probe alloc: touched {} MiB", touched / MIB);
        }
    }
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(ptr, len as usize) };
    detail["touched_mb"] = json!(touched / MIB);
    Outcome::success(detail)
}

fn mount_tmpfs(_args: &Value) -> Outcome {
    let target = "/tmp/m";
    let mut detail = json!({ "target": target, "fstype": "tmpfs" });
    let created = match fs::create_dir(target) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            detail["mkdir_error"] = json!(e.raw_os_error().map(errno_name));
            false
        }
    };
    let (src, tgt, fst, opts) = (
        cstring("none"),
        cstring(target),
        cstring("tmpfs"),
        cstring("size=1m"),
    );
    // SAFETY: valid C strings.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    let out = if r == 0 {
        // SAFETY: undoing the mount we just made.
        let u = unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
        detail["unmounted_again"] = json!(u == 0);
        Outcome::success(detail)
    } else {
        Outcome::privileged(-1, last_errno(), detail)
    };
    if created {
        let _ = fs::remove_dir(target);
    }
    out
}

fn umount(args: &Value) -> Outcome {
    let path = arg_str(args, "path").unwrap_or("/tmp");
    let detail = json!({ "path": path });
    if is_root() && !(path == "/tmp/m" || path.starts_with("/tmp/m/")) {
        return Outcome::refused(
            "running as root (unsandboxed): only /tmp/m may be unmounted",
            detail,
        );
    }
    let c = cstring(path);
    // SAFETY: valid C string.
    let r = unsafe { libc::umount2(c.as_ptr(), 0) };
    if r == 0 {
        Outcome::success(detail)
    } else {
        Outcome::privileged(-1, last_errno(), detail)
    }
}

/// pivot_root between two paths that do not exist: EPERM when refused,
/// ENOENT when the permission check passed.
fn pivot_root(_args: &Value) -> Outcome {
    let a = cstring("/nonexistent-lambent-probe-new-root");
    let b = cstring("/nonexistent-lambent-probe-put-old");
    // SAFETY: raw syscall with valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, a.as_ptr(), b.as_ptr()) };
    let e = last_errno();
    Outcome::privileged(r, e, json!({ "args": "nonexistent paths" }))
}

/// finit_module with invalid flags on /dev/null and init_module with an
/// empty image: neither can load anything; EPERM means refused.
fn load_module(_args: &Value) -> Outcome {
    let empty = cstring("");
    let devnull = cstring("/dev/null");
    // SAFETY: opening /dev/null read-only.
    let fd = unsafe { libc::open(devnull.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let (fr, fe) = if fd >= 0 {
        // SAFETY: raw syscall; invalid flags make it fail after the permission check.
        let r = unsafe { libc::syscall(libc::SYS_finit_module, fd, empty.as_ptr(), 0x4000_0000) };
        let e = last_errno();
        // SAFETY: closing our fd.
        unsafe { libc::close(fd) };
        (r, e)
    } else {
        (-1, last_errno())
    };
    let image = [0u8; 1];
    // SAFETY: raw syscall with a zero-length image.
    let ir = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            0usize,
            empty.as_ptr(),
        )
    };
    let ie = last_errno();
    let detail = json!({
        "finit_module": if fr >= 0 { Value::Null } else { json!(errno_name(fe)) },
        "init_module": if ir >= 0 { Value::Null } else { json!(errno_name(ie)) },
    });
    let finit = Outcome::privileged(fr, fe, detail.clone());
    if finit.ok {
        return finit;
    }
    let init = Outcome::privileged(ir, ie, detail);
    if init.ok { init } else { finit }
}

/// kexec_load with invalid flags and too many segments: EPERM when
/// refused, EINVAL when the permission check passed. Never loads anything.
fn kexec(_args: &Value) -> Outcome {
    // SAFETY: raw syscall; the arguments are rejected after the permission check.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0usize,
            1000usize,
            std::ptr::null::<libc::c_void>(),
            0x100usize,
        )
    };
    Outcome::privileged(
        r,
        last_errno(),
        json!({ "args": "invalid flags, 1000 segments" }),
    )
}

fn unshare(args: &Value) -> Outcome {
    let which = arg_str(args, "flags").unwrap_or("user");
    let flag = match which {
        "net" => libc::CLONE_NEWNET,
        "user" => libc::CLONE_NEWUSER,
        "mnt" => libc::CLONE_NEWNS,
        "pid" => libc::CLONE_NEWPID,
        "ipc" => libc::CLONE_NEWIPC,
        "uts" => libc::CLONE_NEWUTS,
        "cgroup" => libc::CLONE_NEWCGROUP,
        other => return Outcome::refused("unknown namespace", json!({ "flags": other })),
    };
    let detail = json!({ "flags": which, "where": "a forked, single-threaded child" });
    // SAFETY: raw syscall in the forked child.
    in_child(|| unsafe { libc::syscall(libc::SYS_unshare, flag) }).to_outcome(detail)
}

fn setns(args: &Value) -> Outcome {
    let which = arg_str(args, "ns").unwrap_or("net");
    let path = format!("/proc/self/ns/{which}");
    let detail = json!({ "ns": which, "target": "its own namespace, from a forked child" });
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => return Outcome::io(&e, detail),
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: raw syscall in the forked child.
    in_child(|| unsafe { libc::syscall(libc::SYS_setns, fd, 0) }).to_outcome(detail)
}

fn chroot(_args: &Value) -> Outcome {
    let dir = cstring("/tmp");
    let detail = json!({ "dir": "/tmp", "where": "a forked child" });
    // SAFETY: raw syscall in the forked child.
    in_child(|| unsafe { libc::syscall(libc::SYS_chroot, dir.as_ptr()) }).to_outcome(detail)
}

fn setuid0(_args: &Value) -> Outcome {
    // SAFETY: raw syscalls in forked children.
    let uid = in_child(|| unsafe { libc::syscall(libc::SYS_setuid, 0) });
    // SAFETY: as above.
    let gid = in_child(|| unsafe { libc::syscall(libc::SYS_setgid, 0) });
    let name = |c: &Child| match c {
        Child::Ok => Value::Null,
        Child::Errno(e) | Child::ForkFailed(e) => json!(errno_name(*e)),
        Child::Signaled(s) => json!(format!("signal {s}")),
    };
    let detail = json!({ "setuid": name(&uid), "setgid": name(&gid), "where": "forked children" });
    match (&uid, &gid) {
        (Child::Ok, _) => Outcome::success(detail),
        (_, Child::Ok) => Outcome::success(detail),
        (Child::Errno(e), _) => Outcome::errno(*e, detail),
        (other, _) => other.to_outcome(detail),
    }
}

/// reboot(2) with invalid magic numbers: the kernel checks CAP_SYS_BOOT
/// first (EPERM), then the magic (EINVAL), so this can never reboot.
fn reboot(_args: &Value) -> Outcome {
    // SAFETY: raw syscall; the invalid magic numbers make it fail.
    let r = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            0,
            0,
            libc::RB_POWER_OFF,
            std::ptr::null::<libc::c_void>(),
        )
    };
    Outcome::privileged(
        r,
        last_errno(),
        json!({ "args": "invalid magic numbers (EINVAL = the capability check passed)" }),
    )
}

/// BPF_MAP_CREATE of a one-entry array map (closed again if it works).
fn bpf(_args: &Value) -> Outcome {
    let mut attr = [0u32; 16];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = 4; // value_size
    attr[3] = 1; // max_entries
    // SAFETY: raw syscall with a 64-byte attribute block.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), 64usize) };
    let e = last_errno();
    if r >= 0 {
        // SAFETY: closing the map fd we got.
        unsafe { libc::close(r as libc::c_int) };
    }
    Outcome::privileged(r, e, json!({ "cmd": "BPF_MAP_CREATE array" }))
}

/// A software CPU-clock counter on itself (closed again if it works).
fn perf_event_open(_args: &Value) -> Outcome {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    // config = PERF_COUNT_SW_CPU_CLOCK (0); flags: disabled, exclude_kernel, exclude_hv
    let flags: u64 = 1 | (1 << 5) | (1 << 6);
    attr[40..48].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: raw syscall with a 128-byte perf_event_attr.
    let r = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 8usize) };
    let e = last_errno();
    if r >= 0 {
        // SAFETY: closing the fd we got.
        unsafe { libc::close(r as libc::c_int) };
    }
    Outcome::privileged(r, e, json!({ "event": "software cpu-clock on itself" }))
}

/// KEYCTL_GET_KEYRING_ID of the user keyring, without creating it.
fn keyctl(_args: &Value) -> Outcome {
    // SAFETY: raw syscall; read-only query.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, 0, -4i32, 0) };
    Outcome::privileged(
        r,
        last_errno(),
        json!({ "op": "KEYCTL_GET_KEYRING_ID user keyring" }),
    )
}

/// swapon of a file that does not exist: EPERM when refused, ENOENT when
/// the permission check passed.
fn swapon(_args: &Value) -> Outcome {
    let path = cstring("/nonexistent-lambent-probe-swap");
    // SAFETY: raw syscall; the path does not exist.
    let r = unsafe { libc::syscall(libc::SYS_swapon, path.as_ptr(), 0) };
    Outcome::privileged(
        r,
        last_errno(),
        json!({ "path": "/nonexistent-lambent-probe-swap" }),
    )
}

fn raw_socket(_args: &Value) -> Outcome {
    let try_socket = |domain, ty, proto| -> (i64, i32) {
        // SAFETY: creating (and closing) a socket.
        let fd = unsafe { libc::socket(domain, ty, proto) };
        let e = last_errno();
        if fd >= 0 {
            // SAFETY: closing our fd.
            unsafe { libc::close(fd) };
        }
        (i64::from(fd), e)
    };
    let eth_p_all = i32::from((libc::ETH_P_ALL as u16).to_be());
    let (pr, pe) = try_socket(libc::AF_PACKET, libc::SOCK_RAW, eth_p_all);
    let (ir, ie) = try_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
    let detail = json!({
        "af_packet": if pr >= 0 { json!("created") } else { json!(errno_name(pe)) },
        "af_inet_raw": if ir >= 0 { json!("created") } else { json!(errno_name(ie)) },
    });
    if pr >= 0 || ir >= 0 {
        return Outcome::success(detail);
    }
    Outcome::errno(pe, detail)
}

/// Writes the current hostname back to /proc/sys/kernel/hostname (the same
/// value, so it changes nothing even when it works).
fn sysctl_write(_args: &Value) -> Outcome {
    let path = "/proc/sys/kernel/hostname";
    let mut detail = json!({ "path": path, "value": "the current value, unchanged" });
    let current = match fs::read(path) {
        Ok(v) => v,
        Err(e) => return Outcome::io(&e, detail),
    };
    detail["current"] = json!(String::from_utf8_lossy(&current).trim());
    let mut file = match fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) => return Outcome::io(&e, detail),
    };
    match file.write_all(&current) {
        Ok(()) => Outcome::success(detail),
        Err(e) => Outcome::io(&e, detail),
    }
}

/// mknod of a character device (1,3, like /dev/null) under /tmp; removed
/// again if it works.
fn mknod(args: &Value) -> Outcome {
    let path = arg_str(args, "path").unwrap_or("/tmp/lambent-probe-null");
    let detail = json!({ "path": path, "device": "char 1:3" });
    if !path.starts_with("/tmp/") || path.contains("..") {
        return Outcome::refused("mknod only under /tmp/", detail);
    }
    let _ = fs::remove_file(path);
    let c = cstring(path);
    // SAFETY: valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    let e = last_errno();
    if r == 0 {
        let _ = fs::remove_file(path);
        return Outcome::success(detail);
    }
    Outcome::privileged(-1, e, detail)
}

fn attack(name: &str, args: &Value) -> Outcome {
    match name {
        "read_file" => read_file(args),
        "list_dir" => list_dir(args),
        "write_file" => write_file(args),
        "fill_tmp" => fill_tmp(args),
        "connect" => connect(args),
        "steal_invocation" => steal_invocation(args),
        "listen" => listen(args),
        "kill" => kill(args),
        "ptrace" => ptrace(args),
        "fork_bomb" => fork_bomb(args),
        "alloc" => alloc(args),
        "mount" => mount_tmpfs(args),
        "umount" => umount(args),
        "pivot_root" => pivot_root(args),
        "load_module" => load_module(args),
        "kexec" => kexec(args),
        "unshare" => unshare(args),
        "setns" => setns(args),
        "chroot" => chroot(args),
        "setuid0" => setuid0(args),
        "reboot" => reboot(args),
        "bpf" => bpf(args),
        "perf_event_open" => perf_event_open(args),
        "keyctl" => keyctl(args),
        "swapon" => swapon(args),
        "raw_socket" => raw_socket(args),
        "sysctl_write" => sysctl_write(args),
        "mknod" => mknod(args),
        other => Outcome::refused("unknown attack", json!({ "name": other })),
    }
}

// --------------------------------------------------------------------------
// handler

fn dispatch(event: Value) -> Value {
    match event
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("report")
    {
        "ping" => json!({ "pong": true, "pid": std::process::id() }),
        "accepted" => json!({ "accepted": ACCEPTED.load(Ordering::SeqCst) }),
        "report" => report(),
        "attack" => {
            let name = event
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            attack(&name, &event).into_json(&name)
        }
        other => json!({ "error": "unknown action", "action": other }),
    }
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, _ctx) = event.into_parts();
    let label = payload.get("name").cloned().unwrap_or(Value::Null);
    let result = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(payload)))
    })
    .await;
    Ok(match result {
        Ok(Ok(v)) => v,
        Ok(Err(_)) | Err(_) => json!({
            "name": label,
            "ok": false,
            "error": "PANIC",
            "errno": null,
            "message": "the probe panicked",
            "detail": null,
        }),
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
