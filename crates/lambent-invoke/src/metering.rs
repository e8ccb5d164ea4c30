//! Metering: what every invocation used and how it went.
//!
//! The [`Metering`] component is updated by the Invoker after each invocation or throttle. It
//! keeps, in memory:
//!
//! - Prometheus counters and a duration histogram per (function, version), rendered in the
//!   text exposition format (version 0.0.4) by [`Metering::render_prometheus`];
//! - per-minute usage buckets per function (invocations, errors, throttles, cold starts,
//!   billed MB-milliseconds, init milliseconds) not yet written to the store.
//!
//! A background task ([`Metering::spawn_flusher`]) adds the pending buckets to the store
//! (kind [`kinds::USAGE`], scope = function, key = the minute's epoch seconds, zero-padded) every
//! few seconds, so the invoke path never writes the store. [`Metering::usage`] reads the
//! store and merges in what is still pending, so its answer is exact at any moment.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use lambent_store::{Store, StoreError, kinds};
use lambent_worker::InvocationResult;

/// Upper bounds (seconds) of the duration histogram's buckets.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Width of a usage bucket.
const MINUTE: u64 = 60;

/// Counters of one (function, version).
#[derive(Debug, Default, Clone)]
struct Series {
    invocations: u64,
    errors: u64,
    cold_starts: u64,
    /// Sum of billed milliseconds × configured MB.
    billed_mb_ms: u128,
    /// Sum of init durations, seconds.
    init_seconds: f64,
    /// Per bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: Vec<u64>,
    duration_sum: f64,
}

/// Usage of one function in one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageBucket {
    /// Invocations that ran (successful or not).
    pub invocations: u64,
    /// Invocations that ended in a function error.
    pub errors: u64,
    /// Invocations refused by a concurrency limit.
    pub throttles: u64,
    /// Invocations that started a new environment.
    pub cold_starts: u64,
    /// Sum of billed milliseconds.
    pub billed_ms: u64,
    /// Sum of billed milliseconds × configured memory (MB).
    pub billed_mb_ms: u64,
    /// Sum of init durations, milliseconds (rounded up).
    pub init_ms: u64,
}

impl UsageBucket {
    /// Adds another bucket's counts to this one.
    pub fn add(&mut self, other: &UsageBucket) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.cold_starts += other.cold_starts;
        self.billed_ms += other.billed_ms;
        self.billed_mb_ms += other.billed_mb_ms;
        self.init_ms += other.init_ms;
    }

    /// Billed GB-seconds: billed ms / 1000 × memory MB / 1024.
    pub fn gb_seconds(&self) -> f64 {
        self.billed_mb_ms as f64 / 1000.0 / 1024.0
    }

    /// The stored (and API) JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "Invocations": self.invocations,
            "Errors": self.errors,
            "Throttles": self.throttles,
            "ColdStarts": self.cold_starts,
            "BilledMs": self.billed_ms,
            "BilledMbMs": self.billed_mb_ms,
            "InitMs": self.init_ms,
            "GbSeconds": self.gb_seconds(),
        })
    }

    /// Reads the stored JSON form (missing fields count as zero).
    pub fn from_json(value: &Value) -> Self {
        let n = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        Self {
            invocations: n("Invocations"),
            errors: n("Errors"),
            throttles: n("Throttles"),
            cold_starts: n("ColdStarts"),
            billed_ms: n("BilledMs"),
            billed_mb_ms: n("BilledMbMs"),
            init_ms: n("InitMs"),
        }
    }
}

#[derive(Default)]
struct Inner {
    series: BTreeMap<(String, String), Series>,
    throttles: BTreeMap<String, u64>,
    /// Usage not yet written to the store, by (function, minute epoch seconds).
    pending: HashMap<(String, u64), UsageBucket>,
}

/// In-memory metrics and usage of every function; see the module documentation.
#[derive(Default)]
pub struct Metering {
    inner: Mutex<Inner>,
    /// Held while pending usage is written to the store, so readers never see it in neither place.
    flush_lock: Mutex<()>,
}

/// Account-wide gauges read at render time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// Invocations running now.
    pub concurrent_executions: usize,
    /// Execution environments alive now.
    pub environments: usize,
}

fn epoch_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn minute_of(now: SystemTime) -> u64 {
    epoch_seconds(now) / MINUTE * MINUTE
}

