//! `architect tasks`, `show`, `cancel`, `retry`.

use std::process::ExitCode;

use anyhow::{bail, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use architect::log::{event, read_events_since};
use architect::spool::task::{TaskRecord, TaskState};
use architect::spool::{ControlRequest, Spool};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateArg {
    Pending,
    /// Pending tasks waiting for their locks.
    WaitingLock,
    Active,
    Done,
    Failed,
    Cancelled,
}

impl From<StateArg> for TaskState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Pending | StateArg::WaitingLock => Self::Pending,
            StateArg::Active => Self::Active,
            StateArg::Done => Self::Done,
            StateArg::Failed => Self::Failed,
            StateArg::Cancelled => Self::Cancelled,
        }
    }
}

/// `s` on one line (whitespace runs as one space), cut to `max` characters with `…`.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    } else {
        flat
    }
}

pub fn list(spool: &Spool, state: Option<StateArg>, limit: usize, json: bool) -> Result<ExitCode> {
    let rows = collect(spool, state, limit)?;
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, r)| {
                serde_json::json!({
                    "id": r.id, "state": r.display_state(*s), "priority": r.task.priority(),
                    "session": r.session, "attempts": r.attempts.len(),
                    "received_at": r.received_at, "finished_at": r.finished_at,
                    "prompt": r.task.prompt, "error": r.error,
                    "waiting_lock": r.waiting_lock,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "id",
        "state",
        "pri",
        "session",
        "tries",
        "received",
        "prompt / error",
    ]);
    for (s, r) in &rows {
        let text = match (&r.error, &r.waiting_lock) {
            (Some(e), _) if s.is_final() => {
                format!("{} — {}", one_line(&r.task.prompt, 30), one_line(e, 40))
            }
            (_, Some(w)) => format!(
                "{} — {}",
                one_line(&r.task.prompt, 30),
                one_line(&w.blocked_by.to_string(), 60)
            ),
            _ => one_line(&r.task.prompt, 60),
        };
        t.add_row([
            r.id.clone(),
            r.display_state(*s).to_string(),
            r.task.priority().to_string(),
            r.session.clone().unwrap_or_default(),
            r.attempts.len().to_string(),
            r.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            text,
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// `architect tasks` as data: the tasks in `state` (every state when `None`), each state's
/// newest `limit` by receipt time, oldest first; in a fleet each task once, where its best
/// copy is.
///
/// # Errors
/// A state directory cannot be listed.
pub(crate) fn collect(
    spool: &Spool,
    state: Option<StateArg>,
    limit: usize,
) -> Result<Vec<(TaskState, TaskRecord)>> {
    let states: Vec<TaskState> = match state {
        Some(s) => vec![s.into()],
        None => TaskState::ALL.to_vec(),
    };
    let mut rows: Vec<(TaskState, TaskRecord)> = Vec::new();
    // In a fleet, every node's records, each task once: where its best copy is.
    let members = spool.members();
    let best = (members.len() > 1).then(|| spool.fleet_tasks());
    for s in states {
        let mut recs = Vec::new();
        for m in &members {
            for r in m.list(s)? {
                let keep = best.as_ref().is_none_or(|b| {
                    b.get(&r.id)
                        .is_some_and(|(bs, bm)| *bs == s && bm.state_root() == m.state_root())
                });
                if keep {
                    recs.push(r);
                }
            }
        }
        if matches!(state, Some(StateArg::WaitingLock)) {
            recs.retain(|r| r.waiting_lock.is_some());
        }
        recs.sort_by(|a, b| {
            a.received_at
                .cmp(&b.received_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let skip = recs.len().saturating_sub(limit);
        rows.extend(recs.into_iter().skip(skip).map(|r| (s, r)));
    }
    Ok(rows)
}

pub fn show(spool: &Spool, id: &str, json: bool) -> Result<ExitCode> {
    let (state, rec) = spool.find_in_fleet(id)?;
    let extractions = extractions_of(spool, &rec)?;
    if json {
        let mut v = serde_json::to_value(&rec)?;
        v["state"] = state.dir().into();
        v["display_state"] = rec.display_state(state).into();
        v["extractions"] = serde_json::to_value(&extractions)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("task      {}", rec.id);
    match &rec.waiting_lock {
        Some(w) if state == TaskState::Pending => println!(
            "state     waiting_lock since {}: {}",
            w.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            w.blocked_by
        ),
        _ => println!("state     {}", state.dir()),
    }
    if let Some(l) = &rec.task.locks {
        let mut parts: Vec<String> = l.branch.iter().map(|b| format!("branch:{b}")).collect();
        parts.extend(l.paths.iter().cloned());
        println!("locks     {}", parts.join(", "));
    }
    println!("priority  {}", rec.task.priority());
    if let Some(s) = &rec.task.session {
        println!("session   {s} (requested)");
    }
    if let Some(r) = &rec.task.role {
        println!("role      {r}");
    }
    if !rec.task.depends_on.is_empty() {
        println!("after     {}", rec.task.depends_on.join(", "));
    }
    println!(
        "received  {} (from {})",
        rec.received_at.to_rfc3339(),
        rec.source
    );
    if let Some(t) = rec.finished_at {
        println!("finished  {}", t.to_rfc3339());
    }
    println!("prompt    {}", one_line(&rec.task.prompt, 200));
    for a in &rec.attempts {
        println!(
            "attempt {} on {} ({}): {:?} after {} ms{}",
            a.attempt,
            a.session,
            a.node,
            a.outcome,
            (a.finished_at - a.started_at).num_milliseconds(),
            a.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(e) = &rec.error {
        println!("error     {e}");
    }
    if let Some(r) = &rec.result {
        if let Some(code) = r.exit_status {
            println!("exit      {code}");
        }
        if let Some(reply) = &r.reply {
            println!("reply     {reply}");
        }
    }
    if !extractions.is_empty() {
        println!("--- extractions ({}) ---", extractions.len());
        for e in &extractions {
            println!("{}", extraction_line(&e.data));
        }
    }
    if let Some(r) = &rec.result {
        println!("--- output ---\n{}", r.output);
    }
    Ok(ExitCode::SUCCESS)
}

/// One `extraction` event of a task, as `show --json` (and the dashboard's task page)
/// lists it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ShownExtraction {
    /// When it was logged.
    pub(crate) ts: chrono::DateTime<chrono::Utc>,
    /// The event's data.
    #[serde(flatten)]
    pub(crate) data: event::Extraction,
}

/// The task's `extraction` events, from the logs of the days since it was received, by
/// time.
///
/// # Errors
/// A log directory cannot be read.
pub(crate) fn extractions_of(spool: &Spool, rec: &TaskRecord) -> Result<Vec<ShownExtraction>> {
    let since = rec.received_at.date_naive();
    Ok(read_events_since(&spool.log_dirs(), since)?
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some(rec.id.as_str()))
        .filter_map(|e| {
            let data = e.payload::<event::Extraction>()?.clone();
            Some(ShownExtraction { ts: e.ts, data })
        })
        .collect())
}

/// One line of `show`'s extractions: attempt, line, severity, pattern, fields
/// (`#1 L8     info    python-frame   file=/app/x.py function=f line=3`), and how many
/// were not logged, on the last one of an attempt that had too many.
fn extraction_line(e: &event::Extraction) -> String {
    let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut line = format!(
        "#{} L{:<5} {:<7} {:<26} {}",
        e.attempt,
        e.line,
        e.severity.as_str(),
        e.pattern,
        one_line(&fields.join(" "), 160)
    );
    if e.dropped > 0 {
        line.push_str(&format!("  (+{} more not logged)", e.dropped));
    }
    line.trim_end().to_string()
}

/// In a fleet, the node whose directory holds task `id` when it is not this node's.
fn owned_elsewhere(spool: &Spool, id: &str) -> Option<String> {
    let here = spool.state_root().to_path_buf();
    spool
        .members()
        .into_iter()
        .filter(|m| m.state_root() != here)
        .find(|m| m.locate(id).is_some())
        .and_then(|m| m.member_node())
}

pub fn cancel(spool: &Spool, id: &str) -> Result<ExitCode> {
    request_cancel(spool, id)?;
    println!("cancel requested for {id} (the daemon applies it; see `architect show {id}`)");
    Ok(ExitCode::SUCCESS)
}

/// Checks that task `id` is this node's and not final, and writes the control request
/// that cancels it.
///
/// # Errors
/// Still in the inbox, another node's, unknown, already final; the request cannot be
/// written.
pub(crate) fn request_cancel(spool: &Spool, id: &str) -> Result<()> {
    match spool.locate(id) {
        None if spool.inbox().join(format!("{id}.json")).exists() => {
            bail!("task {id} is still in the inbox (the daemon has not read it yet); try again once it is pending")
        }
        None => match owned_elsewhere(spool, id) {
            Some(node) => bail!(
                "task {id} is node {node}'s (spool/nodes/{node}/): control requests stay on \
                 each machine, so run `architect cancel {id}` on {node}"
            ),
            None => bail!("no task {id:?} in the spool"),
        },
        Some(s) if s.is_final() => bail!("task {id} is already {}", s.dir()),
        Some(_) => {}
    }
    spool.write_control(&ControlRequest::Cancel {
        task_id: id.to_string(),
    })?;
    Ok(())
}

pub fn retry(spool: &Spool, id: &str) -> Result<ExitCode> {
    request_retry(spool, id)?;
    println!("retry requested for {id} (the daemon queues it again with a fresh retry budget)");
    Ok(ExitCode::SUCCESS)
}

/// Checks that task `id` is this node's and failed or cancelled, and writes the control
/// request that queues it again with a fresh retry budget.
///
/// # Errors
/// In another state, another node's, unknown; the request cannot be written.
pub(crate) fn request_retry(spool: &Spool, id: &str) -> Result<()> {
    match spool.locate(id) {
        Some(TaskState::Failed | TaskState::Cancelled) => {}
        Some(s) => bail!(
            "task {id} is {}; only failed or cancelled tasks can be retried",
            s.dir()
        ),
        None => match owned_elsewhere(spool, id) {
            Some(node) => bail!(
                "task {id} is node {node}'s (spool/nodes/{node}/): control requests stay on \
                 each machine, so run `architect retry {id}` on {node}"
            ),
            None => bail!("no task {id:?} in the spool"),
        },
    }
    spool.write_control(&ControlRequest::Retry {
        task_id: id.to_string(),
    })?;
    Ok(())
}
