//! The session state machine: what to type and what to report, decided from what the
//! terminal shows, the shell's marks, the CLI's hooks and the time — with no I/O.
//!
//! [`Machine::step`] takes one [`Input`] and the time and returns [`Effect`]s (keys to
//! type, events for the scheduler, answers to hooks). The runner
//! ([`super::runner`]) owns the pseudo-terminal, the screen emulator, the hook socket and
//! the clock, feeds the machine and carries out its effects; tests feed it scripted
//! inputs (captured screens, marks, hook signals, instants) and check the effects.
//!
//! # How a task is delivered
//!
//! 1. `Run` arrives while the session is idle: the prompt is typed (or pasted) and, after
//!    the profile's pause, Enter is pressed — once.
//! 2. **Taken.** The prompt counts as taken on the first evidence of it, logged as
//!    `prompt_accepted` with its name: the shell's command-start mark (`mark:command_start`),
//!    the CLI's prompt hook (`hook:<event>`), a busy screen (`busy_screen`), the prompt
//!    shown in the transcript above the input box (`prompt_in_transcript`), the input box
//!    emptied of it (`input_cleared`), the turn-end hook (`hook:<event>`) or, for profiles
//!    that can read none of these, a changed screen (`screen_changed`). Enter is pressed
//!    again only while the input box provably still holds the text. A prompt still in
//!    the box after every try is proven not taken: the box is cleared and the attempt
//!    ends as `NotTaken` (retried). With no proof either way after
//!    `done.busy_timeout_ms`, nothing is typed again: the task waits for the turn to end
//!    and then fails as `DeliveryUncertain` for a person to retry.
//! 3. **Done.** A shell with marks ends the task at its command-finished mark, with the
//!    mark's exit status, and the output between the two marks. A CLI whose hooks work
//!    ends it at the turn-end hook, with the hook's exact reply; when the screen has
//!    shown the turn over (idle, unchanged for `done.debounce_ms`) for
//!    `done.hook_grace_ms` with no hook, the screen ends it. Otherwise the screen rules
//!    end it (idle after busy or a change, unchanged for the debounce).
//! 4. **Reply.** Read only from what follows this task's prompt in the transcript
//!    (`screen.prompt_line`), never from above it; a turn with no reply there has none,
//!    and `turn_end` says how it ended (`refused: <action>`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::approval::{decide, decide_exact, Approvals, DecidedBy, Question};
use super::marks::Mark;
use super::messages::{Assignment, Command, InterruptReason, SessionEvent, SessionState};
use super::output::OutputBuffer;
use crate::agents::signal::{HookAnswer, Signal};
use crate::policy::{Decision, Verdict};
use crate::profile::{Profile, ResultSource, ScreenState, SubmitMode};
use crate::types::{AttemptEnd, TaskResult};

// How far a prompt got: the machine tracks it, and a session's exit reports it.
pub use super::messages::Delivery;

/// How long the screen must be still before a permission question is read (the dialog
/// must be drawn in full: a half-drawn command must never be judged).
const QUESTION_SETTLE: Duration = Duration::from_millis(150);
/// The same question still on screen this long after its answer counts as asked again.
const QUESTION_REASK: Duration = Duration::from_millis(1500);
/// How many times Enter may be pressed for one prompt, each after proof that the text
/// is still in the input box.
const MAX_ENTERS: u32 = 3;
/// After a turn ended by a hook, the screen must be still this long before the session
/// counts as idle again (the CLI finishes drawing the end of the turn).
const AFTER_HOOK_SETTLE: Duration = Duration::from_millis(100);
/// How long a start-up screen must be still before start-up rules look at it.
const STARTUP_SETTLE: Duration = Duration::from_millis(50);

/// What the machine is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// The program was spawned.
    Started,
    /// Output bytes (the shell integration's marks already taken out), already fed to
    /// the screen.
    Output(Vec<u8>),
    /// The rendered screen after new output: the visible rows (`Screen::text`), and the
    /// rows scrolled off above them when [`Machine::wants_scrollback`] asked for them.
    Screen {
        /// Visible rows.
        visible: String,
        /// Rows above the visible ones, oldest first (`None`: not read).
        scrollback: Option<String>,
    },
    /// A mark from the session's own shell integration.
    Mark(Mark),
    /// A hook signal, on hook connection `conn` (answered with [`Effect::Answer`]).
    Hook {
        /// The connection to answer.
        conn: u64,
        /// The CLI's event name.
        event: String,
        /// What it means.
        signal: Signal,
    },
    /// A request from the scheduler.
    Command(Command),
    /// Time passed.
    Tick,
}

/// What the machine asks the runner to do, in order.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Write these bytes to the terminal.
    Write(Vec<u8>),
    /// Report this to the scheduler.
    Emit(SessionEvent),
    /// The task ended: put a worktree back on the session's branch, then report
    /// [`SessionEvent::Finished`].
    Finish {
        /// Task id.
        task_id: String,
        /// How.
        outcome: AttemptEnd,
    },
    /// Answer hook connection `conn`.
    Answer {
        /// The connection.
        conn: u64,
        /// The answer.
        answer: HookAnswer,
    },
    /// Kill the program's process group; the session ends with this status.
    Kill(String),
}

/// What the machine needs to know about its session.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Session name (for tracing).
    pub name: String,
    /// The profile.
    pub profile: Profile,
    /// The policy.
    pub approvals: Approvals,
    /// The session's working directory (for the policy).
    pub cwd: PathBuf,
    /// The session's `HOME` (for the policy).
    pub home: PathBuf,
    /// The shell integration is installed: marks will come.
    pub marks: bool,
    /// Hooks are installed in the CLI: hook signals may come.
    pub hooks: bool,
}

