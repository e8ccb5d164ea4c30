//! Per-environment resource limits with cgroups: v1 `memory`, `pids` and `cpu` hierarchies
//! (as mounted on our machines) or the v2 unified hierarchy, whichever the host has.
//!
//! The memory limit is the function's MemorySize, the process limit stops fork bombs, the
//! CPU weight is proportional to memory (as Lambda's CPU share is), the OOM counter tells an
//! out-of-memory kill from any other SIGKILL, and the member list finds every process of an
//! environment — daemons and `setsid` escapees included — so none outlives it.
//!
//! Everything here is plain file access under a mount directory, so it is tested on a
//! temporary directory laid out like the kernel's.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Separate `memory`, `pids` and `cpu` hierarchies.
    V1,
    /// One unified hierarchy.
    V2,
}

/// Where this server's environment cgroups live.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    version: CgroupVersion,
    /// Per controller (v1: memory, pids, cpu) or the one unified directory (v2).
    dirs: Vec<PathBuf>,
}

/// Why cgroups cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CgroupError(String);

const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

impl CgroupRoot {
    /// Creates `lambent/<server pid>` in the host's hierarchies under `mount` (normally
    /// `/sys/fs/cgroup`): v1 when a `memory` hierarchy is mounted there, else v2 with the
    /// memory, pids and cpu controllers delegated down to it.
    pub fn create(mount: &Path) -> Result<Self, CgroupError> {
        let server = std::process::id().to_string();
        if mount.join("memory").is_dir() {
            let mut dirs = Vec::new();
            for controller in V1_CONTROLLERS {
                let dir = mount.join(controller).join("lambent").join(&server);
                fs::create_dir_all(&dir).map_err(|e| {
                    CgroupError(format!(
                        "the cgroup v1 {controller} controller is not writable at {}: {e}",
                        dir.display()
                    ))
                })?;
                dirs.push(dir);
            }
            for controller in V1_CONTROLLERS {
                sweep_dead_servers(&mount.join(controller).join("lambent"));
            }
            return Ok(Self {
                version: CgroupVersion::V1,
                dirs,
            });
        }
        if mount.join("cgroup.controllers").is_file() {
            let lambent = mount.join("lambent");
            let dir = lambent.join(&server);
            fs::create_dir_all(&dir).map_err(|e| {
                CgroupError(format!(
                    "cgroup v2 is not writable at {}: {e}",
                    dir.display()
                ))
            })?;
            for parent in [mount, lambent.as_path(), dir.as_path()] {
                fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu").map_err(
                    |e| {
                        CgroupError(format!(
                            "cannot enable the memory, pids and cpu controllers in {}: {e}",
                            parent.display()
                        ))
                    },
                )?;
            }
            sweep_dead_servers(&lambent);
            return Ok(Self {
                version: CgroupVersion::V2,
                dirs: vec![dir],
            });
        }
        Err(CgroupError(format!(
            "no cgroup hierarchy found at {} (neither v1 memory nor v2)",
            mount.display()
        )))
    }

    /// The interface in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Makes the (empty, unlimited but for `pids_max`) cgroups of one environment; the
    /// memory-dependent limits are set by [`EnvCgroup::limit`] when it is taken into use.
    pub fn environment(&self, id: &str, pids_max: u32) -> Result<EnvCgroup, CgroupError> {
        let env = EnvCgroup {
            version: self.version,
            dirs: self.dirs.iter().map(|dir| dir.join(id)).collect(),
            peak: std::sync::OnceLock::new(),
        };
        for dir in &env.dirs {
            fs::create_dir_all(dir)
                .map_err(|e| CgroupError(format!("cannot create {}: {e}", dir.display())))?;
        }
        env.write(env.pids_dir(), "pids.max", &pids_max.to_string())?;
        Ok(env)
    }

    /// Removes this server's (now empty) cgroup directories.
    pub fn remove(&self) {
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }

    /// The cgroup directories of environments left under this server's (for leak checks).
    pub fn environments(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flat_map(|entries| entries.filter_map(Result::ok))
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.path())
            .collect()
    }
}

/// The cgroups of one environment.
#[derive(Debug)]
pub struct EnvCgroup {
    version: CgroupVersion,
    dirs: Vec<PathBuf>,
    /// The peak-memory file, opened on first use.
    peak: std::sync::OnceLock<fs::File>,
}

impl EnvCgroup {
    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    fn pids_dir(&self) -> &Path {
        match self.version {
            CgroupVersion::V1 => &self.dirs[1],
            CgroupVersion::V2 => &self.dirs[0],
        }
    }

