//! Function logs: one append-only file per log stream, under `<root>/<function>/`, with an
//! in-memory index of groups and streams, size and age retention, and a change signal so
//! followers see new lines at once.
//!
//! A stream file holds one event per line: `<timestamp ms>\t<message>\n` (messages may hold
//! tabs and `\r`, never `\n`). The log group of function `f` is `/aws/lambda/f`.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The prefix of every function's log group.
pub const GROUP_PREFIX: &str = "/aws/lambda/";
/// Most recent events kept in memory for followers.
const RECENT_EVENTS: usize = 20_000;
/// Most bytes of recent events kept in memory for followers.
const RECENT_BYTES: usize = 8 * 1024 * 1024;
/// How often streams are checked for age.
const AGE_SWEEP_MS: i64 = 60_000;

/// Retention and rate limits of the log store.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Most bytes kept on disk in all; the oldest streams are deleted first beyond it.
    pub max_bytes: u64,
    /// Streams whose last event is older than this are deleted.
    pub max_age: Duration,
    /// Sustained output one environment may log, bytes per second (0: unlimited).
    pub rate_bytes_per_sec: u64,
    /// Output one environment may log in a burst, bytes.
    pub burst_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            max_age: Duration::from_secs(168 * 3600),
            rate_bytes_per_sec: 1024 * 1024,
            burst_bytes: 1024 * 1024,
        }
    }
}

/// One log event, as CloudWatch Logs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The stream it belongs to.
    pub stream: String,
    /// When it was written, ms since the epoch.
    pub timestamp: i64,
    /// The line, without its newline.
    pub message: String,
    /// Unique within the group and stable.
    pub event_id: String,
}

/// What DescribeLogStreams reports about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// `YYYY/MM/DD/[version]id`.
    pub name: String,
    /// ms since the epoch.
    pub creation_time: i64,
    /// Timestamp of the first event.
    pub first_event: i64,
    /// Timestamp of the last event.
    pub last_event: i64,
    /// Bytes on disk.
    pub stored_bytes: u64,
}

/// What DescribeLogGroups reports about a function's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The function name (the group is `/aws/lambda/<function>`).
    pub function: String,
    /// ms since the epoch.
    pub creation_time: i64,
    /// Bytes on disk over all streams.
    pub stored_bytes: u64,
}

