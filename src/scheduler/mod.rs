//! The scheduler: every decision in a task's life, in pure code.
//!
//! ```text
//!             Input (a task arrived, a session is free, an attempt ended, a control
//!               │    request, a timer, the batch is durable, …) + the time
//!               ▼
//!   Scheduler::handle ──> Vec<Effect> (write a record, move a file, run a task on a
//!                                      session, interrupt one, log an event)
//! ```
//! [`Scheduler::handle`] takes what happened and the time, changes the scheduler's state,
//! and returns what the daemon must do. It does no I/O, reads no clock and starts no
//! thread, so every transition is unit-tested (`tests.rs`) and a seeded simulation drives
//! it through crashes and failing disks (`tests/simulation.rs`). The daemon
//! (`crate::daemon`) is the shell: it turns watcher, session, control and timer happenings
//! into [`Input`]s and carries out the [`Effect`]s, every file change through one group
//! commit.
//!
//! The one outside thing the scheduler touches is the lock table, through the [`Locks`]
//! trait, because whether a task's locks can be taken decides which task a session gets;
//! the daemon's implementation takes `flock`s under `spool/locks/`; [`MemLocks`] keeps
//! one in memory for the unit tests and the simulation.
//!
//! **This file is the only place where a task changes state.** A task's state is its
//! [`TaskStatus`] while it is live (its file in `pending/` or `active/`); a final task
//! leaves the scheduler (its file is in `done/`, `failed/` or `cancelled/`).

mod mem_locks;
pub mod queue;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::backoff::backoff_ms;
use crate::locks::{Conflict, Resource};
use crate::log::{event, EventBody};
use crate::spool::task::{Attempt, AttemptOutcome, InFlight, LockWait, TaskRecord, TaskState};
use crate::types::{AttemptEnd, TaskResult};
pub use mem_locks::{HeldBy, MemHeld, MemLocks};
use queue::{Queue, Target};

/// How often tasks waiting for a lock held outside the daemon are tried again (ms): such
/// a holder (`architect lock acquire`, a process that died) frees it without telling us.
pub const LOCK_POLL_MS: i64 = 50;

/// An attempt cut short by the daemon's own crash does not count against the task's
/// retries; but a task that was running at this many daemon crashes in a row may be what
/// takes the daemon down, and is failed (quarantined) instead of being run again.
pub const CRASH_QUARANTINE: usize = 5;

/// The error recorded on an attempt cut short by a daemon crash.
pub const DAEMON_STOPPED: &str = "the daemon stopped during the attempt";

/// What the scheduler needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name (stamped into attempts).
    pub node: String,
    /// First retry delay after a failed attempt (ms); doubles per attempt.
    pub retry_backoff_ms: u64,
    /// Longest retry delay (ms).
    pub retry_backoff_max_ms: u64,
}

/// The lock table as the scheduler sees it.
pub trait Locks {
    /// Proof of held locks; dropping it must not release them (the scheduler calls
    /// [`Locks::release`]).
    type Held;
    /// Takes every lock in `resources` for `task` on `session`, all or nothing.
    ///
    /// # Errors
    /// `Ok(Err(conflict))` when one is held elsewhere; `Err(message)` when the table
    /// cannot be used at all (an I/O error): the task fails with it.
    fn try_acquire(
        &mut self,
        task: &str,
        session: &str,
        resources: &[Resource],
    ) -> Result<Result<Self::Held, Conflict>, String>;
    /// The resources `held` covers (as requested, minus those covered by another).
    fn held_resources(&self, held: &Self::Held) -> Vec<Resource>;
    /// Releases held locks; returns how long they were held (ms).
    fn release(&mut self, held: Self::Held) -> u64;
}

/// A session that may take a task now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSession {
    /// Session name.
    pub name: String,
    /// Its role, if any.
    pub role: Option<String>,
    /// An LLM provider session (takes `provider`/`model`/`complexity` tasks).
    pub llm: bool,
    /// Its profile submits a prompt at most once (`submit.at_most_once`): its claim
    /// records the attempt in flight (see [`TaskRecord::attempt_in_flight`]).
    pub at_most_once: bool,
}

/// A task file found at start-up in `pending/` or `active/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The directory it is in (`Pending` or `Active`).
    pub dir: TaskState,
    /// Its record, validated.
    pub record: TaskRecord,
    /// A final directory that holds the same id too (a crash between a copy and a
    /// removal): the final record wins.
    pub also_final: Option<TaskState>,
    /// The locks it needs (resolved again: the repository may have changed), or why its
    /// `locks` are invalid now.
    pub resources: Result<Vec<Resource>, String>,
}

