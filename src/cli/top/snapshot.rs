//! What `architect top` shows, read from the spool: no terminal, no drawing. The same
//! readers as `status`, `sessions`, `tasks` and `nodes`, so `top` and those verbs agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use architect::config::Config;
use architect::daemon::DaemonLock;
use architect::log::{event, Event};
use architect::session::{PendingApproval, SessionFile};
use architect::spool::task::TaskState;
use architect::spool::Spool;

use crate::cli::{nodes, observe};

/// Final tasks listed per final state (the newest ids); live tasks are all listed.
const FINAL_TASKS_SHOWN: usize = 20;

/// The longest preview line kept, in characters.
const PREVIEW_CHARS: usize = 200;

/// The bytes replayed from the end of a recording for a session's preview.
const PREVIEW_TAIL_BYTES: u64 = 64 * 1024;

/// One session, as `sessions/<name>.json` says, plus the last line its screen printed.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session name.
    pub name: String,
    /// The node that runs it.
    pub node: String,
    /// `starting | idle | busy | waiting_input | attached | limited | dead`.
    pub state: String,
    /// The task it runs.
    pub task: Option<String>,
    /// When `state` last changed.
    pub since: DateTime<Utc>,
    /// The permission question waiting for a person.
    pub approval: Option<PendingApproval>,
    /// The last non-blank line of its terminal output (its recording, escape codes
    /// removed), at most [`PREVIEW_CHARS`] characters.
    pub preview: Option<String>,
}

/// One task, from its record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    /// Task id.
    pub id: String,
    /// Its state as `architect tasks` shows it (`waiting_lock` for a pending task waiting
    /// for its locks).
    pub state: String,
    /// The session it ran or runs on.
    pub session: Option<String>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The prompt, on one line.
    pub prompt: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Everything one frame of `architect top` shows, read at `taken_at`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was read.
    pub taken_at: DateTime<Utc>,
    /// This node's name.
    pub node: String,
    /// The daemon lock's holder (`pid node`) while a daemon runs; `None`: read-only.
    pub daemon: Option<String>,
    /// Every node's sessions, by name.
    pub sessions: Vec<SessionRow>,
    /// Tasks per spool directory, as `architect status` counts them: `inbox`, `pending`,
    /// `waiting_lock` (the pending tasks waiting for locks), `active`, `done`, `failed`,
    /// `cancelled`, `rejected`.
    pub queue: Vec<(String, usize)>,
    /// Live tasks (active, then pending) and the newest final ones, newest first in
    /// each state.
    pub tasks: Vec<TaskRow>,
    /// `task_completed` events in the minute before `taken_at`.
    pub done_last_minute: usize,
    /// `task_completed` events in the hour before `taken_at`.
    pub done_last_hour: usize,
    /// Spend logged on `taken_at`'s UTC day, USD: LLM calls' `cost_usd` plus agent CLIs'
    /// `agent_usage` (what `architect stats --cost` adds up).
    pub spend_today_usd: f64,
    /// The nodes of `config/nodes.toml` (empty for a single node), as `architect nodes`.
    pub nodes: Vec<nodes::Row>,
    /// What could not be read this time (shown, never fatal).
    pub problems: Vec<String>,
}

