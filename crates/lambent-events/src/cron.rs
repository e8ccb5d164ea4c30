//! EventBridge schedule expressions: `rate(…)`, `cron(…)` and `at(…)`, evaluated in an IANA
//! time zone, and the computation of their next firing instant.
//!
//! The syntax follows Amazon EventBridge (rules and Scheduler):
//!
//! - `rate(value unit)`: `value` is a positive integer and `unit` one of `minute`, `hour`,
//!   `day` when `value` is 1, or `minutes`, `hours`, `days` otherwise. A rate schedule fires at
//!   its anchor (the schedule's start or creation time) and then every `value` units, counted in
//!   elapsed seconds: a day is always 86 400 s and time zones play no part.
//! - `cron(minutes hours day-of-month month day-of-week year)`: the six fields of the
//!   EventBridge cron reference, with the wildcards that reference allows per field:
//!
//!   | field        | values               | wildcards          |
//!   |--------------|----------------------|--------------------|
//!   | minutes      | 0-59                 | `, - * /`          |
//!   | hours        | 0-23                 | `, - * /`          |
//!   | day-of-month | 1-31                 | `, - * ? / L W`    |
//!   | month        | 1-12 or JAN-DEC      | `, - * /`          |
//!   | day-of-week  | 1-7 or SUN-SAT       | `, - * ? L #`      |
//!   | year         | 1970-2199            | `, - * /`          |
//!
//!   Exactly one of day-of-month and day-of-week is `?`. `a/n` means `a, a+n, …` up to the
//!   field's maximum, `a-b/n` steps through the range, `*/n` starts at the minimum. A range
//!   whose start exceeds its end wraps around (`FRI-MON`, `22-2`), except in the year field.
//!   Names are case-insensitive. In day-of-month, `L` is the last day of the month, `LW` its
//!   last weekday (Monday to Friday), and `nW` the weekday nearest day `n` without leaving the
//!   month (a Saturday 1st moves to Monday the 3rd, a Sunday last day to the Friday before);
//!   `nW` never fires in a month shorter than `n` days, just as a plain `n` does not. In
//!   day-of-week, `L` alone is the last day of the week (7, Saturday), `nL` the last day `n`
//!   of the month (`6L`: last Friday) and `n#k` the `k`-th (1-5) day `n` of the month (`3#2`:
//!   second Tuesday). `L`, `LW`, `nW`, `nL` and `n#k` stand alone in their field: no lists or
//!   ranges with them.
//! - `at(yyyy-mm-ddThh:mm:ss)`: one firing at that local time (EventBridge Scheduler).
//!
//! # Time zones and daylight saving time
//!
//! `cron` and `at` are evaluated in the schedule's IANA time zone (UTC by default), on the
//! local wall clock. Around daylight-saving transitions this module does what EventBridge
//! Scheduler documents ("Amazon EventBridge Scheduler automatically adjusts your schedule for
//! Daylight Saving Time. When the time shifts forward in Spring, your schedule invocation gets
//! skipped if the cron expression falls on a non-existent date and time. When the time shifts
//! back in the Fall, your schedule runs only once and doesn't repeat its invocation."):
//!
//! - a local time that does not exist (in the spring-forward gap) is skipped: `cron(30 2 * * ?
//!   *)` in `America/New_York` does not fire on the day clocks jump from 02:00 to 03:00;
//! - a local time that occurs twice (in the fall-back overlap) fires once, at its first
//!   occurrence (the one in daylight time). This holds for every matching minute: during the
//!   repeated hour a `cron(0/15 * * * ? *)` fires only in the first pass.
//!
//! An `at(…)` naming a local time that does not exist in its zone is rejected when parsed; one
//! naming a repeated local time fires at the first occurrence.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

/// First year a cron year field may name.
const MIN_YEAR: i32 = 1970;
/// Last year a cron year field may name.
const MAX_YEAR: i32 = 2199;
/// Seconds in a civil day.
const DAY: i64 = 86_400;

/// Why a schedule expression or its time zone was rejected.
///
/// The `Display` text is a complete sentence fit to return to an API user: it names the
/// offending field or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is not a valid `rate(…)`, `cron(…)` or `at(…)` expression.
    #[error("{0}")]
    InvalidExpression(String),
    /// The time zone is not a known IANA time zone name.
    #[error("Invalid time zone: {0} is not a known IANA time zone name")]
    UnknownTimeZone(String),
}

/// The kind of a [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// `rate(value unit)`: recurring at a fixed interval from an anchor instant.
    Rate,
    /// `cron(…)`: recurring at wall-clock times in the schedule's time zone.
    Cron,
    /// `at(…)`: a single firing.
    At,
}

/// A parsed schedule expression together with the time zone it is evaluated in.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    expression: String,
    zone_name: String,
    tz: TimeZone,
    spec: Spec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    /// Interval in seconds, always positive.
    Rate(i64),
    Cron(Box<Cron>),
    /// The firing instant, Unix seconds.
    At(i64),
}

