//! Task lifecycle in the scheduler: intake from the inbox, recovery at start-up, the
//! dependency wait, the ready queue, dispatch to idle sessions, and the moves to
//! `done/`, `failed/`, `cancelled/` or back to `pending/` for a retry.
//!
//! Moves are renames. A record is rewritten in place (atomic replace) before it moves to
//! a final directory, so a crash between the two steps leaves a record whose `state`
//! names where it was going, and recovery completes the move.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Daemon;
use crate::durable::{self, ReadRefusal};
use crate::locks::{resources_for, HolderKind, Requester, Resource};
use crate::log::event;
use crate::scheduler::{Effect, Found, FreeSession, Input, Locks, TaskStatus};
use crate::session::runner::{Assignment, Command, InterruptReason};
use crate::spool::task::{parse_task, TaskRecord, TaskState, Violation};
use crate::spool::{classify_inbox_name, InboxName, MAX_TASK_BYTES};
use crate::types::{AttemptEnd, TaskResult};

/// Prompts longer than this (bytes) are not kept in memory while their task waits: once
/// the task's file is durable, the prompt is dropped and read back from the file when the
/// task is dispatched or its record rewritten. 150 queued tasks of 4 MiB then hold no
/// prompt bytes in the daemon; short prompts (most) stay in memory, so dispatching them
/// reads nothing.
pub(crate) const PROMPT_IN_MEMORY_MAX: usize = 4096;

/// Pending writes (bytes) past which intake carries out the batch before reading more
/// files, so a burst of large task files is not held in memory all at once.
const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

fn whole(message: impl Into<String>) -> Vec<Violation> {
    vec![Violation {
        path: String::new(),
        message: message.into(),
    }]
}

impl Daemon {
    /// Reads one inbox file and accepts or rejects it.
    pub(super) fn ingest(&mut self, name: &str) {
        if self.intake_paused.is_some() || self.shutting_down {
            return; // listed again once the disk takes writes, or at the next start
        }
        match classify_inbox_name(name) {
            InboxName::Ignored => return,
            InboxName::Conflict => {
                if self.conflicts.insert(name.to_string()) {
                    tracing::warn!("Syncthing conflict copy in the inbox, left alone: {name}");
                    self.log.record(
                        None,
                        None,
                        event::SyncConflict {
                            file: name.to_string(),
                            action: "left in inbox, not run; resolve by hand".into(),
                        },
                    );
                }
                return;
            }
            InboxName::Task => {}
        }
        let path = self.spool.inbox().join(name);
        if self.batch.holds(&path) {
            return; // taken in or rejected already; its file goes with this pass's batch
        }
        let (bytes, meta) = match durable::read_regular_meta(&path, MAX_TASK_BYTES) {
            Ok(b) => b,
            Err(ReadRefusal::Gone) => return,
            Err(refusal) => {
                let msg = match refusal {
                    ReadRefusal::TooLarge(n) => {
                        format!("file is {n} bytes; the limit is {MAX_TASK_BYTES} bytes")
                    }
                    other => format!("file {other}"),
                };
                self.reject(name, whole(msg));
                return;
            }
        };
        let spec = match parse_task(&bytes) {
            Ok(s) => s,
            Err(v) => {
                self.reject_copy(name, &bytes, v);
                return;
            }
        };
        if let Err(v) = resources_for(
            &spec,
            &self.config.repo,
            &self.config.git.protected_branches,
        ) {
            self.reject_copy(name, &bytes, v);
            return;
        }
        let id = spec.id.clone().unwrap_or_else(|| derived_id(name, &meta));
        let mut spec = spec;
        spec.id = Some(id.clone());
        if let Some(state) = self.known_state(&id) {
            let stored = self.stored_task(state, &id);
            if stored.as_ref() == Some(&spec) {
                // This very file was taken in before a crash, between its copy and its
                // removal: the copy is the task.
                tracing::info!(
                    "{name}: already taken in as task {id} ({}/); removed",
                    state.dir()
                );
                self.batch.remove_after(&path);
                return;
            }
            if stored.is_none() && self.sched.state_of(&id).is_some() {
                // The task reached its final state and its record is not in that
                // directory yet (the move is in the batch: recovery completing a half-done
                // move, a task failed as it arrived). This file may well be the one it was
                // taken in from — an inbox file whose removal a crash undid — and cannot
                // be compared now: rejecting it would file the task's own file as a
                // duplicate. A listing sees it again once the move is on disk.
                return;
            }
            self.reject_copy(
                name,
                &bytes,
                vec![Violation {
                    path: "/id".into(),
                    // Not the id itself: a report never repeats a value from the file.
                    message: format!(
                        "duplicate id: a task with this id is already in {}/",
                        state.dir()
                    ),
                }],
            );
            return;
        }
        if self.offered(&id) {
            self.reject_copy(
                name,
                &bytes,
                vec![Violation {
                    path: "/id".into(),
                    message: "duplicate id: a task with this id is offered to another node".into(),
                }],
            );
            return;
        }
        if let Some(to) = self.place(&spec) {
            let record = TaskRecord::new(
                id.clone(),
                spec.clone(),
                self.node().to_string(),
                name.to_string(),
                Utc::now(),
            );
            let received = received_event(name, bytes.len(), &record);
            match self.offer(record, &to) {
                Ok(()) => {
                    self.log.record(Some(&id), None, received);
                    self.batch.remove_after(&path);
                    return;
                }
                Err(e) => tracing::error!(task = %id, "offering it to {to}: {e}; it runs here"),
            }
        }
        // Intake never adopts the producer's inode: the bytes that were read and
        // validated are written to a new file of the daemon's own (0600) in pending/, and
        // the inbox file is removed once that copy is durable. A file hard-linked into the
        // inbox, or rewritten through a descriptor its producer kept open, can then
        // change nothing. (A crash between the two leaves the inbox file behind; read
        // again, it has the same id — given, or derived from the file — and is recognised
        // above.)
        let pending = self.spool.task_path(TaskState::Pending, &id);
        let file_bytes = bytes.len();
        self.batch.write_copy(&pending, bytes);
        self.batch.remove_after(&path);
        let record = TaskRecord::new(
            id.clone(),
            spec,
            self.node().to_string(),
            name.to_string(),
            Utc::now(),
        );
        self.log
            .record(Some(&id), None, received_event(name, file_bytes, &record));
        self.arrived(record);
        if self.batch.bytes_queued() > BATCH_BYTES_MAX {
            self.sync_dirs();
        }
    }

