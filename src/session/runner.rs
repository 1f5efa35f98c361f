//! One session: a program in a pseudo-terminal, driven by a thread.
//!
//! The thread owns the terminal. It spawns the program through `expectrl` (its own
//! session and process group, a set window size), feeds everything it prints into a
//! [`Screen`], answers terminal queries, reads the state off the rendered screen with the
//! profile's regexes, submits prompts (type, pause, Enter, check the screen changed),
//! recognises completion (busy → idle, unchanged for the debounce), enforces the task's
//! timeout, and reports [`SessionEvent`]s to the scheduler. It waits in `poll(2)` on the
//! terminal and on a wake-up socket, so a new command is picked up at once.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use expectrl::process::Process as _;
use serde::{Deserialize, Serialize};

use super::approval::{decide, Approvals, DecidedBy, Question};
use super::screen::Screen;
use crate::config::ResolvedSession;
use crate::policy::{Decision, Verdict};
use crate::profile::{Profile, ResultSource, ScreenState, SubmitMode};
use crate::spool::task::TaskResult;

/// Most transcript bytes kept for one task (the tail is kept), 1 MiB.
const TRANSCRIPT_LIMIT: usize = 1024 * 1024;

/// A session's state, as written to `sessions/<name>.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The program is starting (first-run screens are being answered).
    Starting,
    /// Ready for a task.
    Idle,
    /// Working on a task.
    Busy,
    /// Showing a question that must be answered.
    WaitingInput,
    /// The program is not running (it exited, or is waiting to be restarted).
    Dead,
}

impl SessionState {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::WaitingInput => "waiting_input",
            Self::Dead => "dead",
        }
    }
}

/// A task handed to a session.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Task id.
    pub task_id: String,
    /// The task's branch (`locks.branch`): a worktree session switches its worktree to
    /// it before the prompt, and back to its own branch after the task.
    pub branch: Option<String>,
    /// For a provider session: only this provider.
    pub provider: Option<String>,
    /// For a provider session: only providers serving this model.
    pub model: Option<String>,
    /// For a provider session: route by complexity.
    pub complexity: Option<crate::llm::Complexity>,
    /// The task's role (for `[routing.classify]`).
    pub role: Option<String>,
    /// Prompt text.
    pub prompt: String,
    /// How long the attempt may run.
    pub timeout: Duration,
}

/// Why a running task is interrupted on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptReason {
    /// `architect cancel`.
    Cancelled,
}

/// What the scheduler asks of a session.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run a task (the session must be idle).
    Run(Assignment),
    /// Interrupt the running task.
    Interrupt(InterruptReason),
    /// Type text (then Enter if asked) whatever the state.
    Send {
        /// Text.
        text: String,
        /// Send Enter after a pause.
        enter: bool,
    },
    /// Answer the permission question waiting for a person (`architect approve|deny`):
    /// the `[[permission]]` rule's `yes` or `no` key.
    Answer {
        /// Yes (approve) or no (deny).
        approve: bool,
    },
    /// Use this policy from now on (config/policy.toml changed).
    SetApprovals(Approvals),
    /// Stop the program (kill its process group) and end the thread.
    Stop,
}

/// How a task's run on a session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// The agent finished.
    Completed(TaskResult),
    /// The agent finished, reporting failure (non-zero exit status).
    Failed(TaskResult, String),
    /// The timeout passed; the program was interrupted (or killed).
    TimedOut,
    /// Interrupted because the task was cancelled.
    Cancelled,
    /// The session was not ready when the task arrived; nothing was typed.
    NotStarted(String),
    /// The prompt was typed but the program never showed its busy screen within the
    /// profile's `done.busy_timeout_ms` (it swallowed the prompt); interrupted.
    NotTaken(String),
}

/// What a session reports.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// The program was started.
    Started {
        /// Its pid (= its process group id).
        pid: u32,
    },
    /// The state read off the screen changed.
    State(SessionState),
    /// The prompt's first byte was written to the terminal.
    PromptSent {
        /// Task id.
        task_id: String,
        /// When the write of the prompt's first byte began.
        written_at: chrono::DateTime<chrono::Utc>,
    },
    /// The task ended.
    Finished {
        /// Task id.
        task_id: String,
        /// How.
        outcome: RunOutcome,
    },
    /// A permission question was answered, by the policy or by a person.
    Permission {
        /// The task running.
        task_id: Option<String>,
        /// The question.
        question: Question,
        /// Allow or deny (what was typed).
        decision: Decision,
        /// The policy rule (or `person`).
        rule: String,
        /// Why.
        reason: String,
        /// Who decided.
        by: DecidedBy,
    },
    /// A permission question waits for `architect approve|deny`.
    ApprovalNeeded {
        /// The task running.
        task_id: Option<String>,
        /// The question.
        question: Question,
        /// The policy's verdict (escalate) and its rule.
        verdict: Verdict,
    },
    /// A worktree session's worktree was made ready (created, switched, work saved).
    Worktree(crate::worktree::Prepared),
    /// An answer from a person could not be given (no question waiting).
    AnswerRefused {
        /// Why.
        reason: String,
    },
    /// The program is gone; the thread has ended.
    Exited {
        /// Exit status text ("exit 0", "signal 9", "did not start: …").
        status: String,
        /// Whether it was stopped on request (not a crash).
        requested: bool,
    },
}

