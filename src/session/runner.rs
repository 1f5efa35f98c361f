//! One session: a program in a pseudo-terminal, driven by a thread.
//!
//! The thread is the thin shell around the session's [`Machine`]: it spawns the program
//! through `expectrl` (its own session and process group, a set window size, the shell
//! integration's start-up file, the CLI's hooks), feeds everything the program prints
//! into a [`Screen`] (answering terminal queries) and into the machine (the shell's OSC
//! 133 marks split out by a [`MarkScanner`]), serves the session's hook socket, and
//! carries out what the machine decides: keys to type, [`SessionEvent`]s for the
//! scheduler, answers to hooks, a kill. It waits in `poll(2)` on the terminal, a wake-up
//! socket and the hook socket, so new output, a command or a hook is handled at once.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use expectrl::process::Process as _;

use super::approval::Approvals;
use super::hooks::{HookServer, Integration};
use super::machine::{Effect, Input, Machine, Setup};
use super::marks::{MarkScanner, Piece};
use super::screen::Screen;
use crate::attach::viewers::{ViewerConn, ViewerNote, Viewers};
use crate::config::ResolvedSession;
use crate::record::recorder::{Recorder, SessionTape};
use crate::types::{AttemptEnd, TaskResult};

// The messages the daemon and a session thread exchange: the daemon drives a session
// through this module.
pub use super::messages::{
    Assignment, Command, EventSink, InterruptReason, SessionEvent, SessionMessage, SessionState,
};

/// The scheduler's side of a running session.
#[derive(Debug)]
pub struct SessionHandle {
    commands: mpsc::Sender<Command>,
    viewers: mpsc::Sender<ViewerConn>,
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