    /// The task spec stored for `id` in `state` (in memory, or read from its file).
    fn stored_task(&self, state: TaskState, id: &str) -> Option<crate::spool::task::TaskSpec> {
        if let Some(t) = self.sched.task(id) {
            if !self.prompts_on_disk.contains(id) {
                return Some(t.record.task.clone());
            }
        }
        self.spool
            .read_record(&self.spool.task_path(state, id))
            .ok()
            .map(|r| r.task)
    }

    /// Rejects an inbox file that was read: `rejected/` gets a copy of the bytes read
    /// (0600, the daemon's own file) and the inbox file is removed, so no producer's
    /// inode (or mode) is kept.
    fn reject_copy(&mut self, name: &str, bytes: &[u8], errors: Vec<Violation>) {
        let result = self.spool.reject_bytes(
            &mut self.batch,
            name,
            bytes,
            &self.config.node,
            errors.clone(),
        );
        self.report_rejection(name, errors, result);
    }

    /// Rejects an inbox file that was not read (moved as it is, with the batch).
    fn reject(&mut self, name: &str, errors: Vec<Violation>) {
        let from = self.spool.inbox().join(name);
        let result = self.spool.reject_file(
            &mut self.batch,
            &from,
            name,
            None,
            &self.config.node,
            errors.clone(),
        );
        self.report_rejection(name, errors, result);
    }

    /// Logs a rejection (`task_rejected`, with the name it was filed under) or its failure.
    pub(super) fn report_rejection(
        &mut self,
        name: &str,
        errors: Vec<Violation>,
        filed: crate::error::Result<String>,
    ) {
        match filed {
            Ok(as_name) => {
                let summary = crate::spool::format_violations(&errors);
                tracing::warn!("rejected {name}: {summary}");
                self.log.record(
                    None,
                    None,
                    event::TaskRejected {
                        file: name.to_string(),
                        rejected_as: as_name,
                        errors,
                    },
                );
            }
            Err(e) => tracing::error!("rejecting {name}: {e}"),
        }
    }

