//! The asynchronous dispatcher: takes items from the durable queue lane by lane and runs
//! them — events through the same [`Invoker`] as synchronous calls, records to their
//! destinations — then writes each outcome back in one transaction with its follow-ups.
//!
//! Lanes (one per function, one per destination) each have a concurrency cap; a throttled or
//! failing lane pauses on its own, so nothing in one lane holds up another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;

use lambent_store::queue::{ItemKind, NewItem, Outcome, QueueItem};
use lambent_store::{Store, kinds};
use lambent_types::{FunctionRef, Qualifier};

use crate::targets::{Message, Target, parse_target};
use crate::{InvocationType, InvokeError, InvokeRequest, Invoker};

/// Timing and limits of asynchronous invocation.
#[derive(Debug, Clone)]
pub struct AsyncSettings {
    /// Retries after a function error when the function has no setting (Lambda's default is 2).
    pub max_retries: u32,
    /// Delay before the first retry; each further retry waits twice as long (Lambda: ~1 min, ~2 min).
    pub retry_delay: Duration,
    /// How long an event may wait when the function has no setting (Lambda: 6 h).
    pub max_event_age: Duration,
    /// Most events of one function running at once (reserved concurrency, when set, wins).
    pub concurrency_per_function: usize,
    /// Most records being delivered to one destination at once.
    pub concurrency_per_destination: usize,
    /// Largest accepted event, bytes (Lambda: 256 KB).
    pub max_payload: usize,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            max_retries: 2,
            retry_delay: Duration::from_secs(60),
            max_event_age: Duration::from_secs(6 * 3600),
            concurrency_per_function: 32,
            concurrency_per_destination: 4,
            max_payload: lambent_types::limits::ASYNC_PAYLOAD_BYTES,
        }
    }
}

/// First pause of a lane after a throttle or a failed delivery.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause of a throttled function's lane.
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between deliveries to a destination that keeps failing.
const MAX_DELIVERY_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait after a platform error (Lambda: 5 minutes).
const MAX_PLATFORM_BACKOFF: Duration = Duration::from_secs(300);
/// How often the queue is rescanned even when nothing announced work.
const RESCAN: Duration = Duration::from_secs(1);
/// Most items claimed from one lane in one go.
const CLAIM_BATCH: usize = 64;

/// What an item's run tells its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneSignal {
    /// Carry on.
    Ok,
    /// The function is throttled, or the destination failed: pause the lane.
    Pause,
    /// The server is stopping: claim nothing more.
    Stop,
}

#[derive(Debug)]
struct Lane {
    due: bool,
    in_flight: usize,
    paused_until: Option<Instant>,
    backoff: Duration,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            due: false,
            in_flight: 0,
            paused_until: None,
            backoff: FIRST_BACKOFF,
        }
    }
}

