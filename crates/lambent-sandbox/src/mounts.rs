//! The filesystem an environment sees: a plan of mount operations computed on the server
//! (pure, from the host's layout and the environment's directories) and carried out by the
//! sandbox init inside the environment's mount namespace, through [`MountKernel`] so the
//! same code runs against a temporary directory in tests.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Host paths under `/etc` an environment gets (read-only) when the host has them: what the
/// dynamic loader, name resolution, TLS and time zones need.
const ETC_ESSENTIALS: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
];

/// Top-level host directories that are part of the read-only root (as directories or the
/// symlinks a merged-`/usr` host has).
const ROOT_ESSENTIALS: &[&str] = &["bin", "lib", "lib32", "lib64", "libx32", "sbin"];

/// Devices an environment may open.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One step of building an environment's root. Paths are absolute as the environment sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountOp {
    /// An empty directory in the root.
    Dir(PathBuf),
    /// A symbolic link in the root.
    Symlink {
        /// Where the link is.
        path: PathBuf,
        /// What it points to.
        target: PathBuf,
    },
    /// A small file written into the root.
    File {
        /// Where the file is.
        path: PathBuf,
        /// Its contents.
        contents: String,
    },
    /// A host file or directory bind-mounted read-only, `nosuid`.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Where it appears.
        path: PathBuf,
        /// Whether programs may be executed from it.
        exec: bool,
        /// Whether device nodes in it may be opened (only for the device binds).
        devices: bool,
    },
    /// A private tmpfs (`nosuid`, `nodev`).
    Tmpfs {
        /// Where it is mounted.
        path: PathBuf,
        /// Size limit, bytes.
        size_bytes: u64,
        /// Permission bits of its root.
        mode: u32,
        /// Whether programs may be executed from it.
        exec: bool,
    },
}

/// What the host looks like, as far as building a root goes (a trait so the plan is tested
/// on a made-up host).
pub trait HostLayout {
    /// What is at `path` on the host, without following a final symlink.
    fn kind(&self, path: &Path) -> Option<HostKind>;
    /// The target of the symlink at `path`.
    fn link_target(&self, path: &Path) -> Option<PathBuf>;
}

/// The kind of a host path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A directory.
    Dir,
    /// A regular file (or device).
    File,
    /// A symbolic link.
    Symlink,
}

/// The real host filesystem.
pub struct RealHost;

impl HostLayout for RealHost {
    fn kind(&self, path: &Path) -> Option<HostKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(if meta.file_type().is_symlink() {
            HostKind::Symlink
        } else if meta.is_dir() {
            HostKind::Dir
        } else {
            HostKind::File
        })
    }

    fn link_target(&self, path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }
}

/// The directories of one environment, as host paths.
#[derive(Debug, Clone)]
pub struct RootRequest {
    /// The function's unpacked code, mounted at `/var/task`.
    pub task: PathBuf,
    /// The merged layers, mounted at `/opt` (an empty `/opt` without layers).
    pub opt: Option<PathBuf>,
    /// Lambent's managed bootstraps, mounted at `/var/runtime`.
    pub runtime_dir: PathBuf,
    /// Further host paths shown read-only at the same place (interpreters installed outside
    /// `/usr`, such as a pyenv prefix).
    pub extra_read_only: Vec<PathBuf>,
    /// Size of `/tmp`, MB (EphemeralStorage).
    pub tmp_mb: u32,
    /// The function's uid and gid, for the generated `/etc/passwd`.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
}

