//! Plain data types shared across modules: serde, no I/O.
//!
//! They live here, below every module that uses them, so that the task format
//! ([`crate::spool::task`]), the lock engine ([`crate::locks`]) and the LLM client
//! ([`crate::llm`]) can share them without depending on each other: a task record stores
//! its complexity and the lock conflict it waits on, and neither makes the task format
//! depend on the router or the lock files. Likewise what an agent produced
//! ([`TaskResult`]) is stored in the task record and reported by a session, without the
//! task format depending on the sessions.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Checks a task id or session name against `^[A-Za-z0-9_-]{1,64}$`.
#[must_use]
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What the agent produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    /// The output: the transcript after the prompt (escape sequences removed) or the
    /// final screen, as the profile says.
    pub output: String,
    /// The agent's reply, when the profile can read one off the screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The exit status, when the profile can read one (shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// How an agent's turn ended: `replied`, `refused: <action>`, `ended without a
    /// reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_end: Option<String>,
    /// What told the end of the task: `hook:<event>` or `screen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// What a reader should know about `output`: cut at the size limit, invalid UTF-8
    /// replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How an attempt of a task ended, as its session reports it: the session produces it
/// ([`crate::session`]), the scheduler decides the task's next state from it
/// ([`crate::scheduler`]).
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEnd {
    /// The agent finished.
    Completed(TaskResult),
    /// The agent finished, reporting failure (e.g. a non-zero exit status), or the task
    /// could not be run at all (its worktree could not be prepared, the LLM call
    /// failed): what it produced and the error. Failed without a retry.
    Failed(TaskResult, String),
    /// The timeout passed; the program was interrupted (or killed). Retried while the
    /// task has retries left.
    TimedOut,
    /// Interrupted because the task was cancelled.
    Cancelled,
    /// The session was not ready when the task arrived; nothing was typed. Back to the
    /// queue, no attempt counted.
    NotStarted(String),
    /// The prompt is proven not taken (it was still in the input box after every Enter).
    /// Retried while the task has retries left.
    NotTaken(String),
    /// Neither proof that the prompt was taken nor that it was not; the turn is over.
    /// Failed without a retry, so that a prompt never runs twice.
    DeliveryUncertain(String),
    /// The agent hit a usage or rate limit: back to the queue, no attempt counted
    /// against the retries.
    Limited {
        /// What the agent said.
        message: String,
        /// How long the session waits before it takes work again (the session parks
        /// itself; the scheduler does not use it).
        reset_in: Duration,
    },
}

/// Task complexity, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Complexity {
    /// Small, well-defined work: the local model.
    Simple,
    /// The default.
    Standard,
    /// Hard work: the strong model.
    Complex,
}

/// An LLM provider's circuit breaker state ([`crate::llm::breaker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are refused until `retry_at`.
    Open,
    /// One probe call is under way.
    HalfOpen,
}

/// Who answered a permission question ([`crate::session::approval`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The policy, automatically.
    Policy,
    /// A person, with `architect approve|deny`.
    Person,
}

/// Something that can be locked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A git branch, by its short name (`feature/x`).
    Branch(String),
    /// A repository path, normalised ([`crate::locks::normalize_path`]): `"."` is the
    /// whole repository, otherwise components joined by `/` (`src/db.rs`, `docs`).
    Path(String),
}

impl fmt::Display for Resource {
    /// `branch:<name>` for a branch, the path itself for a path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Branch(b) => write!(f, "branch:{b}"),
            Self::Path(p) => f.write_str(p),
        }
    }
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.strip_prefix("branch:") {
            Some(b) => Self::Branch(b.to_string()),
            None => Self::Path(s),
        })
    }
}

impl Resource {
    /// Whether holding `self` and `other` at once is a conflict: the same branch, or two
    /// paths one of which is inside (or equal to) the other.
    #[must_use]
    pub fn overlaps(&self, other: &Resource) -> bool {
        match (self, other) {
            (Self::Branch(a), Self::Branch(b)) => a == b,
            (Self::Path(a), Self::Path(b)) => path_contains(a, b) || path_contains(b, a),
            _ => false,
        }
    }
}

/// Whether repository path `outer` is `inner` or one of its ancestors.
pub(crate) fn path_contains(outer: &str, inner: &str) -> bool {
    outer == "."
        || outer == inner
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Who holds a lock: the content of `@holder.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    /// The locked resource (`branch:<name>` or a repository path).
    pub resource: Resource,
    /// `daemon` (for a task) or `cli` (`architect lock acquire`).
    pub by: HolderKind,
    /// The task holding it, when `by` is `daemon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The session running that task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Node of the holding process.
    pub node: String,
    /// Process id of the holding process.
    pub pid: u32,
    /// When the lock was taken.
    pub since: DateTime<Utc>,
    /// Free text from `architect lock acquire --note`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Kind of lock holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderKind {
    /// The daemon, for a task.
    Daemon,
    /// A person or script through `architect lock acquire`.
    Cli,
}

/// A request refused because something else holds an overlapping lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conflict {
    /// The requested resource that could not be locked.
    pub resource: Resource,
    /// Who holds it or something overlapping, when their holder file says so (`None`:
    /// unknown, e.g. the holder is just starting or finishing).
    #[serde(default)]
    pub holder: Option<Holder>,
}

impl fmt::Display for Conflict {
    /// `src/db.rs held by task T on session S (node, pid P, since …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resource)?;
        match &self.holder {
            None => write!(f, " is locked"),
            Some(h) => {
                let what = if h.resource == self.resource {
                    String::new()
                } else {
                    format!(" (through {})", h.resource)
                };
                match (&h.task, &h.session) {
                    (Some(t), Some(s)) => write!(f, " is held{what} by task {t} on session {s}")?,
                    (Some(t), None) => write!(f, " is held{what} by task {t}")?,
                    _ => write!(f, " is held{what} by `architect lock` (pid {})", h.pid)?,
                }
                write!(
                    f,
                    " on {} since {}",
                    h.node,
                    h.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("abc_DEF-123"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id("é"));
    }
}