#[derive(Default)]
struct Drops {
    /// (function, reason) → events or records given up without reaching anyone.
    counts: HashMap<(String, &'static str), u64>,
}

/// The queue's scheduler, owned by the [`Invoker`].
pub(crate) struct Dispatcher {
    store: Arc<dyn Store>,
    settings: AsyncSettings,
    claimer: String,
    lanes: Mutex<HashMap<String, Lane>>,
    next_scan: Mutex<Instant>,
    wake: Notify,
    stopped: AtomicBool,
    drops: Mutex<Drops>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    lambent_types::time::epoch_millis(std::time::SystemTime::now()) as i64
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Dispatcher {
    pub(crate) fn new(store: Arc<dyn Store>, settings: AsyncSettings) -> Self {
        Self {
            store,
            settings,
            claimer: uuid::Uuid::new_v4().to_string(),
            lanes: Mutex::new(HashMap::new()),
            next_scan: Mutex::new(Instant::now()),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            drops: Mutex::new(Drops::default()),
        }
    }

    pub(crate) fn settings(&self) -> &AsyncSettings {
        &self.settings
    }

    /// Whether the dispatcher stopped taking work (the server is shutting down).
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Commits an item to the queue and tells the scheduler its lane has work.
    pub(crate) fn enqueue(&self, item: &NewItem) -> Result<(), lambent_store::StoreError> {
        self.store.enqueue(item)?;
        self.announce(std::slice::from_ref(item));
        Ok(())
    }

    fn announce(&self, items: &[NewItem]) {
        if items.is_empty() {
            return;
        }
        let now = now_ms();
        let mut lanes = lock(&self.lanes);
        for item in items {
            if item.not_before_ms <= now {
                lanes.entry(item.lane.clone()).or_default().due = true;
            } else {
                self.scan_by(
                    Instant::now() + Duration::from_millis((item.not_before_ms - now) as u64),
                );
            }
        }
        drop(lanes);
        self.wake.notify_one();
    }

    fn scan_by(&self, at: Instant) {
        let mut next = lock(&self.next_scan);
        if at < *next {
            *next = at;
        }
    }

    fn record_drop(&self, function: &str, reason: &'static str) {
        *lock(&self.drops)
            .counts
            .entry((function.to_string(), reason))
            .or_default() += 1;
    }

    /// The lane's cap: reserved concurrency when set, else the per-function (or
    /// per-destination) setting.
    fn cap(&self, lane: &str) -> usize {
        if is_destination_lane(lane) {
            return self.settings.concurrency_per_destination;
        }
        let reserved = self
            .store
            .get_document(kinds::CONCURRENCY, lane, "")
            .ok()
            .flatten()
            .and_then(|doc| doc["ReservedConcurrentExecutions"].as_u64());
        match reserved {
            // Reserved concurrency 0: one at a time, each sent straight to failure handling.
            Some(0) => 1,
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => self.settings.concurrency_per_function,
        }
    }

    /// Finds due lanes in the store (the periodic scan).
    fn scan(&self) {
        let now = now_ms();
        let statuses = match self.store.lanes(now) {
            Ok(statuses) => statuses,
            Err(e) => {
                tracing::error!("async queue: cannot scan: {e}");
                return;
            }
        };
        let mut next = Instant::now() + RESCAN;
        let mut lanes = lock(&self.lanes);
        for status in statuses {
            if status.due_now {
                lanes.entry(status.lane.clone()).or_default().due = true;
            }
            if let Some(due) = status.next_due_ms {
                let wait = Duration::from_millis(due.saturating_sub(now).max(0) as u64);
                next = next.min(Instant::now() + wait);
            }
        }
        // Forget idle lanes with nothing due.
        lanes.retain(|_, lane| lane.due || lane.in_flight > 0 || lane.paused_until.is_some());
        drop(lanes);
        *lock(&self.next_scan) = next;
    }

    /// Claims what each due lane has room for; returns the items with their lanes.
    fn claim_round(&self) -> Vec<QueueItem> {
        let now = Instant::now();
        let candidates: Vec<(String, usize)> = {
            let mut lanes = lock(&self.lanes);
            let mut out = Vec::new();
            for (name, lane) in lanes.iter_mut() {
                if let Some(until) = lane.paused_until {
                    if until > now {
                        self.scan_by(until);
                        continue;
                    }
                    lane.paused_until = None;
                }
                if lane.due {
                    out.push((name.clone(), lane.in_flight));
                }
            }
            out
        };
        let mut claimed = Vec::new();
        for (name, in_flight) in candidates {
            let room = self.cap(&name).saturating_sub(in_flight).min(CLAIM_BATCH);
            if room == 0 {
                continue;
            }
            let items = match self.store.claim(&name, now_ms(), room, &self.claimer) {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(lane = %name, "async queue: cannot claim: {e}");
                    continue;
                }
            };
            let mut lanes = lock(&self.lanes);
            let lane = lanes.entry(name).or_default();
            if items.len() < room {
                lane.due = false;
            }
            lane.in_flight += items.len();
            claimed.extend(items);
        }
        claimed
    }

