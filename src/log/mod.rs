//! The event log: the product's record of what happened, as JSON Lines.
//!
//! Each event is one line of `log/events-<node>-<YYYYMMDD>.jsonl` (UTC date; a day past
//! `[log] max_bytes` continues in `events-<node>-<YYYYMMDD>.<n>.jsonl`, n = 1, 2, …),
//! appended with a single `write(2)` on a file opened `O_APPEND`, so concurrent writers never
//! interleave inside a line and a crash can tear only the last line. Readers (DuckDB's
//! `read_json(…, ignore_errors=true)`, [`read_events`]) skip a torn line.
//! Every string in `data` passes through [`redact()`] first: nothing that looks like a
//! secret is written.
//!
//! Events are typed: [`Event`] is the envelope (time, node, task, session) and
//! [`EventBody`] what happened, one variant per event type with its payload struct in
//! [`event`]. Writers call [`EventLog::record`] with a payload; readers match on
//! [`EventBody`] or take one type's payload with [`Event::payload`]. Only [`event`] maps
//! types to and from their `type` strings.

pub mod event;
pub mod tail;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
pub use event::{EventBody, Payload};
// Redaction is its own module (the spool and the LLM client use it too); the log's paths
// to it stay.
pub use crate::redact::{self, redact};

/// One event, one line: who wrote it when, about which task and session, and what
/// happened ([`EventBody`]: the `type` and its typed `data`).
///
/// On disk: `{"ts":…,"node":…,"type":…,"task_id":…,"session":…,"data":{…}}`, in that
/// order (`schemas/event.schema.json`). Writing it redacts every string in `data`
/// ([`redact()`]); reading a line never fails on its `type` or `data` (see
/// [`EventBody::Other`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened (RFC 3339, UTC, microseconds).
    pub ts: DateTime<Utc>,
    /// Node that wrote it.
    pub node: String,
    /// The task concerned, if any.
    pub task_id: Option<String>,
    /// The session concerned, if any.
    pub session: Option<String>,
    /// What happened: the `type` and `data`.
    pub body: EventBody,
}

impl Event {
    /// The `type` string (`task_received`, …).
    #[must_use]
    pub fn kind(&self) -> &str {
        self.body.kind()
    }

    /// The payload, when this event is of type `T`.
    #[must_use]
    pub fn payload<T: Payload>(&self) -> Option<&T> {
        T::from_body(&self.body)
    }
}

/// The line as written and read: the envelope with `data` as JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<K, D> {
    #[serde(with = "event::ts_micros")]
    ts: DateTime<Utc>,
    node: K,
    #[serde(rename = "type")]
    kind: K,
    task_id: Option<K>,
    session: Option<K>,
    data: D,
}

impl Serialize for Event {
    /// The log line, with every string in `data` redacted.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let data = self.body.data().map_err(serde::ser::Error::custom)?;
        Line {
            ts: self.ts,
            node: self.node.as_str(),
            kind: self.body.kind(),
            task_id: self.task_id.as_deref(),
            session: self.session.as_deref(),
            data: crate::redact::redact_value(data),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// A log line; its `data` is typed when its `type` is known and the data fits.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let line = Line::<String, Value>::deserialize(d)?;
        Ok(Self {
            ts: line.ts,
            node: line.node,
            task_id: line.task_id,
            session: line.session,
            body: EventBody::from_parts(line.kind, line.data),
        })
    }
}

/// `[log]` in `config/architect.toml`: how big the event log files grow and how long
/// they are kept (see [`EventLog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A day's log file is continued in a new part (`events-<node>-<YYYYMMDD>.<n>.jsonl`)
    /// once it holds this many bytes (default 67108864, 64 MiB; at least 4096).
    #[serde(default = "d_log_max_bytes")]
    pub max_bytes: u64,
    /// This node's log files older than this many days are deleted, except the current
    /// month's (budgets sum the month's spend from them); 0 keeps every file (default 90).
    #[serde(default = "d_keep_days")]
    pub keep_days: u32,
}

fn d_log_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn d_keep_days() -> u32 {
    90
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            max_bytes: d_log_max_bytes(),
            keep_days: d_keep_days(),
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
    observer: ObserverSlot,
}