/// An error reading logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such group or stream.
    #[error("The specified log {0} does not exist.")]
    NotFound(&'static str),
    /// The disk failed.
    #[error("log storage failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
struct StreamMeta {
    creation_time: i64,
    first_event: i64,
    last_event: i64,
    bytes: u64,
    file: Option<File>,
}

#[derive(Debug, Default)]
struct FunctionLogs {
    creation_time: i64,
    streams: BTreeMap<String, StreamMeta>,
}

#[derive(Debug, Default)]
struct Inner {
    functions: BTreeMap<String, FunctionLogs>,
    total: u64,
    last_sweep: i64,
    /// Sequence number of the last event appended.
    seq: u64,
    recent: VecDeque<(u64, String, LogEvent)>,
    recent_bytes: usize,
}

/// A cut of the store: each stream's file and its length at one instant.
struct Cut {
    streams: Vec<(String, PathBuf, u64)>,
    seq: u64,
}

/// The log store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    limits: LogLimits,
    inner: Mutex<Inner>,
    changes: tokio::sync::watch::Sender<u64>,
    closed: std::sync::atomic::AtomicBool,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl LogStore {
    /// Opens (creating) the store at `root` and indexes what is there.
    pub fn open(root: &Path, limits: LogLimits) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut inner = Inner::default();
        for function in std::fs::read_dir(root)? {
            let function = function?;
            if !function.file_type()?.is_dir() {
                continue;
            }
            let Some(name) = function.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let mut logs = FunctionLogs::default();
            for entry in std::fs::read_dir(function.path())? {
                let entry = entry?;
                let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Some(stream) = file.strip_suffix(".log").map(unescape) else {
                    continue;
                };
                let bytes = entry.metadata()?.len();
                let (first, last) = first_and_last(&entry.path()).unwrap_or((0, 0));
                if bytes == 0 {
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                }
                inner.total += bytes;
                logs.streams.insert(
                    stream,
                    StreamMeta {
                        creation_time: first,
                        first_event: first,
                        last_event: last,
                        bytes,
                        file: None,
                    },
                );
            }
            if let Some(first) = logs.streams.values().map(|s| s.creation_time).min() {
                logs.creation_time = first;
                inner.functions.insert(name, logs);
            }
        }
        let store = Self {
            root: root.to_path_buf(),
            limits,
            inner: Mutex::new(inner),
            changes: tokio::sync::watch::channel(0).0,
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        if let Ok(mut inner) = store.inner.lock() {
            store.enforce(&mut inner, now_ms(), true);
        }
        Ok(store)
    }

    /// The limits the store was opened with.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    fn stream_path(&self, function: &str, stream: &str) -> PathBuf {
        self.root
            .join(function)
            .join(format!("{}.log", escape(stream)))
    }

    /// Appends lines (without newlines; any `\n` inside is replaced) written at `timestamp`.
    pub fn append(&self, function: &str, stream: &str, timestamp: i64, lines: &[&[u8]]) {
        if lines.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let mut buf = Vec::new();
        let mut events = Vec::with_capacity(lines.len());
        let function_logs = inner
            .functions
            .entry(function.to_owned())
            .or_insert_with(|| FunctionLogs {
                creation_time: timestamp,
                streams: BTreeMap::new(),
            });
        let meta = function_logs
            .streams
            .entry(stream.to_owned())
            .or_insert_with(|| StreamMeta {
                creation_time: timestamp,
                first_event: timestamp,
                last_event: timestamp,
                bytes: 0,
                file: None,
            });
        let start = meta.bytes;
        for line in lines {
            let message = String::from_utf8_lossy(line).replace('\n', " ");
            let offset = start + buf.len() as u64;
            buf.extend_from_slice(format!("{timestamp}\t{message}\n").as_bytes());
            events.push(LogEvent {
                stream: stream.to_owned(),
                timestamp,
                message,
                event_id: event_id(stream, offset),
            });
        }
        if meta.file.is_none() {
            let path = self.stream_path(function, stream);
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => meta.file = Some(file),
                Err(e) => {
                    tracing::warn!("cannot open log file {}: {e}", path.display());
                    return;
                }
            }
        }
        if let Some(file) = meta.file.as_mut()
            && let Err(e) = file.write_all(&buf)
        {
            tracing::warn!(function, stream, "cannot write log: {e}");
            meta.file = None;
            return;
        }
        meta.bytes += buf.len() as u64;
        meta.last_event = meta.last_event.max(timestamp);
        inner.total += buf.len() as u64;
        for event in events {
            inner.seq += 1;
            let seq = inner.seq;
            inner.recent_bytes += event.message.len() + 64;
            inner.recent.push_back((seq, function.to_owned(), event));
        }
        while inner.recent.len() > RECENT_EVENTS || inner.recent_bytes > RECENT_BYTES {
            match inner.recent.pop_front() {
                Some((_, _, event)) => inner.recent_bytes -= event.message.len() + 64,
                None => break,
            }
        }
        let seq = inner.seq;
        self.enforce(&mut inner, timestamp, false);
        drop(inner);
        self.changes.send_replace(seq);
    }

    /// Deletes streams beyond the size limit (oldest first) and, now and then, by age.
    fn enforce(&self, inner: &mut Inner, now: i64, sweep: bool) {
        let mut doomed: Vec<(String, String)> = Vec::new();
        if sweep || now - inner.last_sweep >= AGE_SWEEP_MS {
            inner.last_sweep = now;
            let cutoff = now - self.limits.max_age.as_millis() as i64;
            for (function, logs) in &inner.functions {
                for (stream, meta) in &logs.streams {
                    if meta.last_event < cutoff {
                        doomed.push((function.clone(), stream.clone()));
                    }
                }
            }
        }
        for (function, stream) in doomed {
            self.remove_stream(inner, &function, &stream);
        }
        if inner.total > self.limits.max_bytes {
            let mut by_age: Vec<(i64, String, String)> = inner
                .functions
                .iter()
                .flat_map(|(function, logs)| {
                    logs.streams
                        .iter()
                        .map(|(stream, meta)| (meta.last_event, function.clone(), stream.clone()))
                })
                .collect();
            by_age.sort();
            let target = self.limits.max_bytes - self.limits.max_bytes / 10;
            for (_, function, stream) in by_age {
                if inner.total <= target {
                    break;
                }
                self.remove_stream(inner, &function, &stream);
            }
        }
    }

    fn remove_stream(&self, inner: &mut Inner, function: &str, stream: &str) {
        let Some(logs) = inner.functions.get_mut(function) else {
            return;
        };
        if let Some(meta) = logs.streams.remove(stream) {
            inner.total = inner.total.saturating_sub(meta.bytes);
            let _ = std::fs::remove_file(self.stream_path(function, stream));
        }
        if logs.streams.is_empty() {
            inner.functions.remove(function);
            let _ = std::fs::remove_dir(self.root.join(function));
        }
    }

    /// Every function with logs, by name.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        inner
            .functions
            .iter()
            .map(|(function, logs)| GroupInfo {
                function: function.clone(),
                creation_time: logs.creation_time,
                stored_bytes: logs.streams.values().map(|s| s.bytes).sum(),
            })
            .collect()
    }

    /// The streams of a function, by name.
    pub fn streams(&self, function: &str) -> Result<Vec<StreamInfo>, LogError> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        let logs = inner
            .functions
            .get(function)
            .ok_or(LogError::NotFound("group"))?;
        Ok(logs
            .streams
            .iter()
            .map(|(name, meta)| StreamInfo {
                name: name.clone(),
                creation_time: meta.creation_time,
                first_event: meta.first_event,
                last_event: meta.last_event,
                stored_bytes: meta.bytes,
            })
            .collect())
    }

    fn cut(&self, function: &str, only: Option<&dyn Fn(&str) -> bool>) -> Result<Cut, LogError> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        let logs = inner
            .functions
            .get(function)
            .ok_or(LogError::NotFound("group"))?;
        let streams = logs
            .streams
            .iter()
            .filter(|(name, _)| only.is_none_or(|f| f(name)))
            .map(|(name, meta)| (name.clone(), self.stream_path(function, name), meta.bytes))
            .collect();
        Ok(Cut {
            streams,
            seq: inner.seq,
        })
    }

    /// All events of one stream, oldest first.
    pub fn stream_events(&self, function: &str, stream: &str) -> Result<Vec<LogEvent>, LogError> {
        let cut = self.cut(function, Some(&|name: &str| name == stream))?;
        let Some((name, path, len)) = cut.streams.into_iter().next() else {
            return Err(LogError::NotFound("stream"));
        };
        read_events(&name, &path, len)
    }

    /// The events of a function's streams chosen by `only` (all when `None`), ordered by
    /// time, then stream; and the sequence number they run up to (for [`Self::follow`]).
    pub fn events(
        &self,
        function: &str,
        only: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<(Vec<LogEvent>, u64), LogError> {
        let cut = self.cut(function, only)?;
        let mut all = Vec::new();
        for (name, path, len) in &cut.streams {
            match read_events(name, path, *len) {
                Ok(events) => all.extend(events),
                // Deleted by retention since the cut.
                Err(LogError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        all.sort_by_key(|e| e.timestamp);
        Ok((all, cut.seq))
    }

    /// Closes the open file of `function`'s stream `stream` (its environment ended), so
    /// descriptors do not pile up with environments; appending again reopens it.
    pub fn close_stream(&self, function: &str, stream: &str) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(meta) = inner
                .functions
                .get_mut(function)
                .and_then(|f| f.streams.get_mut(stream))
        {
            meta.file = None;
        }
    }

    /// Ends every [`Self::follow`] wait, now and later (at shutdown, so no request lingers).
    pub fn close_followers(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.changes.send_modify(|_| {});
    }

    /// The sequence number of the last event appended.
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().map_or(0, |inner| inner.seq)
    }

    /// Events of `function` appended after sequence number `after`, waiting up to `wait` for
    /// one; returns them and the sequence number to pass next time.
    pub async fn follow(&self, function: &str, after: u64, wait: Duration) -> (Vec<LogEvent>, u64) {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let mut after = after;
        loop {
            changes.borrow_and_update();
            let (events, seq) = match self.inner.lock() {
                Ok(inner) => {
                    let events: Vec<LogEvent> = inner
                        .recent
                        .iter()
                        .filter(|(seq, f, _)| *seq > after && f == function)
                        .map(|(_, _, e)| e.clone())
                        .collect();
                    (events, inner.seq)
                }
                Err(_) => return (Vec::new(), after),
            };
            after = seq;
            if !events.is_empty() || self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return (events, seq);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return (Vec::new(), after),
            }
        }
    }
}

