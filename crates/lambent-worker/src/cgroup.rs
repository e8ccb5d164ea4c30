//! Per-environment resource limits with cgroup v1 (`memory` and `pids` controllers), until
//! the sandbox takes over isolation: the memory limit is the function's MemorySize, the
//! process limit stops fork bombs, the OOM counter tells an out-of-memory kill from any other
//! SIGKILL, and the member list finds every process of an environment — daemons and
//! `setsid` escapees included — so none outlives it.
//!
//! Where the controllers are not writable, environments run without these limits and the
//! server says so once at start.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where this server's environment cgroups live, per controller.
#[derive(Debug, Clone, Default)]
pub struct CgroupRoot {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

impl CgroupRoot {
    /// Creates `lambent/<server pid>` under the v1 `memory` and `pids` hierarchies of
    /// `mount` (normally `/sys/fs/cgroup`); a controller that cannot be used is skipped.
    pub fn create(mount: &Path) -> Self {
        let make = |controller: &str| {
            let hierarchy = mount.join(controller);
            if !hierarchy.is_dir() {
                return None;
            }
            let dir = hierarchy
                .join("lambent")
                .join(std::process::id().to_string());
            fs::create_dir_all(&dir).ok().map(|()| dir)
        };
        let root = Self {
            memory: make("memory"),
            pids: make("pids"),
        };
        if root.memory.is_none() || root.pids.is_none() {
            tracing::warn!(
                "cgroup v1 memory/pids controllers are not writable: environments run without memory and process limits"
            );
        }
        root
    }

    /// Makes the cgroups of one environment with its memory and process limits.
    pub fn environment(&self, id: &str, memory_mb: u32, pids_max: u32) -> EnvCgroup {
        let make = |root: &Option<PathBuf>, file: &str, value: String| {
            let dir = root.as_ref()?.join(id);
            fs::create_dir_all(&dir).ok()?;
            if let Err(e) = fs::write(dir.join(file), value) {
                tracing::warn!("cannot set {file} for environment {id}: {e}");
            }
            Some(dir)
        };
        EnvCgroup {
            memory: make(
                &self.memory,
                "memory.limit_in_bytes",
                (u64::from(memory_mb) * 1024 * 1024).to_string(),
            ),
            pids: make(&self.pids, "pids.max", pids_max.to_string()),
        }
    }

    /// Removes this server's (now empty) cgroup directories.
    pub fn remove(&self) {
        for dir in [&self.memory, &self.pids].into_iter().flatten() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// The cgroups of one environment.
#[derive(Debug, Default)]
pub struct EnvCgroup {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

impl EnvCgroup {
    /// Moves a process into the environment's cgroups (its children follow it).
    pub fn add(&self, pid: u32) {
        for dir in [&self.memory, &self.pids].into_iter().flatten() {
            if let Err(e) = fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                tracing::warn!("cannot move process {pid} into {}: {e}", dir.display());
            }
        }
    }

    /// True when the kernel's OOM killer struck inside the environment.
    pub fn oom_killed(&self) -> bool {
        self.memory
            .as_ref()
            .and_then(|dir| fs::read_to_string(dir.join("memory.oom_control")).ok())
            .is_some_and(|text| oom_kills(&text) > 0)
    }

    /// Peak memory of the whole environment, MB, when the memory controller is in use.
    pub fn max_memory_mb(&self) -> Option<u64> {
        let text =
            fs::read_to_string(self.memory.as_ref()?.join("memory.max_usage_in_bytes")).ok()?;
        let bytes: u64 = text.trim().parse().ok()?;
        Some(bytes.div_ceil(1024 * 1024))
    }

    /// Sends SIGKILL to every process in the environment once, without waiting.
    pub fn kill_members(&self) {
        for dir in [&self.pids, &self.memory].into_iter().flatten() {
            for pid in members(dir) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Kills every process left in the environment (waiting until none is left), then
    /// removes its cgroups. Blocking.
    pub fn kill_all_and_remove(&self) {
        for dir in [&self.pids, &self.memory].into_iter().flatten() {
            for _ in 0..100 {
                let members = members(dir);
                if members.is_empty() {
                    break;
                }
                for pid in members {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for _ in 0..20 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The `oom_kill` counter of a `memory.oom_control` file.
fn oom_kills(oom_control: &str) -> u64 {
    oom_control
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_written_and_directories_removed() {
        let mount = tempfile::tempdir().unwrap();
        for controller in ["memory", "pids"] {
            fs::create_dir_all(mount.path().join(controller)).unwrap();
        }
        let root = CgroupRoot::create(mount.path());
        let env = root.environment("env1", 256, 1024);
        let memory = mount
            .path()
            .join("memory/lambent")
            .join(std::process::id().to_string())
            .join("env1");
        assert_eq!(
            fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(),
            (256u64 * 1024 * 1024).to_string()
        );
        let pids = memory
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .and_then(Path::parent)
            .unwrap()
            .join("pids/lambent")
            .join(std::process::id().to_string())
            .join("env1");
        assert_eq!(fs::read_to_string(pids.join("pids.max")).unwrap(), "1024");
        fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(env.oom_killed());
        fs::write(memory.join("memory.max_usage_in_bytes"), "3145729\n").unwrap();
        assert_eq!(env.max_memory_mb(), Some(4));
    }

    #[test]
    fn parses_the_oom_counter() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"),
            1
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn missing_controllers_mean_no_limits() {
        let mount = tempfile::tempdir().unwrap();
        let root = CgroupRoot::create(&mount.path().join("absent"));
        let env = root.environment("e", 128, 10);
        assert!(!env.oom_killed());
        assert_eq!(env.max_memory_mb(), None);
        env.kill_all_and_remove();
    }
}
