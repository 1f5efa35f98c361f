//! The decision, in pure code: an event and the time in, the notifications to send out
//! ([`Notifier::decide`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::rules::{Format, Rule, Rules};
use super::trigger::{summary, Trigger};
use crate::log::Event;

/// One notification to send: a rule that fired on an event.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The rule (its action, timeout, name).
    pub rule: Arc<Rule>,
    /// What fired it.
    pub trigger: Trigger,
    /// The event, as logged.
    pub event: Event,
    /// Events this rule dropped for its rate limit since its last send.
    pub suppressed: u64,
}

impl Notification {
    /// The JSON a command gets on stdin and a `format = "json"` webhook is POSTed:
    ///
    /// `{"rule": <rule name>, "trigger": <its events name, e.g. "session_dead">,
    ///   "summary": <one line, [`summary`]>, "suppressed": <count>,
    ///   "event": <the event's log line as an object, redacted>}`.
    #[must_use]
    pub fn body(&self) -> Value {
        json!({
            "rule": self.rule.name,
            "trigger": self.trigger.as_str(),
            "summary": summary(&self.event),
            "suppressed": self.suppressed,
            "event": serde_json::to_value(&self.event).unwrap_or(Value::Null),
        })
    }

    /// The Slack incoming-webhook body: `{"text": "<summary>"}`, with
    /// ` (+N more suppressed by the rate limit)` when the rule dropped some.
    #[must_use]
    pub fn slack(&self) -> Value {
        let mut text = summary(&self.event);
        if self.suppressed > 0 {
            text.push_str(&format!(
                " (+{} more suppressed by the rate limit)",
                self.suppressed
            ));
        }
        json!({ "text": text })
    }

    /// The body for this rule's action and format ([`Notification::body`] or
    /// [`Notification::slack`]).
    #[must_use]
    pub fn payload(&self) -> Value {
        match &self.rule.action {
            super::Action::Webhook {
                format: Format::Slack,
                ..
            } => self.slack(),
            _ => self.body(),
        }
    }
}

/// A rule's memory: its token bucket and what it sent lately.
#[derive(Debug)]
struct RuleState {
    /// Sends allowed now (≤ `burst`).
    tokens: u32,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// Events dropped for the rate limit since the last send.
    suppressed: u64,
    /// Dedup key → when it was last sent.
    sent: HashMap<String, Instant>,
}

/// Decides which `[[notify]]` rules fire on each event.
///
/// For each rule, in file order, an event is sent when, in this order:
/// 1. it is one of the rule's `events` ([`Trigger::of`]);
/// 2. its session is one of `sessions` and its session's profile one of `profiles`, when
///    the rule names any (an event without a session then does not match);
/// 3. the rule has not sent the same event ([`Trigger::dedup_key`]) within
///    `dedup_window` (a duplicate is dropped silently: it was sent);
/// 4. the rule's token bucket has a token: it holds up to `burst`, starts full, and
///    regains one per `min_interval` (zero: no limit). Without one the event is dropped
///    and counted in the next send's `suppressed`.
///
/// Holds the rules, each rule's bucket and recent dedup keys, and the sessions' profiles;
/// not the sending (commands, HTTP: [`super::Notifications`]) nor a clock (`now` is given).
#[derive(Debug, Default)]
pub struct Notifier {
    rules: Vec<Arc<Rule>>,
    /// Session name → profile name.
    profiles: HashMap<String, String>,
    /// By rule name.
    state: HashMap<String, RuleState>,
}

impl Notifier {
    /// A notifier for `rules`; `profiles` maps session names to their profiles (for a
    /// rule's `profiles` filter).
    #[must_use]
    pub fn new(rules: Rules, profiles: HashMap<String, String>) -> Self {
        let mut n = Self::default();
        n.set_rules(rules, profiles);
        n
    }

    /// Replaces the rules (a reloaded `notify.toml`). A rule that keeps its name keeps
    /// its bucket (capped at its new `burst`) and its dedup memory; a removed rule's are
    /// forgotten.
    pub fn set_rules(&mut self, rules: Rules, profiles: HashMap<String, String>) {
        self.rules = rules.0.into_iter().map(Arc::new).collect();
        self.profiles = profiles;
        let names: std::collections::HashSet<&str> =
            self.rules.iter().map(|r| r.name.as_str()).collect();
        self.state.retain(|name, _| names.contains(name.as_str()));
        for r in &self.rules {
            if let Some(s) = self.state.get_mut(&r.name) {
                s.tokens = s.tokens.min(r.burst);
            }
        }
    }