    /// Ends an item's run: writes its outcome, updates its lane and wakes the scheduler.
    fn finish(&self, item: &QueueItem, outcome: Outcome, signal: LaneSignal) {
        let follow_ups = match &outcome {
            Outcome::Completed(follow_ups) => follow_ups.clone(),
            Outcome::Failed { follow_ups, .. } => follow_ups.clone(),
            _ => Vec::new(),
        };
        if let Outcome::Retry { not_before_ms, .. } = &outcome {
            let wait = not_before_ms.saturating_sub(now_ms()).max(0) as u64;
            self.scan_by(Instant::now() + Duration::from_millis(wait));
        }
        if let Err(e) = self.store.finish(item.id, &outcome, now_ms()) {
            // The claim stays until the next start, which runs the item again.
            tracing::error!(request_id = %item.item.request_id, "async queue: cannot record an outcome: {e}");
        }
        {
            let mut lanes = lock(&self.lanes);
            let lane = lanes.entry(item.item.lane.clone()).or_default();
            lane.in_flight = lane.in_flight.saturating_sub(1);
            match signal {
                LaneSignal::Ok => lane.backoff = FIRST_BACKOFF,
                LaneSignal::Pause => {
                    let max = if is_destination_lane(&item.item.lane) {
                        MAX_DELIVERY_BACKOFF
                    } else {
                        MAX_THROTTLE_BACKOFF
                    };
                    lane.paused_until = Some(Instant::now() + lane.backoff);
                    lane.backoff = (lane.backoff * 2).min(max);
                }
                LaneSignal::Stop => {}
            }
            if matches!(outcome, Outcome::Release | Outcome::Retry { .. }) {
                lane.due = true;
            }
        }
        if signal == LaneSignal::Stop {
            self.stopped.store(true, Ordering::Release);
        }
        self.announce(&follow_ups);
        self.wake.notify_one();
    }

    /// Queue depth and age per function, and the drops, in Prometheus text format.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let depths = self.store.queue_depths().unwrap_or_default();
        let now = now_ms();
        for (name, help, kind) in [
            (
                "lambent_async_queue_depth",
                "Events accepted and not yet completed, per function.",
                ItemKind::Invoke,
            ),
            (
                "lambent_destination_queue_depth",
                "Destination and dead-letter records not yet delivered, per function.",
                ItemKind::Deliver,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for depth in depths.iter().filter(|d| d.kind == kind) {
                let _ = writeln!(
                    out,
                    "{name}{{function=\"{}\"}} {}",
                    crate::metering::escape_label(&depth.function),
                    depth.depth
                );
            }
        }
        let name = "lambent_async_oldest_event_age_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Age of the oldest event waiting, per function.\n# TYPE {name} gauge"
        );
        for depth in depths.iter().filter(|d| d.kind == ItemKind::Invoke) {
            let age = (now - depth.oldest_accepted_ms).max(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "{name}{{function=\"{}\"}} {age:.3}",
                crate::metering::escape_label(&depth.function)
            );
        }
        let name = "lambent_async_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Events and records given up without delivery (no destination took them), per function and reason.\n# TYPE {name} counter"
        );
        let drops = lock(&self.drops);
        let mut counts: Vec<_> = drops.counts.iter().collect();
        counts.sort();
        for ((function, reason), count) in counts {
            let _ = writeln!(
                out,
                "{name}{{function=\"{}\",reason=\"{reason}\"}} {count}",
                crate::metering::escape_label(function)
            );
        }
    }
}

/// Destination lanes are ARNs or URLs; function lanes are bare names (which have no `:`).
fn is_destination_lane(lane: &str) -> bool {
    lane.contains(':')
}