impl Snapshot {
    /// Reads the spool now. `log` keeps its place in the event log between calls, so
    /// each refresh reads only the lines added since the last one.
    ///
    /// Never fails: what cannot be read is named in [`Snapshot::problems`].
    pub fn load(spool: &Spool, config_dir: &Path, log: &mut LogFigures) -> Self {
        let now = Utc::now();
        let mut problems = Vec::new();
        let config = match Config::load(config_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(format!("config: {e:#}"));
                None
            }
        };
        let node = config
            .as_ref()
            .map_or_else(architect::config::default_node_name, |c| c.node.clone());
        let daemon = DaemonLock::is_held(spool);
        let sessions = match observe::read_sessions(spool) {
            Ok(list) => list.into_iter().map(|s| session_row(spool, s)).collect(),
            Err(e) => {
                problems.push(format!("sessions: {e:#}"));
                Vec::new()
            }
        };
        let counts = observe::task_counts(spool);
        let queue = observe::QUEUE_STATES
            .iter()
            .map(|k| {
                let n = counts
                    .get(*k)
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                ((*k).to_string(), usize::try_from(n).unwrap_or(usize::MAX))
            })
            .collect();
        if let Err(e) = log.update(&spool.log_dirs(), now) {
            problems.push(format!("event log: {e:#}"));
        }
        Snapshot {
            taken_at: now,
            node,
            daemon,
            sessions,
            queue,
            tasks: task_rows(spool),
            done_last_minute: log.completed_since(now - Duration::minutes(1)),
            done_last_hour: log.completed_since(now - Duration::hours(1)),
            spend_today_usd: log.spend_on(now.date_naive()),
            nodes: config
                .as_ref()
                .map(|c| nodes::rows_for(spool, c))
                .unwrap_or_default(),
            problems,
        }
    }

    /// The count of tasks in queue state `state` (a key of [`Snapshot::queue`]).
    #[must_use]
    pub fn count(&self, state: &str) -> usize {
        self.queue
            .iter()
            .find(|(k, _)| k == state)
            .map_or(0, |(_, n)| *n)
    }
}

fn session_row(spool: &Spool, s: SessionFile) -> SessionRow {
    // The last line of what the session's screen shows (its recording).
    let preview =
        architect::record::screen::current_recording(spool, &s.node, &s.name, s.task_id.as_deref())
            .and_then(|p| architect::record::screen::screen_lines(&p, PREVIEW_TAIL_BYTES))
            .and_then(|lines| {
                lines
                    .last()
                    .map(|l| l.trim().chars().take(PREVIEW_CHARS).collect())
            });
    SessionRow {
        name: s.name,
        node: s.node,
        state: s.state.as_str().to_string(),
        task: s.task_id,
        since: s.since,
        approval: s.approval,
        preview,
    }
}

