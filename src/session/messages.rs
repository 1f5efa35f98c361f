//! What the daemon and a session thread say to each other: the [`Command`]s a session
//! takes, the [`SessionEvent`]s it reports, and the data they carry. Plain data, spoken
//! by the session thread ([`super::runner`]), its state machine ([`super::machine`]) and
//! the provider loop ([`super::provider`]), so that none of them imports another for it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::approval::{Approvals, DecidedBy, Question};
use crate::agents::signal::AgentUsage;
use crate::policy::{Decision, Verdict};
use crate::types::{AttemptEnd, Complexity};
use crate::worktree::Prepared;

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
    /// Parked after a usage or rate limit, until its reset time; takes no task.
    Limited,
    /// The program is not running (it exited, or is waiting to be restarted).
    Dead,
    /// A person is attached (`architect attach`): takes no new task; a running task goes
    /// on. Never reported by a session's own machine: shown over its state
    /// ([`crate::session::presence`]).
    Attached,
}

impl SessionState {
    /// Every state, in the order reports list them.
    pub const ALL: [Self; 7] = [
        Self::Starting,
        Self::Idle,
        Self::Busy,
        Self::WaitingInput,
        Self::Attached,
        Self::Limited,
        Self::Dead,
    ];

    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Idle => "idle",
            Self::Busy => "busy",
            Self::WaitingInput => "waiting_input",
            Self::Limited => "limited",
            Self::Dead => "dead",
            Self::Attached => "attached",
        }
    }
}

/// A task handed to a session.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Task id.
    pub task_id: String,
    /// Which attempt of the task this is, 1-based (its record's attempts so far + 1): names
    /// the attempt's recording.
    pub attempt: u32,
    /// The task's branch (`locks.branch`): a worktree session switches its worktree to
    /// it before the prompt, and back to its own branch after the task.
    pub branch: Option<String>,
    /// For a provider session: only this provider.
    pub provider: Option<String>,
    /// For a provider session: only providers serving this model.
    pub model: Option<String>,
    /// For a provider session: route by complexity.
    pub complexity: Option<Complexity>,
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
        /// The id of the question the person read; any other is not answered.
        question: String,
    },
    /// Use this policy from now on (config/policy.toml changed).
    SetApprovals(Approvals),
    /// Stop the program (kill its process group) and end the thread.
    Stop,
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
    /// There is evidence that the prompt was taken (`prompt_accepted`).
    PromptAccepted {
        /// Task id.
        task_id: String,
        /// Which evidence: `mark:command_start`, `hook:UserPromptSubmit`, `busy_screen`,
        /// `prompt_in_transcript`, `input_cleared`, `screen_changed`, …
        evidence: String,
        /// Time from the first Enter, in ms.
        after_enter_ms: Option<u64>,
    },
    /// The session hit a usage or rate limit and is parked (`session_limited`).
    Limited {
        /// What the agent said.
        message: String,
        /// How long it is parked.
        reset_in: Duration,
    },
    /// Token usage an agent CLI reported for a task (`agent_usage`).
    Usage {
        /// The task.
        task_id: String,
        /// By model.
        usage: Vec<AgentUsage>,
    },
    /// A hook signal arrived (for the event log; tool requests are logged as
    /// permission decisions).
    Hook {
        /// The task running.
        task_id: Option<String>,
        /// The CLI's event name.
        event: String,
        /// The signal kind (`prompt_submitted`, `turn_end`, …).
        signal: String,
        /// For `session_start`: `startup` or `resume`.
        source: Option<String>,
    },
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
        outcome: AttemptEnd,
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
        /// Its id (answers name it).
        id: String,
        /// The task running.
        task_id: Option<String>,
        /// The question.
        question: Question,
        /// The policy's verdict (escalate) and its rule.
        verdict: Verdict,
    },
    /// A worktree session's worktree was made ready (created, switched, work saved).
    Worktree(Prepared),
    /// An answer from a person could not be given (no question waiting).
    AnswerRefused {
        /// Why.
        reason: String,
    },
    /// The CLI reported its conversation's id (for `[resume]`).
    Conversation {
        /// The id.
        id: String,
    },
    /// A client of the attach socket was given this session's screen
    /// (`session_attached`).
    Attached {
        /// The daemon's id for the client.
        client: u64,
        /// Attach or watch.
        mode: crate::attach::Mode,
    },
    /// A client left (`session_detached`).
    Detached {
        /// The daemon's id for the client.
        client: u64,
        /// Attach or watch.
        mode: crate::attach::Mode,
        /// `detached`, `lost: <why>`, or why the session ended it.
        reason: String,
    },
    /// The program is gone; the thread has ended.
    Exited {
        /// Exit status text ("exit 0", "signal 9", "did not start: …").
        status: String,
        /// Whether it was stopped on request (not a crash).
        requested: bool,
        /// How far the running task's prompt got, when a task was running.
        delivery: Option<Delivery>,
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

/// Where events go: a sink the scheduler drains.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<SessionMessage>;

/// How far a task's prompt got (what a session's death means for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Enter was not pressed: the prompt was provably not taken.
    NotSent,
    /// Enter was pressed, with no evidence either way yet.
    Sent,
    /// There was evidence that it was taken.
    Taken,
}
