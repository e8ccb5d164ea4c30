//! Capture of an environment's stdout and stderr: each line goes to the platform log, and
//! the current invocation's recent output is kept for `X-Amz-Log-Type: Tail`.

use std::sync::Mutex;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// How many bytes of log a Tail request returns.
pub const TAIL_BYTES: usize = 4096;
/// How much recent output is kept per environment before older bytes are dropped.
const KEEP_BYTES: usize = 4 * TAIL_BYTES;

/// The recent log of one environment.
#[derive(Debug, Default)]
pub struct LogCapture {
    recent: Mutex<Vec<u8>>,
}

impl LogCapture {
    /// Appends bytes (output of the function, or a platform line such as START).
    pub fn append(&self, bytes: &[u8]) {
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
        capture.append(&buf[..n]);
        partial.extend_from_slice(&buf[..n]);
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            emit(&label, &line[..line.len() - 1]);
        }
        if partial.len() > 8192 {
            emit(&label, &partial);
            partial.clear();
        }
    }
    if !partial.is_empty() {
        emit(&label, &partial);
    }
}

fn emit(label: &str, line: &[u8]) {
    tracing::info!(target: "lambent::function", function = label, "{}", String::from_utf8_lossy(line).trim_end_matches('\r'));
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
