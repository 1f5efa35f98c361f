//! Prometheus metrics, computed from the same files every other reader uses: the event
//! log (`log/events-*.jsonl`, every node's in a fleet) and the spool's state directories.
//! `architect metrics` prints them for node_exporter's textfile collector; a server can
//! keep a [`Scraper`] and answer `/metrics` with [`Scraper::scrape`].
//!
//! Two inputs, kept apart so the figures are decided in pure code:
//! - a [`Tally`] folds events, one at a time, into counters and histograms (what happened
//!   since the log began);
//! - a [`Snapshot`] is what the spool's files say now (tasks per state, sessions, the
//!   fleet's heartbeats), read by [`Snapshot::read`].
//!
//! [`render`] turns both into the text exposition format ([`CONTENT_TYPE`]);
//! [`metrics_from`] does the whole job for a slice of events.
//!
//! The metrics (all prefixed `architect_`; times in seconds, money in USD):
//!
//! | name | type | labels | from |
//! |---|---|---|---|
//! | `architect_tasks` | gauge | `state` | task records per state directory |
//! | `architect_sessions` | gauge | `state` | `sessions/<name>.json` |
//! | `architect_daemon_up` | gauge | | this node's daemon lock is held (1) or not (0) |
//! | `architect_dispatch_latency_seconds` | histogram | `session`, `profile` | `task_queued` (or the end of a retry's back-off) → `prompt_sent` |
//! | `architect_task_duration_seconds` | histogram | `session`, `profile`, `outcome` | `task_completed` / `task_failed` `duration_ms` |
//! | `architect_permission_decisions_total` | counter | `decision`, `rule` | `permission_decided` |
//! | `architect_llm_calls_total` | counter | `provider`, `model`, `outcome` | `llm_call` |
//! | `architect_llm_tokens_total` | counter | `provider`, `model`, `kind` | `llm_call` |
//! | `architect_llm_spend_usd_total` | counter | `provider`, `model` | `llm_call` `cost_usd` |
//! | `architect_agent_tokens_total` | counter | `profile`, `model`, `kind` | `agent_usage` |
//! | `architect_agent_spend_usd_total` | counter | `profile`, `model` | `agent_usage` `cost_usd` |
//! | `architect_llm_breaker_state` | gauge | `provider` | last `breaker_state`: 0 closed, 1 half-open, 2 open |
//! | `architect_lock_waits_total` | counter | | `lock_waiting` (a task found its locks held) |
//! | `architect_lock_wait_seconds` | histogram | | `lock_acquired` `waited_ms` (0 when it did not wait) |
//! | `architect_node_heartbeat_age_seconds` | gauge | `node` | this node's `view.json` (fleet only) |
//!
//! Cost: [`Scraper`] keeps a [`crate::log::tail::LogTail`] (a byte offset per log file), so a
//! long-lived scraper reads only what was appended since its last scrape. A one-shot
//! `architect metrics` starts from zero and reads the whole log (what `architect stats`
//! reads too); the spool's state directories are listed on every scrape.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Result;
use crate::log::event::{self, EventBody};
use crate::log::Event;
use crate::session::{SessionFile, SessionState};
use crate::spool::task::TaskState;
use crate::spool::Spool;
use crate::types::CircuitState;