/// Runs the queue until the invoker is dropped or the server stops.
pub(crate) async fn run(invoker: Weak<Invoker>) {
    let Some(first) = invoker.upgrade() else {
        return;
    };
    let dispatcher = first.dispatcher.clone();
    drop(first);
    match dispatcher.store.release_all_claims() {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!("async queue: {n} events left running by the last run are queued again")
        }
        Err(e) => tracing::error!("async queue: cannot release old claims: {e}"),
    }
    loop {
        if dispatcher.stopped() {
            return;
        }
        let due_scan = *lock(&dispatcher.next_scan) <= Instant::now();
        if due_scan {
            dispatcher.scan();
        }
        let items = dispatcher.claim_round();
        if !items.is_empty() {
            let Some(invoker) = invoker.upgrade() else {
                return;
            };
            for item in items {
                let invoker = invoker.clone();
                tokio::spawn(async move {
                    let (outcome, signal) = match item.item.kind {
                        ItemKind::Invoke => run_event(&invoker, &item).await,
                        ItemKind::Deliver => deliver(&invoker, &item).await,
                    };
                    invoker.dispatcher.finish(&item, outcome, signal);
                });
            }
            continue;
        }
        let next_scan = *lock(&dispatcher.next_scan);
        let sleep = tokio::time::sleep_until(next_scan.max(Instant::now()).into());
        tokio::select! {
            () = dispatcher.wake.notified() => {}
            () = sleep => {}
        }
    }
}

/// The function's async settings for the qualifier it was invoked with.
struct EventSettings {
    max_retries: u32,
    max_age: Duration,
    on_success: Option<String>,
    on_failure: Option<String>,
}

fn event_settings(invoker: &Invoker, function: &FunctionRef) -> EventSettings {
    let defaults = &invoker.dispatcher.settings;
    let qualifier = function.qualifier_or_latest().to_string();
    let doc = invoker
        .store
        .get_document(kinds::EVENT_INVOKE_CONFIG, &function.name, &qualifier)
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    let destination = |key: &str| {
        doc["DestinationConfig"][key]["Destination"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_string)
    };
    EventSettings {
        max_retries: doc["MaximumRetryAttempts"]
            .as_u64()
            .map_or(defaults.max_retries, |n| n as u32),
        max_age: doc["MaximumEventAgeInSeconds"]
            .as_u64()
            .map_or(defaults.max_event_age, Duration::from_secs),
        on_success: destination("OnSuccess"),
        on_failure: destination("OnFailure"),
    }
}

/// How the last attempt of an event went, for its destination record.
struct Response {
    body: Bytes,
    function_error: bool,
    executed_version: String,
}

