//! Structured signals from an agent CLI's hooks, normalised across CLIs.
//!
//! `architect hook <agent> <event>` runs inside the CLI (Claude Code hooks, Codex hooks
//! and `notify`, Gemini CLI hooks), reads the CLI's JSON on stdin, turns it into one
//! [`Signal`] and sends it to the session it runs under ([`HookMessage`], one JSON line
//! over the session's hook socket). The session answers with one [`HookAnswer`] line,
//! which the hook program turns back into the CLI's own output format.

use serde::{Deserialize, Serialize};

use crate::llm::Usage;
use crate::profile::ActionKind;

/// What a hook reports, whichever CLI sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    /// The CLI started (or resumed) a conversation: its hooks work.
    SessionStart {
        /// `startup`, `resume`, … as the CLI says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// The CLI's id of the conversation (to resume it after a crash).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<String>,
    },
    /// The CLI took a prompt (Claude Code and Codex `UserPromptSubmit`, Gemini
    /// `BeforeAgent`): proof that the prompt was taken.
    PromptSubmitted {
        /// The prompt text, as the CLI got it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
    /// The model wants to use a tool (`PreToolUse`, `BeforeTool`): the session answers
    /// allow, deny or ask from the policy.
    ToolRequest {
        /// The CLI's tool name (`Bash`, `exec_command`, `run_shell_command`, …).
        tool: String,
        /// What the tool does, as the policy sees it.
        kind: ActionKind,
        /// The exact command line, path or URL (`None`: not known).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        /// The CLI cannot be told "allow" here (Codex's `PreToolUse`, Gemini's
        /// `BeforeTool`): an allow is not answered, nor logged; the CLI asks again where
        /// it can be answered (a `PermissionRequest` hook, its dialog) or runs the tool by
        /// its own rules. A deny and an escalation are answered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deny_only: bool,
    },
    /// The turn ended (`Stop`, `AfterAgent`, Codex `Interrupt`).
    TurnEnd {
        /// The last reply of the turn, exactly as the agent wrote it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply: Option<String>,
        /// Why the turn failed, when it did (an API error): the task fails with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Token usage of the turn that just ended, by model, read from the CLI's own
    /// session files once they are written (after the turn-end signal).
    TurnUsage {
        /// Usage by model.
        usage: Vec<AgentUsage>,
    },
    /// The CLI waits for a person (`Notification`).
    Notification {
        /// Its message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// The CLI hit a usage or rate limit.
    Limited {
        /// What it said.
        message: String,
        /// Seconds until the limit resets, when it said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reset_in_s: Option<u64>,
    },
    /// Anything else (logged only).
    Other,
}

/// Token usage of one model within a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentUsage {
    /// The model that was billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tokens by kind.
    #[serde(flatten)]
    pub tokens: Usage,
}

/// One line from `architect hook` to the session's hook socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookMessage {
    /// The session's hook token (`ARCHITECT_HOOK_TOKEN`): a hook of another session, or
    /// a forged one, is refused.
    pub token: String,
    /// The CLI (`claude-code`, `codex`, `gemini`).
    pub agent: String,
    /// The CLI's own event name (`UserPromptSubmit`, `Stop`, …).
    pub event: String,
    /// What it means.
    pub signal: Signal,
}

/// The session's answer to a hook, one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case", deny_unknown_fields)]
pub enum HookAnswer {
    /// Received; nothing to decide.
    Ok,
    /// Run the tool.
    Allow {
        /// The policy rule and why.
        reason: String,
    },
    /// Do not run the tool; the reason goes back to the model.
    Deny {
        /// The policy rule and why.
        reason: String,
    },
    /// Leave it to a person: the CLI shows its own permission question, which the session
    /// escalates.
    Ask {
        /// Why a person decides.
        reason: String,
    },
    /// Refused: the message does not belong to this session.
    Refused {
        /// Why.
        reason: String,
    },
}