/// Plans the root of one environment. Nothing of the host appears in it except what is
/// listed here: `/usr`, the top-level library and binary directories, a few `/etc` files,
/// the devices in [`DEVICES`], and the environment's own directories.
pub fn plan_root(host: &dyn HostLayout, request: &RootRequest) -> Vec<MountOp> {
    let mut ops = Vec::new();
    let abs = |p: &str| PathBuf::from("/").join(p);
    let bind = |source: PathBuf, path: PathBuf, exec: bool| MountOp::Bind {
        source,
        path,
        exec,
        devices: false,
    };
    if host.kind(Path::new("/usr")) == Some(HostKind::Dir) {
        ops.push(bind("/usr".into(), "/usr".into(), true));
    }
    for name in ROOT_ESSENTIALS {
        let path = abs(name);
        match host.kind(&path) {
            Some(HostKind::Symlink) => {
                if let Some(target) = host.link_target(&path) {
                    ops.push(MountOp::Symlink { path, target });
                }
            }
            Some(HostKind::Dir) => ops.push(bind(path.clone(), path, true)),
            _ => {}
        }
    }
    ops.push(MountOp::Dir("/etc".into()));
    for name in ETC_ESSENTIALS {
        let path = Path::new("/etc").join(name);
        match host.kind(&path) {
            Some(HostKind::Symlink) => match host.link_target(&path) {
                // Links into the shown tree stay links; others are resolved by the bind.
                Some(target) if shown_by_root(&path, &target) => {
                    ops.push(MountOp::Symlink { path, target })
                }
                _ => ops.push(bind(path.clone(), path, false)),
            },
            Some(_) => ops.push(bind(path.clone(), path, false)),
            None => {}
        }
    }
    ops.push(MountOp::File {
        path: "/etc/passwd".into(),
        contents: format!(
            "root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:{}:{}::/tmp:/sbin/nologin\n",
            request.uid, request.gid
        ),
    });
    ops.push(MountOp::File {
        path: "/etc/group".into(),
        contents: format!("root:x:0:\nsbx_user1051:x:{}:\n", request.gid),
    });
    for extra in &request.extra_read_only {
        if extra.is_absolute() && !extra.starts_with("/usr") {
            ops.push(bind(extra.clone(), extra.clone(), true));
        }
    }
    ops.push(MountOp::Dir("/var".into()));
    ops.push(bind(request.task.clone(), "/var/task".into(), true));
    ops.push(bind(
        request.runtime_dir.clone(),
        "/var/runtime".into(),
        true,
    ));
    match &request.opt {
        Some(opt) => ops.push(bind(opt.clone(), "/opt".into(), true)),
        None => ops.push(MountOp::Dir("/opt".into())),
    }
    ops.push(MountOp::Tmpfs {
        path: "/tmp".into(),
        size_bytes: u64::from(request.tmp_mb) * 1024 * 1024,
        mode: 0o1777,
        exec: true,
    });
    ops.push(MountOp::Tmpfs {
        path: "/dev".into(),
        size_bytes: 64 * 1024,
        mode: 0o755,
        exec: false,
    });
    for device in DEVICES {
        let path = Path::new("/dev").join(device);
        ops.push(MountOp::Bind {
            source: path.clone(),
            path,
            exec: false,
            devices: true,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            path: Path::new("/dev").join(name),
            target: target.into(),
        });
    }
    ops.push(MountOp::Dir("/proc".into()));
    ops
}

/// True when a symlink at `link` pointing to `target` resolves into the part of the host
/// every environment sees (`/usr`).
fn shown_by_root(link: &Path, target: &Path) -> bool {
    let joined = link.parent().unwrap_or(Path::new("/")).join(target);
    let mut resolved = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(part) => resolved.push(part),
            _ => {}
        }
    }
    resolved.starts_with("/usr")
}

/// The kernel calls that carry out a [`MountOp`] plan under a new root directory (the file
/// operations are plain ones on the root being built; the mounts are the kernel's).
pub trait MountKernel {
    /// Creates a directory (and its parents).
    fn make_dir(&mut self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }
    /// Creates a file (empty, to mount a file over, or with generated contents).
    fn make_file(&mut self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, contents)
    }
    /// Creates a symlink.
    fn make_symlink(&mut self, target: &Path, path: &Path) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, path)
    }
    /// Bind-mounts `source` on `target` and makes it read-only.
    fn bind(
        &mut self,
        source: &Path,
        target: &Path,
        exec: bool,
        devices: bool,
    ) -> std::io::Result<()>;
    /// Mounts a tmpfs.
    fn tmpfs(
        &mut self,
        target: &Path,
        size_bytes: u64,
        mode: u32,
        exec: bool,
    ) -> std::io::Result<()>;
    /// True when `source` is a directory (mount points must match their source).
    fn is_dir(&self, source: &Path) -> bool;
}

