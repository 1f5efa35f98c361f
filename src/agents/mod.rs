//! Agent CLIs' structured signals: installing their hooks for one session, and
//! translating what the hooks send into [`Signal`]s.
//!
//! Each supported CLI has a module with two halves: `install` writes the CLI's hook
//! settings into the session's private runtime directory and says which arguments and
//! environment make the CLI read them (never the user's own settings files); `translate`
//! turns the JSON a hook receives on stdin into a [`Signal`], and an [`HookAnswer`] back
//! into the output the CLI expects.

pub mod claude;
pub mod codex;
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
    match agent {
        "claude-code" => claude::install(dir, cfg),
        "codex" => codex::install(cfg),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "hooks for agent {other:?} are not supported (supported: {})",
                AGENTS.join(", ")
            ),
        )),
    }
}

/// Turns the JSON `agent`'s hook `event` received on stdin into a signal.
///
/// # Errors
/// An unknown agent or event.
pub fn translate(agent: &str, event: &str, input: &serde_json::Value) -> Result<Signal, String> {
    match agent {
        "claude-code" => claude::translate(event, input),
        "codex" => codex::translate(event, input),
        other => Err(format!(
            "unknown agent {other:?} (known: {})",
            AGENTS.join(", ")
        )),
    }
}

/// What a hook reports after its answer was given: the usage of a turn that just ended,
/// read from the CLI's session files once they are written (may wait up to 1.5 s).
#[must_use]
pub fn late(agent: &str, event: &str, input: &serde_json::Value) -> Option<Signal> {
    match agent {
        "claude-code" => claude::late(event, input),
        "codex" => codex::late(event, input),
        _ => None,
    }
}

/// The CLIs whose hooks architect installs.
pub const AGENTS: &[&str] = &["claude-code", "codex"];

/// What the hook prints and its exit status, for `answer` to `agent`'s `event`.
#[must_use]
pub fn render(agent: &str, event: &str, answer: &HookAnswer) -> (String, i32) {
    match agent {
        "claude-code" => claude::render(event, answer),
        "codex" => codex::render(event, answer),
        _ => (String::new(), 0),
    }
}

/// The shell command a CLI runs for `agent`'s hook `event`: this executable, quoted.
#[must_use]
pub fn hook_command(agent: &str, event: &str) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "architect".into());
    format!("{} hook {agent} {event}", shell_quote(&exe))
}

/// `s` quoted for a POSIX shell (single quotes).
#[must_use]
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%=".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A string field of a JSON object.
fn str_field(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_string)
}
