//! What an event says: [`EventBody`], one variant per event type, each with a typed
//! payload (the line's `data` object).
//!
//! This module is the only place that maps event types to and from their `type` strings
//! ([`EventBody::kind`], [`EventBody::from_parts`]). The payload structs serialize to
//! exactly the `data` objects architect has always written: the same field names and
//! value shapes, `null` where a value is absent (fields that are left out instead say so).
//! Keys come out in alphabetical order, as `serde_json`'s map writes them.
//!
//! Reading is lenient: a line whose `type` this build does not know, or whose `data` does
//! not fit its type's payload (a writer from another version), reads as
//! [`EventBody::Other`] with its `type` and `data` as they were; it is never an error.
//!
//! Writers build a payload and hand it to [`super::EventLog::record`]; readers match on
//! [`EventBody`] or ask an event for one payload type with [`super::Event::payload`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::Decision;
use crate::profile::ActionKind;
use crate::spool::task::{TaskState, Violation};
use crate::types::{CircuitState, Conflict, DecidedBy, Resource};
use crate::worktree::{Prepared, Reconciled};

/// An event payload: one variant's data. Implemented by every payload struct.
pub trait Payload: Into<EventBody> + Sized {
    /// The event type (`llm_call`, …).
    const KIND: &'static str;
    /// The payload of `body`, if `body` is this type's variant.
    fn from_body(body: &EventBody) -> Option<&Self>;
}

