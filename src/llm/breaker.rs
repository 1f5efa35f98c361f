//! Circuit breakers, one per provider, kept as files: `spool/providers/<name>.json`.
//!
//! Closed → (after `[breaker] failures` consecutive failed calls) open, with the reason →
//! (after `open_s`) half-open: one probe call is let through → closed on success, open
//! again on failure. The file is rewritten atomically on every change (no `fsync`: it is
//! state that rebuilds itself), so `cat` and `architect providers` show it and every
//! process using the spool (daemon, `architect ask`) shares it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::BreakerSettings;
use crate::durable;

// A breaker's state, a plain data type the `breaker` event carries.
pub use crate::types::CircuitState as State;

/// `spool/providers/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Provider name.
    pub provider: String,
    /// State.
    pub state: State,
    /// Consecutive failed calls.
    pub failures: u32,
    /// Why it opened (the last error), while open or half-open.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it opened.
    #[serde(default)]
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open breaker lets a probe through.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Call.
    Call,
    /// Call as the half-open probe.
    Probe,
    /// Do not call before this time.
    WaitUntil(DateTime<Utc>),
}

impl Breaker {
    /// A closed breaker.
    #[must_use]
    pub fn closed(provider: &str) -> Self {
        Self {
            provider: provider.to_string(),
            state: State::Closed,
            failures: 0,
            reason: None,
            opened_at: None,
            retry_at: None,
            updated_at: Utc::now(),
        }
    }

    /// The file of `provider` in `dir` (`spool/providers/`).
    #[must_use]
    pub fn path(dir: &Path, provider: &str) -> PathBuf {
        dir.join(format!("{provider}.json"))
    }

    /// Reads the breaker (closed when there is no file or it does not parse).
    #[must_use]
    pub fn load(dir: &Path, provider: &str) -> Self {
        durable::read_regular(&Self::path(dir, provider), 64 * 1024)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| Self::closed(provider))
    }

    /// Writes it (atomically, no fsync).
    pub fn save(&self, dir: &Path) {
        if let Ok(bytes) = serde_json::to_vec_pretty(self) {
            let _ = durable::create_dir(dir);
            if let Err(e) = durable::write_atomic_volatile(&Self::path(dir, &self.provider), &bytes)
            {
                tracing::warn!("saving breaker {}: {e}", self.provider);
            }
        }
    }

    /// May a call be made now? An open breaker past `retry_at` turns half-open and
    /// grants one probe; a half-open one whose probe has not reported for `open_s` grants
    /// another (the prober may have died).
    pub fn permit(&mut self, now: DateTime<Utc>, s: &BreakerSettings) -> Permit {
        match self.state {
            State::Closed => Permit::Call,
            State::Open | State::HalfOpen => {
                let at = self.retry_at.unwrap_or(now);
                if now >= at {
                    self.state = State::HalfOpen;
                    self.retry_at = Some(now + open_for(s));
                    self.updated_at = now;
                    Permit::Probe
                } else {
                    Permit::WaitUntil(at)
                }
            }
        }
    }

    /// A call succeeded: closed, failures reset.
    pub fn success(&mut self, now: DateTime<Utc>) {
        *self = Self {
            updated_at: now,
            ..Self::closed(&self.provider)
        };
    }

    /// A call failed (after its retries): count it; open at the threshold, or at once
    /// after a failed probe. Returns whether it opened now.
    pub fn failure(&mut self, now: DateTime<Utc>, reason: &str, s: &BreakerSettings) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.updated_at = now;
        self.reason = Some(reason.to_string());
        let open = self.state == State::HalfOpen || self.failures >= s.failures.max(1);
        if open {
            let was_open = self.state == State::Open;
            self.state = State::Open;
            self.opened_at = Some(now);
            self.retry_at = Some(now + open_for(s));
            return !was_open;
        }
        false
    }
}

fn open_for(s: &BreakerSettings) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s.open_s).unwrap_or(i64::MAX / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_half_opens_and_closes() {
        let s = BreakerSettings {
            failures: 3,
            open_s: 60,
        };
        let t0 = Utc::now();
        let mut b = Breaker::closed("p");
        assert!(!b.failure(t0, "HTTP 500", &s));
        assert!(!b.failure(t0, "HTTP 500", &s));
        assert_eq!(b.permit(t0, &s), Permit::Call);
        assert!(b.failure(t0, "HTTP 503", &s), "third failure opens it");
        assert_eq!(b.state, State::Open);
        assert_eq!(b.reason.as_deref(), Some("HTTP 503"));
        let later = t0 + chrono::Duration::seconds(30);
        assert!(matches!(b.permit(later, &s), Permit::WaitUntil(_)));
        let after = t0 + chrono::Duration::seconds(61);
        assert_eq!(b.permit(after, &s), Permit::Probe);
        assert_eq!(b.state, State::HalfOpen);
        // A failed probe opens it again at once.
        assert!(b.failure(after, "timed out", &s));
        let after2 = after + chrono::Duration::seconds(61);
        assert_eq!(b.permit(after2, &s), Permit::Probe);
        b.success(after2);
        assert_eq!((b.state, b.failures), (State::Closed, 0));
        // Persisted and read back.
        let dir = tempfile::tempdir().unwrap();
        b.save(dir.path());
        assert_eq!(Breaker::load(dir.path(), "p"), b);
    }
}