/// `path` (absolute, as the environment sees it) under `root`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Carries out `plan` under `root`, creating mount points as it goes. An error names the step.
pub fn apply(plan: &[MountOp], root: &Path, kernel: &mut dyn MountKernel) -> Result<(), String> {
    for op in plan {
        let result = match op {
            MountOp::Dir(path) => kernel.make_dir(&under(root, path)),
            MountOp::Symlink { path, target } => {
                let at = under(root, path);
                parent_dir(kernel, &at).and_then(|()| kernel.make_symlink(target, &at))
            }
            MountOp::File { path, contents } => {
                let at = under(root, path);
                parent_dir(kernel, &at).and_then(|()| kernel.make_file(&at, contents.as_bytes()))
            }
            MountOp::Bind {
                source,
                path,
                exec,
                devices,
            } => {
                let at = under(root, path);
                let point = if kernel.is_dir(source) {
                    kernel.make_dir(&at)
                } else {
                    parent_dir(kernel, &at).and_then(|()| kernel.make_file(&at, b""))
                };
                point.and_then(|()| kernel.bind(source, &at, *exec, *devices))
            }
            MountOp::Tmpfs {
                path,
                size_bytes,
                mode,
                exec,
            } => {
                let at = under(root, path);
                kernel
                    .make_dir(&at)
                    .and_then(|()| kernel.tmpfs(&at, *size_bytes, *mode, *exec))
            }
        };
        result.map_err(|e| format!("{op:?}: {e}"))?;
    }
    Ok(())
}