/// Declares [`EventBody`] and what goes with it from one list of
/// `Variant(Payload) = "type"`.
macro_rules! events {
    ($( $(#[$doc:meta])* $variant:ident($payload:ty) = $kind:literal, )*) => {
        /// What happened: the event's type and its typed data.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum EventBody {
            $( $(#[$doc])* $variant($payload), )*
            /// An event this build cannot read as one of the above: an unknown `type`
            /// (written by another version), or a known one whose `data` does not fit its
            /// payload. Kept as it was, so that it is written back unchanged.
            Other {
                /// The `type` string.
                kind: String,
                /// The `data` object (redacted when written, like any other).
                data: Value,
            },
        }

        impl EventBody {
            /// Every `type` this build writes, in declaration order.
            pub const KINDS: &'static [&'static str] = &[$($kind),*];

            /// The `type` string.
            #[must_use]
            pub fn kind(&self) -> &str {
                match self {
                    $( Self::$variant(_) => $kind, )*
                    Self::Other { kind, .. } => kind,
                }
            }

            /// The payload as the `data` object written to the log (not yet redacted).
            ///
            /// # Errors
            /// When a payload cannot be represented in JSON (a path that is not UTF-8).
            pub fn data(&self) -> serde_json::Result<Value> {
                match self {
                    $( Self::$variant(d) => serde_json::to_value(d), )*
                    Self::Other { data, .. } => Ok(data.clone()),
                }
            }

            /// The body of a line with `type` `kind` and `data`: the typed variant when
            /// `kind` is known and `data` fits it, otherwise [`EventBody::Other`].
            #[must_use]
            pub fn from_parts(kind: String, data: Value) -> Self {
                let typed = match kind.as_str() {
                    $( $kind => <$payload>::deserialize(&data).map(Self::$variant), )*
                    _ => return Self::Other { kind, data },
                };
                typed.unwrap_or(Self::Other { kind, data })
            }
        }

        $(
            impl From<$payload> for EventBody {
                fn from(p: $payload) -> Self {
                    Self::$variant(p)
                }
            }

            impl Payload for $payload {
                const KIND: &'static str = $kind;
                fn from_body(body: &EventBody) -> Option<&Self> {
                    match body {
                        EventBody::$variant(p) => Some(p),
                        _ => None,
                    }
                }
            }
        )*
    };
}

events! {
    /// A valid task file was read from the inbox.
    TaskReceived(TaskReceived) = "task_received",
    /// An inbox file was rejected.
    TaskRejected(TaskRejected) = "task_rejected",
    /// A task entered the queue.
    TaskQueued(TaskQueued) = "task_queued",
    /// A task was handed to a session.
    TaskAssigned(TaskAssigned) = "task_assigned",
    /// The prompt's first byte went to the terminal.
    PromptSent(PromptSent) = "prompt_sent",
    /// A task finished successfully.
    TaskCompleted(TaskCompleted) = "task_completed",
    /// A task failed for good.
    TaskFailed(TaskFailed) = "task_failed",
    /// A task was queued again: an attempt failed, the daemon stopped during it, or a
    /// person asked (`architect retry`).
    TaskRetried(TaskRetried) = "task_retried",
    /// A task was cancelled.
    TaskCancelled(TaskCancelled) = "task_cancelled",
    /// A session changed state (or was removed).
    SessionState(SessionState) = "session_state",
    /// A session's program was started.
    SessionStarted(SessionStarted) = "session_started",
    /// A session's program exited.
    SessionExited(SessionExited) = "session_exited",
    /// A client of the attach socket was given a session's screen (`architect attach` or
    /// `watch`).
    SessionAttached(SessionAttached) = "session_attached",
    /// An attach or watch client left: detached, lost, or its session ended.
    SessionDetached(SessionDetached) = "session_detached",
    /// The daemon started.
    DaemonStarted(DaemonStarted) = "daemon_started",
    /// The daemon stopped.
    DaemonStopped(DaemonStopped) = "daemon_stopped",
    /// The disk refused the spool's writes: they are kept and tried again with backoff,
    /// and intake waits.
    IntakePaused(IntakePaused) = "intake_paused",
    /// The kept writes went through: intake goes on.
    IntakeResumed(IntakeResumed) = "intake_resumed",
    /// Config was (re)loaded, or could not be.
    ConfigApplied(ConfigApplied) = "config_applied",
    /// A Syncthing conflict copy sits in the inbox.
    SyncConflict(SyncConflict) = "sync_conflict",
    /// Text was typed into a session by `architect send`.
    TextSent(TextSent) = "text_sent",
    /// A task took its locks.
    LockAcquired(LockAcquired) = "lock_acquired",
    /// A task's locks are held elsewhere; it waits.
    LockWaiting(LockWaiting) = "lock_waiting",
    /// A task's locks were released.
    LockReleased(LockReleased) = "lock_released",
    /// A permission question was answered, by the policy or by a person.
    PermissionDecided(PermissionDecided) = "permission_decided",
    /// A permission question waits for `architect approve|deny`.
    ApprovalNeeded(ApprovalNeeded) = "approval_needed",
    /// A worktree session's worktree was created or switched (and uncommitted work
    /// saved): [`Prepared`].
    WorktreePrepared(Prepared) = "worktree_prepared",
    /// Worktrees left by a crash or a removed session were cleaned up at start-up.
    WorktreesReconciled(WorktreesReconciled) = "worktrees_reconciled",
    /// One HTTP call to an LLM provider.
    LlmCall(LlmCall) = "llm_call",
    /// A provider's circuit breaker changed.
    BreakerState(BreakerState) = "breaker_state",
    /// A call was not made because it could break a budget.
    BudgetExceeded(BudgetExceeded) = "budget_exceeded",
    /// A prompt was taken by its session.
    PromptAccepted(PromptAccepted) = "prompt_accepted",
    /// An agent CLI's hook reported something.
    HookReceived(HookReceived) = "hook_received",
    /// A session hit a usage limit and is parked.
    SessionLimited(SessionLimited) = "session_limited",
    /// Tokens an agent CLI used for a task.
    AgentUsage(AgentUsage) = "agent_usage",
    /// A step of handing a task between nodes (`docs/multi-node.md`).
    TaskHandoff(TaskHandoff) = "task_handoff",
    /// This node adopted a dead node's tasks.
    NodeAdopted(NodeAdopted) = "node_adopted",
    /// Another node owns this task now; this node forgot it without finishing it.
    TaskDisowned(TaskDisowned) = "task_disowned",
    /// A task ran on two nodes (a partition made a live node look dead); the task id is
    /// the idempotency key.
    DuplicateRun(DuplicateRun) = "duplicate_run",
    /// A notification (`config/notify.toml`) could not be delivered: the command failed
    /// or timed out, the webhook refused it or did not answer, or the queue was full.
    NotifyFailed(NotifyFailed) = "notify_failed",
    /// A line of an attempt's output matched an extraction pattern
    /// (`config/extract.toml`, [`crate::extract`]).
    Extraction(Extraction) = "extraction",
}

/// `notify_failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyFailed {
    /// The `[[notify]]` rule's `name`.
    pub rule: String,
    /// The event it was for (`task_failed`, `approval_needed`, …: a rule's `events` name).
    pub event: String,
    /// What it did, without secrets: `command <program>` or `webhook <scheme>://<host>`
    /// (a webhook's path and query, where tokens live, are never written).
    pub action: String,
    /// What went wrong (`exit status 3: <stderr's last line>`, `HTTP 500`,
    /// `timed out after 10 s`, `queue full`, …).
    pub error: String,
}

/// `extraction`: one match of one extraction pattern in the output of one attempt.
/// An attempt logs at most [`crate::extract::MAX_PER_ATTEMPT`]; the last one logged then
/// says how many more there were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// The attempt whose output it is (1 = first).
    pub attempt: u64,
    /// The line's number in the output (`result.output`), from 1.
    pub line: u64,
    /// The pattern's name.
    pub pattern: String,
    /// The pattern's category.
    pub category: crate::extract::Category,
    /// The pattern's severity.
    pub severity: crate::extract::Severity,
    /// The pattern's named groups that took part: name → text (redacted when written).
    pub fields: std::collections::BTreeMap<String, String>,
    /// The line, at most [`crate::extract::MAX_TEXT_BYTES`] bytes (redacted when written).
    pub text: String,
    /// Matches of this attempt past the limit, not logged (written only on the last
    /// one logged, and only when some were dropped).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

impl Extraction {
    /// The event for `e`, a match in attempt `attempt`'s output.
    #[must_use]
    pub fn new(attempt: u64, e: crate::extract::Extraction) -> Self {
        Self {
            attempt,
            line: e.line,
            pattern: e.pattern,
            category: e.category,
            severity: e.severity,
            fields: e.fields,
            text: e.text,
            dropped: 0,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `task_handoff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskHandoff {
    /// `offered` (giver), `accepted` or `refused` (taker), `released` or `taken_back`
    /// (giver).
    pub step: String,
    /// The other node.
    pub peer: String,
    /// The offer's epoch.
    pub epoch: u64,
    /// Why (refusals and take-backs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `node_adopted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAdopted {
    /// The node presumed dead.
    pub node: String,
    /// The fencing epoch of the adoption.
    pub epoch: u64,
    /// How many of its tasks were taken (queued, and started ones retried).
    pub tasks: u64,
    /// How long its heartbeat had been silent on this node's clock, ms.
    pub silent_ms: u64,
}

/// `task_disowned`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDisowned {
    /// Why (which node owns it now, at which epoch).
    pub why: String,
    /// It was running here: its attempt was interrupted and is not recorded.
    pub was_running: bool,
}

/// `duplicate_run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateRun {
    /// The task id: the idempotency key a consumer of results dedupes by.
    pub idempotency_key: String,
    /// The nodes it ran on.
    pub nodes: Vec<String>,
    /// How it came about.
    pub why: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// `task_received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReceived {
    /// The inbox file name.
    pub file: String,
    /// The file's size, bytes.
    pub bytes: u64,
    /// The prompt's first 200 characters (never the whole prompt: it may be megabytes).
    pub prompt: String,
    /// The prompt's length, characters.
    pub prompt_chars: u64,
    /// SHA-256 of the prompt, hex.
    pub prompt_sha256: String,
}

/// `task_rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRejected {
    /// The inbox file name (a name that is not UTF-8 with its bad bytes replaced).
    pub file: String,
    /// The name it was filed under in `rejected/`.
    pub rejected_as: String,
    /// What is wrong: where, and which rule (never the value).
    pub errors: Vec<Violation>,
}

/// `task_queued`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskQueued {
    /// The task's priority (higher first).
    pub priority: u8,
    /// The session it asked for, if any.
    pub session: Option<String>,
    /// The role it asked for, if any.
    pub role: Option<String>,
    /// The ids it depends on.
    pub depends_on: Vec<String>,
    /// How many of them are not done yet.
    pub waiting_for: u64,
    /// Dependencies no spool directory knows (yet).
    pub unknown_dependencies: Vec<String>,
    /// Attempts already made (a task re-queued after a restart has some).
    pub attempts: u64,
}