/// Something that happened, for [`Scheduler::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Start-up: the task files found in `pending/` and `active/`, and the final state
    /// on disk of every id they depend on that is not among them.
    Recovered {
        /// The files.
        found: Vec<Found>,
        /// Final states on disk of their dependencies.
        on_disk: HashMap<String, TaskState>,
    },
    /// A task was accepted from the inbox (its file is queued for writing in `pending/`).
    Arrived {
        /// Its fresh pending record.
        record: TaskRecord,
        /// The locks it needs, or why its `locks` are invalid.
        resources: Result<Vec<Resource>, String>,
        /// Final states on disk of its dependencies the scheduler does not know.
        on_disk: HashMap<String, TaskState>,
    },
    /// These sessions may take a task now (those the daemon holds idle, with no task).
    SessionsFree(Vec<FreeSession>),
    /// The claim of a task (`pending/` → `active/`) failed; `gone`: its file is no longer
    /// in `pending/` (someone else took or removed it).
    ClaimFailed {
        /// Task id.
        task_id: String,
        /// Why.
        error: String,
        /// The file is gone.
        gone: bool,
    },
    /// A session reported how an attempt ended.
    AttemptEnded {
        /// The session.
        session: String,
        /// The task.
        task_id: String,
        /// How.
        end: AttemptEnd,
    },
    /// The program of the session running `task_id` exited.
    SessionExited {
        /// The session.
        session: String,
        /// Its task.
        task_id: String,
        /// Exit status, as text.
        status: String,
        /// The prompt may have run (Enter was pressed) and the session's profile says
        /// a prompt must run at most once.
        at_most_once_sent: bool,
    },
    /// `architect cancel`.
    Cancel {
        /// Task id.
        task_id: String,
    },
    /// `architect retry` of a task in `failed/` or `cancelled/`: its record as read from
    /// there, and the final states on disk of its dependencies.
    Retry {
        /// Where the record is.
        dir: TaskState,
        /// The record.
        record: TaskRecord,
        /// The locks it needs, or why its `locks` are invalid.
        resources: Result<Vec<Resource>, String>,
        /// Final states on disk of its dependencies.
        on_disk: HashMap<String, TaskState>,
    },
    /// Another node owns the task now (it adopted this node's tasks, or took back what it
    /// had offered here: `docs/multi-node.md`): forget it without a final state — its
    /// file here is removed, its locks released, and a running attempt interrupted; how
    /// that attempt ends is not recorded, and the task is not retried here.
    Disown {
        /// Task id.
        task_id: String,
        /// Why, for the log.
        why: String,
    },
    /// Timers: retry backoffs and the lock poll fall due at [`Scheduler::next_deadline`].
    Tick,
    /// Every effect returned so far is durable on disk. The dependents of tasks that
    /// reached a final state are released now (queued, or failed with them), never before:
    /// a task runs only once its dependencies are durably done. The effects this returns
    /// are carried out like any others (and their own `Flushed` follows).
    Flushed,
    /// The daemon is stopping: nothing new is dispatched; tasks whose sessions stop
    /// return to `pending/` without spending an attempt.
    Stopping,
}

/// What the daemon must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Rewrite task `record.id`'s file in `dir` (atomic replace).
    Write {
        /// The state directory.
        dir: TaskState,
        /// The whole record.
        record: Box<TaskRecord>,
    },
    /// Move task `id`'s file (a no-replace rename).
    Move {
        /// Task id.
        id: String,
        /// From this state directory.
        from: TaskState,
        /// To this one.
        to: TaskState,
    },
    /// Remove task `id`'s file from `dir`.
    Remove {
        /// Task id.
        id: String,
        /// The state directory.
        dir: TaskState,
    },
    /// Hand the task to the session — only once the claim before it is durable. If the
    /// claim failed, send [`Input::ClaimFailed`] instead; if the attempt ended meanwhile
    /// ([`Scheduler::is_running`] says no: its session died while the claim waited for
    /// the disk), send nothing.
    Run {
        /// The session.
        session: String,
        /// The task (its record: [`Scheduler::task`]).
        task_id: String,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// Interrupt the session's current task (cancel).
    Interrupt {
        /// The session.
        session: String,
        /// Its task.
        task_id: String,
    },
    /// Append an event to the log.
    Log {
        /// The task.
        task_id: Option<String>,
        /// The session.
        session: Option<String>,
        /// What happened: its type and data (boxed: the largest payloads would make
        /// every effect as large).
        body: Box<EventBody>,
    },
}

/// A live task's state: where it is in its life, with that state's own data.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskStatus {
    /// Waiting for these dependencies to be done.
    WaitingForDependencies(BTreeSet<String>),
    /// Waiting for its retry backoff to pass.
    BackingOff {
        /// Not before.
        until: DateTime<Utc>,
    },
    /// In the ready queue.
    Queued,
    /// Its locks are held elsewhere.
    WaitingForLock {
        /// Who holds them.
        blocked_by: Conflict,
    },
    /// Claimed and running on a session.
    Running {
        /// The session.
        session: String,
        /// 1-based attempt number.
        attempt: u32,
        /// When it was handed to the session.
        started: DateTime<Utc>,
        /// `architect cancel` was asked; the session was interrupted.
        cancel_requested: bool,
    },
}

impl TaskStatus {
    /// The state directory a task in this status is in.
    #[must_use]
    pub fn dir(&self) -> TaskState {
        match self {
            Self::Running { .. } => TaskState::Active,
            _ => TaskState::Pending,
        }
    }
}

/// A live task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Its record as it is (or is about to be) on disk. The daemon may empty
    /// `record.task.prompt` when the prompt is long and durable in the file.
    pub record: TaskRecord,
    /// Its state.
    pub status: TaskStatus,
    /// Order of arrival (FIFO within a priority).
    seq: u64,
    /// The locks it must hold to run.
    resources: Vec<Resource>,
}

/// The scheduler's state. See the module doc.
pub struct Scheduler<L: Locks> {
    settings: Settings,
    locks: L,
    /// Tasks in `pending/` and `active/`.
    tasks: HashMap<String, Task>,
    /// Final states reached since the last [`Input::Flushed`] (the disk does not show
    /// them yet); their dependents wait until they are durable. Cleared by `Flushed`, so
    /// it never grows past one batch.
    finals: HashMap<String, TaskState>,
    /// dependency id → tasks waiting for it.
    dependents: HashMap<String, Vec<String>>,
    queue: Queue,
    /// Retry backoffs: when → task ids.
    delayed: BTreeMap<DateTime<Utc>, Vec<String>>,
    /// Tasks waiting for locks, and when to try them again.
    lock_waiters: BTreeSet<String>,
    lock_poll_at: Option<DateTime<Utc>>,
    /// Locks held by running tasks.
    held: HashMap<String, L::Held>,
    next_seq: u64,
    stopping: bool,
    out: Vec<Effect>,
}

impl<L: Locks> Scheduler<L> {
    /// A scheduler with no task.
    pub fn new(settings: Settings, locks: L) -> Self {
        Self {
            settings,
            locks,
            tasks: HashMap::new(),
            finals: HashMap::new(),
            dependents: HashMap::new(),
            queue: Queue::default(),
            delayed: BTreeMap::new(),
            lock_waiters: BTreeSet::new(),
            lock_poll_at: None,
            held: HashMap::new(),
            next_seq: 0,
            stopping: false,
            out: Vec::new(),
        }
    }

