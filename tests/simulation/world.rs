//! The simulated world: a shell that carries out the scheduler's effects as the daemon
//! does (`src/daemon/{mod,tasks,control,sessions}.rs`), session programs, producers,
//! faults, and the oracle that checks the invariants after every step.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use architect::locks::{Conflict, Resource};
use architect::log::EventBody;
use architect::scheduler::{
    Effect, Found, FreeSession, HeldBy, Input, Locks, MemHeld, MemLocks, Scheduler, Settings,
    TaskStatus,
};
use architect::spool::task::{LockSpec, TaskRecord, TaskSpec, TaskState};
use architect::types::{AttemptEnd, TaskResult};
use chrono::{DateTime, Duration, Utc};

use crate::disk::{Batch, Disk, Errno, Fault, Op, Removal, Removed, Request};
use crate::rng::Rng;

const NODE: &str = "n1";
const BRANCHES: [&str; 3] = ["b0", "b1", "b2"];
const PATHS: [&str; 3] = ["src", "src/a.rs", "docs"];
const ROLES: [&str; 2] = ["rev", "ops"];

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

// ---- the lock table ---------------------------------------------------------------

/// The lock table shared by the daemon (through [`SimLocks`]) and outside holders: the
/// library's in-memory table, and a fault.
#[derive(Default)]
pub struct LockTable {
    pub mem: MemLocks,
    /// The next `try_acquire` fails as an unusable table would (an I/O error).
    pub fail_next: bool,
}

/// The scheduler's view of the lock table.
pub struct SimLocks(Rc<RefCell<LockTable>>);

impl Locks for SimLocks {
    type Held = MemHeld;

    fn try_acquire(
        &mut self,
        task: &str,
        session: &str,
        resources: &[Resource],
    ) -> Result<Result<Self::Held, Conflict>, String> {
        let mut t = self.0.borrow_mut();
        if std::mem::take(&mut t.fail_next) {
            return Err("EIO opening the lock file".into());
        }
        t.mem.try_acquire(task, session, resources)
    }

    fn held_resources(&self, held: &Self::Held) -> Vec<Resource> {
        self.0.borrow().mem.held_resources(held)
    }

    fn release(&mut self, held: Self::Held) -> u64 {
        self.0.borrow_mut().mem.release(held)
    }
}

// ---- sessions ---------------------------------------------------------------------

/// A configured session.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    pub name: String,
    pub role: Option<String>,
    pub llm: bool,
    /// Its profile says a prompt must run at most once.
    pub at_most_once: bool,
}

/// How a run will end.
#[derive(Clone, Debug)]
enum Planned {
    End(AttemptEnd),
    /// The program dies.
    Die,
}

/// What a session's program is executing.
#[derive(Clone, Debug)]
struct Run {
    task: String,
    ends_at: DateTime<Utc>,
    end: Planned,
}

/// A session's program (the daemon's child: it dies with the daemon).
#[derive(Default, Debug)]
struct Program {
    run: Option<Run>,
    /// Reports not tied to a run (a task refused because the program was busy).
    msgs: Vec<(DateTime<Utc>, String, AttemptEnd)>,
}

/// The daemon's slot for a session (`SessionSlot`).
#[derive(Debug)]
struct Slot {
    spec: SessionSpec,
    /// The task the daemon handed it.
    task: Option<String>,
    /// The program, while it runs (`handle`).
    program: Option<Program>,
    restart_at: Option<DateTime<Utc>>,
}

impl Slot {
    fn is_free(&self) -> bool {
        self.task.is_none() && self.program.as_ref().is_some_and(|p| p.run.is_none())
    }
}

// ---- the shell --------------------------------------------------------------------

/// A running daemon: the scheduler and what `Daemon` keeps beside it.
struct Daemon {
    incarnation: u64,
    sched: Scheduler<SimLocks>,
    batch: Batch,
    runs_waiting: Vec<(String, String, u32)>,
    slots: BTreeMap<String, Slot>,
    intake_paused: bool,
    shutting_down: bool,
    overflowed: bool,
    next_listing: DateTime<Utc>,
    /// A request waits for the batch.
    control_waiting: bool,
}

/// Why a step stopped early.
pub enum Stop {
    /// The daemon crashed here.
    Crash,
    /// An invariant does not hold.
    Violation(String),
}

type Res<T = ()> = Result<T, Stop>;

fn violation<T>(message: String) -> Res<T> {
    Err(Stop::Violation(message))
}

/// A failing seed.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub message: String,
}

/// What a seed did.
#[derive(Default, Clone, Debug)]
pub struct Stats {
    pub steps: u64,
    pub tasks: u64,
    pub runs: u64,
    pub crashes: u64,
    pub crashes_in_flush: u64,
    pub power_losses: u64,
    pub changes_lost_to_power: u64,
    pub stops: u64,
    pub stops_with_refused_writes: u64,
    pub flushes: u64,
    pub flushes_with_errors: u64,
    pub duplicates_recognised: u64,
    pub rejected: u64,
    pub claims_failed: u64,
    pub second_daemons_refused: u64,
    pub finals_undone_by_crash: u64,
    pub cancels: u64,
    pub retries: u64,
    pub sessions_killed: u64,
    pub overflows: u64,
    pub lock_waits: u64,
    pub log_digest: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.tasks += o.tasks;
        self.runs += o.runs;
        self.crashes += o.crashes;
        self.crashes_in_flush += o.crashes_in_flush;
        self.power_losses += o.power_losses;
        self.changes_lost_to_power += o.changes_lost_to_power;
        self.stops += o.stops;
        self.stops_with_refused_writes += o.stops_with_refused_writes;
        self.flushes += o.flushes;
        self.flushes_with_errors += o.flushes_with_errors;
        self.duplicates_recognised += o.duplicates_recognised;
        self.rejected += o.rejected;
        self.claims_failed += o.claims_failed;
        self.second_daemons_refused += o.second_daemons_refused;
        self.finals_undone_by_crash += o.finals_undone_by_crash;
        self.cancels += o.cancels;
        self.retries += o.retries;
        self.sessions_killed += o.sessions_killed;
        self.overflows += o.overflows;
        self.lock_waits += o.lock_waits;
        self.log_digest = self.log_digest.rotate_left(7) ^ o.log_digest;
    }
}

/// An event appended to the simulated log.
struct Logged {
    kind: String,
    task: Option<String>,
}

/// A logged event the invariants follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EvKind {
    /// `task_completed`, `task_failed`, `task_cancelled`.
    Final(TaskState),
    /// `task_retried` with `manual`.
    ManualRetry,
}

#[derive(Clone, Debug)]
struct Ev {
    kind: EvKind,
    step: u64,
    /// The last write of the task's file queued before the event: the event is void if a
    /// crash loses it.
    write: Option<u64>,
    /// Its place in the log.
    index: usize,
}

/// What the invariants remember.
#[derive(Default)]
struct Oracle {
    /// Ids the daemon accepted (fed to the scheduler as `Arrived`).
    accepted: BTreeSet<String>,
    /// Their locks.
    resources: HashMap<String, Vec<Resource>>,
    /// The tasks as accepted.
    specs: HashMap<String, TaskSpec>,
    /// Accepted ids whose file has been on the durable disk.
    ever_durable: HashSet<String>,
    /// Each id's final events and manual retries, in log order, without those a crash
    /// made void.
    events: BTreeMap<String, Vec<Ev>>,
    /// Ids whose final record has been durable, at which epoch (manual retries).
    durable_final: HashMap<String, u32>,
    /// Task → the session whose program is executing it.
    executing: BTreeMap<String, String>,
    /// Tasks whose prompt went to a session that submits at most once, with the epoch
    /// (manual retries), until the attempt ends or the session exits: a daemon crash in
    /// between must not lead to a second send.
    sent_at_most_once: HashMap<String, u32>,
    /// Control requests applied by the running daemon: file name, the log it wrote.
    requests: Vec<(String, std::ops::Range<usize>)>,
}

impl Oracle {
    fn events(&self, id: &str) -> &[Ev] {
        self.events.get(id).map_or(&[], Vec::as_slice)
    }

    /// The last final event, when no manual retry followed it.
    fn open_final(&self, id: &str) -> Option<&Ev> {
        self.events(id)
            .last()
            .filter(|e| matches!(e.kind, EvKind::Final(_)))
    }