/// Runs one event once and decides what happens next.
async fn run_event(invoker: &Invoker, item: &QueueItem) -> (Outcome, LaneSignal) {
    let event = &item.item;
    let function = FunctionRef {
        name: event.function.clone(),
        qualifier: event
            .qualifier
            .as_deref()
            .and_then(|q| Qualifier::parse(q).ok()),
    };
    let settings = event_settings(invoker, &function);
    let now = now_ms();
    let expires_ms = event.accepted_ms.saturating_add(millis(settings.max_age));
    // Resolved once: the version that runs is also the one whose dead-letter target applies.
    let resolved = invoker.resolve(&function);
    let dead_letter = resolved
        .as_ref()
        .ok()
        .and_then(|config| config.dead_letter_target.clone());
    let failed = |condition: &str, error: String, attempts: u32, response: Option<&Response>| {
        tracing::warn!(request_id = %event.request_id, function = %event.function, attempts, condition, "async event failed: {error}");
        let follow_ups = failure_follow_ups(
            invoker,
            item,
            &settings,
            dead_letter.as_deref(),
            condition,
            &error,
            attempts,
            response,
            expires_ms,
        );
        if follow_ups.is_empty() {
            invoker
                .dispatcher
                .record_drop(&event.function, "no_failure_destination");
        }
        Outcome::Failed {
            attempts,
            condition: condition.to_string(),
            error,
            follow_ups,
        }
    };
    if now > expires_ms {
        let error = format!(
            "the event waited longer than MaximumEventAgeInSeconds ({} s)",
            settings.max_age.as_secs()
        );
        return (
            failed("EventAgeExceeded", error, item.attempts, None),
            LaneSignal::Ok,
        );
    }
    let config = match resolved {
        Ok(config) => config,
        Err(InvokeError::NotFound(message)) => {
            invoker
                .dispatcher
                .record_drop(&event.function, "function_not_found");
            tracing::warn!(request_id = %event.request_id, "async event dropped: {message}");
            return (
                Outcome::Failed {
                    attempts: item.attempts,
                    condition: "FunctionNotFound".into(),
                    error: message,
                    follow_ups: Vec::new(),
                },
                LaneSignal::Ok,
            );
        }
        Err(e) => return platform_error(item, &e.to_string(), expires_ms),
    };
    let reserved = invoker
        .store
        .get_document(kinds::CONCURRENCY, &config.name, "")
        .ok()
        .flatten()
        .and_then(|doc| doc["ReservedConcurrentExecutions"].as_u64());
    if reserved == Some(0) {
        let error = "the function's reserved concurrency is 0".to_string();
        invoker.metering.record_throttle(&config.name);
        return (
            failed("RetriesExhausted", error, item.attempts, None),
            LaneSignal::Ok,
        );
    }
    let request = InvokeRequest {
        function: function.clone(),
        invocation_type: InvocationType::Event,
        log_tail: false,
        payload: Bytes::from(event.payload.clone()),
        client_context: None,
        trace_id: event.meta["trace_id"].as_str().map(str::to_string),
        request_id: event.request_id.clone(),
    };
    match invoker.run(&config, &request, None).await {
        Ok(result) if !result.function_error => {
            let response = Response {
                body: result.body,
                function_error: false,
                executed_version: config.version.clone(),
            };
            let follow_ups = settings
                .on_success
                .as_deref()
                .map(|target| {
                    let record = destination_record(
                        invoker,
                        item,
                        "Success",
                        item.attempts + 1,
                        Some(&response),
                    );
                    follow_up(invoker, item, target, record, "Success", expires_ms)
                })
                .into_iter()
                .flatten()
                .collect();
            (Outcome::Completed(follow_ups), LaneSignal::Ok)
        }
        Ok(result) => {
            let attempts = item.attempts + 1;
            let response = Response {
                body: result.body,
                function_error: true,
                executed_version: config.version.clone(),
            };
            let error = error_summary(&response.body);
            if attempts > settings.max_retries {
                return (
                    failed("RetriesExhausted", error, attempts, Some(&response)),
                    LaneSignal::Ok,
                );
            }
            let delay = invoker.dispatcher.settings.retry_delay * 2u32.pow(attempts - 1);
            let not_before_ms = now_ms().saturating_add(millis(delay));
            if not_before_ms > expires_ms {
                return (
                    failed("EventAgeExceeded", error, attempts, Some(&response)),
                    LaneSignal::Ok,
                );
            }
            (
                Outcome::Retry {
                    not_before_ms,
                    attempts,
                    deferrals: item.deferrals,
                    error,
                },
                LaneSignal::Ok,
            )
        }
        Err(InvokeError::Throttled(_)) => (Outcome::Release, LaneSignal::Pause),
        Err(InvokeError::Unavailable(_)) => (Outcome::Release, LaneSignal::Stop),
        Err(e) => platform_error(item, &e.to_string(), expires_ms),
    }
}

/// A platform error: back to the queue with exponential backoff (1 s … 5 min), not counted
/// as an attempt.
fn platform_error(item: &QueueItem, error: &str, expires_ms: i64) -> (Outcome, LaneSignal) {
    tracing::warn!(request_id = %item.item.request_id, "async event deferred after a platform error: {error}");
    let deferrals = item.deferrals + 1;
    let delay = (Duration::from_secs(1) * 2u32.saturating_pow(deferrals.min(16) - 1))
        .min(MAX_PLATFORM_BACKOFF);
    let not_before_ms = now_ms().saturating_add(millis(delay)).min(expires_ms + 1);
    (
        Outcome::Retry {
            not_before_ms,
            attempts: item.attempts,
            deferrals,
            error: error.to_string(),
        },
        LaneSignal::Ok,
    )
}

/// `errorType: errorMessage` of a function's error document (the raw text when it is not one).
fn error_summary(body: &[u8]) -> String {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = match (doc["errorType"].as_str(), doc["errorMessage"].as_str()) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_string(),
        (Some(kind), None) => kind.to_string(),
        (None, None) => String::from_utf8_lossy(body).into_owned(),
    };
    text.chars().take(1024).collect()
}