    fn cpu_dir(&self) -> &Path {
        match self.version {
            CgroupVersion::V1 => &self.dirs[2],
            CgroupVersion::V2 => &self.dirs[0],
        }
    }

    fn write(&self, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        fs::write(dir.join(file), value)
            .map_err(|e| CgroupError(format!("cannot set {file} in {}: {e}", dir.display())))
    }

    /// Sets the memory limit (MemorySize; no swap beyond it) and the CPU weight.
    pub fn limit(&self, memory_mb: u32) -> Result<(), CgroupError> {
        let bytes = (u64::from(memory_mb) * 1024 * 1024).to_string();
        match self.version {
            CgroupVersion::V1 => {
                self.write(self.memory_dir(), "memory.limit_in_bytes", &bytes)?;
                // Best effort: the file exists only with swap accounting.
                let _ = fs::write(
                    self.memory_dir().join("memory.memsw.limit_in_bytes"),
                    &bytes,
                );
                self.write(
                    self.cpu_dir(),
                    "cpu.shares",
                    &cpu_shares(memory_mb).to_string(),
                )
            }
            CgroupVersion::V2 => {
                self.write(self.memory_dir(), "memory.max", &bytes)?;
                let _ = fs::write(self.memory_dir().join("memory.swap.max"), "0");
                self.write(
                    self.cpu_dir(),
                    "cpu.weight",
                    &cpu_weight(memory_mb).to_string(),
                )
            }
        }
    }

