//! One execution environment: a sandboxed process tree running a function's runtime, its
//! Runtime API listener, and the logic that carries one invocation through it.
//!
//! External extensions (the executables in `/opt/extensions/`) are started first, in the
//! same sandbox, cgroup and log pipe; the runtime starts once they have all registered
//! (or one exited, or the init timeout passed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use lambent_sandbox::{Cell, Directories, Events, InitEvent, Process, Supervisor};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Invocation;
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
    /// The runtime's process id as the environment sees it (the host's without a sandbox).
    pub pid: u32,
    /// Captured output.
    pub logs: Arc<LogCapture>,
    /// When the process was started.
    pub started: Instant,
    /// The log stream this environment writes (`YYYY/MM/DD/[version]<id>`).
    pub log_stream: String,
    deliveries: mpsc::Sender<Delivery>,
    status: watch::Receiver<EnvStatus>,
    parked: watch::Receiver<bool>,
    /// True once every process of the environment is gone.
    ended: watch::Receiver<bool>,
    server: tokio::task::JoinHandle<()>,
    state: Arc<RuntimeApiState>,
    killed: Arc<AtomicBool>,
    /// Set when the environment is being ended after a failed invocation.
    ending: AtomicBool,
    provisioned: AtomicBool,
    supervisor: Arc<Supervisor>,
    /// True when the runtime's pid is a host pid (no PID namespace).
    host_pids: bool,
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

/// The error of a start that ended because the init failed to build the sandbox (`event` is
/// its report) or exited (`None`) before `stage`.
fn init_gone(event: Option<InitEvent>, stage: &str) -> std::io::Error {
    match event {
        Some(InitEvent::SetupFailed(message)) => {
            std::io::Error::other(format!("the sandbox could not be built: {message}"))
        }
        _ => std::io::Error::other(format!("the sandbox init exited before {stage}")),
    }
}

/// Ends a start that failed: stops the Runtime API and removes the sandbox.
fn start_failure(
    cleanup: &Arc<Supervisor>,
    server: &tokio::task::JoinHandle<()>,
    error: std::io::Error,
) -> std::io::Error {
    server.abort();
    let supervisor = cleanup.clone();
    tokio::spawn(async move { supervisor.cleanup().await });
    error
}