    /// Whether any rule is set (without one, no event needs looking at).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The notifications `event`, seen at `now`, sends (one per rule that fires; see
    /// [`Notifier`] for the rules), updating the rules' buckets and dedup memory.
    pub fn decide(&mut self, event: &Event, now: Instant) -> Vec<Notification> {
        let Some(trigger) = Trigger::of(event) else {
            return Vec::new();
        };
        let key = trigger.dedup_key(event);
        let mut out = Vec::new();
        for rule in &self.rules {
            if !rule.events.contains(&trigger) || !self.matches_filters(rule, event) {
                continue;
            }
            let s = self.state.entry(rule.name.clone()).or_insert(RuleState {
                tokens: rule.burst,
                refilled: now,
                suppressed: 0,
                sent: HashMap::new(),
            });
            let window = rule.dedup_window;
            s.sent
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            if s.sent.contains_key(&key) {
                continue;
            }
            if !take_token(s, rule, now) {
                s.suppressed += 1;
                continue;
            }
            if !window.is_zero() {
                s.sent.insert(key.clone(), now);
            }
            out.push(Notification {
                rule: rule.clone(),
                trigger,
                event: event.clone(),
                suppressed: std::mem::take(&mut s.suppressed),
            });
        }
        out
    }

    fn matches_filters(&self, rule: &Rule, event: &Event) -> bool {
        if rule.sessions.is_empty() && rule.profiles.is_empty() {
            return true;
        }
        let Some(session) = event.session.as_deref() else {
            return false;
        };
        let session_ok = rule.sessions.is_empty() || rule.sessions.iter().any(|s| s == session);
        let profile_ok = rule.profiles.is_empty()
            || self
                .profiles
                .get(session)
                .is_some_and(|p| rule.profiles.contains(p));
        session_ok && profile_ok
    }
}