/// A JSON document as itself, anything else as a string.
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// AWS's invocation record, sent to OnSuccess and OnFailure destinations.
fn destination_record(
    invoker: &Invoker,
    item: &QueueItem,
    condition: &str,
    attempts: u32,
    response: Option<&Response>,
) -> Value {
    let event = &item.item;
    let qualifier = event.qualifier.as_deref().unwrap_or("$LATEST");
    let mut record = json!({
        "version": "1.0",
        "timestamp": lambent_types::time::iso8601_millis(std::time::SystemTime::now()),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": format!("{}:{qualifier}", invoker.arns.function_arn(&event.function)),
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": as_json(&event.payload),
    });
    if let Some(response) = response {
        let mut context = json!({"statusCode": 200, "executedVersion": response.executed_version});
        if response.function_error {
            context["functionError"] = json!("Unhandled");
        }
        record["responseContext"] = context;
        record["responsePayload"] = as_json(&response.body);
    }
    record
}

/// The records of a failed event: the OnFailure destination's record and the dead-letter
/// target's copy of the event.
#[allow(clippy::too_many_arguments)]
fn failure_follow_ups(
    invoker: &Invoker,
    item: &QueueItem,
    settings: &EventSettings,
    dead_letter: Option<&str>,
    condition: &str,
    error: &str,
    attempts: u32,
    response: Option<&Response>,
    expires_ms: i64,
) -> Vec<NewItem> {
    let mut out = Vec::new();
    if let Some(target) = settings.on_failure.as_deref() {
        let record = destination_record(invoker, item, condition, attempts, response);
        out.extend(follow_up(
            invoker, item, target, record, condition, expires_ms,
        ));
    }
    if let Some(target) = dead_letter {
        let event = &item.item;
        let attributes = vec![
            ("RequestID".to_string(), event.request_id.clone()),
            ("ErrorCode".to_string(), "200".to_string()),
            (
                "ErrorMessage".to_string(),
                error.chars().take(1024).collect(),
            ),
        ];
        out.extend(new_delivery(
            invoker,
            item,
            target,
            event.payload.clone(),
            attributes,
            "DeadLetter",
            expires_ms,
        ));
    }
    out
}

/// The item that carries a destination record to `target`.
fn follow_up(
    invoker: &Invoker,
    item: &QueueItem,
    target: &str,
    record: Value,
    condition: &str,
    expires_ms: i64,
) -> Option<NewItem> {
    let attributes = vec![
        ("RequestID".to_string(), item.item.request_id.clone()),
        ("Condition".to_string(), condition.to_string()),
    ];
    let purpose = if condition == "Success" {
        "OnSuccess"
    } else {
        "OnFailure"
    };
    new_delivery(
        invoker,
        item,
        target,
        record.to_string().into_bytes(),
        attributes,
        purpose,
        expires_ms,
    )
}

/// A follow-up item: an event for a destination function, a delivery for anything else.
fn new_delivery(
    invoker: &Invoker,
    item: &QueueItem,
    target: &str,
    body: Vec<u8>,
    attributes: Vec<(String, String)>,
    purpose: &str,
    expires_ms: i64,
) -> Option<NewItem> {
    let now = now_ms();
    match parse_target(target) {
        Ok(Target::Function { name, qualifier }) => Some(NewItem {
            kind: ItemKind::Invoke,
            lane: name.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            function: name,
            qualifier,
            payload: body,
            meta: json!({"source_request_id": item.item.request_id, "purpose": purpose}),
            accepted_ms: now,
            not_before_ms: now,
        }),
        Ok(_) => {
            // A record may take as long as the event could have, counted from now.
            let max_age = expires_ms.saturating_sub(item.item.accepted_ms).max(60_000);
            Some(NewItem {
                kind: ItemKind::Deliver,
                lane: target.to_string(),
                request_id: item.item.request_id.clone(),
                function: item.item.function.clone(),
                qualifier: item.item.qualifier.clone(),
                payload: body,
                meta: json!({
                    "attributes": attributes,
                    "purpose": purpose,
                    "expires_ms": now.saturating_add(max_age),
                }),
                accepted_ms: now,
                not_before_ms: now,
            })
        }
        Err(e) => {
            invoker
                .dispatcher
                .record_drop(&item.item.function, "bad_destination");
            tracing::warn!(request_id = %item.item.request_id, %target, "{purpose} record dropped: {e}");
            None
        }
    }
}

