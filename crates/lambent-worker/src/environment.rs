//! One execution environment: a process group running a function's runtime, its Runtime API
//! listener, and the logic that carries one invocation through it.
//!
//! External extensions (the executables in `/opt/extensions/`) are started first, in the
//! same process group, cgroup and log pipe; the runtime starts once they have all registered
//! (or one exited, or the init timeout passed).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Invocation;
use crate::cgroup::EnvCgroup;
use crate::launch::LaunchPlan;
use crate::logs::{LogCapture, pump};
use crate::runtime_api::{self, Delivery, EnvStatus, FunctionInfo, Reply, RuntimeApiState};
use crate::telemetry::Telemetry;

/// How long a new environment may take to reach its first `/next`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a shutdown with extensions takes, SHUTDOWN event to SIGKILL.
pub const EXTENSION_SHUTDOWN: Duration = Duration::from_secs(2);

/// A running environment.
pub struct Environment {
    /// Short id for logs.
    pub id: String,
    /// The runtime's process id.
    pub pid: u32,
    /// The process group of the runtime and its extensions.
    pgid: u32,
    /// Captured output.
    pub logs: Arc<LogCapture>,
    /// When the process was started.
    pub started: Instant,
    /// The log stream this environment writes (`YYYY/MM/DD/[version]<id>`).
    pub log_stream: String,
    deliveries: mpsc::Sender<Delivery>,
    status: watch::Receiver<EnvStatus>,
    parked: watch::Receiver<bool>,
    server: tokio::task::JoinHandle<()>,
    state: Arc<RuntimeApiState>,
    killed: Arc<AtomicBool>,
    /// Set when the environment is being ended after a failed invocation.
    ending: AtomicBool,
    provisioned: AtomicBool,
    cgroup: Arc<EnvCgroup>,
}

/// How an invocation ended inside an environment.
pub enum Outcome {
    /// The runtime answered (response or error); the environment can be reused.
    Answered(Reply),
    /// The runtime failed to take or answer it; the environment is finished.
    Failed(Failure),
}

/// Why an environment could not complete an invocation.
pub enum Failure {
    /// No answer before the function timeout.
    Timeout(Duration),
    /// The runtime did not reach `/next` within the init timeout.
    InitTimeout,
    /// The runtime reported an init error (its error document).
    InitError(Bytes),
    /// The process exited (`exit status 1`, `signal: killed`).
    Exited(String),
    /// The environment ran out of memory.
    OutOfMemory,
}

impl Environment {
    /// Starts the process described by `plan` with a fresh Runtime API listener.
    /// `make_plan` receives the `host:port` of that listener.
    pub async fn start<E>(
        label: &str,
        log_stream: &str,
        cgroup: EnvCgroup,
        make_plan: impl FnOnce(&str) -> Result<LaunchPlan, E>,
    ) -> Result<Result<Arc<Self>, E>, std::io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let plan = match make_plan(&address) {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        let setting = |key: &str| {
            plan.env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let info = FunctionInfo {
            name: setting("AWS_LAMBDA_FUNCTION_NAME"),
            version: setting("AWS_LAMBDA_FUNCTION_VERSION"),
            handler: setting("_HANDLER"),
        };
        let (status_tx, status_rx) = watch::channel(EnvStatus::Initializing);
        let (delivery_tx, delivery_rx) = mpsc::channel(1);
        let (parked_tx, parked_rx) = watch::channel(false);
        let state = RuntimeApiState::new(delivery_rx, status_tx.clone(), parked_tx, info);
        let server = runtime_api::serve(listener, state.clone());

        let (reader, writer) = std::io::pipe()?;
        let cgroup = Arc::new(cgroup);
        let logs = Arc::new(LogCapture::default());
        logs.set_telemetry(state.telemetry.clone());
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())?;
        tokio::spawn(pump(reader, logs.clone(), label.to_string()));
        let killed = Arc::new(AtomicBool::new(false));
        let live_extensions = Arc::new(AtomicUsize::new(0));
        let spawn_in_group = |program: &std::path::Path,
                              args: &[std::ffi::OsString],
                              group: u32,
                              writer: &std::io::PipeWriter|
         -> std::io::Result<tokio::process::Child> {
            let mut command = tokio::process::Command::new(program);
            command
                .args(args)
                .current_dir(&plan.cwd)
                .env_clear()
                .envs(plan.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer.try_clone()?))
                .stderr(Stdio::from(writer.try_clone()?))
                .process_group(group as i32)
                .kill_on_drop(true);
            command.spawn()
        };