/// The store key of a minute: its epoch seconds, zero-padded so keys sort by time.
pub fn minute_key(minute: u64) -> String {
    format!("{minute:012}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metering {
    /// An empty meter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records one invocation that ran.
    pub fn record_invocation(&self, function: &str, version: &str, result: &InvocationResult) {
        self.record_invocation_at(function, version, result, SystemTime::now());
    }

    fn record_invocation_at(
        &self,
        function: &str,
        version: &str,
        result: &InvocationResult,
        now: SystemTime,
    ) {
        let report = &result.report;
        let seconds = report.duration.as_secs_f64();
        let billed_mb_ms = report.billed_ms * u64::from(report.memory_size_mb);
        let init_ms = report
            .init_duration
            .map_or(0, |d| d.as_micros().div_ceil(1000) as u64);
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut inner = lock(&self.inner);
        let series = inner
            .series
            .entry((function.to_string(), version.to_string()))
            .or_insert_with(|| Series {
                buckets: vec![0; DURATION_BUCKETS.len() + 1],
                ..Series::default()
            });
        series.invocations += 1;
        series.errors += u64::from(result.function_error);
        series.cold_starts += u64::from(result.cold_start);
        series.billed_mb_ms += u128::from(billed_mb_ms);
        series.init_seconds += report.init_duration.map_or(0.0, |d| d.as_secs_f64());
        series.buckets[bucket] += 1;
        series.duration_sum += seconds;
        let usage = inner
            .pending
            .entry((function.to_string(), minute_of(now)))
            .or_default();
        usage.invocations += 1;
        usage.errors += u64::from(result.function_error);
        usage.cold_starts += u64::from(result.cold_start);
        usage.billed_ms += report.billed_ms;
        usage.billed_mb_ms += billed_mb_ms;
        usage.init_ms += init_ms;
    }

    /// Records one invocation refused by a concurrency limit.
    pub fn record_throttle(&self, function: &str) {
        self.record_throttle_at(function, SystemTime::now());
    }

    fn record_throttle_at(&self, function: &str, now: SystemTime) {
        let mut inner = lock(&self.inner);
        *inner.throttles.entry(function.to_string()).or_default() += 1;
        inner
            .pending
            .entry((function.to_string(), minute_of(now)))
            .or_default()
            .throttles += 1;
    }

    /// Adds the pending usage to the store. Buckets that could not be written stay pending.
    pub fn flush(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let _flushing = lock(&self.flush_lock);
        let pending = std::mem::take(&mut lock(&self.inner).pending);
        let mut written = 0;
        let mut failed = Vec::new();
        let mut first_error = None;
        for ((function, minute), bucket) in pending {
            let result = store.modify_document(
                kinds::USAGE,
                &function,
                &minute_key(minute),
                &mut |current| {
                    let mut total = current
                        .as_ref()
                        .map(UsageBucket::from_json)
                        .unwrap_or_default();
                    total.add(&bucket);
                    Ok(Some(total.to_json()))
                },
            );
            match result {
                Ok(_) => written += 1,
                Err(e) => {
                    failed.push(((function, minute), bucket));
                    first_error.get_or_insert(e);
                }
            }
        }
        if !failed.is_empty() {
            let mut inner = lock(&self.inner);
            for (key, bucket) in failed {
                inner.pending.entry(key).or_default().add(&bucket);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Flushes pending usage to the store every `interval` until the meter is dropped.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let meter = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(meter) = meter.upgrade() else { break };
                let store = store.clone();
                let flushed =
                    tokio::task::spawn_blocking(move || meter.flush(store.as_ref())).await;
                match flushed {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("cannot write usage to the store: {e}"),
                    Err(e) => tracing::warn!("usage flush failed: {e}"),
                }
            }
        })
    }

    /// Per-minute usage of one function (or all with `None`) from `since` (epoch seconds; the
    /// minute containing it is included): stored buckets plus those still pending, keyed by
    /// function then minute.
    pub fn usage(
        &self,
        store: &dyn Store,
        function: Option<&str>,
        since: u64,
    ) -> Result<BTreeMap<String, BTreeMap<u64, UsageBucket>>, StoreError> {
        let first_minute = since / MINUTE * MINUTE;
        let _flushing = lock(&self.flush_lock);
        let mut out: BTreeMap<String, BTreeMap<u64, UsageBucket>> = BTreeMap::new();
        for (scope, key, doc) in store.list_documents(kinds::USAGE, function)? {
            let Ok(minute) = key.parse::<u64>() else {
                continue;
            };
            if minute < first_minute {
                continue;
            }
            out.entry(scope)
                .or_default()
                .entry(minute)
                .or_default()
                .add(&UsageBucket::from_json(&doc));
        }
        let inner = lock(&self.inner);
        for ((name, minute), bucket) in &inner.pending {
            if *minute < first_minute || function.is_some_and(|f| f != name) {
                continue;
            }
            out.entry(name.clone())
                .or_default()
                .entry(*minute)
                .or_default()
                .add(bucket);
        }
        Ok(out)
    }

    /// Renders every metric in the Prometheus text exposition format, version 0.0.4.
    pub fn render_prometheus(&self, gauges: Gauges) -> String {
        use std::fmt::Write as _;
        let inner = lock(&self.inner);
        let mut out = String::with_capacity(1024 + inner.series.len() * 2048);
        let labels = |function: &str, version: &str| {
            format!(
                "function=\"{}\",version=\"{}\"",
                escape_label(function),
                escape_label(version)
            )
        };
        let mut counter = |name: &str, help: &str, value: &dyn Fn(&Series) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((function, version), series) in &inner.series {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    labels(function, version),
                    value(series)
                );
            }
        };
        counter(
            "lambent_invocations_total",
            "Invocations that ran, successful or not.",
            &|s| s.invocations.to_string(),
        );
        counter(
            "lambent_errors_total",
            "Invocations that ended in a function error.",
            &|s| s.errors.to_string(),
        );
        counter(
            "lambent_cold_starts_total",
            "Invocations that started a new execution environment.",
            &|s| s.cold_starts.to_string(),
        );
        counter(
            "lambent_billed_gb_seconds_total",
            "Billed duration times configured memory, in GB-seconds.",
            &|s| format_float(s.billed_mb_ms as f64 / 1000.0 / 1024.0),
        );
        counter(
            "lambent_init_duration_seconds_total",
            "Time spent initializing environments on cold starts.",
            &|s| format_float(s.init_seconds),
        );

        let name = "lambent_throttles_total";
        let _ = writeln!(
            out,
            "# HELP {name} Invocations refused by a concurrency limit.\n# TYPE {name} counter"
        );
        for (function, count) in &inner.throttles {
            let _ = writeln!(
                out,
                "{name}{{function=\"{}\"}} {count}",
                escape_label(function)
            );
        }

        let name = "lambent_invocation_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of the invoke phase.\n# TYPE {name} histogram"
        );
        for ((function, version), series) in &inner.series {
            let labels = labels(function, version);
            let mut cumulative = 0;
            for (bound, count) in DURATION_BUCKETS.iter().zip(&series.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    format_float(*bound)
                );
            }
            cumulative += series.buckets.last().copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {}",
                format_float(series.duration_sum)
            );
            let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        }
        drop(inner);

        for (name, help, value) in [
            (
                "lambent_concurrent_executions",
                "Invocations running now.",
                gauges.concurrent_executions,
            ),
            (
                "lambent_environments",
                "Execution environments alive now.",
                gauges.environments,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// A sample value as Prometheus reads it (Go float syntax; `Display` of f64 is fine).
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_worker::InvocationReport;

    fn result(ms: u64, error: bool, cold: bool, memory: u32) -> InvocationResult {
        InvocationResult {
            body: bytes::Bytes::new(),
            function_error: error,
            log_tail: None,
            cold_start: cold,
            report: InvocationReport {
                duration: Duration::from_micros(ms * 1000 - 300),
                billed_ms: ms,
                init_duration: cold.then(|| Duration::from_micros(120_500)),
                memory_size_mb: memory,
                max_memory_used_mb: 30,
            },
        }
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn aggregates_per_minute_and_renders_exposition() {
        let meter = Metering::new();
        meter.record_invocation_at("f", "$LATEST", &result(3, false, true, 1024), at(120));
        meter.record_invocation_at("f", "$LATEST", &result(200, true, false, 1024), at(130));
        meter.record_invocation_at("f", "1", &result(2000, false, true, 512), at(185));
        meter.record_throttle_at("f", at(190));
        meter.record_throttle_at("g", at(190));

        let text = meter.render_prometheus(Gauges {
            concurrent_executions: 2,
            environments: 3,
        });
        for line in [
            "# TYPE lambent_invocations_total counter",
            "lambent_invocations_total{function=\"f\",version=\"$LATEST\"} 2",
            "lambent_invocations_total{function=\"f\",version=\"1\"} 1",
            "lambent_errors_total{function=\"f\",version=\"$LATEST\"} 1",
            "lambent_cold_starts_total{function=\"f\",version=\"$LATEST\"} 1",
            "lambent_throttles_total{function=\"f\"} 1",
            "lambent_throttles_total{function=\"g\"} 1",
            "# TYPE lambent_invocation_duration_seconds histogram",
            "lambent_invocation_duration_seconds_bucket{function=\"f\",version=\"$LATEST\",le=\"0.005\"} 1",
            "lambent_invocation_duration_seconds_bucket{function=\"f\",version=\"$LATEST\",le=\"0.1\"} 1",
            "lambent_invocation_duration_seconds_bucket{function=\"f\",version=\"$LATEST\",le=\"0.25\"} 2",
            "lambent_invocation_duration_seconds_bucket{function=\"f\",version=\"$LATEST\",le=\"+Inf\"} 2",
            "lambent_invocation_duration_seconds_count{function=\"f\",version=\"$LATEST\"} 2",
            "lambent_invocation_duration_seconds_bucket{function=\"f\",version=\"1\",le=\"1\"} 0",
            "lambent_invocation_duration_seconds_bucket{function=\"f\",version=\"1\",le=\"2.5\"} 1",
            "lambent_billed_gb_seconds_total{function=\"f\",version=\"1\"} 1",
            "lambent_concurrent_executions 2",
            "lambent_environments 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }

        let pending = &lock(&meter.inner).pending;
        let first = pending[&("f".to_string(), 120)];
        assert_eq!(
            first,
            UsageBucket {
                invocations: 2,
                errors: 1,
                throttles: 0,
                cold_starts: 1,
                billed_ms: 203,
                billed_mb_ms: 203 * 1024,
                init_ms: 121,
            }
        );
        let second = pending[&("f".to_string(), 180)];
        assert_eq!((second.invocations, second.throttles), (1, 1));
        assert!((second.gb_seconds() - 1.0).abs() < 1e-9);
        assert_eq!(pending[&("g".to_string(), 180)].throttles, 1);
    }

    #[test]
    fn flushes_to_the_store_and_merges_pending() {
        let store = lambent_store::SqliteStore::in_memory().unwrap();
        let meter = Metering::new();
        meter.record_invocation_at("f", "$LATEST", &result(5, false, true, 128), at(60));
        meter.record_throttle_at("g", at(125));
        assert_eq!(meter.flush(&store).unwrap(), 2);
        assert!(lock(&meter.inner).pending.is_empty());
        meter.record_invocation_at("f", "$LATEST", &result(5, true, false, 128), at(61));
        meter.record_invocation_at("f", "$LATEST", &result(5, false, false, 128), at(300));
        let doc = store
            .get_document(kinds::USAGE, "f", &minute_key(60))
            .unwrap()
            .unwrap();
        assert_eq!(UsageBucket::from_json(&doc).invocations, 1);

        let all = meter.usage(&store, None, 0).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["f", "g"]);
        assert_eq!(all["f"][&60].invocations, 2);
        assert_eq!(all["f"][&60].errors, 1);
        assert_eq!(all["f"][&300].invocations, 1);
        let recent = meter.usage(&store, Some("f"), 120).unwrap();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent["f"].keys().collect::<Vec<_>>(), [&300]);
        meter.flush(&store).unwrap();
        assert_eq!(meter.usage(&store, None, 0).unwrap(), all);
    }

    #[test]
    fn usage_json_round_trips_and_escapes_labels() {
        let bucket = UsageBucket {
            invocations: 5,
            errors: 1,
            throttles: 2,
            cold_starts: 1,
            billed_ms: 10,
            billed_mb_ms: 1280,
            init_ms: 7,
        };
        assert_eq!(UsageBucket::from_json(&bucket.to_json()), bucket);
        assert_eq!(UsageBucket::from_json(&json!({})), UsageBucket::default());
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(minute_key(1_700_000_040), "001700000040");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.005), "0.005");
    }
}
