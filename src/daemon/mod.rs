//! The daemon: one scheduler loop that owns the spool's state directories on this node.
//!
//! ```text
//!  notify (inbox/, control/, config/) ──hints──┐
//!  session threads (one per PTY) ──events──────┼──> scheduler loop ──> spool renames, event log,
//!  timers (retry backoff, restarts, 30 s listing)┘                     sessions/<name>.json
//! ```
//! The loop is the only writer of `pending/`, `active/`, `done/`, `failed/`,
//! `cancelled/`, `rejected/` and `sessions/` on this node. It reacts to a batch of inputs,
//! then dispatches queued tasks to idle sessions, then carries out the pass's record
//! writes and renames together ([`crate::durable::WriteBatch`]: every temp file
//! `fsync`ed, then published in order, then one `fsync` per directory): a group commit
//! whose size grows with the load.

mod attach;
mod control;
mod fleet;
mod sessions;
mod tasks;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fs2::FileExt;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::durable;
use crate::error::{Error, Result};
use crate::log::{event, EventLog};
use crate::scheduler::{Input, Scheduler, Settings};
use crate::session::runner::SessionMessage;
use crate::spool::Spool;
use sessions::SessionSlot;
use tasks::FlockTable;
use watch::Hint;

/// How to run a daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Spool root.
    pub spool: PathBuf,
    /// Config directory.
    pub config: PathBuf,
}

/// The lock that keeps a second daemon off the same spool directory, whatever its node
/// name (`locks/daemon.lock`, an fs2 exclusive lock, close-on-exec): two daemons on one
/// spool would both claim its tasks. Released when the process exits, however it exits.
/// (Nodes that share a spool through a syncer are the multi-node design's business.)
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
}

/// Path of the daemon lock file.
#[must_use]
pub fn lock_path(spool: &Spool) -> PathBuf {
    spool.dir("locks").join("daemon.lock")
}

/// `pid 123 (node n1)` from the lock file's `123 n1`.
fn describe_holder(content: &str) -> String {
    let mut parts = content.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(pid), Some(node)) => format!("pid {pid} (node {node})"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process that has not written its pid yet".into(),
    }
}

/// How long a stopping daemon keeps trying the writes the disk refuses before it exits
/// without them.
const STOP_FLUSH_WAIT: Duration = Duration::from_secs(10);

/// How long a stopping daemon waits for notifications still being sent.
const NOTIFY_DRAIN_WAIT: Duration = Duration::from_secs(2);

