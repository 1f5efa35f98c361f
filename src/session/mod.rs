//! Sessions: agent terminals. [`runner`] drives one program in a pseudo-terminal,
//! [`screen`] renders its output and answers terminal queries, [`messages`] is what the
//! daemon and a session say to each other, and [`SessionFile`] is the state each
//! session publishes as `sessions/<name>.json`.

pub mod approval;
pub mod hooks;
pub mod machine;
pub mod marks;
pub mod messages;
pub mod output;
pub mod presence;
pub mod provider;
pub mod runner;
pub mod screen;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use messages::SessionState;

/// `sessions/<name>.json`: a session's current state. Derived state: rewritten by the
/// daemon on every change (atomically, without `fsync`) and rebuilt at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// Session name.
    pub name: String,
    /// Node running it.
    pub node: String,
    /// Profile name.
    pub profile: String,
    /// Role, if any.
    #[serde(default)]
    pub role: Option<String>,
    /// `starting | idle | busy | waiting_input | limited | dead | attached`.
    pub state: SessionState,
    /// The task it is running.
    #[serde(default)]
    pub task_id: Option<String>,
    /// Process id (= process group id) of the program, while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// When `state` last changed.
    pub since: DateTime<Utc>,
    /// Restarts after a death since the daemon started.
    pub restarts: u32,
    /// Why it is dead, when it is.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Parked after a usage limit until then (state `limited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited_until: Option<DateTime<Utc>>,
    /// The permission question waiting for `architect approve|deny`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<PendingApproval>,
    /// While a person is attached (state `attached`): since when, how many clients, and
    /// the session's own state underneath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<crate::session::presence::AttachedInfo>,
}

/// A permission question waiting for a person (`sessions/<name>.json`, `approval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingApproval {
    /// Its id: `architect approve|deny SESSION --question ID` answers this question and
    /// no other.
    pub id: String,
    /// The question.
    #[serde(flatten)]
    pub question: approval::Question,
    /// The policy rule that escalated it.
    pub rule: String,
    /// Why.
    pub reason: String,
    /// Since when it waits.
    pub since: DateTime<Utc>,
}
