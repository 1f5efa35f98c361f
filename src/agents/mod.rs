//! Agent CLIs' structured signals: installing their hooks for one session, and
//! translating what the hooks send into [`Signal`]s.
//!
//! Each supported CLI has a module with two halves: `install` writes the CLI's hook
//! settings into the session's private runtime directory and says which arguments and
//! environment make the CLI read them (never the user's own settings files); `translate`
//! turns the JSON a hook receives on stdin into a [`Signal`], and an [`HookAnswer`] back
//! into the output the CLI expects.

pub mod prices;

use std::collections::BTreeMap;

use crate::config::ResolvedSession;
use crate::session::hooks::RuntimeDir;
use crate::session::signal::{HookAnswer, Signal};

/// What installing a CLI's hooks adds to its command line.
#[derive(Debug, Default)]
pub struct Installed {
    /// Arguments appended to the session's.
    pub args: Vec<String>,
    /// Environment variables added.
    pub env: BTreeMap<String, String>,
}

/// Installs `agent`'s hooks for one session in `dir`.
///
/// # Errors
/// An unknown agent, or a settings file that cannot be written.
pub fn install(agent: &str, dir: &RuntimeDir, cfg: &ResolvedSession) -> std::io::Result<Installed> {
    let _ = (dir, cfg);
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("hooks for agent {agent:?} are not supported"),
    ))
}

/// Turns the JSON `agent`'s hook `event` received on stdin into a signal.
///
/// # Errors
/// An unknown agent or input that is not the CLI's JSON.
pub fn translate(agent: &str, event: &str, input: &serde_json::Value) -> Result<Signal, String> {
    let _ = (event, input);
    Err(format!("unknown agent {agent:?}"))
}

/// What the hook prints and its exit status, for `answer` to `agent`'s `event`.
#[must_use]
pub fn render(agent: &str, event: &str, answer: &HookAnswer) -> (String, i32) {
    let _ = (agent, event, answer);
    (String::new(), 0)
}