/// What the session is doing with the current task.
#[derive(Debug, Clone)]
enum Phase {
    /// No task.
    Free,
    /// Text typed; Enter goes at `enter_at`.
    Typed { enter_at: Instant },
    /// Enter pressed at `at`; waiting for evidence that the prompt was taken.
    Submitted { at: Instant },
    /// Taken; waiting for the end of the command or turn.
    Running,
    /// Interrupt keys sent; waiting for the program to stop until `kill_at`.
    Interrupting {
        kill_at: Instant,
        outcome: AttemptEnd,
    },
}

/// The task being run.
#[derive(Debug, Clone)]
struct TaskRun {
    assignment: Assignment,
    deadline: Instant,
    /// When Enter was first pressed, and how many times.
    entered_at: Option<Instant>,
    enters: u32,
    /// The screen when Enter was first pressed.
    screen_before: String,
    /// Output recorded for the result.
    output: OutputBuffer,
    recording: bool,
    /// How many times the prompt showed in the transcript before Enter.
    rows_before: usize,
    /// The input box held the prompt when Enter was pressed.
    typed_in_box: bool,
    /// The prompt was seen in the transcript after Enter.
    anchor_seen: bool,
    /// Limit messages on screen before Enter.
    limits_before: usize,
    /// The evidence the prompt was taken.
    accepted: Option<String>,
    /// A busy screen was seen after Enter; the screen changed after Enter.
    saw_busy: bool,
    changed: bool,
    /// Shell marks: a command started; its exit status; the line was incomplete.
    command_started: bool,
    exit_status: Option<i32>,
    incomplete: bool,
    /// Permission decisions that refused an action, in order.
    refused: Vec<String>,
    /// Since when the screen has read idle and still (for the hook grace).
    idle_since: Option<Instant>,
    /// No evidence either way in time: wait for the turn to end, then fail.
    uncertain: bool,
}

/// A permission question that has been read off the screen.
#[derive(Debug, Clone)]
struct OpenQuestion {
    /// Its id, for a person's answer (`None`: decided by the policy).
    id: Option<String>,
    question: Question,
    /// Index of the profile's `[[permission]]` rule.
    index: usize,
    /// When its answer was typed, and the screen then (`None`: waiting for a person).
    answered: Option<(Instant, String)>,
    /// The exact question a hook left to a person (the dialog on screen is its).
    from_hook: bool,
}

/// The session state machine (see the module docs).
#[derive(Debug)]
pub struct Machine {
    setup: Setup,
    state: SessionState,
    started_at: Instant,
    last_output: Instant,
    screen: String,
    scrollback: Option<String>,
    classified: Option<ScreenState>,
    startup_fired: Vec<u32>,
    startup_fired_on: Option<(String, Instant)>,
    /// Shell marks: a primary prompt is up and no command runs.
    at_prompt: bool,
    /// Hooks sent something in this session: they work.
    hooks_seen: bool,
    task: Option<TaskRun>,
    phase: Phase,
    queued: VecDeque<(Instant, Vec<u8>)>,
    question: Option<OpenQuestion>,
    /// A tool request a hook left to a person: its exact question.
    hook_asked: Option<Question>,
    /// Parked by a usage limit until then.
    limited_until: Option<Instant>,
    /// Idle no earlier than this (after a turn ended by a hook).
    settle_until: Option<Instant>,
    /// The last task that ended (late usage is its).
    last_task: Option<String>,
    /// When a limit menu was last dismissed.
    dismissed_at: Option<Instant>,
    out: Vec<Effect>,
}

impl Machine {
    /// A machine for a program about to start at `now`.
    #[must_use]
    pub fn new(setup: Setup, now: Instant) -> Self {
        let rules = setup.profile.startup_rules.len();
        Self {
            setup,
            state: SessionState::Starting,
            started_at: now,
            last_output: now,
            screen: String::new(),
            scrollback: None,
            classified: None,
            startup_fired: vec![0; rules],
            startup_fired_on: None,
            at_prompt: false,
            hooks_seen: false,
            task: None,
            phase: Phase::Free,
            queued: VecDeque::new(),
            question: None,
            hook_asked: None,
            limited_until: None,
            settle_until: None,
            last_task: None,
            dismissed_at: None,
            out: Vec::new(),
        }
    }

    /// The state last reported.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// How far the running task's prompt got (`None`: no task).
    #[must_use]
    pub fn delivery(&self) -> Option<Delivery> {
        let t = self.task.as_ref()?;
        Some(if t.accepted.is_some() {
            Delivery::Taken
        } else if t.entered_at.is_some() {
            Delivery::Sent
        } else {
            Delivery::NotSent
        })
    }

    /// Whether a task may be handed over now (idle, no task).
    #[must_use]
    pub fn ready(&self) -> bool {
        self.task.is_none() && self.state == SessionState::Idle
    }