/// `task_assigned`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssigned {
    /// The attempt this is (1 = first).
    pub attempt: u64,
}

/// `prompt_sent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSent {
    /// Time from assignment to the write, ms (fractional); `null` when unknown.
    pub since_assigned_ms: Option<f64>,
    /// When the write of the prompt's first byte began (RFC 3339, UTC, µs).
    #[serde(with = "ts_micros")]
    pub written_at: DateTime<Utc>,
}

/// `task_completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    /// Attempts made, this one included.
    pub attempts: u64,
    /// Duration of the last attempt, ms; `null` when no attempt started.
    pub duration_ms: Option<i64>,
    /// The program's exit status, for tasks that ran a command; `null` otherwise.
    pub exit_status: Option<i32>,
    /// Size of the captured output, bytes.
    pub output_bytes: u64,
}

/// `task_failed`: two shapes, told apart by their fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskFailed {
    /// A task the daemon tracked failed for good: its attempts failed, or a dependency
    /// failed, or it could not take its locks.
    Finished {
        /// Attempts made.
        attempts: u64,
        /// Duration of the last attempt, ms; `null` when no attempt started.
        duration_ms: Option<i64>,
        /// Why.
        error: Option<String>,
    },
    /// Its file left `pending/` before the daemon could claim it (someone else has it):
    /// it never ran here.
    NotClaimed {
        /// Always `false`.
        claimed: bool,
        /// What happened to the file.
        error: String,
    },
}

