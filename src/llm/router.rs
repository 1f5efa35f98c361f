//! Routing one request through a chain of providers: circuit breakers first, then up to
//! `[retry] attempts` calls per provider with exponential backoff and jitter (a server's
//! `Retry-After` wins, up to `max_ms`; 4xx client errors are not retried), then the next
//! provider. When every provider's breaker is open the request waits for the first one
//! to half-open, up to its deadline, instead of failing at once. Before a provider is
//! called, its worst-case cost is reserved in the node's budget ledger
//! ([`super::budget::Ledger`]); the reservation is settled with the `llm_call` event of
//! the answer, or released when the provider fails. Every HTTP attempt is an `llm_call`
//! event with its tokens and cost; breaker changes are `breaker_state` events.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use super::breaker::{Breaker, Permit};
use super::budget::{Ledger, Refusal};
use super::client::{self, CallError};
use super::{Complexity, ProvidersFile, Usage};
use crate::backoff::backoff_ms;
use crate::log::{event, EventLog};

/// One request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The prompt.
    pub prompt: &'a str,
    /// Only this provider.
    pub provider: Option<&'a str>,
    /// Only providers serving this model.
    pub model: Option<&'a str>,
    /// Route by complexity.
    pub complexity: Option<Complexity>,
    /// The task's role, for `[routing.classify]` when there is no complexity.
    pub role: Option<&'a str>,
    /// The task it serves (for the log).
    pub task_id: Option<&'a str>,
    /// Give up at this instant.
    pub deadline: Instant,
}

/// A routed answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The reply text.
    pub reply: String,
    /// Provider that answered.
    pub provider: String,
    /// Model that answered.
    pub model: String,
    /// Tokens of the answering call.
    pub tokens: Usage,
    /// Cost of every call made for this request, failed ones included (USD).
    pub cost_usd: f64,
    /// HTTP attempts made, all providers together.
    pub attempts: u32,
    /// Time spent in HTTP calls, in µs (the rest of `latency_ms` is routing, breakers,
    /// budgets, logging and backoff).
    pub http_us: u64,
    /// Wall time of the whole request, in ms.
    pub latency_ms: u64,
}

/// Why no provider answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no provider answered: {}", .failures.iter().map(|(p, e)| format!("{p}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct RouteError {
    /// `(provider, last error)` for each provider tried or skipped. In JSON each is a
    /// pair of strings, `[provider, message]`.
    pub failures: Vec<(String, Failure)>,
}

/// Why one provider of the chain did not answer. Routing decides on the kind, never on
/// the text; the text ([`std::fmt::Display`], also its JSON form) is for people.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// No configured provider serves the model asked for.
    #[error("no configured provider serves this model")]
    NoProvider,
    /// The chain names a provider `providers.toml` does not have.
    #[error("not configured")]
    NotConfigured,
    /// Its circuit breaker is open: no call until `until`.
    #[error("circuit open until {} ({reason})", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    CircuitOpen {
        /// When the breaker lets a probe through.
        until: chrono::DateTime<Utc>,
        /// The failure that opened it (`failures` when unknown).
        reason: String,
    },
    /// The budget ledger refused: the call could break a budget, or the ledger could not
    /// be used.
    #[error("{0}")]
    Budget(String),
    /// Its API key could not be read.
    #[error("{0}")]
    ApiKey(String),
    /// It was called and failed (the last attempt's error), or the deadline passed first.
    #[error("{0}")]
    Call(String),
}

impl Serialize for Failure {
    /// The message, as a string.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Routes requests; cheap to build per request.
#[derive(Debug)]
pub struct Router<'a> {
    /// The providers config.
    pub config: &'a ProvidersFile,
    /// `spool/providers/`.
    pub breakers: PathBuf,
    /// Where `llm_call` events go.
    pub log: &'a EventLog,
    /// The HTTP client (connection pool).
    pub http: reqwest::Client,
    /// The budget ledger (spend from the log, reservations shared by every process on
    /// the node; see [`super::budget`]).
    pub budget: &'a Ledger,
}

/// Backoff before retry number `retry` (1-based): `base · 2^(retry-1)`, ±50% jitter,
/// at most `max`; a server's `Retry-After` replaces it (also capped at `max`).
fn backoff(retry: u32, base_ms: u64, max_ms: u64, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(Duration::from_millis(max_ms));
    }
    // The exponent stops at 20 here (as it always has); jitter and the cap come after.
    let exp = backoff_ms(base_ms, retry.saturating_sub(1).min(20), u64::MAX);
    // Jitter from the clock's low bits: spreads retries of concurrent callers; no
    // cryptographic need.
    let nanos = u64::from(Utc::now().timestamp_subsec_nanos());
    let jitter = exp / 2 + nanos % (exp.max(1));
    Duration::from_millis(jitter.min(max_ms))
}

