//! `architect status`, `sessions`, `send`, `logs`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use architect::config::Config;
use architect::daemon::DaemonLock;
use architect::log::tail::LogTail;
use architect::log::Event;
use architect::session::{PendingApproval, SessionFile};
use architect::spool::task::TaskState;
use architect::spool::{ControlRequest, Spool};

/// Every node's sessions (in a fleet, each node writes its own `sessions/`).
pub(crate) fn read_sessions(spool: &Spool) -> Result<Vec<SessionFile>> {
    let mut out = Vec::new();
    let members = spool.members();
    let fleet = members.len() > 1;
    for m in members {
        let dir = m.dir("sessions");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            if fleet {
                continue; // a node with no session file yet (or the root of a fleet)
            }
            anyhow::bail!("listing {}: not readable", dir.display());
        };
        for e in entries {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Ok(s) = serde_json::from_slice::<SessionFile>(&std::fs::read(&p)?) {
                    out.push(s);
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn count(spool: &Spool, dir: &str) -> usize {
    std::fs::read_dir(spool.dir(dir)).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                !n.starts_with('.') && n.ends_with(".json") && !n.ends_with(".error.json")
            })
            .count()
    })
}

/// Pending records that say `waiting_lock` (a byte search, no JSON parsing; the first
/// 20,000 files at most).
fn count_waiting_lock(spool: &Spool) -> usize {
    let Ok(dir) = std::fs::read_dir(spool.dir("pending")) else {
        return 0;
    };
    let needle = b"\"waiting_lock\"";
    dir.filter_map(std::result::Result::ok)
        .take(20_000)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| {
            architect::durable::read_regular(&e.path(), 1 << 20)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        })
        .count()
}

/// The queue's states in the order `status`, `top` and the dashboard show them: the
/// inbox, each state directory with `waiting_lock` after `pending`, then `rejected`.
pub(crate) const QUEUE_STATES: [&str; 8] = [
    "inbox",
    "pending",
    "waiting_lock",
    "active",
    "done",
    "failed",
    "cancelled",
    "rejected",
];

/// The states a task list can be filtered by (the queue's, less the inbox and rejected).
pub(crate) const TASK_STATES: &[&str] = {
    let [_, rest @ .., _] = &QUEUE_STATES;
    rest
};

/// Tasks per directory, as `architect status` counts them: `inbox`, each state's
/// directory (`pending`, then `waiting_lock` — the pending ones waiting for their locks —,
/// `active`, `done`, `failed`, `cancelled`) and `rejected`. In a fleet each task counts
/// once, where its best copy is.
pub(crate) fn task_counts(spool: &Spool) -> serde_json::Map<String, serde_json::Value> {
    let mut counts = serde_json::Map::new();
    let members = spool.members();
    let fleet = (members.len() > 1).then(|| spool.fleet_tasks());
    for d in ["inbox"]
        .into_iter()
        .chain(TaskState::ALL.iter().map(|s| s.dir()))
        .chain(["rejected"])
    {
        let n = match (&fleet, TaskState::ALL.iter().find(|s| s.dir() == d)) {
            (Some(f), Some(state)) => f.values().filter(|(s, _)| s == state).count(),
            (Some(_), None) if d == "rejected" => members.iter().map(|m| count(m, d)).sum(),
            _ => count(spool, d),
        };
        counts.insert(d.to_string(), n.into());
        if d == "pending" {
            let waiting: usize = members.iter().map(count_waiting_lock).sum();
            counts.insert("waiting_lock".into(), waiting.into());
        }
    }
    counts
}