impl Schedule {
    /// Parses `rate(…)`, `cron(…)` or `at(…)` in time zone `zone` (an IANA name such as
    /// `America/New_York`; `None` means UTC).
    ///
    /// The error's text is fit to return to an API user and names the offending field or
    /// value, e.g. "Invalid cron expression: day-of-month and day-of-week cannot both be
    /// specified; use ? in one of them".
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let (tz, zone_name) = resolve_zone(zone)?;
        let trimmed = expression.trim();
        let Some(open) = trimmed.find('(') else {
            return Err(invalid_kind(trimmed));
        };
        let keyword = trimmed[..open].trim_end();
        let Some(body) = trimmed[open + 1..].strip_suffix(')') else {
            return Err(invalid_kind(trimmed));
        };
        let tokens: Vec<&str> = body.split_whitespace().collect();
        let spec = match keyword {
            "rate" => Spec::Rate(parse_rate(&tokens)?),
            "cron" => Spec::Cron(Box::new(parse_cron(&tokens)?)),
            "at" => Spec::At(parse_at(&tokens, &tz, &zone_name)?),
            _ => return Err(invalid_kind(trimmed)),
        };
        Ok(Schedule {
            expression: format!("{keyword}({})", tokens.join(" ")),
            zone_name,
            tz,
            spec,
        })
    }

    /// The first firing strictly after `after` (Unix seconds).
    ///
    /// A rate schedule fires at `anchor` (its start or creation time, Unix seconds) and then
    /// every interval; `cron` and `at` schedules ignore `anchor`. `cron` firings fall on whole
    /// local minutes, `at` firings on the given second. Returns `None` when the schedule fires
    /// no more: an `at` at or before `after`, a cron whose years have all passed or whose
    /// day constraints can never be met, or an instant beyond what `i64` holds.
    pub fn next_after(&self, after: i64, anchor: i64) -> Option<i64> {
        match &self.spec {
            Spec::Rate(period) => next_rate(*period, after, anchor),
            Spec::At(instant) => (*instant > after).then_some(*instant),
            Spec::Cron(cron) => self.next_cron(cron, after),
        }
    }

    /// The expression as given, with surrounding whitespace removed and inner runs of
    /// whitespace collapsed to one space, e.g. `cron(0 10 * * ? *)`.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the time zone the schedule is evaluated in (`UTC` by default).
    pub fn zone(&self) -> &str {
        &self.zone_name
    }

    /// Whether this is a rate, cron or one-time (`at`) schedule.
    pub fn kind(&self) -> ScheduleKind {
        match self.spec {
            Spec::Rate(_) => ScheduleKind::Rate,
            Spec::Cron(_) => ScheduleKind::Cron,
            Spec::At(_) => ScheduleKind::At,
        }
    }

    fn next_cron(&self, cron: &Cron, after: i64) -> Option<i64> {
        // Start the day scan one local day before `after`'s local date: around a fall-back
        // transition that crosses midnight a candidate of the previous date can still lie after
        // `after`. Candidates at or before `after` are skipped below.
        let lowest = days_from_civil(MIN_YEAR, 1, 1) * DAY - 2 * DAY;
        let highest = days_from_civil(MAX_YEAR + 1, 1, 1) * DAY + 2 * DAY;
        if after >= highest {
            return None;
        }
        let probe = Timestamp::from_second(after.max(lowest)).ok()?;
        let local = self.tz.to_datetime(probe);
        let start_days = days_from_civil(
            i32::from(local.year()),
            i32::from(local.month()),
            i32::from(local.day()),
        ) - 1;
        let (sy, sm, sd) = civil_from_days(start_days);

        for year in sy.max(MIN_YEAR)..=MAX_YEAR {
            if !cron.years.get(year - MIN_YEAR) {
                continue;
            }
            for month in 1..=12 {
                if !cron.months.get(month - 1) || (year, month) < (sy, sm) {
                    continue;
                }
                let dim = days_in_month(year, month);
                let first = if (year, month) == (sy, sm) { sd } else { 1 };
                for day in first..=dim {
                    if !cron.days.matches(year, month, day, dim) {
                        continue;
                    }
                    for hour in 0..24 {
                        if !cron.hours.get(hour) {
                            continue;
                        }
                        for minute in 0..60 {
                            if !cron.minutes.get(minute) {
                                continue;
                            }
                            if let Some(t) =
                                local_to_instant(&self.tz, year, month, day, hour, minute, 0)
                                && t > after
                            {
                                return Some(t);
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

/// Looks the zone up in the IANA database (bundled into the binary, or the system's).
fn resolve_zone(zone: Option<&str>) -> Result<(TimeZone, String), ScheduleError> {
    let Some(name) = zone else {
        return Ok((TimeZone::UTC, "UTC".to_owned()));
    };
    let name = name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ScheduleError::UnknownTimeZone(shown(name)));
    }
    match jiff::tz::db().get(name) {
        Ok(tz) => {
            let canonical = tz.iana_name().unwrap_or(name).to_owned();
            Ok((tz, canonical))
        }
        Err(_) => Err(ScheduleError::UnknownTimeZone(shown(name))),
    }
}

fn invalid_kind(expression: &str) -> ScheduleError {
    ScheduleError::InvalidExpression(format!(
        "Invalid schedule expression: {} is not of the form rate(value unit), \
         cron(minutes hours day-of-month month day-of-week year) or at(yyyy-mm-ddThh:mm:ss)",
        shown(expression)
    ))
}

/// A user-supplied string quoted for an error message, cut short when long.
fn shown(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

// ---------------------------------------------------------------------------------------------
// rate(…)

fn rate_error(detail: &str) -> ScheduleError {
    ScheduleError::InvalidExpression(format!("Invalid rate expression: {detail}"))
}

/// Parses the inside of `rate(…)` into an interval in seconds.
fn parse_rate(tokens: &[&str]) -> Result<i64, ScheduleError> {
    let [value, unit] = tokens else {
        return Err(rate_error(
            "expected rate(value unit), e.g. rate(5 minutes) or rate(1 hour)",
        ));
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(rate_error(&format!(
            "value {} must be a positive integer",
            shown(value)
        )));
    }
    let Ok(count) = value.parse::<u64>() else {
        return Err(rate_error(&format!("value {} is too large", shown(value))));
    };
    if count == 0 {
        return Err(rate_error("value must be a positive integer, not 0"));
    }
    let (seconds, singular, plural): (u64, &str, &str) = match *unit {
        "minute" | "minutes" => (60, "minute", "minutes"),
        "hour" | "hours" => (3_600, "hour", "hours"),
        "day" | "days" => (86_400, "day", "days"),
        _ => {
            return Err(rate_error(&format!(
                "unit {} must be one of minute, minutes, hour, hours, day, days",
                shown(unit)
            )));
        }
    };
    if count == 1 && *unit != singular {
        return Err(rate_error(&format!(
            "use the singular unit when the value is 1: rate(1 {singular})"
        )));
    }
    if count != 1 && *unit != plural {
        return Err(rate_error(&format!(
            "use the plural unit when the value is not 1: rate({count} {plural})"
        )));
    }
    count
        .checked_mul(seconds)
        .and_then(|s| i64::try_from(s).ok())
        .ok_or_else(|| rate_error(&format!("value {count} is too large")))
}

/// The first `anchor + k * period` (k ≥ 0) strictly after `after`.
fn next_rate(period: i64, after: i64, anchor: i64) -> Option<i64> {
    if after < anchor {
        return Some(anchor);
    }
    let (after, anchor, period) = (i128::from(after), i128::from(anchor), i128::from(period));
    let steps = (after - anchor) / period + 1;
    i64::try_from(anchor + steps * period).ok()
}

// ---------------------------------------------------------------------------------------------
// at(…)

fn at_error(detail: &str) -> ScheduleError {
    ScheduleError::InvalidExpression(format!("Invalid at expression: {detail}"))
}

/// Parses the inside of `at(…)` into the firing instant.
fn parse_at(tokens: &[&str], tz: &TimeZone, zone: &str) -> Result<i64, ScheduleError> {
    let [text] = tokens else {
        return Err(at_error(
            "expected at(yyyy-mm-ddThh:mm:ss), e.g. at(2030-01-31T18:30:00)",
        ));
    };
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(at_error(&format!(
            "{} is not of the form yyyy-mm-ddThh:mm:ss",
            shown(text)
        )));
    }
    let number = |range: std::ops::Range<usize>| -> i32 {
        bytes[range]
            .iter()
            .fold(0, |acc, b| acc * 10 + i32::from(b - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(at_error(&format!(
            "{} is not a valid date and time",
            shown(text)
        )));
    }
    local_to_instant(tz, year, month, day, hour, minute, second).ok_or_else(|| {
        at_error(&format!(
            "{text} does not exist in time zone {zone} (it falls in a daylight saving time gap)"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// cron(…)

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    /// Bit `m` set when minute `m` matches.
    minutes: Bits,
    /// Bit `h` set when hour `h` matches.
    hours: Bits,
    /// Bit `m - 1` set when month `m` matches.
    months: Bits,
    /// Bit `y - 1970` set when year `y` matches.
    years: Bits,
    days: DayRule,
}

/// A set of small non-negative integers (below 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bits([u64; 4]);

impl Bits {
    fn set(&mut self, index: u32) {
        if let Some(word) = self.0.get_mut((index / 64) as usize) {
            *word |= 1 << (index % 64);
        }
    }

    fn get(&self, index: i32) -> bool {
        u32::try_from(index)
            .ok()
            .and_then(|i| {
                self.0
                    .get((i / 64) as usize)
                    .map(|w| w >> (i % 64) & 1 == 1)
            })
            .unwrap_or(false)
    }
}

/// The day constraint: exactly one of day-of-month and day-of-week is specified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DayRule {
    /// Day-of-month values; bit `d - 1` for day `d`. Day-of-week is `?`.
    MonthDays(Bits),
    /// `L`: the last day of the month.
    LastDay,
    /// `LW`: the last Monday-to-Friday day of the month.
    LastWeekday,
    /// `nW`: the Monday-to-Friday day nearest day `n`, within the month.
    NearestWeekday(i32),
    /// Day-of-week values; bit `d - 1` for day `d` (1 = Sunday). Day-of-month is `?`.
    WeekDays(Bits),
    /// `nL`: the last day `n` (1 = Sunday) of the month.
    LastOfMonth(i32),
    /// `n#k`: the `k`-th day `n` (1 = Sunday) of the month.
    Nth(i32, i32),
}

impl DayRule {
    fn matches(&self, year: i32, month: i32, day: i32, dim: i32) -> bool {
        match *self {
            DayRule::MonthDays(bits) => bits.get(day - 1),
            DayRule::LastDay => day == dim,
            DayRule::LastWeekday => day == nearest_weekday(year, month, dim, dim),
            DayRule::NearestWeekday(n) => n <= dim && day == nearest_weekday(year, month, n, dim),
            DayRule::WeekDays(bits) => bits.get(weekday(year, month, day) - 1),
            DayRule::LastOfMonth(wd) => weekday(year, month, day) == wd && day + 7 > dim,
            DayRule::Nth(wd, k) => weekday(year, month, day) == wd && (day - 1) / 7 + 1 == k,
        }
    }
}

/// The Monday-to-Friday day nearest day `n` of the month, not leaving the month.
fn nearest_weekday(year: i32, month: i32, n: i32, dim: i32) -> i32 {
    match weekday(year, month, n) {
        7 if n == 1 => 3,       // Saturday the 1st: Monday the 3rd.
        7 => n - 1,             // Saturday: the Friday before.
        1 if n == dim => n - 2, // Sunday the last day: the Friday before.
        1 => n + 1,             // Sunday: the Monday after.
        _ => n,
    }
}

fn cron_error(detail: &str) -> ScheduleError {
    ScheduleError::InvalidExpression(format!("Invalid cron expression: {detail}"))
}

/// A cron field's name, range and allowed syntax.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, …; empty when the field takes numbers only.
    names: &'static [&'static str],
    /// Whether `a-b` with `a > b` wraps around the field's maximum.
    wrap: bool,
    /// Whether `/` is allowed.
    step: bool,
}

const MINUTES: Field = Field {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
    wrap: true,
    step: true,
};
const HOURS: Field = Field {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
    wrap: true,
    step: true,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    wrap: true,
    step: true,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    wrap: true,
    step: true,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    wrap: true,
    step: false,
};
const YEAR: Field = Field {
    name: "year",
    min: MIN_YEAR as u32,
    max: MAX_YEAR as u32,
    names: &[],
    wrap: false,
    step: true,
};

/// Parses the six whitespace-separated fields inside `cron(…)`.
fn parse_cron(tokens: &[&str]) -> Result<Cron, ScheduleError> {
    let [minutes, hours, dom, month, dow, year] = tokens else {
        return Err(cron_error(&format!(
            "expected 6 fields (minutes hours day-of-month month day-of-week year), found {}",
            tokens.len()
        )));
    };
    let minutes = parse_list(minutes, &MINUTES).map_err(|e| cron_error(&e))?;
    let hours = parse_list(hours, &HOURS).map_err(|e| cron_error(&e))?;
    let months = parse_list(month, &MONTH).map_err(|e| cron_error(&e))?;
    let years = parse_list(year, &YEAR).map_err(|e| cron_error(&e))?;
    let dom = parse_day_of_month(dom).map_err(|e| cron_error(&e))?;
    let dow = parse_day_of_week(dow).map_err(|e| cron_error(&e))?;
    let days = match (dom, dow) {
        (Some(days), None) | (None, Some(days)) => days,
        (Some(_), Some(_)) => {
            return Err(cron_error(
                "day-of-month and day-of-week cannot both be specified; use ? in one of them",
            ));
        }
        (None, None) => {
            return Err(cron_error(
                "day-of-month and day-of-week cannot both be ?; specify one of them and use ? \
                 in the other",
            ));
        }
    };
    Ok(Cron {
        minutes,
        hours,
        months,
        years,
        days,
    })
}

/// Parses the day-of-month field; `None` for `?`.
fn parse_day_of_month(text: &str) -> Result<Option<DayRule>, String> {
    if text == "?" {
        return Ok(None);
    }
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        return Ok(Some(DayRule::LastDay));
    }
    if upper == "LW" {
        return Ok(Some(DayRule::LastWeekday));
    }
    if let Some(day) = upper.strip_suffix('W')
        && !day.is_empty()
        && day.bytes().all(|b| b.is_ascii_digit())
    {
        let day = field_value(day, &DAY_OF_MONTH)?;
        return Ok(Some(DayRule::NearestWeekday(day as i32)));
    }
    if upper.contains(['L', 'W']) {
        return Err(format!(
            "day-of-month {} is invalid: L, LW and W (as in 15W) must stand alone in the field",
            shown(text)
        ));
    }
    if text.contains('?') {
        return Err(format!(
            "day-of-month {} is invalid: ? must stand alone in the field",
            shown(text)
        ));
    }
    parse_list(text, &DAY_OF_MONTH).map(|bits| Some(DayRule::MonthDays(bits)))
}

/// Parses the day-of-week field; `None` for `?`.
fn parse_day_of_week(text: &str) -> Result<Option<DayRule>, String> {
    if text == "?" {
        return Ok(None);
    }
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        let mut bits = Bits::default();
        bits.set(7 - DAY_OF_WEEK.min);
        return Ok(Some(DayRule::WeekDays(bits)));
    }
    let alone = !upper.contains([',', '-', '/', '*', '?']);
    if let Some((day, nth)) = upper.split_once('#') {
        if !alone {
            return Err(format!(
                "day-of-week {} is invalid: with #, the field holds a single expression such as 3#2",
                shown(text)
            ));
        }
        let day = field_value(day, &DAY_OF_WEEK)?;
        let nth = match nth.parse::<u8>() {
            Ok(k @ 1..=5) if nth.bytes().all(|b| b.is_ascii_digit()) => i32::from(k),
            _ => {
                return Err(format!(
                    "day-of-week {}: the number after # must be 1 to 5",
                    shown(text)
                ));
            }
        };
        return Ok(Some(DayRule::Nth(day as i32, nth)));
    }
    if let Some(day) = upper.strip_suffix('L') {
        if !alone {
            return Err(format!(
                "day-of-week {} is invalid: L must stand alone in the field, as L or as 6L",
                shown(text)
            ));
        }
        let day = field_value(day, &DAY_OF_WEEK)?;
        return Ok(Some(DayRule::LastOfMonth(day as i32)));
    }
    if upper.contains('L') {
        return Err(format!(
            "day-of-week {} is invalid: L must stand alone in the field, as L or as 6L",
            shown(text)
        ));
    }
    if text.contains('?') {
        return Err(format!(
            "day-of-week {} is invalid: ? must stand alone in the field",
            shown(text)
        ));
    }
    parse_list(text, &DAY_OF_WEEK).map(|bits| Some(DayRule::WeekDays(bits)))
}

/// Parses a comma-separated list of `*`, values, ranges and steps; bit `v - field.min` is set
/// for every matching value `v`.
fn parse_list(text: &str, field: &Field) -> Result<Bits, String> {
    let mut bits = Bits::default();
    for item in text.split(',') {
        parse_item(item, field, &mut bits)?;
    }
    Ok(bits)
}

fn parse_item(item: &str, field: &Field, bits: &mut Bits) -> Result<(), String> {
    let name = field.name;
    if item.is_empty() {
        return Err(format!("{name} field has an empty list element"));
    }
    let span = field.max - field.min + 1;
    let (base, step) = match item.split_once('/') {
        None => (item, None),
        Some(_) if !field.step => {
            return Err(format!(
                "{name} {}: the / wildcard is not allowed in the {name} field",
                shown(item)
            ));
        }
        Some((base, step)) => {
            let valid =
                !step.is_empty() && step.len() <= 4 && step.bytes().all(|b| b.is_ascii_digit());
            match step.parse::<u32>() {
                Ok(n) if valid && (1..=span).contains(&n) => (base, Some(n)),
                _ => {
                    return Err(format!(
                        "{name} {}: the increment after / must be a number from 1 to {span}",
                        shown(item)
                    ));
                }
            }
        }
    };
    let (start, end) = if base == "*" {
        (field.min, field.max)
    } else if let Some((a, b)) = base.split_once('-') {
        let (a, b) = (field_value(a, field)?, field_value(b, field)?);
        if a > b && !field.wrap {
            return Err(format!(
                "{name} range {}: the start must not be after the end",
                shown(base)
            ));
        }
        (a, b)
    } else {
        let a = field_value(base, field)?;
        if step.is_some() {
            (a, field.max)
        } else {
            (a, a)
        }
    };
    // Walk the (possibly wrapping) range from `start` to `end`, every `step`-th value.
    let length = if start <= end {
        end - start + 1
    } else {
        (field.max - start + 1) + (end - field.min + 1)
    };
    let step = step.unwrap_or(1);
    let mut offset = 0;
    while offset < length {
        bits.set((start - field.min + offset) % span);
        offset += step;
    }
    Ok(())
}

/// One value of a field: a number within the field's range, or a name where the field has
/// names (case-insensitive).
fn field_value(text: &str, field: &Field) -> Result<u32, String> {
    let name = field.name;
    if text.is_empty() {
        return Err(format!("{name} field has an empty value"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let value = if text.len() > 9 {
            None
        } else {
            text.parse::<u32>().ok()
        };
        return match value {
            Some(v) if (field.min..=field.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{name} value {text} is out of range {}-{}",
                field.min, field.max
            )),
        };
    }
    if let Some(index) = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
    {
        return Ok(field.min + index as u32);
    }
    let expected = match field.names {
        [] => format!("a number from {} to {}", field.min, field.max),
        [first, .., last] => format!(
            "a number from {} to {} or a name {first}-{last}",
            field.min, field.max
        ),
        [only] => format!("a number or {only}"),
    };
    Err(format!(
        "{name} value {} is invalid: expected {expected}",
        shown(text)
    ))
}

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic (proleptic Gregorian) and the local-time policy.

/// Days since 1970-01-01 of a civil date (month 1-12, day 1-31).
fn days_from_civil(year: i32, month: i32, day: i32) -> i64 {
    let y = i64::from(if month <= 2 { year - 1 } else { year });
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i32, i32, i32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as i32, day as i32)
}

fn is_leap_year(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: i32) -> i32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week, 1 = Sunday … 7 = Saturday.
fn weekday(year: i32, month: i32, day: i32) -> i32 {
    // 1970-01-01 was a Thursday (5).
    ((days_from_civil(year, month, day) + 4).rem_euclid(7) + 1) as i32
}

/// The instant (Unix seconds) of a local wall-clock time in `tz`: `None` when that local time
/// does not exist (a daylight-saving gap), the earlier instant when it occurs twice (a fold).
fn local_to_instant(
    tz: &TimeZone,
    year: i32,
    month: i32,
    day: i32,
    hour: i32,
    minute: i32,
    second: i32,
) -> Option<i64> {
    let small = |v: i32| i8::try_from(v).ok();
    let dt = DateTime::new(
        i16::try_from(year).ok()?,
        small(month)?,
        small(day)?,
        small(hour)?,
        small(minute)?,
        small(second)?,
        0,
    )
    .ok()?;
    let local = days_from_civil(year, month, day) * DAY
        + i64::from(hour) * 3_600
        + i64::from(minute) * 60
        + i64::from(second);
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => Some(local - i64::from(offset.seconds())),
        AmbiguousOffset::Gap { .. } => None,
        AmbiguousOffset::Fold { before, after } => {
            Some((local - i64::from(before.seconds())).min(local - i64::from(after.seconds())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Unix seconds of a UTC civil time.
    fn utc(year: i32, month: i32, day: i32, hour: i32, minute: i32) -> i64 {
        days_from_civil(year, month, day) * DAY + i64::from(hour) * 3_600 + i64::from(minute) * 60
    }

    /// Unix seconds of a local civil time at a fixed UTC offset in hours (may be fractional).
    fn at_offset(year: i32, month: i32, day: i32, hour: i32, minute: i32, offset_h: f64) -> i64 {
        utc(year, month, day, hour, minute) - (offset_h * 3_600.0) as i64
    }

    fn parse(expression: &str, zone: Option<&str>) -> Schedule {
        match Schedule::parse(expression, zone) {
            Ok(s) => s,
            Err(e) => panic!("{expression} in {zone:?} should parse: {e}"),
        }
    }

    fn error(expression: &str, zone: Option<&str>) -> String {
        match Schedule::parse(expression, zone) {
            Ok(s) => panic!("{expression} should be rejected, parsed as {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The next `n` firings after `after`.
    fn firings(schedule: &Schedule, mut after: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for _ in 0..n {
            match schedule.next_after(after, 0) {
                Some(t) => {
                    out.push(t);
                    after = t;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn parses_aws_documentation_examples() {
        for expression in [
            "cron(0 10 * * ? *)",
            "cron(15 12 * * ? *)",
            "cron(0 18 ? * MON-FRI *)",
            "cron(0 8 1 * ? *)",
            "cron(0/15 * * * ? *)",
            "cron(0/10 * ? * MON-FRI *)",
            "cron(0/5 8-17 ? * MON-FRI *)",
            "cron(0 9 ? * 2#1 *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 ? * 6L *)",
            "cron(0 0 15W * ? *)",
            "cron(0 0 LW * ? *)",
            "cron(0 0 ? * L *)",
            "cron(0 12 ? JAN,FEB,MAR mon-fri 2024-2030)",
            "cron(*/5 22-2 ? * FRI-MON *)",
            "cron(0 0 1/5 * ? 2000/10)",
            "cron(0 0 ? * fri#3 *)",
            "rate(5 minutes)",
            "rate(1 hour)",
            "rate(1 minute)",
            "rate(1 day)",
            "rate(12 hours)",
            "rate(7 days)",
            "at(2030-01-31T18:30:00)",
        ] {
            let schedule = parse(expression, None);
            assert_eq!(schedule.expression(), expression);
            assert_eq!(schedule.zone(), "UTC");
        }
    }

    #[test]
    fn normalizes_whitespace_and_resolves_zones() {
        let s = parse("  cron( 0   10 * *\t? * )  ", Some("America/New_York"));
        assert_eq!(s.expression(), "cron(0 10 * * ? *)");
        assert_eq!(s.zone(), "America/New_York");
        assert_eq!(s.kind(), ScheduleKind::Cron);
        assert_eq!(
            parse("rate(5  minutes)", None).expression(),
            "rate(5 minutes)"
        );
        assert_eq!(parse("rate(5 minutes)", None).kind(), ScheduleKind::Rate);
        assert_eq!(
            parse("at(2030-01-01T00:00:00)", None).kind(),
            ScheduleKind::At
        );
        assert_eq!(parse("rate(1 day)", Some("UTC")).zone(), "UTC");
        assert_eq!(
            parse("rate(1 day)", Some("Asia/Kolkata")).zone(),
            "Asia/Kolkata"
        );
        assert_eq!(parse("rate(1 day)", None), parse("rate(1 day)", None));
    }

    #[test]
    fn rejects_malformed_expressions_with_clear_errors() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("cron(0 10 * * ?)", None, "expected 6 fields"),
            ("cron(0 10 * * ? * *)", None, "found 7"),
            ("cron()", None, "found 0"),
            (
                "cron(60 10 * * ? *)",
                None,
                "minutes value 60 is out of range 0-59",
            ),
            (
                "cron(0 24 * * ? *)",
                None,
                "hours value 24 is out of range 0-23",
            ),
            (
                "cron(0 0 32 * ? *)",
                None,
                "day-of-month value 32 is out of range 1-31",
            ),
            (
                "cron(0 0 0 * ? *)",
                None,
                "day-of-month value 0 is out of range 1-31",
            ),
            (
                "cron(0 0 1 13 ? *)",
                None,
                "month value 13 is out of range 1-12",
            ),
            (
                "cron(0 0 ? * 8 *)",
                None,
                "day-of-week value 8 is out of range 1-7",
            ),
            (
                "cron(0 0 ? * 0 *)",
                None,
                "day-of-week value 0 is out of range 1-7",
            ),
            (
                "cron(0 0 1 * ? 1969)",
                None,
                "year value 1969 is out of range 1970-2199",
            ),
            (
                "cron(0 0 1 * ? 2200)",
                None,
                "year value 2200 is out of range 1970-2199",
            ),
            (
                "cron(0 0 1 * ? 2030-2020)",
                None,
                "year range \"2030-2020\"",
            ),
            (
                "cron(0 0 * * * *)",
                None,
                "day-of-month and day-of-week cannot both be specified; use ? in one of them",
            ),
            (
                "cron(0 0 1 * MON *)",
                None,
                "day-of-month and day-of-week cannot both be specified",
            ),
            ("cron(0 0 ? * ? *)", None, "cannot both be ?"),
            ("cron(? 0 * * ? *)", None, "minutes value \"?\" is invalid"),
            (
                "cron(0 0 1 FOO ? *)",
                None,
                "month value \"FOO\" is invalid",
            ),
            (
                "cron(0 0 ? * MON-FUN *)",
                None,
                "day-of-week value \"FUN\" is invalid",
            ),
            (
                "cron(0/0 0 * * ? *)",
                None,
                "increment after / must be a number from 1 to 60",
            ),
            ("cron(0/61 0 * * ? *)", None, "from 1 to 60"),
            (
                "cron(0 0 ? * 1/2 *)",
                None,
                "the / wildcard is not allowed in the day-of-week",
            ),
            (
                "cron(0 0 ? * 3#1,6#3 *)",
                None,
                "with #, the field holds a single expression",
            ),
            (
                "cron(0 0 ? * 3#6 *)",
                None,
                "the number after # must be 1 to 5",
            ),
            (
                "cron(0 0 ? * 3#0 *)",
                None,
                "the number after # must be 1 to 5",
            ),
            ("cron(0 0 ? * 1,6L *)", None, "L must stand alone"),
            ("cron(0 0 L,5 * ? *)", None, "must stand alone in the field"),
            (
                "cron(0 0 1-15W * ? *)",
                None,
                "must stand alone in the field",
            ),
            (
                "cron(0 0 32W * ? *)",
                None,
                "day-of-month value 32 is out of range",
            ),
            ("cron(0 0 1,,2 * ? *)", None, "empty list element"),
            (
                "cron(0 0 -1 * ? *)",
                None,
                "day-of-month field has an empty value",
            ),
            ("cron(0 0 99999999999 * ? *)", None, "out of range 1-31"),
            (
                "rate(0 minutes)",
                None,
                "value must be a positive integer, not 0",
            ),
            (
                "rate(1 minutes)",
                None,
                "use the singular unit when the value is 1: rate(1 minute)",
            ),
            ("rate(1 hours)", None, "rate(1 hour)"),
            (
                "rate(5 minute)",
                None,
                "use the plural unit when the value is not 1: rate(5 minutes)",
            ),
            ("rate(2 day)", None, "rate(2 days)"),
            (
                "rate(5 weeks)",
                None,
                "unit \"weeks\" must be one of minute",
            ),
            (
                "rate(-5 minutes)",
                None,
                "value \"-5\" must be a positive integer",
            ),
            ("rate(5)", None, "expected rate(value unit)"),
            ("rate(99999999999999999999999 minutes)", None, "too large"),
            ("rate(999999999999999999 days)", None, "too large"),
            (
                "at(2030-02-30T00:00:00)",
                None,
                "is not a valid date and time",
            ),
            (
                "at(2030-01-01 00:00:00)",
                None,
                "expected at(yyyy-mm-ddThh:mm:ss)",
            ),
            (
                "at(2030-1-01T00:00:00)",
                None,
                "is not of the form yyyy-mm-ddThh:mm:ss",
            ),
            (
                "at(2030-01-01T24:00:00)",
                None,
                "is not a valid date and time",
            ),
            (
                "at(2024-03-10T02:30:00)",
                Some("America/New_York"),
                "does not exist in time zone America/New_York",
            ),
            ("every 5 minutes", None, "Invalid schedule expression"),
            ("cron 0 10 * * ? *", None, "Invalid schedule expression"),
            ("weekly(1)", None, "Invalid schedule expression"),
            ("", None, "Invalid schedule expression"),
            ("rate(5 minutes", None, "Invalid schedule expression"),
            (
                "rate(5 minutes) ",
                Some("Mars/Olympus_Mons"),
                "Invalid time zone: \"Mars/Olympus_Mons\"",
            ),
            ("rate(5 minutes)", Some(""), "Invalid time zone"),
        ];
        for (expression, zone, expected) in cases {
            let message = error(expression, *zone);
            assert!(
                message.contains(expected),
                "{expression}: message {message:?} should contain {expected:?}"
            );
        }
        assert!(error("cron(60 10 * * ? *)", None).starts_with("Invalid cron expression: "));
        assert!(error("rate(0 minutes)", None).starts_with("Invalid rate expression: "));
        assert!(error("at(x)", None).starts_with("Invalid at expression: "));
        assert!(matches!(
            Schedule::parse("rate(1 day)", Some("Nowhere/Special")),
            Err(ScheduleError::UnknownTimeZone(_))
        ));
        let long = "x".repeat(10_000);
        assert!(
            error(&long, None).len() < 400,
            "long input is cut short in messages"
        );
    }

    #[test]
    fn rate_fires_from_the_anchor() {
        let s = parse("rate(5 minutes)", None);
        assert_eq!(s.next_after(999, 1_000), Some(1_000));
        assert_eq!(s.next_after(-1_000_000, 1_000), Some(1_000));
        assert_eq!(s.next_after(1_000, 1_000), Some(1_300));
        assert_eq!(s.next_after(1_299, 1_000), Some(1_300));
        assert_eq!(s.next_after(1_300, 1_000), Some(1_600));
        let day = parse("rate(1 day)", Some("America/New_York"));
        // Days are 86 400 s even across a DST change (2024-03-10 in New York).
        let anchor = utc(2024, 3, 9, 12, 0);
        assert_eq!(day.next_after(anchor, anchor), Some(anchor + DAY));
        assert_eq!(day.next_after(anchor + DAY, anchor), Some(anchor + 2 * DAY));
        assert_eq!(
            parse("rate(1 hour)", None).next_after(7_199, 0),
            Some(7_200)
        );
        assert_eq!(
            parse("rate(1 minute)", None).next_after(i64::MAX - 1, 0),
            None
        );
    }

    #[test]
    fn at_fires_once_in_its_zone() {
        let s = parse("at(2024-06-01T12:00:00)", Some("America/New_York"));
        let fire = utc(2024, 6, 1, 16, 0);
        assert_eq!(s.next_after(0, 0), Some(fire));
        assert_eq!(s.next_after(fire - 1, 0), Some(fire));
        assert_eq!(s.next_after(fire, 0), None);
        let utc_at = parse("at(2030-01-31T18:30:15)", None);
        assert_eq!(utc_at.next_after(0, 0), Some(utc(2030, 1, 31, 18, 30) + 15));
        // A repeated local time fires at its first occurrence (EDT, UTC-4).
        let fold = parse("at(2024-11-03T01:30:00)", Some("America/New_York"));
        assert_eq!(fold.next_after(0, 0), Some(utc(2024, 11, 3, 5, 30)));
    }

    #[test]
    fn cron_basic_examples() {
        let start = utc(2024, 1, 1, 0, 0); // A Monday.
        let next = |expr: &str| parse(expr, None).next_after(start, 0);
        assert_eq!(next("cron(0 10 * * ? *)"), Some(utc(2024, 1, 1, 10, 0)));
        assert_eq!(next("cron(15 12 * * ? *)"), Some(utc(2024, 1, 1, 12, 15)));
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)"),
            Some(utc(2024, 1, 1, 18, 0))
        );
        assert_eq!(next("cron(0 8 1 * ? *)"), Some(utc(2024, 1, 1, 8, 0)));
        assert_eq!(next("cron(0/15 * * * ? *)"), Some(utc(2024, 1, 1, 0, 15)));
        assert_eq!(next("cron(0 0 1 * ? *)"), Some(utc(2024, 2, 1, 0, 0)));
        assert_eq!(next("cron(0 0 ? * SAT *)"), Some(utc(2024, 1, 6, 0, 0)));
        assert_eq!(next("cron(0 0 ? * L *)"), Some(utc(2024, 1, 6, 0, 0)));
        assert_eq!(next("cron(0 0 ? * 1 *)"), Some(utc(2024, 1, 7, 0, 0)));
        assert_eq!(next("cron(0 0 ? * FRI-MON *)"), Some(utc(2024, 1, 5, 0, 0)));
        assert_eq!(next("cron(1/10 * * * ? *)"), Some(utc(2024, 1, 1, 0, 1)));
        let evening = parse("cron(30 22-2 * * ? *)", None);
        assert_eq!(
            firings(&evening, start, 5),
            vec![
                utc(2024, 1, 1, 0, 30),
                utc(2024, 1, 1, 1, 30),
                utc(2024, 1, 1, 2, 30),
                utc(2024, 1, 1, 22, 30),
                utc(2024, 1, 1, 23, 30),
            ]
        );
        let business = parse("cron(0/5 8-17 ? * MON-FRI *)", None);
        let fridays_end = utc(2024, 1, 5, 17, 55);
        assert_eq!(
            business.next_after(fridays_end, 0),
            Some(utc(2024, 1, 8, 8, 0))
        );
        let steps = parse("cron(0 0 1/10 * ? *)", None);
        assert_eq!(
            firings(&steps, start, 4),
            vec![
                utc(2024, 1, 11, 0, 0),
                utc(2024, 1, 21, 0, 0),
                utc(2024, 1, 31, 0, 0),
                utc(2024, 2, 1, 0, 0),
            ]
        );
        // Strictly after: a firing instant itself is not returned.
        assert_eq!(
            parse("cron(0 10 * * ? *)", None).next_after(utc(2024, 1, 1, 10, 0), 0),
            Some(utc(2024, 1, 2, 10, 0))
        );
        // Before 1970 the scan starts at the first allowed year.
        assert_eq!(
            parse("cron(0 0 1 1 ? *)", None).next_after(-10_000_000_000, 0),
            Some(0)
        );
    }

    #[test]
    fn cron_year_bounds_and_impossible_dates_end_quickly() {
        let begin = std::time::Instant::now();
        let leap_only = parse("cron(0 0 29 2 ? 2100-2199)", None);
        // 2100 is not a leap year; 2104 is.
        assert_eq!(
            leap_only.next_after(utc(2024, 1, 1, 0, 0), 0),
            Some(utc(2104, 2, 29, 0, 0))
        );
        assert_eq!(leap_only.next_after(utc(2196, 2, 29, 0, 0), 0), None);
        assert_eq!(parse("cron(0 0 30 2 ? *)", None).next_after(0, 0), None);
        assert_eq!(
            parse("cron(* * 31 4,6,9,11 ? *)", None).next_after(0, 0),
            None
        );
        // A fifth Monday in February needs a leap year starting on a Monday: 1988.
        assert_eq!(
            parse("cron(0 0 ? 2 2#5 *)", None).next_after(0, 0),
            Some(utc(1988, 2, 29, 0, 0))
        );
        assert_eq!(
            parse("cron(0 0 * * ? 2020)", None).next_after(utc(2021, 1, 1, 0, 0), 0),
            None
        );
        assert_eq!(
            parse("cron(* * * * ? *)", None).next_after(i64::MAX, 0),
            None
        );
        assert_eq!(
            parse("cron(59 23 31 12 ? 2199)", None).next_after(0, 0),
            Some(utc(2199, 12, 31, 23, 59))
        );
        assert!(begin.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn leap_years() {
        let feb29 = parse("cron(0 0 29 2 ? *)", None);
        assert_eq!(
            firings(&feb29, utc(2023, 3, 1, 0, 0), 3),
            vec![
                utc(2024, 2, 29, 0, 0),
                utc(2028, 2, 29, 0, 0),
                utc(2032, 2, 29, 0, 0)
            ]
        );
        assert_eq!(
            parse("cron(0 0 29 2 ? *)", None).next_after(utc(2096, 3, 1, 0, 0), 0),
            Some(utc(2104, 2, 29, 0, 0))
        );
        let last = parse("cron(0 0 L 2 ? *)", None);
        assert_eq!(
            firings(&last, utc(2023, 1, 1, 0, 0), 2),
            vec![utc(2023, 2, 28, 0, 0), utc(2024, 2, 29, 0, 0)]
        );
    }

    #[test]
    fn last_day_of_month() {
        let last = parse("cron(0 0 L * ? *)", None);
        assert_eq!(
            firings(&last, utc(2024, 1, 15, 0, 0), 4),
            vec![
                utc(2024, 1, 31, 0, 0),
                utc(2024, 2, 29, 0, 0),
                utc(2024, 3, 31, 0, 0),
                utc(2024, 4, 30, 0, 0),
            ]
        );
    }

    #[test]
    fn nearest_weekday() {
        let w = |expr: &str, after: i64| parse(expr, None).next_after(after, 0);
        // 2024-06-15 is a Saturday: the Friday before.
        assert_eq!(
            w("cron(0 0 15W 6 ? *)", utc(2024, 6, 1, 0, 0)),
            Some(utc(2024, 6, 14, 0, 0))
        );
        // 2024-09-15 is a Sunday: the Monday after.
        assert_eq!(
            w("cron(0 0 15W 9 ? *)", utc(2024, 9, 1, 0, 0)),
            Some(utc(2024, 9, 16, 0, 0))
        );
        // 2024-06-01 is a Saturday: Monday the 3rd, not Friday May 31.
        assert_eq!(
            w("cron(0 0 1W 6 ? *)", utc(2024, 5, 1, 0, 0)),
            Some(utc(2024, 6, 3, 0, 0))
        );
        // 2024-06-30 is a Sunday and the last day: Friday the 28th, not Monday July 1.
        assert_eq!(
            w("cron(0 0 30W 6 ? *)", utc(2024, 6, 1, 0, 0)),
            Some(utc(2024, 6, 28, 0, 0))
        );
        // 2024-08-31 is a Saturday: Friday the 30th.
        assert_eq!(
            w("cron(0 0 31W 8 ? *)", utc(2024, 8, 1, 0, 0)),
            Some(utc(2024, 8, 30, 0, 0))
        );
        // A weekday is its own nearest weekday (2024-01-15 is a Monday).
        assert_eq!(
            w("cron(0 0 15W 1 ? *)", utc(2024, 1, 1, 0, 0)),
            Some(utc(2024, 1, 15, 0, 0))
        );
        // 31W does not fire in 30-day months: next after April 2024 is May 31 (a Friday).
        assert_eq!(
            w("cron(0 0 31W * ? *)", utc(2024, 4, 1, 0, 0)),
            Some(utc(2024, 5, 31, 0, 0))
        );
        // LW: 2024-08-31 is a Saturday, 2024-03-31 a Sunday: both the Friday before.
        assert_eq!(
            w("cron(0 0 LW * ? *)", utc(2024, 8, 1, 0, 0)),
            Some(utc(2024, 8, 30, 0, 0))
        );
        assert_eq!(
            w("cron(0 0 LW * ? *)", utc(2024, 3, 1, 0, 0)),
            Some(utc(2024, 3, 29, 0, 0))
        );
        assert_eq!(
            w("cron(0 0 LW * ? *)", utc(2024, 1, 1, 0, 0)),
            Some(utc(2024, 1, 31, 0, 0))
        );
    }

    #[test]
    fn nth_and_last_weekday_of_month() {
        let n = |expr: &str, after: i64| parse(expr, None).next_after(after, 0);
        let jan = utc(2024, 1, 1, 0, 0);
        // 2024-01-01 is the first Monday.
        assert_eq!(n("cron(0 9 ? * 2#1 *)", jan), Some(utc(2024, 1, 1, 9, 0)));
        assert_eq!(
            n("cron(0 9 ? * MON#1 *)", utc(2024, 1, 1, 9, 0)),
            Some(utc(2024, 2, 5, 9, 0))
        );
        // Second Tuesday.
        assert_eq!(n("cron(0 0 ? * 3#2 *)", jan), Some(utc(2024, 1, 9, 0, 0)));
        // Fifth Friday: February 2024 has none; March 29 is one.
        assert_eq!(
            n("cron(0 0 ? * 6#5 *)", utc(2024, 2, 1, 0, 0)),
            Some(utc(2024, 3, 29, 0, 0))
        );
        // Last Friday (6L).
        assert_eq!(
            n("cron(0 0 ? * 6L *)", utc(2024, 2, 1, 0, 0)),
            Some(utc(2024, 2, 23, 0, 0))
        );
        assert_eq!(
            n("cron(0 0 ? * FRIL *)", utc(2024, 2, 24, 0, 0)),
            Some(utc(2024, 3, 29, 0, 0))
        );
        // Last Sunday of the month.
        assert_eq!(n("cron(0 0 ? * 1L *)", jan), Some(utc(2024, 1, 28, 0, 0)));
    }

    #[test]
    fn dst_new_york() {
        let ny = Some("America/New_York");
        // Spring forward 2024-03-10 02:00 EST -> 03:00 EDT: 02:30 does not exist that day.
        let s = parse("cron(30 2 * * ? *)", ny);
        assert_eq!(
            firings(&s, at_offset(2024, 3, 9, 3, 0, -5.0), 2),
            vec![
                at_offset(2024, 3, 11, 2, 30, -4.0),
                at_offset(2024, 3, 12, 2, 30, -4.0)
            ]
        );
        assert_eq!(
            s.next_after(at_offset(2024, 3, 8, 12, 0, -5.0), 0),
            Some(at_offset(2024, 3, 9, 2, 30, -5.0))
        );
        // Fall back 2024-11-03 02:00 EDT -> 01:00 EST: 01:30 happens twice, fires once.
        let f = parse("cron(30 1 * * ? *)", ny);
        assert_eq!(
            firings(&f, at_offset(2024, 11, 2, 12, 0, -4.0), 3),
            vec![
                at_offset(2024, 11, 3, 1, 30, -4.0),
                at_offset(2024, 11, 4, 1, 30, -5.0),
                at_offset(2024, 11, 5, 1, 30, -5.0),
            ]
        );
        // Midnight runs are unaffected; the UTC instant moves with the offset.
        let midnight = parse("cron(0 0 * * ? *)", ny);
        assert_eq!(
            firings(&midnight, at_offset(2024, 3, 9, 12, 0, -5.0), 2),
            vec![
                at_offset(2024, 3, 10, 0, 0, -5.0),
                at_offset(2024, 3, 11, 0, 0, -4.0)
            ]
        );
        // An hourly schedule skips the missing 02:00 hour.
        let hourly = parse("cron(0 * * * ? *)", ny);
        assert_eq!(
            firings(&hourly, at_offset(2024, 3, 10, 0, 30, -5.0), 3),
            vec![
                at_offset(2024, 3, 10, 1, 0, -5.0),
                at_offset(2024, 3, 10, 3, 0, -4.0),
                at_offset(2024, 3, 10, 4, 0, -4.0),
            ]
        );
    }

    #[test]
    fn dst_berlin() {
        let berlin = Some("Europe/Berlin");
        // Spring forward 2024-03-31 02:00 CET -> 03:00 CEST.
        let s = parse("cron(30 2 * * ? *)", berlin);
        assert_eq!(
            firings(&s, at_offset(2024, 3, 30, 12, 0, 1.0), 2),
            vec![
                at_offset(2024, 4, 1, 2, 30, 2.0),
                at_offset(2024, 4, 2, 2, 30, 2.0)
            ]
        );
        // Fall back 2024-10-27 03:00 CEST -> 02:00 CET: 02:30 fires once, in CEST.
        assert_eq!(
            firings(&s, at_offset(2024, 10, 26, 12, 0, 2.0), 2),
            vec![
                at_offset(2024, 10, 27, 2, 30, 2.0),
                at_offset(2024, 10, 28, 2, 30, 1.0)
            ]
        );
        // Every half hour: the repeated 02:00-02:59 CET pass does not fire again.
        let half = parse("cron(0/30 * * * ? *)", berlin);
        assert_eq!(
            firings(&half, utc(2024, 10, 26, 23, 45), 5),
            vec![
                utc(2024, 10, 27, 0, 0),  // 02:00 CEST
                utc(2024, 10, 27, 0, 30), // 02:30 CEST
                utc(2024, 10, 27, 2, 0),  // 03:00 CET; 02:00 and 02:30 CET are repeats
                utc(2024, 10, 27, 2, 30),
                utc(2024, 10, 27, 3, 0),
            ]
        );
    }

    #[test]
    fn dst_half_hour_shift_lord_howe() {
        let lh = Some("Australia/Lord_Howe");
        // 2024-10-06 02:00 +10:30 -> 02:30 +11: 02:15 does not exist that day.
        let s = parse("cron(15 2 * * ? *)", lh);
        assert_eq!(
            s.next_after(at_offset(2024, 10, 5, 12, 0, 10.5), 0),
            Some(at_offset(2024, 10, 7, 2, 15, 11.0))
        );
        // 2024-04-07 02:00 +11 -> 01:30 +10:30: 01:45 happens twice, fires once.
        let f = parse("cron(45 1 * * ? *)", lh);
        assert_eq!(
            firings(&f, at_offset(2024, 4, 6, 12, 0, 11.0), 2),
            vec![
                at_offset(2024, 4, 7, 1, 45, 11.0),
                at_offset(2024, 4, 8, 1, 45, 10.5)
            ]
        );
    }

    #[test]
    fn calendar_helpers_agree_with_jiff() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let Ok(ts) = Timestamp::from_second(days * DAY) else {
                continue;
            };
            let dt = TimeZone::UTC.to_datetime(ts);
            assert_eq!(
                (
                    i32::from(dt.year()),
                    i32::from(dt.month()),
                    i32::from(dt.day())
                ),
                (y, m, d)
            );
            assert_eq!(
                i32::from(dt.date().weekday().to_sunday_one_offset()),
                weekday(y, m, d)
            );
            assert_eq!(i32::from(dt.date().days_in_month()), days_in_month(y, m));
        }
    }

    // ----- property tests --------------------------------------------------------------------

    /// One element of a generated cron list, kept structured so that the reference model can
    /// evaluate it without going through the parser.
    #[derive(Debug, Clone)]
    enum Item {
        Star,
        Value(u32),
        Range(u32, u32),
        /// `start/step` (`None` start: `*/step`).
        Step(Option<u32>, u32),
        RangeStep(u32, u32, u32),
    }

    #[derive(Debug, Clone)]
    enum DaySpec {
        /// Day-of-month list; day-of-week is `?`.
        Month(Vec<Item>),
        Last,
        LastWeekday,
        Nearest(u32),
        /// Day-of-week list; day-of-month is `?`.
        Week(Vec<Item>),
        /// `L` alone in day-of-week.
        WeekL,
        LastOf(u32),
        Nth(u32, u32),
    }

    #[derive(Debug, Clone)]
    struct GenCron {
        minutes: Vec<Item>,
        hours: Vec<Item>,
        months: Vec<Item>,
        days: DaySpec,
        /// Year list, rendered relative to the start year.
        years: YearSpec,
        /// Spell months / days of the week as names where possible.
        names: bool,
    }

    #[derive(Debug, Clone)]
    enum YearSpec {
        Star,
        /// Start year + offset.
        Single(i32),
        /// Start year + offsets.
        Range(i32, i32),
        List(Vec<i32>),
    }

    const MONTH_NAMES: [&str; 12] = [
        "jan", "Feb", "MAR", "apr", "May", "JUN", "jul", "Aug", "SEP", "oct", "Nov", "DEC",
    ];
    const DAY_NAMES: [&str; 7] = ["sun", "Mon", "TUE", "wed", "Thu", "FRI", "sat"];

    fn item_strategy(min: u32, max: u32, step: bool) -> BoxedStrategy<Item> {
        let value = min..=max;
        let span = max - min + 1;
        let mut options = vec![
            Just(Item::Star).boxed(),
            value.clone().prop_map(Item::Value).boxed(),
            (value.clone(), value.clone())
                .prop_map(|(a, b)| Item::Range(a, b))
                .boxed(),
        ];
        if step {
            options.push(
                (proptest::option::of(value.clone()), 1..=span)
                    .prop_map(|(a, s)| Item::Step(a, s))
                    .boxed(),
            );
            options.push(
                (value.clone(), value, 1..=span)
                    .prop_map(|(a, b, s)| Item::RangeStep(a, b, s))
                    .boxed(),
            );
        }
        proptest::strategy::Union::new(options).boxed()
    }

    fn list_strategy(min: u32, max: u32, step: bool) -> BoxedStrategy<Vec<Item>> {
        prop_oneof![
            3 => item_strategy(min, max, step).prop_map(|i| vec![i]),
            1 => proptest::collection::vec(item_strategy(min, max, step), 2..=3),
        ]
        .boxed()
    }

    fn day_strategy() -> BoxedStrategy<DaySpec> {
        prop_oneof![
            4 => list_strategy(1, 31, true).prop_map(DaySpec::Month),
            1 => Just(DaySpec::Last),
            1 => Just(DaySpec::LastWeekday),
            1 => (1u32..=31).prop_map(DaySpec::Nearest),
            4 => list_strategy(1, 7, false).prop_map(DaySpec::Week),
            1 => Just(DaySpec::WeekL),
            1 => (1u32..=7).prop_map(DaySpec::LastOf),
            1 => (1u32..=7, 1u32..=5).prop_map(|(d, k)| DaySpec::Nth(d, k)),
        ]
        .boxed()
    }

    fn year_strategy() -> BoxedStrategy<YearSpec> {
        prop_oneof![
            6 => Just(YearSpec::Star),
            1 => (0i32..=2).prop_map(YearSpec::Single),
            1 => (-1i32..=1, 0i32..=3).prop_map(|(a, len)| YearSpec::Range(a, a + len)),
            1 => proptest::collection::vec(-1i32..=3, 1..=3).prop_map(YearSpec::List),
        ]
        .boxed()
    }

    fn cron_strategy() -> impl Strategy<Value = GenCron> {
        (
            list_strategy(0, 59, true),
            list_strategy(0, 23, true),
            list_strategy(1, 12, true),
            day_strategy(),
            year_strategy(),
            any::<bool>(),
        )
            .prop_map(|(minutes, hours, months, days, years, names)| GenCron {
                minutes,
                hours,
                months,
                days,
                years,
                names,
            })
    }

    fn render_value(v: u32, names: Option<&[&str]>, min: u32) -> String {
        match names {
            Some(names) => names[(v - min) as usize].to_owned(),
            None => v.to_string(),
        }
    }

    fn render_list(items: &[Item], names: Option<&[&str]>, min: u32) -> String {
        let value = |v: u32| render_value(v, names, min);
        let parts: Vec<String> = items
            .iter()
            .map(|item| match item {
                Item::Star => "*".to_owned(),
                Item::Value(v) => value(*v),
                Item::Range(a, b) => format!("{}-{}", value(*a), value(*b)),
                Item::Step(None, s) => format!("*/{s}"),
                Item::Step(Some(a), s) => format!("{}/{s}", value(*a)),
                Item::RangeStep(a, b, s) => format!("{}-{}/{s}", value(*a), value(*b)),
            })
            .collect();
        parts.join(",")
    }

    fn year_values(spec: &YearSpec, base: i32) -> Vec<i32> {
        match spec {
            YearSpec::Star => (MIN_YEAR..=MAX_YEAR).collect(),
            YearSpec::Single(o) => vec![base + o],
            YearSpec::Range(a, b) => (base + a..=base + b).collect(),
            YearSpec::List(os) => os.iter().map(|o| base + o).collect(),
        }
    }

    fn render(cron: &GenCron, base_year: i32) -> String {
        let month_names = cron.names.then_some(&MONTH_NAMES[..]);
        let day_names = cron.names.then_some(&DAY_NAMES[..]);
        let (dom, dow) = match &cron.days {
            DaySpec::Month(items) => (render_list(items, None, 1), "?".to_owned()),
            DaySpec::Last => ("L".to_owned(), "?".to_owned()),
            DaySpec::LastWeekday => ("LW".to_owned(), "?".to_owned()),
            DaySpec::Nearest(n) => (format!("{n}W"), "?".to_owned()),
            DaySpec::Week(items) => ("?".to_owned(), render_list(items, day_names, 1)),
            DaySpec::WeekL => ("?".to_owned(), "L".to_owned()),
            DaySpec::LastOf(d) => (
                "?".to_owned(),
                format!("{}L", render_value(*d, day_names, 1)),
            ),
            DaySpec::Nth(d, k) => (
                "?".to_owned(),
                format!("{}#{k}", render_value(*d, day_names, 1)),
            ),
        };
        let years = match &cron.years {
            YearSpec::Star => "*".to_owned(),
            YearSpec::Range(a, b) => format!("{}-{}", base_year + a, base_year + b),
            spec => year_values(spec, base_year)
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        format!(
            "cron({} {} {dom} {} {dow} {years})",
            render_list(&cron.minutes, None, 0),
            render_list(&cron.hours, None, 0),
            render_list(&cron.months, month_names, 1),
        )
    }

    /// The values a list denotes, computed by plain enumeration.
    fn list_table(items: &[Item], min: u32, max: u32) -> Vec<bool> {
        let mut table = vec![false; (max + 1) as usize];
        // The values from `a` to `b`, wrapping past `max` back to `min` when `a > b`.
        let walk = |a: u32, b: u32| -> Vec<u32> {
            let mut out = vec![a];
            let mut v = a;
            while v != b {
                v = if v == max { min } else { v + 1 };
                out.push(v);
            }
            out
        };
        for item in items {
            let values: Vec<u32> = match item {
                Item::Star => (min..=max).collect(),
                Item::Value(v) => vec![*v],
                Item::Range(a, b) => walk(*a, *b),
                Item::Step(a, s) => walk(a.unwrap_or(min), max)
                    .into_iter()
                    .step_by(*s as usize)
                    .collect(),
                Item::RangeStep(a, b, s) => walk(*a, *b).into_iter().step_by(*s as usize).collect(),
            };
            for v in values {
                table[v as usize] = true;
            }
        }
        table
    }

    /// Reference model of one cron expression, checking each field directly on local time.
    struct Reference {
        minutes: Vec<bool>,
        hours: Vec<bool>,
        months: Vec<bool>,
        years: Vec<i32>,
        days: DaySpec,
    }

    impl Reference {
        fn new(cron: &GenCron, base_year: i32) -> Reference {
            Reference {
                minutes: list_table(&cron.minutes, 0, 59),
                hours: list_table(&cron.hours, 0, 23),
                months: list_table(&cron.months, 1, 12),
                years: year_values(&cron.years, base_year),
                days: cron.days.clone(),
            }
        }

        fn day_matches(&self, date: jiff::civil::Date) -> bool {
            let (y, m, d) = (date.year(), date.month(), date.day());
            let exists = |day: i32| {
                i8::try_from(day)
                    .ok()
                    .is_some_and(|day| jiff::civil::Date::new(y, m, day).is_ok())
            };
            let dow = |day: i8| {
                jiff::civil::Date::new(y, m, day)
                    .map(|dt| u32::from(dt.weekday().to_sunday_one_offset() as u8))
                    .unwrap_or(0)
            };
            let is_weekday = |day: i8| (2..=6).contains(&dow(day));
            let last = (28..=31).filter(|&x| exists(x)).max().unwrap_or(28);
            let d32 = i32::from(d);
            match &self.days {
                DaySpec::Month(items) => list_table(items, 1, 31)[d as usize],
                DaySpec::Last => d32 == last,
                DaySpec::LastWeekday => {
                    is_weekday(d) && ((d32 + 1)..=last).all(|x| !is_weekday(x as i8))
                }
                DaySpec::Nearest(n) => {
                    let n = *n as i32;
                    if n > last || !is_weekday(d) {
                        return false;
                    }
                    // The weekday of this month closest to day n.
                    let nearest = (1..=last)
                        .filter(|&x| is_weekday(x as i8))
                        .min_by_key(|&x| (x - n).abs());
                    nearest == Some(d32)
                }
                DaySpec::Week(items) => list_table(items, 1, 7)[dow(d) as usize],
                DaySpec::WeekL => dow(d) == 7,
                DaySpec::LastOf(w) => dow(d) == *w && !exists(d32 + 7),
                DaySpec::Nth(w, k) => {
                    dow(d) == *w && (1..=d32).filter(|&x| dow(x as i8) == *w).count() == *k as usize
                }
            }
        }

        /// Steps minute by minute from `after` for at most `limit` seconds; a minute fires when
        /// its local wall time matches every field and it is the first instant showing that
        /// local time (a repeated local time fires only in its first pass).
        fn next_after(&self, tz: &TimeZone, after: i64, limit: i64) -> Option<i64> {
            let local = |t: i64| Timestamp::from_second(t).ok().map(|ts| tz.to_datetime(ts));
            let mut t = after.div_euclid(60) * 60 + 60;
            let mut cached_date: Option<(jiff::civil::Date, bool)> = None;
            // The offset in force, valid until the next transition.
            let mut offset: Option<(i64, i64, i64)> = None;
            while t <= after + limit {
                let off = match offset {
                    Some((from, until, off)) if (from..until).contains(&t) => off,
                    _ => {
                        let ts = Timestamp::from_second(t).ok()?;
                        let off = i64::from(tz.to_offset(ts).seconds());
                        let until = tz
                            .following(ts)
                            .next()
                            .map_or(i64::MAX, |tr| tr.timestamp().as_second());
                        offset = Some((t, until, off));
                        off
                    }
                };
                let wall = t + off;
                let (y, m, d) = civil_from_days(wall.div_euclid(DAY));
                let secs = wall.rem_euclid(DAY);
                let (hour, minute) = (secs / 3_600, secs % 3_600 / 60);
                let fields = self.minutes[minute as usize]
                    && self.hours[hour as usize]
                    && self.months[m as usize]
                    && self.years.contains(&y);
                if fields {
                    let date = jiff::civil::date(y as i16, m as i8, d as i8);
                    let day_ok = match cached_date {
                        Some((cached, ok)) if cached == date => ok,
                        _ => {
                            let ok = self.day_matches(date);
                            cached_date = Some((date, ok));
                            ok
                        }
                    };
                    if day_ok {
                        let now = local(t)?;
                        let repeated = (1..=12).any(|q| local(t - q * 900) == Some(now));
                        if !repeated {
                            return Some(t);
                        }
                    }
                }
                t += 60;
            }
            None
        }
    }

    const ZONES: [&str; 11] = [
        "UTC",
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "America/Sao_Paulo",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Africa/Casablanca",
        "Europe/London",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics(input in ".{0,80}", zone in proptest::option::of(".{0,20}")) {
            let _ = Schedule::parse(&input, zone.as_deref());
        }

        #[test]
        fn parse_never_panics_on_cron_like_input(
            fields in proptest::collection::vec("[0-9A-Za-z*?/,#LW-]{0,8}", 0..8),
        ) {
            let expression = format!("cron({})", fields.join(" "));
            if let Ok(schedule) = Schedule::parse(&expression, None) {
                let _ = schedule.next_after(utc(2024, 1, 1, 0, 0), 0);
            }
        }

        #[test]
        fn rate_matches_arithmetic(
            value in 1u64..10_000,
            unit in 0usize..3,
            anchor in -4_000_000_000i64..4_000_000_000,
            after in -4_000_000_000i64..4_000_000_000,
        ) {
            let (one, many, secs) = [("minute", "minutes", 60), ("hour", "hours", 3_600), ("day", "days", 86_400)][unit];
            let expression = if value == 1 { format!("rate(1 {one})") } else { format!("rate({value} {many})") };
            let schedule = Schedule::parse(&expression, Some("Europe/Berlin")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let next = schedule.next_after(after, anchor).ok_or_else(|| TestCaseError::fail("no firing"))?;
            let period = value as i64 * secs;
            prop_assert!(next > after);
            prop_assert!(next >= anchor);
            prop_assert_eq!((next - anchor) % period, 0);
            prop_assert!(next - period <= after || next == anchor);
        }

        #[test]
        fn cron_matches_minute_by_minute_reference(
            cron in cron_strategy(),
            zone in 0usize..ZONES.len(),
            start in utc(1990, 1, 1, 0, 0)..utc(2060, 1, 1, 0, 0),
            mode in 0u8..4,
            jitter in -2 * DAY..DAY,
            near_jitter in -3 * 3_600i64..3 * 3_600,
        ) {
            const LIMIT: i64 = 400 * DAY;
            let zone = ZONES[zone];
            let tz = jiff::tz::db().get(zone).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut cron = cron;
            // Modes 2 and 3 start near one of the zone's transitions (when it has any after
            // `start`); mode 3 also aims the cron at the local hours around the transition,
            // every day, so that gaps and repeated hours are exercised directly.
            let transition = Timestamp::from_second(start)
                .ok()
                .and_then(|ts| tz.following(ts).next())
                .map(|tr| tr.timestamp().as_second());
            let start = match (mode, transition) {
                (2, Some(tr)) => tr + jitter,
                (3, Some(tr)) => {
                    let hour_at = |t: i64| {
                        Timestamp::from_second(t).map(|ts| tz.to_datetime(ts).hour() as u32).unwrap_or(0)
                    };
                    let before = hour_at(tr - 60);
                    cron.hours = vec![
                        Item::Value(before),
                        Item::Value((before + 1) % 24),
                        Item::Value(hour_at(tr)),
                    ];
                    cron.months = vec![Item::Star];
                    cron.days = DaySpec::Month(vec![Item::Star]);
                    cron.years = YearSpec::Star;
                    tr + near_jitter
                }
                _ => start,
            };
            let base_year = i32::from(tz.to_datetime(Timestamp::from_second(start).map_err(|e| TestCaseError::fail(e.to_string()))?).year());
            let expression = render(&cron, base_year);
            let schedule = Schedule::parse(&expression, Some(zone))
                .map_err(|e| TestCaseError::fail(format!("{expression}: {e}")))?;
            let reference = Reference::new(&cron, base_year);
            let expected = reference.next_after(&tz, start, LIMIT);
            let actual = schedule.next_after(start, 0);
            match expected {
                Some(_) => prop_assert_eq!(actual, expected, "{} in {} after {}", expression, zone, start),
                None => prop_assert!(
                    actual.is_none_or(|t| t > start + LIMIT),
                    "{} in {} after {}: got {:?}, reference found nothing within the bound",
                    expression, zone, start, actual
                ),
            }
        }
    }
}