/// How long a starting daemon waits for the daemon lock before it reports another daemon
/// running: long enough for a `kill -9`ed predecessor to finish exiting.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl DaemonLock {
    /// Takes the lock and writes our pid into the file, waiting up to 5 s (`LOCK_WAIT`)
    /// for a holder to exit.
    ///
    /// # Errors
    /// [`Error::DaemonRunning`] with the holder's pid when it is still held after that.
    pub fn acquire(spool: &Spool, node: &str) -> Result<Self> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = lock_path(spool);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A symlink planted at the lock file is refused, never followed (and truncated).
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("opening daemon lock", &path, e))?;
        // A predecessor that was just killed may still be exiting (its descriptors, the
        // lock among them, close late in its exit): wait a little before giving up.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut told = false;
        while FileExt::try_lock_exclusive(&file).is_err() {
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            if std::time::Instant::now() >= deadline {
                return Err(Error::DaemonRunning(format!(
                    "lock {} held by {} for {} s (one daemon per spool directory)",
                    path.display(),
                    describe_holder(&holder),
                    LOCK_WAIT.as_secs()
                )));
            }
            if !told {
                told = true;
                tracing::warn!(
                    "the daemon lock {} is held by {}; waiting up to {} s for it to exit",
                    path.display(),
                    describe_holder(&holder),
                    LOCK_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{} {node}", std::process::id());
        Ok(Self { _file: file })
    }

    /// Whether some process holds the daemon lock: its `pid node` (used by the CLI's
    /// `status`).
    #[must_use]
    pub fn is_held(spool: &Spool) -> Option<String> {
        let path = lock_path(spool);
        let file = File::open(&path).ok()?;
        if FileExt::try_lock_shared(&file).is_ok() {
            let _ = FileExt::unlock(&file);
            return None;
        }
        Some(
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    }
}

/// The scheduler's state.
pub(crate) struct Daemon {
    spool: Spool,
    config: Config,
    log: Arc<EventLog>,
    /// Every decision about tasks: their states, the queue, dependencies, retries, locks.
    sched: Scheduler<FlockTable>,
    /// Tasks claimed for a session, sent once their claim is durable: (session, task,
    /// attempt).
    runs_waiting: Vec<(String, String, u32)>,
    sessions: BTreeMap<String, SessionSlot>,
    session_tx: mpsc::UnboundedSender<SessionMessage>,
    next_generation: u64,
    /// Inbox files found by a listing, not yet still for `inbox_settle_ms`: name → first seen.
    settling: HashMap<String, Instant>,
    /// When to look at `settling` again.
    settle_check_at: Option<Instant>,
    /// Sessions whose state file needs rewriting, and when.
    dirty_sessions: HashSet<String>,
    sessions_flush_at: Option<Instant>,
    /// Conflict copies already reported.
    conflicts: HashSet<String>,
    /// A request waits for the batch (`process_control` is run again once it is through).
    control_waiting: bool,
    /// Writes and renames of this pass, carried out together at its end (group commit).
    batch: durable::WriteBatch,
    /// Live tasks whose prompt is longer than [`tasks::PROMPT_IN_MEMORY_MAX`], waiting for
    /// their file to be durable so the prompt can leave memory.
    prompts_to_drop: Vec<String>,
    /// Live tasks whose prompt is not held in memory (`record.task.prompt` is empty): it
    /// is read from the task's file when needed (dispatch, a record rewrite).
    prompts_on_disk: HashSet<String>,
    next_reconcile: Instant,
    config_reload_at: Option<Instant>,
    shutting_down: bool,
    /// Control files that could not be claimed (so not applied), said once each.
    unremovable_control: HashSet<String>,
    /// Intake waits while the disk refuses writes ([`durable::WriteBatch::stalled`]): since
    /// when.
    intake_paused: Option<Instant>,
    /// The command policy every session's auto-confirm uses.
    approvals: crate::session::approval::Approvals,
    /// Providers config, log and breakers for provider sessions.
    llm: std::sync::Arc<crate::session::provider::LlmContext>,
    /// This node's heartbeat and view of the fleet, when `nodes.toml` lists several nodes.
    fleet: Option<fleet::FleetShell>,
    /// Where the sessions' terminals are recorded (`recordings/`).
    recorder: crate::record::recorder::Recorder,
    /// `config/notify.toml`'s rules, applied to every event `log` writes.
    notify: Arc<crate::notify::Notifications>,
    /// The last id given to an attach or watch client.
    next_client: u64,
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
/// Start-up failures: an invalid config, an unwritable spool, another daemon on the same
/// spool and node, a watcher that cannot start.
pub async fn run(opts: DaemonOptions) -> Result<()> {
    let config = Config::load(&opts.config)?;
    // In a fleet, this node's states live under nodes/<node>/ (docs/multi-node.md).
    let spool = if config.nodes.is_fleet() {
        Spool::for_node(&opts.spool, &config.node)
    } else {
        Spool::new(&opts.spool)
    };
    spool.init()?;
    let _lock = DaemonLock::acquire(&spool, &config.node)?;
    let log =
        Arc::new(EventLog::new(spool.dir("log"), config.node.clone()).with_settings(config.log));
    // ARCHITECT_WATCH_CHANNEL shrinks the channel so tests can force the overflow path.
    let capacity = std::env::var("ARCHITECT_WATCH_CHANNEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(watch::CHANNEL_CAPACITY);
    let (hint_tx, mut hint_rx) = mpsc::channel(capacity);
    let watcher = watch::start(&spool.inbox(), &spool.dir("control"), &config.dir, hint_tx)?;
    let (session_tx, mut session_rx) = mpsc::unbounded_channel();
    let (attach_tx, mut attach_rx) = mpsc::unbounded_channel();
    // Attach and watch go through a node-local socket; a daemon that cannot open it
    // runs without them (and says so).
    let attach_server = match crate::attach::socket_path(&spool)
        .and_then(|p| crate::attach::server::AttachServer::start(&p, attach_tx))
    {
        Ok(s) => {
            tracing::info!(socket = %s.path().display(), "attach socket listening");
            Some(s)
        }
        Err(e) => {
            tracing::error!("attach socket not opened, `architect attach` will not work: {e}");
            None
        }
    };
    let notify = crate::notify::Notifications::start(
        &log,
        crate::notify::Rules::load(&config.dir)?,
        session_profiles(&config),
    );
    log.record(
        None,
        None,
        event::DaemonStarted {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            spool: spool.root().display().to_string(),
            config: config.dir.display().to_string(),
        },
    );
    tracing::info!(node = %config.node, spool = %spool.root().display(), "daemon started");
    let spool_locks = spool.dir("locks");
    let llm = std::sync::Arc::new(crate::session::provider::LlmContext {
        providers: crate::llm::ProvidersFile::load(&config.dir)?,
        log: log.clone(),
        breakers: spool.dir("providers"),
        budget: crate::llm::budget::Ledger::new(spool.dir("providers"), spool.dir("log")),
    });
    let approvals = crate::session::approval::Approvals {
        policy: std::sync::Arc::new(crate::policy::Policy::load(&config.dir)?),
        protected_branches: config.git.protected_branches.clone(),
    };
    // Dropped last: after the sessions, so their last output is written.
    let recorder_thread = crate::record::recorder::RecorderThread::start(
        spool.dir(crate::record::DIR),
        config.recording,
    )
    .map_err(|e| Error::io("starting the recorder thread", "", e))?;
    let sched = Scheduler::new(
        Settings {
            node: config.node.clone(),
            retry_backoff_ms: config.daemon.retry_backoff_ms,
            retry_backoff_max_ms: config.daemon.retry_backoff_max_ms,
        },
        FlockTable {
            table: crate::locks::LockTable::new(spool_locks),
            node: config.node.clone(),
            fleet_gate: std::sync::Arc::default(),
        },
    );
    let mut d = Daemon {
        next_reconcile: Instant::now() + Duration::from_millis(config.daemon.reconcile_interval_ms),
        spool,
        config,
        log,
        sched,
        runs_waiting: Vec::new(),
        sessions: BTreeMap::new(),
        session_tx,
        next_generation: 0,
        settling: HashMap::new(),
        settle_check_at: None,
        dirty_sessions: HashSet::new(),
        sessions_flush_at: None,
        conflicts: HashSet::new(),
        control_waiting: false,
        batch: durable::WriteBatch::default(),
        prompts_to_drop: Vec::new(),
        prompts_on_disk: HashSet::new(),
        config_reload_at: None,
        shutting_down: false,
        intake_paused: None,
        unremovable_control: HashSet::new(),
        approvals,
        llm,
        fleet: None,
        recorder: recorder_thread.recorder(),
        notify,
        next_client: 0,
    };
    d.fleet = fleet::FleetShell::for_config(&d.config, &d.spool);
    d.wait_for_fleet_view().await;
    d.stand_down_adopted();
    d.recover()?;
    // Before any session starts: stand down from what another node adopted from this
    // one while it was away, and take up the fleet's hand-offs.
    d.beat();
    d.unclaim_control();
    d.reconcile_worktrees();
    d.apply_sessions(true);
    d.reconcile();
    d.process_control();
    d.dispatch();
    d.sync_dirs();

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("installing SIGTERM handler", "", e))?;
    loop {
        let wait = d.next_deadline().saturating_duration_since(Instant::now());
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            Some(msg) = session_rx.recv() => {
                d.on_session_message(msg);
                while let Ok(msg) = session_rx.try_recv() {
                    d.on_session_message(msg);
                }
            }
            Some(req) = attach_rx.recv() => d.on_attach_request(req),
            Some(hint) = hint_rx.recv() => {
                let mut hints = vec![hint];
                while let Ok(h) = hint_rx.try_recv() {
                    hints.push(h);
                }
                d.on_hints(hints);
            }
            () = tokio::time::sleep(wait) => {}
        }
        if watcher.overflowed.swap(false, Ordering::SeqCst) {
            tracing::warn!("watch channel overflowed; listing the spool");
            d.reconcile();
        }
        d.on_timers();
        d.dispatch();
        d.sync_dirs();
    }
    // No new client while the sessions stop.
    drop(attach_server);
    d.shutdown(&mut session_rx).await;
    drop(watcher);
    drop(d);
    drop(recorder_thread);
    Ok(())
}

/// Each configured session's profile, by session name (for `[[notify]]` rules'
/// `profiles` filters).
fn session_profiles(config: &Config) -> std::collections::HashMap<String, String> {
    config
        .sessions
        .iter()
        .map(|s| (s.spec.name.clone(), s.spec.profile.clone()))
        .collect()
}

impl Daemon {
    /// At start-up, before any session runs: cleans up the worktrees (and empty session
    /// branches) that a crash or a removed session left in each repository.
    fn reconcile_worktrees(&mut self) {
        let mut by_repo: BTreeMap<std::path::PathBuf, Vec<String>> = BTreeMap::new();
        for s in self
            .config
            .sessions
            .iter()
            .filter(|s| self.config.runs_here(s))
        {
            if let Some(repo) = &s.repo {
                by_repo
                    .entry(repo.clone())
                    .or_default()
                    .push(s.spec.name.clone());
            }
        }
        for (repo, live) in by_repo {
            let m = crate::worktree::WorktreeManager::from_settings(&repo, &self.config.git);
            match m.reconcile(&live) {
                Ok(r) if r.changed() => {
                    tracing::info!(repo = %repo.display(), "worktrees reconciled: {r:?}");
                    self.log.record(
                        None,
                        None,
                        event::WorktreesReconciled {
                            repo: repo.display().to_string(),
                            result: r,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(repo = %repo.display(), "reconciling worktrees: {e}"),
            }
        }
    }

    fn node(&self) -> &str {
        &self.config.node
    }

    /// Carries out this pass's writes and renames (one round of `fsync`s for all): they
    /// are published, the tasks whose claim is now on disk go to their sessions, and then
    /// the round is made durable ([`WriteBatch::publish`], [`WriteBatch::sync`]).
    ///
    /// A run waits for the claim's rename and for nothing else: a crash of the daemon
    /// cannot undo a rename that is done, and a power loss that undoes it also ends the
    /// run (the task is then still in the inbox or `pending/`, and runs again). Sessions
    /// whose profile submits at most once wait for the sync too.
    ///
    /// A durable batch can release work (the dependents of tasks whose final state it
    /// made durable): that is dispatched and carried out at once, round after round,
    /// until a round releases nothing.
    ///
    /// [`WriteBatch::publish`]: crate::durable::WriteBatch::publish
    /// [`WriteBatch::sync`]: crate::durable::WriteBatch::sync
    fn sync_dirs(&mut self) {
        while !self.batch.is_empty() {
            let mut errors = self.batch.publish();
            if !self.runs_waiting.is_empty() {
                self.send_claimed();
            }
            errors.extend(self.batch.sync());
            for e in &errors {
                tracing::error!("{e}");
            }
            let durable = errors.is_empty();
            if durable {
                self.decide(Input::Flushed);
            }
            self.drop_durable_prompts();
            self.pause_intake_while_the_disk_refuses(errors.first().map(ToString::to_string));
            if !durable {
                break;
            }
            self.dispatch();
        }
        if !self.runs_waiting.is_empty() {
            self.send_claimed();
        }
    }

    /// While the batch keeps writes the disk refused, intake takes no new file (they wait
    /// in the inbox); once they are through, the inbox is listed again.
    fn pause_intake_while_the_disk_refuses(&mut self, first_error: Option<String>) {
        match (self.batch.stalled(), self.intake_paused) {
            (true, None) => {
                self.intake_paused = Some(Instant::now());
                let error = first_error.unwrap_or_default();
                tracing::error!(
                    "the disk refuses the spool's writes ({error}): intake paused; the writes \
                     are tried again with backoff, nothing is lost"
                );
                self.log.record(
                    None,
                    None,
                    event::IntakePaused {
                        error,
                        kept: self.batch.queued_ops() as u64,
                    },
                );
            }
            (false, Some(since)) => {
                self.intake_paused = None;
                tracing::warn!("the spool's writes went through: intake resumed");
                self.log.record(
                    None,
                    None,
                    event::IntakeResumed {
                        paused_ms: u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    },
                );
                self.reconcile();
            }
            _ => {}
        }
    }

    fn on_hints(&mut self, hints: Vec<Hint>) {
        let mut rescan = false;
        let mut control = false;
        for h in hints {
            match h {
                // A created file is read when it is closed (or renamed in): the close
                // event follows. Files whose close event is lost are found by the listing.
                Hint::Inbox { name, complete } => {
                    if complete {
                        self.settling.remove(&name);
                        self.ingest(&name);
                    }
                }
                Hint::Control => control = true,
                Hint::Config => {
                    self.config_reload_at = Some(Instant::now() + Duration::from_millis(200));
                }
                Hint::Rescan => rescan = true,
            }
        }
        if rescan {
            self.reconcile();
        }
        if control || rescan {
            self.process_control();
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.next_reconcile;
        if let Some(at) = self.sched.next_deadline() {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            next = next.min(Instant::now() + wait);
        }
        if let Some(at) = self.config_reload_at {
            next = next.min(at);
        }
        if let Some(at) = self.batch.retry_at() {
            next = next.min(at);
        }
        if let Some(at) = self.settle_check_at {
            next = next.min(at);
        }
        if let Some(at) = self.sessions_flush_at {
            next = next.min(at);
        }
        if let Some(f) = &self.fleet {
            next = next.min(f.next_beat);
        }
        for slot in self.sessions.values() {
            if let Some(at) = slot.restart_at {
                next = next.min(at);
            }
        }
        next
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if now >= self.next_reconcile {
            self.next_reconcile =
                now + Duration::from_millis(self.config.daemon.reconcile_interval_ms);
            self.reconcile();
            self.process_control();
        } else if self.control_waiting && !self.batch.stalled() {
            self.process_control();
        }
        if self.config_reload_at.is_some_and(|at| now >= at) {
            self.config_reload_at = None;
            self.reload_config();
        }
        if self.settle_check_at.is_some_and(|at| now >= at) {
            self.check_settling();
        }
        if self.sessions_flush_at.is_some_and(|at| now >= at) {
            self.flush_session_files();
        }
        if self
            .sched
            .next_deadline()
            .is_some_and(|at| at <= Utc::now())
        {
            self.decide(Input::Tick);
        }
        self.restart_due_sessions(now);
        if self.fleet.as_ref().is_some_and(|f| now >= f.next_beat) {
            self.beat();
        }
    }

    /// Lists the inbox: every complete-looking task file is ingested, younger files wait
    /// in `settling` until they have been still for `inbox_settle_ms`.
    fn reconcile(&mut self) {
        let inbox = self.spool.inbox();
        let entries = match std::fs::read_dir(&inbox) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("listing {}: {e}", inbox.display());
                return;
            }
        };
        let mut names: Vec<String> = Vec::new();
        for e in entries.filter_map(std::result::Result::ok) {
            match e.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(raw) => self.reject_unnamed(&raw),
            }
        }
        names.sort();
        for name in names {
            self.settling.entry(name).or_insert_with(Instant::now);
        }
        self.check_settling();
    }

    /// An inbox file whose name is not UTF-8 cannot be named in events, records or JSON:
    /// it goes to `rejected/` under a safe name, with the reason.
    fn reject_unnamed(&mut self, raw: &std::ffi::OsStr) {
        let shown = raw.to_string_lossy().into_owned();
        if crate::spool::classify_inbox_name(&shown) == crate::spool::InboxName::Ignored {
            return;
        }
        let safe = format!("{}.name-not-utf8", ulid::Ulid::new());
        let errors = vec![crate::spool::task::Violation {
            path: String::new(),
            message: format!(
                "the file name is not UTF-8 ({shown:?} with the invalid bytes replaced); \
                 task file names must be UTF-8"
            ),
        }];
        let from = self.spool.inbox().join(raw);
        if self.batch.holds(&from) {
            return; // its rejection is in flight
        }
        let filed = self.spool.reject_file(
            &mut self.batch,
            &from,
            &shown,
            Some(&safe),
            &self.config.node,
            errors.clone(),
        );
        self.report_rejection(&shown, errors, filed);
    }

    /// Ingests settling files whose mtime is older than `inbox_settle_ms`.
    /// Files are taken in the order of the best evidence of their arrival: modification
    /// time (full resolution), then change time, then name — so tasks found by a listing
    /// keep the order they were written in even when their mtimes are equal (a producer
    /// that sets mtimes, or writes within one clock tick).
    fn check_settling(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let settle = Duration::from_millis(self.config.daemon.inbox_settle_ms);
        let inbox = self.spool.inbox();
        let mut ready = Vec::new();
        let names: Vec<String> = self.settling.keys().cloned().collect();
        for name in names {
            let Ok(meta) = inbox.join(&name).symlink_metadata() else {
                self.settling.remove(&name);
                continue;
            };
            let mtime = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            if mtime.elapsed().map_or(true, |age| age >= settle) {
                self.settling.remove(&name);
                let ctime = (meta.ctime(), meta.ctime_nsec());
                ready.push((mtime, ctime, name));
            }
        }
        ready.sort();
        for (_, _, name) in ready {
            self.ingest(&name);
        }
        self.settle_check_at = (!self.settling.is_empty()).then(|| {
            Instant::now()
                + Duration::from_millis(self.config.daemon.inbox_settle_ms.clamp(10, 500) / 2)
        });
    }

    async fn shutdown(&mut self, session_rx: &mut mpsc::UnboundedReceiver<SessionMessage>) {
        tracing::info!("stopping: ending sessions, returning running tasks to pending/");
        self.shutting_down = true;
        self.decide(Input::Stopping);
        for slot in self.sessions.values_mut() {
            slot.stop();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while self.sessions.values().any(|s| s.handle.is_some()) {
            match tokio::time::timeout_at(deadline, session_rx.recv()).await {
                Ok(Some(msg)) => self.on_session_message(msg),
                _ => break,
            }
        }
        self.flush_session_files();
        self.sync_dirs();
        // Operations the disk refuses are tried again for a while: exiting with them would
        // drop decisions already made and logged (a task failed so that its prompt never
        // runs twice, a completion), as a crash does.
        let give_up = tokio::time::Instant::now() + STOP_FLUSH_WAIT;
        while !self.batch.is_empty() && tokio::time::Instant::now() < give_up {
            if self.batch.stalled() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.sync_dirs();
        }
        if !self.batch.is_empty() {
            tracing::error!(
                "stopping with writes the disk refused for {} s: the next start recovers \
                 the tasks concerned as after a crash",
                STOP_FLUSH_WAIT.as_secs()
            );
        }
        // The last notifications (a task that failed as the daemon stopped) get a moment.
        if !self.notify.drain(NOTIFY_DRAIN_WAIT).await {
            tracing::warn!(
                "stopping with notifications still being sent after {} s; they are dropped",
                NOTIFY_DRAIN_WAIT.as_secs()
            );
        }
        self.log.record(
            None,
            None,
            event::DaemonStopped {
                pid: std::process::id(),
            },
        );
    }
}
