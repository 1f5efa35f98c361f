//! The event log: the product's record of what happened, as JSON Lines.
//!
//! Each event is one line of `log/events-<node>-<YYYYMMDD>.jsonl` (UTC date), appended
//! with a single `write(2)` on a file opened `O_APPEND`, so concurrent writers never
//! interleave inside a line and a crash can tear only the last line. Readers (DuckDB's
//! `read_json(…, ignore_errors=true)`, [`read_events`]) skip a torn line.
//! Every string in `data` passes through [`redact()`] first: nothing that looks like a
//! secret is written.

pub mod redact;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
pub use redact::redact;

/// One event, one line. Field order is the on-disk order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When it happened (RFC 3339, UTC, microseconds).
    #[serde(with = "ts_micros")]
    pub ts: DateTime<Utc>,
    /// Node that wrote it.
    pub node: String,
    /// Event type (`task_received`, `session_state`, …; see [`EventType`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// The task concerned, if any.
    pub task_id: Option<String>,
    /// The session concerned, if any.
    pub session: Option<String>,
    /// Details; strings are redacted.
    pub data: Value,
}

mod ts_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// The event types `architect` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventType {
    /// A valid task file was read from the inbox.
    TaskReceived,
    /// An inbox file was rejected (`data.errors`).
    TaskRejected,
    /// A task entered the queue (`data.priority`, `data.depends_on`).
    TaskQueued,
    /// A task was handed to a session (`data.attempt`).
    TaskAssigned,
    /// The prompt's first byte went to the terminal (`data.latency_ms` from assignment).
    PromptSent,
    /// A task finished successfully (`data.duration_ms`).
    TaskCompleted,
    /// A task failed for good (`data.error`).
    TaskFailed,
    /// An attempt failed and the task was queued again (`data.error`, `data.retry_in_ms`).
    TaskRetried,
    /// A task was cancelled.
    TaskCancelled,
    /// A session changed state (`data.state`, `data.previous`).
    SessionState,
    /// A session's program was started (`data.pid`, `data.command`).
    SessionStarted,
    /// A session's program exited (`data.status`).
    SessionExited,
    /// The daemon started (`data.pid`, `data.version`).
    DaemonStarted,
    /// The daemon stopped.
    DaemonStopped,
    /// Config was (re)loaded (`data.sessions`, `data.errors`).
    ConfigApplied,
    /// A Syncthing conflict copy sits in the inbox (`data.file`).
    SyncConflict,
    /// Text was typed into a session by `architect send`.
    TextSent,
    /// A task took its locks (`data.resources`, `data.waited_ms`).
    LockAcquired,
    /// A task's locks are held elsewhere; it waits (`data.resources`, `data.blocked_by`).
    LockWaiting,
    /// A task's locks were released (`data.resources`, `data.held_ms`).
    LockReleased,
    /// A permission question was answered (`data.permission`, `data.kind`, `data.action`,
    /// `data.decision`, `data.rule`, `data.reason`, `data.by`: `policy` or `person`).
    PermissionDecided,
    /// A permission question waits for `architect approve|deny` (`data.action`,
    /// `data.rule`, `data.reason`).
    ApprovalNeeded,
    /// A worktree session's worktree was created or switched (`data.branch`,
    /// `data.switched_from`, `data.saved`: uncommitted work committed, and where).
    WorktreePrepared,
    /// Worktrees left by a crash or a removed session were cleaned up at start-up
    /// (`data.removed`, `data.saved`, `data.deleted_branches`, …).
    WorktreesReconciled,
    /// One HTTP call to an LLM provider (`data.provider`, `data.model`, `data.status`,
    /// `data.attempt`, `data.latency_ms`, `data.*_tokens`, `data.cost_usd` in USD,
    /// `data.ok`, `data.error`).
    LlmCall,
    /// A provider's circuit breaker changed (`data.provider`, `data.state`, `data.reason`).
    BreakerState,
    /// A call was not made because it could break a budget (`data.provider`,
    /// `data.budget`, `data.limit_usd`, `data.spent_usd`, `data.estimate_usd`).
    BudgetExceeded,
    /// A prompt was taken by its session (`data.evidence`: what proved it,
    /// `data.after_enter_ms`).
    PromptAccepted,
    /// An agent CLI's hook reported something (`data.event`, `data.signal`).
    HookReceived,
    /// A session hit a usage limit and is parked (`data.message`, `data.reset_in_s`,
    /// `data.until`).
    SessionLimited,
    /// Tokens an agent CLI used for a task (`data.model`, `data.input_tokens`,
    /// `data.output_tokens`, `data.cache_read_tokens`, `data.cache_write_tokens`,
    /// `data.reasoning_tokens`, `data.cost_usd` in USD from `config/prices.toml`).
    AgentUsage,
}

