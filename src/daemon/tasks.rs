//! Task lifecycle in the scheduler: intake from the inbox, recovery at start-up, the
//! dependency wait, the ready queue, dispatch to idle sessions, and the moves to
//! `done/`, `failed/`, `cancelled/` or back to `pending/` for a retry.
//!
//! Moves are renames. A record is rewritten in place (atomic replace) before it moves to
//! a final directory, so a crash between the two steps leaves a record whose `state`
//! names where it was going, and recovery completes the move.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::locking::LockAttempt;
use super::Daemon;
use crate::locks::resources_for;
use crate::log::EventType;
use crate::queue::Target;
use crate::session::runner::{Assignment, Command, RunOutcome};
use crate::spool::fsio::{self, ReadRefusal};
use crate::spool::task::{
    parse_task, Attempt, AttemptOutcome, TaskRecord, TaskResult, TaskState, Violation,
};
use crate::spool::{classify_inbox_name, InboxName, MAX_TASK_BYTES};

/// A task in `pending/` or `active/`, as the scheduler tracks it.
#[derive(Debug)]
pub(crate) struct LiveTask {
    pub record: TaskRecord,
    pub state: TaskState,
    /// FIFO order within a priority.
    pub seq: u64,
    /// Dependencies not yet done.
    pub waiting_for: usize,
    /// Session running the current attempt.
    pub session: Option<String>,
    pub attempt_started: Option<DateTime<Utc>>,
    pub attempt_started_at: Option<Instant>,
    pub cancel_requested: bool,
    /// The locks it must hold to run (resolved from `task.locks`).
    pub resources: Vec<crate::locks::Resource>,
}

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
        match classify_inbox_name(name) {
            InboxName::Ignored => return,
            InboxName::Conflict => {
                if self.conflicts.insert(name.to_string()) {
                    tracing::warn!("Syncthing conflict copy in the inbox, left alone: {name}");
                    self.log.record(
                        EventType::SyncConflict,
                        None,
                        None,
                        json!({"file": name, "action": "left in inbox, not run; resolve by hand"}),
                    );
                }
                return;
            }
            InboxName::Task => {}
        }
        let path = self.spool.inbox().join(name);
        let (bytes, meta) = match fsio::read_regular_meta(&path, MAX_TASK_BYTES) {
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
            if self.stored_task(state, &id).as_ref() == Some(&spec) {
                // This very file was taken in before a crash, between its copy and its
                // removal: the copy is the task.
                tracing::info!(
                    "{name}: already taken in as task {id} ({}/); removed",
                    state.dir()
                );
                self.batch.remove_after(&path);
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
        // Intake never adopts the producer's inode: the bytes that were read and
        // validated are written to a new file of the daemon's own (0600) in pending/, and
        // the inbox file is removed once that copy is durable. A file hard-linked into the
        // inbox, or rewritten through a descriptor its producer kept open, can then
        // change nothing. (A crash between the two leaves the inbox file behind; read
        // again, it has the same id — given, or derived from the file — and is recognised
        // above.)
        let pending = self.spool.task_path(TaskState::Pending, &id);
        let file_bytes = bytes.len();
        self.batch.write(&pending, bytes);
        self.batch.remove_after(&path);
        let record = TaskRecord::new(
            id.clone(),
            spec,
            self.node().to_string(),
            name.to_string(),
            Utc::now(),
        );
        self.log.record(
            EventType::TaskReceived,
            Some(&id),
            None,
            json!({
                "file": name,
                "bytes": file_bytes,
                // Never the whole prompt (it may be megabytes): its start, size and hash.
                "prompt": record.task.prompt.chars().take(200).collect::<String>(),
                "prompt_chars": record.task.prompt.chars().count(),
                "prompt_sha256": prompt_sha256(&record.task.prompt),
            }),
        );
        self.track(record);
        if self.batch.bytes_queued() > BATCH_BYTES_MAX {
            self.sync_dirs();
        }
    }

    /// The task spec stored for `id` in `state` (in memory, or read from its file).
    fn stored_task(&self, state: TaskState, id: &str) -> Option<crate::spool::task::TaskSpec> {
        if let Some(t) = self.live.get(id) {
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
        let result = self
            .spool
            .reject_bytes(name, bytes, self.node(), errors.clone());
        self.report_rejection(name, errors, result);
    }

    /// Rejects an inbox file that was not read (moved as it is).
    fn reject(&mut self, name: &str, errors: Vec<Violation>) {
        let result = self.spool.reject(name, self.node(), errors.clone());
        self.report_rejection(name, errors, result);
    }

    /// Logs a rejection (`task_rejected`, with the name it was filed under) or its failure.
    fn report_rejection(
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
                    EventType::TaskRejected,
                    None,
                    None,
                    json!({"file": name, "rejected_as": as_name, "errors": errors}),
                );
            }
            Err(e) => tracing::error!("rejecting {name}: {e}"),
        }
    }

    /// Where a task id is: in memory, or on disk.
    pub(super) fn known_state(&self, id: &str) -> Option<TaskState> {
        if let Some(t) = self.live.get(id) {
            return Some(t.state);
        }
        if let Some(s) = self.finals.get(id) {
            return Some(*s);
        }
        self.spool.locate(id)
    }

    /// Queues a rewrite of `record` in the `dir` state directory (carried out with the
    /// rest of the pass's batch).
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

    /// Queues the move of task `id` from one state directory to another.
    fn move_task(&mut self, id: &str, from: TaskState, to: TaskState) {
        let (a, b) = (self.spool.task_path(from, id), self.spool.task_path(to, id));
        self.batch.rename(&a, &b);
    }

    /// Starts tracking a pending record: logs it as queued and queues it (or parks it
    /// behind its dependencies or its retry backoff).
    pub(super) fn track(&mut self, mut record: TaskRecord) {
        let id = record.id.clone();
        // Locks were checked at intake; a recovered task is checked again (the
        // repository may have changed under it).
        let (resources, lock_error) = match resources_for(
            &record.task,
            &self.config.repo,
            &self.config.git.protected_branches,
        ) {
            Ok(r) => (r, None),
            Err(v) => (Vec::new(), Some(crate::spool::format_violations(&v))),
        };
        if record.waiting_lock.take().is_some() {
            // A wait recorded before a restart: dispatch decides afresh.
            if let Err(e) = self.write_record(TaskState::Pending, &record) {
                tracing::error!("{e}");
            }
        }
        if record.task.prompt.len() > PROMPT_IN_MEMORY_MAX {
            self.prompts_to_drop.push(id.clone());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut waiting_for = 0;
        let mut failed_dep = None;
        let cycle = self.dependency_cycle(&id, &record.task.depends_on);
        let mut unknown = Vec::new();
        for dep in &record.task.depends_on {
            match self.known_state(dep) {
                Some(TaskState::Done) => {}
                Some(s @ (TaskState::Failed | TaskState::Cancelled)) => {
                    failed_dep = Some((dep.clone(), s));
                    break;
                }
                state => {
                    if state.is_none() {
                        unknown.push(dep.clone());
                    }
                    waiting_for += 1;
                    self.dependents
                        .entry(dep.clone())
                        .or_default()
                        .push(id.clone());
                }
            }
        }
        self.log.record(
            EventType::TaskQueued,
            Some(&id),
            None,
            json!({
                "priority": record.task.priority(),
                "session": record.task.session,
                "role": record.task.role,
                "depends_on": record.task.depends_on,
                "waiting_for": waiting_for,
                "unknown_dependencies": unknown,
                "attempts": record.attempts.len(),
            }),
        );
        if !unknown.is_empty() && cycle.is_none() {
            tracing::warn!(
                "task {id} waits for {}, not known (yet): it runs once they are done",
                unknown.join(", ")
            );
        }
        self.live.insert(
            id.clone(),
            LiveTask {
                record,
                state: TaskState::Pending,
                seq,
                waiting_for,
                session: None,
                attempt_started: None,
                attempt_started_at: None,
                cancel_requested: false,
                resources,
            },
        );
        if let Some(cycle) = cycle {
            // Failing it fails the tasks of the cycle that wait for it, in turn.
            self.finish(
                &id,
                TaskState::Failed,
                None,
                Some(format!("dependency cycle: {}", cycle.join(" → "))),
            );
        } else if let Some(error) = lock_error {
            self.finish(
                &id,
                TaskState::Failed,
                None,
                Some(format!("invalid locks: {error}")),
            );
        } else if let Some((dep, s)) = failed_dep {
            self.finish(
                &id,
                TaskState::Failed,
                None,
                Some(format!(
                    "dependency {dep} {}",
                    if s == TaskState::Failed {
                        "failed"
                    } else {
                        "was cancelled"
                    }
                )),
            );
        } else if waiting_for == 0 {
            self.make_ready(&id);
        }
    }

    /// Puts a pending task whose dependencies are met into the ready queue, or into the
    /// retry-backoff timer when its `not_before` is still ahead.
    pub(super) fn make_ready(&mut self, id: &str) {
        let Some(t) = self.live.get(id) else { return };
        if t.state != TaskState::Pending || t.waiting_for > 0 || self.queue.contains(id) {
            return;
        }
        if let Some(nb) = t.record.not_before {
            let wait = (nb - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if !wait.is_zero() {
                self.delayed
                    .entry(Instant::now() + wait)
                    .or_default()
                    .push(id.to_string());
                return;
            }
        }
        let llm = t.record.task.provider.is_some()
            || t.record.task.model.is_some()
            || t.record.task.complexity.is_some();
        let target = match (&t.record.task.session, &t.record.task.role) {
            (Some(s), _) => Target::Session(s.clone()),
            (None, Some(r)) => Target::Role(r.clone()),
            (None, None) if llm => Target::Llm,
            (None, None) => Target::Any,
        };
        self.queue
            .push(target, t.record.task.priority(), t.seq, id.to_string());
    }

    /// Hands queued tasks to idle sessions.
    pub(super) fn dispatch(&mut self) {
        if self.queue.is_empty() || self.shutting_down {
            return;
        }
        let idle: Vec<(String, Option<String>, bool)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.is_free())
            .map(|(n, s)| {
                (
                    n.clone(),
                    s.resolved.spec.role.clone(),
                    s.resolved.spec.kind == crate::config::SessionKind::Provider,
                )
            })
            .collect();
        let mut contended = std::collections::HashMap::new();
        for (name, role, llm) in idle {
            // A task whose locks are held elsewhere is parked and the next one is tried:
            // it never blocks the tasks behind it.
            while let Some(id) = self.queue.take_for(&name, role.as_deref(), llm) {
                match self.take_locks(&id, &name, &mut contended) {
                    LockAttempt::Held => {
                        self.assign(&id, &name);
                        break;
                    }
                    LockAttempt::Parked | LockAttempt::Failed => {}
                }
            }
        }
    }

    fn assign(&mut self, id: &str, session: &str) {
        if !self.live.contains_key(id) {
            return;
        }
        let prompt = match self.prompt_of(id) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("task {id}: {e}");
                self.finish(
                    id,
                    TaskState::Failed,
                    None,
                    Some(format!(
                        "its prompt could not be read back from its file: {e}"
                    )),
                );
                return;
            }
        };
        self.move_task(id, TaskState::Pending, TaskState::Active);
        let Some(t) = self.live.get_mut(id) else {
            return;
        };
        t.state = TaskState::Active;
        t.session = Some(session.to_string());
        t.attempt_started = Some(Utc::now());
        t.attempt_started_at = Some(Instant::now());
        let attempt = t.record.attempts.len() + 1;
        let assignment = Assignment {
            task_id: id.to_string(),
            branch: t.record.task.locks.as_ref().and_then(|l| l.branch.clone()),
            provider: t.record.task.provider.clone(),
            model: t.record.task.model.clone(),
            complexity: t.record.task.complexity,
            role: t.record.task.role.clone(),
            prompt,
            timeout: Duration::from_secs(t.record.task.timeout_s()),
        };
        self.log.record(
            EventType::TaskAssigned,
            Some(id),
            Some(session),
            json!({"attempt": attempt}),
        );
        if let Some(slot) = self.sessions.get_mut(session) {
            slot.task = Some(id.to_string());
            if let Some(h) = &slot.handle {
                h.send(Command::Run(assignment));
            }
        }
    }

    /// A session reported how a task's attempt ended.
    pub(super) fn on_task_finished(&mut self, session: &str, task_id: &str, outcome: RunOutcome) {
        let cancel = self.live.get(task_id).is_some_and(|t| t.cancel_requested);
        match outcome {
            RunOutcome::Completed(result) => {
                let result = redact_result(result);
                self.end_attempt(task_id, session, AttemptOutcome::Completed, None);
                self.finish(task_id, TaskState::Done, Some(result), None);
            }
            RunOutcome::Failed(result, error) => {
                let result = redact_result(result);
                self.end_attempt(
                    task_id,
                    session,
                    AttemptOutcome::Failed,
                    Some(error.clone()),
                );
                self.finish(task_id, TaskState::Failed, Some(result), Some(error));
            }
            RunOutcome::Cancelled => self.attempt_cancelled(task_id, session, None),
            RunOutcome::NotStarted(why) => {
                tracing::warn!(session, task_id, "not started: {why}; queued again");
                self.unclaim(task_id);
            }
            RunOutcome::TimedOut
            | RunOutcome::NotTaken(_)
            | RunOutcome::DeliveryUncertain(_)
            | RunOutcome::Limited { .. }
                if cancel =>
            {
                self.attempt_cancelled(task_id, session, None);
            }
            RunOutcome::DeliveryUncertain(why) => {
                // Never retried by itself: the prompt may have run.
                self.end_attempt(
                    task_id,
                    session,
                    AttemptOutcome::DeliveryUncertain,
                    Some(why.clone()),
                );
                self.finish(task_id, TaskState::Failed, None, Some(why));
            }
            RunOutcome::Limited { message, .. } => {
                let why = format!("usage limit on session {session}: {message}");
                self.attempt_failed(task_id, session, AttemptOutcome::Limited, why);
            }
            RunOutcome::NotTaken(why) => {
                self.attempt_failed(task_id, session, AttemptOutcome::NotTaken, why);
            }
            RunOutcome::TimedOut => {
                let secs = self
                    .live
                    .get(task_id)
                    .map_or(0, |t| t.record.task.timeout_s());
                let error = format!("timed out after {secs} s");
                self.attempt_failed(task_id, session, AttemptOutcome::TimedOut, error);
            }
        }
    }

    /// Logs an `agent_usage` event per model the agent CLI reported, priced from
    /// `config/prices.toml`.
    pub(super) fn log_agent_usage(
        &self,
        task_id: &str,
        session: &str,
        usage: &[crate::session::signal::AgentUsage],
    ) {
        for u in usage {
            let cost = self.config.prices.cost(u.model.as_deref(), &u.tokens);
            self.log.record(
                EventType::AgentUsage,
                Some(task_id),
                Some(session),
                json!({
                    "model": u.model,
                    "input_tokens": u.tokens.input,
                    "output_tokens": u.tokens.output,
                    "cache_read_tokens": u.tokens.cache_read,
                    "cache_write_tokens": u.tokens.cache_write,
                    "reasoning_tokens": u.tokens.reasoning,
                    "cost_usd": cost.unwrap_or(0.0),
                    "priced": cost.is_some(),
                }),
            );
        }
    }

    /// Records a failed attempt, then retries or fails the task.
    fn attempt_failed(
        &mut self,
        task_id: &str,
        session: &str,
        outcome: AttemptOutcome,
        error: String,
    ) {
        self.end_attempt(task_id, session, outcome, Some(error.clone()));
        self.retry_or_fail(task_id, error);
    }

    /// Records an attempt ended by a cancellation, then moves the task to `cancelled/`.
    fn attempt_cancelled(&mut self, task_id: &str, session: &str, error: Option<String>) {
        self.end_attempt(task_id, session, AttemptOutcome::Cancelled, error);
        self.finish(
            task_id,
            TaskState::Cancelled,
            None,
            Some("cancelled".into()),
        );
    }

    /// Returns a claimed task that never started to `pending/`, no attempt counted.
    fn unclaim(&mut self, task_id: &str) {
        self.release_locks(task_id);
        self.move_task(task_id, TaskState::Active, TaskState::Pending);
        if let Some(t) = self.live.get_mut(task_id) {
            t.state = TaskState::Pending;
            t.session = None;
            t.attempt_started = None;
            t.attempt_started_at = None;
        }
        self.make_ready(task_id);
    }

    /// The session running `task_id` died.
    /// The daemon is stopping and ended the session running `task_id`: not a failure of
    /// the task. It goes back to `pending/` with no attempt counted, unless its prompt may
    /// have run on an at-most-once session: then it fails, never sent again by itself.
    pub(super) fn on_task_daemon_stopped(
        &mut self,
        session: &str,
        task_id: &str,
        delivery: Option<crate::session::machine::Delivery>,
    ) {
        use crate::session::machine::Delivery;
        let at_most_once = self
            .sessions
            .get(session)
            .is_some_and(|s| s.resolved.profile.spec.submit.at_most_once);
        if at_most_once && matches!(delivery, Some(Delivery::Sent | Delivery::Taken)) {
            let error = format!(
                "the daemon stopped while session {session} ran the task, after its prompt was \
                 sent: not sent again, so it cannot run twice (`architect retry {task_id}` runs it again)"
            );
            self.end_attempt(
                task_id,
                session,
                AttemptOutcome::Interrupted,
                Some(error.clone()),
            );
            self.finish(task_id, TaskState::Failed, None, Some(error));
        } else {
            self.unclaim(task_id);
        }
    }

    pub(super) fn on_task_session_died(
        &mut self,
        session: &str,
        task_id: &str,
        status: &str,
        delivery: Option<crate::session::machine::Delivery>,
    ) {
        use crate::session::machine::Delivery;
        let cancel = self.live.get(task_id).is_some_and(|t| t.cancel_requested);
        let error = format!("session {session} died during the task ({status})");
        let at_most_once = self
            .sessions
            .get(session)
            .is_some_and(|s| s.resolved.profile.spec.submit.at_most_once);
        if cancel {
            self.attempt_cancelled(task_id, session, Some(error));
        } else if at_most_once && matches!(delivery, Some(Delivery::Sent | Delivery::Taken)) {
            // The prompt may have run: never sent again by itself.
            let how = if delivery == Some(Delivery::Taken) {
                "was taken"
            } else {
                "was sent"
            };
            let error = format!(
                "{error} after its prompt {how}: not sent again, so it cannot run twice \
                 (`architect retry {task_id}` runs it again)"
            );
            self.end_attempt(
                task_id,
                session,
                AttemptOutcome::SessionDied,
                Some(error.clone()),
            );
            self.finish(task_id, TaskState::Failed, None, Some(error));
        } else {
            self.attempt_failed(task_id, session, AttemptOutcome::SessionDied, error);
        }
    }

    pub(super) fn end_attempt(
        &mut self,
        task_id: &str,
        session: &str,
        outcome: AttemptOutcome,
        error: Option<String>,
    ) {
        self.release_locks(task_id);
        let node = self.node().to_string();
        let Some(t) = self.live.get_mut(task_id) else {
            return;
        };
        let started = t.attempt_started.take().unwrap_or_else(Utc::now);
        t.attempt_started_at = None;
        let attempt = u32::try_from(t.record.attempts.len() + 1).unwrap_or(u32::MAX);
        if t.record.started_at.is_none() {
            t.record.started_at = Some(started);
        }
        t.record.session = Some(session.to_string());
        t.record.attempts.push(Attempt {
            attempt,
            session: session.to_string(),
            node,
            started_at: started,
            finished_at: Utc::now(),
            outcome,
            error,
        });
        t.session = None;
    }

    /// After a failed attempt: back to pending/ with backoff, or failed/ when the retry
    /// budget is spent.
    pub(super) fn retry_or_fail(&mut self, task_id: &str, error: String) {
        let Some(t) = self.live.get(task_id) else {
            return;
        };
        if !t.record.may_retry() {
            let n = t.record.attempts_used();
            self.finish(
                task_id,
                TaskState::Failed,
                None,
                Some(format!("gave up after {n} attempt(s): {error}")),
            );
            return;
        }
        let used = t.record.attempts_used();
        let from_state = t.state;
        let base = self.config.daemon.retry_backoff_ms;
        let delay_ms = base
            .saturating_mul(1u64 << used.saturating_sub(1).min(30))
            .min(self.config.daemon.retry_backoff_max_ms);
        let not_before = Utc::now()
            + chrono::Duration::milliseconds(i64::try_from(delay_ms).unwrap_or(i64::MAX));
        if from_state == TaskState::Active {
            // Release the claim first (a rename), then record the attempt: a crash between
            // the two under-counts one attempt, it never loses the task.
            self.move_task(task_id, TaskState::Active, TaskState::Pending);
        }
        let Some(t) = self.live.get_mut(task_id) else {
            return;
        };
        t.state = TaskState::Pending;
        t.record.state = TaskState::Pending;
        t.record.not_before = Some(not_before);
        let record = t.record.clone();
        if let Err(e) = self.write_record(TaskState::Pending, &record) {
            tracing::error!("{e}");
        }
        self.log.record(
            EventType::TaskRetried,
            Some(task_id),
            record.session.as_deref(),
            json!({"error": error, "attempt": record.attempts.len(), "retry_in_ms": delay_ms}),
        );
        self.make_ready(task_id);
    }

    /// Moves a live task to a final state: rewrite the record in place, then rename it
    /// into `done/`, `failed/` or `cancelled/`; log; release dependents.
    pub(super) fn finish(
        &mut self,
        task_id: &str,
        state: TaskState,
        result: Option<TaskResult>,
        error: Option<String>,
    ) {
        self.release_locks(task_id);
        let Some(mut t) = self.live.remove(task_id) else {
            return;
        };
        self.queue.remove(task_id);
        let now = Utc::now();
        t.record.state = state;
        t.record.finished_at = Some(now);
        t.record.not_before = None;
        t.record.result = result;
        t.record.error.clone_from(&error);
        let from_dir = t.state;
        if let Err(e) = self.write_record(from_dir, &t.record) {
            tracing::error!("{e}");
        }
        self.prompts_on_disk.remove(task_id);
        self.move_task(task_id, from_dir, state);
        let session = t.record.session.clone();
        let started = t.record.attempts.last().map(|a| a.started_at);
        let duration_ms = started.map(|s| (now - s).num_milliseconds());
        match state {
            TaskState::Done => {
                let r = t.record.result.as_ref();
                self.log.record(
                    EventType::TaskCompleted,
                    Some(task_id),
                    session.as_deref(),
                    json!({
                        "attempts": t.record.attempts.len(),
                        "duration_ms": duration_ms,
                        "exit_status": r.and_then(|r| r.exit_status),
                        "output_bytes": r.map_or(0, |r| r.output.len()),
                    }),
                );
            }
            TaskState::Failed => self.log.record(
                EventType::TaskFailed,
                Some(task_id),
                session.as_deref(),
                json!({"attempts": t.record.attempts.len(), "duration_ms": duration_ms, "error": error}),
            ),
            _ => self.log.record(
                EventType::TaskCancelled,
                Some(task_id),
                session.as_deref(),
                json!({"attempts": t.record.attempts.len()}),
            ),
        }
        self.finals.insert(task_id.to_string(), state);
        self.release_dependents(task_id, state);
    }

    fn release_dependents(&mut self, id: &str, state: TaskState) {
        let Some(waiting) = self.dependents.remove(id) else {
            return;
        };
        for dep_id in waiting {
            if state == TaskState::Done {
                let ready = self.live.get_mut(&dep_id).is_some_and(|t| {
                    t.waiting_for = t.waiting_for.saturating_sub(1);
                    t.waiting_for == 0
                });
                if ready {
                    self.make_ready(&dep_id);
                }
            } else if self.live.contains_key(&dep_id) {
                let why = if state == TaskState::Failed {
                    "failed"
                } else {
                    "was cancelled"
                };
                self.finish(
                    &dep_id,
                    TaskState::Failed,
                    None,
                    Some(format!("dependency {id} {why}")),
                );
            }
        }
    }

    /// Start-up recovery: complete interrupted moves, return tasks left in `active/` to
    /// `pending/` (the interrupted attempt counted), and load `pending/` into the queue in
    /// the order the tasks were received.
    pub(super) fn recover(&mut self) -> crate::error::Result<()> {
        let node = self.node().to_string();
        // Temp files left by an earlier run (half-written, or recycled inodes) go.
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
        for id in self.spool.list_ids(TaskState::Active)? {
            let path = self.spool.task_path(TaskState::Active, &id);
            let Some(mut record) = self.read_task_file(&path) else {
                continue;
            };
            if record.state.is_final() {
                // The record was rewritten for its final state; finish the rename.
                let to = self.spool.task_path(record.state, &id);
                if let Err(e) = fsio::rename_noreplace(&path, &to) {
                    tracing::error!("completing the move of {id}: {e}");
                }
                continue;
            }
            let now = Utc::now();
            record.attempts.push(Attempt {
                attempt: u32::try_from(record.attempts.len() + 1).unwrap_or(u32::MAX),
                session: record.session.clone().unwrap_or_default(),
                node: node.clone(),
                started_at: record
                    .attempts
                    .last()
                    .map_or(record.received_at, |a| a.finished_at),
                finished_at: now,
                outcome: AttemptOutcome::Interrupted,
                error: Some("the daemon stopped during the attempt".into()),
            });
            record.state = TaskState::Pending;
            let to = self.spool.task_path(TaskState::Pending, &id);
            if let Err(e) = fsio::rename_noreplace(&path, &to) {
                tracing::error!("returning {id} to pending/: {e}");
                continue;
            }
            if let Err(e) = self.write_record(TaskState::Pending, &record) {
                tracing::error!("{e}");
            }
            self.log.record(
                EventType::TaskRetried,
                Some(&id),
                record.session.as_deref(),
                json!({"error": "the daemon stopped during the attempt", "attempt": record.attempts.len(), "recovered": true}),
            );
        }
        // The records returned to pending/ above are read again below.
        self.sync_dirs();
        let mut records = Vec::new();
        for id in self.spool.list_ids(TaskState::Pending)? {
            let path = self.spool.task_path(TaskState::Pending, &id);
            if let Some(final_state) = [TaskState::Done, TaskState::Failed, TaskState::Cancelled]
                .into_iter()
                .find(|s| self.spool.task_path(*s, &id).exists())
            {
                tracing::warn!(
                    "{id} is in pending/ and {}/; the final record wins",
                    final_state.dir()
                );
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match self.read_task_file(&path) {
                Some(r) if r.state.is_final() => {
                    let to = self.spool.task_path(r.state, &id);
                    if let Err(e) = fsio::rename_noreplace(&path, &to) {
                        tracing::error!("completing the move of {id}: {e}");
                    }
                }
                Some(mut r) => {
                    // Durable already: a long prompt stays in its file until dispatch.
                    if r.task.prompt.len() > PROMPT_IN_MEMORY_MAX {
                        r.task.prompt = String::new();
                        self.prompts_on_disk.insert(id.clone());
                    }
                    records.push(r);
                }
                None => {}
            }
        }
        records.sort_by(|a, b| {
            a.received_at
                .cmp(&b.received_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let n = records.len();
        for mut r in records {
            if r.state != TaskState::Pending {
                r.state = TaskState::Pending;
            }
            if r.may_retry() {
                self.track(r);
            } else {
                let id = r.id.clone();
                let last = r
                    .attempts
                    .last()
                    .and_then(|a| a.error.clone())
                    .unwrap_or_default();
                let n = r.attempts_used();
                self.live.insert(
                    id.clone(),
                    LiveTask {
                        record: r,
                        state: TaskState::Pending,
                        seq: 0,
                        waiting_for: 0,
                        session: None,
                        attempt_started: None,
                        attempt_started_at: None,
                        cancel_requested: false,
                        resources: Vec::new(),
                    },
                );
                self.finish(
                    &id,
                    TaskState::Failed,
                    None,
                    Some(format!("gave up after {n} attempt(s): {last}")),
                );
            }
        }
        if n > 0 {
            tracing::info!("recovered {n} pending task(s)");
        }
        Ok(())
    }

    /// Reads a record (or a task as submitted) from a state directory; a file that is
    /// neither is left for a person to inspect.
    fn read_task_file(&self, path: &std::path::Path) -> Option<TaskRecord> {
        match self.spool.read_record(path) {
            Ok(mut r) => {
                if r.node.is_empty() {
                    r.node = self.node().to_string();
                }
                Some(r)
            }
            Err(e) => {
                tracing::error!("{e}; leaving it for a person to inspect");
                None
            }
        }
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
    /// A chain of dependencies from `id` back to itself, through `deps` and the live
    /// tasks' own `depends_on` (`[id, a, b, id]`), if there is one: such tasks could
    /// never run.
    fn dependency_cycle(&self, id: &str, deps: &[String]) -> Option<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<Vec<String>> = deps
            .iter()
            .map(|d| vec![id.to_string(), d.clone()])
            .collect();
        while let Some(path) = stack.pop() {
            let last = path.last().expect("paths are never empty");
            if last == id {
                return Some(path);
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            if let Some(t) = self.live.get(last) {
                for d in &t.record.task.depends_on {
                    let mut next = path.clone();
                    next.push(d.clone());
                    stack.push(next);
                }
            }
        }
        None
    }

    /// Drops from memory the prompts of the tasks whose file is now durable (called after
    /// each batch is carried out). A task whose file did not make it to disk keeps its
    /// prompt in memory.
    pub(super) fn drop_durable_prompts(&mut self) {
        let mut dropped = false;
        for id in std::mem::take(&mut self.prompts_to_drop) {
            let Some(t) = self.live.get_mut(&id) else {
                continue;
            };
            if t.record.task.prompt.is_empty() || !self.spool.task_path(t.state, &id).is_file() {
                continue;
            }
            t.record.task.prompt = String::new();
            self.prompts_on_disk.insert(id);
            dropped = true;
        }
        // Hand the freed pages back to the system: glibc keeps large freed blocks for
        // reuse, so without this the daemon's resident size stays at its intake peak.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if dropped {
            // SAFETY: malloc_trim has no preconditions; it only releases free memory.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Task `id`'s prompt: from memory, or read back from its file.
    fn prompt_of(&self, id: &str) -> crate::error::Result<String> {
        match self.live.get(id) {
            Some(t) if !t.record.task.prompt.is_empty() || !self.prompts_on_disk.contains(id) => {
                Ok(t.record.task.prompt.clone())
            }
            _ => self.prompt_from_disk(id),
        }
    }

    /// Reads task `id`'s prompt from its file, wherever it is on disk now.
    fn prompt_from_disk(&self, id: &str) -> crate::error::Result<String> {
        let state = self
            .spool
            .locate(id)
            .ok_or_else(|| crate::error::Error::TaskNotFound(id.to_string()))?;
        let record = self.spool.read_record(&self.spool.task_path(state, id))?;
        Ok(record.task.prompt)
    }
}

/// The SHA-256 of a prompt, hex.
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
