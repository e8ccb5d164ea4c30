//! Capture of an environment's stdout and stderr: each line goes to the platform log, and
//! the current invocation's recent output is kept for `X-Amz-Log-Type: Tail`. Once attached
//! to a [`LogStore`], complete lines are also recorded in the function's log stream; the
//! function's own output is rate-limited there (a token bucket per environment), so a flood
//! is dropped with a note instead of filling the disk or stalling anything.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use lambent_store::logs::{LogStore, now_ms};

use crate::telemetry::Telemetry;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// How many bytes of log a Tail request returns.
pub const TAIL_BYTES: usize = 4096;
/// How much recent output is kept per environment before older bytes are dropped.
const KEEP_BYTES: usize = 4 * TAIL_BYTES;

/// Longest partial line kept before it is recorded as a line of its own.
const MAX_LINE: usize = 8192;
/// Most bytes of lines kept while no store is attached yet.
const MAX_PENDING: usize = 1024 * 1024;

/// The recent log of one environment.
#[derive(Debug, Default)]
pub struct LogCapture {
    recent: Mutex<Vec<u8>>,
    sink: Mutex<Sink>,
    /// Telemetry API subscribers, told each line of the function's output.
    telemetry: std::sync::OnceLock<Arc<Telemetry>>,
}

/// Where complete lines go, and the flood control of the function's output.
#[derive(Debug, Default)]
struct Sink {
    target: Option<(Arc<LogStore>, String, String)>,
    /// Lines (with their timestamps) recorded before a store was attached.
    pending: Vec<(i64, Vec<u8>)>,
    pending_bytes: usize,
    /// A platform line not yet ended by a newline.
    partial: Vec<u8>,
    tokens: f64,
    refilled: Option<Instant>,
    dropped_bytes: u64,
    noted: Option<Instant>,
}

impl Sink {
    fn record(&mut self, timestamp: i64, lines: Vec<Vec<u8>>) {
        if lines.is_empty() {
            return;
        }
        match &self.target {
            Some((store, function, stream)) => {
                let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
                store.append(function, stream, timestamp, &refs);
            }
            None => {
                for line in lines {
                    if self.pending_bytes + line.len() <= MAX_PENDING {
                        self.pending_bytes += line.len();
                        self.pending.push((timestamp, line));
                    } else {
                        self.dropped_bytes += line.len() as u64 + 1;
                    }
                }
            }
        }
    }

    /// Writes the note about dropped output, if any was dropped.
    fn note_dropped(&mut self, timestamp: i64) {
        if self.dropped_bytes > 0 {
            let note = format!(
                "[lambent] {} bytes of output dropped: log rate limit exceeded",
                self.dropped_bytes
            );
            self.dropped_bytes = 0;
            self.noted = Some(Instant::now());
            self.record(timestamp, vec![note.into_bytes()]);
        }
    }

    /// Takes what the token bucket allows of the function's output lines.
    fn admit(&mut self, lines: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let Some((store, _, _)) = &self.target else {
            return lines;
        };
        let limits = store.limits();
        if limits.rate_bytes_per_sec == 0 {
            return lines;
        }
        let now = Instant::now();
        let burst = limits.burst_bytes.max(1) as f64;
        self.tokens = match self.refilled {
            None => burst,
            Some(then) => (self.tokens
                + now.duration_since(then).as_secs_f64() * limits.rate_bytes_per_sec as f64)
                .min(burst),
        };
        self.refilled = Some(now);
        let mut admitted = Vec::with_capacity(lines.len());
        for line in lines {
            let cost = line.len() as f64 + 1.0;
            if self.tokens >= cost {
                self.tokens -= cost;
                admitted.push(line);
            } else {
                self.dropped_bytes += line.len() as u64 + 1;
            }
        }
        admitted
    }
}

impl LogCapture {
    /// Records complete lines in `function`'s log stream `stream` from now on (and the lines
    /// written since the environment started).
    pub fn attach(&self, store: Arc<LogStore>, function: &str, stream: &str) {
        if let Ok(mut sink) = self.sink.lock() {
            let pending = std::mem::take(&mut sink.pending);
            sink.pending_bytes = 0;
            for (timestamp, line) in pending {
                store.append(function, stream, timestamp, &[&line]);
            }
            sink.target = Some((store, function.to_owned(), stream.to_owned()));
        }
    }

    /// Closes the log stream's file (the environment is gone); a later line reopens it.
    pub fn close(&self) {
        if let Ok(sink) = self.sink.lock()
            && let Some((store, function, stream)) = &sink.target
        {
            store.close_stream(function, stream);
        }
    }

    /// Sends the function's output lines to `telemetry` from now on.
    pub fn set_telemetry(&self, telemetry: Arc<Telemetry>) {
        let _ = self.telemetry.set(telemetry);
    }