/// `task_retried`. Which fields are written depends on why (absent ones are left out).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskRetried {
    /// Attempts made so far.
    pub attempt: u64,
    /// Why the attempt failed (absent for a manual retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Back-off before the next attempt, ms (present for a failed attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The daemon stopped during the attempt; found at start-up (written only when true).
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// A person asked, with `architect retry` (written only when true).
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
    /// For a manual retry: the final state the task was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TaskState>,
}

/// `task_cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancelled {
    /// Attempts made.
    pub attempts: u64,
}

/// `session_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// The new state (`crate::session::SessionState::as_str`), or `removed` for a
    /// session no longer in the config.
    pub state: String,
    /// The state before (absent for `removed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Why (present for `removed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `session_started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStarted {
    /// The program's pid (= its process group id).
    pub pid: u32,
    /// The command line it was started with.
    pub command: String,
    /// The session's agent profile.
    pub profile: String,
    /// Which program of the session this is (counts restarts and replacements).
    pub generation: u64,
}

/// `session_exited`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionExited {
    /// Exit status text (`exit 0`, `signal 9`, `did not start: …`).
    pub status: String,
    /// Stopped on request (not a crash).
    pub requested: bool,
    /// How long the program ran, ms; `null` when it never started.
    pub uptime_ms: Option<u64>,
}