fn poisoned() -> LogError {
    LogError::Io(std::io::Error::other("log index lock poisoned"))
}

/// Reads the first `len` bytes of a stream file as events.
fn read_events(stream: &str, path: &Path, len: u64) -> Result<Vec<LogEvent>, LogError> {
    let file = File::open(path)?;
    let mut data = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut data)?;
    let mut events = Vec::new();
    let mut offset = 0usize;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let start = offset;
        offset += line.len();
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        if let Some(event) = parse_line(stream, line, start as u64) {
            events.push(event);
        }
    }
    Ok(events)
}

fn parse_line(stream: &str, line: &[u8], offset: u64) -> Option<LogEvent> {
    let tab = line.iter().position(|&b| b == b'\t')?;
    let timestamp = std::str::from_utf8(&line[..tab]).ok()?.parse().ok()?;
    Some(LogEvent {
        stream: stream.to_owned(),
        timestamp,
        message: String::from_utf8_lossy(&line[tab + 1..]).into_owned(),
        event_id: event_id(stream, offset),
    })
}

/// Timestamps of the first and last event of a stream file.
fn first_and_last(path: &Path) -> Option<(i64, i64)> {
    let mut file = File::open(path).ok()?;
    let mut first = String::new();
    BufReader::new(&mut file).read_line(&mut first).ok()?;
    let ts = |line: &str| line.split('\t').next()?.parse::<i64>().ok();
    let first_ts = ts(&first)?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let last_ts = tail
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .and_then(ts)
        .unwrap_or(first_ts);
    Some((first_ts, last_ts))
}

