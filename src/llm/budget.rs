//! Budgets: spend so far (from the log's `llm_call` events) against the limits in
//! `config/providers.toml`, checked before every call with a worst-case estimate of the
//! call's cost (prompt characters / 4 input tokens, `max_tokens` output tokens), so a
//! call that could break a budget is not made.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Datelike, Utc};

use super::{Budget, ProviderConfig, ProvidersFile, Usage};

/// USD spent today and this month (UTC), per provider and in total. Read from the log
/// once, then kept up to date call by call ([`Spend::add`]); a new UTC day or month
/// starts its sums at zero.
#[derive(Debug, Clone, Default)]
pub struct Spend {
    day: HashMap<String, f64>,
    month: HashMap<String, f64>,
    day_total: f64,
    month_total: f64,
    /// `(year, month, day)` the sums are for.
    as_of: (i32, u32, u32),
}

impl Spend {
    /// Sums the `cost_usd` of the `llm_call` events in `log_dir` for today and this month
    /// (reading only this month's log files).
    #[must_use]
    pub fn from_log(log_dir: &Path, now: DateTime<Utc>) -> Self {
        let mut s = Self {
            as_of: (now.year(), now.month(), now.day()),
            ..Self::default()
        };
        // Only this month's files (the date is in the name): start-up and every
        // `architect ask` read one month of log, not all of it.
        let month = format!("{:04}{:02}", now.year(), now.month());
        let this_month = |name: &str| {
            name.strip_suffix(".jsonl")
                .and_then(|n| n.rsplit('-').next())
                .is_some_and(|date| date.starts_with(&month))
        };
        for e in crate::log::read_events_in(log_dir, this_month).unwrap_or_default() {
            if e.kind != "llm_call" || e.ts.year() != now.year() || e.ts.month() != now.month() {
                continue;
            }
            let (Some(p), Some(c)) = (e.data["provider"].as_str(), e.data["cost_usd"].as_f64())
            else {
                continue;
            };
            s.add(p, c, e.ts.day() == now.day());
        }
        s
    }

    /// Moves the sums to `now`'s day and month (zeroing what a new day or month ends).
    pub fn roll(&mut self, now: DateTime<Utc>) {
        let (y, m, d) = (now.year(), now.month(), now.day());
        if (y, m) != (self.as_of.0, self.as_of.1) {
            *self = Self {
                as_of: (y, m, d),
                ..Self::default()
            };
        } else if d != self.as_of.2 {
            self.day.clear();
            self.day_total = 0.0;
            self.as_of.2 = d;
        }
    }

    /// Counts a call.
    pub fn add(&mut self, provider: &str, usd: f64, today: bool) {
        *self.month.entry(provider.to_string()).or_default() += usd;
        self.month_total += usd;
        if today {
            *self.day.entry(provider.to_string()).or_default() += usd;
            self.day_total += usd;
        }
    }

    /// The first budget a call to `p` estimated at `estimate` USD would break:
    /// `(which, limit, spent)`.
    #[must_use]
    pub fn would_break(
        &self,
        file: &ProvidersFile,
        p: &ProviderConfig,
        estimate: f64,
    ) -> Option<(&'static str, f64, f64)> {
        let over = |b: &Budget, day: f64, month: f64, d: &'static str, m: &'static str| {
            if let Some(l) = b.daily_usd.filter(|l| day + estimate > *l) {
                return Some((d, l, day));
            }
            b.monthly_usd
                .filter(|l| month + estimate > *l)
                .map(|l| (m, l, month))
        };
        let pd = self.day.get(&p.name).copied().unwrap_or(0.0);
        let pm = self.month.get(&p.name).copied().unwrap_or(0.0);
        over(&p.budget, pd, pm, "provider daily", "provider monthly").or_else(|| {
            over(
                &file.budget,
                self.day_total,
                self.month_total,
                "total daily",
                "total monthly",
            )
        })
    }
}

/// Worst-case cost of sending `prompt` to `p`, in USD.
#[must_use]
pub fn estimate(p: &ProviderConfig, prompt: &str) -> f64 {
    let u = Usage {
        input: u64::try_from(prompt.chars().count() / 4 + 1).unwrap_or(u64::MAX),
        output: u64::from(p.max_tokens),
        ..Usage::default()
    };
    p.price.cost(&u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_reads_only_this_months_logs_and_rolls_over() {
        let dir = tempfile::tempdir().unwrap();
        let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        let line = |ts: &str, usd: f64| {
            format!(
                "{{\"ts\":\"{ts}\",\"node\":\"n\",\"type\":\"llm_call\",\"task_id\":null,\"session\":null,\"data\":{{\"provider\":\"p\",\"cost_usd\":{usd}}}}}\n"
            )
        };
        std::fs::write(
            dir.path().join("events-n-20261031.jsonl"),
            line("2026-10-31T10:00:00.000000Z", 5.0),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("events-n-20261120.jsonl"),
            line("2026-11-20T10:00:00.000000Z", 0.25),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("events-n-20261121.jsonl"),
            line("2026-11-21T09:00:00.000000Z", 0.5),
        )
        .unwrap();
        let mut s = Spend::from_log(dir.path(), now);
        assert!((s.month_total - 0.75).abs() < 1e-12, "{s:?}");
        assert!((s.day_total - 0.5).abs() < 1e-12, "{s:?}");
        s.roll("2026-11-22T00:00:01Z".parse().unwrap());
        assert!(s.day_total.abs() < 1e-12 && (s.month_total - 0.75).abs() < 1e-12);
        s.roll("2026-12-01T00:00:01Z".parse().unwrap());
        assert!(s.month_total.abs() < 1e-12);
    }
}