/// A session event with the session's name and the generation of its program.
#[derive(Debug, Clone)]
pub struct SessionMessage {
    /// Session name.
    pub session: String,
    /// Incremented on every (re)start; events from an older generation are stale.
    pub generation: u64,
    /// The event.
    pub event: SessionEvent,
}

/// The scheduler's side of a running session.
#[derive(Debug)]
pub struct SessionHandle {
    commands: mpsc::Sender<Command>,
    wake: UnixStream,
    /// The generation this handle drives.
    pub generation: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SessionHandle {
    /// Sends a command and wakes the session thread.
    pub fn send(&self, cmd: Command) {
        if self.commands.send(cmd).is_ok() {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where events go: a sink the scheduler drains.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<SessionMessage>;

/// Starts a session thread, which spawns the program. Start-up failures arrive as
/// [`SessionEvent::Exited`].
///
/// # Errors
/// When the wake-up socket pair or the thread cannot be created.
pub fn start(
    cfg: ResolvedSession,
    generation: u64,
    events: EventSink,
    approvals: Approvals,
    llm: Arc<super::provider::LlmContext>,
) -> std::io::Result<SessionHandle> {
    let (tx, rx) = mpsc::channel();
    let (wake_w, wake_r) = UnixStream::pair()?;
    wake_w.set_nonblocking(true)?;
    wake_r.set_nonblocking(true)?;
    let name = cfg.spec.name.clone();
    let thread = std::thread::Builder::new()
        .name(format!("session-{name}"))
        .spawn(move || {
            if cfg.spec.kind == crate::config::SessionKind::Provider {
                super::provider::run(&cfg.spec.name, generation, &events, &rx, &llm);
                return;
            }
            let mut runner = Runner::new(cfg, generation, events, rx, wake_r, approvals);
            runner.run();
        })?;
    Ok(SessionHandle {
        commands: tx,
        wake: wake_w,
        generation,
        thread: Some(thread),
    })
}

/// Finds a program: a path as given, a bare name in `PATH`, then beside the running
/// executable (so `fake-agent` is found next to `architect`).
#[must_use]
pub fn resolve_command(command: &str) -> PathBuf {
    if command.contains('/') {
        return PathBuf::from(command);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(command);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for d in [Some(dir), dir.parent()].into_iter().flatten() {
                let candidate = d.join(command);
                if is_executable(&candidate) {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from(command)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the session is doing with the current task.
#[derive(Debug)]
enum Phase {
    /// No task.
    Free,
    /// Text typed; Enter goes at `enter_at`.
    Typed { enter_at: Instant },
    /// Enter sent; waiting for the screen to change.
    Submitted {
        before: String,
        at: Instant,
        resent: bool,
    },
    /// Working; done when idle and unchanged for the debounce.
    Running {
        saw_busy: bool,
        changed: bool,
        before: String,
    },
    /// Interrupt keys sent; waiting for idle until `kill_at`.
    Interrupting {
        kill_at: Instant,
        outcome: RunOutcome,
    },
}

struct Task {
    assignment: Assignment,
    deadline: Instant,
    /// When Enter was first pressed.
    entered_at: Option<Instant>,
    transcript: Vec<u8>,
    recording: bool,
}

struct Runner {
    cfg: ResolvedSession,
    profile: Profile,
    generation: u64,
    events: EventSink,
    commands: mpsc::Receiver<Command>,
    wake: UnixStream,
    screen: Screen,
    state: SessionState,
    last_output: Instant,
    screen_dirty: bool,
    screen_text: String,
    classified: Option<ScreenState>,
    startup_fired: Vec<u32>,
    /// The screen when a start-up rule last fired, and when.
    startup_fired_on: Option<(String, Instant)>,
    started_at: Instant,
    task: Option<Task>,
    phase: Phase,
    queued_sends: VecDeque<(Instant, Vec<u8>)>,
    approvals: Approvals,
    /// The permission question on screen, once read.
    question: Option<OpenQuestion>,
    /// For `worktree = true`: the session's git worktree.
    worktrees: Option<crate::worktree::WorktreeManager>,
    /// The worktree is on a task's branch (switch back after the task).
    on_task_branch: bool,
}

/// A permission question that has been read off the screen.
struct OpenQuestion {
    question: Question,
    /// Index of the profile's `[[permission]]` rule.
    index: usize,
    /// When its answer was typed, and the screen then (`None`: waiting for a person).
    answered: Option<(Instant, String)>,
}

/// How long the screen must be still before a permission question is read (the dialog
/// must be drawn in full: a half-drawn command must never be judged).
const QUESTION_SETTLE: Duration = Duration::from_millis(150);
/// The same question still on screen this long after its answer counts as asked again.
const QUESTION_REASK: Duration = Duration::from_millis(1500);

impl Runner {
    fn new(
        cfg: ResolvedSession,
        generation: u64,
        events: EventSink,
        commands: mpsc::Receiver<Command>,
        wake: UnixStream,
        approvals: Approvals,
    ) -> Self {
        let profile = cfg.profile.clone();
        let cfg_worktrees = cfg
            .repo
            .as_ref()
            .map(|r| crate::worktree::WorktreeManager::from_settings(r, &cfg.git));
        let t = profile.spec.terminal;
        let rules = profile.startup_rules.len();
        Self {
            cfg,
            screen: Screen::new(t.rows, t.cols),
            profile,
            generation,
            events,
            commands,
            wake,
            state: SessionState::Starting,
            last_output: Instant::now(),
            screen_dirty: true,
            screen_text: String::new(),
            classified: None,
            startup_fired: vec![0; rules],
            startup_fired_on: None,
            started_at: Instant::now(),
            task: None,
            phase: Phase::Free,
            queued_sends: VecDeque::new(),
            approvals,
            question: None,
            worktrees: cfg_worktrees,
            on_task_branch: false,
        }
    }

    /// Puts the worktree on `branch` (the session's own branch when `None`), logging
    /// what was done. Blocking git commands, in this session's thread.
    fn prepare_worktree(&mut self, branch: Option<&str>) -> Result<(), String> {
        let Some(m) = &self.worktrees else {
            return Ok(());
        };
        match m.prepare(&self.cfg.spec.name, branch) {
            Ok(p) => {
                self.on_task_branch = branch.is_some();
                if p.created_worktree
                    || p.created_branch
                    || p.switched_from.is_some()
                    || p.saved.is_some()
                {
                    self.emit(SessionEvent::Worktree(p));
                }
                Ok(())
            }
            Err(e) => Err(format!("worktree: {e}")),
        }
    }

    /// Reports the end of the interrupted task (if any) with `outcome`.
    fn end_interrupted(&mut self, outcome: RunOutcome) {
        let task_id = self
            .task
            .take()
            .map(|t| t.assignment.task_id)
            .unwrap_or_default();
        self.emit_finished(task_id, outcome);
    }

    /// Reports a task's end; a worktree on the task's branch goes back to the session's
    /// own branch first (its work committed there), so the branch is free for the next
    /// holder of its lock.
    fn emit_finished(&mut self, task_id: String, outcome: RunOutcome) {
        if self.on_task_branch {
            if let Err(e) = self.prepare_worktree(None) {
                tracing::error!(session = %self.cfg.spec.name, "switching back: {e}");
            }
        }
        self.emit(SessionEvent::Finished { task_id, outcome });
    }

    /// Reads and decides the permission question on screen (called while a task runs and
    /// the screen reads `waiting_input`).
    fn handle_question(&mut self, pty: &mut File, now: Instant) {
        if now.duration_since(self.last_output) < QUESTION_SETTLE {
            return;
        }
        let Some(req) = self.profile.permission_request(&self.screen_text) else {
            return; // a question no rule describes: a person answers with `architect send`
        };
        let question = Question::from_request(&req);
        if let Some(open) = &self.question {
            let same = open.question == question;
            match &open.answered {
                // Waiting for a person: only a different question replaces it.
                None if same => return,
                // Answered: the program has not moved on yet, unless the screen changed and
                // shows another question (or the same one, asked again a while later).
                Some((at, screen)) => {
                    let moved_on = self.screen_text != *screen
                        && (!same || now.duration_since(*at) >= QUESTION_REASK);
                    if !moved_on {
                        return;
                    }
                }
                None => {}
            }
        }
        let home = self
            .cfg
            .env
            .get("HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        let verdict = decide(
            &self.approvals,
            &question,
            self.cfg.cwd.clone(),
            home,
            &self.profile.name,
        );
        let task_id = self.task.as_ref().map(|t| t.assignment.task_id.clone());
        let keys = &self.profile.spec.permission[req.index];
        let answered = match verdict.decision {
            Decision::Allow | Decision::Deny => {
                let key = if verdict.decision == Decision::Allow {
                    &keys.yes
                } else {
                    &keys.no
                };
                self.write(pty, key.as_bytes());
                self.emit(SessionEvent::Permission {
                    task_id,
                    question: question.clone(),
                    decision: verdict.decision,
                    rule: verdict.rule,
                    reason: verdict.reason,
                    by: DecidedBy::Policy,
                });
                Some((now, self.screen_text.clone()))
            }
            Decision::Escalate => {
                self.emit(SessionEvent::ApprovalNeeded {
                    task_id,
                    question: question.clone(),
                    verdict,
                });
                None
            }
        };
        self.question = Some(OpenQuestion {
            question,
            index: req.index,
            answered,
        });
    }

    /// `architect approve|deny`: types the waiting question's yes or no key.
    fn answer(&mut self, pty: &mut File, approve: bool) {
        let Some(open) = self.question.as_mut().filter(|q| q.answered.is_none()) else {
            self.emit(SessionEvent::AnswerRefused {
                reason: "no permission question is waiting for a person on this session".into(),
            });
            return;
        };
        let keys = &self.profile.spec.permission[open.index];
        let key = if approve { &keys.yes } else { &keys.no };
        let key = key.clone();
        open.answered = Some((Instant::now(), self.screen_text.clone()));
        let question = open.question.clone();
        self.write(pty, key.as_bytes());
        let task_id = self.task.as_ref().map(|t| t.assignment.task_id.clone());
        self.emit(SessionEvent::Permission {
            task_id,
            question,
            decision: if approve {
                Decision::Allow
            } else {
                Decision::Deny
            },
            rule: "person".into(),
            reason: format!(
                "{} with architect {}",
                if approve { "approved" } else { "denied" },
                if approve { "approve" } else { "deny" }
            ),
            by: DecidedBy::Person,
        });
    }

    /// The value of [`SESSION_MARKER`] for this program: session, generation, daemon pid.
    fn marker(&self) -> String {
        format!(
            "{}:{}:{}",
            self.cfg.spec.name,
            self.generation,
            std::process::id()
        )
    }

    fn emit(&self, event: SessionEvent) {
        let _ = self.events.send(SessionMessage {
            session: self.cfg.spec.name.clone(),
            generation: self.generation,
            event,
        });
    }

    fn set_state(&mut self, state: SessionState) {
        if self.state != state {
            // For operators diagnosing a profile: what the screen showed at the change
            // (tracing only; the event log never gets screen text).
            tracing::debug!(
                session = %self.cfg.spec.name,
                from = self.state.as_str(),
                to = state.as_str(),
                "state change; last screen rows:\n{}",
                last_rows(&self.screen_text, 4)
            );
            self.state = state;
            self.emit(SessionEvent::State(state));
        }
    }

    fn spawn(&self) -> std::io::Result<expectrl::process::unix::UnixProcess> {
        let program = resolve_command(&self.cfg.command);
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&self.cfg.args).current_dir(&self.cfg.cwd);
        if !self.cfg.env.contains_key("TERM") {
            cmd.env("TERM", "xterm-256color");
        }
        cmd.envs(&self.cfg.env);
        cmd.env(SESSION_MARKER, self.marker());
        let t = self.profile.spec.terminal;
        let size = libc::winsize {
            ws_row: t.rows,
            ws_col: t.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: runs in the forked child before exec; ioctl on the terminal (stdin) is
        // async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::ioctl(0, libc::TIOCSWINSZ, &size) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if !self.cfg.cwd.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "working directory {} does not exist",
                    self.cfg.cwd.display()
                ),
            ));
        }
        let mut proc = expectrl::process::unix::UnixProcess::spawn_command(cmd).map_err(|e| {
            std::io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
        })?;
        proc.set_terminate_delay(Duration::from_millis(5));
        let _ = proc.set_window_size(t.cols, t.rows);
        Ok(proc)
    }

    fn run(&mut self) {
        // A worktree session starts in its worktree, on its own branch.
        if let Err(e) = self.prepare_worktree(None) {
            self.emit(SessionEvent::Exited {
                status: format!("did not start: {e}"),
                requested: false,
            });
            return;
        }
        let proc = match self.spawn() {
            Ok(p) => p,
            Err(e) => {
                self.emit(SessionEvent::Exited {
                    status: format!("did not start: {e}"),
                    requested: false,
                });
                return;
            }
        };
        let pid = proc.pid().as_raw();
        let mut pty: File = match proc.get_raw_handle() {
            Ok(f) => f,
            Err(e) => {
                kill_group(pid);
                self.emit(SessionEvent::Exited {
                    status: format!("did not start: opening the terminal: {e}"),
                    requested: false,
                });
                return;
            }
        };
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(pty.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(pty.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        self.started_at = Instant::now();
        self.emit(SessionEvent::Started {
            pid: u32::try_from(pid).unwrap_or(0),
        });
        self.emit(SessionEvent::State(SessionState::Starting));
        if let Some(keys) = self.profile.spec.startup.send.clone() {
            self.write(&mut pty, keys.as_bytes());
        }
        let (status, requested) = self.drive(&mut pty, pid);
        drop(pty);
        kill_group(pid);
        // Processes that left the group (setsid, daemons such as `codex app-server`) still
        // carry the marker in their environment.
        kill_marked(&self.marker());
        drop(proc);
        // A task still running here is reported by the scheduler as "session died".
        self.state = SessionState::Dead;
        self.emit(SessionEvent::Exited { status, requested });
    }

    /// The main loop. Returns the exit status text and whether the stop was requested.
    fn drive(&mut self, pty: &mut File, pid: i32) -> (String, bool) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_reap = Instant::now();
        loop {
            let timeout = self.next_timeout();
            let mut fds = [
                libc::pollfd {
                    fd: pty.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            // SAFETY: fds is a valid array of two pollfd for the duration of the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return (format!("poll failed: {err}"), false);
                }
            }
            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match pty.read(&mut buf) {
                    Ok(0) => return (reap(pid), false),
                    Ok(n) => self.on_output(pty, n, &buf),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every slave descriptor is closed, the program is gone.
                    Err(_) => return (reap(pid), false),
                }
            }
            if fds[1].revents & libc::POLLIN != 0 {
                let mut sink = [0u8; 64];
                while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            }
            while let Ok(cmd) = self.commands.try_recv() {
                if matches!(cmd, Command::Stop) {
                    kill_group(pid);
                    return (reap(pid), true);
                }
                self.on_command(pty, cmd);
            }
            if let Err(status) = self.tick(pty, pid) {
                return (status, false);
            }
            if last_reap.elapsed() > Duration::from_millis(250) {
                last_reap = Instant::now();
                if let Some(status) = try_reap(pid) {
                    return (status, false);
                }
            }
        }
    }

    fn on_output(&mut self, pty: &mut File, n: usize, buf: &[u8]) {
        let replies = self.screen.feed(&buf[..n]);
        if !replies.is_empty() {
            self.write(pty, &replies);
        }
        if let Some(task) = self.task.as_mut() {
            if task.recording {
                task.transcript.extend_from_slice(&buf[..n]);
                if task.transcript.len() > TRANSCRIPT_LIMIT {
                    let cut = task.transcript.len() - TRANSCRIPT_LIMIT;
                    task.transcript.drain(..cut);
                }
            }
        }
        self.last_output = Instant::now();
        self.screen_dirty = true;
    }

    fn write(&self, pty: &mut File, bytes: &[u8]) {
        let mut rest = bytes;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rest.is_empty() && Instant::now() < deadline {
            match pty.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(session = %self.cfg.spec.name, "writing to terminal: {e}");
                    return;
                }
            }
        }
    }

    fn prompt_bytes(&self, prompt: &str) -> Vec<u8> {
        match self.profile.spec.submit.mode {
            SubmitMode::Typed => prompt
                .replace("\r\n", "\n")
                .replace('\n', &self.profile.spec.submit.newline)
                .into_bytes(),
            SubmitMode::BracketedPaste => {
                let mut v = b"\x1b[200~".to_vec();
                v.extend_from_slice(prompt.as_bytes());
                v.extend_from_slice(b"\x1b[201~");
                v
            }
        }
    }

    fn on_command(&mut self, pty: &mut File, cmd: Command) {
        match cmd {
            Command::Run(assignment) => {
                if self.task.is_some() || self.state != SessionState::Idle {
                    // The scheduler only assigns to idle sessions; refuse loudly otherwise.
                    self.emit(SessionEvent::Finished {
                        task_id: assignment.task_id,
                        outcome: RunOutcome::NotStarted(format!(
                            "session was {} when the task arrived",
                            self.state.as_str()
                        )),
                    });
                    return;
                }
                self.question = None;
                if let Some(branch) = assignment.branch.clone() {
                    if let Err(e) = self.prepare_worktree(Some(&branch)) {
                        self.emit_finished(
                            assignment.task_id,
                            RunOutcome::Failed(TaskResult::default(), e),
                        );
                        return;
                    }
                }
                let bytes = self.prompt_bytes(&assignment.prompt);
                let deadline = Instant::now() + assignment.timeout;
                let task_id = assignment.task_id.clone();
                self.task = Some(Task {
                    assignment,
                    deadline,
                    transcript: Vec::new(),
                    recording: false,
                    entered_at: None,
                });
                let written_at = chrono::Utc::now();
                self.write(pty, &bytes);
                self.emit(SessionEvent::PromptSent {
                    task_id,
                    written_at,
                });
                self.phase = Phase::Typed {
                    enter_at: Instant::now()
                        + Duration::from_millis(self.profile.spec.submit.pause_ms),
                };
                self.set_state(SessionState::Busy);
            }
            Command::Interrupt(reason) => {
                if self.task.is_some() {
                    let outcome = match reason {
                        InterruptReason::Cancelled => RunOutcome::Cancelled,
                    };
                    self.interrupt(pty, outcome);
                }
            }
            Command::Send { text, enter } => {
                self.write(pty, text.as_bytes());
                if enter {
                    let at =
                        Instant::now() + Duration::from_millis(self.profile.spec.submit.pause_ms);
                    self.queued_sends
                        .push_back((at, self.profile.spec.submit.enter.clone().into_bytes()));
                }
            }
            Command::Answer { approve } => self.answer(pty, approve),
            Command::SetApprovals(a) => self.approvals = a,
            Command::Stop => {}
        }
    }

    fn interrupt(&mut self, pty: &mut File, outcome: RunOutcome) {
        self.phase = self.interrupt_phase(pty, outcome);
    }

    /// Sends the interrupt keys; the phase that waits for idle (or kills).
    fn interrupt_phase(&self, pty: &mut File, outcome: RunOutcome) -> Phase {
        self.write(pty, self.profile.spec.interrupt.keys.as_bytes());
        Phase::Interrupting {
            kill_at: Instant::now() + Duration::from_millis(self.profile.spec.interrupt.grace_ms),
            outcome,
        }
    }

    /// How long `poll` may wait: until the nearest deadline still ahead (deadlines that
    /// have passed were handled by the last `tick`; waiting on them again would spin),
    /// at most 250 ms.
    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let debounce = Duration::from_millis(self.profile.spec.done.debounce_ms);
        let mut candidates: Vec<Instant> = Vec::with_capacity(6);
        match &self.phase {
            Phase::Free => {}
            Phase::Typed { enter_at } => candidates.push(*enter_at),
            Phase::Submitted { at, .. } => candidates
                .push(*at + Duration::from_millis(self.profile.spec.submit.confirm_timeout_ms)),
            Phase::Running { .. } => {
                candidates.push(self.last_output + debounce);
                if self.classified == Some(ScreenState::WaitingInput) {
                    candidates.push(self.last_output + QUESTION_SETTLE);
                }
                if let (Some(ms), Some(at)) = (
                    self.profile.spec.done.busy_timeout_ms,
                    self.task.as_ref().and_then(|t| t.entered_at),
                ) {
                    candidates.push(at + Duration::from_millis(ms));
                }
            }
            Phase::Interrupting { kill_at, .. } => {
                candidates.push(*kill_at);
                candidates.push(self.last_output + debounce);
            }
        }
        if let Some(task) = &self.task {
            candidates.push(task.deadline);
        }
        if let Some((at, _)) = self.queued_sends.front() {
            candidates.push(*at);
        }
        if self.state == SessionState::Starting {
            candidates.push(self.last_output + Duration::from_millis(50));
        }
        candidates
            .into_iter()
            .filter(|t| *t > now)
            .map(|t| t - now)
            .min()
            .unwrap_or(Duration::from_millis(250))
            .min(Duration::from_millis(250))
    }

    /// Re-reads the screen and advances the state machine. `Err` ends the session.
    fn tick(&mut self, pty: &mut File, pid: i32) -> Result<(), String> {
        let now = Instant::now();
        while self.queued_sends.front().is_some_and(|(at, _)| *at <= now) {
            let (_, bytes) = self.queued_sends.pop_front().expect("checked");
            self.write(pty, &bytes);
        }
        if self.screen_dirty {
            self.screen_dirty = false;
            self.screen_text = self.screen.text();
            self.classified = self.profile.classify(&self.screen_text);
        }
        if self.state == SessionState::Starting {
            return self.tick_starting(pty);
        }
        if let Some(task) = &self.task {
            if now >= task.deadline && !matches!(self.phase, Phase::Interrupting { .. }) {
                self.interrupt(pty, RunOutcome::TimedOut);
            }
        }
        let debounce = Duration::from_millis(self.profile.spec.done.debounce_ms);
        let quiet = now.duration_since(self.last_output) >= debounce;
        let classified = self.classified;
        let phase = std::mem::replace(&mut self.phase, Phase::Free);
        self.phase = match phase {
            Phase::Free => {
                match classified {
                    Some(ScreenState::Idle) => self.set_state(SessionState::Idle),
                    Some(ScreenState::WaitingInput) => self.set_state(SessionState::WaitingInput),
                    Some(ScreenState::Busy) => self.set_state(SessionState::Busy),
                    None => {}
                }
                Phase::Free
            }
            Phase::Typed { enter_at } if now >= enter_at => {
                let before = self.screen_text.clone();
                if let Some(task) = self.task.as_mut() {
                    task.recording = true;
                    task.entered_at = Some(now);
                }
                self.press_enter(pty);
                Phase::Submitted {
                    before,
                    at: now,
                    resent: false,
                }
            }
            p @ Phase::Typed { .. } => p,
            Phase::Submitted { before, at, resent } => {
                let confirm = Duration::from_millis(self.profile.spec.submit.confirm_timeout_ms);
                if self.screen_text != before {
                    self.running_phase(before, false)
                } else if now.duration_since(at) >= confirm && !resent {
                    tracing::debug!(session = %self.cfg.spec.name, "screen unchanged after Enter; sending Enter again");
                    self.press_enter(pty);
                    Phase::Submitted {
                        before,
                        at: now,
                        resent: true,
                    }
                } else if now.duration_since(at) >= confirm {
                    self.running_phase(before, true)
                } else {
                    Phase::Submitted { before, at, resent }
                }
            }
            Phase::Running {
                mut saw_busy,
                mut changed,
                before,
            } => {
                changed |= self.screen_text != before;
                if classified != Some(ScreenState::WaitingInput) {
                    self.question = None;
                }
                match classified {
                    Some(ScreenState::Busy) => {
                        saw_busy = true;
                        self.set_state(SessionState::Busy);
                    }
                    Some(ScreenState::WaitingInput) => {
                        self.set_state(SessionState::WaitingInput);
                        self.handle_question(pty, now);
                    }
                    Some(ScreenState::Idle) | None => {
                        if self.state == SessionState::WaitingInput {
                            self.set_state(SessionState::Busy);
                        }
                    }
                }
                let ready = if self.profile.spec.done.require_busy {
                    saw_busy
                } else {
                    saw_busy || changed
                };
                let busy_limit = self
                    .profile
                    .spec
                    .done
                    .busy_timeout_ms
                    .map(Duration::from_millis);
                let entered = self.task.as_ref().and_then(|t| t.entered_at);
                if classified == Some(ScreenState::Idle) && ready && quiet {
                    self.finish_task();
                    Phase::Free
                } else if let (Some(limit), Some(at), false) = (busy_limit, entered, saw_busy) {
                    if now.duration_since(at) >= limit && self.profile.spec.done.require_busy {
                        let why = format!(
                            "the prompt was not taken up: no busy screen within {} ms after Enter",
                            limit.as_millis()
                        );
                        self.interrupt_phase(pty, RunOutcome::NotTaken(why))
                    } else {
                        Phase::Running {
                            saw_busy,
                            changed,
                            before,
                        }
                    }
                } else {
                    Phase::Running {
                        saw_busy,
                        changed,
                        before,
                    }
                }
            }
            Phase::Interrupting { kill_at, outcome } => {
                if classified == Some(ScreenState::Idle) && quiet {
                    self.end_interrupted(outcome);
                    self.set_state(SessionState::Idle);
                    Phase::Free
                } else if now >= kill_at {
                    self.end_interrupted(outcome);
                    kill_group(pid);
                    return Err(format!(
                        "killed: not idle {} ms after the interrupt keys",
                        self.profile.spec.interrupt.grace_ms
                    ));
                } else {
                    Phase::Interrupting { kill_at, outcome }
                }
            }
        };
        Ok(())
    }

    fn press_enter(&self, pty: &mut File) {
        self.write(pty, self.profile.spec.submit.enter.as_bytes());
    }

    fn running_phase(&self, before: String, changed: bool) -> Phase {
        Phase::Running {
            saw_busy: self.classified == Some(ScreenState::Busy),
            changed: changed || self.screen_text != before,
            before,
        }
    }

    fn tick_starting(&mut self, pty: &mut File) -> Result<(), String> {
        let quiet = self.last_output.elapsed() >= Duration::from_millis(50);
        if !quiet {
            return Ok(());
        }
        if self.classified == Some(ScreenState::Idle) {
            self.set_state(SessionState::Idle);
            return Ok(());
        }
        let text = self.screen_text.clone();
        // After a rule fires, wait for the screen to answer (change) before matching
        // again, or 1 s if it never does: a slow redraw must not fire a rule twice.
        if let Some((screen, at)) = &self.startup_fired_on {
            if *screen == text && at.elapsed() < Duration::from_secs(1) {
                return Ok(());
            }
        }
        for i in 0..self.profile.startup_rules.len() {
            let (re, rule) = &self.profile.startup_rules[i];
            if self.startup_fired[i] < rule.times && re.is_match(&text) {
                let keys = rule.send.clone();
                self.startup_fired[i] += 1;
                tracing::debug!(session = %self.cfg.spec.name, rule = %re.as_str(), "start-up rule fired");
                self.write(pty, keys.as_bytes());
                self.startup_fired_on = Some((text, Instant::now()));
                return Ok(());
            }
        }
        let limit = Duration::from_millis(self.profile.spec.startup.ready_timeout_ms);
        if self.started_at.elapsed() > limit {
            let last = self
                .screen_text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!(
                "did not reach the idle screen within {} ms (last line: {last:?})",
                limit.as_millis()
            ));
        }
        Ok(())
    }