fn event_id(stream: &str, offset: u64) -> String {
    // FNV-1a of the stream name, then the byte offset: unique in a group, stable on disk.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}{offset:020}")
}

fn escape(stream: &str) -> String {
    stream.replace('%', "%25").replace('/', "%2F")
}

fn unescape(file: &str) -> String {
    file.replace("%2F", "/").replace("%25", "%")
}

/// A CloudWatch Logs filter pattern over unstructured text: terms and `"quoted phrases"`
/// must all occur; `-term` must not; if there are `?term`s, at least one must occur.
#[derive(Debug, Clone, Default)]
pub struct FilterPattern {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<String>,
}

impl FilterPattern {
    /// Parses a pattern; `None` for JSON or space-delimited patterns Lambent does not support.
    pub fn parse(pattern: &str) -> Option<Self> {
        let pattern = pattern.trim();
        if pattern.starts_with('{') || pattern.starts_with('[') {
            return None;
        }
        let mut out = Self::default();
        let mut chars = pattern.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&c) = chars.peek() else { break };
            let kind = match c {
                '-' | '?' => {
                    chars.next();
                    c
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => term.extend(chars.next()),
                        c => term.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    term.push(c);
                }
            }
            if term.is_empty() {
                continue;
            }
            match kind {
                '-' => out.none.push(term),
                '?' => out.any.push(term),
                _ => out.all.push(term),
            }
        }
        Some(out)
    }

    /// Whether a message matches.
    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;

    #[test]
    fn a_closed_stream_frees_its_file_and_reopens_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), LogLimits::default()).unwrap();
        store.append("f", "s", 1, &[b"one"]);
        let open = |store: &LogStore| {
            store.inner.lock().unwrap().functions["f"].streams["s"]
                .file
                .is_some()
        };
        assert!(open(&store));
        store.close_stream("f", "s");
        assert!(!open(&store));
        store.append("f", "s", 2, &[b"two"]);
        let messages: Vec<String> = store
            .stream_events("f", "s")
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["one", "two"]);
        store.close_stream("f", "missing");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, limits: LogLimits) -> LogStore {
        LogStore::open(dir, limits).unwrap()
    }

    #[test]
    fn appends_reads_and_reindexes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = store(dir.path(), LogLimits::default());
        let stream = "2026/01/02/[$LATEST]abc";
        let t0 = now_ms();
        logs.append("f", stream, t0, &[b"START a", b"hello\tworld\r"]);
        logs.append("f", stream, t0 + 1000, &[b"END a"]);
        let events = logs.stream_events("f", stream).unwrap();
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["START a", "hello\tworld\r", "END a"]);
        assert_eq!(events[2].timestamp, t0 + 1000);
        assert_ne!(events[0].event_id, events[1].event_id);
        drop(logs);

        let logs = store(dir.path(), LogLimits::default());
        let groups = logs.groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].function, "f");
        let streams = logs.streams("f").unwrap();
        assert_eq!(streams[0].name, stream);
        assert_eq!(
            (streams[0].first_event, streams[0].last_event),
            (t0, t0 + 1000)
        );
        assert_eq!(logs.stream_events("f", stream).unwrap(), events);
        assert!(matches!(logs.streams("g"), Err(LogError::NotFound(_))));
        assert!(matches!(
            logs.stream_events("f", "nope"),
            Err(LogError::NotFound(_))
        ));
    }

    #[test]
    fn retention_drops_oldest_streams() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            max_bytes: 1000,
            ..LogLimits::default()
        };
        let logs = store(dir.path(), limits);
        let line = [b'x'; 300];
        logs.append("f", "old", 1, &[&line]);
        logs.append("f", "mid", 2, &[&line]);
        logs.append("g", "new", 3, &[&line]);
        logs.append("g", "new", 4, &[&line]);
        let streams: Vec<String> = logs
            .streams("f")
            .map(|s| s.into_iter().map(|s| s.name).collect())
            .unwrap_or_default();
        assert!(!streams.contains(&"old".to_string()), "{streams:?}");
        assert!(!dir.path().join("f").join("old.log").exists());
        assert_eq!(logs.stream_events("g", "new").unwrap().len(), 2);

        let aged = LogLimits {
            max_age: Duration::from_secs(1),
            ..LogLimits::default()
        };
        let logs = store(dir.path(), aged);
        logs.append("h", "fresh", now_ms(), &[b"hi"]);
        assert!(logs.streams("g").is_err());
        assert!(logs.streams("h").is_ok());
    }

    #[test]
    fn filter_patterns() {
        let p = FilterPattern::parse("ERROR \"disk full\" -ignore").unwrap();
        assert!(p.matches("ERROR: disk full on /"));
        assert!(!p.matches("ERROR: disk is full"));
        assert!(!p.matches("ERROR: disk full ignore"));
        let any = FilterPattern::parse("?WARN ?ERROR").unwrap();
        assert!(any.matches("a WARN"));
        assert!(!any.matches("INFO"));
        assert!(FilterPattern::parse("").unwrap().matches("anything"));
        assert!(FilterPattern::parse("{ $.a = 1 }").is_none());
    }

    #[tokio::test]
    async fn followers_see_new_events() {
        let dir = tempfile::tempdir().unwrap();
        let logs = std::sync::Arc::new(store(dir.path(), LogLimits::default()));
        let start = logs.last_seq();
        let writer = logs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.append("other", "s", 1, &[b"not mine"]);
            writer.append("f", "s", 2, &[b"mine"]);
        });
        let (events, next) = logs.follow("f", start, Duration::from_secs(5)).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].message, "mine");
        let (none, again) = logs.follow("f", next, Duration::from_millis(20)).await;
        assert!(none.is_empty());
        assert_eq!(again, next);
    }
}