/// Delivers one record to its destination.
async fn deliver(invoker: &Invoker, item: &QueueItem) -> (Outcome, LaneSignal) {
    let record = &item.item;
    let purpose = record.meta["purpose"]
        .as_str()
        .unwrap_or("record")
        .to_string();
    let expires_ms = record.meta["expires_ms"].as_i64().unwrap_or(i64::MAX);
    let give_up = |error: String| {
        invoker
            .dispatcher
            .record_drop(&record.function, "destination_unavailable");
        tracing::warn!(
            request_id = %record.request_id, function = %record.function, destination = %record.lane,
            "{purpose} record dropped: {error}"
        );
        (
            Outcome::Failed {
                attempts: item.attempts,
                condition: "DestinationUnavailable".into(),
                error,
                follow_ups: Vec::new(),
            },
            LaneSignal::Ok,
        )
    };
    if now_ms() > expires_ms {
        return give_up("not delivered within the event's age limit".to_string());
    }
    let target = match parse_target(&record.lane) {
        Ok(target) => target,
        Err(e) => return give_up(e.to_string()),
    };
    let url = match target.connection() {
        Some(name) => match invoker.store.get_document(kinds::CONNECTION, "", name) {
            Ok(Some(doc)) => doc["Url"].as_str().map(str::to_string),
            Ok(None) => None,
            Err(e) => return retry_delivery(item, &e.to_string(), expires_ms),
        },
        None => None,
    };
    if target.connection().is_some() && url.is_none() {
        let error = format!(
            "connection {:?} does not exist (create it with `lambent connection put`)",
            target.connection().unwrap_or_default()
        );
        return retry_delivery(item, &error, expires_ms);
    }
    let attributes = record.meta["attributes"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| {
                    Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let message = Message {
        body: Bytes::from(record.payload.clone()),
        attributes,
    };
    match invoker
        .senders
        .send(&target, url.as_deref(), &message)
        .await
    {
        Ok(()) => (Outcome::Completed(Vec::new()), LaneSignal::Ok),
        Err(e) => retry_delivery(item, &e.to_string(), expires_ms),
    }
}

/// A failed delivery: retried with backoff (1 s doubling to 30 s) until its age limit.
fn retry_delivery(item: &QueueItem, error: &str, expires_ms: i64) -> (Outcome, LaneSignal) {
    tracing::debug!(request_id = %item.item.request_id, destination = %item.item.lane, "delivery failed: {error}");
    let attempts = item.attempts + 1;
    let delay = (Duration::from_secs(1) * 2u32.saturating_pow(attempts.min(16) - 1))
        .min(MAX_DELIVERY_BACKOFF);
    (
        Outcome::Retry {
            not_before_ms: now_ms().saturating_add(millis(delay)).min(expires_ms + 1),
            attempts,
            deferrals: item.deferrals,
            error: error.to_string(),
        },
        LaneSignal::Pause,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_of_destinations_are_told_from_functions() {
        assert!(!is_destination_lane("my-function"));
        assert!(is_destination_lane("http://127.0.0.1:8080/hook"));
        assert!(is_destination_lane("arn:lambent:nats:::n/subject/x"));
    }

    #[test]
    fn error_summaries() {
        let body = br#"{"errorType":"ValueError","errorMessage":"boom","stackTrace":[]}"#;
        assert_eq!(error_summary(body), "ValueError: boom");
        assert_eq!(error_summary(br#"{"errorMessage":"only"}"#), "only");
        assert_eq!(error_summary(b"not json"), "not json");
        assert_eq!(error_summary(&vec![b'x'; 5000]).len(), 1024);
    }

    #[test]
    fn payloads_stay_json_when_they_are() {
        assert_eq!(as_json(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(as_json(b"plain text"), json!("plain text"));
    }
}