impl EventType {
    /// The `type` string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskReceived => "task_received",
            Self::TaskRejected => "task_rejected",
            Self::TaskQueued => "task_queued",
            Self::TaskAssigned => "task_assigned",
            Self::PromptSent => "prompt_sent",
            Self::TaskCompleted => "task_completed",
            Self::TaskFailed => "task_failed",
            Self::TaskRetried => "task_retried",
            Self::TaskCancelled => "task_cancelled",
            Self::SessionState => "session_state",
            Self::SessionStarted => "session_started",
            Self::SessionExited => "session_exited",
            Self::DaemonStarted => "daemon_started",
            Self::DaemonStopped => "daemon_stopped",
            Self::ConfigApplied => "config_applied",
            Self::SyncConflict => "sync_conflict",
            Self::TextSent => "text_sent",
            Self::LockAcquired => "lock_acquired",
            Self::LockWaiting => "lock_waiting",
            Self::LockReleased => "lock_released",
            Self::PermissionDecided => "permission_decided",
            Self::ApprovalNeeded => "approval_needed",
            Self::WorktreePrepared => "worktree_prepared",
            Self::WorktreesReconciled => "worktrees_reconciled",
            Self::LlmCall => "llm_call",
            Self::BreakerState => "breaker_state",
            Self::BudgetExceeded => "budget_exceeded",
            Self::PromptAccepted => "prompt_accepted",
            Self::HookReceived => "hook_received",
            Self::SessionLimited => "session_limited",
            Self::AgentUsage => "agent_usage",
        }
    }
}

/// Appends events to `log/events-<node>-<YYYYMMDD>.jsonl`, switching files at UTC midnight.
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    node: String,
    open: Mutex<Option<(String, File)>>,
}

impl EventLog {
    /// A log writing into `dir` for `node`.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            node: node.into(),
            open: Mutex::new(None),
        }
    }

    /// The directory the log files are in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node name events are stamped with.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Appends one event (one `write(2)`), redacting every string in `data`.
    ///
    /// # Errors
    /// [`Error::Io`] when the log file cannot be opened or written.
    pub fn emit(
        &self,
        kind: EventType,
        task_id: Option<&str>,
        session: Option<&str>,
        data: Value,
    ) -> Result<()> {
        let event = Event {
            ts: Utc::now(),
            node: self.node.clone(),
            kind: kind.as_str().to_string(),
            task_id: task_id.map(str::to_string),
            session: session.map(str::to_string),
            data: redact::redact_value(data),
        };
        self.append(&event)
    }

    /// Like [`EventLog::emit`], but a failure is reported through tracing instead of
    /// returned: the daemon keeps working when the log disk is full.
    pub fn record(
        &self,
        kind: EventType,
        task_id: Option<&str>,
        session: Option<&str>,
        data: Value,
    ) {
        if let Err(e) = self.emit(kind, task_id, session, data) {
            tracing::error!("event log: {e}");
        }
    }

    /// Appends a prepared event (its `data` is written as given).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn append(&self, event: &Event) -> Result<()> {
        let mut line = serde_json::to_vec(event).map_err(|e| Error::json("event", e))?;
        line.push(b'\n');
        let day = event.ts.format("%Y%m%d").to_string();
        let mut guard = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_none_or(|(d, _)| *d != day) {
            let path = self.dir.join(format!("events-{}-{day}.jsonl", self.node));
            // O_NOFOLLOW: a symlink planted at the day's log file is refused, never
            // followed (appending to its target).
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Error::io("opening event log", &path, e))?;
            *guard = Some((day, f));
        }
        let (_, f) = guard.as_mut().expect("opened above");
        // One write call for the whole line: O_APPEND makes it land at the end in one piece.
        let n = f
            .write(&line)
            .map_err(|e| Error::io("appending to event log", &self.dir, e))?;
        if n != line.len() {
            return Err(Error::io(
                "appending to event log (short write)",
                &self.dir,
                std::io::Error::other(format!("{n} of {} bytes", line.len())),
            ));
        }
        Ok(())
    }
}

/// The event log files in `dir`, oldest first (by name: node, then date).
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("listing", dir, e))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every event in `dir`, sorted by time. Lines that do not parse (a torn last line)
/// are skipped.
///
/// # Errors
/// [`Error::Io`].
pub fn read_events(dir: &Path) -> Result<Vec<Event>> {
    read_events_in(dir, |_| true)
}

/// Reads the events of the log files in `dir` whose file name `keep` accepts (names are
/// `events-<node>-<YYYYMMDD>.jsonl`), sorted by time.
///
/// # Errors
/// [`Error::Io`].
pub fn read_events_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let files = log_files(dir)?
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep));
    for path in files {
        let f = File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
        for line in BufReader::new(f).split(b'\n') {
            let line = line.map_err(|e| Error::io("reading", &path, e))?;
            if let Ok(ev) = serde_json::from_slice::<Event>(&line) {
                events.push(ev);
            }
        }
    }
    events.sort_by_key(|e| e.ts);
    Ok(events)
}