pub fn status(spool: &Spool, config: &Path, json: bool) -> Result<ExitCode> {
    let node =
        Config::load(config).map_or_else(|_| architect::config::default_node_name(), |c| c.node);
    let daemon = DaemonLock::is_held(spool);
    let counts = task_counts(spool);
    let members = spool.members();
    // Tasks that ran on two nodes (a partition made a live node look dead).
    let duplicates: Vec<String> = members
        .iter()
        .flat_map(|m| {
            std::fs::read_dir(m.state_root().join("duplicates"))
                .into_iter()
                .flatten()
                .filter_map(std::result::Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".json")
                        .map(str::to_string)
                })
        })
        .collect();
    let sessions = read_sessions(spool)?;
    if json {
        let v = serde_json::json!({
            "node": node,
            "daemon": daemon.as_ref().map(|pid| serde_json::json!({"running": true, "pid": pid}))
                .unwrap_or(serde_json::json!({"running": false})),
            "tasks": counts,
            "sessions": sessions,
            "duplicate_runs": duplicates,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &daemon {
        Some(pid) => println!("daemon    running on {node} (pid {pid})"),
        None => {
            println!("daemon    not running on {node} (tasks wait in the spool until it starts)")
        }
    }
    println!(
        "tasks     {}",
        counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    if !duplicates.is_empty() {
        println!(
            "duplicates {} task(s) ran on two nodes (duplicate_run; the task id is the \
             idempotency key): {}",
            duplicates.len(),
            duplicates.join(", ")
        );
    }
    let counts: Vec<String> = architect::session::SessionState::ALL
        .iter()
        .map(|st| {
            let n = sessions.iter().filter(|s| s.state == *st).count();
            format!("{} {n}", st.as_str())
        })
        .collect();
    println!(
        "sessions  {} total · {}",
        sessions.len(),
        counts.join(" · ")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn sessions(spool: &Spool, json: bool) -> Result<ExitCode> {
    let sessions = read_sessions(spool)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "session",
        "state",
        "task",
        "profile",
        "role",
        "pid",
        "since",
        "restarts",
        "last exit",
    ]);
    let mut questions = Vec::new();
    for s in sessions {
        let state = match &s.approval {
            Some(a) => {
                let action = a
                    .question
                    .action
                    .as_deref()
                    .unwrap_or("(action unreadable)");
                questions.push(format!(
                    "{}: {} {action}\n  architect approve {} --question {}   (or deny)",
                    s.name, a.id, s.name, a.id
                ));
                format!("{} — {} approve? {action}", s.state.as_str(), a.id)
            }
            None => {
                let mut st = s.state.as_str().to_string();
                if let Some(until) = s.limited_until {
                    st.push_str(&format!(" until {}", until.format("%H:%M:%S")));
                }
                st
            }
        };
        t.add_row([
            s.name,
            state,
            s.task_id.unwrap_or_default(),
            s.profile,
            s.role.unwrap_or_default(),
            s.pid.map(|p| p.to_string()).unwrap_or_default(),
            s.since.format("%H:%M:%S").to_string(),
            s.restarts.to_string(),
            s.last_exit.unwrap_or_default(),
        ]);
    }
    println!("{t}");
    if !questions.is_empty() {
        println!("\nquestions waiting for a person:");
        for q in questions {
            println!("{q}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn send(
    spool: &Spool,
    config: &Path,
    session: &str,
    text: &str,
    enter: bool,
) -> Result<ExitCode> {
    let cfg = Config::load(config)?;
    if !cfg.sessions.iter().any(|s| s.spec.name == session) {
        bail!(
            "no session {session:?} in {}/sessions.toml",
            config.display()
        );
    }
    spool.write_control(&ControlRequest::Send {
        session: session.to_string(),
        text: text.to_string(),
        enter,
    })?;
    println!("queued {} byte(s) for {session}", text.len());
    Ok(ExitCode::SUCCESS)
}

/// `architect approve|deny <session>`: answers the permission question the session is
/// waiting on (its profile's yes or no key).
pub fn answer(
    spool: &Spool,
    session: &str,
    question: Option<&str>,
    approve: bool,
    json: bool,
) -> Result<ExitCode> {
    let pending = request_answer(spool, session, question, approve)?;
    let verb = if approve { "approve" } else { "deny" };
    if json {
        println!(
            "{}",
            serde_json::json!({"session": session, "answer": verb, "question": pending})
        );
    } else {
        println!(
            "{verb}: {} on {session} (asked {}; escalated by {})",
            pending
                .question
                .action
                .as_deref()
                .unwrap_or("(action unreadable)"),
            pending.since.format("%H:%M:%S"),
            pending.rule
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that `session` waits on question `question` and asks the daemon (a control
/// request) to answer it with the profile's yes (`approve`) or no key. Returns the
/// question answered. What `architect approve|deny`, `architect top` and the dashboard do.
///
/// # Errors
/// No such session; it waits on no question; `question` is `None` (the caller must name
/// the question it read) or no longer the open one (nothing is written then); the control
/// request cannot be written.
pub(crate) fn request_answer(
    spool: &Spool,
    session: &str,
    question: Option<&str>,
    approve: bool,
) -> Result<PendingApproval> {
    let file = read_sessions(spool)?
        .into_iter()
        .find(|s| s.name == session)
        .ok_or_else(|| anyhow::anyhow!("no session {session:?} (see `architect sessions`)"))?;
    let Some(pending) = file.approval else {
        bail!(
            "session {session} is not waiting for an approval (state {}); \
             to type into it anyway use `architect send`",
            file.state.as_str()
        );
    };
    let verb = if approve { "approve" } else { "deny" };
    let action = pending
        .question
        .action
        .as_deref()
        .unwrap_or("(action unreadable)");
    let Some(question) = question else {
        bail!(
            "name the question you read: {session} is waiting on {} ({action}); \
             run `architect {verb} {session} --question {}` if that is the one",
            pending.id,
            pending.id
        );
    };
    if question != pending.id {
        bail!(
            "question {question} is no longer open on {session}; open now: {} ({action}). \
             Nothing was answered: read it, then `architect {verb} {session} --question {}`",
            pending.id,
            pending.id
        );
    }
    spool.write_control(&ControlRequest::Answer {
        session: session.to_string(),
        approve,
        question: question.to_string(),
    })?;
    Ok(pending.clone())
}

fn print_event(e: &Event, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!(
            "{} {:<16} {:<28} {:<12} {}",
            e.ts.format("%H:%M:%S%.3f"),
            e.kind(),
            e.task_id.as_deref().unwrap_or("-"),
            e.session.as_deref().unwrap_or("-"),
            e.body.data().unwrap_or_default()
        );
    }
    Ok(())
}

pub fn logs(
    spool: &Spool,
    follow: bool,
    task: Option<&str>,
    session: Option<&str>,
    lines: usize,
    json: bool,
) -> Result<ExitCode> {
    let keep = |e: &Event| {
        task.is_none_or(|t| e.task_id.as_deref() == Some(t))
            && session.is_none_or(|s| e.session.as_deref() == Some(s))
    };
    let dirs = spool.log_dirs();
    let events: Vec<Event> = architect::log::read_events_from(&dirs)?
        .into_iter()
        .filter(|e| keep(e))
        .collect();
    let skip = if lines == 0 {
        0
    } else {
        events.len().saturating_sub(lines)
    };
    for e in &events[skip..] {
        print_event(e, json)?;
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: remember where each file ended, poll for growth (new files included).
    let dirs = spool.log_dirs();
    let mut tail = LogTail::at_end(&dirs)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for e in tail.poll(&dirs)? {
            if keep(&e) {
                print_event(&e, json)?;
            }
        }
    }
}

/// Where a reader of the event logs stopped, for a reader that comes back (the
/// dashboard's event stream sends it as each event's SSE `id`, and a browser that
/// reconnects sends it back as `Last-Event-ID`): for each writer
/// ([`architect::log::file_writer`], one per node) the newest of its files read and the
/// bytes of it read. The writer's older files count as read to their end: a node starts
/// its next file (a new day, a new part) only once done with the last.
///
/// As text ([`LogPosition::encode`]): `FILE:BYTES` per writer, joined by `/` (no file
/// name holds one), e.g. `events-n1-20261202.jsonl:48213/events-n2-20261202.1.jsonl:907`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogPosition {
    /// Writer → (the newest file read, bytes of it read).
    newest: std::collections::BTreeMap<String, (String, u64)>,
}

impl LogPosition {
    /// Notes that `file` (a log file's name) has been read up to byte `bytes`. A file
    /// older than the writer's newest already noted changes nothing; a name that is not a
    /// log file's, or that holds a character an SSE `id` cannot (line break, NUL, `/`),
    /// is not tracked.
    pub(crate) fn advance(&mut self, file: &str, bytes: u64) {
        if file.contains(['\n', '\r', '\0', '/']) {
            return;
        }
        let Some(writer) = architect::log::file_writer(file) else {
            return;
        };
        let order = architect::log::file_order(file);
        match self.newest.get(&writer) {
            Some((f, _)) if architect::log::file_order(f) > order => {}
            _ => {
                self.newest.insert(writer, (file.to_string(), bytes));
            }
        }
    }

    /// Where a resumed reader starts in `file` (a log file's name), `len` bytes long now:
    /// at the noted bytes in the writer's newest file noted (at most `len`), at the start
    /// of the writer's later files, at the end of its older ones; at the end of a file
    /// whose writer is not noted (a position from elsewhere must not replay whole logs).
    pub(crate) fn resume_offset(&self, file: &str, len: u64) -> u64 {
        let Some((newest, bytes)) =
            architect::log::file_writer(file).and_then(|w| self.newest.get(&w))
        else {
            return len;
        };
        match architect::log::file_order(file).cmp(&architect::log::file_order(newest)) {
            std::cmp::Ordering::Less => len,
            std::cmp::Ordering::Equal => (*bytes).min(len),
            std::cmp::Ordering::Greater => 0,
        }
    }

    /// A tail of every node's log (`Spool::log_dirs`) that starts where this position
    /// says ([`LogPosition::resume_offset`]); the default position starts at the end.
    ///
    /// # Errors
    /// A log directory cannot be listed.
    pub(crate) fn tail(&self, spool: &Spool) -> Result<LogTail> {
        Ok(LogTail::starting(&spool.log_dirs(), |path, len| {
            path.file_name()
                .and_then(|n| n.to_str())
                .map_or(len, |name| self.resume_offset(name, len))
        })?)
    }

    /// Where `tail` stands.
    pub(crate) fn of(tail: &LogTail) -> Self {
        let mut pos = Self::default();
        for (path, bytes) in tail.offsets() {
            pos.advance_past(path, bytes);
        }
        pos
    }

    /// [`LogPosition::advance`] by a file's path.
    pub(crate) fn advance_past(&mut self, file: &std::path::Path, bytes: u64) {
        if let Some(name) = file.file_name().and_then(|n| n.to_str()) {
            self.advance(name, bytes);
        }
    }

    /// The text form (see the type's doc); empty when nothing is noted.
    pub(crate) fn encode(&self) -> String {
        self.newest
            .values()
            .map(|(file, bytes)| format!("{file}:{bytes}"))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Reads the text form back; `None` when it is empty or not one (an entry that is
    /// not `FILE:BYTES` of a log file's name).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut pos = Self::default();
        for entry in text.trim().split('/') {
            let (file, bytes) = entry.rsplit_once(':')?;
            let bytes = bytes.parse::<u64>().ok()?;
            architect::log::file_writer(file)?;
            pos.advance(file, bytes);
        }
        (!pos.newest.is_empty()).then_some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noted(entries: &[(&str, u64)]) -> LogPosition {
        let mut p = LogPosition::default();
        for (f, b) in entries {
            p.advance(f, *b);
        }
        p
    }

    #[test]
    fn a_log_position_round_trips_through_its_text() {
        let p = noted(&[
            ("events-n1-20261202.jsonl", 48213),
            ("events-n2-20261202.1.jsonl", 907),
        ]);
        let text = p.encode();
        assert_eq!(
            text,
            "events-n1-20261202.jsonl:48213/events-n2-20261202.1.jsonl:907"
        );
        assert_eq!(LogPosition::parse(&text), Some(p));
        // A node name with a colon: the bytes are after the last one.
        let odd = noted(&[("events-a:b-20261202.jsonl", 5)]);
        assert_eq!(LogPosition::parse(&odd.encode()), Some(odd));
    }

    #[test]
    fn text_that_is_not_a_log_position_is_refused() {
        for bad in [
            "",
            "  ",
            "42",
            "events-n1-20261202.jsonl",
            "events-n1-20261202.jsonl:-1",
            "events-n1-20261202.jsonl:12/",
            "notes.txt:12",
            "events-n1-20261202.jsonl:12/x:1",
        ] {
            assert_eq!(LogPosition::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_writer_s_newest_file_wins_whatever_the_order_it_is_noted_in() {
        let a = noted(&[
            ("events-n1-20261201.jsonl", 900),
            ("events-n1-20261202.jsonl", 10),
            ("events-n1-20261201.1.jsonl", 300),
        ]);
        assert_eq!(a.encode(), "events-n1-20261202.jsonl:10");
        // Names an SSE id cannot carry are not tracked.
        let b = noted(&[("events-n\n1-20261201.jsonl", 1)]);
        assert_eq!(b, LogPosition::default());
    }

    #[test]
    fn a_resumed_reader_starts_after_what_it_read_and_nowhere_earlier() {
        let p = noted(&[("events-n1-20261202.jsonl", 100)]);
        // The file it stopped in: where it stopped (not past the end if it shrank).
        assert_eq!(p.resume_offset("events-n1-20261202.jsonl", 250), 100);
        assert_eq!(p.resume_offset("events-n1-20261202.jsonl", 60), 60);
        // The writer's files after it: from their start; before it: nothing.
        assert_eq!(p.resume_offset("events-n1-20261202.1.jsonl", 70), 0);
        assert_eq!(p.resume_offset("events-n1-20261203.jsonl", 70), 0);
        assert_eq!(p.resume_offset("events-n1-20261201.jsonl", 70), 70);
        assert_eq!(p.resume_offset("events-n1-20261201.3.jsonl", 70), 70);
        // Another writer, or a file with no day: from their end.
        assert_eq!(p.resume_offset("events-n2-20261203.jsonl", 70), 70);
        assert_eq!(p.resume_offset("events-x.jsonl", 70), 70);
        // No position: every file from its end.
        let none = LogPosition::default();
        assert_eq!(none.resume_offset("events-n1-20261202.jsonl", 70), 70);
    }

    #[test]
    fn a_tail_resumed_from_an_event_s_position_reads_exactly_the_events_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        spool.init().unwrap();
        let log = spool.dir("log");
        let line = |id: &str| {
            format!(
                r#"{{"ts":"2026-12-02T10:00:00Z","node":"n1","type":"task_received","task_id":"{id}","session":null,"data":{{"file":"{id}.json","bytes":1,"prompt":"p","prompt_chars":1,"prompt_sha256":"00"}}}}"#
            ) + "\n"
        };
        std::fs::write(
            log.join("events-n1-20261201.jsonl"),
            line("old-1") + &line("old-2"),
        )
        .unwrap();
        std::fs::write(log.join("events-n1-20261202.jsonl"), line("a") + &line("b")).unwrap();
        let dirs = spool.log_dirs();
        let mut first = noted(&[("events-n1-20261201.jsonl", 0)])
            .tail(&spool)
            .unwrap();
        let read = first.poll_placed(&dirs).unwrap();
        let ids: Vec<&str> = read
            .iter()
            .filter_map(|p| p.event.task_id.as_deref())
            .collect();
        assert_eq!(ids, ["old-1", "old-2", "a", "b"]);
        // A reader that got up to `a` comes back after `c` was written.
        let mut pos = LogPosition::default();
        for p in &read[..3] {
            pos.advance_past(&p.file, p.end);
        }
        let mut today = std::fs::OpenOptions::new()
            .append(true)
            .open(log.join("events-n1-20261202.jsonl"))
            .unwrap();
        std::io::Write::write_all(&mut today, line("c").as_bytes()).unwrap();
        let mut again = LogPosition::parse(&pos.encode())
            .unwrap()
            .tail(&spool)
            .unwrap();
        let ids: Vec<String> = again
            .poll(&dirs)
            .unwrap()
            .into_iter()
            .filter_map(|e| e.task_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(
            LogPosition::of(&again).encode(),
            format!("events-n1-20261202.jsonl:{}", 3 * line("a").len())
        );
    }
}