    /// Whether the next [`Input::Screen`] should carry the scrollback: a task's prompt
    /// was seen and has scrolled out of sight, so its reply may have too.
    #[must_use]
    pub fn wants_scrollback(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.anchor_seen)
            && self.setup.profile.spec.terminal.scrollback > 0
    }

    /// The profile.
    #[must_use]
    pub fn profile(&self) -> &Profile {
        &self.setup.profile
    }

    /// The policy in use.
    #[must_use]
    pub fn approvals(&self) -> &Approvals {
        &self.setup.approvals
    }

    /// The next instant at which time alone may change something (`None`: nothing is
    /// waiting on time).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        let spec = &self.setup.profile.spec;
        let debounce = Duration::from_millis(spec.done.debounce_ms);
        let mut at: Vec<Instant> = Vec::new();
        match &self.phase {
            Phase::Free => {
                if let Some(s) = self.settle_until {
                    at.push(s.max(self.last_output + AFTER_HOOK_SETTLE));
                }
            }
            Phase::Typed { enter_at } => at.push(*enter_at),
            Phase::Submitted { at: entered } => {
                at.push(*entered + Duration::from_millis(spec.submit.confirm_timeout_ms));
                if let Some(ms) = spec.done.busy_timeout_ms {
                    if let Some(e) = self.task.as_ref().and_then(|t| t.entered_at) {
                        at.push(e + Duration::from_millis(ms));
                    }
                }
                at.push(self.last_output + debounce);
                at.push(self.last_output + QUESTION_SETTLE);
            }
            Phase::Running => {
                at.push(self.last_output + debounce);
                if let Some(s) = self.task.as_ref().and_then(|t| t.idle_since) {
                    at.push(s + Duration::from_millis(spec.done.hook_grace_ms));
                }
                if self.classified == Some(ScreenState::WaitingInput) {
                    at.push(self.last_output + QUESTION_SETTLE);
                }
            }
            Phase::Interrupting { kill_at, .. } => {
                at.push(*kill_at);
                at.push(self.last_output + debounce);
            }
        }
        if let Some(t) = &self.task {
            at.push(t.deadline);
        }
        if let Some(u) = self.limited_until {
            at.push(u);
        }
        if let Some((when, _)) = self.queued.front() {
            at.push(*when);
        }
        if self.state == SessionState::Starting {
            at.push(self.last_output + STARTUP_SETTLE);
            at.push(self.started_at + Duration::from_millis(spec.startup.ready_timeout_ms));
        }
        at.into_iter().min()
    }

    /// Takes one input at `now`; returns what to do, in order.
    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Effect> {
        match input {
            Input::Started => {
                self.started_at = now;
                self.last_output = now;
                if let Some(keys) = self.setup.profile.spec.startup.send.clone() {
                    self.write(keys.into_bytes());
                }
            }
            Input::Output(bytes) => {
                self.last_output = now;
                if let Some(t) = self.task.as_mut() {
                    if t.recording {
                        t.output.push(&bytes);
                    }
                }
            }
            Input::Screen {
                visible,
                scrollback,
            } => {
                self.last_output = now;
                self.classified = self.setup.profile.classify(&visible);
                self.screen = visible;
                if scrollback.is_some() {
                    self.scrollback = scrollback;
                }
            }
            Input::Mark(mark) => self.on_mark(now, mark),
            Input::Hook {
                conn,
                event,
                signal,
            } => self.on_hook(now, conn, &event, signal),
            Input::Command(cmd) => self.on_command(now, cmd),
            Input::Tick => {}
        }
        self.advance(now);
        std::mem::take(&mut self.out)
    }

    fn write(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.out.push(Effect::Write(bytes));
        }
    }

    fn emit(&mut self, event: SessionEvent) {
        self.out.push(Effect::Emit(event));
    }

    fn set_state(&mut self, state: SessionState) {
        if self.state != state {
            tracing::debug!(
                session = %self.setup.name,
                from = self.state.as_str(),
                to = state.as_str(),
                "state change; last screen rows:\n{}",
                last_rows(&self.screen, 4)
            );
            self.state = state;
            self.emit(SessionEvent::State(state));
        }
    }

    fn finish(&mut self, outcome: AttemptEnd) {
        let Some(task) = self.task.take() else {
            return;
        };
        self.question = None;
        self.hook_asked = None;
        self.phase = Phase::Free;
        self.last_task = Some(task.assignment.task_id.clone());
        self.out.push(Effect::Finish {
            task_id: task.assignment.task_id,
            outcome,
        });
    }

    fn accept(&mut self, now: Instant, evidence: &str) {
        let Some(task) = self.task.as_mut() else {
            return;
        };
        if task.accepted.is_some() {
            return;
        }
        task.accepted = Some(evidence.to_string());
        task.uncertain = false;
        let after_enter_ms = task
            .entered_at
            .map(|e| u64::try_from(now.saturating_duration_since(e).as_millis()).unwrap_or(0));
        let task_id = task.assignment.task_id.clone();
        if matches!(self.phase, Phase::Submitted { .. }) {
            self.phase = Phase::Running;
        }
        self.emit(SessionEvent::PromptAccepted {
            task_id,
            evidence: evidence.to_string(),
            after_enter_ms,
        });
    }

    // ---- inputs ---------------------------------------------------------------------

    fn on_mark(&mut self, now: Instant, mark: Mark) {
        match mark {
            Mark::Prompt => {
                self.at_prompt = true;
                if let Some(t) = self.task.as_ref() {
                    // A fresh prompt after Enter ends the attempt: either the command
                    // finished (its D mark came first) or nothing ran.
                    if t.entered_at.is_some() {
                        self.end_by_prompt(now);
                    }
                }
            }
            Mark::Continuation => {
                if let Some(t) = self.task.as_mut() {
                    if t.entered_at.is_some() && !t.incomplete {
                        t.incomplete = true;
                        let keys = self.setup.profile.spec.interrupt.keys.clone();
                        self.write(keys.into_bytes());
                    }
                }
            }
            Mark::CommandStart => {
                self.at_prompt = false;
                if let Some(t) = self.task.as_mut() {
                    if t.entered_at.is_some() {
                        if !t.command_started {
                            // The output is what the command prints from here on.
                            t.output.clear();
                            t.recording = true;
                        }
                        t.command_started = true;
                        self.accept(now, "mark:command_start");
                    }
                }
                if self.task.is_none() {
                    self.set_state(SessionState::Busy);
                }
            }
            Mark::CommandFinished(status) => {
                if let Some(t) = self.task.as_mut() {
                    if t.command_started {
                        t.exit_status = status;
                        t.recording = false;
                        // The command is over: end the task now (its locks go with it),
                        // unless a multi-line paste still has commands to run; the prompt
                        // mark right after says so.
                        self.end_by_mark();
                    }
                }
            }
        }
    }

    /// Shell marks: the command-finished mark arrived.
    fn end_by_mark(&mut self) {
        let Some(t) = self.task.as_ref() else { return };
        if t.incomplete {
            return; // reported at the prompt, with the reason
        }
        let outcome = if let Phase::Interrupting { outcome, .. } = &self.phase {
            outcome.clone()
        } else {
            status_outcome(self.build_result(t), t.exit_status)
        };
        self.finish(outcome);
    }

    /// Shell marks: a fresh prompt came while the task was still open.
    fn end_by_prompt(&mut self, _now: Instant) {
        let Some(t) = self.task.as_ref() else { return };
        let result = self.build_result(t);
        let outcome = if t.incomplete {
            AttemptEnd::Failed(
                result,
                "the command line is incomplete (an unclosed quote, a here-document or a \
                 compound command without its end): the shell asked for more input, so it \
                 was interrupted"
                    .into(),
            )
        } else if let Phase::Interrupting { outcome, .. } = &self.phase {
            outcome.clone()
        } else if t.command_started {
            status_outcome(result, t.exit_status)
        } else {
            AttemptEnd::Failed(
                result,
                "nothing ran: the prompt holds no command (only blank lines or comments)".into(),
            )
        };
        self.finish(outcome);
    }

    fn on_hook(&mut self, now: Instant, conn: u64, event: &str, signal: Signal) {
        self.hooks_seen = true;
        let mut answer = HookAnswer::Ok;
        match signal {
            Signal::SessionStart { conversation, .. } => {
                if let Some(id) = conversation {
                    self.emit(SessionEvent::Conversation { id });
                }
            }
            Signal::Other => {}
            Signal::PromptSubmitted { .. } => {
                if self.task.as_ref().is_some_and(|t| t.entered_at.is_some()) {
                    self.accept(now, &format!("hook:{event}"));
                }
            }
            Signal::ToolRequest {
                tool,
                kind,
                action,
                deny_only,
            } => {
                answer = self.decide_tool(&tool, kind, action, deny_only);
            }
            Signal::TurnEnd { reply, error } => {
                let submitted = self.task.as_ref().is_some_and(|t| t.entered_at.is_some());
                if submitted && !matches!(self.phase, Phase::Interrupting { .. }) {
                    self.accept(now, &format!("hook:{event}"));
                    let by = format!("hook:{event}");
                    match error {
                        Some(e) => {
                            let result = self.task.as_ref().map(|t| self.build_result(t));
                            let mut result = result.unwrap_or_default();
                            result.reply = None;
                            result.ended_by = Some(by);
                            result.turn_end = Some(format!("failed: {e}"));
                            self.finish(AttemptEnd::Failed(result, e));
                        }
                        None => self.end_turn(now, reply, &by),
                    }
                    self.settle_until = Some(now + AFTER_HOOK_SETTLE);
                }
            }
            Signal::TurnUsage { usage } => {
                let task = self
                    .task
                    .as_ref()
                    .map(|t| t.assignment.task_id.clone())
                    .or_else(|| self.last_task.clone());
                if let Some(task_id) = task {
                    if !usage.is_empty() {
                        self.emit(SessionEvent::Usage { task_id, usage });
                    }
                }
            }
            Signal::Notification { .. } => {}
            Signal::Limited {
                message,
                reset_in_s,
            } => {
                let until = reset_in_s.map(Duration::from_secs);
                self.park(now, message, until, 300);
            }
        }
        self.out.push(Effect::Answer { conn, answer });
    }

    /// A hook's tool request: the policy decides on the exact action.
    fn decide_tool(
        &mut self,
        tool: &str,
        kind: crate::profile::ActionKind,
        action: Option<String>,
        deny_only: bool,
    ) -> HookAnswer {
        let question = Question {
            permission: format!("hook:{tool}"),
            kind,
            action,
            tool: Some(tool.to_string()),
        };
        let verdict = decide_exact(
            &self.setup.approvals,
            &question,
            self.setup.cwd.clone(),
            self.setup.home.clone(),
            &self.setup.profile.name,
        );
        let reason = format!(
            "architect policy, rule {}: {}",
            verdict.rule, verdict.reason
        );
        let task_id = self.task.as_ref().map(|t| t.assignment.task_id.clone());
        // Where the CLI cannot be told "allow", the allow is given where it asks (its
        // dialog, or a later hook) and logged there.
        if deny_only && verdict.decision == Decision::Allow {
            return HookAnswer::Ok;
        }
        match verdict.decision {
            Decision::Allow | Decision::Deny => {
                if verdict.decision == Decision::Deny {
                    if let (Some(t), Some(a)) = (self.task.as_mut(), &question.action) {
                        t.refused.push(a.clone());
                    }
                }
                let decision = verdict.decision;
                self.emit(SessionEvent::Permission {
                    task_id,
                    question,
                    decision,
                    rule: verdict.rule,
                    reason: verdict.reason,
                    by: DecidedBy::Policy,
                });
                if decision == Decision::Allow {
                    HookAnswer::Allow { reason }
                } else {
                    HookAnswer::Deny { reason }
                }
            }
            Decision::Escalate => {
                // The CLI shows its own question; a person answers it (the screen's
                // reading of it is not trusted over this exact one).
                self.hook_asked = Some(question);
                HookAnswer::Ask { reason }
            }
        }
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Run(assignment) => self.run(now, assignment),
            Command::Interrupt(InterruptReason::Cancelled) => {
                if self.task.is_some() {
                    self.interrupt(now, AttemptEnd::Cancelled);
                }
            }
            Command::Send { text, enter } => {
                self.write(text.into_bytes());
                if enter {
                    let at = now + Duration::from_millis(self.setup.profile.spec.submit.pause_ms);
                    let key = self.setup.profile.spec.submit.enter.clone().into_bytes();
                    self.queued.push_back((at, key));
                }
            }
            Command::Answer { approve, question } => self.answer(now, approve, &question),
            Command::SetApprovals(a) => self.setup.approvals = a,
            Command::Stop => {}
        }
    }

    fn run(&mut self, now: Instant, assignment: Assignment) {
        if self.task.is_some() || self.state != SessionState::Idle {
            let why = if self.limited_until.is_some() {
                "session is limited (usage limit) when the task arrived".to_string()
            } else {
                format!("session was {} when the task arrived", self.state.as_str())
            };
            self.out.push(Effect::Finish {
                task_id: assignment.task_id,
                outcome: AttemptEnd::NotStarted(why),
            });
            return;
        }
        self.question = None;
        self.hook_asked = None;
        self.settle_until = None;
        let bytes = self.prompt_bytes(&assignment.prompt);
        let profile = &self.setup.profile;
        let (transcript, _) = profile.split_input(&self.screen);
        let rows_before = profile.prompt_rows(transcript, &assignment.prompt).len();
        let limits_before = profile.limit_matches(&self.screen);
        let deadline = now + assignment.timeout;
        let task_id = assignment.task_id.clone();
        self.task = Some(TaskRun {
            assignment,
            deadline,
            entered_at: None,
            enters: 0,
            screen_before: String::new(),
            output: OutputBuffer::default(),
            recording: false,
            rows_before,
            typed_in_box: false,
            anchor_seen: false,
            limits_before,
            accepted: None,
            saw_busy: false,
            changed: false,
            command_started: false,
            exit_status: None,
            incomplete: false,
            refused: Vec::new(),
            idle_since: None,
            uncertain: false,
        });
        self.write(bytes);
        self.emit(SessionEvent::PromptSent {
            task_id,
            written_at: chrono::Utc::now(),
        });
        self.phase = Phase::Typed {
            enter_at: now + Duration::from_millis(self.setup.profile.spec.submit.pause_ms),
        };
        self.set_state(SessionState::Busy);
    }

    fn prompt_bytes(&self, prompt: &str) -> Vec<u8> {
        let submit = &self.setup.profile.spec.submit;
        match submit.mode {
            SubmitMode::Typed => prompt
                .replace("\r\n", "\n")
                .replace('\n', &submit.newline)
                .into_bytes(),
            SubmitMode::BracketedPaste => {
                let mut v = b"\x1b[200~".to_vec();
                v.extend_from_slice(prompt.replace("\r\n", "\n").as_bytes());
                v.extend_from_slice(b"\x1b[201~");
                v
            }
        }
    }

    fn press_enter(&mut self, now: Instant) {
        let key = self.setup.profile.spec.submit.enter.clone().into_bytes();
        let screen = self.screen.clone();
        let in_box = self.input_holds_prompt();
        if let Some(t) = self.task.as_mut() {
            t.enters += 1;
            if t.entered_at.is_none() {
                t.entered_at = Some(now);
                t.screen_before = screen;
                t.typed_in_box = in_box;
                // Shells with marks record from the command-start mark.
                t.recording = !self.setup.marks;
            }
        }
        self.write(key);
    }

    /// The input box shows (the start of) the task's prompt.
    fn input_holds_prompt(&self) -> bool {
        let Some(t) = &self.task else { return false };
        let (_, text) = self.setup.profile.split_input(&self.screen);
        text.is_some_and(|text| {
            let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let prompt: String = t
                .assignment
                .prompt
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            !text.is_empty() && (prompt.starts_with(&text) || text.starts_with(&prompt))
        })
    }

    fn interrupt(&mut self, now: Instant, outcome: AttemptEnd) {
        let keys = self.setup.profile.spec.interrupt.keys.clone();
        self.write(keys.into_bytes());
        self.phase = Phase::Interrupting {
            kill_at: now + Duration::from_millis(self.setup.profile.spec.interrupt.grace_ms),
            outcome,
        };
    }

    /// `architect approve|deny`: types the waiting question's yes or no key.
    fn answer(&mut self, now: Instant, approve: bool, question_id: &str) {
        let screen = self.screen.clone();
        let Some(open) = self.question.as_mut().filter(|q| q.answered.is_none()) else {
            self.emit(SessionEvent::AnswerRefused {
                reason: format!(
                    "question {question_id} is not open: no permission question is waiting for a person on this session"
                ),
            });
            return;
        };
        if open.id.as_deref() != Some(question_id) {
            // The person read another question than the one open now: answer nothing.
            let now_open = format!(
                "{} ({})",
                open.id.as_deref().unwrap_or("?"),
                open.question
                    .action
                    .as_deref()
                    .unwrap_or("action unreadable")
            );
            self.emit(SessionEvent::AnswerRefused {
                reason: format!(
                    "question {question_id} is no longer open; open now: {now_open}; not answered"
                ),
            });
            return;
        }
        let keys = &self.setup.profile.spec.permission[open.index];
        let key = if approve { &keys.yes } else { &keys.no }.clone();
        open.answered = Some((now, screen));
        let question = open.question.clone();
        if !approve {
            if let (Some(t), Some(a)) = (self.task.as_mut(), &question.action) {
                t.refused.push(a.clone());
            }
        }
        self.write(key.into_bytes());
        let task_id = self.task.as_ref().map(|t| t.assignment.task_id.clone());
        let (decision, verb) = if approve {
            (Decision::Allow, ("approved", "approve"))
        } else {
            (Decision::Deny, ("denied", "deny"))
        };
        self.emit(SessionEvent::Permission {
            task_id,
            question,
            decision,
            rule: "person".into(),
            reason: format!("{} with architect {}", verb.0, verb.1),
            by: DecidedBy::Person,
        });
    }

    /// Parks the session after a usage limit: the task goes back to the queue.
    fn park(&mut self, now: Instant, message: String, reset: Option<Duration>, backoff_s: u64) {
        let wait = reset.unwrap_or(Duration::from_secs(backoff_s));
        if self.task.is_none() && self.limited_until.is_some_and(|u| u > now) {
            // Already parked (the screen and a hook both told): keep the later reset.
            self.limited_until = self.limited_until.max(Some(now + wait));
            return;
        }
        self.limited_until = Some(now + wait);
        if self.task.is_some() {
            self.finish(AttemptEnd::Limited {
                message: message.clone(),
                reset_in: wait,
            });
        }
        self.emit(SessionEvent::Limited {
            message,
            reset_in: wait,
        });
        self.set_state(SessionState::Limited);
    }

    // ---- time and screens -----------------------------------------------------------

    /// Advances everything that depends on the screen and the time.
    fn advance(&mut self, now: Instant) {
        while self.queued.front().is_some_and(|(at, _)| *at <= now) {
            let (_, bytes) = self.queued.pop_front().expect("checked");
            self.write(bytes);
        }
        if self.state == SessionState::Starting {
            self.advance_starting(now);
            return;
        }
        if self.limited_until.is_some() || self.state == SessionState::Limited {
            // A menu the CLI opened after the limit message is closed, so the session is
            // back at its prompt when the limit resets.
            let still = now.saturating_duration_since(self.last_output) >= QUESTION_SETTLE;
            if let Some(keys) = self.setup.profile.limit_menu(&self.screen) {
                let again = self
                    .dismissed_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= QUESTION_REASK);
                if still && again {
                    self.dismissed_at = Some(now);
                    let keys = keys.as_bytes().to_vec();
                    self.write(keys);
                }
            }
        }
        if let Some(until) = self.limited_until {
            if now < until {
                return;
            }
            self.limited_until = None;
        }
        if let Some(t) = &self.task {
            if now >= t.deadline && !matches!(self.phase, Phase::Interrupting { .. }) {
                self.interrupt(now, AttemptEnd::TimedOut);
            }
        }
        let debounce = Duration::from_millis(self.setup.profile.spec.done.debounce_ms);
        let quiet = now.saturating_duration_since(self.last_output) >= debounce;
        match self.phase.clone() {
            Phase::Free => self.advance_free(now),
            Phase::Typed { enter_at } => {
                if now >= enter_at {
                    self.press_enter(now);
                    self.phase = Phase::Submitted { at: now };
                }
            }
            Phase::Submitted { at } => self.advance_submitted(now, at, quiet),
            Phase::Running => self.advance_running(now, quiet),
            Phase::Interrupting { kill_at, outcome } => {
                let idle = if self.setup.marks {
                    self.at_prompt
                } else {
                    self.classified == Some(ScreenState::Idle) && quiet
                };
                if idle {
                    self.finish(outcome);
                    self.set_state(SessionState::Idle);
                } else if now >= kill_at {
                    self.finish(outcome);
                    self.out.push(Effect::Kill(format!(
                        "killed: not idle {} ms after the interrupt keys",
                        self.setup.profile.spec.interrupt.grace_ms
                    )));
                }
            }
        }
    }

    fn advance_starting(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_output) < STARTUP_SETTLE && !self.at_prompt {
            return;
        }
        let ready = if self.setup.marks {
            self.at_prompt
        } else {
            self.classified == Some(ScreenState::Idle)
        };
        if ready {
            self.set_state(SessionState::Idle);
            return;
        }
        let text = self.screen.clone();
        // After a rule fires, wait for the screen to answer (change) before matching
        // again, or 1 s if it never does: a slow redraw must not fire a rule twice.
        if let Some((screen, at)) = &self.startup_fired_on {
            if *screen == text && now.saturating_duration_since(*at) < Duration::from_secs(1) {
                return;
            }
        }
        for i in 0..self.setup.profile.startup_rules.len() {
            let (re, rule) = &self.setup.profile.startup_rules[i];
            if self.startup_fired[i] < rule.times && re.is_match(&text) {
                let keys = rule.send.clone();
                self.startup_fired[i] += 1;
                tracing::debug!(session = %self.setup.name, rule = %re.as_str(), "start-up rule fired");
                self.write(keys.into_bytes());
                self.startup_fired_on = Some((text, now));
                return;
            }
        }
        let limit = Duration::from_millis(self.setup.profile.spec.startup.ready_timeout_ms);
        if now.saturating_duration_since(self.started_at) > limit {
            let last = self
                .screen
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            self.out.push(Effect::Kill(format!(
                "did not reach the idle screen within {} ms (last line: {last:?})",
                limit.as_millis()
            )));
        }
    }

    fn advance_free(&mut self, now: Instant) {
        if self.setup.marks {
            if self.at_prompt {
                self.set_state(SessionState::Idle);
            }
            if self.classified == Some(ScreenState::WaitingInput) {
                self.set_state(SessionState::WaitingInput);
            }
            return;
        }
        match self.classified {
            Some(ScreenState::Idle) => {
                if let Some(s) = self.settle_until {
                    let still =
                        now.saturating_duration_since(self.last_output) >= AFTER_HOOK_SETTLE;
                    if now < s || !still {
                        return;
                    }
                    self.settle_until = None;
                }
                self.set_state(SessionState::Idle);
            }
            Some(ScreenState::WaitingInput) => self.set_state(SessionState::WaitingInput),
            Some(ScreenState::Busy) => self.set_state(SessionState::Busy),
            None => {}
        }
    }

    /// Evidence on screen that the prompt was taken, if any.
    fn screen_evidence(&mut self) -> Option<&'static str> {
        let profile = &self.setup.profile;
        let t = self.task.as_mut()?;
        let (transcript, input) = profile.split_input(&self.screen);
        let rows = profile.prompt_rows(transcript, &t.assignment.prompt).len();
        if rows > t.rows_before {
            t.anchor_seen = true;
        }
        t.changed |= self.screen != t.screen_before;
        if self.classified == Some(ScreenState::Busy) {
            t.saw_busy = true;
            return Some("busy_screen");
        }
        if t.anchor_seen {
            return Some("prompt_in_transcript");
        }
        if t.typed_in_box && input.as_deref() == Some("") {
            return Some("input_cleared");
        }
        let legacy = !profile.spec.done.require_busy
            && !profile.anchors_replies()
            && profile.spec.screen.input.is_none();
        if legacy && t.changed {
            return Some("screen_changed");
        }
        None
    }

    fn advance_submitted(&mut self, now: Instant, at: Instant, quiet: bool) {
        if !self.setup.marks {
            if let Some(evidence) = self.screen_evidence() {
                self.accept(now, evidence);
                self.advance_running(now, quiet);
                return;
            }
        }
        // A permission question can come up before any other sign (a CLI that asks at
        // once): it is answered like any other.
        if self.classified == Some(ScreenState::WaitingInput) && !self.setup.marks {
            self.set_state(SessionState::WaitingInput);
            self.handle_question(now);
        }
        let spec = &self.setup.profile.spec;
        let confirm = Duration::from_millis(spec.submit.confirm_timeout_ms);
        let clear = spec.submit.clear.clone();
        let busy_limit = spec.done.busy_timeout_ms.map(Duration::from_millis);
        let Some(t) = self.task.as_ref() else { return };
        let entered = t.entered_at.unwrap_or(at);
        if self.setup.marks {
            return; // the shell always reads the line: its marks will say what happened
        }
        if now.saturating_duration_since(at) >= confirm && self.input_holds_prompt() {
            let enters = t.enters;
            if enters < MAX_ENTERS {
                tracing::debug!(session = %self.setup.name, "the prompt is still in the input box; pressing Enter again");
                self.press_enter(now);
                self.phase = Phase::Submitted { at: now };
            } else {
                if let Some(keys) = clear {
                    self.write(keys.into_bytes());
                }
                let why = format!(
                    "the prompt was not taken: it was still in the input box after Enter was pressed {enters} times"
                );
                self.finish(AttemptEnd::NotTaken(why));
            }
            return;
        }
        if let Some(limit) = busy_limit {
            if now.saturating_duration_since(entered) >= limit && !t.uncertain {
                tracing::warn!(session = %self.setup.name, "no sign that the prompt was taken within {} ms; waiting for the turn to end", limit.as_millis());
                if let Some(t) = self.task.as_mut() {
                    t.uncertain = true;
                }
            }
        }
        let uncertain = self.task.as_ref().is_some_and(|t| t.uncertain);
        if uncertain && self.classified == Some(ScreenState::Idle) && quiet {
            let limit = busy_limit.unwrap_or_default().as_millis();
            self.finish(AttemptEnd::DeliveryUncertain(format!(
                "delivery_uncertain: no sign that the prompt was taken within {limit} ms (no hook, no busy screen, \
                 not shown in the transcript, input box not cleared) and none that it was not; not retried \
                 automatically, so it cannot run twice: check the session and `architect retry` it"
            )));
            self.set_state(SessionState::Idle);
        }
    }

    fn advance_running(&mut self, now: Instant, quiet: bool) {
        if self.setup.marks {
            if self.classified == Some(ScreenState::WaitingInput) {
                self.set_state(SessionState::WaitingInput);
            } else if self.state == SessionState::WaitingInput {
                self.set_state(SessionState::Busy);
            }
            return;
        }
        let _ = self.screen_evidence();
        if self.classified != Some(ScreenState::WaitingInput) {
            self.question = None;
        }
        match self.classified {
            Some(ScreenState::Busy) => self.set_state(SessionState::Busy),
            Some(ScreenState::WaitingInput) => {
                self.set_state(SessionState::WaitingInput);
                self.handle_question(now);
            }
            Some(ScreenState::Idle) | None => {
                if self.state == SessionState::WaitingInput {
                    self.set_state(SessionState::Busy);
                }
            }
        }
        // A usage-limit message that appeared after the prompt.
        let limits = self.setup.profile.limit_matches(&self.screen);
        if self.task.as_ref().is_some_and(|t| limits > t.limits_before) {
            if let Some((message, backoff)) = self.setup.profile.limit_message(&self.screen) {
                let reset = crate::agents::limit::reset_in(&message, &chrono::Local::now());
                self.park(now, message, reset, backoff);
                return;
            }
        }
        let Some(t) = self.task.as_mut() else { return };
        let ready = if self.setup.profile.spec.done.require_busy {
            t.saw_busy || t.anchor_seen
        } else {
            t.saw_busy || t.changed || t.anchor_seen
        };
        let over = self.classified == Some(ScreenState::Idle) && ready && quiet;
        if !over {
            t.idle_since = None;
            return;
        }
        let since = *t.idle_since.get_or_insert(now);
        let grace = Duration::from_millis(self.setup.profile.spec.done.hook_grace_ms);
        if self.setup.hooks && self.hooks_seen && now.saturating_duration_since(since) < grace {
            return; // the turn-end hook may still come, with the exact reply
        }
        if t.uncertain && t.accepted.is_none() {
            return; // handled in advance_submitted
        }
        self.end_turn(now, None, "screen");
        self.set_state(SessionState::Idle);
    }

    /// Ends a CLI turn: the reply from a hook when it gave one, else anchored on screen.
    fn end_turn(&mut self, _now: Instant, hook_reply: Option<String>, ended_by: &str) {
        let Some(t) = self.task.as_ref() else { return };
        let mut result = self.build_result(t);
        if ended_by.starts_with("hook:") {
            // The hook's reply is exact; the screen's (anchored) one is the fallback.
            result.reply = hook_reply.filter(|r| !r.trim().is_empty()).or(result.reply);
        }
        result.turn_end = Some(match (&result.reply, t.refused.last()) {
            (Some(_), _) => "replied".to_string(),
            (None, Some(action)) => format!("refused: {action}"),
            (None, None) => "ended without a reply".to_string(),
        });
        result.ended_by = Some(ended_by.to_string());
        let outcome = match result.exit_status {
            Some(code) if code != 0 => {
                let msg = format!("exit status {code}");
                AttemptEnd::Failed(result, msg)
            }
            _ => AttemptEnd::Completed(result),
        };
        self.finish(outcome);
    }

    /// Reads and decides the permission question on screen (called while a task runs and
    /// the screen reads `waiting_input`).
    fn handle_question(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_output) < QUESTION_SETTLE {
            return;
        }
        let Some(req) = self.setup.profile.permission_request(&self.screen) else {
            return; // a question no rule describes: a person answers with `architect send`
        };
        let question = Question::from_request(&req);
        if let Some(open) = &self.question {
            let same = open.question == question;
            match &open.answered {
                // Waiting for a person: only a different question replaces it (the
                // screen's reading of a question a hook asked exactly never does).
                None if same || open.from_hook => return,
                // Answered: the program has not moved on yet, unless the screen changed and
                // shows another question (or the same one, asked again a while later).
                Some((at, screen)) => {
                    let moved_on = self.screen != *screen
                        && (!same || now.saturating_duration_since(*at) >= QUESTION_REASK);
                    if !moved_on {
                        return;
                    }
                }
                None => {}
            }
        }
        let task_id = self.task.as_ref().map(|t| t.assignment.task_id.clone());
        // A tool request a hook already left to a person: ask about its exact action.
        if let Some(asked) = self.hook_asked.take() {
            let verdict = Verdict {
                decision: Decision::Escalate,
                rule: "escalate.hook".into(),
                reason: "the policy left this exact action to a person".into(),
            };
            let id = question_id();
            self.emit(SessionEvent::ApprovalNeeded {
                id: id.clone(),
                task_id,
                question: asked.clone(),
                verdict,
            });
            self.question = Some(OpenQuestion {
                id: Some(id),
                question: asked,
                index: req.index,
                answered: None,
                from_hook: true,
            });
            return;
        }
        let verdict = decide(
            &self.setup.approvals,
            &question,
            self.setup.cwd.clone(),
            self.setup.home.clone(),
            &self.setup.profile.name,
        );
        let keys = self.setup.profile.spec.permission[req.index].clone();
        let mut id = None;
        let answered = match verdict.decision {
            Decision::Allow | Decision::Deny => {
                let allow = verdict.decision == Decision::Allow;
                let key = if allow { keys.yes } else { keys.no };
                if !allow {
                    if let (Some(t), Some(a)) = (self.task.as_mut(), &question.action) {
                        t.refused.push(a.clone());
                    }
                }
                self.write(key.into_bytes());
                self.emit(SessionEvent::Permission {
                    task_id,
                    question: question.clone(),
                    decision: verdict.decision,
                    rule: verdict.rule,
                    reason: verdict.reason,
                    by: DecidedBy::Policy,
                });
                Some((now, self.screen.clone()))
            }
            Decision::Escalate => {
                let new_id = question_id();
                self.emit(SessionEvent::ApprovalNeeded {
                    id: new_id.clone(),
                    task_id,
                    question: question.clone(),
                    verdict,
                });
                id = Some(new_id);
                None
            }
        };
        self.question = Some(OpenQuestion {
            id,
            question,
            index: req.index,
            answered,
            from_hook: false,
        });
    }

    fn build_result(&self, task: &TaskRun) -> TaskResult {
        let profile = &self.setup.profile;
        let (output, notes) = if self.setup.marks {
            let r = task.output.render();
            (r.text, r.notes)
        } else {
            match profile.spec.result.source {
                ResultSource::Screen => (self.screen.clone(), Vec::new()),
                ResultSource::Transcript => {
                    let r = task.output.render();
                    (trim_transcript(&r.text, profile), r.notes)
                }
            }
        };
        let exit_status = if self.setup.marks {
            task.exit_status
        } else {
            profile.exit_status(&self.screen)
        };
        TaskResult {
            output,
            reply: self.anchored_reply(task),
            exit_status,
            notes,
            ..TaskResult::default()
        }
    }

    /// The reply below this task's prompt (see the module docs).
    fn anchored_reply(&self, task: &TaskRun) -> Option<String> {
        let profile = &self.setup.profile;
        if !profile.anchors_replies() {
            return profile.reply_in(&self.screen);
        }
        let prompt = &task.assignment.prompt;
        let (transcript, _) = profile.split_input(&self.screen);
        let rows = profile.prompt_rows(transcript, prompt);
        if rows.len() > task.rows_before {
            let from = *rows.last().expect("non-empty");
            return profile.reply_in(&transcript[from..]);
        }
        // The prompt scrolled off the top: look in the rows above the screen too.
        if task.anchor_seen {
            if let Some(back) = &self.scrollback {
                let whole = format!("{back}\n{transcript}");
                let rows = profile.prompt_rows(&whole, prompt);
                if let Some(from) = rows.last() {
                    return profile.reply_in(&whole[*from..]);
                }
            }
        }
        None
    }
}

/// A fresh id for a question left to a person (`q-` and 8 hex digits).
fn question_id() -> String {
    format!("q-{}", &super::marks::new_nonce()[..8])
}

/// A finished command's outcome from its exit status.
fn status_outcome(result: TaskResult, status: Option<i32>) -> AttemptEnd {
    match status {
        Some(0) => AttemptEnd::Completed(result),
        Some(code) => AttemptEnd::Failed(result, format!("exit status {code}")),
        None => AttemptEnd::Failed(result, "the command finished without an exit status".into()),
    }
}

/// The transcript with the echo line and the trailing prompt lines dropped, as the
/// profile says.
fn trim_transcript(text: &str, profile: &Profile) -> String {
    let mut lines: Vec<&str> = text.split('\n').collect();
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

/// The last `n` non-empty rows of a rendered screen.
fn last_rows(screen: &str, n: usize) -> String {
    let rows: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    rows[rows.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests;