/// The HTTP `Content-Type` of [`render`]'s text: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of `architect_dispatch_latency_seconds`, s: from 5 ms (a prompt delivered at
/// once) to 10 min (a task that waited for a free session).
pub const DISPATCH_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Buckets of `architect_task_duration_seconds`, s: 1 s to 2 h.
pub const DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Buckets of `architect_lock_wait_seconds`, s: 0 (no wait) to 1 h.
pub const LOCK_WAIT_BUCKETS: [f64; 11] = [
    0.0, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// What a label says when the log does not know it (a session whose `session_started`
/// is older than the oldest log file kept, an agent CLI that did not name its model).
const UNKNOWN: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    session: String,
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    session: String,
    profile: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    model: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    profile: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentTokenLabels {
    profile: String,
    model: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type FloatCounter = Counter<f64, std::sync::atomic::AtomicU64>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;
type Hist = Family<SessionLabels, Histogram, fn() -> Histogram>;
type DurationHist = Family<DurationLabels, Histogram, fn() -> Histogram>;

fn dispatch_histogram() -> Histogram {
    Histogram::new(DISPATCH_BUCKETS)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The breaker's state as the gauge `architect_llm_breaker_state` says it: 0 closed,
/// 1 half-open (one probe under way), 2 open (calls refused).
#[must_use]
pub fn breaker_value(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

/// What the event log says so far: counters and histograms folded from events, one at a
/// time ([`Tally::observe`]), in the order they happened.
///
/// It also remembers what it needs to pair events up (when each waiting task was queued,
/// each session's profile, each provider's last breaker state); it holds nothing read
/// from the spool's state directories (that is a [`Snapshot`]) and does no I/O.
#[derive(Debug)]
pub struct Tally {
    /// Task id → when it became ready to be sent (queued, or its retry's back-off ended).
    ready_at: HashMap<String, DateTime<Utc>>,
    /// Session → its profile, from `session_started`.
    profiles: HashMap<String, String>,
    breakers: BTreeMap<String, CircuitState>,
    dispatch: Hist,
    duration: DurationHist,
    decisions: Family<DecisionLabels, Counter>,
    llm_calls: Family<CallLabels, Counter>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_spend: Family<ModelLabels, FloatCounter>,
    agent_tokens: Family<AgentTokenLabels, Counter>,
    agent_spend: Family<AgentLabels, FloatCounter>,
    lock_waits: Counter,
    lock_wait: Histogram,
    events: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// An empty tally: every counter at zero.
    #[must_use]
    pub fn new() -> Self {
        Self {
            ready_at: HashMap::new(),
            profiles: HashMap::new(),
            breakers: BTreeMap::new(),
            dispatch: Family::new_with_constructor(dispatch_histogram),
            duration: Family::new_with_constructor(duration_histogram),
            decisions: Family::default(),
            llm_calls: Family::default(),
            llm_tokens: Family::default(),
            llm_spend: Family::default(),
            agent_tokens: Family::default(),
            agent_spend: Family::default(),
            lock_waits: Counter::default(),
            lock_wait: Histogram::new(LOCK_WAIT_BUCKETS),
            events: 0,
        }
    }

    /// How many events it has seen.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    fn profile_of(&self, session: Option<&str>) -> String {
        session
            .and_then(|s| self.profiles.get(s))
            .map_or_else(|| UNKNOWN.to_string(), Clone::clone)
    }

    fn session_labels(&self, e: &Event) -> SessionLabels {
        SessionLabels {
            session: e.session.clone().unwrap_or_else(|| UNKNOWN.to_string()),
            profile: self.profile_of(e.session.as_deref()),
        }
    }

    fn finished(&mut self, e: &Event, outcome: &str, duration_ms: Option<i64>) {
        if let Some(id) = &e.task_id {
            self.ready_at.remove(id);
        }
        if let Some(ms) = duration_ms {
            let l = self.session_labels(e);
            #[allow(clippy::cast_precision_loss)]
            self.duration
                .get_or_create(&DurationLabels {
                    session: l.session,
                    profile: l.profile,
                    outcome: outcome.to_string(),
                })
                .observe(ms.max(0) as f64 / 1000.0);
        }
    }

    /// Folds one event in. Events must come in time order for the dispatch latency to
    /// pair a `prompt_sent` with the `task_queued` before it; any other order only drops
    /// the pairs it breaks.
    pub fn observe(&mut self, e: &Event) {
        self.events += 1;
        match &e.body {
            EventBody::SessionStarted(s) => {
                if let Some(name) = &e.session {
                    self.profiles.insert(name.clone(), s.profile.clone());
                }
            }
            EventBody::TaskQueued(_) => {
                if let Some(id) = &e.task_id {
                    self.ready_at.insert(id.clone(), e.ts);
                }
            }
            EventBody::TaskRetried(r) => {
                if let Some(id) = &e.task_id {
                    let backoff = r
                        .retry_in_ms
                        .and_then(|ms| i64::try_from(ms).ok())
                        .map_or_else(chrono::Duration::zero, chrono::Duration::milliseconds);
                    self.ready_at.insert(id.clone(), e.ts + backoff);
                }
            }
            EventBody::PromptSent(p) => {
                let Some(ready) = e.task_id.as_ref().and_then(|id| self.ready_at.remove(id)) else {
                    return;
                };
                let seconds = (p.written_at - ready)
                    .to_std()
                    .map_or(0.0, |d| d.as_secs_f64());
                self.dispatch
                    .get_or_create(&self.session_labels(e))
                    .observe(seconds);
            }
            EventBody::TaskCompleted(c) => self.finished(e, "done", c.duration_ms),
            EventBody::TaskFailed(event::TaskFailed::Finished { duration_ms, .. }) => {
                self.finished(e, "failed", *duration_ms);
            }
            EventBody::TaskCancelled(_) => self.finished(e, "cancelled", None),
            EventBody::PermissionDecided(d) => {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        decision: d.decision.as_str().to_string(),
                        rule: d.rule.clone(),
                    })
                    .inc();
            }
            EventBody::LlmCall(c) => self.llm_call(c),
            EventBody::AgentUsage(u) => self.agent_usage(e, u),
            EventBody::BreakerState(b) => {
                self.breakers.insert(b.provider.clone(), b.state);
            }
            EventBody::LockWaiting(_) => {
                self.lock_waits.inc();
            }
            EventBody::LockAcquired(l) => {
                #[allow(clippy::cast_precision_loss)]
                self.lock_wait.observe(l.waited_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }

    fn llm_call(&mut self, c: &event::LlmCall) {
        let (provider, model) = (c.provider.clone(), c.model.clone());
        self.llm_calls
            .get_or_create(&CallLabels {
                provider: provider.clone(),
                model: model.clone(),
                outcome: if c.ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        for (kind, n) in [
            ("input", c.input_tokens),
            ("output", c.output_tokens),
            ("cache_read", c.cache_read_tokens),
            ("cache_write", c.cache_write_tokens),
            ("reasoning", c.reasoning_tokens),
        ] {
            self.llm_tokens
                .get_or_create(&TokenLabels {
                    provider: provider.clone(),
                    model: model.clone(),
                    kind: kind.to_string(),
                })
                .inc_by(n);
        }
        self.llm_spend
            .get_or_create(&ModelLabels { provider, model })
            .inc_by(c.cost_usd.max(0.0));
    }

    fn agent_usage(&mut self, e: &Event, u: &event::AgentUsage) {
        let profile = self.profile_of(e.session.as_deref());
        let model = u.model.clone().unwrap_or_else(|| UNKNOWN.to_string());
        for (kind, n) in [
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cache_read", u.cache_read_tokens),
            ("cache_write", u.cache_write_tokens),
            ("reasoning", u.reasoning_tokens),
        ] {
            self.agent_tokens
                .get_or_create(&AgentTokenLabels {
                    profile: profile.clone(),
                    model: model.clone(),
                    kind: kind.to_string(),
                })
                .inc_by(n);
        }
        self.agent_spend
            .get_or_create(&AgentLabels { profile, model })
            .inc_by(u.cost_usd.max(0.0));
    }
}

/// One session as the snapshot saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSnap {
    /// Session name.
    pub name: String,
    /// Its profile.
    pub profile: String,
    /// Its state.
    pub state: SessionState,
}

/// What the spool's files say now: the gauges. Read by [`Snapshot::read`]; built by hand
/// in tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// This node's daemon holds the spool's daemon lock.
    pub daemon_up: bool,
    /// Task records per state (each task once in a fleet, where its best copy is:
    /// [`Spool::fleet_tasks`]).
    pub tasks: BTreeMap<TaskState, u64>,
    /// Every node's sessions.
    pub sessions: Vec<SessionSnap>,
    /// In a fleet: node → seconds since this node's daemon last saw its heartbeat change
    /// (its `view.json`'s `silent_ms`, plus the file's age on this machine's clock).
    /// Empty for a single node.
    pub heartbeat_age_s: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Reads the spool's state directories, sessions and (in a fleet, for a spool opened
    /// as its node with [`Spool::for_node`]) this node's view of the others, at `now`.
    /// Unreadable session files and a missing or unreadable `view.json` are skipped (the
    /// figures they would give are left out, not invented).
    #[must_use]
    pub fn read(spool: &Spool, now: SystemTime) -> Self {
        let mut tasks: BTreeMap<TaskState, u64> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
        for (state, _) in spool.fleet_tasks().values() {
            *tasks.entry(*state).or_default() += 1;
        }
        let mut sessions = Vec::new();
        for m in spool.members() {
            let Ok(dir) = std::fs::read_dir(m.dir("sessions")) else {
                continue;
            };
            for p in dir.filter_map(std::result::Result::ok).map(|e| e.path()) {
                if p.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let Ok(bytes) = crate::durable::read_regular(&p, 1 << 20) else {
                    continue;
                };
                if let Ok(s) = serde_json::from_slice::<SessionFile>(&bytes) {
                    sessions.push(SessionSnap {
                        name: s.name,
                        profile: s.profile,
                        state: s.state,
                    });
                }
            }
        }
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            daemon_up: crate::daemon::DaemonLock::is_held(spool).is_some(),
            tasks,
            sessions,
            heartbeat_age_s: spool
                .member_node()
                .map(|me| heartbeat_ages(&spool.node_dir(&me).join("view.json"), now))
                .unwrap_or_default(),
        }
    }
}

/// Node → heartbeat age, s, from the view at `path`: the daemon's `silent_ms` when it
/// wrote the file, plus how long ago it did (its mtime, on this machine's clock).
fn heartbeat_ages(path: &Path, now: SystemTime) -> BTreeMap<String, f64> {
    let Ok(bytes) = crate::durable::read_regular(path, 1 << 20) else {
        return BTreeMap::new();
    };
    let Ok(view) = serde_json::from_slice::<crate::fleet::View>(&bytes) else {
        return BTreeMap::new();
    };
    let written_ago = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    view.nodes
        .into_iter()
        .map(|(node, v)| {
            #[allow(clippy::cast_precision_loss)]
            let age = v.silent_ms as f64 / 1000.0 + written_ago;
            (node, age)
        })
        .collect()
}

/// The metrics of `tally` and `snapshot` in the Prometheus text format 0.0.4
/// ([`CONTENT_TYPE`]; the table in the module doc lists them). Every task and session
/// state is written, with 0 for the empty ones.
#[must_use]
pub fn render(tally: &Tally, snapshot: &Snapshot) -> String {
    let mut r = Registry::default();

    let tasks = Family::<StateLabel, Gauge>::default();
    for (state, n) in &snapshot.tasks {
        tasks
            .get_or_create(&StateLabel {
                state: state.dir().to_string(),
            })
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    r.register(
        "architect_tasks",
        "Tasks per state: the task records in the spool's pending, active, done, failed and cancelled directories",
        tasks,
    );

    let sessions = Family::<StateLabel, Gauge>::default();
    for st in SessionState::ALL {
        let n = snapshot.sessions.iter().filter(|s| s.state == st).count();
        sessions
            .get_or_create(&StateLabel {
                state: st.as_str().to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    r.register(
        "architect_sessions",
        "Sessions per state (sessions/<name>.json of every node)",
        sessions,
    );

    let up = Gauge::<i64>::default();
    up.set(i64::from(snapshot.daemon_up));
    r.register(
        "architect_daemon_up",
        "1 when this node's daemon holds the spool's lock, else 0",
        up,
    );

    r.register(
        "architect_dispatch_latency_seconds",
        "Seconds from a task being ready (queued, or its retry back-off over) to its prompt's first byte written to the session",
        tally.dispatch.clone(),
    );
    r.register(
        "architect_task_duration_seconds",
        "Seconds a finished task's last attempt ran, by the session that ran it and its outcome (done or failed)",
        tally.duration.clone(),
    );
    r.register(
        "architect_permission_decisions",
        "Permission questions answered, by decision (allow, deny, escalate) and the policy rule that decided (or person)",
        tally.decisions.clone(),
    );
    r.register(
        "architect_llm_calls",
        "HTTP calls to LLM providers, by provider, model and outcome (ok or error)",
        tally.llm_calls.clone(),
    );
    r.register(
        "architect_llm_tokens",
        "Tokens billed by LLM providers, by provider, model and kind (input, output, cache_read, cache_write, reasoning)",
        tally.llm_tokens.clone(),
    );
    r.register(
        "architect_llm_spend_usd",
        "Spend on LLM provider calls, USD, by provider and model",
        tally.llm_spend.clone(),
    );
    r.register(
        "architect_agent_tokens",
        "Tokens agent CLIs reported for their tasks, by the session's profile, model and kind",
        tally.agent_tokens.clone(),
    );
    r.register(
        "architect_agent_spend_usd",
        "Spend of agent CLIs, USD (config/prices.toml), by the session's profile and model",
        tally.agent_spend.clone(),
    );
    let breakers = Family::<ProviderLabel, Gauge>::default();
    for (provider, state) in &tally.breakers {
        breakers
            .get_or_create(&ProviderLabel {
                provider: provider.clone(),
            })
            .set(breaker_value(*state));
    }
    r.register(
        "architect_llm_breaker_state",
        "Each LLM provider's circuit breaker, as last logged: 0 closed, 1 half-open, 2 open",
        breakers,
    );
    r.register(
        "architect_lock_waits",
        "Times a task found the branch or path locks it needs held by another and waited",
        tally.lock_waits.clone(),
    );
    r.register(
        "architect_lock_wait_seconds",
        "Seconds tasks waited for their locks before taking them (0: no wait)",
        tally.lock_wait.clone(),
    );
    if !snapshot.heartbeat_age_s.is_empty() {
        let ages = Family::<NodeLabel, FloatGauge>::default();
        for (node, age) in &snapshot.heartbeat_age_s {
            ages.get_or_create(&NodeLabel { node: node.clone() })
                .set(*age);
        }
        r.register(
            "architect_node_heartbeat_age_seconds",
            "Seconds since this node's daemon last saw each node's heartbeat change (fleet only)",
            ages,
        );
    }
    encode(&r)
}

/// The registry in the Prometheus text format 0.0.4. prometheus-client writes
/// OpenMetrics text; the classic format differs in three places that matter to its
/// readers (node_exporter's textfile collector, `promtool check metrics`): a counter's
/// `# TYPE`/`# HELP` name ends in `_total` like its sample, and there are no `# UNIT` and
/// `# EOF` lines.
fn encode(r: &Registry) -> String {
    let mut open = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut open, r);
    openmetrics_to_prometheus(&open)
}

/// See [`encode`].
fn openmetrics_to_prometheus(text: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in text.lines() {
        if let Some(name) = l
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        if l.starts_with("# UNIT ") || l == "# EOF" {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

/// The metrics of `events` (in time order) and `snapshot`: a fresh [`Tally`] of the
/// events, [`render`]ed.
#[must_use]
pub fn metrics_from(events: &[Event], snapshot: &Snapshot) -> String {
    let mut t = Tally::new();
    for e in events {
        t.observe(e);
    }
    render(&t, snapshot)
}

/// Scrapes a spool again and again, reading only what the logs gained since the last
/// time ([`crate::log::tail::LogTail`]: a torn last line is read when it is complete, a
/// file that shrank is not read again from its start, so nothing is counted twice).
#[derive(Debug, Default)]
pub struct Scraper {
    tail: crate::log::tail::LogTail,
    tally: Tally,
}

impl Scraper {
    /// A scraper that has read nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What has been read so far.
    #[must_use]
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Reads the new lines of every node's log ([`Spool::log_dirs`]), folds their events
    /// into the tally (sorted by time, within this scrape), takes a [`Snapshot`] and
    /// renders the text.
    ///
    /// # Errors
    /// [`crate::error::Error::Io`] when a log directory or file cannot be read.
    pub fn scrape(&mut self, spool: &Spool) -> Result<String> {
        let mut events = self.tail.poll(&spool.log_dirs())?;
        events.sort_by_key(|e| e.ts);
        for e in &events {
            self.tally.observe(e);
        }
        Ok(render(
            &self.tally,
            &Snapshot::read(spool, SystemTime::now()),
        ))
    }
}

#[cfg(test)]
mod tests;