impl Router<'_> {
    /// Sends the request to the first provider of its chain that answers.
    ///
    /// # Errors
    /// [`RouteError`] listing each provider's last error when none answered before the
    /// deadline.
    pub async fn ask(&self, req: &Request<'_>) -> Result<Answer, RouteError> {
        let started = Instant::now();
        let rules = &self.config.routing.classify;
        let complexity = req.complexity.or_else(|| {
            (req.provider.is_none() && req.model.is_none() && !rules.is_empty())
                .then(|| rules.classify(req.prompt, req.role))
        });
        let chain = self.config.chain(req.provider, req.model, complexity);
        if chain.is_empty() {
            return Err(RouteError {
                failures: vec![(req.model.unwrap_or("?").to_string(), Failure::NoProvider)],
            });
        }
        let mut attempts = 0u32;
        let mut cost = 0.0;
        let mut http_us = 0u64;
        loop {
            let mut failures = Vec::new();
            let mut earliest: Option<chrono::DateTime<Utc>> = None;
            for name in &chain {
                let Some(p) = self.config.get(name) else {
                    failures.push((name.clone(), Failure::NotConfigured));
                    continue;
                };
                let mut breaker = Breaker::load(&self.breakers, name);
                let probe = match breaker.permit(Utc::now(), &self.config.breaker) {
                    Permit::Call => false,
                    Permit::Probe => {
                        breaker.save(&self.breakers);
                        self.breaker_event(&breaker, req.task_id);
                        true
                    }
                    Permit::WaitUntil(t) => {
                        earliest = Some(earliest.map_or(t, |e| e.min(t)));
                        failures.push((
                            name.clone(),
                            Failure::CircuitOpen {
                                until: t,
                                reason: breaker
                                    .reason
                                    .clone()
                                    .unwrap_or_else(|| "failures".to_string()),
                            },
                        ));
                        continue;
                    }
                };
                let estimate = super::budget::estimate(p, req.prompt);
                // Held until the call is logged (settled) or has failed (dropped); by
                // `until` every attempt has surely ended (a backstop: a dead process's
                // reservations are dropped at once).
                let span = req
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_add(Duration::from_secs(p.timeout_s.saturating_add(10)))
                    .min(Duration::from_secs(366 * 86_400));
                let until = Utc::now()
                    + chrono::Duration::from_std(span).unwrap_or(chrono::Duration::days(366));
                let mut reservation = match self.budget.reserve(self.config, p, estimate, until) {
                    Ok(r) => r,
                    Err(refusal) => {
                        if let Refusal::Over {
                            which,
                            limit,
                            spent,
                            reserved,
                            estimate,
                        } = &refusal
                        {
                            self.log.record(
                                req.task_id,
                                None,
                                event::BudgetExceeded {
                                    provider: name.clone(),
                                    budget: (*which).to_string(),
                                    limit_usd: *limit,
                                    spent_usd: *spent,
                                    reserved_usd: *reserved,
                                    estimate_usd: *estimate,
                                },
                            );
                        }
                        failures.push((name.clone(), Failure::Budget(refusal.to_string())));
                        continue;
                    }
                };
                let key = match p.api_key() {
                    Ok(k) => k,
                    Err(e) => {
                        failures.push((name.clone(), Failure::ApiKey(e.to_string())));
                        continue;
                    }
                };
                let tries = if probe {
                    1
                } else {
                    self.config.retry.attempts.max(1)
                };
                let mut last: Option<CallError> = None;
                for attempt in 1..=tries {
                    if Instant::now() >= req.deadline {
                        break;
                    }
                    attempts += 1;
                    let t0 = Instant::now();
                    let result = client::call(&self.http, p, key.as_deref(), req.prompt).await;
                    let took = t0.elapsed();
                    http_us += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                    let latency_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                    match result {
                        Ok(reply) => {
                            let c = p.price.cost(&reply.usage);
                            cost += c;
                            let record = || {
                                self.call_event(
                                    req.task_id,
                                    name,
                                    &reply.model,
                                    Some(reply.status),
                                    attempt,
                                    latency_ms,
                                    &reply.usage,
                                    c,
                                    None,
                                );
                            };
                            // The actual cost goes into the log and the reservation is
                            // given back in one step, under the budget lock.
                            match reservation.take() {
                                Some(r) => r.settle(record),
                                None => record(),
                            }
                            let (was, failures) = (breaker.state, breaker.failures);
                            breaker.success(Utc::now());
                            // A closed breaker with no failures needs no write.
                            if was != breaker.state || failures != 0 {
                                breaker.save(&self.breakers);
                            }
                            if was != breaker.state {
                                self.breaker_event(&breaker, req.task_id);
                            }
                            return Ok(Answer {
                                reply: reply.text,
                                provider: name.clone(),
                                model: reply.model,
                                tokens: reply.usage,
                                cost_usd: cost,
                                attempts,
                                http_us,
                                latency_ms: u64::try_from(started.elapsed().as_millis())
                                    .unwrap_or(u64::MAX),
                            });
                        }
                        Err(e) => {
                            self.call_event(
                                req.task_id,
                                name,
                                &p.model,
                                e.status,
                                attempt,
                                latency_ms,
                                &Usage::default(),
                                0.0,
                                Some(&e.message),
                            );
                            let retry = e.retryable && attempt < tries;
                            let wait = backoff(
                                attempt,
                                self.config.retry.base_ms,
                                self.config.retry.max_ms,
                                e.retry_after,
                            );
                            last = Some(e);
                            if !retry || Instant::now() + wait >= req.deadline {
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                // The call failed: nothing was spent, the reservation is given back.
                drop(reservation);
                let reason = last.map_or_else(|| "deadline passed".to_string(), |e| e.message);
                if breaker.failure(Utc::now(), &reason, &self.config.breaker) {
                    self.breaker_event(&breaker, req.task_id);
                }
                breaker.save(&self.breakers);
                failures.push((name.clone(), Failure::Call(reason)));
            }
            // Every provider open: wait for the first to half-open, within the deadline.
            let all_open = failures.len() == chain.len()
                && earliest.is_some()
                && failures
                    .iter()
                    .all(|(_, f)| matches!(f, Failure::CircuitOpen { .. }));
            match earliest {
                Some(t) if all_open => {
                    let wait = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    if Instant::now() + wait >= req.deadline {
                        return Err(RouteError { failures });
                    }
                    tokio::time::sleep(wait + Duration::from_millis(5)).await;
                }
                _ => return Err(RouteError { failures }),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_event(
        &self,
        task: Option<&str>,
        provider: &str,
        model: &str,
        status: Option<u16>,
        attempt: u32,
        latency_ms: u64,
        u: &Usage,
        cost: f64,
        error: Option<&str>,
    ) {
        self.log.record(
            task,
            None,
            event::LlmCall {
                provider: provider.to_string(),
                model: model.to_string(),
                status,
                attempt,
                latency_ms,
                input_tokens: u.input,
                output_tokens: u.output,
                cache_read_tokens: u.cache_read,
                cache_write_tokens: u.cache_write,
                reasoning_tokens: u.reasoning,
                cost_usd: cost,
                ok: error.is_none(),
                error: error.map(str::to_string),
            },
        );
    }

    fn breaker_event(&self, b: &Breaker, task: Option<&str>) {
        self.log.record(
            task,
            None,
            event::BreakerState {
                provider: b.provider.clone(),
                state: b.state,
                failures: b.failures,
                reason: b.reason.clone(),
                retry_at: b.retry_at,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_and_serialize_as_the_messages_they_replace() {
        let until = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = RouteError {
            failures: vec![
                (
                    "local".into(),
                    Failure::CircuitOpen {
                        until,
                        reason: "HTTP 500: boom".into(),
                    },
                ),
                ("strong".into(), Failure::Call("timed out".into())),
                ("gpt".into(), Failure::NoProvider),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no provider answered: local: circuit open until 2026-12-01T10:00:00Z \
             (HTTP 500: boom); strong: timed out; gpt: no configured provider serves this model"
        );
        // `architect ask --json` shows them as [provider, message] pairs, as before.
        assert_eq!(
            serde_json::to_value(&e.failures).unwrap(),
            serde_json::json!([
                [
                    "local",
                    "circuit open until 2026-12-01T10:00:00Z (HTTP 500: boom)"
                ],
                ["strong", "timed out"],
                ["gpt", "no configured provider serves this model"]
            ])
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        for retry in 1..=4 {
            let d = backoff(retry, 100, 10_000, None).as_millis();
            let exp = 100u128 << (retry - 1);
            assert!(d >= exp / 2 && d < exp / 2 + exp, "retry {retry}: {d}");
        }
        assert!(backoff(1, 100, 10_000, None) <= Duration::from_millis(150));
        assert_eq!(
            backoff(1, 100, 10_000, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff(1, 100, 1_000, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
        assert_eq!(backoff(30, 100, 5_000, None), Duration::from_millis(5_000));
    }
}