    fn finish_task(&mut self) {
        let Some(task) = self.task.take() else { return };
        let result = self.build_result(&task);
        let outcome = match result.exit_status {
            Some(code) if code != 0 => {
                let msg = format!("exit status {code}");
                RunOutcome::Failed(result, msg)
            }
            _ => RunOutcome::Completed(result),
        };
        self.emit_finished(task.assignment.task_id, outcome);
        self.set_state(SessionState::Idle);
    }

    fn build_result(&self, task: &Task) -> TaskResult {
        let screen = &self.screen_text;
        let output = match self.profile.spec.result.source {
            ResultSource::Screen => screen.clone(),
            ResultSource::Transcript => clean_transcript(&task.transcript, &self.profile),
        };
        TaskResult {
            output,
            reply: self.profile.reply(screen),
            exit_status: self.profile.exit_status(screen),
        }
    }
}

/// The last `n` non-empty rows of a rendered screen.
fn last_rows(screen: &str, n: usize) -> String {
    let rows: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    rows[rows.len().saturating_sub(n)..].join("\n")
}

/// Turns raw transcript bytes into text lines: escape sequences removed, carriage-return
/// overwrites applied, the echo line and trailing prompt lines dropped as the profile says.
#[must_use]
pub fn clean_transcript(raw: &[u8], profile: &Profile) -> String {
    let stripped = strip_ansi_escapes::strip(raw);
    let text = String::from_utf8_lossy(&stripped);
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            // A bare CR returns to column 0: what follows overwrites the line.
            l.rsplit('\r').next().unwrap_or(l).to_string()
        })
        .collect();
    if profile.spec.result.strip_echo && !lines.is_empty() {
        lines.remove(0);
    }
    while let Some(last) = lines.last() {
        let trailing = profile
            .strip_trailing
            .as_ref()
            .is_some_and(|re| re.is_match(last));
        if last.trim().is_empty() || trailing {
            lines.pop();
        } else {
            break;
        }
    }
    lines.join("\n")
}