    /// Where a task id is: in the scheduler, or on disk.
    pub(super) fn known_state(&self, id: &str) -> Option<TaskState> {
        self.sched.state_of(id).or_else(|| self.spool.locate(id))
    }

    /// The final states on disk of those of `deps` the scheduler does not know.
    pub(super) fn deps_on_disk(&self, deps: &[String]) -> HashMap<String, TaskState> {
        deps.iter()
            .filter(|d| self.sched.state_of(d).is_none())
            .filter_map(|d| {
                self.spool
                    .locate(d)
                    .filter(|s| s.is_final())
                    .map(|s| (d.clone(), s))
            })
            .collect()
    }

    /// The locks task `spec` needs, or why its `locks` are invalid.
    pub(super) fn resources(
        &self,
        spec: &crate::spool::task::TaskSpec,
    ) -> Result<Vec<Resource>, String> {
        resources_for(spec, &self.config.repo, &self.config.git.protected_branches)
            .map_err(|v| crate::spool::format_violations(&v))
    }

    /// Hands `input` to the scheduler and carries out what it decides.
    pub(super) fn decide(&mut self, input: Input) {
        let effects = self.sched.handle(input, Utc::now());
        self.apply(effects);
    }

    /// Carries out the scheduler's effects: file changes go into the pass's group commit
    /// (in order), runs wait until their claim is durable, events are logged.
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Write { dir, record } => {
                    if let Err(e) = self.write_record(dir, &record) {
                        tracing::error!("{e}");
                    }
                }
                Effect::Move { id, from, to } => {
                    let (a, b) = (
                        self.spool.task_path(from, &id),
                        self.spool.task_path(to, &id),
                    );
                    self.batch.rename(&a, &b);
                    if to.is_final() {
                        self.prompts_on_disk.remove(&id);
                    }
                }
                Effect::Remove { id, dir } => {
                    self.batch.remove_after(&self.spool.task_path(dir, &id));
                }
                Effect::Run {
                    session,
                    task_id,
                    attempt,
                } => {
                    // The session is taken now; the task is sent once its claim is durable.
                    if let Some(slot) = self.sessions.get_mut(&session) {
                        slot.task = Some(task_id.clone());
                    }
                    self.runs_waiting.push((session, task_id, attempt));
                }
                Effect::Interrupt { session, task_id } => {
                    let handle = self.sessions.get(&session).and_then(|s| s.handle.as_ref());
                    match handle {
                        Some(h) => h.send(Command::Interrupt(InterruptReason::Cancelled)),
                        None => {
                            tracing::warn!(task = %task_id, "cancel: session {session} is not running")
                        }
                    }
                }
                Effect::Log {
                    task_id,
                    session,
                    body,
                } => self
                    .log
                    .record(task_id.as_deref(), session.as_deref(), *body),
            }
        }
    }

    /// Queues a rewrite of `record` in the `dir` state directory (carried out with the
    /// rest of the pass's batch); a prompt kept only in the task's file is put back.
    pub(super) fn write_record(
        &mut self,
        dir: TaskState,
        record: &TaskRecord,
    ) -> crate::error::Result<()> {
        let bytes = if record.task.prompt.is_empty() && self.prompts_on_disk.contains(&record.id) {
            let mut whole = record.clone();
            whole.task.prompt = self.prompt_from_disk(&record.id)?;
            serde_json::to_vec_pretty(&whole)
        } else {
            serde_json::to_vec_pretty(record)
        }
        .map_err(|e| crate::error::Error::json("task record", e))?;
        let path = self.spool.task_path(dir, &record.id);
        self.batch.write(&path, bytes);
        Ok(())
    }

    /// Starts tracking a task accepted from the inbox.
    pub(super) fn arrived(&mut self, record: TaskRecord) {
        if record.task.prompt.len() > PROMPT_IN_MEMORY_MAX {
            self.prompts_to_drop.push(record.id.clone());
        }
        let resources = self.resources(&record.task);
        let on_disk = self.deps_on_disk(&record.task.depends_on);
        self.decide(Input::Arrived {
            record,
            resources,
            on_disk,
        });
    }

    /// Offers the free sessions to the scheduler.
    pub(super) fn dispatch(&mut self) {
        if self.sched.queued() == 0 || self.shutting_down {
            return;
        }
        let free: Vec<FreeSession> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.is_free())
            .map(|(n, s)| FreeSession {
                name: n.clone(),
                role: s.resolved.spec.role.clone(),
                llm: s.resolved.spec.kind == crate::config::SessionKind::Provider,
                at_most_once: s.resolved.profile.spec.submit.at_most_once,
            })
            .collect();
        if !free.is_empty() {
            self.decide(Input::SessionsFree(free));
        }
    }

    /// After the batch is published: sends each claimed task to its session once its move
    /// to `active/` is on disk (and, for a session that submits at most once, durable); a
    /// claim that failed goes back to the scheduler.
    pub(super) fn send_claimed(&mut self) {
        for (session, id, attempt) in std::mem::take(&mut self.runs_waiting) {
            if !self.sched.is_running(&id, &session, attempt) {
                // The attempt ended while its claim waited for the disk (its session
                // died): the task was retried, maybe claimed again for another session.
                // Sending this one would run the prompt twice.
                continue;
            }
            if self
                .batch
                .holds(&self.spool.task_path(TaskState::Active, &id))
            {
                // The claim waits for the disk: so does the run.
                self.runs_waiting.push((session, id, attempt));
                continue;
            }
            if self.batch.unsynced() && self.submits_at_most_once(&session) {
                // A prompt that must not run twice waits until its claim survives a power
                // loss too.
                self.runs_waiting.push((session, id, attempt));
                continue;
            }
            if !self.spool.task_path(TaskState::Active, &id).is_file() {
                let gone = !self.spool.task_path(TaskState::Pending, &id).is_file();
                if let Some(slot) = self.sessions.get_mut(&session) {
                    if slot.task.as_deref() == Some(id.as_str()) {
                        slot.task = None;
                    }
                }
                tracing::error!(task = %id, session, "the claim of the task failed; not run");
                self.decide(Input::ClaimFailed {
                    task_id: id,
                    error: "its file is not in active/ after the claim".into(),
                    gone,
                });
                continue;
            }
            self.run(&session, &id);
        }
    }

    /// Whether `session`'s profile submits a prompt at most once (a session that died after
    /// the prompt was sent is not retried).
    fn submits_at_most_once(&self, session: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.resolved.profile.spec.submit.at_most_once)
    }

    /// Sends a claimed task to its session.
    fn run(&mut self, session: &str, id: &str) {
        let prompt = match self.prompt_of(id) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("task {id}: {e}");
                let end = AttemptEnd::Failed(
                    TaskResult::default(),
                    format!("its prompt could not be read back from its file: {e}"),
                );
                if let Some(slot) = self.sessions.get_mut(session) {
                    slot.task = None;
                }
                self.decide(Input::AttemptEnded {
                    session: session.to_string(),
                    task_id: id.to_string(),
                    end,
                });
                return;
            }
        };
        let Some(t) = self.sched.task(id) else {
            return;
        };
        let task = &t.record.task;
        let assignment = Assignment {
            task_id: id.to_string(),
            attempt: u32::try_from(t.record.attempts.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
            branch: task.locks.as_ref().and_then(|l| l.branch.clone()),
            provider: task.provider.clone(),
            model: task.model.clone(),
            complexity: task.complexity,
            role: task.role.clone(),
            prompt,
            timeout: Duration::from_secs(task.timeout_s()),
        };
        if let Some(h) = self.sessions.get(session).and_then(|s| s.handle.as_ref()) {
            h.send(Command::Run(assignment));
        }
    }

    /// When the scheduler handed task `id` to its session (for latencies).
    pub(super) fn assigned_at(&self, id: &str) -> Option<DateTime<Utc>> {
        match self.sched.task(id).map(|t| &t.status) {
            Some(TaskStatus::Running { started, .. }) => Some(*started),
            _ => None,
        }
    }

    /// A session reported how a task's attempt ended. What the agent produced is redacted
    /// before the scheduler records it (every variant is named, so that a new one that
    /// carries output cannot skip this).
    ///
    /// The output of an attempt that ended with one is run through the session profile's
    /// extraction patterns first, so that its `extraction` events come before the task's
    /// `task_completed` / `task_failed` / `task_retried`.
    pub(super) fn on_task_finished(&mut self, session: &str, task_id: &str, end: AttemptEnd) {
        let end = match end {
            AttemptEnd::Completed(result) => {
                let result = redact_result(result);
                self.log_extractions(session, task_id, &result.output);
                AttemptEnd::Completed(result)
            }
            AttemptEnd::Failed(result, error) => {
                let result = redact_result(result);
                self.log_extractions(session, task_id, &result.output);
                AttemptEnd::Failed(result, error)
            }
            AttemptEnd::NotStarted(why) => {
                tracing::warn!(session, task_id, "not started: {why}; queued again");
                AttemptEnd::NotStarted(why)
            }
            end @ (AttemptEnd::TimedOut
            | AttemptEnd::Cancelled
            | AttemptEnd::NotTaken(_)
            | AttemptEnd::DeliveryUncertain(_)
            | AttemptEnd::Limited { .. }) => end,
        };
        self.decide(Input::AttemptEnded {
            session: session.to_string(),
            task_id: task_id.to_string(),
            end,
        });
    }

    /// The program of the session running `task_id` exited (it died, or the daemon is
    /// stopping it).
    pub(super) fn on_task_session_exited(
        &mut self,
        session: &str,
        task_id: &str,
        status: &str,
        delivery: Option<crate::session::machine::Delivery>,
    ) {
        use crate::session::machine::Delivery;
        let at_most_once = self.submits_at_most_once(session);
        self.decide(Input::SessionExited {
            session: session.to_string(),
            task_id: task_id.to_string(),
            status: status.to_string(),
            at_most_once_sent: at_most_once
                && matches!(delivery, Some(Delivery::Sent | Delivery::Taken)),
        });
    }

    /// Logs an `extraction` event per match of the session profile's extraction patterns
    /// in an attempt's `output`, at most [`crate::extract::MAX_PER_ATTEMPT`]; the last one
    /// logged counts the rest (`dropped`).
    fn log_extractions(&self, session: &str, task_id: &str, output: &str) {
        let attempt = match self.sched.task(task_id).map(|t| &t.status) {
            Some(TaskStatus::Running {
                attempt,
                session: s,
                ..
            }) if s == session => u64::from(*attempt),
            _ => return, // not this session's running task any more: its end is ignored
        };
        let extractor = self
            .sessions
            .get(session)
            .map_or_else(crate::extract::builtin, |s| s.resolved.profile.extractor());
        let found = extractor.extract_limited(output, crate::extract::MAX_PER_ATTEMPT);
        let last = found.extractions.len().saturating_sub(1);
        for (i, e) in found.extractions.into_iter().enumerate() {
            let mut body = event::Extraction::new(attempt, e);
            if i == last {
                body.dropped = found.dropped;
            }
            self.log.record(Some(task_id), Some(session), body);
        }
    }

    /// Logs an `agent_usage` event per model the agent CLI reported, priced from
    /// `config/prices.toml`.
    pub(super) fn log_agent_usage(
        &self,
        task_id: &str,
        session: &str,
        usage: &[crate::agents::signal::AgentUsage],
    ) {
        for u in usage {
            let cost = self.config.prices.cost(u.model.as_deref(), &u.tokens);
            self.log.record(
                Some(task_id),
                Some(session),
                event::AgentUsage {
                    model: u.model.clone(),
                    input_tokens: u.tokens.input,
                    output_tokens: u.tokens.output,
                    cache_read_tokens: u.tokens.cache_read,
                    cache_write_tokens: u.tokens.cache_write,
                    reasoning_tokens: u.tokens.reasoning,
                    cost_usd: cost.unwrap_or(0.0),
                    priced: cost.is_some(),
                },
            );
        }
    }

    /// Start-up recovery: removes temp files left by an earlier run, reads `pending/`
    /// and `active/`, and hands what it found to the scheduler, which completes
    /// interrupted moves, returns interrupted tasks to `pending/` and queues the rest.
    pub(super) fn recover(&mut self) -> crate::error::Result<()> {
        for state in TaskState::ALL {
            let dir = self.spool.state_dir(state);
            for entry in std::fs::read_dir(&dir)
                .map_err(|e| crate::error::Error::io("listing", &dir, e))?
                .flatten()
            {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut found = Vec::new();
        let mut deps = Vec::new();
        for dir in [TaskState::Active, TaskState::Pending] {
            for id in self.spool.list_ids(dir)? {
                let path = self.spool.task_path(dir, &id);
                if dir == TaskState::Pending && self.offered(&id) {
                    // Offered to another node before a crash, its pending file not yet
                    // removed: the offer holds it, and this node must not run it.
                    self.batch.remove_after(&path);
                    continue;
                }
                let Some(mut record) = self.read_task_file(&path) else {
                    continue;
                };
                let also_final = [TaskState::Done, TaskState::Failed, TaskState::Cancelled]
                    .into_iter()
                    .find(|s| self.spool.task_path(*s, &id).exists());
                if let Some(f) = also_final {
                    tracing::warn!(
                        "{id} is in {}/ and {}/; the final record wins",
                        dir.dir(),
                        f.dir()
                    );
                }
                if record.task.prompt.len() > PROMPT_IN_MEMORY_MAX {
                    // Durable already: a long prompt stays in its file until dispatch.
                    record.task.prompt = String::new();
                    self.prompts_on_disk.insert(id.clone());
                }
                deps.extend(record.task.depends_on.iter().cloned());
                let resources = self.resources(&record.task);
                found.push(Found {
                    dir,
                    record,
                    also_final,
                    resources,
                });
            }
        }
        let n = found.len();
        let on_disk = self.deps_on_disk(&deps);
        self.decide(Input::Recovered { found, on_disk });
        // Reading and validating every record (up to 4 MiB each) left freed pages behind.
        release_free_memory();
        if n > 0 {
            tracing::info!("recovered {n} task(s) from pending/ and active/");
        }
        Ok(())
    }

    /// Reads a record (or a task as submitted) from a state directory, validated against
    /// the schemas. A file that breaks them goes to `rejected/` with the reason (it
    /// never reaches a session); one that cannot be read is left for a person.
    fn read_task_file(&mut self, path: &std::path::Path) -> Option<TaskRecord> {
        match self.spool.read_record_checked(path) {
            Ok(mut r) => {
                if r.node.is_empty() {
                    r.node = self.node().to_string();
                }
                Some(r)
            }
            Err(Ok(errors)) => {
                // `pending/<id>.json`: where it was, without the spool's own path.
                let shown = path
                    .iter()
                    .rev()
                    .take(2)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<std::path::PathBuf>()
                    .display()
                    .to_string();
                let filed = self.spool.reject_file(
                    &mut self.batch,
                    path,
                    &shown,
                    None,
                    &self.config.node,
                    errors.clone(),
                );
                self.report_rejection(&shown, errors, filed);
                None
            }
            Err(Err(e)) => {
                tracing::error!("{e}; leaving it for a person to inspect");
                None
            }
        }
    }
}

/// The daemon's lock table as the scheduler sees it: `flock`s under `spool/locks/`.
pub(crate) struct FlockTable {
    pub table: crate::locks::LockTable,
    pub node: String,
    /// In a fleet, why this node may not take locks now (it is not, or not yet, the lock
    /// home: `fleet::may_take_locks`); set at each heartbeat. A locking task then waits
    /// as for a lock held elsewhere. `None`: it may.
    pub fleet_gate: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Locks for FlockTable {
    type Held = crate::locks::HeldLocks;

    fn try_acquire(
        &mut self,
        task: &str,
        session: &str,
        resources: &[Resource],
    ) -> Result<Result<Self::Held, crate::locks::Conflict>, String> {
        if let Some(first) = resources.first() {
            let gate = self.fleet_gate.lock().map_or(None, |g| g.clone());
            if let Some(why) = gate {
                tracing::debug!(task, "locks wait: {why}");
                return Ok(Err(crate::locks::Conflict {
                    resource: first.clone(),
                    holder: None,
                }));
            }
        }
        let who = Requester {
            by: HolderKind::Daemon,
            task: Some(task.to_string()),
            session: Some(session.to_string()),
            node: self.node.clone(),
            note: None,
        };
        self.table
            .try_acquire(resources, &who)
            .map_err(|e| e.to_string())
    }

    fn held_resources(&self, held: &Self::Held) -> Vec<Resource> {
        held.resources().to_vec()
    }

    fn release(&mut self, held: Self::Held) -> u64 {
        let ms = held.held_ms();
        held.release();
        ms
    }
}

/// The id of an inbox file that names none: a ULID whose time is the file's mtime and
/// whose random part is a hash of its name, device, inode, size and mtime, so the same
/// file read again (after a crash between its copy into `pending/` and its removal) gets
/// the same id and is recognised, while two files practically never share one.
fn derived_id(name: &str, meta: &std::fs::Metadata) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    for n in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        u64::try_from(meta.mtime()).unwrap_or(0),
        u64::try_from(meta.mtime_nsec()).unwrap_or(0),
    ] {
        h.update(n.to_le_bytes());
    }
    let digest = h.finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let ms = u64::try_from(meta.mtime()).unwrap_or(0) * 1000
        + u64::try_from(meta.mtime_nsec()).unwrap_or(0) / 1_000_000;
    ulid::Ulid::from_parts(ms, u128::from_be_bytes(random)).to_string()
}