    /// The `cgroup.procs` files a process writes its pid to, to join the environment.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// True when the kernel's OOM killer struck inside the environment.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = match self.version {
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill "),
            CgroupVersion::V2 => ("memory.events", "oom_kill "),
        };
        fs::read_to_string(self.memory_dir().join(file)).is_ok_and(|text| counter(&text, key) > 0)
    }

    /// Peak memory of the whole environment, MB. Read for every REPORT line, so the file
    /// stays open (a path lookup in the cgroup filesystem costs more than the read).
    pub fn max_memory_mb(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = match self.peak.get() {
            Some(file) => file,
            None => {
                let name = match self.version {
                    CgroupVersion::V1 => "memory.max_usage_in_bytes",
                    CgroupVersion::V2 => "memory.peak",
                };
                let opened = fs::File::open(self.memory_dir().join(name)).ok()?;
                self.peak.get_or_init(|| opened)
            }
        };
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        let bytes: u64 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
        Some(bytes.div_ceil(1024 * 1024))
    }

    /// Sends SIGKILL to every process in the environment once, without waiting.
    pub fn kill_members(&self) {
        if self.version == CgroupVersion::V2
            && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for pid in self.members() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// The processes in the environment.
    pub fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .flat_map(|dir| {
                fs::read_to_string(dir.join("cgroup.procs"))
                    .map(|text| {
                        text.lines()
                            .filter_map(|l| l.trim().parse().ok())
                            .collect::<Vec<i32>>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process left in the environment (waiting until none is left), then
    /// removes its cgroups. Blocking; true when every directory is gone.
    pub fn kill_all_and_remove(&self) -> bool {
        for _ in 0..200 {
            if self.members().is_empty() {
                break;
            }
            self.kill_members();
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut removed = true;
        for dir in &self.dirs {
            let mut gone = false;
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => gone = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone = true,
                    // Busy while the last member exits; anything else will not change.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => {}
                }
                break;
            }
            if !gone {
                tracing::warn!("cgroup {} could not be removed", dir.display());
                removed = false;
            }
        }
        removed
    }
}

/// Removes what servers that are gone (killed without a clean shutdown) left under
/// `lambent/`: their environments' processes are killed and their cgroups removed.
fn sweep_dead_servers(lambent: &Path) {
    let Ok(entries) = fs::read_dir(lambent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Only a pid that does not exist is a dead server (EPERM means someone else's).
        if pid == std::process::id() as i32
            || kill(Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
        {
            continue;
        }
        let server = entry.path();
        let envs: Vec<PathBuf> = fs::read_dir(&server)
            .map(|dirs| {
                dirs.filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        for env in &envs {
            let left = EnvCgroup {
                version: CgroupVersion::V1,
                dirs: vec![env.clone()],
                peak: std::sync::OnceLock::new(),
            };
            left.kill_all_and_remove();
        }
        if fs::remove_dir(&server).is_ok() {
            tracing::info!(
                "removed the cgroups a stopped server (pid {pid}) left in {}",
                lambent.display()
            );
        }
    }
}

/// v1 `cpu.shares` for a memory size: proportional, 1,024 (a host process's default) at 1 GB.
pub fn cpu_shares(memory_mb: u32) -> u64 {
    u64::from(memory_mb).max(2)
}

/// v2 `cpu.weight` for a memory size: proportional, 100 (the default) at 1 GB, within 1–10,000.
pub fn cpu_weight(memory_mb: u32) -> u64 {
    (u64::from(memory_mb) * 100 / 1024).clamp(1, 10_000)
}

/// The value of counter `key` (with its trailing space) in a `flat keyed` cgroup file.
fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_mount() -> tempfile::TempDir {
        let mount = tempfile::tempdir().unwrap();
        for controller in V1_CONTROLLERS {
            fs::create_dir_all(mount.path().join(controller)).unwrap();
        }
        mount
    }

    #[test]
    fn v1_limits_are_written_and_directories_removed() {
        let mount = v1_mount();
        let root = CgroupRoot::create(mount.path()).unwrap();
        assert_eq!(root.version(), CgroupVersion::V1);
        let env = root.environment("env1", 1024).unwrap();
        env.limit(256).unwrap();
        let server = std::process::id().to_string();
        let dir = |c: &str| {
            mount
                .path()
                .join(c)
                .join("lambent")
                .join(&server)
                .join("env1")
        };
        assert_eq!(
            fs::read_to_string(dir("memory").join("memory.limit_in_bytes")).unwrap(),
            (256u64 * 1024 * 1024).to_string()
        );
        assert_eq!(
            fs::read_to_string(dir("pids").join("pids.max")).unwrap(),
            "1024"
        );
        assert_eq!(
            fs::read_to_string(dir("cpu").join("cpu.shares")).unwrap(),
            "256"
        );
        assert_eq!(env.procs_files().len(), 3);
        assert!(!env.oom_killed());
        fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(env.oom_killed());
        fs::write(dir("memory").join("memory.max_usage_in_bytes"), "3145729\n").unwrap();
        assert_eq!(env.max_memory_mb(), Some(4));
        fs::write(dir("pids").join("cgroup.procs"), "").unwrap();
        assert_eq!(root.environments().len(), 3);
        // Regular files stand in for the kernel's, so only the empty directory is removable.
        for c in V1_CONTROLLERS {
            for entry in fs::read_dir(dir(c)).unwrap() {
                fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
        assert!(env.kill_all_and_remove());
        assert!(root.environments().is_empty());
        root.remove();
        assert!(!mount.path().join("memory/lambent").join(&server).exists());
    }

    #[test]
    fn v2_uses_one_directory_with_delegated_controllers() {
        let mount = tempfile::tempdir().unwrap();
        fs::write(mount.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let root = CgroupRoot::create(mount.path()).unwrap();
        assert_eq!(root.version(), CgroupVersion::V2);
        assert_eq!(
            fs::read_to_string(mount.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        let env = root.environment("e", 64).unwrap();
        env.limit(2048).unwrap();
        let dir = mount
            .path()
            .join("lambent")
            .join(std::process::id().to_string())
            .join("e");
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            "2147483648"
        );
        assert_eq!(fs::read_to_string(dir.join("cpu.weight")).unwrap(), "200");
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "64");
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert!(env.oom_killed());
        fs::write(dir.join("memory.peak"), "1048576\n").unwrap();
        assert_eq!(env.max_memory_mb(), Some(1));
    }

    #[test]
    fn what_dead_servers_left_is_swept_and_live_servers_are_kept() {
        let mount = v1_mount();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        for controller in V1_CONTROLLERS {
            let lambent = mount.path().join(controller).join("lambent");
            fs::create_dir_all(lambent.join(dead.to_string()).join("env-a")).unwrap();
            fs::create_dir_all(lambent.join(live.id().to_string()).join("env-b")).unwrap();
        }
        let root = CgroupRoot::create(mount.path()).unwrap();
        for controller in V1_CONTROLLERS {
            let lambent = mount.path().join(controller).join("lambent");
            assert!(!lambent.join(dead.to_string()).exists(), "{controller}");
            assert!(lambent.join(live.id().to_string()).join("env-b").is_dir());
        }
        root.remove();
        let mut live = live;
        live.kill().unwrap();
        live.wait().unwrap();
    }

    #[test]
    fn a_missing_hierarchy_is_an_error_that_says_where() {
        let mount = tempfile::tempdir().unwrap();
        let err = CgroupRoot::create(&mount.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("no cgroup hierarchy"), "{err}");
    }

    #[test]
    fn cpu_follows_memory() {
        assert!(cpu_shares(128) < cpu_shares(1769));
        assert_eq!(cpu_weight(1024), 100);
        assert_eq!(cpu_weight(1), 1);
        assert_eq!(cpu_weight(10_240), 1000);
    }
}