/// Live tasks (all of them) and the newest [`FINAL_TASKS_SHOWN`] of each final state, in
/// a fleet each task once, where its best copy is.
fn task_rows(spool: &Spool) -> Vec<TaskRow> {
    let members = spool.members();
    let best = (members.len() > 1).then(|| spool.fleet_tasks());
    let mut rows = Vec::new();
    for state in [
        TaskState::Active,
        TaskState::Pending,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Done,
    ] {
        let mut recs = Vec::new();
        for m in &members {
            let mut ids = m.list_ids(state).unwrap_or_default();
            if state.is_final() {
                ids = ids.split_off(ids.len().saturating_sub(FINAL_TASKS_SHOWN));
            }
            for id in ids {
                let here = best.as_ref().is_none_or(|b| {
                    b.get(&id)
                        .is_some_and(|(bs, bm)| *bs == state && bm.state_root() == m.state_root())
                });
                if !here {
                    continue;
                }
                if let Ok(r) = m.read_record(&m.task_path(state, &id)) {
                    recs.push(r);
                }
            }
        }
        recs.sort_by(|a, b| {
            b.received_at
                .cmp(&a.received_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        if state.is_final() {
            recs.truncate(FINAL_TASKS_SHOWN);
        }
        rows.extend(recs.into_iter().map(|r| {
            TaskRow {
                state: r.display_state(state).to_string(),
                session: r
                    .session
                    .clone()
                    .or_else(|| r.attempts.last().map(|a| a.session.clone())),
                prompt: r
                    .task
                    .prompt
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                received_at: r.received_at,
                error: r.error,
                id: r.id,
            }
        }));
    }
    rows
}

/// The figures `top` derives from the event log (tasks completed in the last hour, spend
/// per UTC day), kept up to date by reading only the lines added since the last
/// [`LogFigures::update`] ([`architect::log::tail::LogTail`]). Only the files of today
/// and yesterday (UTC, by their names: [`architect::log::file_day`]) are read.
#[derive(Debug, Default)]
pub struct LogFigures {
    /// The log read so far; `None` until the first update.
    tail: Option<architect::log::tail::LogTail>,
    /// When each `task_completed` of the last hour was logged.
    completed: Vec<DateTime<Utc>>,
    /// USD per UTC day.
    spend: BTreeMap<NaiveDate, f64>,
}

impl LogFigures {
    /// Reads what was appended to the log files in `dirs` since the last call.
    ///
    /// # Errors
    /// A log directory cannot be listed, or a file cannot be read.
    pub fn update(&mut self, dirs: &[PathBuf], now: DateTime<Utc>) -> anyhow::Result<()> {
        let today = now.date_naive();
        let yesterday = today.pred_opt().unwrap_or(today);
        let tail = match &mut self.tail {
            Some(t) => t,
            None => self.tail.insert(architect::log::tail::LogTail::starting(
                dirs,
                |path, len| {
                    let day = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(architect::log::file_day);
                    // Older days' files (and files with no day) are skipped.
                    if day.is_some_and(|d| d >= yesterday) {
                        0
                    } else {
                        len
                    }
                },
            )?),
        };
        for e in tail.poll(dirs)? {
            self.add(&e);
        }
        let hour_ago = now - Duration::hours(1);
        self.completed.retain(|t| *t > hour_ago);
        self.spend.retain(|d, _| *d >= yesterday);
        Ok(())
    }

    /// Counts one event in.
    pub fn add(&mut self, e: &Event) {
        if e.payload::<event::TaskCompleted>().is_some() {
            self.completed.push(e.ts);
        } else if let Some(c) = e.payload::<event::LlmCall>() {
            *self.spend.entry(e.ts.date_naive()).or_default() += c.cost_usd;
        } else if let Some(u) = e.payload::<event::AgentUsage>() {
            *self.spend.entry(e.ts.date_naive()).or_default() += u.cost_usd;
        }
    }

    /// `task_completed` events logged after `t`.
    #[must_use]
    pub fn completed_since(&self, t: DateTime<Utc>) -> usize {
        self.completed.iter().filter(|c| **c > t).count()
    }

    /// USD spent on UTC day `day`.
    #[must_use]
    pub fn spend_on(&self, day: NaiveDate) -> f64 {
        self.spend.get(&day).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: DateTime<Utc>, line: &str) -> Event {
        let v = format!(
            r#"{{"ts":"{}","node":"n","type":{line}}}"#,
            ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        serde_json::from_str(&v).expect(&v)
    }

    #[test]
    fn the_log_tail_counts_completions_by_window_and_spend_by_day() {
        let now = Utc::now();
        let mut tail = LogFigures::default();
        let done = r#""task_completed","task_id":"t","session":"s","data":{"attempts":1,"duration_ms":5,"exit_status":0,"output_bytes":3}"#;
        tail.add(&event(now - Duration::seconds(10), done));
        tail.add(&event(now - Duration::minutes(10), done));
        let usage = r#""agent_usage","task_id":"t","session":"s","data":{"model":"m","input_tokens":1,"output_tokens":1,"cache_read_tokens":0,"cache_write_tokens":0,"reasoning_tokens":0,"cost_usd":0.25,"priced":true}"#;
        tail.add(&event(now, usage));
        tail.add(&event(now, usage));
        tail.add(&event(now - Duration::days(1), usage));
        assert_eq!(tail.completed_since(now - Duration::minutes(1)), 1);
        assert_eq!(tail.completed_since(now - Duration::hours(1)), 2);
        assert!((tail.spend_on(now.date_naive()) - 0.5).abs() < 1e-9);
    }
}