/// Brings `s`'s bucket up to `now` and takes a token if there is one.
fn take_token(s: &mut RuleState, rule: &Rule, now: Instant) -> bool {
    let interval = rule.min_interval;
    if interval.is_zero() {
        return true;
    }
    let elapsed = now.saturating_duration_since(s.refilled);
    let earned = elapsed.as_nanos() / interval.as_nanos();
    if earned > 0 {
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        s.tokens = s.tokens.saturating_add(earned).min(rule.burst);
        s.refilled = if s.tokens == rule.burst {
            now
        } else {
            s.refilled + interval * earned
        };
    }
    if s.tokens == 0 {
        return false;
    }
    if s.tokens == rule.burst {
        // A full bucket does not fill further: the next token is earned from now.
        s.refilled = now;
    }
    s.tokens -= 1;
    true
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::log::event;
    use crate::log::EventBody;

    fn rules(text: &str) -> Rules {
        Rules::parse(text, Path::new("notify.toml"), |_| None).unwrap()
    }

    fn rule(extra: &str) -> Rules {
        rules(&format!(
            "[[notify]]\nname = \"r\"\nevents = [\"task_failed\", \"session_dead\"]\n\
             command = [\"true\"]\n{extra}\n"
        ))
    }

    fn ev(task: &str, session: Option<&str>, body: impl Into<EventBody>) -> Event {
        Event {
            ts: Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap(),
            node: "n1".into(),
            task_id: Some(task.into()),
            session: session.map(str::to_string),
            body: body.into(),
        }
    }

    fn failed(task: &str) -> Event {
        ev(
            task,
            Some("sh-1"),
            event::TaskFailed::Finished {
                attempts: 1,
                duration_ms: Some(5),
                error: Some("exit status 1".into()),
            },
        )
    }

    /// A fake clock: `at(s)` is `s` seconds after a fixed start.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, secs: f64) -> Instant {
            self.0 + Duration::from_secs_f64(secs)
        }
    }

    fn sent(n: &mut Notifier, e: &Event, now: Instant) -> Vec<(String, u64)> {
        n.decide(e, now)
            .into_iter()
            .map(|x| (x.event.task_id.clone().unwrap(), x.suppressed))
            .collect()
    }

    #[test]
    fn an_event_no_rule_names_sends_nothing() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(rule(""), HashMap::new());
        let done = ev(
            "t1",
            None,
            event::TaskCompleted {
                attempts: 1,
                duration_ms: None,
                exit_status: Some(0),
                output_bytes: 0,
            },
        );
        assert!(n.decide(&done, c.at(0.0)).is_empty());
        let mut n = Notifier::new(
            rules("[[notify]]\nname = \"r\"\nevents = [\"approval_needed\"]\ncommand = [\"x\"]\n"),
            HashMap::new(),
        );
        assert!(n.decide(&failed("t1"), c.at(0.0)).is_empty());
    }

    #[test]
    fn the_same_event_within_the_window_is_sent_once_and_again_after_it() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(
            rule("dedup_window_s = 60\nmin_interval_s = 0"),
            HashMap::new(),
        );
        assert_eq!(sent(&mut n, &failed("t1"), c.at(0.0)), [("t1".into(), 0)]);
        assert!(sent(&mut n, &failed("t1"), c.at(59.9)).is_empty());
        // Another task is another event.
        assert_eq!(sent(&mut n, &failed("t2"), c.at(30.0)), [("t2".into(), 0)]);
        // The window counts from the send: at 60 s t1 is news again.
        assert_eq!(sent(&mut n, &failed("t1"), c.at(60.0)), [("t1".into(), 0)]);
        assert!(sent(&mut n, &failed("t1"), c.at(100.0)).is_empty());
    }

    #[test]
    fn a_zero_window_sends_every_repeat() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(
            rule("dedup_window_s = 0\nmin_interval_s = 0"),
            HashMap::new(),
        );
        for i in 0..3 {
            assert_eq!(sent(&mut n, &failed("t1"), c.at(f64::from(i))).len(), 1);
        }
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval_and_counts_what_it_dropped() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(rule("burst = 2\nmin_interval_s = 10"), HashMap::new());
        assert_eq!(sent(&mut n, &failed("a"), c.at(0.0)), [("a".into(), 0)]);
        assert_eq!(sent(&mut n, &failed("b"), c.at(1.0)), [("b".into(), 0)]);
        // The bucket is empty: c and d are dropped and counted.
        assert!(sent(&mut n, &failed("c"), c.at(2.0)).is_empty());
        assert!(sent(&mut n, &failed("d"), c.at(9.9)).is_empty());
        // One token 10 s after the bucket began to refill (at the first send).
        assert_eq!(sent(&mut n, &failed("e"), c.at(10.0)), [("e".into(), 2)]);
        assert!(sent(&mut n, &failed("f"), c.at(15.0)).is_empty());
        assert_eq!(sent(&mut n, &failed("g"), c.at(20.0)), [("g".into(), 1)]);
        // A long quiet spell fills the bucket to `burst`, not beyond.
        assert_eq!(sent(&mut n, &failed("h"), c.at(1000.0)).len(), 1);
        assert_eq!(sent(&mut n, &failed("i"), c.at(1000.0)).len(), 1);
        assert!(sent(&mut n, &failed("j"), c.at(1000.0)).is_empty());
    }

    #[test]
    fn a_rate_limited_event_is_not_remembered_as_sent() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(rule("burst = 1\nmin_interval_s = 10"), HashMap::new());
        assert_eq!(sent(&mut n, &failed("a"), c.at(0.0)).len(), 1);
        assert!(sent(&mut n, &failed("b"), c.at(1.0)).is_empty());
        // b was never sent, so it is not a duplicate once a token is back.
        assert_eq!(sent(&mut n, &failed("b"), c.at(10.0)), [("b".into(), 1)]);
    }

    #[test]
    fn rules_keep_their_own_buckets_and_dedup() {
        let c = Clock(Instant::now());
        let text = "[[notify]]\nname = \"one\"\nevents = [\"task_failed\"]\ncommand = [\"x\"]\n\
                    burst = 1\nmin_interval_s = 3600\n\
                    [[notify]]\nname = \"all\"\nevents = [\"task_failed\"]\ncommand = [\"x\"]\n\
                    min_interval_s = 0\n";
        let mut n = Notifier::new(rules(text), HashMap::new());
        let names = |v: Vec<Notification>| {
            v.into_iter()
                .map(|x| x.rule.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(n.decide(&failed("a"), c.at(0.0))), ["one", "all"]);
        assert_eq!(names(n.decide(&failed("b"), c.at(1.0))), ["all"]);
    }

    #[test]
    fn session_and_profile_filters_match_the_events_session() {
        let c = Clock(Instant::now());
        let profiles = HashMap::from([
            ("sh-1".to_string(), "shell".to_string()),
            ("cc".to_string(), "claude".to_string()),
        ]);
        let mut by_session = Notifier::new(rule("sessions = [\"sh-1\"]"), profiles.clone());
        let mut by_profile = Notifier::new(rule("profiles = [\"claude\"]"), profiles);
        let on = |s: Option<&str>, t: &str| {
            ev(
                t,
                s,
                event::TaskFailed::Finished {
                    attempts: 1,
                    duration_ms: None,
                    error: None,
                },
            )
        };
        assert_eq!(
            by_session.decide(&on(Some("sh-1"), "a"), c.at(0.0)).len(),
            1
        );
        assert!(by_session
            .decide(&on(Some("cc"), "b"), c.at(0.0))
            .is_empty());
        assert!(by_session.decide(&on(None, "c"), c.at(0.0)).is_empty());
        assert_eq!(by_profile.decide(&on(Some("cc"), "d"), c.at(0.0)).len(), 1);
        assert!(by_profile
            .decide(&on(Some("sh-1"), "e"), c.at(0.0))
            .is_empty());
        assert!(by_profile
            .decide(&on(Some("gone"), "f"), c.at(0.0))
            .is_empty());
    }

    #[test]
    fn a_reload_keeps_the_state_of_rules_that_stay_and_caps_their_bucket() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(rule("burst = 3\nmin_interval_s = 60"), HashMap::new());
        assert_eq!(sent(&mut n, &failed("a"), c.at(0.0)).len(), 1);
        n.set_rules(rule("burst = 1\nmin_interval_s = 60"), HashMap::new());
        // Two tokens were left; the new burst caps them at one.
        assert_eq!(sent(&mut n, &failed("b"), c.at(1.0)).len(), 1);
        assert!(sent(&mut n, &failed("c"), c.at(2.0)).is_empty());
        // a is still remembered.
        assert!(sent(&mut n, &failed("a"), c.at(120.0)).is_empty());
        // A rule renamed is a new rule: its bucket is full, its memory empty.
        n.set_rules(
            rules("[[notify]]\nname = \"s\"\nevents = [\"task_failed\"]\ncommand = [\"x\"]\n"),
            HashMap::new(),
        );
        assert_eq!(sent(&mut n, &failed("a"), c.at(121.0)).len(), 1);
        n.set_rules(Rules::default(), HashMap::new());
        assert!(n.is_empty());
        assert!(n.decide(&failed("z"), c.at(122.0)).is_empty());
    }

    #[test]
    fn the_bodies_carry_the_rule_the_trigger_the_summary_and_the_event_line() {
        let c = Clock(Instant::now());
        let mut n = Notifier::new(rule("burst = 1\nmin_interval_s = 10"), HashMap::new());
        n.decide(&failed("a"), c.at(0.0));
        n.decide(&failed("b"), c.at(1.0));
        let x = n.decide(&failed("c"), c.at(10.0)).remove(0);
        let body = x.body();
        assert_eq!(body["rule"], "r");
        assert_eq!(body["trigger"], "task_failed");
        assert_eq!(body["suppressed"], 1);
        assert_eq!(body["event"]["type"], "task_failed");
        assert_eq!(body["event"]["task_id"], "c");
        assert_eq!(body["event"]["data"]["error"], "exit status 1");
        assert_eq!(
            body["summary"],
            "[n1] task c failed on session sh-1 after 1 attempt(s): exit status 1"
        );
        assert_eq!(
            x.slack(),
            json!({"text": "[n1] task c failed on session sh-1 after 1 attempt(s): exit status 1 (+1 more suppressed by the rate limit)"})
        );
        // A command gets the generic body.
        assert_eq!(x.payload(), body);
        let dead = ev(
            "t",
            Some("sh-1"),
            event::SessionExited {
                status: "exit 1".into(),
                requested: false,
                uptime_ms: Some(10),
            },
        );
        let x = n.decide(&dead, c.at(20.0)).remove(0);
        assert_eq!(x.body()["trigger"], "session_dead");
        assert_eq!(x.body()["event"]["type"], "session_exited");
    }
}