/// Environment variable set on every session program: `<session>:<generation>:<daemon
/// pid>`. Children inherit it, so processes that leave the session's process group are
/// still found (and killed) when the session ends.
pub const SESSION_MARKER: &str = "ARCHITECT_SESSION";

/// Sends SIGKILL to every process whose environment carries `SESSION_MARKER=<marker>`
/// (found through `/proc/<pid>/environ`; processes we may not read are skipped).
pub fn kill_marked(marker: &str) {
    let needle = format!("{SESSION_MARKER}={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: plain syscall on a pid we just read; a gone process is ESRCH.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Sends SIGKILL to the process group `pid` leads (the program and everything it spawned
/// in its group).
pub fn kill_group(pid: i32) {
    if pid > 0 {
        // SAFETY: plain syscall; a stale pid group is reported as ESRCH and ignored.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status}")
    }
}

fn try_reap(pid: i32) -> Option<String> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc == pid {
        kill_group(pid);
        Some(describe(status))
    } else if rc < 0 {
        Some("exited".into())
    } else {
        None
    }
}

/// Waits for the program to be gone: up to 1 s, then SIGKILL to its group.
fn reap(pid: i32) -> String {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if let Some(s) = try_reap(pid) {
            return s;
        }
        if Instant::now() >= deadline {
            kill_group(pid);
            let mut status = 0;
            // SAFETY: as in try_reap; blocking now that SIGKILL was sent.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return describe(status);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