/// `session_attached`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAttached {
    /// The daemon's id for the client (pairs with `session_detached`).
    pub client: u64,
    /// `attach` (keys go to the session; it takes no new task meanwhile) or `watch`.
    pub mode: String,
    /// The session's own state then (`idle`, `busy`, …).
    pub state: String,
    /// How many `attach` clients it has now.
    pub clients: u32,
}

/// `session_detached`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDetached {
    /// The daemon's id for the client.
    pub client: u64,
    /// `attach` or `watch`.
    pub mode: String,
    /// `detached` (the detach key), `lost: <why>` (the connection closed without a
    /// detach: the client was killed…), or why the session ended it.
    pub reason: String,
    /// The session's own state, which it shows again once no `attach` client is left.
    pub state: String,
    /// How many `attach` clients it still has.
    pub clients: u32,
    /// How long the client was connected, ms.
    pub held_ms: u64,
}

/// `daemon_started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStarted {
    /// The daemon's pid.
    pub pid: u32,
    /// architect's version.
    pub version: String,
    /// The spool directory.
    pub spool: String,
    /// The config directory.
    pub config: String,
}

/// `daemon_stopped`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStopped {
    /// The daemon's pid.
    pub pid: u32,
}

/// `intake_paused`: the disk refused a write of the spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakePaused {
    /// The first error the disk gave (`writing temp file …: No space left on device`).
    pub error: String,
    /// Writes and renames kept for another try.
    pub kept: u64,
}

/// `intake_resumed`: the kept writes went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeResumed {
    /// How long intake waited, ms.
    pub paused_ms: u64,
}

/// `config_applied`: the sessions now configured, or why a changed file was not applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigApplied {
    /// The configured sessions' names (present when applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<String>>,
    /// Whether it was applied (written only when false).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub applied: bool,
    /// Why not (present when not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The file that was not applied, when it is not `sessions.toml`/`architect.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `sync_conflict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncConflict {
    /// The conflict copy's file name in the inbox.
    pub file: String,
    /// What was done with it.
    pub action: String,
}

/// `text_sent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSent {
    /// Size of the text, bytes (the text itself is not logged).
    pub bytes: u64,
    /// Enter was pressed after it.
    pub enter: bool,
}

/// `lock_acquired`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockAcquired {
    /// What was locked (`branch:<name>` or a repository path).
    pub resources: Vec<Resource>,
    /// How long the task waited for them, ms (0: not at all).
    pub waited_ms: u64,
}

/// `lock_waiting`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockWaiting {
    /// What the task asks for.
    pub resources: Vec<Resource>,
    /// The first conflict found: the resource and who holds it.
    pub blocked_by: Conflict,
    /// The conflict in words (`src/db.rs held by task T on session S …`).
    pub reason: String,
}

/// `lock_released`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockReleased {
    /// What was unlocked.
    pub resources: Vec<Resource>,
    /// How long they were held, ms.
    pub held_ms: u64,
}

/// `permission_decided`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionDecided {
    /// The profile's `[[permission]]` rule that saw the question (`bash`, `edit`, …).
    pub permission: String,
    /// What it asked for.
    pub kind: ActionKind,
    /// The requested action as read off the screen; `null` when unreadable.
    pub action: Option<String>,
    /// The tool's name, for `kind = "tool"`; `null` otherwise.
    pub tool: Option<String>,
    /// What was answered.
    pub decision: Decision,
    /// The policy rule that decided (or `person`).
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Who decided.
    pub by: DecidedBy,
}

/// `approval_needed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalNeeded {
    /// The question's id (`architect approve|deny` name it).
    pub question: String,
    /// The profile's `[[permission]]` rule that saw it.
    pub permission: String,
    /// What it asks for.
    pub kind: ActionKind,
    /// The requested action as read off the screen; `null` when unreadable.
    pub action: Option<String>,
    /// The tool's name, for `kind = "tool"`; `null` otherwise.
    pub tool: Option<String>,
    /// The policy rule that escalated it.
    pub rule: String,
    /// Why.
    pub reason: String,
}