/// Sees each event this log appends, as written (redaction happens when it is
/// serialized): the daemon's notifications ([`crate::notify`]). It runs on the thread that
/// logged, after the line is written and the file's lock released, so it must return
/// quickly and must not block; it may log events itself (they are observed too).
pub type Observer = Box<dyn Fn(&Event) + Send + Sync>;

/// The log's one [`Observer`], set once.
#[derive(Default)]
struct ObserverSlot(std::sync::OnceLock<Observer>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
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
            observer: ObserverSlot::default(),
        }
    }

    /// Hands every event appended from now on to `observer` as well (the daemon's
    /// notifications). A log has at most one observer.
    ///
    /// # Errors
    /// Gives `observer` back when one is set already.
    pub fn set_observer(&self, observer: Observer) -> std::result::Result<(), Observer> {
        self.observer.0.set(observer)
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

    /// Appends one event (one `write(2)`) stamped now with this log's node, redacting
    /// every string in its data.
    ///
    /// # Errors
    /// [`Error::Io`] when the log file cannot be opened or written; [`Error::Json`] when
    /// the payload cannot be written as JSON (a path that is not UTF-8).
    pub fn emit(
        &self,
        task_id: Option<&str>,
        session: Option<&str>,
        body: impl Into<EventBody>,
    ) -> Result<()> {
        self.append(&Event {
            ts: Utc::now(),
            node: self.node.clone(),
            task_id: task_id.map(str::to_string),
            session: session.map(str::to_string),
            body: body.into(),
        })
    }

    /// Like [`EventLog::emit`], but a failure is reported through tracing instead of
    /// returned: the daemon keeps working when the log disk is full.
    pub fn record(&self, task_id: Option<&str>, session: Option<&str>, body: impl Into<EventBody>) {
        if let Err(e) = self.emit(task_id, session, body) {
            tracing::error!("event log: {e}");
        }
    }

    /// Appends a prepared event (one `write(2)`), redacting every string in its data.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Json`] when the payload cannot be written as JSON.
    pub fn append(&self, event: &Event) -> Result<()> {
        let written = self.write_line(event);
        // Observed even when the disk refused the line: a notification matters most then.
        if let Some(observe) = self.observer.0.get() {
            observe(event);
        }
        written
    }

    /// Writes `event`'s line (the file's lock is released on return).
    fn write_line(&self, event: &Event) -> Result<()> {
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

/// The event log files in `dir`, oldest first (by name: node, then date, then part).
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
    files.sort_by_cached_key(|p| {
        file_order(
            &p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        )
    });
    Ok(files)
}

/// Where a log file sorts among the others, by its name: `(base, part)` of
/// `<base>.<part>.jsonl` (`base` is `events-<node>-<YYYYMMDD>`; part 0 for a day's first
/// file), so by node and day, then part: `…-20261201.jsonl` before `…-20261201.1.jsonl`
/// (plain name order would put the part first).
#[must_use]
pub fn file_order(name: &str) -> (String, u64) {
    let stem = name.strip_suffix(".jsonl").unwrap_or(name);
    match stem.rsplit_once('.') {
        Some((base, part)) if part.bytes().all(|b| b.is_ascii_digit()) => {
            (base.to_string(), part.parse::<u64>().unwrap_or(u64::MAX))
        }
        _ => (stem.to_string(), 0),
    }
}

/// Whose a log file is: `events-<node>` of `events-<node>-<YYYYMMDD>[.<n>].jsonl`. One
/// writer's files are written one after another in [`file_order`]; `None` for a name
/// with no day.
#[must_use]
pub fn file_writer(name: &str) -> Option<String> {
    file_day(name)?;
    let (base, _) = file_order(name);
    base.rsplit_once('-').map(|(writer, _)| writer.to_string())
}

/// Reads every event in `dir`, sorted by time. Lines that do not parse (a torn last line)
/// are skipped.
///
/// # Errors
/// [`Error::Io`].
pub fn read_events(dir: &Path) -> Result<Vec<Event>> {
    read_events_in(dir, |_| true)
}

/// Reads the events of every log directory in `dirs` (each node's, in a fleet:
/// [`crate::spool::Spool::log_dirs`]), sorted by time.
///
/// # Errors
/// [`Error::Io`].
pub fn read_events_from(dirs: &[std::path::PathBuf]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for d in dirs {
        events.extend(read_events(d)?);
    }
    events.sort_by_key(|e| e.ts);
    Ok(events)
}

/// Reads the events of every log directory in `dirs` from the files of UTC day `since`
/// and later (a file whose name has no day is read too), sorted by time: what a task
/// received on `since` can have logged.
///
/// # Errors
/// [`Error::Io`].
pub fn read_events_since(dirs: &[std::path::PathBuf], since: NaiveDate) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for d in dirs {
        events.extend(read_events_in(d, |name| {
            file_day(name).is_none_or(|day| day >= since)
        })?);
    }
    events.sort_by_key(|e| e.ts);
    Ok(events)
}

