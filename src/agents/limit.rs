//! Reading a usage- or rate-limit message's reset time: "try again in 2h 5m", "retry in
//! 12.3s", "resets in 4 hours", "will reset at 3pm", "resets 3:30 PM", "at 15:30".

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, TimeZone};
use regex::Regex;

/// How long until the limit that `text` describes resets, as of `now` (a wall-clock
/// time in the zone the text is written in; a time of day that has passed today means
/// tomorrow). `None` when the text names no time.
#[must_use]
pub fn reset_in<Tz: TimeZone>(text: &str, now: &DateTime<Tz>) -> Option<Duration> {
    relative(text)
        .or_else(|| dated(text, now))
        .or_else(|| clock(text, now))
}

/// "Dec 4th, 2026 6:54 PM" (Codex for another day), "Dec 4, 9:13pm" (Claude Code).
fn dated<Tz: TimeZone>(text: &str, now: &DateTime<Tz>) -> Option<Duration> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?i)\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? (\d{1,2})(?:st|nd|rd|th)?,?(?: (\d{4}),?)? (\d{1,2})(?::(\d{2}))?\s*(am|pm)?\b")
            .expect("valid regex")
    });
    let c = re.captures(text)?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| c[1].eq_ignore_ascii_case(m))?;
    let day: u32 = c[2].parse().ok()?;
    // Without a year: this year's date, or next year's when it has passed.
    let year: i32 = match c.get(3) {
        Some(y) => y.as_str().parse().ok()?,
        None => now.year(),
    };
    let hour = to_24h(c[4].parse().ok()?, c.get(6).map(|m| m.as_str()))?;
    let minute: u32 = c.get(5).map_or(Some(0), |m| m.as_str().parse().ok())?;
    let date = chrono::NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()? + 1, day)?;
    let at = now
        .timezone()
        .from_local_datetime(&date.and_time(NaiveTime::from_hms_opt(hour, minute, 0)?))
        .earliest()?;
    (at - now.clone()).to_std().ok()
}

/// An hour on a 12-hour clock with its AM/PM (or a 24-hour one without).
fn to_24h(hour: u32, ampm: Option<&str>) -> Option<u32> {
    match ampm.map(str::to_ascii_lowercase).as_deref() {
        Some(p) if (1..=12).contains(&hour) => Some(hour % 12 + if p == "pm" { 12 } else { 0 }),
        Some(_) => None,
        None if hour < 24 => Some(hour),
        None => None,
    }
}

fn relative(text: &str) -> Option<Duration> {
    static RE: OnceLock<Regex> = OnceLock::new();
    static PART: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?i)\bin\s+((?:\d+(?:\.\d+)?\s*(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b[\s,and]*)+)")
            .expect("valid regex")
    });
    let part = PART.get_or_init(|| {
        Regex::new(r"(?i)(\d+(?:\.\d+)?)\s*(hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b")
            .expect("valid regex")
    });
    let span = re.captures(text)?.get(1)?.as_str();
    let mut secs = 0.0_f64;
    for c in part.captures_iter(span) {
        let n: f64 = c[1].parse().ok()?;
        let unit = c[2].to_ascii_lowercase();
        secs += n * match unit.chars().next()? {
            'h' => 3600.0,
            'm' => 60.0,
            _ => 1.0,
        };
    }
    (secs > 0.0).then(|| Duration::from_secs_f64(secs.ceil()))
}

fn clock<Tz: TimeZone>(text: &str, now: &DateTime<Tz>) -> Option<Duration> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?i)\b(?:at|resets?)\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\b")
            .expect("valid regex")
    });
    let c = re.captures(text)?;
    let minute: u32 = c.get(2).map_or(Some(0), |m| m.as_str().parse().ok())?;
    // A bare number after "at" is a time only with minutes ("at 15:30").
    if c.get(3).is_none() && c.get(2).is_none() {
        return None;
    }
    let hour = to_24h(c[1].parse().ok()?, c.get(3).map(|m| m.as_str()))?;
    let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
    let today = now.date_naive().and_time(time);
    let mut at = now.timezone().from_local_datetime(&today).earliest()?;
    if at <= *now {
        at = now
            .timezone()
            .from_local_datetime(&(today + chrono::Duration::days(1)))
            .earliest()?;
    }
    (at - now.clone()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn secs(text: &str) -> Option<u64> {
        reset_in(text, &noon()).map(|d| d.as_secs())
    }

    #[test]
    fn relative_times_are_read() {
        assert_eq!(
            secs("You've hit your usage limit. Try again in 2h 5m."),
            Some(7500)
        );
        assert_eq!(secs("Quota exceeded. Please retry in 12.3s."), Some(13));
        assert_eq!(secs("resets in 4 hours and 30 minutes"), Some(16200));
        assert_eq!(secs("try again in 45 seconds"), Some(45));
    }

    #[test]
    fn clock_times_are_read_and_a_past_one_means_tomorrow() {
        assert_eq!(secs("Your limit will reset at 3pm (UTC)."), Some(3 * 3600));
        assert_eq!(
            secs("5-hour limit reached ∙ resets 3:30 PM"),
            Some(3 * 3600 + 1800)
        );
        assert_eq!(secs("resets at 15:30"), Some(3 * 3600 + 1800));
        assert_eq!(secs("limit resets at 11am"), Some(23 * 3600));
        assert_eq!(
            secs("You’ve hit your usage limit. Try again at Dec 4th, 2026 6:54 PM."),
            Some(3 * 86400 + 6 * 3600 + 54 * 60)
        );
        assert_eq!(
            secs("You've hit your weekly limit · resets Dec 4, 9:13pm (UTC)"),
            Some(3 * 86400 + 9 * 3600 + 13 * 60)
        );
    }

    #[test]
    fn text_without_a_time_names_none() {
        assert_eq!(secs("Rate limit reached. Please wait."), None);
        assert_eq!(secs("at 42 places"), None);
    }
}