/// `worktrees_reconciled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorktreesReconciled {
    /// The repository.
    pub repo: String,
    /// What was cleaned up, saved or left alone.
    pub result: Reconciled,
}

/// `llm_call`: one HTTP attempt.
///
/// Read leniently: a field missing from a line reads as its default (budgets count the
/// spend of any line that has a provider and a cost).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmCall {
    /// The provider's name in `providers.toml`.
    pub provider: String,
    /// The model that answered (or was asked).
    pub model: String,
    /// HTTP status; `null` when there was no response.
    pub status: Option<u16>,
    /// Attempt number with this provider for this request (1-based).
    pub attempt: u32,
    /// Time of the HTTP call, ms.
    pub latency_ms: u64,
    /// Input tokens billed at the input price.
    pub input_tokens: u64,
    /// Output tokens billed at the output price.
    pub output_tokens: u64,
    /// Input tokens read from the provider's cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's cache.
    pub cache_write_tokens: u64,
    /// Reasoning tokens (billed as output).
    pub reasoning_tokens: u64,
    /// Cost of the call, USD (0 for a failed one).
    pub cost_usd: f64,
    /// The call returned an answer.
    pub ok: bool,
    /// What went wrong (API key redacted); `null` when it went right.
    pub error: Option<String>,
}

/// `breaker_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    /// The provider.
    pub provider: String,
    /// The breaker's new state.
    pub state: CircuitState,
    /// Consecutive failures.
    pub failures: u32,
    /// The last failure; `null` when closed.
    pub reason: Option<String>,
    /// When an open breaker lets a probe through; `null` otherwise.
    pub retry_at: Option<DateTime<Utc>>,
}

/// `budget_exceeded`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetExceeded {
    /// The provider that was not called.
    pub provider: String,
    /// Which budget: `provider daily`, `provider monthly`, `total daily`, `total monthly`.
    pub budget: String,
    /// The limit, USD.
    pub limit_usd: f64,
    /// Spent in the period (from the log), USD.
    pub spent_usd: f64,
    /// Reserved by calls in flight on this node, USD.
    pub reserved_usd: f64,
    /// This call's worst-case cost, USD.
    pub estimate_usd: f64,
}

/// `prompt_accepted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptAccepted {
    /// What proved it: `mark:command_start`, `hook:<event>`, `busy_screen`,
    /// `prompt_in_transcript`, `input_cleared`, `screen_changed`, …
    pub evidence: String,
    /// Time from the first Enter, ms; `null` when unknown.
    pub after_enter_ms: Option<u64>,
}

/// `hook_received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookReceived {
    /// The CLI's event name.
    pub event: String,
    /// The signal it was read as (`prompt_submitted`, `turn_end`, …).
    pub signal: String,
    /// For `session_start`: `startup` or `resume`; `null` otherwise.
    pub source: Option<String>,
}

/// `session_limited`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionLimited {
    /// What the agent said.
    pub message: String,
    /// How long the session is parked, s.
    pub reset_in_s: u64,
    /// Until when (RFC 3339, UTC, seconds).
    #[serde(with = "ts_secs")]
    pub until: DateTime<Utc>,
}

/// `agent_usage`: tokens an agent CLI reported for a task, for one model.
///
/// Read leniently, like [`LlmCall`]: a missing field reads as its default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentUsage {
    /// The model that was billed; `null` when the CLI did not say.
    pub model: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to cache.
    pub cache_write_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
    /// Cost, USD, from `config/prices.toml` (0 when not priced).
    pub cost_usd: f64,
    /// `config/prices.toml` has a price for the model.
    pub priced: bool,
}

/// RFC 3339, UTC, microseconds (`2026-12-01T10:00:00.123456Z`).
pub(super) mod ts_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// RFC 3339, UTC, whole seconds (`2026-12-01T10:00:00Z`).
mod ts_secs {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        super::ts_micros::deserialize(d)
    }
}
