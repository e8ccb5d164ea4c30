//! The [`Worker`]: pools of warm environments per function version and revision, cold starts
//! when all are busy, idle reaping, the concurrency limit, and graceful shutdown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lambent_types::FunctionConfig;

use crate::environment::{Environment, Failure, Outcome};
use crate::launch::{self, LaunchError, RuntimeHosts};
use crate::runtime_api::{MAX_RESPONSE_BYTES, Reply, error_document};
use crate::{Invocation, InvocationReport, InvocationResult, WorkerError};
use lambent_sandbox::{Directories, NetworkMode, Sandbox};

/// How long a runtime normally takes to come back to `/next` after answering; an invocation
/// waits this long for such an environment before starting a new one.
const RETURN_TO_NEXT: Duration = Duration::from_millis(50);

/// Shortest time an init slot is held for a runtime that never reaches `/next` (functions
/// with a longer timeout hold it that long).
const INIT_SLOT_HOLD: Duration = Duration::from_secs(10);

/// The init time assumed for a function version none of whose inits was measured yet.
const UNKNOWN_INIT_ESTIMATE: Duration = Duration::from_millis(100);

/// Init slots for `configured` (0: four per available core).
fn init_slot_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    (cores * 4).max(4)
}

/// The function tag that chooses an environment's network mode (`none`, `bridge`, `host`).
pub const NETWORK_TAG: &str = "lambent:network";

/// How long a runtime gets between SIGTERM and SIGKILL when its environment is shut down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Shuts an environment down in the background (SIGTERM, then SIGKILL after the grace).
fn stop_later(env: Arc<Environment>) {
    tokio::spawn(async move { env.stop(SHUTDOWN_GRACE).await });
}

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Region reported to functions.
    pub region: String,
    /// How long an idle environment is kept warm.
    pub idle_timeout: Duration,
    /// Most environments busy at once (the account concurrency limit).
    pub max_concurrency: usize,
    /// Where the merged layer trees that stand in for `/opt` are built.
    pub opt_root: PathBuf,
    /// The sandbox environments run in.
    pub sandbox: Arc<Sandbox>,
    /// Where function logs are recorded (CloudWatch Logs streams); `None` keeps them only in
    /// the platform log.
    pub log_store: Option<Arc<lambent_store::logs::LogStore>>,
    /// Gives each new environment the credentials of its function's execution role.
    pub credentials: Option<Arc<dyn RoleCredentials>>,
    /// Environments older than this are not given new work (their credentials would expire).
    pub max_environment_age: Option<Duration>,
    /// Most on-demand environments initializing at once; further cold starts wait for a slot
    /// or take the first environment of their function that frees up. 0 picks 4 per core.
    pub max_concurrent_inits: usize,
}

/// Source of the execution-role variables an environment starts with
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, …).
pub trait RoleCredentials: Send + Sync + std::fmt::Debug {
    /// The variables for a new environment of this function version whose network is
    /// `network` (`Host` for unisolated environments, which run on the host); empty when its
    /// role gives none.
    fn variables(&self, config: &FunctionConfig, network: NetworkMode) -> Vec<(String, String)>;
}

/// Environments of one function version at one revision of its code and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    function: String,
    version: String,
    revision: String,
}

/// What a provisioned-concurrency setting needs to (re)start its environments.
#[derive(Clone)]
struct ProvisionTarget {
    config: FunctionConfig,
    task_root: PathBuf,
    layer_roots: Vec<PathBuf>,
    count: usize,
    /// True while a replenishing task runs, so only one does.
    replenishing: Arc<AtomicBool>,
}

struct IdleEnv {
    env: Arc<Environment>,
    since: Instant,
    /// The function timeout: a runtime not back in `/next` within it is given up on.
    timeout: Duration,
}