        // External extensions first, all in the group the first one leads.
        let mut pgid = 0u32;
        for path in &plan.extensions {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut child = match spawn_in_group(path, &[], pgid, &writer) {
                Ok(child) => child,
                Err(e) => {
                    tracing::warn!(function = label, extension = %name, "extension failed to start: {e}");
                    continue;
                }
            };
            let pid = child.id().unwrap_or_default();
            if pgid == 0 {
                pgid = pid;
            }
            cgroup.add(pid);
            live_extensions.fetch_add(1, Ordering::AcqRel);
            let (state, live, killed, status_tx) = (
                state.clone(),
                live_extensions.clone(),
                killed.clone(),
                status_tx.clone(),
            );
            tokio::spawn(async move {
                let how = match child.wait().await {
                    Ok(status) => describe_exit(status),
                    Err(e) => format!("wait failed: {e}"),
                };
                live.fetch_sub(1, Ordering::AcqRel);
                state.extension_gone(&name);
                if !killed.load(Ordering::Acquire) {
                    // An extension that dies takes its environment with it, as on Lambda.
                    status_tx.send_if_modified(|status| {
                        if status.is_terminal() {
                            false
                        } else {
                            *status = EnvStatus::Exited(format!("extension {name} exited: {how}"));
                            true
                        }
                    });
                }
            });
        }
        let started_extensions = live_extensions.load(Ordering::Acquire);
        if started_extensions > 0 {
            // Lambda starts the runtime once every extension has registered.
            let until = Instant::now() + INIT_TIMEOUT;
            while state.extensions.count() < started_extensions
                && live_extensions.load(Ordering::Acquire) == started_extensions
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        let mut spawned = spawn_in_group(&plan.program, &plan.args, pgid, &writer);
        if spawned.is_err() && pgid != 0 {
            // The extensions' group is gone (they all exited): the runtime leads its own.
            spawned = spawn_in_group(&plan.program, &plan.args, 0, &writer);
        }
        drop(writer);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                server.abort();
                if pgid != 0 {
                    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
                }
                cgroup.kill_members();
                return Err(e);
            }
        };
        let pid = child.id().unwrap_or_default();
        if pgid == 0 || live_extensions.load(Ordering::Acquire) == 0 {
            pgid = pid;
        }
        cgroup.add(pid);
        let members = cgroup.clone();
        let (live, gone) = (live_extensions.clone(), killed.clone());
        tokio::spawn(async move {
            let description = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("wait failed: {e}"),
            };
            let out_of_memory = members.oom_killed();
            status_tx.send_if_modified(|status| {
                if matches!(status, EnvStatus::InitFailed(_)) {
                    false
                } else {
                    *status = if out_of_memory {
                        EnvStatus::OutOfMemory
                    } else {
                        EnvStatus::Exited(description)
                    };
                    true
                }
            });
            // Extensions shutting down get their time before the cgroup is emptied.
            let until = Instant::now() + EXTENSION_SHUTDOWN;
            while live.load(Ordering::Acquire) > 0
                && !gone.load(Ordering::Acquire)
                && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Nothing the environment started may outlive it.
            let _ = tokio::task::spawn_blocking(move || members.kill_all_and_remove()).await;
        });
        Ok(Ok(Arc::new(Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            pid,
            pgid,
            logs,
            started: Instant::now(),
            log_stream: log_stream.to_string(),
            deliveries: delivery_tx,
            status: status_rx,
            parked: parked_rx,
            server,
            state,
            killed,
            ending: AtomicBool::new(false),
            provisioned: AtomicBool::new(false),
            cgroup,
        })))
    }

    /// The environment's telemetry subscribers.
    pub fn telemetry(&self) -> &Telemetry {
        &self.state.telemetry
    }

    /// True while the environment may take another invocation.
    pub fn is_alive(&self) -> bool {
        !self.killed.load(Ordering::Relaxed)
            && !self.ending.load(Ordering::Relaxed)
            && !self.status.borrow().is_terminal()
    }

    /// True when extensions registered in this environment.
    pub fn has_extensions(&self) -> bool {
        self.state.extensions.count() > 0
    }

    /// Ends the environment after a failed invocation (`reason` `timeout` or `failure`): at
    /// once without extensions; with them, the runtime is killed at once, SHUTDOWN subscribers
    /// are told `reason`, and the rest is killed when all have exited or 2 s have passed.
    pub fn abandon(self: &Arc<Self>, reason: &'static str) {
        if !self.has_extensions() || self.killed.load(Ordering::Relaxed) || self.pid == 0 {
            self.kill();
            return;
        }
        if self.ending.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        self.send_shutdown(reason, EXTENSION_SHUTDOWN);
        let env = self.clone();
        tokio::spawn(async move {
            env.wait_group_exit(EXTENSION_SHUTDOWN).await;
            env.kill();
        });
    }

    fn send_shutdown(&self, reason: &str, budget: Duration) {
        let deadline_ms = lambent_types::time::epoch_millis(SystemTime::now() + budget);
        self.state.extensions.broadcast(
            false,
            &serde_json::json!({
                "eventType": "SHUTDOWN",
                "shutdownReason": reason,
                "deadlineMs": deadline_ms,
            }),
        );
    }

    /// Waits (up to `limit`) until no process of the environment's group is left.
    async fn wait_group_exit(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until && killpg(Pid::from_raw(self.pgid as i32), None).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Marks (or unmarks) the environment as provisioned concurrency: kept warm, never reaped idle.
    pub fn set_provisioned(&self, provisioned: bool) {
        self.provisioned.store(provisioned, Ordering::Relaxed);
    }

    /// True while the environment serves provisioned concurrency.
    pub fn is_provisioned(&self) -> bool {
        self.provisioned.load(Ordering::Relaxed)
    }

    /// Waits (up to `limit`) for the runtime's first `/next`; false if it failed or took too long.
    pub async fn wait_initialized(&self, limit: Duration) -> bool {
        let mut status = self.status.clone();
        matches!(
            tokio::time::timeout(limit, status.wait_for(|s| *s != EnvStatus::Initializing)).await,
            Ok(Ok(ref s)) if **s == EnvStatus::Ready
        )
    }

    /// True while the runtime waits in `/next`, i.e. the environment can take work at once.
    pub fn is_parked(&self) -> bool {
        *self.parked.borrow()
    }

    /// Waits (up to `limit`) for the runtime to be back in `/next`.
    pub async fn wait_parked(&self, limit: Duration) -> bool {
        let mut parked = self.parked.clone();
        matches!(
            tokio::time::timeout(limit, parked.wait_for(|p| *p)).await,
            Ok(Ok(_))
        )
    }

    /// True once the runtime has asked for work at least once.
    pub fn is_initialized(&self) -> bool {
        *self.status.borrow() != EnvStatus::Initializing
    }

    /// Carries one invocation through the environment. Also returns when the runtime took
    /// it (the start of the invoke phase), if it did.
    pub async fn run(
        &self,
        invocation: &Invocation,
        timeout: Duration,
    ) -> (Outcome, Option<Instant>) {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (delivered_tx, delivered_rx) = oneshot::channel();
        let delivery = Delivery {
            invocation: invocation.clone(),
            timeout,
            delivered: delivered_tx,
            reply: reply_tx,
        };
        let mut status = self.status.clone();
        if self.deliveries.send(delivery).await.is_err() {
            return (Outcome::Failed(terminal_failure(&status.borrow())), None);
        }
        let pickup_budget = if self.is_initialized() {
            timeout
        } else {
            INIT_TIMEOUT
        };
        let handed_out = tokio::select! {
            biased;
            at = delivered_rx => at.ok(),
            failure = wait_terminal(&mut status) => return (Outcome::Failed(failure), None),
            () = tokio::time::sleep(pickup_budget) => None,
        };
        let Some(handed_out) = handed_out else {
            let failure = if self.is_initialized() {
                Failure::Timeout(timeout)
            } else {
                Failure::InitTimeout
            };
            return (Outcome::Failed(failure), None);
        };
        let outcome = tokio::select! {
            biased;
            reply = reply_rx => match reply {
                Ok(reply) => Outcome::Answered(reply),
                Err(_) => Outcome::Failed(terminal_failure(&status.borrow())),
            },
            failure = wait_terminal(&mut status) => Outcome::Failed(failure),
            () = tokio::time::sleep_until((handed_out + timeout).into()) => Outcome::Failed(Failure::Timeout(timeout)),
        };
        (outcome, Some(handed_out))
    }

    /// Stops the environment the way Lambda's SHUTDOWN does. Without extensions: SIGTERM to
    /// the process group, up to `grace` to exit, then SIGKILL to everything left. With
    /// extensions: a SHUTDOWN event (`spindown`) to those subscribed, SIGTERM to the runtime,
    /// and at most `grace` (capped at 2 s) for every process to exit before SIGKILL.
    pub async fn stop(&self, grace: Duration) {
        if !self.killed.load(Ordering::Relaxed)
            && self.pid != 0
            && !self.status.borrow().is_terminal()
        {
            if self.has_extensions() {
                let budget = grace.min(EXTENSION_SHUTDOWN);
                self.send_shutdown("spindown", budget);
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
                self.wait_group_exit(budget).await;
            } else {
                let _ = killpg(Pid::from_raw(self.pgid as i32), Signal::SIGTERM);
                self.wait_exit(grace).await;
            }
        }
        self.kill();
    }

    /// Kills the whole process group and stops the Runtime API listener.
    pub fn kill(&self) {
        if self.killed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.server.abort();
        // The group outlives its leader while any child lives, so it is killed even after exit.
        if self.pgid != 0 {
            let _ = killpg(Pid::from_raw(self.pgid as i32), Signal::SIGKILL);
        }
        self.cgroup.kill_members();
    }

    /// Waits (up to `limit`) until the process has exited.
    pub async fn wait_exit(&self, limit: Duration) {
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(limit, status.wait_for(EnvStatus::is_terminal)).await;
    }

    /// Peak memory of the environment, MB: its cgroup's peak usage or the runtime process's
    /// peak RSS (`/proc/<pid>/status` VmHWM), whichever is larger.
    pub fn max_memory_mb(&self) -> u64 {
        // Memory the runtime touched before it joined its cgroup is charged elsewhere, so the
        // larger of the two readings is the truer one.
        let cgroup = self.cgroup.max_memory_mb().unwrap_or(0);
        let process = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb.div_ceil(1024))
            .unwrap_or(0);
        cgroup.max(process)
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_terminal(status: &mut watch::Receiver<EnvStatus>) -> Failure {
    match status.wait_for(EnvStatus::is_terminal).await {
        Ok(status) => terminal_failure(&status),
        Err(_) => Failure::Exited("the environment was lost".into()),
    }
}

fn terminal_failure(status: &EnvStatus) -> Failure {
    match status {
        EnvStatus::InitFailed(body) => Failure::InitError(body.clone()),
        EnvStatus::Exited(how) => Failure::Exited(how.clone()),
        EnvStatus::OutOfMemory => Failure::OutOfMemory,
        _ => Failure::Exited("the environment stopped".into()),
    }
}

/// Describes an exit the way Lambda does (`exit status 1`, `signal: killed`).
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(9) => "signal: killed".into(),
        Some(15) => "signal: terminated".into(),
        Some(11) => "signal: segmentation fault".into(),
        Some(6) => "signal: aborted".into(),
        Some(n) => format!("signal: {n}"),
        None => "exited".into(),
    }
}
