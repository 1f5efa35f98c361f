//! The event log: the product's record of what happened, as JSON Lines.
//!
//! Each event is one line of `log/events-<node>-<YYYYMMDD>.jsonl` (UTC date; a day past
//! `[log] max_bytes` continues in `events-<node>-<YYYYMMDD>.<n>.jsonl`, n = 1, 2, …),
//! appended with a single `write(2)` on a file opened `O_APPEND`, so concurrent writers never
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

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::LogSettings;
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

/// Appends events to `log/events-<node>-<YYYYMMDD>.jsonl`, switching files at UTC midnight
/// and, within a day, to a new part `events-<node>-<YYYYMMDD>.<n>.jsonl` once a file holds
/// `max_bytes`. Opening a day's file deletes this node's files older than `keep_days`
/// (never the current month's).
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    node: String,
    settings: LogSettings,
    open: Mutex<Option<OpenPart>>,
}

/// The file being appended to: its UTC day (`YYYYMMDD`) and part number (0 = no suffix).
#[derive(Debug)]
struct OpenPart {
    day: String,
    part: u32,
    file: File,
}

impl EventLog {
    /// A log writing into `dir` for `node`, with the default `[log]` settings.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>, node: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            node: node.into(),
            settings: LogSettings::default(),
            open: Mutex::new(None),
        }
    }

    /// The same log with `settings` (`[log]` in `architect.toml`): size per file and
    /// retention.
    #[must_use]
    pub fn with_settings(mut self, settings: LogSettings) -> Self {
        self.settings = settings;
        self
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
        if guard.as_ref().is_none_or(|o| o.day != day) {
            self.prune(event.ts);
            let part = self.last_part(&day);
            *guard = Some(self.open_part(&day, part)?);
        }
        // A full file continues in the next part. Another process appending to the same
        // day (`architect ask`) may have moved on already: its part is taken up, and
        // filled only while it has room.
        loop {
            let open = guard.as_ref().expect("opened above");
            let len = open.file.metadata().map_or(0, |m| m.len());
            if len == 0 || len + line.len() as u64 <= self.settings.max_bytes {
                break;
            }
            let next = open.part + 1;
            *guard = Some(self.open_part(&day, next)?);
        }
        let f = &mut guard.as_mut().expect("opened above").file;
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

    /// The file name of `day`'s part `part`.
    fn part_name(&self, day: &str, part: u32) -> String {
        if part == 0 {
            format!("events-{}-{day}.jsonl", self.node)
        } else {
            format!("events-{}-{day}.{part}.jsonl", self.node)
        }
    }

    fn open_part(&self, day: &str, part: u32) -> Result<OpenPart> {
        let path = self.dir.join(self.part_name(day, part));
        // O_NOFOLLOW: a symlink planted at the day's log file is refused, never
        // followed (appending to its target).
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("opening event log", &path, e))?;
        Ok(OpenPart {
            day: day.to_string(),
            part,
            file,
        })
    }

    /// The highest part of `day` already written by this node (0 when none is).
    fn last_part(&self, day: &str) -> u32 {
        log_files(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.own_file(p.file_name()?.to_str()?))
            .filter(|(d, _)| d.format("%Y%m%d").to_string() == day)
            .map(|(_, part)| part)
            .max()
            .unwrap_or(0)
    }

    /// The day and part of one of this node's log file names; `None` for any other name
    /// (another node's files are that node's to keep).
    fn own_file(&self, name: &str) -> Option<(NaiveDate, u32)> {
        let rest = name
            .strip_prefix("events-")?
            .strip_prefix(self.node.as_str())?
            .strip_prefix('-')?
            .strip_suffix(".jsonl")?;
        let (day, part) = match rest.split_once('.') {
            Some((day, part)) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => {
                (day, part.parse().ok()?)
            }
            Some(_) => return None,
            None => (rest, 0),
        };
        if day.len() != 8 || !day.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((NaiveDate::parse_from_str(day, "%Y%m%d").ok()?, part))
    }

    /// Deletes this node's log files older than `keep_days` days before `now`, except the
    /// current month's. Failures are reported through tracing: retention never stops the log.
    fn prune(&self, now: DateTime<Utc>) {
        let keep = self.settings.keep_days;
        if keep == 0 {
            return;
        }
        let today = now.date_naive();
        let Some(oldest_kept) = today.checked_sub_days(chrono::Days::new(u64::from(keep))) else {
            return;
        };
        let mut deleted = 0usize;
        for path in log_files(&self.dir).unwrap_or_default() {
            let Some((day, _)) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| self.own_file(n))
            else {
                continue;
            };
            let this_month = day.year() == today.year() && day.month() == today.month();
            if day >= oldest_kept || this_month {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => deleted += 1,
                Err(e) => tracing::warn!("event log retention: removing {}: {e}", path.display()),
            }
        }
        if deleted > 0 {
            tracing::info!("event log retention: deleted {deleted} file(s) older than {keep} days");
        }
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
/// `events-<node>-<YYYYMMDD>.jsonl` or `events-<node>-<YYYYMMDD>.<n>.jsonl`), sorted by time.
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event(node: &str, ts: DateTime<Utc>, n: usize) -> Event {
        Event {
            ts,
            node: node.into(),
            kind: "llm_call".into(),
            task_id: Some(format!("t{n}")),
            session: None,
            data: serde_json::json!({"provider": "p", "cost_usd": 0.5, "pad": "x".repeat(100)}),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        log_files(dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn small(max_bytes: u64, keep_days: u32) -> LogSettings {
        LogSettings {
            max_bytes,
            keep_days,
        }
    }

    #[test]
    fn a_full_file_continues_in_numbered_parts_and_every_part_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path(), "n1").with_settings(small(4096, 90));
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        for i in 0..100 {
            log.append(&event("n1", now + chrono::Duration::milliseconds(i), 0))
                .unwrap();
        }
        let files = names(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        assert_eq!(files[0], "events-n1-20261201.jsonl");
        assert!(files.contains(&"events-n1-20261201.1.jsonl".to_string()), "{files:?}");
        for f in log_files(dir.path()).unwrap() {
            let len = std::fs::metadata(&f).unwrap().len();
            assert!(len <= 4096, "{} holds {len} bytes", f.display());
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.ends_with('\n') && text.lines().all(|l| l.starts_with('{')));
        }
        assert_eq!(read_events(dir.path()).unwrap().len(), 100);
    }

    #[test]
    fn a_reopened_log_continues_in_the_last_part() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        {
            let log = EventLog::new(dir.path(), "n1").with_settings(small(4096, 90));
            for _ in 0..60 {
                log.append(&event("n1", now, 0)).unwrap();
            }
        }
        let before = names(dir.path());
        let log = EventLog::new(dir.path(), "n1").with_settings(small(4096, 90));
        log.append(&event("n1", now, 1)).unwrap();
        let after = names(dir.path());
        assert!(after.len() - before.len() <= 1, "{before:?} → {after:?}");
        let last = log_files(dir.path()).unwrap().pop().unwrap();
        assert!(std::fs::read_to_string(last).unwrap().contains("\"t1\""));
    }

    #[test]
    fn retention_deletes_only_this_nodes_old_files_and_never_this_month() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "events-n1-20260801.jsonl",   // old: deleted
            "events-n1-20260801.2.jsonl", // old part: deleted
            "events-n1-20261115.jsonl",   // within 20 days: kept
            "events-n1-20261102.jsonl",   // older than 20 days, but a November day… deleted
            "events-n2-20260801.jsonl",   // another node's: kept
            "events-n1-x-20260801.jsonl", // node "n1-x": not ours
            "notes.jsonl",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        // On the 1st, this month holds only today: the 20-day rule decides the rest.
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap();
        let log = EventLog::new(dir.path(), "n1").with_settings(small(4096, 20));
        log.append(&event("n1", now, 0)).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "events-n1-20261115.jsonl",
                "events-n1-20261201.jsonl",
                "events-n1-x-20260801.jsonl",
                "events-n2-20260801.jsonl",
                "notes.jsonl",
            ]
        );
        // Mid-month with keep_days = 1, the month's earlier days stay (budgets need them).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events-n1-20261201.jsonl"), "").unwrap();
        std::fs::write(dir.path().join("events-n1-20261130.jsonl"), "").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 1).unwrap();
        let log = EventLog::new(dir.path(), "n1").with_settings(small(4096, 1));
        log.append(&event("n1", now, 0)).unwrap();
        assert_eq!(
            names(dir.path()),
            ["events-n1-20261201.jsonl", "events-n1-20261220.jsonl"]
        );
        // keep_days = 0 keeps everything.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events-n1-20200101.jsonl"), "").unwrap();
        let log = EventLog::new(dir.path(), "n1").with_settings(small(4096, 0));
        log.append(&event("n1", now, 0)).unwrap();
        assert_eq!(names(dir.path()).len(), 2);
    }
}