    /// The state the last final event names.
    fn last_final(&self, id: &str) -> Option<TaskState> {
        self.events(id).iter().rev().find_map(|e| match e.kind {
            EvKind::Final(s) => Some(s),
            EvKind::ManualRetry => None,
        })
    }

    /// Manual retries so far.
    fn epoch(&self, id: &str) -> u32 {
        let n = self
            .events(id)
            .iter()
            .filter(|e| e.kind == EvKind::ManualRetry)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Whether a cancel or retry file is claimed by a rename and removed once what it changed
/// is durable (the daemon's rule since the simulation found requests lost by a crash),
/// rather than removed before it is applied.
const CLAIM_UNTIL_DURABLE: bool = true;

/// The prefix of a claimed control file (`daemon/control.rs`).
const CLAIMED: &str = ".claimed.";

/// What the disk-side invariants read, in short: the disk's version, the batch's length and
/// first and last operations, the accepted ids, the log's length.
type Seen = (u64, usize, Option<u64>, Option<u64>, usize, usize);

/// How long the simulation runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Steps with faults and arrivals.
    pub chaos_steps: u64,
    /// At most this many fault-free steps to drain.
    pub drain_steps: u64,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Chaos,
    Drain,
}

/// The planted-bug switch the simulation's shell may honour (none: the real design).
pub struct Sim {
    pub seed: u64,
    rng: Rng,
    now: DateTime<Utc>,
    pub step: u64,
    plan: Plan,
    phase: Phase,
    disk: Disk,
    log: Vec<Logged>,
    table: Rc<RefCell<LockTable>>,
    /// The per-spool daemon lock: the incarnation holding it.
    daemon_lock: Option<u64>,
    daemon: Option<Daemon>,
    restart_at: Option<DateTime<Utc>>,
    incarnations: u64,
    sessions: Vec<SessionSpec>,
    /// Watcher events in flight: when, inbox file name.
    hints: Vec<(DateTime<Utc>, String)>,
    faults: Vec<Fault>,
    /// An armed crash: effect boundaries left before it.
    crash_in: Option<u64>,
    next_task: u32,
    max_tasks: u32,
    next_dup: u32,
    next_outside: u32,
    referenced: BTreeSet<String>,
    submitted: BTreeSet<String>,
    next_request: u32,
    /// Sequence number of the next queued operation.
    next_seq: u64,
    /// Per task, the sequence number of its last queued write.
    last_write: HashMap<String, u64>,
    oracle: Oracle,
    /// What the disk-side invariants last saw (see `check`).
    checked: Option<Seen>,
    pub stats: Stats,
    pub trace: bool,
}

impl Sim {
    pub fn new(seed: u64, plan: Plan) -> Self {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.index(3);
        let mut sessions: Vec<SessionSpec> = (1..=n)
            .map(|i| SessionSpec {
                name: format!("s{i}"),
                role: None,
                llm: false,
                at_most_once: false,
            })
            .collect();
        for s in &mut sessions {
            if rng.chance(350) {
                s.role = Some(ROLES[rng.index(ROLES.len())].to_string());
            }
            s.at_most_once = rng.chance(300);
        }
        if rng.chance(300) {
            sessions.push(SessionSpec {
                name: "llm1".into(),
                role: None,
                llm: true,
                at_most_once: rng.chance(500),
            });
        }
        let max_tasks = 40 + u32::try_from(rng.below(120)).unwrap_or(0);
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("a date")
            .with_timezone(&Utc);
        Self {
            seed,
            rng,
            now,
            step: 0,
            plan,
            phase: Phase::Chaos,
            disk: Disk::default(),
            log: Vec::new(),
            table: Rc::default(),
            daemon_lock: None,
            daemon: None,
            restart_at: None,
            incarnations: 0,
            sessions,
            hints: Vec::new(),
            faults: Vec::new(),
            crash_in: None,
            next_task: 0,
            max_tasks,
            next_dup: 0,
            next_outside: 0,
            referenced: BTreeSet::new(),
            submitted: BTreeSet::new(),
            next_request: 0,
            next_seq: 0,
            last_write: HashMap::new(),
            oracle: Oracle::default(),
            checked: None,
            stats: Stats::default(),
            trace: false,
        }
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            message,
        }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            let t = (self.now - DateTime::<Utc>::UNIX_EPOCH).num_milliseconds() % 100_000_000;
            eprintln!("[{:>6} t={t:>8}] {}", self.step, what());
        }
    }

    /// Runs the plan: chaos, then a fault-free drain; checks everything ends final.
    pub fn run(&mut self) -> Result<Stats, Failure> {
        self.restart_at = Some(self.now);
        for _ in 0..self.plan.chaos_steps {
            self.one_step()?;
        }
        self.begin_drain();
        let mut left = self.plan.drain_steps;
        while !self.drained() {
            if left == 0 {
                return Err(self.fail(format!(
                    "not drained after {} fault-free steps: {}",
                    self.plan.drain_steps,
                    self.describe_live()
                )));
            }
            left -= 1;
            self.one_step()?;
        }
        self.final_checks().map_err(|m| self.fail(m))?;
        let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
        for e in &self.log {
            let s = format!("{}{}", e.kind, e.task.as_deref().unwrap_or("-"));
            for b in s.bytes() {
                digest = (digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        self.stats.log_digest = digest;
        self.stats.steps = self.step;
        self.stats.tasks = self.oracle.accepted.len() as u64;
        Ok(self.stats.clone())
    }

    fn one_step(&mut self) -> Result<(), Failure> {
        self.step += 1;
        let r = self.step_inner();
        self.crash_in = None;
        match r {
            Ok(()) => {}
            Err(Stop::Crash) => self.crash().map_err(|m| self.fail(m))?,
            Err(Stop::Violation(m)) => return Err(self.fail(m)),
        }
        self.check().map_err(|m| self.fail(m))
    }

    // ---- time -----------------------------------------------------------------------

    fn next_due(&self) -> Option<DateTime<Utc>> {
        let mut due: Vec<DateTime<Utc>> = Vec::new();
        due.extend(self.restart_at);
        due.extend(self.hints.iter().map(|(at, _)| *at));
        due.extend(self.faults.iter().map(|f| f.until));
        if let Some(d) = &self.daemon {
            due.extend(d.sched.next_deadline());
            due.extend(d.batch.retry_at);
            due.push(d.next_listing);
            for s in d.slots.values() {
                due.extend(s.restart_at);
                if let Some(p) = &s.program {
                    due.extend(p.run.as_ref().map(|r| r.ends_at));
                    due.extend(p.msgs.iter().map(|m| m.0));
                }
            }
        }
        due.into_iter().min()
    }

    fn advance_clock(&mut self) {
        let jump = self.phase == Phase::Drain || self.rng.chance(350);
        let next = if jump { self.next_due() } else { None };
        self.now = match next {
            Some(at) if at > self.now => at.min(self.now + ms(10_000)),
            Some(_) => self.now,
            None => self.now + ms(self.rng.range(0, 40)),
        };
        self.disk.settle(self.now);
        let now = self.now;
        self.faults.retain(|f| f.until > now);
    }

    // ---- a step ---------------------------------------------------------------------

    fn step_inner(&mut self) -> Res {
        self.advance_clock();
        let chaos = self.phase == Phase::Chaos;
        if self.daemon.is_none() {
            if chaos && self.rng.chance(150) {
                self.produce(false);
            }
            if self.restart_at.is_some_and(|at| at <= self.now) {
                self.restart_at = None;
                if chaos && self.rng.chance(100) {
                    self.crash_in = Some(self.rng.below(30));
                }
                return self.start_daemon();
            }
            return Ok(());
        }
        if chaos && self.rng.chance(6) {
            self.crash_in = Some(self.rng.below(16));
        }
        let mut d = self.daemon.take().expect("running");
        match self.pass(&mut d) {
            Ok(true) => {
                if self.crash_in.is_some() {
                    // The armed crash falls between this pass and the next.
                    return Err(Stop::Crash);
                }
                self.daemon = Some(d);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One pass of the daemon's loop: something happens, then timers, dispatch and the
    /// group commit (`daemon::run`). `Ok(false)`: the daemon stopped.
    fn pass(&mut self, d: &mut Daemon) -> Res<bool> {
        if self.phase == Phase::Chaos {
            const W: [u64; 13] = [150, 620, 20, 40, 30, 25, 12, 5, 10, 4, 4, 10, 20];
            match self.rng.weighted(&W) {
                Some(0) => self.produce(true),
                Some(2) => self.kill_session(d)?,
                Some(3) => self.cancel_one(d)?,
                Some(4) => self.retry_one(d)?,
                Some(5) => self.outside_lock(),
                Some(6) => self.disk_fault(),
                Some(7) => self.table.borrow_mut().fail_next = true,
                Some(8) => {
                    self.trace(|| "watcher overflow: events dropped".into());
                    self.stats.overflows += 1;
                    self.hints.clear();
                    d.overflowed = true;
                }
                Some(9) => {
                    self.graceful_stop(d)?;
                    return Ok(false);
                }
                Some(10) => self.second_daemon()?,
                Some(11) => self.produce_duplicate_id(),
                Some(12) => self.duplicate_hint(),
                _ => {}
            }
        }
        self.deliver_hints(d)?;
        self.session_messages(d)?;
        if std::mem::take(&mut d.overflowed) {
            self.reconcile(d)?;
        }
        self.on_timers(d)?;
        self.dispatch(d)?;
        self.sync_dirs(d)?;
        Ok(true)
    }

    /// An effect boundary: an armed crash may happen here.
    fn boundary(&mut self) -> Res {
        match self.crash_in {
            Some(0) => {
                self.crash_in = None;
                Err(Stop::Crash)
            }
            Some(n) => {
                self.crash_in = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    // ---- producers and the watcher --------------------------------------------------

    fn produce(&mut self, watched: bool) {
        if self.next_task >= self.max_tasks {
            return;
        }
        let n = self.next_task;
        self.next_task += 1;
        let id = format!("t{n:04}");
        let spec = self.random_spec(&id, n);
        self.drop_in_inbox(id, spec, watched);
    }

    fn drop_in_inbox(&mut self, id: String, spec: TaskSpec, watched: bool) {
        let name = format!("{id}.json");
        self.referenced.extend(spec.depends_on.iter().cloned());
        self.trace(|| format!("producer: {name} {spec:?}"));
        self.disk.version += 1;
        self.disk.inbox.insert(name.clone(), spec);
        self.submitted.insert(id);
        if watched {
            match self.rng.below(100) {
                0..=79 => {
                    let at = self.now + ms(self.rng.range(0, 300));
                    self.hints.push((at, name));
                }
                80..=89 => {
                    // The same close event twice, the second late.
                    let a = self.now + ms(self.rng.range(0, 300));
                    let b = self.now + ms(self.rng.range(0, 3000));
                    self.hints.push((a, name.clone()));
                    self.hints.push((b, name));
                }
                _ => {} // lost: the listing finds it
            }
        }
    }

    /// Another producer reuses an id with other content: rejected, never a second task.
    fn produce_duplicate_id(&mut self) {
        let Some(id) = nth(&self.submitted, self.rng.below(self.submitted.len() as u64)) else {
            return;
        };
        let name = format!("x{:04}.json", self.next_dup);
        self.next_dup += 1;
        let spec = TaskSpec {
            id: Some(id),
            prompt: "something else".into(),
            priority: None,
            session: None,
            role: None,
            depends_on: Vec::new(),
            timeout_s: Some(1),
            max_retries: Some(0),
            provider: None,
            model: None,
            complexity: None,
            locks: None,
            metadata: None,
        };
        self.trace(|| format!("producer: {name} reuses id {:?}", spec.id));
        self.disk.version += 1;
        self.disk.inbox.insert(name.clone(), spec);
        let at = self.now + ms(self.rng.range(0, 300));
        self.hints.push((at, name));
    }

    /// A late watcher event for a file that may be long gone.
    fn duplicate_hint(&mut self) {
        let n = self.next_task;
        if n == 0 {
            return;
        }
        let k = u32::try_from(self.rng.below(u64::from(n))).unwrap_or(0);
        let at = self.now + ms(self.rng.range(0, 500));
        self.hints.push((at, format!("t{k:04}.json")));
    }

    fn random_spec(&mut self, id: &str, n: u32) -> TaskSpec {
        let rng = &mut self.rng;
        let mut spec = TaskSpec {
            id: Some(id.to_string()),
            prompt: format!("prompt {n}"),
            priority: rng
                .chance(700)
                .then(|| u8::try_from(rng.below(11)).unwrap_or(5)),
            session: None,
            role: None,
            depends_on: Vec::new(),
            timeout_s: Some(1 + rng.below(4)),
            max_retries: Some(u32::try_from(rng.below(4)).unwrap_or(0)),
            provider: None,
            model: None,
            complexity: None,
            locks: None,
            metadata: None,
        };
        let roles: Vec<String> = self
            .sessions
            .iter()
            .filter_map(|s| s.role.clone())
            .collect();
        match rng.below(100) {
            0..=9 => {
                spec.session = Some(self.sessions[rng.index(self.sessions.len())].name.clone())
            }
            10..=19 if !roles.is_empty() => spec.role = Some(roles[rng.index(roles.len())].clone()),
            20..=24 if self.sessions.iter().any(|s| s.llm) => spec.model = Some("m1".into()),
            _ => {}
        }
        if rng.chance(300) {
            let k = 1 + rng.below(2);
            for _ in 0..k {
                let dep = match rng.below(100) {
                    0..=79 if n > 0 => format!("t{:04}", rng.below(u64::from(n))),
                    80..=96 => format!("t{:04}", u64::from(n) + 1 + rng.below(5)),
                    _ => id.to_string(),
                };
                if !spec.depends_on.contains(&dep) {
                    spec.depends_on.push(dep);
                }
            }
        }
        let branch = rng
            .chance(250)
            .then(|| BRANCHES[rng.index(BRANCHES.len())].to_string());
        let paths: Vec<String> = if rng.chance(80) {
            vec![PATHS[rng.index(PATHS.len())].to_string()]
        } else {
            Vec::new()
        };
        if rng.chance(30) {
            spec.locks = Some(LockSpec {
                branch: Some("main".into()),
                paths: Vec::new(),
            });
        } else if branch.is_some() || !paths.is_empty() {
            spec.locks = Some(LockSpec { branch, paths });
        }
        spec
    }

    fn deliver_hints(&mut self, d: &mut Daemon) -> Res {
        let now = self.now;
        let mut due: Vec<(DateTime<Utc>, String)> = Vec::new();
        self.hints.retain(|h| {
            if h.0 <= now {
                due.push(h.clone());
                false
            } else {
                true
            }
        });
        due.sort();
        for (_, name) in due {
            self.ingest(d, &name)?;
        }
        Ok(())
    }

    // ---- intake (Daemon::ingest) ----------------------------------------------------

    fn ingest(&mut self, d: &mut Daemon, name: &str) -> Res {
        if d.intake_paused || d.shutting_down {
            return Ok(());
        }
        if d.batch.removes(&Removal::Inbox(name.to_string())) {
            // Taken in or rejected already: the file goes with this pass's batch.
            return Ok(());
        }
        let Some(spec) = self.disk.inbox.get(name).cloned() else {
            return Ok(()); // gone
        };
        let id = spec.id.clone().expect("the sim's tasks name their id");
        if let Some(state) = self.known_state(d, &id) {
            let stored = match d.sched.task(&id) {
                Some(t) => Some(t.record.task.clone()),
                None => self.disk.dir(state).get(&id).map(|r| r.task.clone()),
            };
            if stored.as_ref() == Some(&spec) {
                self.trace(|| format!("intake: {name} is task {id} already ({})", state.dir()));
                self.stats.duplicates_recognised += 1;
                d.batch.removals.push(Removal::Inbox(name.to_string()));
                return Ok(());
            }
            if stored.is_none() && d.sched.state_of(&id).is_some() {
                self.trace(|| format!("intake: {name}: {id} is final, not yet on disk: left"));
                return Ok(());
            }
            if self.oracle.specs.get(&id) == Some(&spec) {
                return violation(format!(
                    "{name}, the very file task {id} was taken in from, is rejected as a \
                     duplicate of it ({}, known {}; its file is not there yet)",
                    state.dir(),
                    if d.sched.state_of(&id).is_some() {
                        "to the scheduler"
                    } else {
                        "on disk"
                    }
                ));
            }
            // `reject_copy`: a copy in rejected/, the inbox file removed, with the batch.
            self.trace(|| {
                format!(
                    "intake: {name} rejected: duplicate id {id} ({})",
                    state.dir()
                )
            });
            self.stats.rejected += 1;
            self.disk.rejected.push(name.to_string());
            d.batch.removals.push(Removal::Inbox(name.to_string()));
            return self.log("task_rejected", None, false);
        }
        let record = TaskRecord::new(
            id.clone(),
            spec,
            NODE.to_string(),
            name.to_string(),
            self.now,
        );
        self.queue_write(d, TaskState::Pending, Box::new(record.clone()), true);
        d.batch.removals.push(Removal::Inbox(name.to_string()));
        self.log("task_received", Some(&id), false)?;
        self.trace(|| format!("intake: {name} accepted as {id}"));
        self.oracle.accepted.insert(id.clone());
        self.oracle.specs.insert(id.clone(), record.task.clone());
        let resources = resources(&record.task);
        self.oracle
            .resources
            .insert(id, resources.clone().unwrap_or_default());
        let on_disk = self.deps_on_disk(d, &record.task.depends_on);
        self.decide(
            d,
            Input::Arrived {
                record,
                resources,
                on_disk,
            },
        )
    }

    fn known_state(&self, d: &Daemon, id: &str) -> Option<TaskState> {
        d.sched.state_of(id).or_else(|| self.disk.locate(id))
    }

    fn deps_on_disk(&self, d: &Daemon, deps: &[String]) -> HashMap<String, TaskState> {
        deps.iter()
            .filter(|dep| d.sched.state_of(dep).is_none())
            .filter_map(|dep| {
                self.disk
                    .locate(dep)
                    .filter(|s| s.is_final())
                    .map(|s| (dep.clone(), s))
            })
            .collect()
    }

    /// `Daemon::reconcile`: the inbox listed, every file ingested.
    fn reconcile(&mut self, d: &mut Daemon) -> Res {
        let names: Vec<String> = self.disk.inbox.keys().cloned().collect();
        for name in names {
            self.ingest(d, &name)?;
        }
        Ok(())
    }

    // ---- carrying out effects (Daemon::decide / apply) ------------------------------

    fn decide(&mut self, d: &mut Daemon, input: Input) -> Res {
        if self.trace {
            let shown = match &input {
                Input::Arrived { record, .. } => format!("Arrived({})", record.id),
                Input::Recovered { found, .. } => format!(
                    "Recovered({:?})",
                    found
                        .iter()
                        .map(|f| (f.record.id.clone(), f.dir, f.record.state, f.also_final))
                        .collect::<Vec<_>>()
                ),
                Input::Retry { record, dir, .. } => format!("Retry({}, {dir:?})", record.id),
                other => format!("{other:?}"),
            };
            self.trace(|| format!("input: {shown}"));
        }
        let effects = d.sched.handle(input, self.now);
        for e in effects {
            self.boundary()?;
            self.trace(|| format!("  effect: {}", show_effect(&e)));
            match e {
                Effect::Write { dir, record } => self.queue_write(d, dir, record, false),
                Effect::Move { id, from, to } => {
                    self.next_seq += 1;
                    d.batch.ops.push(Op::Rename {
                        seq: self.next_seq,
                        id,
                        from,
                        to,
                    });
                }
                Effect::Remove { id, dir } => d.batch.removals.push(Removal::Task(dir, id)),
                Effect::Run {
                    session,
                    task_id,
                    attempt,
                } => {
                    if let Some(slot) = d.slots.get_mut(&session) {
                        slot.task = Some(task_id.clone());
                    }
                    d.runs_waiting.push((session, task_id, attempt));
                }
                Effect::Interrupt { session, task_id } => {
                    let delay = self.rng.range(0, 200);
                    let now = self.now;
                    let run = d
                        .slots
                        .get_mut(&session)
                        .and_then(|s| s.program.as_mut())
                        .and_then(|p| p.run.as_mut());
                    // The machine interrupts whatever it runs (the cancel races the end).
                    if let Some(run) = run {
                        if run.ends_at > now + ms(delay) {
                            run.ends_at = now + ms(delay);
                            run.end = Planned::End(AttemptEnd::Cancelled);
                        }
                    } else {
                        self.trace(|| format!("  cancel of {task_id}: {session} runs nothing"));
                    }
                }
                Effect::Log { task_id, body, .. } => {
                    let manual = matches!(&*body, EventBody::TaskRetried(r) if r.manual);
                    self.log(body.kind(), task_id.as_deref(), manual)?;
                }
            }
        }
        Ok(())
    }

    fn queue_write(&mut self, d: &mut Daemon, dir: TaskState, record: Box<TaskRecord>, copy: bool) {
        self.next_seq += 1;
        self.last_write.insert(record.id.clone(), self.next_seq);
        d.batch.ops.push(Op::Write {
            seq: self.next_seq,
            dir,
            record,
            copy,
        });
    }

    /// Appends an event to the log (durable at once) and checks the final events.
    /// `manual`: a `task_retried` asked by a person.
    fn log(&mut self, event: &str, task: Option<&str>, manual: bool) -> Res {
        if let Some(id) = task {
            let state = match event {
                "task_completed" => Some(TaskState::Done),
                "task_failed" => Some(TaskState::Failed),
                "task_cancelled" => Some(TaskState::Cancelled),
                _ => None,
            };
            if let Some(state) = state {
                if let Some(prev) = self.oracle.open_final(id) {
                    return violation(format!(
                        "task {id}: a second final event ({}) with no manual retry since its \
                         {:?} event at step {}",
                        state.dir(),
                        prev.kind,
                        prev.step
                    ));
                }
            }
            let kind = match (state, manual) {
                (Some(s), _) => Some(EvKind::Final(s)),
                (None, true) => Some(EvKind::ManualRetry),
                _ => None,
            };
            if let Some(kind) = kind {
                let ev = Ev {
                    kind,
                    step: self.step,
                    write: self.last_write.get(id).copied(),
                    index: self.log.len(),
                };
                self.oracle
                    .events
                    .entry(id.to_string())
                    .or_default()
                    .push(ev);
            }
            if event == "lock_waiting" {
                self.stats.lock_waits += 1;
            }
        }
        self.log.push(Logged {
            kind: event.to_string(),
            task: task.map(str::to_string),
        });
        Ok(())
    }

    // ---- the group commit (Daemon::sync_dirs) ---------------------------------------

    fn sync_dirs(&mut self, d: &mut Daemon) -> Res {
        while !d.batch.is_empty() {
            self.stats.flushes += 1;
            let published = self.flush_half(d, false)?;
            // Runs whose claim is published go out before the sync (`Daemon::sync_dirs`).
            if !d.runs_waiting.is_empty() {
                self.send_claimed(d)?;
            }
            let synced = self.flush_half(d, true)?;
            let mut errors = published;
            errors.extend(synced);
            let durable = errors.is_empty();
            if durable {
                self.trace(|| "flush: durable".into());
                self.decide(d, Input::Flushed)?;
            } else {
                self.stats.flushes_with_errors += 1;
                self.trace(|| format!("flush: {errors:?}; kept {} op(s)", d.batch.ops.len()));
            }
            match (d.batch.stalled(), d.intake_paused) {
                (true, false) => d.intake_paused = true,
                (false, true) => {
                    d.intake_paused = false;
                    self.reconcile(d)?;
                }
                _ => {}
            }
            if !durable {
                break;
            }
            // What the durable batch released (dependents) goes out in the same pass.
            self.dispatch(d)?;
        }
        if !d.runs_waiting.is_empty() {
            self.send_claimed(d)?;
        }
        Ok(())
    }

    /// `WriteBatch::publish` (`sync == false`) or `WriteBatch::sync`, with the seed's
    /// faults and crash point; the errors met.
    fn flush_half(&mut self, d: &mut Daemon, sync: bool) -> Result<Vec<String>, Stop> {
        let Self {
            disk,
            rng,
            faults,
            crash_in,
            now,
            ..
        } = self;
        let now = *now;
        let mut crashed_here = false;
        let mut fails = |touch: &crate::disk::Touch| {
            faults
                .iter()
                .find(|f| f.covers(touch) && rng.chance(f.per_mille))
                .map(|f| f.errno)
        };
        let mut crash = || match crash_in {
            Some(0) => {
                crashed_here = true;
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        };
        let result = if sync {
            d.batch
                .sync(disk, now, &mut fails, &mut crash)
                .map(|f| f.errors)
        } else {
            d.batch.publish(disk, &mut fails, &mut crash)
        };
        result.map_err(|()| {
            self.stats.crashes_in_flush += u64::from(crashed_here);
            self.crash_in = None;
            self.trace(|| "crash in the middle of a flush".into());
            Stop::Crash
        })
    }

    /// `Daemon::send_claimed`: a claimed task goes to its session once its claim is
    /// durable; a claim that failed goes back to the scheduler.
    fn send_claimed(&mut self, d: &mut Daemon) -> Res {
        for (session, id, attempt) in std::mem::take(&mut d.runs_waiting) {
            if !d.sched.is_running(&id, &session, attempt) {
                self.trace(|| format!("the run of {id} on {session} is stale: dropped"));
                continue;
            }
            if d.batch.holds(TaskState::Active, &id) {
                d.runs_waiting.push((session, id, attempt));
                continue;
            }
            let at_most_once = d.slots.get(&session).is_some_and(|s| s.spec.at_most_once);
            if d.batch.unsynced && at_most_once {
                // A prompt that must not run twice waits for the sync.
                d.runs_waiting.push((session, id, attempt));
                continue;
            }
            if !self.disk.has(TaskState::Active, &id) {
                let gone = !self.disk.has(TaskState::Pending, &id);
                if let Some(slot) = d.slots.get_mut(&session) {
                    if slot.task.as_deref() == Some(id.as_str()) {
                        slot.task = None;
                    }
                }
                self.stats.claims_failed += 1;
                self.decide(
                    d,
                    Input::ClaimFailed {
                        task_id: id,
                        error: "its file is not in active/ after the claim".into(),
                        gone,
                    },
                )?;
                continue;
            }
            self.send_run(d, &session, &id)?;
        }
        Ok(())
    }

    /// `Daemon::run`: the prompt goes to the session's program.
    fn send_run(&mut self, d: &mut Daemon, session: &str, id: &str) -> Res {
        let Some(t) = d.sched.task(id) else {
            return Ok(());
        };
        let status = t.status.clone();
        let timeout_s = t.record.task.timeout_s();
        let deps = t.record.task.depends_on.clone();
        let now = self.now;
        let Some(program) = d.slots.get_mut(session).and_then(|s| s.program.as_mut()) else {
            return Ok(()); // no program: nothing is sent
        };
        if program.run.is_some() {
            program.msgs.push((
                now,
                id.to_string(),
                AttemptEnd::NotStarted("session was busy when the task arrived".into()),
            ));
            return Ok(());
        }
        // The prompt is typed now: what must hold.
        match &status {
            TaskStatus::Running { session: s, .. } if s == session => {}
            other => {
                return violation(format!(
                    "the prompt of {id} is sent to {session}, but the scheduler has it {other:?}"
                ))
            }
        }
        if let Some(other) = self.oracle.executing.get(id) {
            return violation(format!(
                "{id} starts on {session} while {other}'s program still executes it"
            ));
        }
        if !self.disk.has(TaskState::Active, id) {
            return violation(format!("{id} runs but its claim is not on disk"));
        }
        let at_most_once = d.slots.get(session).is_some_and(|s| s.spec.at_most_once);
        if at_most_once && self.disk.unsynced_change(id) {
            return violation(format!(
                "{id} is sent to {session}, which submits at most once, before its claim is \
                 durable"
            ));
        }
        let epoch = self.oracle.epoch(id);
        if at_most_once {
            if self.oracle.sent_at_most_once.get(id) == Some(&epoch) {
                return violation(format!(
                    "{id} is sent to {session}, which submits at most once, although its \
                     prompt was sent before and that attempt never ended (a daemon crash in \
                     between); no manual retry since"
                ));
            }
            self.oracle.sent_at_most_once.insert(id.to_string(), epoch);
        }
        for dep in &deps {
            if !self.disk.has(TaskState::Done, dep) {
                return violation(format!(
                    "{id} runs before its dependency {dep} is in done/ on disk (it is in {:?})",
                    self.disk.states_of(dep)
                ));
            }
        }
        if self.oracle.durable_final.get(id) == Some(&epoch) {
            return violation(format!(
                "{id} runs again after its final record was durable (no manual retry since)"
            ));
        }
        if let Some(need) = self.oracle.resources.get(id) {
            let table = self.table.borrow();
            for r in need {
                if !table
                    .mem
                    .held()
                    .iter()
                    .any(|(h, who)| h == r && *who == HeldBy::Task(id.to_string()))
                {
                    return violation(format!("{id} runs without holding its lock {r}"));
                }
            }
        }
        let (end, after) = self.plan_run(timeout_s);
        self.trace(|| format!("{session} runs {id}: {end:?} in {after} ms"));
        self.stats.runs += 1;
        self.oracle
            .executing
            .insert(id.to_string(), session.to_string());
        let program = d
            .slots
            .get_mut(session)
            .and_then(|s| s.program.as_mut())
            .expect("checked");
        program.run = Some(Run {
            task: id.to_string(),
            ends_at: now + ms(after),
            end,
        });
        Ok(())
    }

    fn plan_run(&mut self, timeout_s: u64) -> (Planned, i64) {
        let after = self.rng.range(20, 2000);
        const W: [u64; 8] = [62, 8, 6, 4, 2, 3, 3, 6];
        let result = TaskResult {
            output: "ok".into(),
            ..TaskResult::default()
        };
        match self.rng.weighted(&W) {
            Some(1) => (
                Planned::End(AttemptEnd::Failed(result, "exit 1".into())),
                after,
            ),
            Some(2) => (
                Planned::End(AttemptEnd::TimedOut),
                i64::try_from(timeout_s * 1000).unwrap_or(1000),
            ),
            Some(3) => (
                Planned::End(AttemptEnd::NotTaken("still in the box".into())),
                after,
            ),
            Some(4) => (
                Planned::End(AttemptEnd::DeliveryUncertain("no proof".into())),
                after,
            ),
            Some(5) => {
                let end = AttemptEnd::Limited {
                    message: "limit".into(),
                    reset_in: std::time::Duration::from_secs(60),
                };
                (Planned::End(end), after)
            }
            Some(6) => (Planned::End(AttemptEnd::NotStarted("not ready".into())), 1),
            Some(7) => (Planned::Die, after),
            _ => (Planned::End(AttemptEnd::Completed(result)), after),
        }
    }

    // ---- sessions -------------------------------------------------------------------

    /// Delivers what the programs report, in time order.
    fn session_messages(&mut self, d: &mut Daemon) -> Res {
        loop {
            let now = self.now;
            let mut next: Option<(DateTime<Utc>, String, bool)> = None;
            for (name, slot) in &d.slots {
                let Some(p) = &slot.program else { continue };
                let candidates = p
                    .msgs
                    .iter()
                    .map(|m| (m.0, false))
                    .chain(p.run.iter().map(|r| (r.ends_at, true)));
                for (at, is_run) in candidates {
                    if at <= now && next.as_ref().is_none_or(|n| at < n.0) {
                        next = Some((at, name.clone(), is_run));
                    }
                }
            }
            let Some((_, name, is_run)) = next else {
                return Ok(());
            };
            let program = d
                .slots
                .get_mut(&name)
                .and_then(|s| s.program.as_mut())
                .expect("found");
            if is_run {
                let run = program.run.take().expect("found");
                self.oracle.executing.remove(&run.task);
                match run.end {
                    Planned::End(end) => self.finished(d, &name, &run.task, end)?,
                    Planned::Die => {
                        self.trace(|| format!("{name}'s program dies running {}", run.task));
                        program_gone(d, &name);
                        self.on_exited(d, &name, "exit 137", true)?;
                    }
                }
            } else {
                let i = program.msgs.iter().position(|m| m.0 <= now).expect("found");
                let (_, task, end) = program.msgs.remove(i);
                self.finished(d, &name, &task, end)?;
            }
        }
    }

    /// `SessionEvent::Finished`.
    fn finished(&mut self, d: &mut Daemon, session: &str, task: &str, end: AttemptEnd) -> Res {
        self.oracle.sent_at_most_once.remove(task);
        if let Some(slot) = d.slots.get_mut(session) {
            if slot.task.as_deref() == Some(task) {
                slot.task = None;
            }
        }
        self.decide(
            d,
            Input::AttemptEnded {
                session: session.to_string(),
                task_id: task.to_string(),
                end,
            },
        )
    }

    /// `Daemon::on_exited`: the program is gone (`program_gone` was called); its task, if
    /// the daemon had handed it one, goes back to the scheduler.
    fn on_exited(&mut self, d: &mut Daemon, name: &str, status: &str, sent: bool) -> Res {
        let restart = self.now + ms(self.rng.range(200, 2000));
        let Some(slot) = d.slots.get_mut(name) else {
            return Ok(());
        };
        if !d.shutting_down {
            slot.restart_at = Some(restart);
        }
        let at_most_once = slot.spec.at_most_once;
        if let Some(id) = slot.task.take() {
            self.oracle.sent_at_most_once.remove(&id);
            self.decide(
                d,
                Input::SessionExited {
                    session: name.to_string(),
                    task_id: id,
                    status: status.to_string(),
                    at_most_once_sent: at_most_once && sent,
                },
            )?;
        }
        Ok(())
    }

    fn kill_session(&mut self, d: &mut Daemon) -> Res {
        let alive: Vec<String> = d
            .slots
            .iter()
            .filter(|(_, s)| s.program.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        let name = alive[self.rng.index(alive.len())].clone();
        self.stats.sessions_killed += 1;
        let run = program_gone(d, &name);
        let task = d.slots.get(&name).and_then(|s| s.task.clone());
        let sent = run.as_ref().is_some_and(|r| Some(&r.task) == task.as_ref());
        if let Some(r) = &run {
            self.oracle.executing.remove(&r.task);
        }
        self.trace(|| format!("{name}'s program is killed (running {run:?})"));
        self.on_exited(d, &name, "signal 9", sent)
    }

    fn on_timers(&mut self, d: &mut Daemon) -> Res {
        if self.now >= d.next_listing {
            d.next_listing = self.now + ms(2000);
            self.reconcile(d)?;
            self.process_control(d)?;
        } else if d.control_waiting && !d.batch.stalled() {
            self.process_control(d)?;
        }
        let now = self.now;
        if !d.shutting_down {
            for slot in d.slots.values_mut() {
                if slot.program.is_none() && slot.restart_at.is_some_and(|at| at <= now) {
                    slot.restart_at = None;
                    slot.program = Some(Program::default());
                }
            }
        }
        if d.sched.next_deadline().is_some_and(|at| at <= now) {
            self.decide(d, Input::Tick)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, d: &mut Daemon) -> Res {
        if d.sched.queued() == 0 || d.shutting_down {
            return Ok(());
        }
        let free: Vec<FreeSession> = d
            .slots
            .values()
            .filter(|s| s.is_free())
            .map(|s| FreeSession {
                name: s.spec.name.clone(),
                role: s.spec.role.clone(),
                llm: s.spec.llm,
                at_most_once: s.spec.at_most_once,
            })
            .collect();
        if free.is_empty() {
            return Ok(());
        }
        self.decide(d, Input::SessionsFree(free))
    }

    // ---- control requests (Daemon::process_control) ---------------------------------

    /// `architect cancel`: a request in `control/`, for a running task half the time.
    fn cancel_one(&mut self, d: &mut Daemon) -> Res {
        let running: Vec<String> = {
            let mut v: Vec<String> = d
                .sched
                .tasks()
                .filter(|t| matches!(t.status, TaskStatus::Running { .. }))
                .map(|t| t.record.id.clone())
                .collect();
            v.sort();
            v
        };
        let id = if !running.is_empty() && self.rng.chance(500) {
            running[self.rng.index(running.len())].clone()
        } else {
            let Some(id) = nth(
                &self.oracle.accepted,
                self.rng.below(self.oracle.accepted.len() as u64),
            ) else {
                return Ok(());
            };
            id
        };
        self.request(d, Request::Cancel(id))
    }

    /// `architect retry`, mostly of a task in `failed/` or `cancelled/`.
    fn retry_one(&mut self, d: &mut Daemon) -> Res {
        let mut finals: Vec<String> = self
            .disk
            .dir(TaskState::Failed)
            .keys()
            .chain(self.disk.dir(TaskState::Cancelled).keys())
            .cloned()
            .collect();
        if finals.is_empty() || self.rng.chance(100) {
            finals = self.oracle.accepted.iter().cloned().collect();
        }
        if finals.is_empty() {
            return Ok(());
        }
        let id = finals[self.rng.index(finals.len())].clone();
        self.request(d, Request::Retry(id))
    }

    fn request(&mut self, d: &mut Daemon, req: Request) -> Res {
        let name = format!("c{:05}.json", self.next_request);
        self.next_request += 1;
        self.trace(|| format!("control: {name} {req:?}"));
        self.disk.control.insert(name, req);
        self.process_control(d)
    }

    /// `Daemon::process_control`: every request in `control/`, in name order, claimed
    /// before it is applied.
    fn process_control(&mut self, d: &mut Daemon) -> Res {
        // Requests read records from disk: publish this pass's moves first.
        self.sync_dirs(d)?;
        let names: Vec<String> = self
            .disk
            .control
            .keys()
            .filter(|n| !n.starts_with('.'))
            .cloned()
            .collect();
        d.control_waiting = false;
        for name in names {
            if let Request::Retry(id) = &self.disk.control[&name] {
                if d.batch.touches(id) {
                    d.control_waiting = true;
                    continue;
                }
            }
            let req = self.disk.control.remove(&name).expect("listed");
            let claimed = format!("{CLAIMED}{name}");
            if CLAIM_UNTIL_DURABLE {
                self.disk.control.insert(claimed.clone(), req.clone());
            } else {
                let commit = self.now + ms(5000);
                self.disk
                    .unsynced
                    .push((commit, Removed::Control(name.clone(), req.clone())));
            }
            let from = self.log.len();
            self.apply_control(d, req)?;
            self.oracle
                .requests
                .push((name.clone(), from..self.log.len()));
            if CLAIM_UNTIL_DURABLE {
                d.batch.removals.push(Removal::Control(claimed));
            }
        }
        Ok(())
    }

    /// `Daemon::unclaim_control`: at start-up, claimed requests go back to `control/`.
    fn unclaim_control(&mut self) {
        let claimed: Vec<String> = self
            .disk
            .control
            .keys()
            .filter(|n| n.starts_with(CLAIMED))
            .cloned()
            .collect();
        for name in claimed {
            let req = self.disk.control.remove(&name).expect("listed");
            let original = name[CLAIMED.len()..].to_string();
            self.trace(|| format!("control: {original} claimed before a stop: applied again"));
            self.disk.control.insert(original, req);
        }
    }

    fn apply_control(&mut self, d: &mut Daemon, req: Request) -> Res {
        match req {
            Request::Cancel(id) => {
                if d.sched.task(&id).is_none() {
                    return Ok(());
                }
                self.stats.cancels += 1;
                self.decide(d, Input::Cancel { task_id: id })
            }
            Request::Retry(id) => {
                let Some(dir @ (TaskState::Failed | TaskState::Cancelled)) = self.disk.locate(&id)
                else {
                    return Ok(());
                };
                let record = self.disk.dir(dir)[&id].clone();
                let resources = resources(&record.task);
                let on_disk = self.deps_on_disk(d, &record.task.depends_on);
                self.stats.retries += 1;
                self.decide(
                    d,
                    Input::Retry {
                        dir,
                        record,
                        resources,
                        on_disk,
                    },
                )
            }
        }
    }

    // ---- faults ---------------------------------------------------------------------

    fn outside_lock(&mut self) {
        let mut t = self.table.borrow_mut();
        // Each outside holder holds one resource: releasing one frees one lock.
        let outside: Vec<HeldBy> = t
            .mem
            .held()
            .iter()
            .map(|(_, h)| h)
            .filter(|h| matches!(h, HeldBy::Outside(_)))
            .cloned()
            .collect();
        if !outside.is_empty() && self.rng.chance(500) {
            let who = &outside[self.rng.index(outside.len())];
            t.mem.release_by(who);
            return;
        }
        let r = if self.rng.chance(700) {
            Resource::Branch(BRANCHES[self.rng.index(BRANCHES.len())].into())
        } else {
            Resource::Path(PATHS[self.rng.index(PATHS.len())].into())
        };
        let by = HeldBy::Outside(self.next_outside + 1);
        if t.mem.take(&by, &[r]).is_ok() {
            self.next_outside += 1;
        }
    }

    fn disk_fault(&mut self) {
        if self.faults.len() >= 2 {
            return;
        }
        let errno = [Errno::Enospc, Errno::Eio, Errno::Eacces][self.rng.index(3)];
        let dir = match self.rng.below(6) {
            5 => None,
            i => Some(TaskState::ALL[usize::try_from(i).unwrap_or(0)]),
        };
        // Mostly short; now and then longer than a stop waits (10 s).
        let until = if self.rng.chance(50) {
            self.now + ms(self.rng.range(4000, 15_000))
        } else {
            self.now + ms(self.rng.range(50, 4000))
        };
        let per_mille = [1000, 500, 200][self.rng.index(3)];
        let f = Fault {
            errno,
            dir,
            until,
            per_mille,
        };
        self.trace(|| format!("disk fault: {f:?}"));
        self.faults.push(f);
    }

    // ---- the daemon's life ----------------------------------------------------------

    fn start_daemon(&mut self) -> Res {
        if let Some(holder) = self.daemon_lock {
            return violation(format!(
                "the daemon lock is still held by incarnation {holder}, which is not running"
            ));
        }
        self.incarnations += 1;
        let incarnation = self.incarnations;
        self.daemon_lock = Some(incarnation);
        self.trace(|| format!("daemon {incarnation} starts"));
        let sched = Scheduler::new(
            Settings {
                node: NODE.into(),
                retry_backoff_ms: 100,
                retry_backoff_max_ms: 2000,
            },
            SimLocks(self.table.clone()),
        );
        let slots = self
            .sessions
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    Slot {
                        spec: s.clone(),
                        task: None,
                        program: Some(Program::default()),
                        restart_at: None,
                    },
                )
            })
            .collect();
        let mut d = Daemon {
            incarnation,
            sched,
            batch: Batch::default(),
            runs_waiting: Vec::new(),
            slots,
            intake_paused: false,
            shutting_down: false,
            overflowed: false,
            next_listing: self.now + ms(2000),
            control_waiting: false,
        };
        self.log("daemon_started", None, false)?;
        let r = (|| {
            self.recover(&mut d)?;
            self.unclaim_control();
            self.reconcile(&mut d)?;
            self.process_control(&mut d)?;
            self.dispatch(&mut d)?;
            self.sync_dirs(&mut d)
        })();
        r?;
        self.daemon = Some(d);
        Ok(())
    }

    /// `Daemon::recover`: what is in `pending/` and `active/` on disk.
    fn recover(&mut self, d: &mut Daemon) -> Res {
        let mut found = Vec::new();
        let mut deps = Vec::new();
        for dir in [TaskState::Active, TaskState::Pending] {
            for (id, record) in self.disk.dir(dir) {
                let also_final = [TaskState::Done, TaskState::Failed, TaskState::Cancelled]
                    .into_iter()
                    .find(|s| self.disk.has(*s, id));
                deps.extend(record.task.depends_on.iter().cloned());
                found.push(Found {
                    dir,
                    record: record.clone(),
                    also_final,
                    resources: resources(&record.task),
                });
            }
        }
        let on_disk = self.deps_on_disk(d, &deps);
        self.decide(d, Input::Recovered { found, on_disk })
    }

    /// SIGTERM: sessions are stopped, their tasks return to `pending/`, the batch is
    /// carried out, the daemon exits (`Daemon::shutdown`).
    fn graceful_stop(&mut self, d: &mut Daemon) -> Res {
        self.trace(|| "graceful stop".into());
        self.stats.stops += 1;
        d.shutting_down = true;
        self.decide(d, Input::Stopping)?;
        let names: Vec<String> = d.slots.keys().cloned().collect();
        for name in names {
            if d.slots[&name].program.is_none() || self.rng.chance(50) {
                continue; // not running, or too slow to exit: left behind
            }
            let run = program_gone(d, &name);
            if let Some(r) = &run {
                self.oracle.executing.remove(&r.task);
            }
            let sent = run.is_some_and(|r| d.slots[&name].task.as_ref() == Some(&r.task));
            self.on_exited(d, &name, "signal 15", sent)?;
        }
        self.sync_dirs(d)?;
        // What the disk refuses is tried again for a while (STOP_FLUSH_WAIT).
        let give_up = self.now + ms(10_000);
        while !d.batch.is_empty() && self.now < give_up {
            if d.batch.stalled() {
                self.now += ms(100);
                let now = self.now;
                self.faults.retain(|f| f.until > now);
            }
            self.sync_dirs(d)?;
        }
        self.log("daemon_stopped", None, false)?;
        if !d.batch.is_empty() {
            // Exits without them: for the tasks concerned, as a crash.
            self.stats.stops_with_refused_writes += 1;
            self.void_lost().map_err(Stop::Violation)?;
        }
        self.down();
        Ok(())
    }

    /// The process is gone (after a stop or a crash): its locks, its children, its
    /// watcher go with it.
    fn down(&mut self) {
        self.daemon_lock = None;
        self.table
            .borrow_mut()
            .mem
            .retain(|_, h| matches!(h, HeldBy::Outside(_)));
        self.oracle.executing.clear();
        self.hints.clear();
        self.restart_at = Some(self.now + ms(self.rng.range(100, 2000)));
    }

    fn crash(&mut self) -> Result<(), String> {
        self.stats.crashes += 1;
        self.daemon = None;
        self.trace(|| "CRASH".into());
        self.down();
        if !self.disk.journal.is_empty() && self.rng.chance(500) {
            // A power loss: what was published and not synced may be gone too.
            let len = i64::try_from(self.disk.journal.len()).unwrap_or(i64::MAX);
            let n = self.rng.range(0, len + 1);
            let lost = self
                .disk
                .lose_unsynced(usize::try_from(n).unwrap_or(usize::MAX));
            self.stats.power_losses += 1;
            self.stats.changes_lost_to_power += lost.len() as u64;
            self.trace(|| format!("POWER LOSS: {} published change(s) undone", lost.len()));
        } else {
            self.disk.journal.clear();
        }
        // Removals were never made durable: some come back.
        for (_, r) in std::mem::take(&mut self.disk.unsynced) {
            if self.rng.chance(500) {
                continue;
            }
            self.trace(|| format!("a removal is undone by the crash: {r:?}"));
            match r {
                Removed::Inbox(name, spec) => {
                    self.disk.version += 1;
                    self.disk.inbox.entry(name).or_insert(*spec);
                }
                Removed::Task(dir, rec) => {
                    let id = rec.id.clone();
                    self.disk.dir_mut(dir).entry(id).or_insert(*rec);
                }
                Removed::Control(name, req) => {
                    self.disk.control.entry(name).or_insert(req);
                }
            }
        }
        self.void_lost()
    }

    /// The process is gone with operations not carried out: the events logged for them
    /// are void (the log is written before the disk: see the module doc). A void event of
    /// a control request whose file is gone is a request lost.
    fn void_lost(&mut self) -> Result<(), String> {
        let mut void: Vec<(String, Ev)> = Vec::new();
        for (id, evs) in &mut self.oracle.events {
            let done = self.disk.processed.get(id).copied();
            while let Some(last) = evs.last() {
                if last.write.is_some_and(|w| done.is_none_or(|d| d < w)) {
                    void.push((id.clone(), evs.pop().expect("last")));
                } else {
                    break;
                }
            }
        }
        let requests = std::mem::take(&mut self.oracle.requests);
        for (id, ev) in void {
            self.trace(|| format!("void: {id} {:?} logged at step {}", ev.kind, ev.step));
            if matches!(ev.kind, EvKind::Final(_)) {
                self.stats.finals_undone_by_crash += 1;
            }
            let control = &self.disk.control;
            let lost = requests.iter().find(|(name, r)| {
                r.contains(&ev.index)
                    && !control.contains_key(name)
                    && !control.contains_key(&format!("{CLAIMED}{name}"))
            });
            if let Some((name, _)) = lost {
                return Err(format!(
                    "control request {name} is lost: its {:?} of {id} was logged at step {} but \
                     never reached the disk, and its file is gone",
                    ev.kind, ev.step
                ));
            }
        }
        Ok(())
    }

    /// `architect daemon` started again while one runs: the daemon lock refuses it.
    fn second_daemon(&mut self) -> Res {
        match self.daemon_lock {
            Some(_) => {
                self.stats.second_daemons_refused += 1;
                Ok(())
            }
            None => violation("a second daemon would start: the daemon lock is free".into()),
        }
    }

    // ---- the drain ------------------------------------------------------------------

    fn begin_drain(&mut self) {
        self.phase = Phase::Drain;
        self.trace(|| "drain: no more faults".into());
        self.faults.clear();
        {
            let mut t = self.table.borrow_mut();
            t.fail_next = false;
            t.mem.retain(|_, h| matches!(h, HeldBy::Task(_)));
        }
        // Dependencies named but never submitted arrive now.
        let missing: Vec<String> = self
            .referenced
            .difference(&self.submitted)
            .cloned()
            .collect();
        for id in missing {
            let spec = TaskSpec {
                id: Some(id.clone()),
                prompt: "late dependency".into(),
                priority: None,
                session: None,
                role: None,
                depends_on: Vec::new(),
                timeout_s: Some(1),
                max_retries: Some(3),
                provider: None,
                model: None,
                complexity: None,
                locks: None,
                metadata: None,
            };
            let watched = self.daemon.is_some();
            self.drop_in_inbox(id, spec, watched);
        }
    }

    fn drained(&self) -> bool {
        let Some(d) = &self.daemon else {
            return false;
        };
        d.sched.tasks().next().is_none()
            && d.batch.is_empty()
            && d.runs_waiting.is_empty()
            && self.disk.inbox.is_empty()
            && self.hints.is_empty()
            && d.slots
                .values()
                .all(|s| s.program.as_ref().is_none_or(|p| p.run.is_none()))
    }

    fn describe_live(&self) -> String {
        let mut s = String::new();
        if let Some(d) = &self.daemon {
            let mut live: Vec<_> = d
                .sched
                .tasks()
                .map(|t| format!("{} {:?}", t.record.id, t.status))
                .collect();
            live.sort();
            let _ = write!(
                s,
                "live {live:?}; batch {} op(s), {} removal(s); runs waiting {:?}; ",
                d.batch.ops.len(),
                d.batch.removals.len(),
                d.runs_waiting
            );
        } else {
            s.push_str("daemon down; ");
        }
        let _ = write!(s, "inbox {:?}", self.disk.inbox.keys().collect::<Vec<_>>());
        s
    }

    // ---- invariants -----------------------------------------------------------------

    fn check(&mut self) -> Result<(), String> {
        // The daemon lock is held by the running daemon and nobody else.
        let running = self.daemon.as_ref().map(|d| d.incarnation);
        if running != self.daemon_lock && !(running.is_none() && self.daemon_lock.is_none()) {
            return Err(format!(
                "daemon lock held by {:?} while {running:?} runs",
                self.daemon_lock
            ));
        }
        // No lock has two holders.
        {
            let t = self.table.borrow();
            let held = t.mem.held();
            for (i, (a, ha)) in held.iter().enumerate() {
                for (b, hb) in &held[i + 1..] {
                    if ha != hb && a.overlaps(b) {
                        return Err(format!("{a} is held by {ha:?} and {b} by {hb:?} at once"));
                    }
                }
            }
            // A program executing a task holds the task's locks.
            for id in self.oracle.executing.keys() {
                for r in self.oracle.resources.get(id).into_iter().flatten() {
                    let who = HeldBy::Task(id.clone());
                    if !held.iter().any(|(h, w)| h == r && *w == who) {
                        return Err(format!("{id} executes without its lock {r}"));
                    }
                }
            }
        }
        let batch = self.daemon.as_ref().map(|d| &d.batch);
        // What the rest reads: the disk, the batch's operations, the accepted ids, the log.
        let seen = (
            self.disk.version,
            batch.map_or(0, |b| b.ops.len()),
            batch.and_then(|b| b.ops.first().map(Op::seq)),
            batch.and_then(|b| b.ops.last().map(Op::seq)),
            self.oracle.accepted.len(),
            self.log.len(),
        );
        if self.checked == Some(seen) {
            return Ok(());
        }
        self.checked = Some(seen);
        let disk = &self.disk;
        // An operation in flight, or a change published and not durable yet.
        let touched = |id: &str| batch.is_some_and(|b| b.touches(id)) || disk.unsynced_change(id);
        // A task waits only for tasks that can still finish: live, final but not durable
        // yet, or never seen. One waiting for a task final on disk that the scheduler
        // does not know waits forever.
        if let Some(d) = &self.daemon {
            for t in d.sched.tasks() {
                let TaskStatus::WaitingForDependencies(waiting) = &t.status else {
                    continue;
                };
                for dep in waiting {
                    let on_disk = self.disk.locate(dep);
                    if d.sched.state_of(dep).is_none()
                        && on_disk.is_some_and(TaskState::is_final)
                        && !touched(dep)
                    {
                        return Err(format!(
                            "{} waits for {dep}, which is in {}/ on disk and unknown to the \
                             scheduler: it will wait forever",
                            t.record.id,
                            on_disk.map_or("?", TaskState::dir)
                        ));
                    }
                }
            }
        }
        // Every accepted task is in exactly one state directory once durable.
        let inbox_ids: HashSet<&str> = self
            .disk
            .inbox
            .values()
            .filter_map(|s| s.id.as_deref())
            .collect();
        for id in &self.oracle.accepted {
            let states = self.disk.states_of(id);
            if states.len() > 1 {
                return Err(format!("{id} is in {states:?} on disk at once"));
            }
            if states.is_empty() {
                if self.oracle.ever_durable.contains(id) {
                    return Err(format!("{id} was on disk and is in no state directory now"));
                }
                if !inbox_ids.contains(id.as_str()) && !touched(id) {
                    return Err(format!(
                        "{id} was accepted, its file never reached the disk, and its inbox \
                         file is gone"
                    ));
                }
                continue;
            }
            self.oracle.ever_durable.insert(id.clone());
            let state = states[0];
            let record = &self.disk.dir(state)[id];
            if record.state.is_final() && !touched(id) {
                let epoch = self.oracle.epoch(id);
                self.oracle.durable_final.insert(id.clone(), epoch);
            }
            if state.is_final() && !touched(id) {
                if record.state != state {
                    return Err(format!(
                        "{id} is in {}/ but its record says {:?}",
                        state.dir(),
                        record.state
                    ));
                }
                match self.oracle.last_final(id) {
                    Some(s) if s == state => {}
                    other => {
                        return Err(format!(
                        "{id} is in {}/ on disk but its last final event in the log is {other:?}",
                        state.dir()
                    ))
                    }
                }
            }
        }
        Ok(())
    }

    fn final_checks(&self) -> Result<(), String> {
        for id in &self.oracle.accepted {
            let states = self.disk.states_of(id);
            if states.len() != 1 || !states[0].is_final() {
                return Err(format!("after the drain, {id} is in {states:?}, not final"));
            }
        }
        let t = self.table.borrow();
        if let Some(h) = t
            .mem
            .held()
            .iter()
            .find(|(_, h)| matches!(h, HeldBy::Task(_)))
        {
            return Err(format!("after the drain, a lock is still held: {h:?}"));
        }
        Ok(())
    }
}

/// The program of session `name` is gone; what it was running.
fn program_gone(d: &mut Daemon, name: &str) -> Option<Run> {
    d.slots
        .get_mut(name)
        .and_then(|s| s.program.take())
        .and_then(|p| p.run)
}

/// The locks a task needs (`resources_for`): `main` is protected.
fn resources(spec: &TaskSpec) -> Result<Vec<Resource>, String> {
    let Some(l) = &spec.locks else {
        return Ok(Vec::new());
    };
    if l.branch.as_deref() == Some("main") {
        return Err("/locks/branch: main is a protected branch".into());
    }
    let mut v: Vec<Resource> = l.branch.iter().cloned().map(Resource::Branch).collect();
    v.extend(l.paths.iter().cloned().map(Resource::Path));
    Ok(v)
}

fn nth(set: &BTreeSet<String>, i: u64) -> Option<String> {
    set.iter()
        .nth(usize::try_from(i).unwrap_or(usize::MAX))
        .cloned()
}

fn show_effect(e: &Effect) -> String {
    match e {
        Effect::Write { dir, record } => {
            format!(
                "write {}/{} (state {:?})",
                dir.dir(),
                record.id,
                record.state
            )
        }
        Effect::Move { id, from, to } => format!("move {id} {} → {}", from.dir(), to.dir()),
        Effect::Remove { id, dir } => format!("remove {}/{id}", dir.dir()),
        Effect::Run {
            session,
            task_id,
            attempt,
        } => format!("run {task_id} on {session} (attempt {attempt})"),
        Effect::Interrupt { session, task_id } => format!("interrupt {task_id} on {session}"),
        Effect::Log { task_id, body, .. } => format!(
            "log {} {} {}",
            body.kind(),
            task_id.as_deref().unwrap_or("-"),
            body.data().map(|v| v.to_string()).unwrap_or_default()
        ),
    }
}