/// The UTC day in a log file name, `events-<node>-<YYYYMMDD>.jsonl` or
/// `events-<node>-<YYYYMMDD>.<n>.jsonl`, whatever the node; `None` for another name.
#[must_use]
pub fn file_day(name: &str) -> Option<NaiveDate> {
    let stem = name.strip_prefix("events-")?.strip_suffix(".jsonl")?;
    let stem = match stem.rsplit_once('.') {
        Some((base, part)) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => stem,
    };
    let (_, day) = stem.rsplit_once('-')?;
    if day.len() != 8 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(day, "%Y%m%d").ok()
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
        let f = match File::open(&path) {
            Ok(f) => f,
            // Gone since the listing: pruned, or another node's log replaced by its
            // syncer (temp file, then rename); the next read sees the new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("opening", &path, e)),
        };
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
            task_id: Some(format!("t{n}")),
            session: None,
            body: EventBody::LlmCall(event::LlmCall {
                provider: "p".into(),
                cost_usd: 0.5,
                error: Some("x".repeat(100)),
                ..Default::default()
            }),
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
        assert!(
            files.contains(&"events-n1-20261201.1.jsonl".to_string()),
            "{files:?}"
        );
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

    /// Real lines written before events were typed: one of each type and shape the
    /// integration tests produce (`tests/fixtures/events/golden.jsonl`).
    const GOLDEN: &str = include_str!("../../tests/fixtures/events/golden.jsonl");

    #[test]
    fn every_golden_line_reads_typed_and_is_written_back_byte_for_byte() {
        let mut kinds = std::collections::BTreeSet::new();
        for line in GOLDEN.lines() {
            let e: Event = serde_json::from_str(line).unwrap();
            assert!(
                !matches!(e.body, EventBody::Other { .. }),
                "not typed: {line}"
            );
            kinds.insert(e.kind().to_string());
            assert_eq!(serde_json::to_string(&e).unwrap(), line);
        }
        let all: std::collections::BTreeSet<String> =
            EventBody::KINDS.iter().map(|k| (*k).to_string()).collect();
        assert_eq!(kinds, all, "the fixture has every type");
    }

    #[test]
    fn file_day_reads_the_day_of_any_nodes_log_file_and_nothing_else() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(file_day("events-n1-20261202.jsonl"), day(2026, 12, 2));
        assert_eq!(
            file_day("events-node-b-20261130.3.jsonl"),
            day(2026, 11, 30)
        );
        assert_eq!(file_day("events-n1-2026120.jsonl"), None);
        assert_eq!(file_day("events-n1-20261302.jsonl"), None);
        assert_eq!(file_day("notes.jsonl"), None);
    }

    #[test]
    fn a_log_file_name_gives_its_writer_and_its_place_among_the_writer_s_files() {
        let names = [
            "events-n-1-20261201.jsonl",
            "events-n-1-20261201.1.jsonl",
            "events-n-1-20261201.2.jsonl",
            "events-n-1-20261202.jsonl",
        ];
        for w in names.windows(2) {
            assert!(
                file_order(w[0]) < file_order(w[1]),
                "{} then {}",
                w[0],
                w[1]
            );
        }
        for n in names {
            assert_eq!(file_writer(n).as_deref(), Some("events-n-1"), "{n}");
        }
        assert_eq!(file_writer("events-x.jsonl"), None);
        assert_eq!(file_writer("events-n-2026120.jsonl"), None);
    }

    #[test]
    fn read_events_since_skips_the_files_of_earlier_days() {
        let dir = tempfile::tempdir().unwrap();
        let old = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let new = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let log = EventLog::new(dir.path(), "n1");
        log.append(&event("n1", old, 1)).unwrap();
        log.append(&event("n1", new, 2)).unwrap();
        let since = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let got = read_events_since(&[dir.path().to_path_buf()], since).unwrap();
        let ids: Vec<Option<&str>> = got.iter().map(|e| e.task_id.as_deref()).collect();
        assert_eq!(ids, [Some("t2")]);
    }

    #[test]
    fn both_task_failed_shapes_read_typed_and_are_written_back_byte_for_byte() {
        let finished = r#"{"ts":"2026-12-01T10:00:00.000001Z","node":"n","type":"task_failed","task_id":"t","session":null,"data":{"attempts":0,"duration_ms":null,"error":"dependency d failed"}}"#;
        let not_claimed = r#"{"ts":"2026-12-01T10:00:00.000002Z","node":"n","type":"task_failed","task_id":"t","session":null,"data":{"claimed":false,"error":"not run: its file left pending/ before it was claimed (gone)"}}"#;
        for line in [finished, not_claimed] {
            let e: Event = serde_json::from_str(line).unwrap();
            assert!(e.payload::<event::TaskFailed>().is_some(), "{line}");
            assert_eq!(serde_json::to_string(&e).unwrap(), line);
        }
        let e: Event = serde_json::from_str(not_claimed).unwrap();
        assert!(matches!(
            e.payload(),
            Some(event::TaskFailed::NotClaimed { claimed: false, .. })
        ));
    }

    #[test]
    fn the_schema_lists_exactly_the_types_written() {
        let schema: Value =
            serde_json::from_str(include_str!("../../schemas/event.schema.json")).unwrap();
        let listed: Vec<&str> = schema["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(listed, EventBody::KINDS);
    }

    #[test]
    fn unknown_types_and_data_that_does_not_fit_read_as_other_and_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            // A type from a newer writer.
            r#"{"ts":"2026-12-01T10:00:00.000001Z","node":"n1","type":"quantum_leap","task_id":null,"session":"s","data":{"to":1985}}"#,
            // A known type whose data this build cannot read as its payload.
            r#"{"ts":"2026-12-01T10:00:00.000002Z","node":"n1","type":"task_assigned","task_id":"t","session":null,"data":{"attempt":"first"}}"#,
            // A torn line: skipped.
            r#"{"ts":"2026-12-01T10:00:00.000003Z","node":"n1","type":"task_ass"#,
            r#"{"ts":"2026-12-01T10:00:00.000004Z","node":"n1","type":"task_assigned","task_id":"t","session":"s","data":{"attempt":2}}"#,
        ];
        std::fs::write(
            dir.path().join("events-n1-20261201.jsonl"),
            lines.join("\n") + "\n",
        )
        .unwrap();
        let events = read_events(dir.path()).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].kind(), "quantum_leap");
        assert_eq!(
            events[0].body,
            EventBody::Other {
                kind: "quantum_leap".into(),
                data: serde_json::json!({"to": 1985})
            }
        );
        assert_eq!(events[1].kind(), "task_assigned");
        assert!(matches!(events[1].body, EventBody::Other { .. }));
        assert!(events[1].payload::<event::TaskAssigned>().is_none());
        assert_eq!(
            events[2].payload::<event::TaskAssigned>(),
            Some(&event::TaskAssigned { attempt: 2 })
        );
        // Written back as read.
        for (e, line) in events.iter().zip([lines[0], lines[1], lines[3]]) {
            assert_eq!(serde_json::to_string(e).unwrap(), line);
        }
    }

    #[test]
    fn strings_in_typed_payloads_are_redacted_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path(), "n1");
        let secret = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";
        log.emit(
            Some("t1"),
            None,
            event::TaskFailed::Finished {
                attempts: 1,
                duration_ms: None,
                error: Some(format!("curl -H 'Authorization: Bearer {secret}' failed")),
            },
        )
        .unwrap();
        log.emit(
            None,
            None,
            EventBody::Other {
                kind: "future".into(),
                data: serde_json::json!({"nested": [{"key": secret}]}),
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&log_files(dir.path()).unwrap()[0]).unwrap();
        assert!(!text.contains(secret), "{text}");
        assert_eq!(text.matches("[REDACTED]").count(), 2, "{text}");
        let events = read_events(dir.path()).unwrap();
        let Some(event::TaskFailed::Finished { error, .. }) = events[0].payload() else {
            panic!("{events:?}");
        };
        assert!(error.as_deref().unwrap().contains("[REDACTED]"));
    }
}