/// Runs invocations in pooled execution environments.
pub struct Worker {
    config: WorkerConfig,
    hosts: RuntimeHosts,
    idle: Mutex<HashMap<PoolKey, Vec<IdleEnv>>>,
    busy: Mutex<HashMap<String, (PoolKey, Arc<Environment>)>>,
    in_flight: AtomicUsize,
    closing: AtomicBool,
    /// Provisioned concurrency to maintain, per (function, version).
    provision_targets: Mutex<HashMap<(String, String), ProvisionTarget>>,
    /// Per (function, version): environments started before this instant must not be reused.
    retired_before: Mutex<HashMap<(String, String), Instant>>,
    /// Slots for on-demand environments initializing at once (see
    /// [`WorkerConfig::max_concurrent_inits`]).
    init_slots: Arc<tokio::sync::Semaphore>,
    /// Wakes invocations waiting for an init slot when an environment is parked idle.
    parked: tokio::sync::Notify,
    /// How long the last on-demand init of each function version took.
    init_estimates: Arc<Mutex<HashMap<PoolKey, Duration>>>,
}

/// Decrements the in-flight count when an invocation ends, however it ends.
struct InFlightGuard<'a>(&'a AtomicUsize);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Worker {
    /// Creates a worker and starts its idle reaper.
    pub fn new(config: WorkerConfig, hosts: RuntimeHosts) -> Arc<Self> {
        let config_inits = config.max_concurrent_inits;
        let worker = Arc::new(Self {
            config,
            hosts,
            idle: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            retired_before: Mutex::new(HashMap::new()),
            provision_targets: Mutex::new(HashMap::new()),
            init_slots: Arc::new(tokio::sync::Semaphore::new(init_slot_count(config_inits))),
            parked: tokio::sync::Notify::new(),
            init_estimates: Arc::new(Mutex::new(HashMap::new())),
        });
        let weak = Arc::downgrade(&worker);
        let period = (worker.config.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(worker) = weak.upgrade() else { break };
                worker.reap_idle();
                worker.replenish_provisioned();
            }
        });
        worker
    }

    /// The network mode for a function's `lambent:network` tag value, or why it is refused.
    pub fn network_mode(&self, setting: Option<&str>) -> Result<NetworkMode, String> {
        self.config.sandbox.network_mode(setting)
    }

    /// Number of invocations running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Number of environments alive now (idle and busy).
    pub fn environment_count(&self) -> usize {
        let idle: usize = self
            .idle
            .lock()
            .map(|idle| idle.values().map(Vec::len).sum())
            .unwrap_or(0);
        idle + self.busy.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Runs `invocation` on a warm environment of `config`, or a new one whose code is
    /// `task_root` and whose `/opt` merges the unpacked `layer_roots` in order.
    pub async fn invoke(
        &self,
        config: &FunctionConfig,
        task_root: &Path,
        layer_roots: &[PathBuf],
        invocation: &Invocation,
    ) -> Result<InvocationResult, WorkerError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(WorkerError::ShuttingDown);
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.config.max_concurrency {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(WorkerError::Throttled);
        }
        let _guard = InFlightGuard(&self.in_flight);
        let key = PoolKey {
            function: config.name.clone(),
            version: config.version.clone(),
            revision: config.revision_id.clone(),
        };
        // While environments of this function are busy, a cold start first waits about as
        // long as an init of it takes for one of them to free up: under load, starting
        // environments costs more CPU than waiting for the ones running.
        let mut patient_until = None;
        let (env, cold_start) = loop {
            if let Some(env) = self.take_warm(&key).await {
                break (env, false);
            }
            // Registered before anything is tried, so a park in between is not missed.
            let parked = self.parked.notified();
            tokio::pin!(parked);
            parked.as_mut().enable();
            if patient_until.is_none() && self.busy_count(&key) > 0 {
                patient_until = Some(tokio::time::Instant::now() + self.init_estimate(&key));
            }
            if let Some(until) = patient_until
                && tokio::time::Instant::now() < until
            {
                tokio::select! {
                    () = &mut parked => {}
                    () = tokio::time::sleep_until(until) => {}
                }
                continue;
            }
            let slot = match self.init_slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => tokio::select! {
                    () = &mut parked => None,
                    slot = self.init_slots.clone().acquire_owned() => slot.ok(),
                },
            };
            let Some(slot) = slot else {
                // An environment was parked: perhaps one of this function's.
                continue;
            };
            let begun = Instant::now();
            match self
                .start_environment(config, task_root, layer_roots, "on-demand")
                .await?
            {
                Ok(env) => {
                    // The slot is held until the runtime is initialized (or gave up).
                    let initializing = env.clone();
                    let limit = Duration::from_secs(u64::from(config.timeout)).max(INIT_SLOT_HOLD);
                    let estimates = self.init_estimates.clone();
                    let estimate_key = key.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        if initializing.wait_initialized(limit).await
                            && let Ok(mut estimates) = estimates.lock()
                        {
                            estimates.insert(estimate_key, begun.elapsed());
                        }
                    });
                    break (env, true);
                }
                Err(message) => return Ok(self.entrypoint_failure(config, invocation, &message)),
            }
        };
        if let Ok(mut busy) = self.busy.lock() {
            busy.insert(env.id.clone(), (key.clone(), env.clone()));
        }
        let result = self.run_on(&env, config, invocation, cold_start).await;
        if let Ok(mut busy) = self.busy.lock() {
            busy.remove(&env.id);
        }
        let (result, reusable) = result;
        if reusable
            && env.is_alive()
            && !self.closing.load(Ordering::Acquire)
            && !self.is_retired(&key, &env)
        {
            self.park_idle(key, env, config);
        } else if !reusable {
            // run_on ended it (with SHUTDOWN `timeout`/`failure` for extensions).
        } else if env.has_extensions() && env.is_alive() && !self.closing.load(Ordering::Acquire) {
            // Retired while busy: extensions get SHUTDOWN `spindown`.
            stop_later(env);
        } else {
            env.kill();
        }
        Ok(result)
    }

    /// Starts replacements for provisioned environments that died (crash, timeout, OOM).
    fn replenish_provisioned(self: &Arc<Self>) {
        let targets: Vec<ProvisionTarget> = self
            .provision_targets
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        for target in targets {
            let ready = self.provisioned_ready(&target.config.name, &target.config.version);
            if ready >= target.count || target.replenishing.swap(true, Ordering::AcqRel) {
                continue;
            }
            let worker = self.clone();
            tokio::spawn(async move {
                tracing::info!(function = %target.config.name, version = %target.config.version, ready, wanted = target.count, "replacing provisioned environments");
                worker
                    .start_provisioned(
                        &target.config,
                        &target.task_root,
                        &target.layer_roots,
                        target.count,
                    )
                    .await;
                target.replenishing.store(false, Ordering::Release);
            });
        }
    }

    /// Brings the provisioned environments of a published version up to `count`: starts the
    /// missing ones with `AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency`, waits for
    /// their init, and parks them warm (they are never reaped for idleness). Returns how many
    /// are initialized and ready now.
    pub async fn provision(
        &self,
        config: &FunctionConfig,
        task_root: &Path,
        layer_roots: &[PathBuf],
        count: usize,
    ) -> usize {
        if let Ok(mut targets) = self.provision_targets.lock() {
            targets.insert(
                (config.name.clone(), config.version.clone()),
                ProvisionTarget {
                    config: config.clone(),
                    task_root: task_root.to_path_buf(),
                    layer_roots: layer_roots.to_vec(),
                    count,
                    replenishing: Arc::new(AtomicBool::new(false)),
                },
            );
        }
        self.start_provisioned(config, task_root, layer_roots, count)
            .await
    }

    /// Starts provisioned environments until `count` are ready; returns how many are.
    async fn start_provisioned(
        &self,
        config: &FunctionConfig,
        task_root: &Path,
        layer_roots: &[PathBuf],
        count: usize,
    ) -> usize {
        let key = PoolKey {
            function: config.name.clone(),
            version: config.version.clone(),
            revision: config.revision_id.clone(),
        };
        let ready = self.provisioned_ready(&config.name, &config.version);
        if ready > count {
            self.shrink_provisioned(&key, ready - count);
        }
        let missing = count.saturating_sub(ready);
        let starts = (0..missing).map(|_| async {
            let env = match self
                .start_environment(config, task_root, layer_roots, "provisioned-concurrency")
                .await
            {
                Ok(Ok(env)) => env,
                Ok(Err(message)) => {
                    tracing::warn!(function = %config.name, "provisioned environment failed: {message}");
                    return;
                }
                Err(e) => {
                    tracing::warn!(function = %config.name, "provisioned environment failed: {e}");
                    return;
                }
            };
            if !env.wait_initialized(crate::environment::INIT_TIMEOUT).await {
                tracing::warn!(function = %config.name, env = %env.id, "provisioned environment failed to initialize");
                env.kill();
                return;
            }
            // Provisioned init is reported on its own, as Lambda's INIT_REPORT line, and
            // never in an invocation's REPORT.
            let init = env.started.elapsed();
            env.logs.append(
                format!(
                    "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: success\n",
                    init.as_secs_f64() * 1000.0
                )
                .as_bytes(),
            );
            env.logs.clear();
            env.set_provisioned(true);
            self.park_idle(key.clone(), env, config);
        });
        futures_util::future::join_all(starts).await;
        self.provisioned_ready(&config.name, &config.version)
    }

    /// Turns `excess` idle provisioned environments of a pool back into ordinary ones.
    fn shrink_provisioned(&self, key: &PoolKey, excess: usize) {
        if let Ok(idle) = self.idle.lock() {
            idle.iter()
                .filter(|(k, _)| k.function == key.function && k.version == key.version)
                .flat_map(|(_, envs)| envs)
                .filter(|entry| entry.env.is_provisioned())
                .take(excess)
                .for_each(|entry| entry.env.set_provisioned(false));
        }
    }

    /// How many initialized provisioned environments a function version has (idle or busy).
    pub fn provisioned_ready(&self, function: &str, version: &str) -> usize {
        let matches = |key: &PoolKey, env: &Environment| {
            key.function == function
                && key.version == version
                && env.is_provisioned()
                && env.is_alive()
        };
        let idle = self.idle.lock().map_or(0, |idle| {
            idle.iter()
                .flat_map(|(key, envs)| envs.iter().map(move |e| (key, e)))
                .filter(|(key, entry)| matches(key, &entry.env))
                .count()
        });
        let busy = self.busy.lock().map_or(0, |busy| {
            busy.values().filter(|(key, env)| matches(key, env)).count()
        });
        idle + busy
    }

    /// Ends provisioned concurrency for a function version: its environments become ordinary
    /// ones, reaped when idle.
    pub fn unprovision(&self, function: &str, version: &str) {
        if let Ok(mut targets) = self.provision_targets.lock() {
            targets.remove(&(function.to_string(), version.to_string()));
        }
        let matches = |key: &PoolKey| key.function == function && key.version == version;
        if let Ok(idle) = self.idle.lock() {
            for entry in idle
                .iter()
                .filter(|(k, _)| matches(k))
                .flat_map(|(_, envs)| envs)
            {
                entry.env.set_provisioned(false);
            }
        }
        if let Ok(busy) = self.busy.lock() {
            for (_, env) in busy.values().filter(|(k, _)| matches(k)) {
                env.set_provisioned(false);
            }
        }
    }

    /// Retires the environments of a function (one version, or all when `version` is `None`)
    /// after a change of its code or configuration: idle ones stop now, busy ones after their
    /// current invocation.
    pub fn retire(&self, function: &str, version: Option<&str>) {
        let matches =
            |key: &PoolKey| key.function == function && version.is_none_or(|v| key.version == v);
        let now = Instant::now();
        if let Ok(mut targets) = self.provision_targets.lock() {
            targets.retain(|(f, v), _| {
                !matches(&PoolKey {
                    function: f.clone(),
                    version: v.clone(),
                    revision: String::new(),
                })
            });
        }
        if let Ok(mut idle) = self.idle.lock() {
            let keys: Vec<PoolKey> = idle.keys().filter(|k| matches(k)).cloned().collect();
            for key in keys {
                for entry in idle.remove(&key).unwrap_or_default() {
                    stop_later(entry.env);
                }
            }
        }
        if let Ok(busy) = self.busy.lock()
            && let Ok(mut retired) = self.retired_before.lock()
        {
            for (key, _) in busy.values().filter(|(key, _)| matches(key)) {
                retired.insert((key.function.clone(), key.version.clone()), now);
            }
        }
    }

    fn is_retired(&self, key: &PoolKey, env: &Environment) -> bool {
        self.retired_before
            .lock()
            .ok()
            .and_then(|retired| {
                retired
                    .get(&(key.function.clone(), key.version.clone()))
                    .copied()
            })
            .is_some_and(|before| env.started < before)
    }

    /// Returns an environment to its pool.
    fn park_idle(&self, key: PoolKey, env: Arc<Environment>, config: &FunctionConfig) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.entry(key).or_default().push(IdleEnv {
                env,
                since: Instant::now(),
                timeout: Duration::from_secs(u64::from(config.timeout)),
            });
        }
        self.parked.notify_waiters();
    }

    /// Environments of `key` running an invocation now.
    fn busy_count(&self, key: &PoolKey) -> usize {
        self.busy
            .lock()
            .map(|busy| busy.values().filter(|(k, _)| k == key).count())
            .unwrap_or(0)
    }

    /// How long a cold start of `key` is expected to take (its last init; a guess before).
    fn init_estimate(&self, key: &PoolKey) -> Duration {
        self.init_estimates
            .lock()
            .ok()
            .and_then(|estimates| estimates.get(key).copied())
            .unwrap_or(UNKNOWN_INIT_ESTIMATE)
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// An idle environment of `key` whose runtime waits in `/next` (or is about to).
    async fn take_warm(&self, key: &PoolKey) -> Option<Arc<Environment>> {
        let entry = self.take_idle(key)?;
        if entry.env.is_parked() || entry.env.wait_parked(RETURN_TO_NEXT).await {
            return Some(entry.env);
        }
        // Back to the pool with its original release time, so the reaper can tell it is
        // stuck.
        if let Ok(mut idle) = self.idle.lock() {
            idle.entry(key.clone()).or_default().push(entry);
        }
        None
    }

    fn take_idle(&self, key: &PoolKey) -> Option<IdleEnv> {
        let mut idle = self.idle.lock().ok()?;
        // Environments of an older revision of this function version never serve again.
        let stale: Vec<PoolKey> = idle
            .keys()
            .filter(|k| {
                k.function == key.function && k.version == key.version && k.revision != key.revision
            })
            .cloned()
            .collect();
        for stale_key in stale {
            for entry in idle.remove(&stale_key).unwrap_or_default() {
                entry.env.kill();
            }
        }
        let envs = idle.get_mut(key)?;
        if let Some(max_age) = self.config.max_environment_age {
            // Retired before their role's credentials run out: the next one gets fresh ones.
            envs.retain(|entry| {
                let young = entry.env.started.elapsed() < max_age;
                if !young {
                    entry.env.kill();
                }
                young
            });
        }
        // Prefer an environment whose runtime waits in `/next`; else one released a moment
        // ago whose runtime is on its way back (the caller waits briefly for it). One that
        // stays away longer (never calling `/next` again) is left to the reaper.
        let position = envs
            .iter()
            .rposition(|entry| entry.env.is_alive() && entry.env.is_parked())
            .or_else(|| {
                envs.iter().rposition(|entry| {
                    entry.env.is_alive() && entry.since.elapsed() < RETURN_TO_NEXT
                })
            })?;
        Some(envs.remove(position))
    }

    async fn start_environment(
        &self,
        config: &FunctionConfig,
        task_root: &Path,
        layer_roots: &[PathBuf],
        initialization_type: &str,
    ) -> Result<Result<Arc<Environment>, String>, WorkerError> {
        let opt = if layer_roots.is_empty() {
            None
        } else {
            let opt_root = self.config.opt_root.clone();
            let layers = layer_roots.to_vec();
            let built = tokio::task::spawn_blocking(move || launch::build_opt(&opt_root, &layers))
                .await
                .map_err(std::io::Error::other)?;
            Some(built?)
        };
        let log_stream = format!(
            "{}/[{}]{}",
            log_stream_date(),
            config.version,
            uuid::Uuid::new_v4().simple()
        );
        let network = match self.network_mode(config.tags.get(NETWORK_TAG).map(String::as_str)) {
            Ok(mode) => mode,
            Err(message) => return Ok(Err(message)),
        };
        let sandbox = &self.config.sandbox;
        let begun = Instant::now();
        let cell = match sandbox.cell(config.memory_size, network).await {
            Ok(cell) => cell,
            Err(lambent_sandbox::SandboxError::Refused(message)) => return Ok(Err(message)),
            Err(e) => return Err(WorkerError::Platform(std::io::Error::other(e.to_string()))),
        };
        let dirs = Directories {
            task: task_root.to_path_buf(),
            opt: opt.clone(),
            runtime_dir: self.hosts.runtime_dir.clone(),
            tmp_mb: config.ephemeral_storage,
        };
        let isolated = sandbox.isolated();
        let sandboxed = Instant::now();
        let started = Environment::start(
            &config.name,
            &log_stream,
            cell,
            &dirs,
            !isolated,
            |address| {
                launch::plan(
                    &self.hosts,
                    config,
                    task_root,
                    opt.as_deref(),
                    isolated,
                    &self.config.region,
                    &log_stream,
                    address,
                )
                .map(|mut plan| {
                    for (key, value) in &mut plan.env {
                        if key == "AWS_LAMBDA_INITIALIZATION_TYPE" {
                            *value = initialization_type.to_string();
                        }
                    }
                    if let Some(credentials) = &self.config.credentials {
                        let reach = if isolated { network } else { NetworkMode::Host };
                        plan.env.extend(credentials.variables(config, reach));
                    }
                    plan
                })
            },
        )
        .await;
        match started {
            Ok(Ok(env)) => {
                if let Some(store) = &self.config.log_store {
                    env.logs
                        .attach(store.clone(), &config.name, &env.log_stream);
                }
                // The platform's part of a cold start: preparing the sandbox (cgroups, network
                // namespace) and starting the init until the runtime's exec succeeded.
                tracing::debug!(
                    function = %config.name,
                    env = %env.id,
                    pid = env.pid,
                    log_stream = %env.log_stream,
                    network = network.as_str(),
                    sandbox_us = sandboxed.duration_since(begun).as_micros() as u64,
                    spawn_us = env.started.duration_since(sandboxed).as_micros() as u64,
                    "environment started"
                );
                Ok(Ok(env))
            }
            Ok(Err(LaunchError::NoBootstrap)) => Ok(Err(LaunchError::NoBootstrap.to_string())),
            Ok(Err(other)) => Ok(Err(other.to_string())),
            Err(spawn) if spawn.kind() == std::io::ErrorKind::PermissionDenied => Ok(Err(format!(
                "fork/exec /var/task/bootstrap: permission denied ({spawn})"
            ))),
            Err(spawn) if spawn.raw_os_error() == Some(8) => Ok(Err(format!(
                "fork/exec /var/task/bootstrap: exec format error ({spawn})"
            ))),
            Err(spawn) if spawn.kind() == std::io::ErrorKind::NotFound => Ok(Err(format!(
                "fork/exec: no such file or directory ({spawn})"
            ))),
            Err(other) => Err(WorkerError::Platform(other)),
        }
    }

    fn entrypoint_failure(
        &self,
        config: &FunctionConfig,
        invocation: &Invocation,
        message: &str,
    ) -> InvocationResult {
        let body = platform_error(&invocation.request_id, "Runtime.InvalidEntrypoint", message);
        let log = format!(
            "START RequestId: {id} Version: {version}\nRuntime.InvalidEntrypoint: {message}\nEND RequestId: {id}\n\
             REPORT RequestId: {id}\tDuration: 0.00 ms\tBilled Duration: 0 ms\tMemory Size: {memory} MB\tMax Memory Used: 0 MB\t\n",
            id = invocation.request_id,
            version = config.version,
            memory = config.memory_size,
        );
        tracing::warn!(function = %config.name, "{message}");
        InvocationResult {
            body,
            function_error: true,
            log_tail: invocation.want_log_tail.then_some(log),
            cold_start: true,
            report: InvocationReport {
                memory_size_mb: config.memory_size,
                ..InvocationReport::default()
            },
        }
    }

    /// Runs the invocation and frames its log; returns the result and whether the environment may be reused.
    async fn run_on(
        &self,
        env: &Arc<Environment>,
        config: &FunctionConfig,
        invocation: &Invocation,
        cold_start: bool,
    ) -> (InvocationResult, bool) {
        let id = &invocation.request_id;
        let begun = Instant::now();
        env.logs
            .append(format!("START RequestId: {id} Version: {}\n", config.version).as_bytes());
        let timeout = Duration::from_secs(u64::from(config.timeout));
        let (outcome, handed_out) = env.run(invocation, timeout).await;
        // Duration is the invoke phase only; on a cold start the time before the runtime
        // took the invocation is its init.
        let invoke_began = handed_out.unwrap_or(begun);
        let duration = invoke_began.elapsed();
        let init_duration = cold_start.then(|| invoke_began.saturating_duration_since(env.started));
        let outcome_kind = match &outcome {
            Outcome::Answered(_) => OutcomeKind::Answered,
            Outcome::Failed(Failure::Timeout(_) | Failure::InitTimeout) => OutcomeKind::Timeout,
            Outcome::Failed(_) => OutcomeKind::Failure,
        };
        let (body, function_error, reusable, status_line) = match outcome {
            Outcome::Answered(Reply::Response(body)) => (body, false, true, None),
            Outcome::Answered(Reply::Error(body, error_type)) => (
                error_document(&body, error_type.as_deref(), "Runtime.Unknown"),
                true,
                true,
                None,
            ),
            Outcome::Answered(Reply::TooLarge(size)) => {
                let body = serde_json::json!({
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": format!(
                        "Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
                    ),
                });
                (Bytes::from(body.to_string()), true, true, None)
            }
            Outcome::Failed(Failure::Timeout(limit)) => {
                let message = format!("Task timed out after {:.2} seconds", limit.as_secs_f64());
                let line = format!("{} {id} {message}", iso_now());
                (
                    platform_error(id, "Sandbox.Timedout", &message),
                    true,
                    false,
                    Some(line),
                )
            }
            Outcome::Failed(Failure::InitTimeout) => {
                let message = format!(
                    "Init timed out after {:.2} seconds",
                    crate::environment::INIT_TIMEOUT.as_secs_f64()
                );
                let body = platform_error(id, "Sandbox.Timedout", &message);
                (body, true, false, Some(message))
            }
            Outcome::Failed(Failure::InitError(body)) => (
                body,
                true,
                false,
                Some("INIT_REPORT Status: error".to_string()),
            ),
            Outcome::Failed(Failure::OutOfMemory) => {
                let message = "Runtime exited with error: signal: killed";
                let line = format!("RequestId: {id} Error: {message}\nRuntime.OutOfMemory");
                (
                    platform_error(id, "Runtime.OutOfMemory", message),
                    true,
                    false,
                    Some(line),
                )
            }
            Outcome::Failed(Failure::Exited(how)) => {
                let message = if self.closing.load(Ordering::Acquire) {
                    format!("Runtime exited with error: {how} (Lambent is shutting down)")
                } else {
                    format!("Runtime exited with error: {how}")
                };
                let line = format!("RequestId: {id} Error: {message}");
                (
                    platform_error(id, "Runtime.ExitError", &message),
                    true,
                    false,
                    Some(line),
                )
            }
        };
        let measured = InvocationReport {
            duration,
            billed_ms: (duration.as_secs_f64() * 1000.0).ceil() as u64,
            init_duration,
            memory_size_mb: config.memory_size,
            max_memory_used_mb: env.max_memory_mb(),
        };
        let status = match (&outcome_kind, function_error) {
            (OutcomeKind::Timeout, _) => "timeout",
            (OutcomeKind::Failure, _) => "failure",
            (OutcomeKind::Answered, true) => "error",
            (OutcomeKind::Answered, false) => "success",
        };
        let duration_ms = duration.as_secs_f64() * 1000.0;
        env.telemetry().platform(
            "platform.runtimeDone",
            serde_json::json!({
                "requestId": id,
                "status": status,
                "metrics": { "durationMs": duration_ms, "producedBytes": body.len() },
            }),
        );
        let mut metrics = serde_json::json!({
            "durationMs": duration_ms,
            "billedDurationMs": measured.billed_ms,
            "memorySizeMB": measured.memory_size_mb,
            "maxMemoryUsedMB": measured.max_memory_used_mb,
        });
        if let Some(init) = measured.init_duration {
            metrics["initDurationMs"] = serde_json::json!(init.as_secs_f64() * 1000.0);
        }
        env.telemetry().platform(
            "platform.report",
            serde_json::json!({ "requestId": id, "status": status, "metrics": metrics }),
        );
        if !reusable {
            env.abandon(if matches!(outcome_kind, OutcomeKind::Timeout) {
                "timeout"
            } else {
                "failure"
            });
        }
        if invocation.want_log_tail {
            // Give the log pump a moment to drain what the function wrote before answering.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(line) = &status_line {
            env.logs.append(format!("{line}\n").as_bytes());
        }
        env.logs.append(report_lines(id, &measured).as_bytes());
        let log_tail = if invocation.want_log_tail {
            Some(env.logs.take_tail())
        } else {
            env.logs.clear();
            None
        };
        tracing::debug!(function = %config.name, request_id = %id, duration_ms = duration.as_secs_f64() * 1000.0, function_error, "invocation finished");
        (
            InvocationResult {
                body,
                function_error,
                log_tail,
                cold_start,
                report: measured,
            },
            reusable,
        )
    }

    fn reap_idle(&self) {
        let limit = self.config.idle_timeout;
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        for envs in idle.values_mut() {
            envs.retain(|entry| {
                let stuck = !entry.env.is_parked() && entry.since.elapsed() > entry.timeout;
                let keep = entry.env.is_alive()
                    && !stuck
                    && (entry.env.is_provisioned() || entry.since.elapsed() < limit);
                if !keep {
                    tracing::debug!(env = %entry.env.id, "reaping idle environment");
                    if stuck {
                        entry.env.kill();
                    } else {
                        stop_later(entry.env.clone());
                    }
                }
                keep
            });
        }
        idle.retain(|_, envs| !envs.is_empty());
    }

    /// Stops taking invocations, lets running ones finish for up to `grace`, then kills every
    /// environment and waits for the processes to exit.
    pub async fn shutdown(&self, grace: Duration) {
        self.closing.store(true, Ordering::Release);
        self.config.sandbox.stop_preparing();
        let deadline = Instant::now() + grace;
        while self.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut all: Vec<Arc<Environment>> = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            all.extend(
                idle.drain()
                    .flat_map(|(_, envs)| envs.into_iter().map(|e| e.env)),
            );
        }
        if let Ok(busy) = self.busy.lock() {
            all.extend(busy.values().map(|(_, env)| env.clone()));
        }
        futures_util::future::join_all(all.iter().map(|env| env.stop(SHUTDOWN_GRACE))).await;
        for env in &all {
            env.wait_exit(SHUTDOWN_GRACE).await;
        }
        for env in &all {
            env.wait_ended(SHUTDOWN_GRACE).await;
        }
        let stopped = all.len();
        drop(all);
        let leftovers = self.config.sandbox.leftover_cgroups();
        if !leftovers.is_empty() {
            tracing::warn!(
                count = leftovers.len(),
                "environment cgroups left at shutdown"
            );
        }
        self.config.sandbox.shutdown();
        tracing::info!(environments = stopped, "all execution environments stopped");
    }
}

/// How an invocation ended, as the Telemetry API's `status` tells it.
enum OutcomeKind {
    Answered,
    Timeout,
    Failure,
}

/// The END and REPORT lines of an invocation, as Lambda writes them.
fn report_lines(id: &str, report: &InvocationReport) -> String {
    let mut line = format!(
        "END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
        report.duration.as_secs_f64() * 1000.0,
        report.billed_ms,
        report.memory_size_mb,
        report.max_memory_used_mb,
    );
    if let Some(init) = report.init_duration {
        line.push_str(&format!(
            "Init Duration: {:.2} ms\t",
            init.as_secs_f64() * 1000.0
        ));
    }
    line.push('\n');
    line
}

/// The error document the platform returns when it fails an invocation on the function's behalf.
fn platform_error(request_id: &str, error_type: &str, message: &str) -> Bytes {
    let body = serde_json::json!({
        "errorType": error_type,
        "errorMessage": format!("RequestId: {request_id} Error: {message}"),
    });
    Bytes::from(body.to_string())
}

fn log_stream_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}/{:02}/{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

fn iso_now() -> String {
    lambent_types::time::aws_timestamp(std::time::SystemTime::now())
}