impl Environment {
    /// Starts the runtime described by `plan` in the sandbox `cell` (with the host
    /// directories `dirs`), serving its Runtime API. `make_plan` receives the
    /// `AWS_LAMBDA_RUNTIME_API` address.
    pub async fn start<E>(
        label: &str,
        log_stream: &str,
        mut cell: Cell,
        dirs: &Directories,
        host_pids: bool,
        make_plan: impl FnOnce(&str) -> Result<LaunchPlan, E>,
    ) -> Result<Result<Arc<Self>, E>, std::io::Error> {
        let listener = cell
            .take_listener()
            .ok_or_else(|| std::io::Error::other("the sandbox has no Runtime API listener"))?;
        let listener = TcpListener::from_std(listener)?;
        let plan = match make_plan(cell.runtime_api()) {
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
        let (ended_tx, ended_rx) = watch::channel(false);
        let state = RuntimeApiState::new(delivery_rx, status_tx.clone(), parked_tx, info);
        let server = runtime_api::serve(listener, state.clone());

        let reader = cell
            .take_output()
            .ok_or_else(|| std::io::Error::other("the sandbox has no output pipe"))?;
        let logs = Arc::new(LogCapture::default());
        logs.set_telemetry(state.telemetry.clone());
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)?;
        tokio::spawn(pump(reader, logs.clone(), label.to_string()));

        let extension_names: Vec<String> = plan
            .extensions
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let runtime_index = plan.extensions.len();
        let hold_runtime = runtime_index > 0;
        let mut processes: Vec<Process> = plan
            .extensions
            .iter()
            .map(|path| Process {
                program: path.clone(),
                args: Vec::new(),
                runtime: false,
                held: false,
            })
            .collect();
        processes.push(Process {
            program: plan.program.clone(),
            args: plan
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            runtime: true,
            held: hold_runtime,
        });
        let launched = cell.launch(dirs, processes, plan.env.clone(), plan.cwd.clone());
        let (supervisor, mut events) = match launched {
            Ok((supervisor, events)) => (Arc::new(supervisor), events),
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };

        // Extensions first: their start results, then (if any started) their registrations.
        let mut extension_alive = vec![false; runtime_index];
        let mut pending = runtime_index;
        while pending > 0 {
            match events.next().await {
                Some(InitEvent::Started { index, .. }) if index < runtime_index => {
                    extension_alive[index] = true;
                    pending -= 1;
                }
                Some(InitEvent::SpawnFailed { index, error }) if index < runtime_index => {
                    tracing::warn!(function = label, extension = %extension_names[index], "extension failed to start: {error}");
                    pending -= 1;
                }
                Some(InitEvent::Exited { index, .. }) if index < runtime_index => {
                    extension_alive[index] = false;
                }
                event @ (Some(InitEvent::SetupFailed(_)) | None) => {
                    let error = init_gone(event, "the environment started");
                    return Err(start_failure(&supervisor, &server, error));
                }
                Some(_) => {}
            }
        }
        let live = |alive: &[bool]| alive.iter().filter(|a| **a).count();
        let started_extensions = live(&extension_alive);
        if hold_runtime {
            // Lambda starts the runtime once every extension has registered.
            let until = Instant::now() + INIT_TIMEOUT;
            while started_extensions > 0
                && state.extensions.count() < started_extensions
                && live(&extension_alive) == started_extensions
                && Instant::now() < until
            {
                tokio::select! {
                    event = events.next() => match event {
                        Some(InitEvent::Exited { index, .. }) if index < runtime_index => {
                            extension_alive[index] = false;
                            state.extension_gone(&extension_names[index]);
                        }
                        None => break,
                        Some(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
            supervisor.start_held();
        }
        let pid = loop {
            match events.next().await {
                Some(InitEvent::Started { index, pid }) if index == runtime_index => break pid,
                Some(InitEvent::SpawnFailed { index, error }) if index == runtime_index => {
                    return Err(start_failure(&supervisor, &server, error));
                }
                Some(InitEvent::Exited { index, .. }) if index < runtime_index => {
                    extension_alive[index] = false;
                    state.extension_gone(&extension_names[index]);
                }
                event @ (Some(InitEvent::SetupFailed(_)) | None) => {
                    let error = init_gone(event, "the runtime started");
                    return Err(start_failure(&supervisor, &server, error));
                }
                Some(_) => {}
            }
        };
        let killed = Arc::new(AtomicBool::new(false));
        let live_extensions = Arc::new(AtomicUsize::new(live(&extension_alive)));
        tokio::spawn(watch_events(
            events,
            EventContext {
                supervisor: supervisor.clone(),
                state: state.clone(),
                status: status_tx,
                ended: ended_tx,
                killed: killed.clone(),
                live_extensions,
                extension_alive,
                extension_names,
                runtime_index,
            },
        ));
        Ok(Ok(Arc::new(Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            pid,
            logs,
            started: Instant::now(),
            log_stream: log_stream.to_string(),
            deliveries: delivery_tx,
            status: status_rx,
            parked: parked_rx,
            ended: ended_rx,
            server,
            state,
            killed,
            ending: AtomicBool::new(false),
            provisioned: AtomicBool::new(false),
            supervisor,
            host_pids,
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
        if !self.has_extensions() || self.killed.load(Ordering::Relaxed) {
            self.kill();
            return;
        }
        if self.ending.swap(true, Ordering::AcqRel) {
            return;
        }
        self.supervisor.kill_runtime();
        self.send_shutdown(reason, EXTENSION_SHUTDOWN);
        let env = self.clone();
        tokio::spawn(async move {
            env.wait_ended(EXTENSION_SHUTDOWN).await;
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

    /// Waits (up to `limit`) until every process is gone and the sandbox is removed.
    pub async fn wait_ended(&self, limit: Duration) {
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(limit, ended.wait_for(|e| *e)).await;
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
    /// its processes, up to `grace` to exit, then SIGKILL to everything left. With
    /// extensions: a SHUTDOWN event (`spindown`) to those subscribed, SIGTERM to the runtime,
    /// and at most `grace` (capped at 2 s) for every process to exit before SIGKILL.
    pub async fn stop(&self, grace: Duration) {
        if !self.killed.load(Ordering::Relaxed) && !self.status.borrow().is_terminal() {
            if self.has_extensions() {
                let budget = grace.min(EXTENSION_SHUTDOWN);
                self.send_shutdown("spindown", budget);
                self.supervisor.term_runtime();
                self.wait_ended(budget).await;
            } else {
                self.supervisor.term_all();
                self.wait_exit(grace).await;
            }
        }
        self.kill();
    }

    /// Kills every process of the environment and stops the Runtime API listener.
    pub fn kill(&self) {
        if self.killed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.server.abort();
        self.supervisor.kill_all();
    }

    /// Waits (up to `limit`) until the runtime has exited.
    pub async fn wait_exit(&self, limit: Duration) {
        let mut status = self.status.clone();
        let _ = tokio::time::timeout(limit, status.wait_for(EnvStatus::is_terminal)).await;
    }

    /// Peak memory of the environment, MB: its cgroup's peak usage or, without a PID
    /// namespace, the larger of that and the runtime process's peak RSS (`VmHWM`).
    pub fn max_memory_mb(&self) -> u64 {
        let cgroup = self.supervisor.max_memory_mb().unwrap_or(0);
        if !self.host_pids {
            return cgroup;
        }
        // Memory the runtime touched before it joined its cgroup is charged elsewhere, so the
        // larger of the two readings is the truer one.
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
        self.logs.close();
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

/// What the task following an environment's init needs.
struct EventContext {
    supervisor: Arc<Supervisor>,
    state: Arc<RuntimeApiState>,
    status: watch::Sender<EnvStatus>,
    ended: watch::Sender<bool>,
    killed: Arc<AtomicBool>,
    live_extensions: Arc<AtomicUsize>,
    extension_alive: Vec<bool>,
    extension_names: Vec<String>,
    runtime_index: usize,
}

/// Follows the init's reports until every process is gone, then removes the sandbox.
async fn watch_events(mut events: Events, mut cx: EventContext) {
    while let Some(event) = events.next().await {
        let InitEvent::Exited { index, description } = event else {
            continue;
        };
        if index == cx.runtime_index {
            let out_of_memory = cx.supervisor.oom_killed();
            cx.status.send_if_modified(|status| {
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
            // Extensions shutting down get their time, then nothing may outlive the runtime.
            let supervisor = cx.supervisor.clone();
            tokio::spawn(async move {
                tokio::time::sleep(EXTENSION_SHUTDOWN).await;
                supervisor.kill_all();
            });
            if cx.live_extensions.load(Ordering::Acquire) == 0 {
                cx.supervisor.kill_all();
            }
        } else if cx.extension_alive.get(index).copied().unwrap_or(false) {
            cx.extension_alive[index] = false;
            cx.live_extensions.fetch_sub(1, Ordering::AcqRel);
            let name = &cx.extension_names[index];
            cx.state.extension_gone(name);
            if !cx.killed.load(Ordering::Acquire) {
                // An extension that dies takes its environment with it, as on Lambda.
                cx.status.send_if_modified(|status| {
                    if status.is_terminal() {
                        false
                    } else {
                        *status =
                            EnvStatus::Exited(format!("extension {name} exited: {description}"));
                        true
                    }
                });
            }
        }
    }
    cx.status.send_if_modified(|status| {
        if status.is_terminal() {
            false
        } else {
            *status = EnvStatus::Exited("the environment stopped".into());
            true
        }
    });
    cx.supervisor.cleanup().await;
    let _ = cx.ended.send(true);
}