    /// The one entry point: applies `input` at time `now` and returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: DateTime<Utc>) -> Vec<Effect> {
        match input {
            Input::Recovered { found, on_disk } => self.recover(found, &on_disk, now),
            Input::Disown { task_id, why } => self.disown(&task_id, why, now),
            Input::Arrived {
                record,
                resources,
                on_disk,
            } => self.track(record, resources, &on_disk, now),
            Input::SessionsFree(free) => self.dispatch(free, now),
            Input::ClaimFailed {
                task_id,
                error,
                gone,
            } => self.claim_failed(&task_id, &error, gone, now),
            Input::AttemptEnded {
                session,
                task_id,
                end,
            } => self.attempt_ended(&session, &task_id, end, now),
            Input::SessionExited {
                session,
                task_id,
                status,
                at_most_once_sent,
            } => self.session_exited(&session, &task_id, &status, at_most_once_sent, now),
            Input::Cancel { task_id } => self.cancel(&task_id, now),
            Input::Retry {
                dir,
                record,
                resources,
                on_disk,
            } => self.manual_retry(dir, record, resources, &on_disk, now),
            Input::Tick => self.tick(now),
            Input::Flushed => self.flushed(now),
            Input::Stopping => self.stopping = true,
        }
        std::mem::take(&mut self.out)
    }

    /// When [`Input::Tick`] is next due, if ever.
    #[must_use]
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let backoff = self.delayed.keys().next().copied();
        match (backoff, self.lock_poll_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A live task.
    #[must_use]
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// A live task, to drop or restore its prompt (which no decision reads).
    pub fn task_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(id)
    }

    /// Whether attempt `attempt` of task `id` is the one running on `session` (an
    /// [`Effect::Run`] that waited for its claim may be stale by then).
    #[must_use]
    pub fn is_running(&self, id: &str, session: &str, attempt: u32) -> bool {
        matches!(
            self.tasks.get(id).map(|t| &t.status),
            Some(TaskStatus::Running { session: s, attempt: a, .. }) if s == session && *a == attempt
        )
    }

    /// Live tasks, in no order.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Where task `id` is, as far as the scheduler knows: live, or final since the last
    /// flush. `None`: ask the disk.
    #[must_use]
    pub fn state_of(&self, id: &str) -> Option<TaskState> {
        self.tasks
            .get(id)
            .map(|t| t.status.dir())
            .or_else(|| self.finals.get(id).copied())
    }

    /// Number of tasks in the ready queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Final states not yet known durable.
    #[must_use]
    pub fn finals_held(&self) -> usize {
        self.finals.len()
    }

    /// The lock table.
    pub fn locks(&self) -> &L {
        &self.locks
    }

    fn log(&mut self, task_id: &str, session: Option<&str>, body: impl Into<EventBody>) {
        self.out.push(Effect::Log {
            task_id: Some(task_id.to_string()),
            session: session.map(str::to_string),
            body: Box::new(body.into()),
        });
    }

    fn write(&mut self, dir: TaskState, record: TaskRecord) {
        self.out.push(Effect::Write {
            dir,
            record: Box::new(record),
        });
    }

    fn move_file(&mut self, id: &str, from: TaskState, to: TaskState) {
        self.out.push(Effect::Move {
            id: id.to_string(),
            from,
            to,
        });
    }

    // ---- arrival -------------------------------------------------------------------

    /// Starts tracking a pending record: logs it as queued, then queues it, or parks it
    /// behind its dependencies or its retry backoff, or fails it when it can never run
    /// (a dependency cycle, invalid locks, a dependency that failed).
    fn track(
        &mut self,
        mut record: TaskRecord,
        resources: Result<Vec<Resource>, String>,
        on_disk: &HashMap<String, TaskState>,
        now: DateTime<Utc>,
    ) {
        let id = record.id.clone();
        if self.tasks.contains_key(&id) {
            return;
        }
        record.state = TaskState::Pending;
        if record.waiting_lock.take().is_some() {
            // A wait recorded before a restart: dispatch decides afresh.
            self.write(TaskState::Pending, record.clone());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let cycle = self.dependency_cycle(&id, &record.task.depends_on);
        let mut waiting = BTreeSet::new();
        let mut unknown = Vec::new();
        let mut failed_dep = None;
        for dep in &record.task.depends_on {
            let state = self
                .state_of(dep)
                .or_else(|| on_disk.get(dep.as_str()).copied());
            // A final state not yet durable is waited for like a live task: `flushed`
            // releases it.
            let durable = !self.finals.contains_key(dep.as_str());
            match state {
                Some(TaskState::Done) if durable => {}
                Some(s @ (TaskState::Failed | TaskState::Cancelled)) if durable => {
                    failed_dep.get_or_insert((dep.clone(), s));
                }
                state => {
                    if state.is_none() {
                        unknown.push(dep.clone());
                    }
                    waiting.insert(dep.clone());
                }
            }
        }
        self.log(
            &id,
            None,
            event::TaskQueued {
                priority: record.task.priority(),
                session: record.task.session.clone(),
                role: record.task.role.clone(),
                depends_on: record.task.depends_on.clone(),
                waiting_for: waiting.len() as u64,
                unknown_dependencies: unknown.clone(),
                attempts: record.attempts.len() as u64,
            },
        );
        let (resources, lock_error) = match resources {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        self.tasks.insert(
            id.clone(),
            Task {
                record,
                status: TaskStatus::Queued,
                seq,
                resources,
            },
        );
        let why = if let Some(cycle) = cycle {
            // Failing it fails the tasks of the cycle that wait for it, in turn.
            Some(format!("dependency cycle: {}", cycle.join(" → ")))
        } else if let Some(error) = lock_error {
            Some(format!("invalid locks: {error}"))
        } else {
            failed_dep.map(|(dep, s)| format!("dependency {dep} {}", failed_how(s)))
        };
        if let Some(why) = why {
            self.finish(&id, TaskState::Failed, None, Some(why), now);
            return;
        }
        if waiting.is_empty() {
            self.make_ready(&id, now);
        } else {
            for dep in &waiting {
                self.dependents
                    .entry(dep.clone())
                    .or_default()
                    .push(id.clone());
            }
            if let Some(t) = self.tasks.get_mut(&id) {
                t.status = TaskStatus::WaitingForDependencies(waiting);
            }
        }
    }

    /// A chain of dependencies from `id` back to itself, through `deps` and the live
    /// tasks' own `depends_on` (`[id, a, b, id]`), if there is one: such tasks could
    /// never run.
    fn dependency_cycle(&self, id: &str, deps: &[String]) -> Option<Vec<String>> {
        let mut seen = HashSet::new();
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
            if let Some(t) = self.tasks.get(last) {
                for d in &t.record.task.depends_on {
                    let mut next = path.clone();
                    next.push(d.clone());
                    stack.push(next);
                }
            }
        }
        None
    }

    /// Puts a pending task whose dependencies are met into the ready queue, or into the
    /// retry-backoff timer when its `not_before` is still ahead.
    fn make_ready(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        match &t.status {
            TaskStatus::Running { .. } => return,
            TaskStatus::WaitingForDependencies(w) if !w.is_empty() => return,
            TaskStatus::Queued if self.queue.contains(id) => return,
            _ => {}
        }
        if let Some(until) = t.record.not_before.filter(|nb| *nb > now) {
            t.status = TaskStatus::BackingOff { until };
            self.delayed.entry(until).or_default().push(id.to_string());
            return;
        }
        t.status = TaskStatus::Queued;
        let task = &t.record.task;
        let llm = task.provider.is_some() || task.model.is_some() || task.complexity.is_some();
        let target = match (&task.session, &task.role) {
            (Some(s), _) => Target::Session(s.clone()),
            (None, Some(r)) => Target::Role(r.clone()),
            (None, None) if llm => Target::Llm,
            (None, None) => Target::Any,
        };
        self.queue
            .push(target, task.priority(), t.seq, id.to_string());
    }

    // ---- dispatch ------------------------------------------------------------------

    /// Hands queued tasks to free sessions: for each session, in name order, the task
    /// [`Scheduler::pick`] gives it, claimed (`pending/` → `active/`) before it is run.
    fn dispatch(&mut self, mut free: Vec<FreeSession>, now: DateTime<Utc>) {
        if self.stopping || self.queue.is_empty() {
            return;
        }
        free.sort_by(|a, b| a.name.cmp(&b.name));
        let mut contended = HashMap::new();
        for session in free {
            if let Some(id) = self.pick(&session, &mut contended, now) {
                self.claim(&id, &session.name, session.at_most_once, now);
            }
        }
    }

    /// The task `session` runs next, its locks taken; `None` when nothing it may run is
    /// queued. The rules, in order:
    ///
    /// 1. **Who may run it.** A task naming a `session` runs only there; one naming a
    ///    `role` only on a session with that role; one naming a `provider`, `model` or
    ///    `complexity` (and no session or role) on any LLM provider session; any other on
    ///    any terminal session.
    /// 2. **Priority.** Higher `priority` first.
    /// 3. **The narrowest target.** At equal priority, a task naming this session goes
    ///    before one naming its role, which goes before one any session could take: the
    ///    narrower task has fewer places to run, so it does not wait behind work others
    ///    can do.
    /// 4. **FIFO.** Then in the order the daemon received the tasks: the inbox's
    ///    close-write events in their order; files found by a listing by their
    ///    modification time (full resolution), then change time, then name; tasks found
    ///    at start-up by `received_at`, then id.
    /// 5. **Locks.** A task whose locks are held elsewhere leaves the queue (it waits,
    ///    `waiting_lock`) and the next one is tried: it never blocks the tasks behind
    ///    it. Waiting tasks return to the queue whenever this daemon releases a lock,
    ///    and every [`LOCK_POLL_MS`] while any wait. A resource found held is not tried
    ///    again in the same pass.
    /// 6. **Which session first.** In one pass, free sessions are served in name order,
    ///    one task each (stated so that runs replay; not an accident of map order).
    pub fn pick(
        &mut self,
        session: &FreeSession,
        contended: &mut HashMap<Resource, Conflict>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        while let Some(id) =
            self.queue
                .take_for(&session.name, session.role.as_deref(), session.llm)
        {
            if self.take_locks(&id, &session.name, contended, now) {
                return Some(id);
            }
        }
        None
    }

    /// Takes task `id`'s locks for `session`, or parks it (returns false).
    fn take_locks(
        &mut self,
        id: &str,
        session: &str,
        contended: &mut HashMap<Resource, Conflict>,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(t) = self.tasks.get(id) else {
            return false;
        };
        if t.resources.is_empty() {
            return true;
        }
        let resources = t.resources.clone();
        let known = resources.iter().find_map(|r| contended.get(r).cloned());
        let conflict = match known {
            Some(c) => c,
            None => match self.locks.try_acquire(id, session, &resources) {
                Ok(Ok(held)) => {
                    let resources = self.locks.held_resources(&held);
                    self.held.insert(id.to_string(), held);
                    let waited = self.tasks.get_mut(id).and_then(|t| {
                        t.record
                            .waiting_lock
                            .take()
                            .map(|w| (now - w.since).num_milliseconds().max(0))
                    });
                    if waited.is_some() {
                        // The pending record said waiting_lock: rewrite it before it
                        // moves to active/.
                        if let Some(r) = self.tasks.get(id).map(|t| t.record.clone()) {
                            self.write(TaskState::Pending, r);
                        }
                    }
                    self.log(
                        id,
                        Some(session),
                        event::LockAcquired {
                            resources,
                            waited_ms: u64::try_from(waited.unwrap_or(0)).unwrap_or(0),
                        },
                    );
                    return true;
                }
                Ok(Err(c)) => {
                    contended.insert(c.resource.clone(), c.clone());
                    c
                }
                Err(e) => {
                    self.finish(
                        id,
                        TaskState::Failed,
                        None,
                        Some(format!("could not take its locks: {e}")),
                        now,
                    );
                    return false;
                }
            },
        };
        self.park(id, &resources, conflict, now);
        false
    }

    /// A task whose locks are held elsewhere waits; its first wait is logged and recorded.
    fn park(&mut self, id: &str, resources: &[Resource], conflict: Conflict, now: DateTime<Utc>) {
        self.lock_waiters.insert(id.to_string());
        self.lock_poll_at
            .get_or_insert(now + chrono::Duration::milliseconds(LOCK_POLL_MS));
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.status = TaskStatus::WaitingForLock {
            blocked_by: conflict.clone(),
        };
        if t.record.waiting_lock.is_some() {
            return;
        }
        t.record.waiting_lock = Some(LockWait {
            since: now,
            blocked_by: conflict.clone(),
        });
        let record = t.record.clone();
        self.write(TaskState::Pending, record);
        self.log(
            id,
            None,
            event::LockWaiting {
                resources: resources.to_vec(),
                reason: conflict.to_string(),
                blocked_by: conflict,
            },
        );
    }

    /// Claims a task for a session: the move to `active/` comes before the run, and the
    /// daemon runs it only once the move is on disk. For a session that submits at most
    /// once, the record first says which attempt is in flight (the daemon sends that run
    /// only once all of it is durable), so that a daemon crash cannot lead to a second
    /// send.
    fn claim(&mut self, id: &str, session: &str, at_most_once: bool, now: DateTime<Utc>) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        let attempt = u32::try_from(t.record.attempts.len() + 1).unwrap_or(u32::MAX);
        t.status = TaskStatus::Running {
            session: session.to_string(),
            attempt,
            started: now,
            cancel_requested: false,
        };
        if at_most_once {
            t.record.attempt_in_flight = Some(InFlight {
                session: session.to_string(),
                attempt,
                since: now,
            });
            let record = t.record.clone();
            self.write(TaskState::Pending, record);
        }
        self.move_file(id, TaskState::Pending, TaskState::Active);
        self.log(
            id,
            Some(session),
            event::TaskAssigned {
                attempt: u64::from(attempt),
            },
        );
        self.out.push(Effect::Run {
            session: session.to_string(),
            task_id: id.to_string(),
            attempt,
        });
    }

    /// The claim rename failed. When the file is gone, someone else owns the task now:
    /// forget it. Otherwise it goes back to the queue after a backoff, no attempt counted.
    fn claim_failed(&mut self, id: &str, error: &str, gone: bool, now: DateTime<Utc>) {
        self.release_locks(id, now);
        if gone {
            if self.tasks.remove(id).is_some() {
                self.queue.remove(id);
                self.log(
                    id,
                    None,
                    event::TaskFailed::NotClaimed {
                        claimed: false,
                        error: format!(
                            "not run: its file left pending/ before it was claimed ({error})"
                        ),
                    },
                );
            }
            return;
        }
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.record.not_before = Some(
            now + chrono::Duration::milliseconds(
                i64::try_from(self.settings.retry_backoff_ms).unwrap_or(i64::MAX),
            ),
        );
        t.status = TaskStatus::Queued;
        self.make_ready(id, now);
    }

    // ---- the end of an attempt -----------------------------------------------------

    fn running_on(&self, id: &str) -> Option<(String, bool)> {
        match self.tasks.get(id).map(|t| &t.status) {
            Some(TaskStatus::Running {
                session,
                cancel_requested,
                ..
            }) => Some((session.clone(), *cancel_requested)),
            _ => None,
        }
    }

    /// A session reported how a task's attempt ended.
    fn attempt_ended(&mut self, session: &str, id: &str, end: AttemptEnd, now: DateTime<Utc>) {
        let Some((running_on, cancel)) = self.running_on(id) else {
            return;
        };
        if running_on != session {
            return;
        }
        match end {
            AttemptEnd::Completed(result) => {
                self.end_attempt(id, session, AttemptOutcome::Completed, None, now);
                self.finish(id, TaskState::Done, Some(result), None, now);
            }
            AttemptEnd::Failed(result, error) => {
                self.end_attempt(
                    id,
                    session,
                    AttemptOutcome::Failed,
                    Some(error.clone()),
                    now,
                );
                self.finish(id, TaskState::Failed, Some(result), Some(error), now);
            }
            AttemptEnd::Cancelled => self.attempt_cancelled(id, session, None, now),
            AttemptEnd::NotStarted(_) => self.unclaim(id, now),
            AttemptEnd::TimedOut
            | AttemptEnd::NotTaken(_)
            | AttemptEnd::DeliveryUncertain(_)
            | AttemptEnd::Limited { .. }
                if cancel =>
            {
                self.attempt_cancelled(id, session, None, now);
            }
            AttemptEnd::DeliveryUncertain(why) => {
                // Never retried by itself: the prompt may have run.
                let outcome = AttemptOutcome::DeliveryUncertain;
                self.end_attempt(id, session, outcome, Some(why.clone()), now);
                self.finish(id, TaskState::Failed, None, Some(why), now);
            }
            AttemptEnd::Limited { message, .. } => {
                let why = format!("usage limit on session {session}: {message}");
                self.attempt_failed(id, session, AttemptOutcome::Limited, why, now);
            }
            AttemptEnd::NotTaken(why) => {
                self.attempt_failed(id, session, AttemptOutcome::NotTaken, why, now);
            }
            AttemptEnd::TimedOut => {
                let secs = self.tasks.get(id).map_or(0, |t| t.record.task.timeout_s());
                let error = format!("timed out after {secs} s");
                self.attempt_failed(id, session, AttemptOutcome::TimedOut, error, now);
            }
        }
    }

    /// The program of the session running `id` exited: while the daemon stops, the task
    /// goes back to `pending/` with no attempt spent (unless its prompt may have run on
    /// an at-most-once session); otherwise the session died, which is a failed attempt.
    fn session_exited(
        &mut self,
        session: &str,
        id: &str,
        status: &str,
        at_most_once_sent: bool,
        now: DateTime<Utc>,
    ) {
        let Some((running_on, cancel)) = self.running_on(id) else {
            return;
        };
        if running_on != session {
            return;
        }
        let again = format!(
            "not sent again, so it cannot run twice (`architect retry {id}` runs it again)"
        );
        if self.stopping {
            if at_most_once_sent {
                let error = format!(
                    "the daemon stopped while session {session} ran the task, after its \
                     prompt was sent: {again}"
                );
                let outcome = AttemptOutcome::Interrupted;
                self.end_attempt(id, session, outcome, Some(error.clone()), now);
                self.finish(id, TaskState::Failed, None, Some(error), now);
            } else {
                self.unclaim(id, now);
            }
            return;
        }
        let error = format!("session {session} died during the task ({status})");
        if cancel {
            self.attempt_cancelled(id, session, Some(error), now);
        } else if at_most_once_sent {
            let error = format!("{error} after its prompt was sent: {again}");
            let outcome = AttemptOutcome::SessionDied;
            self.end_attempt(id, session, outcome, Some(error.clone()), now);
            self.finish(id, TaskState::Failed, None, Some(error), now);
        } else {
            self.attempt_failed(id, session, AttemptOutcome::SessionDied, error, now);
        }
    }

    /// Records the attempt that just ended in the task's record and releases its locks.
    fn end_attempt(
        &mut self,
        id: &str,
        session: &str,
        outcome: AttemptOutcome,
        error: Option<String>,
        now: DateTime<Utc>,
    ) {
        self.release_locks(id, now);
        let node = self.settings.node.clone();
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        let started = match &t.status {
            TaskStatus::Running { started, .. } => *started,
            _ => now,
        };
        let attempt = u32::try_from(t.record.attempts.len() + 1).unwrap_or(u32::MAX);
        t.record.started_at.get_or_insert(started);
        t.record.session = Some(session.to_string());
        t.record.attempt_in_flight = None;
        t.record.attempts.push(Attempt {
            attempt,
            session: session.to_string(),
            node,
            started_at: started,
            finished_at: now,
            outcome,
            error,
        });
    }

    fn attempt_failed(
        &mut self,
        id: &str,
        session: &str,
        outcome: AttemptOutcome,
        error: String,
        now: DateTime<Utc>,
    ) {
        self.end_attempt(id, session, outcome, Some(error.clone()), now);
        self.retry_or_fail(id, &error, now);
    }

    fn attempt_cancelled(
        &mut self,
        id: &str,
        session: &str,
        error: Option<String>,
        now: DateTime<Utc>,
    ) {
        self.end_attempt(id, session, AttemptOutcome::Cancelled, error, now);
        self.finish(
            id,
            TaskState::Cancelled,
            None,
            Some("cancelled".into()),
            now,
        );
    }

    /// Returns a claimed task that never started to `pending/`, no attempt counted.
    fn unclaim(&mut self, id: &str, now: DateTime<Utc>) {
        self.release_locks(id, now);
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        let in_flight = t.record.attempt_in_flight.take().is_some();
        let record = in_flight.then(|| t.record.clone());
        if t.status.dir() == TaskState::Active {
            self.move_file(id, TaskState::Active, TaskState::Pending);
        }
        if let Some(record) = record {
            // No attempt is under way any more: a later claim on another session must
            // not be taken for this one.
            self.write(TaskState::Pending, record);
        }
        if let Some(t) = self.tasks.get_mut(id) {
            t.status = TaskStatus::Queued;
        }
        self.make_ready(id, now);
    }

    /// After a failed attempt: back to `pending/` with backoff, or `failed/` when the
    /// retry budget is spent.
    fn retry_or_fail(&mut self, id: &str, error: &str, now: DateTime<Utc>) {
        let Some(t) = self.tasks.get(id) else {
            return;
        };
        if !t.record.may_retry() {
            let n = t.record.attempts_used();
            let why = format!("gave up after {n} attempt(s): {error}");
            self.finish(id, TaskState::Failed, None, Some(why), now);
            return;
        }
        let used = t.record.attempts_used();
        let from = t.status.dir();
        let delay_ms = backoff_ms(
            self.settings.retry_backoff_ms,
            used.saturating_sub(1),
            self.settings.retry_backoff_max_ms,
        );
        if from == TaskState::Active {
            // Release the claim first (a rename), then record the attempt: a crash between
            // the two under-counts one attempt, it never loses the task.
            self.move_file(id, TaskState::Active, TaskState::Pending);
        }
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.status = TaskStatus::Queued;
        t.record.state = TaskState::Pending;
        t.record.not_before =
            Some(now + chrono::Duration::milliseconds(i64::try_from(delay_ms).unwrap_or(i64::MAX)));
        let record = t.record.clone();
        let session = record.session.clone();
        let attempt = record.attempts.len();
        self.write(TaskState::Pending, record);
        self.log(
            id,
            session.as_deref(),
            event::TaskRetried {
                attempt: attempt as u64,
                error: Some(error.to_string()),
                retry_in_ms: Some(delay_ms),
                ..Default::default()
            },
        );
        self.make_ready(id, now);
    }

    /// Moves a live task to a final state: its record rewritten in place, then renamed
    /// into `done/`, `failed/` or `cancelled/`; logged; its dependents released.
    fn finish(
        &mut self,
        id: &str,
        state: TaskState,
        result: Option<TaskResult>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) {
        self.release_locks(id, now);
        let Some(mut t) = self.tasks.remove(id) else {
            return;
        };
        self.queue.remove(id);
        self.lock_waiters.remove(id);
        let from = t.status.dir();
        t.record.state = state;
        t.record.finished_at = Some(now);
        t.record.not_before = None;
        t.record.waiting_lock = None;
        t.record.result = result;
        t.record.error.clone_from(&error);
        let session = t.record.session.clone();
        let attempts = t.record.attempts.len();
        let duration_ms = t
            .record
            .attempts
            .last()
            .map(|a| (now - a.started_at).num_milliseconds());
        let attempts = attempts as u64;
        let body: EventBody = match state {
            TaskState::Done => {
                let r = t.record.result.as_ref();
                event::TaskCompleted {
                    attempts,
                    duration_ms,
                    exit_status: r.and_then(|r| r.exit_status),
                    output_bytes: r.map_or(0, |r| r.output.len()) as u64,
                }
                .into()
            }
            TaskState::Failed => event::TaskFailed::Finished {
                attempts,
                duration_ms,
                error,
            }
            .into(),
            _ => event::TaskCancelled { attempts }.into(),
        };
        self.write(from, t.record);
        self.move_file(id, from, state);
        self.log(id, session.as_deref(), body);
        // Its dependents are released once this is durable (`flushed`): the group commit
        // may carry out a dependent's claim (another file) while this move waits for a
        // disk that refuses it, and a crash then would leave the dependent run on a
        // dependency that is not done.
        self.finals.insert(id.to_string(), state);
    }

    /// The batch is durable: the final states it held release their dependents.
    fn flushed(&mut self, now: DateTime<Utc>) {
        let mut durable: Vec<(String, TaskState)> =
            std::mem::take(&mut self.finals).into_iter().collect();
        // In id order, so that runs replay (the map's order is not stable).
        durable.sort();
        for (id, state) in durable {
            self.release_dependents(&id, state, now);
        }
    }

    fn release_dependents(&mut self, id: &str, state: TaskState, now: DateTime<Utc>) {
        let Some(waiting) = self.dependents.remove(id) else {
            return;
        };
        for dependent in waiting {
            if state == TaskState::Done {
                let ready = self.tasks.get_mut(&dependent).is_some_and(|t| {
                    if let TaskStatus::WaitingForDependencies(w) = &mut t.status {
                        w.remove(id);
                        w.is_empty()
                    } else {
                        false
                    }
                });
                if ready {
                    self.make_ready(&dependent, now);
                }
            } else if self.tasks.contains_key(&dependent) {
                let why = format!("dependency {id} {}", failed_how(state));
                self.finish(&dependent, TaskState::Failed, None, Some(why), now);
            }
        }
    }

    // ---- locks ---------------------------------------------------------------------

    /// Releases task `id`'s locks (any attempt end), and gives waiting tasks another try.
    fn release_locks(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(held) = self.held.remove(id) else {
            return;
        };
        let resources = self.locks.held_resources(&held);
        let held_ms = self.locks.release(held);
        let session = self.tasks.get(id).and_then(|t| match &t.status {
            TaskStatus::Running { session, .. } => Some(session.clone()),
            _ => t.record.session.clone(),
        });
        self.log(
            id,
            session.as_deref(),
            event::LockReleased { resources, held_ms },
        );
        self.requeue_lock_waiters(now);
    }

    /// Puts every waiting task back into the ready queue (dispatch parks those still held).
    fn requeue_lock_waiters(&mut self, now: DateTime<Utc>) {
        self.lock_poll_at = None;
        for id in std::mem::take(&mut self.lock_waiters) {
            self.make_ready(&id, now);
        }
    }

    // ---- requests and timers -------------------------------------------------------

    fn cancel(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        match &mut t.status {
            TaskStatus::Running {
                session,
                cancel_requested,
                ..
            } => {
                if !*cancel_requested {
                    *cancel_requested = true;
                    let session = session.clone();
                    self.out.push(Effect::Interrupt {
                        session,
                        task_id: id.to_string(),
                    });
                }
            }
            _ => {
                let why = "cancelled before it ran".to_string();
                self.finish(id, TaskState::Cancelled, None, Some(why), now);
            }
        }
    }

    fn disown(&mut self, id: &str, why: String, now: DateTime<Utc>) {
        if !self.tasks.contains_key(id) {
            return;
        }
        self.release_locks(id, now);
        let Some(t) = self.tasks.remove(id) else {
            return;
        };
        self.queue.remove(id);
        self.lock_waiters.remove(id);
        let dir = t.status.dir();
        let running = match t.status {
            TaskStatus::Running { session, .. } => {
                self.out.push(Effect::Interrupt {
                    session: session.clone(),
                    task_id: id.to_string(),
                });
                Some(session)
            }
            _ => None,
        };
        self.out.push(Effect::Remove {
            id: id.to_string(),
            dir,
        });
        self.log(
            id,
            running.as_deref(),
            event::TaskDisowned {
                why,
                was_running: running.is_some(),
            },
        );
    }

    /// `architect retry`: a failed or cancelled task goes back to `pending/` with a fresh
    /// retry budget (its earlier attempts stay in the record).
    fn manual_retry(
        &mut self,
        dir: TaskState,
        mut record: TaskRecord,
        resources: Result<Vec<Resource>, String>,
        on_disk: &HashMap<String, TaskState>,
        now: DateTime<Utc>,
    ) {
        let id = record.id.clone();
        if self.tasks.contains_key(&id)
            || self.finals.contains_key(&id)
            || !matches!(dir, TaskState::Failed | TaskState::Cancelled)
        {
            // Live, or final but not yet durable: the record read from disk is not where
            // the task is (the shell waits for the batch before it asks).
            return;
        }
        self.move_file(&id, dir, TaskState::Pending);
        record.state = TaskState::Pending;
        record.attempt_base = 0;
        record.attempt_base = record.attempts_used();
        record.finished_at = None;
        record.result = None;
        record.error = None;
        record.not_before = None;
        self.write(TaskState::Pending, record.clone());
        self.finals.remove(&id);
        self.log(
            &id,
            None,
            event::TaskRetried {
                attempt: record.attempts.len() as u64,
                manual: true,
                from: Some(dir),
                ..Default::default()
            },
        );
        self.track(record, resources, on_disk, now);
    }

    fn tick(&mut self, now: DateTime<Utc>) {
        if self.lock_poll_at.is_some_and(|at| now >= at) {
            self.requeue_lock_waiters(now);
        }
        let due: Vec<DateTime<Utc>> = self.delayed.range(..=now).map(|(k, _)| *k).collect();
        for k in due {
            for id in self.delayed.remove(&k).unwrap_or_default() {
                let backing_off = self
                    .tasks
                    .get(&id)
                    .is_some_and(|t| matches!(t.status, TaskStatus::BackingOff { .. }));
                if backing_off {
                    self.make_ready(&id, now);
                }
            }
        }
    }

    // ---- start-up ------------------------------------------------------------------

    /// Start-up recovery: completes interrupted moves, returns tasks left in `active/`
    /// to `pending/` (the interrupted attempt recorded, not counted against retries,
    /// unless the task was running at [`CRASH_QUARANTINE`] crashes in a row), and
    /// queues `pending/` in the order the tasks were received.
    fn recover(
        &mut self,
        found: Vec<Found>,
        on_disk: &HashMap<String, TaskState>,
        now: DateTime<Utc>,
    ) {
        let mut records = Vec::new();
        for f in found {
            let Found {
                dir,
                mut record,
                also_final,
                resources,
            } = f;
            let id = record.id.clone();
            if also_final.is_some() {
                // Its final record is published; this copy is what a crash left behind.
                self.out.push(Effect::Remove { id, dir });
                continue;
            }
            if record.state.is_final() {
                // The record was rewritten for its final state; finish the rename. Its
                // dependents wait until the move is durable, as after any final state.
                self.move_file(&id, dir, record.state);
                self.finals.insert(id, record.state);
                continue;
            }
            let in_flight = record.attempt_in_flight.take();
            let mut give_up = None;
            if dir == TaskState::Active {
                let (session, started_at) = match &in_flight {
                    Some(f) => (f.session.clone(), f.since),
                    None => (
                        record.session.clone().unwrap_or_default(),
                        record
                            .attempts
                            .last()
                            .map_or(record.received_at, |a| a.finished_at),
                    ),
                };
                if let Some(f) = &in_flight {
                    give_up = Some(format!(
                        "{DAEMON_STOPPED} on session {}, which submits at most once, and its \
                         prompt may have been sent: not sent again, so it cannot run twice \
                         (`architect retry {id}` runs it again)",
                        f.session
                    ));
                }
                record.session = Some(session.clone()).filter(|s| !s.is_empty());
                record.attempts.push(Attempt {
                    attempt: u32::try_from(record.attempts.len() + 1).unwrap_or(u32::MAX),
                    session,
                    node: self.settings.node.clone(),
                    started_at,
                    finished_at: now,
                    outcome: AttemptOutcome::Interrupted,
                    error: Some(DAEMON_STOPPED.into()),
                });
                if give_up.is_some() {
                    // Failed from where it is: its file never leaves `active/` without
                    // its final record, so a crash now cannot lose what it says.
                    records.push((record, resources, give_up, TaskState::Active));
                    continue;
                }
                record.state = TaskState::Pending;
                self.move_file(&id, TaskState::Active, TaskState::Pending);
                self.write(TaskState::Pending, record.clone());
                self.out.push(Effect::Log {
                    task_id: Some(id.clone()),
                    session: record.session.clone(),
                    body: Box::new(
                        event::TaskRetried {
                            attempt: record.attempts.len() as u64,
                            error: Some(DAEMON_STOPPED.into()),
                            recovered: true,
                            ..Default::default()
                        }
                        .into(),
                    ),
                });
            } else if in_flight.is_some() {
                // Claimed, but the claim never reached `active/`: nothing was sent. The
                // mark goes, so that a later claim on another session is not taken for it.
                self.write(TaskState::Pending, record.clone());
            }
            records.push((record, resources, give_up, TaskState::Pending));
        }
        records.sort_by(|(a, ..), (b, ..)| {
            a.received_at
                .cmp(&b.received_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        for (r, resources, at_most_once, dir) in records {
            let crashes = r
                .attempts
                .iter()
                .rev()
                .take_while(|a| a.outcome == AttemptOutcome::Interrupted)
                .count();
            let give_up = if at_most_once.is_some() {
                at_most_once
            } else if crashes >= CRASH_QUARANTINE {
                Some(format!(
                    "quarantined: the daemon stopped {crashes} times in a row while this task \
                     ran, so it may be what stops the daemon; not run again by itself \
                     (`architect retry {}` runs it again)",
                    r.id
                ))
            } else if !r.may_retry() {
                let last = r
                    .attempts
                    .last()
                    .and_then(|a| a.error.clone())
                    .unwrap_or_default();
                Some(format!(
                    "gave up after {} attempt(s): {last}",
                    r.attempts_used()
                ))
            } else {
                None
            };
            let id = r.id.clone();
            match give_up {
                None => self.track(r, resources, on_disk, now),
                Some(why) => {
                    let status = if dir == TaskState::Active {
                        TaskStatus::Running {
                            session: r.session.clone().unwrap_or_default(),
                            attempt: u32::try_from(r.attempts.len()).unwrap_or(u32::MAX),
                            started: now,
                            cancel_requested: false,
                        }
                    } else {
                        TaskStatus::Queued
                    };
                    self.tasks.insert(
                        id.clone(),
                        Task {
                            record: r,
                            status,
                            seq: 0,
                            resources: Vec::new(),
                        },
                    );
                    self.finish(&id, TaskState::Failed, None, Some(why), now);
                }
            }
        }
    }
}

/// `failed` or `was cancelled`, for a dependency in that final state.
fn failed_how(state: TaskState) -> &'static str {
    if state == TaskState::Failed {
        "failed"
    } else {
        "was cancelled"
    }
}