impl Daemon {
    /// Drops from memory the prompts of the tasks whose file is now durable (called after
    /// each batch is carried out). A task whose file did not make it to disk keeps its
    /// prompt in memory.
    pub(super) fn drop_durable_prompts(&mut self) {
        let mut dropped = false;
        for id in std::mem::take(&mut self.prompts_to_drop) {
            let Some(t) = self.sched.task_mut(&id) else {
                continue;
            };
            if t.record.task.prompt.is_empty()
                || !self.spool.task_path(t.status.dir(), &id).is_file()
            {
                continue;
            }
            t.record.task.prompt = String::new();
            self.prompts_on_disk.insert(id);
            dropped = true;
        }
        if dropped {
            release_free_memory();
        }
    }

    /// Task `id`'s prompt: from memory, or read back from its file.
    fn prompt_of(&self, id: &str) -> crate::error::Result<String> {
        match self.sched.task(id) {
            Some(t) if !t.record.task.prompt.is_empty() || !self.prompts_on_disk.contains(id) => {
                Ok(t.record.task.prompt.clone())
            }
            _ => self.prompt_from_disk(id),
        }
    }

    /// Reads task `id`'s prompt from its file, wherever it is on disk now.
    pub(super) fn prompt_from_disk(&self, id: &str) -> crate::error::Result<String> {
        let state = self
            .spool
            .locate(id)
            .ok_or_else(|| crate::error::Error::TaskNotFound(id.to_string()))?;
        let record = self.spool.read_record(&self.spool.task_path(state, id))?;
        Ok(record.task.prompt)
    }
}

/// The SHA-256 of a prompt, hex.
/// The `task_received` event of inbox file `name` (`bytes` long) taken in as `record`.
fn received_event(name: &str, bytes: usize, record: &TaskRecord) -> event::TaskReceived {
    event::TaskReceived {
        file: name.to_string(),
        bytes: bytes as u64,
        // Never the whole prompt (it may be megabytes): its start, size and hash.
        prompt: record.task.prompt.chars().take(200).collect::<String>(),
        prompt_chars: record.task.prompt.chars().count() as u64,
        prompt_sha256: prompt_sha256(&record.task.prompt),
    }
}

fn prompt_sha256(prompt: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(prompt.as_bytes()) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A task result with secrets redacted from what the agent printed or replied (a
/// command's output can hold a key it read from a file).
fn redact_result(mut r: TaskResult) -> TaskResult {
    use crate::log::redact::redact;
    r.output = redact(&r.output);
    r.reply = r.reply.map(|t| redact(&t));
    r
}

/// Hands freed pages back to the system: glibc keeps large freed blocks for reuse, so
/// without this the daemon's resident size stays at its peak (intake of large tasks,
/// recovery of many). Does nothing off Linux/glibc.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
