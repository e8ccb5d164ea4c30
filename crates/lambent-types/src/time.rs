//! Timestamps in the string format Lambda's FunctionConfiguration uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a time as `2020-04-10T19:06:32.563+0000`, Lambda's `LastModified` format.
pub fn aws_timestamp(at: SystemTime) -> String {
    let format = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    format_utc(at, format, "1970-01-01T00:00:00.000+0000")
}

/// Formats a time as `2019-11-14T18:16:05.568Z`, the ISO 8601 form of invocation records.
pub fn iso8601_millis(at: SystemTime) -> String {
    let format = ::time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    format_utc(at, format, "1970-01-01T00:00:00.000Z")
}

/// [`iso8601_millis`] of a time given as milliseconds since the epoch (negative: the epoch).
pub fn iso8601_epoch_millis(ms: i64) -> String {
    iso8601_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

fn format_utc(
    at: SystemTime,
    format: &[::time::format_description::BorrowedFormatItem<'_>],
    fallback: &str,
) -> String {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0);
    let datetime = ::time::OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    datetime
        .format(format)
        .unwrap_or_else(|_| fallback.to_string())
}

/// Milliseconds since the Unix epoch.
pub fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_lambda() {
        let at = UNIX_EPOCH + Duration::from_millis(1_586_545_592_563);
        assert_eq!(aws_timestamp(at), "2020-04-10T19:06:32.563+0000");
        assert_eq!(aws_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000+0000");
        assert_eq!(iso8601_millis(at), "2020-04-10T19:06:32.563Z");
        assert_eq!(
            iso8601_epoch_millis(1_586_545_592_563),
            "2020-04-10T19:06:32.563Z"
        );
    }
}