    /// Hands an attach or watch client to the session's thread, which sends it the
    /// screen. `Err` gives the client back when the session cannot take one (a provider
    /// session has no terminal; a thread that has ended).
    ///
    /// # Errors
    /// The client, given back.
    pub fn attach(&self, conn: ViewerConn) -> Result<(), ViewerConn> {
        self.viewers.send(conn).map_err(|e| e.0)?;
        let _ = (&self.wake).write(&[1]);
        Ok(())
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

/// The conversation a session's program starts with (profiles with `[resume]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Its id.
    pub id: String,
    /// Continue it (the program died): the profile's `again` arguments; else start it
    /// with this id (`first`).
    pub resume: bool,
}

/// Starts a session thread, which spawns the program. Start-up failures arrive as
/// [`SessionEvent::Exited`]. A terminal session's output is recorded through `recorder`
/// ([`crate::record`]).
///
/// # Errors
/// When the wake-up socket pair or the thread cannot be created.
pub fn start(
    cfg: ResolvedSession,
    generation: u64,
    events: EventSink,
    approvals: Approvals,
    llm: Arc<super::provider::LlmContext>,
    conversation: Option<Conversation>,
    recorder: &Recorder,
) -> std::io::Result<SessionHandle> {
    let (tx, rx) = mpsc::channel();
    let (viewers_tx, viewers_rx) = mpsc::channel();
    let (wake_w, wake_r) = UnixStream::pair()?;
    wake_w.set_nonblocking(true)?;
    wake_r.set_nonblocking(true)?;
    let name = cfg.spec.name.clone();
    let t = cfg.profile.spec.terminal;
    let tape = recorder.tape(&name, t.cols, t.rows);
    let thread = std::thread::Builder::new()
        .name(format!("session-{name}"))
        .spawn(move || {
            if cfg.spec.kind == crate::config::SessionKind::Provider {
                // No terminal: attach clients are refused (the channel is closed).
                drop(viewers_rx);
                super::provider::run(&cfg.spec.name, generation, &events, &rx, &llm);
                return;
            }
            let mut runner = Runner::new(cfg, generation, events, rx, wake_r, approvals, tape);
            runner.viewer_rx = Some(viewers_rx);
            runner.run(conversation.as_ref());
        })?;
    Ok(SessionHandle {
        commands: tx,
        viewers: viewers_tx,
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

/// The session thread: the program, its terminal, its screen and its machine.
struct Runner {
    cfg: ResolvedSession,
    generation: u64,
    events: EventSink,
    commands: mpsc::Receiver<Command>,
    wake: UnixStream,
    screen: Screen,
    screen_dirty: bool,
    machine: Machine,
    marks: Option<MarkScanner>,
    hooks: Option<HookServer>,
    /// For `worktree = true`: the session's git worktree.
    worktrees: Option<crate::worktree::WorktreeManager>,
    /// The worktree is on a task's branch (switch back after the task).
    on_task_branch: bool,
    /// The task running (for the worktree and for hook events).
    task_id: Option<String>,
    /// The recording of what the program prints.
    tape: SessionTape,
    /// Attach and watch clients arriving from the daemon.
    viewer_rx: Option<mpsc::Receiver<ViewerConn>>,
    /// The attach and watch clients looking at the screen.
    viewers: Viewers,
}

/// How the main loop ended.
enum End {
    /// The program is gone (its status), or was killed on the machine's word.
    Exited(String),
    /// Stopped on request.
    Stopped(String),
}

impl Runner {
    fn new(
        cfg: ResolvedSession,
        generation: u64,
        events: EventSink,
        commands: mpsc::Receiver<Command>,
        wake: UnixStream,
        approvals: Approvals,
        tape: SessionTape,
    ) -> Self {
        let profile = cfg.profile.clone();
        let worktrees = cfg
            .repo
            .as_ref()
            .map(|r| crate::worktree::WorktreeManager::from_settings(r, &cfg.git));
        let t = profile.spec.terminal;
        let setup = Setup {
            name: cfg.spec.name.clone(),
            profile,
            approvals,
            cwd: cfg.cwd.clone(),
            home: cfg.home(),
            marks: false,
            hooks: false,
        };
        Self {
            screen: Screen::with_scrollback(t.rows, t.cols, usize::from(t.scrollback)),
            screen_dirty: true,
            machine: Machine::new(setup, Instant::now()),
            cfg,
            generation,
            events,
            commands,
            wake,
            marks: None,
            hooks: None,
            worktrees,
            on_task_branch: false,
            task_id: None,
            tape,
            viewer_rx: None,
            viewers: Viewers::default(),
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

    /// Reports a task's end; a worktree on the task's branch goes back to the session's
    /// own branch first (its work committed there), so the branch is free for the next
    /// holder of its lock. The machine says a task is over only after its command or
    /// turn ended, so nothing still runs on the branch.
    fn emit_finished(&mut self, task_id: String, outcome: AttemptEnd) {
        if self.on_task_branch {
            if let Err(e) = self.prepare_worktree(None) {
                tracing::error!(session = %self.cfg.spec.name, "switching back: {e}");
            }
        }
        if self.task_id.as_deref() == Some(task_id.as_str()) {
            self.task_id = None;
        }
        self.tape.task_ended(&task_id);
        self.emit(SessionEvent::Finished { task_id, outcome });
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

    fn spawn(
        &self,
        integration: &Integration,
    ) -> std::io::Result<expectrl::process::unix::UnixProcess> {
        let program = resolve_command(&self.cfg.command);
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&integration.args).current_dir(&self.cfg.cwd);
        // A minimal environment: nothing of the daemon's reaches the program unless the
        // config names it (provider keys above all).
        cmd.env_clear();
        cmd.env("TERM", "xterm-256color");
        cmd.envs(self.cfg.environment(std::env::vars_os()));
        cmd.envs(&integration.env);
        cmd.env(SESSION_MARKER, self.marker());
        let t = self.cfg.profile.spec.terminal;
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

    fn run(&mut self, conversation: Option<&Conversation>) {
        let fail = |me: &Self, e: String| {
            me.emit(SessionEvent::Exited {
                status: format!("did not start: {e}"),
                requested: false,
                delivery: None,
            });
        };
        // A worktree session starts in its worktree, on its own branch.
        if let Err(e) = self.prepare_worktree(None) {
            return fail(self, e);
        }
        let id = format!("{}-{}", std::process::id(), self.generation);
        let mut integration = match Integration::prepare(&self.cfg, &id) {
            Ok(i) => i,
            Err(e) => return fail(self, format!("preparing the session: {e}")),
        };
        if let Some(nonce) = &integration.nonce {
            self.marks = Some(MarkScanner::new(nonce));
        }
        if let (Some(spec), Some(c)) = (&self.cfg.profile.spec.resume, conversation) {
            let fill = |args: &[String]| -> Vec<String> {
                args.iter()
                    .map(|a| a.replace("{conversation}", &c.id))
                    .collect()
            };
            if c.resume {
                let mut args = fill(&spec.again);
                args.append(&mut integration.args);
                integration.args = args;
            } else {
                integration.args.extend(fill(&spec.first));
            }
        }
        self.hooks = integration.hooks.take();
        let proc = match self.spawn(&integration) {
            Ok(p) => p,
            Err(e) => return fail(self, e.to_string()),
        };
        self.machine = {
            let mut setup = self.setup_for(integration.nonce.is_some(), self.hooks.is_some());
            setup.name = self.cfg.spec.name.clone();
            Machine::new(setup, Instant::now())
        };
        let pid = proc.pid().as_raw();
        let mut pty: File = match proc.get_raw_handle() {
            Ok(f) => f,
            Err(e) => {
                kill_group(pid);
                return fail(self, format!("opening the terminal: {e}"));
            }
        };
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(pty.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(pty.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        self.emit(SessionEvent::Started {
            pid: u32::try_from(pid).unwrap_or(0),
        });
        self.emit(SessionEvent::State(SessionState::Starting));
        self.step(&mut pty, Input::Started);
        let end = self.drive(&mut pty, pid);
        let why = match &end {
            End::Exited(s) => format!("the session's program exited ({s})"),
            End::Stopped(_) => {
                "the session was stopped (daemon stopping, or its config changed)".to_string()
            }
        };
        self.close_viewers(&why);
        drop(pty);
        kill_group(pid);
        // Processes that left the group (setsid, daemons such as `codex app-server`) still
        // carry the marker in their environment.
        kill_marked(&self.marker());
        drop(proc);
        drop(integration);
        self.hooks = None;
        // A task still running here is reported by the scheduler as "session died".
        let (status, requested) = match end {
            End::Exited(s) => (s, false),
            End::Stopped(s) => (s, true),
        };
        let delivery = self.machine.delivery();
        self.emit(SessionEvent::Exited {
            status,
            requested,
            delivery,
        });
    }

    /// Reads and handles what is left in the PTY of a program that has exited (without
    /// blocking: the descriptor is non-blocking), until it is empty or closed.
    fn drain(&mut self, pty: &mut File) {
        let mut buf = [0u8; 8192];
        loop {
            match pty.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    if self.on_output(pty, &data).is_some() {
                        return;
                    }
                }
            }
        }
    }

    fn setup_for(&self, marks: bool, hooks: bool) -> Setup {
        Setup {
            name: self.cfg.spec.name.clone(),
            profile: self.cfg.profile.clone(),
            approvals: self.machine_approvals(),
            cwd: self.cfg.cwd.clone(),
            home: self.cfg.home(),
            marks,
            hooks,
        }
    }

    fn machine_approvals(&self) -> Approvals {
        self.machine.approvals().clone()
    }

    /// Feeds one input to the machine and carries out its effects. `Some` ends the
    /// session (the machine asked for a kill).
    fn step(&mut self, pty: &mut File, input: Input) -> Option<String> {
        let effects = self.machine.step(Instant::now(), input);
        let mut end = None;
        for effect in effects {
            match effect {
                Effect::Write(bytes) => self.write(pty, &bytes),
                Effect::Emit(event) => self.emit(event),
                Effect::Finish { task_id, outcome } => self.emit_finished(task_id, outcome),
                Effect::Answer { conn, answer } => {
                    if let Some(h) = self.hooks.as_mut() {
                        h.answer(conn, &answer);
                    }
                }
                Effect::Kill(status) => end = Some(status),
            }
        }
        end
    }

    /// The main loop.
    fn drive(&mut self, pty: &mut File, pid: i32) -> End {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_reap = Instant::now();
        loop {
            let now = Instant::now();
            let timeout = self
                .machine
                .next_deadline()
                .map_or(Duration::from_millis(250), |d| {
                    d.saturating_duration_since(now)
                })
                .min(Duration::from_millis(250));
            let mut fds = vec![
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
            if let Some(h) = &self.hooks {
                fds.extend(h.poll_fds().into_iter().map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }));
            }
            let viewers_at = fds.len();
            fds.extend(self.viewers.poll_fds());
            let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(2);
            // SAFETY: fds is a valid array of nfds pollfd for the duration of the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return End::Exited(format!("poll failed: {err}"));
                }
            }
            if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                match pty.read(&mut buf) {
                    Ok(0) => return End::Exited(reap(pid)),
                    Ok(n) => {
                        let data = buf[..n].to_vec();
                        if let Some(status) = self.on_output(pty, &data) {
                            kill_group(pid);
                            return End::Exited(status);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every slave descriptor is closed, the program is gone.
                    Err(_) => return End::Exited(reap(pid)),
                }
            }
            if fds[1].revents & libc::POLLIN != 0 {
                let mut sink = [0u8; 64];
                while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            }
            if viewers_at > 2 && fds[2..viewers_at].iter().any(|f| f.revents != 0) {
                let received = self
                    .hooks
                    .as_mut()
                    .map(HookServer::receive)
                    .unwrap_or_default();
                for (conn, msg) in received {
                    self.log_hook(&msg.event, &msg.signal);
                    let input = Input::Hook {
                        conn,
                        event: msg.event,
                        signal: msg.signal,
                    };
                    if let Some(status) = self.step(pty, input) {
                        kill_group(pid);
                        return End::Exited(status);
                    }
                }
            }
            if fds[viewers_at..].iter().any(|f| f.revents != 0) {
                let revents: Vec<i16> = fds[viewers_at..].iter().map(|f| f.revents).collect();
                self.on_viewers(pty, &revents);
            }
            self.take_viewers();
            while let Ok(cmd) = self.commands.try_recv() {
                if matches!(cmd, Command::Stop) {
                    kill_group(pid);
                    return End::Stopped(reap(pid));
                }
                if let Some(status) = self.on_command(pty, cmd) {
                    kill_group(pid);
                    return End::Exited(status);
                }
            }
            if self.screen_dirty {
                self.screen_dirty = false;
                let visible = self.screen.text();
                let scrollback = self
                    .machine
                    .wants_scrollback()
                    .then(|| self.screen.scrollback_text());
                if let Some(status) = self.step(
                    pty,
                    Input::Screen {
                        visible,
                        scrollback,
                    },
                ) {
                    kill_group(pid);
                    return End::Exited(status);
                }
            }
            if let Some(status) = self.step(pty, Input::Tick) {
                kill_group(pid);
                return End::Exited(status);
            }
            self.viewers.broadcast(self.screen.vt());
            if last_reap.elapsed() > Duration::from_millis(250) {
                last_reap = Instant::now();
                if let Some(status) = try_reap(pid) {
                    // What the program wrote last may still wait in the PTY: a shell's
                    // `EXIT` trap writes the mark with a task's exit status just before
                    // the shell is gone. Read it before the session is reported dead.
                    self.drain(pty);
                    return End::Exited(status);
                }
            }
        }
    }

    /// Logs a hook signal (tool requests show up as permission decisions instead).
    fn log_hook(&self, event: &str, signal: &crate::agents::signal::Signal) {
        let kind = match signal {
            crate::agents::signal::Signal::ToolRequest { .. } => return,
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("signal").and_then(|s| s.as_str()).map(String::from))
                .unwrap_or_default(),
        };
        let source = match signal {
            crate::agents::signal::Signal::SessionStart { source, .. } => source.clone(),
            _ => None,
        };
        self.emit(SessionEvent::Hook {
            task_id: self.task_id.clone(),
            event: event.to_string(),
            signal: kind,
            source,
        });
    }

    /// New output: marks split out, the rest to the screen (queries answered) and to the
    /// machine.
    fn on_output(&mut self, pty: &mut File, data: &[u8]) -> Option<String> {
        let pieces = match self.marks.as_mut() {
            Some(m) => m.scan(data),
            None => vec![Piece::Bytes(data.to_vec())],
        };
        for piece in pieces {
            let input = match piece {
                Piece::Bytes(bytes) => {
                    self.tape.output(&bytes);
                    let replies = self.screen.feed(&bytes);
                    if !replies.is_empty() {
                        self.write(pty, &replies);
                    }
                    self.screen_dirty = true;
                    self.viewers.mark_dirty();
                    Input::Output(bytes)
                }
                Piece::Mark(mark) => {
                    // The screen first, so the machine sees what preceded the mark.
                    if self.screen_dirty {
                        self.screen_dirty = false;
                        let visible = self.screen.text();
                        if let Some(s) = self.step(
                            pty,
                            Input::Screen {
                                visible,
                                scrollback: None,
                            },
                        ) {
                            return Some(s);
                        }
                    }
                    Input::Mark(mark)
                }
            };
            if let Some(s) = self.step(pty, input) {
                return Some(s);
            }
        }
        None
    }

    /// Takes the attach and watch clients the daemon handed over: each gets the screen.
    fn take_viewers(&mut self) {
        let Some(rx) = &self.viewer_rx else {
            return;
        };
        let arrived: Vec<ViewerConn> = rx.try_iter().collect();
        for conn in arrived {
            let (client, mode) = (conn.id, conn.mode);
            match self
                .viewers
                .add(&self.cfg.spec.name, conn, self.screen.vt())
            {
                Ok(()) => self.emit(SessionEvent::Attached { client, mode }),
                Err(e) => {
                    tracing::warn!(session = %self.cfg.spec.name, "attach client dropped: {e}");
                }
            }
        }
    }

    /// Keys from attach clients go to the terminal; clients that left are reported.
    fn on_viewers(&mut self, pty: &mut File, revents: &[i16]) {
        for note in self.viewers.on_ready(revents) {
            match note {
                ViewerNote::Input(keys) => self.write(pty, &keys),
                ViewerNote::Left { id, mode, why } => self.emit(SessionEvent::Detached {
                    client: id,
                    mode,
                    reason: why.describe(),
                }),
            }
        }
    }

    /// Ends every client's connection with `why` and reports them gone.
    fn close_viewers(&mut self, why: &str) {
        // Clients still waiting in the channel are told too.
        self.take_viewers();
        for (client, mode) in self.viewers.close_all(why) {
            self.emit(SessionEvent::Detached {
                client,
                mode,
                reason: why.to_string(),
            });
        }
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

    fn on_command(&mut self, pty: &mut File, cmd: Command) -> Option<String> {
        if let Command::Run(assignment) = &cmd {
            if self.machine.ready() {
                if let Some(branch) = assignment.branch.clone() {
                    if let Err(e) = self.prepare_worktree(Some(&branch)) {
                        let id = assignment.task_id.clone();
                        self.emit_finished(id, AttemptEnd::Failed(TaskResult::default(), e));
                        return None;
                    }
                }
                self.task_id = Some(assignment.task_id.clone());
                self.tape
                    .task_started(&assignment.task_id, assignment.attempt);
            }
        }
        self.step(pty, Input::Command(cmd))
    }
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