fn parent_dir(kernel: &mut dyn MountKernel, path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => kernel.make_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A host described by a table.
    struct FakeHost(HashMap<PathBuf, (HostKind, Option<PathBuf>)>);

    impl HostLayout for FakeHost {
        fn kind(&self, path: &Path) -> Option<HostKind> {
            self.0.get(path).map(|(kind, _)| *kind)
        }
        fn link_target(&self, path: &Path) -> Option<PathBuf> {
            self.0.get(path).and_then(|(_, target)| target.clone())
        }
    }

    fn merged_usr_host() -> FakeHost {
        let mut table = HashMap::new();
        table.insert("/usr".into(), (HostKind::Dir, None));
        for (link, target) in [
            ("/bin", "usr/bin"),
            ("/lib", "usr/lib"),
            ("/lib64", "usr/lib64"),
        ] {
            table.insert(link.into(), (HostKind::Symlink, Some(target.into())));
        }
        table.insert("/sbin".into(), (HostKind::Dir, None));
        table.insert("/etc/ld.so.cache".into(), (HostKind::File, None));
        table.insert("/etc/ssl".into(), (HostKind::Dir, None));
        table.insert(
            "/etc/localtime".into(),
            (
                HostKind::Symlink,
                Some("/usr/share/zoneinfo/Etc/UTC".into()),
            ),
        );
        table.insert(
            "/etc/resolv.conf".into(),
            (HostKind::Symlink, Some("../run/resolv.conf".into())),
        );
        table.insert("/etc/shadow".into(), (HostKind::File, None));
        FakeHost(table)
    }

    fn request() -> RootRequest {
        RootRequest {
            task: "/data/code/trees/abc".into(),
            opt: None,
            runtime_dir: "/data/runtimes".into(),
            extra_read_only: vec!["/root/.pyenv/versions/3.11.7".into(), "/usr/local".into()],
            tmp_mb: 512,
            uid: 993,
            gid: 990,
        }
    }

    #[test]
    fn the_root_shows_only_the_essentials_and_the_environment_s_own_directories() {
        let plan = plan_root(&merged_usr_host(), &request());
        let sources: Vec<&Path> = plan
            .iter()
            .filter_map(|op| match op {
                MountOp::Bind { source, .. } => Some(source.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(
            sources,
            [
                "/usr",
                "/sbin",
                "/etc/ld.so.cache",
                "/etc/resolv.conf",
                "/etc/ssl",
                "/root/.pyenv/versions/3.11.7",
                "/data/code/trees/abc",
                "/data/runtimes",
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
            ]
            .map(Path::new),
            "no /etc/shadow, no data directory beyond the code and bootstraps, /usr/local only via /usr"
        );
        assert!(plan.contains(&MountOp::Symlink {
            path: "/bin".into(),
            target: "usr/bin".into()
        }));
        assert!(
            plan.contains(&MountOp::Symlink {
                path: "/etc/localtime".into(),
                target: "/usr/share/zoneinfo/Etc/UTC".into()
            }),
            "a link into /usr stays a link"
        );
        assert!(plan.contains(&MountOp::Dir("/opt".into())));
        assert!(plan.contains(&MountOp::Tmpfs {
            path: "/tmp".into(),
            size_bytes: 512 * 1024 * 1024,
            mode: 0o1777,
            exec: true
        }));
        let devices: Vec<_> = plan
            .iter()
            .filter(|op| matches!(op, MountOp::Bind { devices: true, .. }))
            .collect();
        assert_eq!(
            devices.len(),
            DEVICES.len(),
            "only device binds allow devices"
        );
    }

    #[test]
    fn layers_are_mounted_at_opt() {
        let mut req = request();
        req.opt = Some("/data/opt/123".into());
        let plan = plan_root(&merged_usr_host(), &req);
        assert!(plan.contains(&MountOp::Bind {
            source: "/data/opt/123".into(),
            path: "/opt".into(),
            exec: true,
            devices: false
        }));
        assert!(!plan.contains(&MountOp::Dir("/opt".into())));
    }

    /// Carries out a plan in a temporary directory, recording the mounts.
    struct Recorder {
        mounts: Vec<String>,
    }

    impl MountKernel for Recorder {
        fn bind(
            &mut self,
            source: &Path,
            target: &Path,
            exec: bool,
            devices: bool,
        ) -> std::io::Result<()> {
            self.mounts.push(format!(
                "bind {} {} exec={exec} dev={devices}",
                source.display(),
                target.display()
            ));
            Ok(())
        }
        fn tmpfs(
            &mut self,
            target: &Path,
            size_bytes: u64,
            mode: u32,
            exec: bool,
        ) -> std::io::Result<()> {
            self.mounts.push(format!(
                "tmpfs {} {size_bytes} {mode:o} exec={exec}",
                target.display()
            ));
            Ok(())
        }
        fn is_dir(&self, source: &Path) -> bool {
            !source.starts_with("/dev") && !source.starts_with("/etc/ld.so.cache")
        }
    }

    #[test]
    fn applying_a_plan_creates_mount_points_of_the_right_kind() {
        let root = tempfile::tempdir().unwrap();
        let plan = plan_root(&merged_usr_host(), &request());
        let mut kernel = Recorder { mounts: Vec::new() };
        apply(&plan, root.path(), &mut kernel).unwrap();
        let r = root.path();
        assert!(r.join("var/task").is_dir());
        assert!(r.join("root/.pyenv/versions/3.11.7").is_dir());
        assert!(
            r.join("etc/ld.so.cache").is_file(),
            "files are mounted over files"
        );
        assert!(r.join("dev/null").is_file());
        assert_eq!(
            std::fs::read_link(r.join("bin")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert!(
            std::fs::read_to_string(r.join("etc/passwd"))
                .unwrap()
                .contains(":993:990:")
        );
        assert!(!r.join("etc/shadow").exists());
        assert!(kernel.mounts.contains(&format!(
            "bind /data/code/trees/abc {} exec=true dev=false",
            r.join("var/task").display()
        )));
        assert!(kernel.mounts.contains(&format!(
            "tmpfs {} 536870912 1777 exec=true",
            r.join("tmp").display()
        )));
        assert_eq!(under(r, Path::new("/var/task")), r.join("var/task"));
    }

    #[test]
    fn links_are_judged_by_where_they_resolve() {
        assert!(shown_by_root(
            Path::new("/etc/localtime"),
            Path::new("../usr/share/zoneinfo/UTC")
        ));
        assert!(!shown_by_root(
            Path::new("/etc/resolv.conf"),
            Path::new("../run/systemd/resolve/stub-resolv.conf")
        ));
        assert!(!shown_by_root(
            Path::new("/etc/x"),
            Path::new("/usr/../root/secret")
        ));
    }
}