    /// Appends a platform line such as START or REPORT (never rate-limited).
    pub fn append(&self, bytes: &[u8]) {
        self.append_tail(bytes);
        if let Ok(mut sink) = self.sink.lock() {
            let timestamp = now_ms();
            sink.note_dropped(timestamp);
            let mut data = std::mem::take(&mut sink.partial);
            data.extend_from_slice(bytes);
            let mut lines = Vec::new();
            let mut rest = &data[..];
            while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                lines.push(rest[..pos].to_vec());
                rest = &rest[pos + 1..];
            }
            if rest.len() > MAX_LINE {
                lines.push(rest.to_vec());
                rest = &[];
            }
            sink.partial = rest.to_vec();
            sink.record(timestamp, lines);
        }
    }

    /// Records complete lines of the function's output, within the rate limit; returns the
    /// lines that were kept.
    fn output(&self, lines: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let Ok(mut sink) = self.sink.lock() else {
            return Vec::new();
        };
        let timestamp = now_ms();
        let dropped_before = sink.dropped_bytes;
        let admitted = sink.admit(lines);
        if dropped_before > 0 && !admitted.is_empty() {
            // The note goes where the dropped lines were, before the lines now kept.
            let dropped_now = sink.dropped_bytes - dropped_before;
            sink.dropped_bytes = dropped_before;
            sink.note_dropped(timestamp);
            sink.dropped_bytes = dropped_now;
        }
        sink.record(timestamp, admitted.clone());
        if sink.dropped_bytes > 0 && sink.noted.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            sink.note_dropped(timestamp);
        }
        if let Some(telemetry) = self.telemetry.get() {
            for line in &admitted {
                telemetry.function_line(line);
            }
        }
        admitted
    }

    fn append_tail(&self, bytes: &[u8]) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.extend_from_slice(bytes);
            if recent.len() > 2 * KEEP_BYTES {
                let excess = recent.len() - KEEP_BYTES;
                recent.drain(..excess);
            }
        }
    }

    /// Returns the last 4 KB and forgets everything kept so far.
    pub fn take_tail(&self) -> String {
        let Ok(mut recent) = self.recent.lock() else {
            return String::new();
        };
        let start = recent.len().saturating_sub(TAIL_BYTES);
        let tail = String::from_utf8_lossy(&recent[start..]).into_owned();
        recent.clear();
        tail
    }

    /// Forgets what was kept (after an invocation whose tail nobody asked for).
    pub fn clear(&self) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.clear();
        }
    }
}

/// Reads the environment's combined stdout/stderr pipe until it closes.
pub async fn pump(mut reader: pipe::Receiver, capture: std::sync::Arc<LogCapture>, label: String) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut partial = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        capture.append_tail(&buf[..n]);
        partial.extend_from_slice(&buf[..n]);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
            lines.push(partial[start..start + pos].to_vec());
            start += pos + 1;
        }
        partial.drain(..start);
        if partial.len() > MAX_LINE {
            lines.push(std::mem::take(&mut partial));
        }
        for line in capture.output(lines) {
            emit(&label, &line);
        }
    }
    if !partial.is_empty() {
        for line in capture.output(vec![partial]) {
            emit(&label, &line);
        }
    }
}

fn emit(label: &str, line: &[u8]) {
    tracing::info!(target: "lambent::function", function = label, "{}", String::from_utf8_lossy(line).trim_end_matches('\r'));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_store::logs::LogLimits;

    #[test]
    fn keeps_only_the_tail() {
        let capture = LogCapture::default();
        capture.append(&vec![b'a'; 3 * KEEP_BYTES]);
        capture.append(b"END");
        let tail = capture.take_tail();
        assert_eq!(tail.len(), TAIL_BYTES);
        assert!(tail.ends_with("END"));
        assert_eq!(capture.take_tail(), "");
    }

    fn store(limits: LogLimits) -> (tempfile::TempDir, Arc<LogStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogStore::open(dir.path(), limits).unwrap());
        (dir, store)
    }

    #[test]
    fn records_lines_written_before_and_after_attaching() {
        let (_dir, store) = store(LogLimits::default());
        let capture = LogCapture::default();
        assert_eq!(capture.output(vec![b"init".to_vec()]).len(), 1);
        capture.attach(store.clone(), "f", "s");
        capture.append(b"START RequestId: r Version: $LATEST\n");
        capture.output(vec![b"hello".to_vec()]);
        capture.append(b"END Req");
        capture.append(b"uestId: r\n");
        let messages: Vec<String> = store
            .stream_events("f", "s")
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(
            messages,
            [
                "init",
                "START RequestId: r Version: $LATEST",
                "hello",
                "END RequestId: r"
            ]
        );
    }

    #[test]
    fn floods_are_dropped_with_a_note() {
        let (_dir, store) = store(LogLimits {
            rate_bytes_per_sec: 1000,
            burst_bytes: 1000,
            ..LogLimits::default()
        });
        let capture = LogCapture::default();
        capture.attach(store.clone(), "f", "s");
        let lines: Vec<Vec<u8>> = (0..1000).map(|_| vec![b'x'; 99]).collect();
        let kept = capture.output(lines);
        assert_eq!(kept.len(), 10);
        capture.append(b"END RequestId: r\n");
        let events = store.stream_events("f", "s").unwrap();
        assert_eq!(events.len(), 12);
        assert_eq!(
            events[10].message,
            "[lambent] 99000 bytes of output dropped: log rate limit exceeded"
        );
        assert_eq!(events[11].message, "END RequestId: r");
    }
}
