//! Agent CLIs' structured signals: installing their hooks for one session, and
//! translating what the hooks send into [`Signal`]s.
//!
//! Each supported CLI has a module with two halves: `install` writes the CLI's hook
//! settings into the session's private runtime directory and says which arguments and
//! environment make the CLI read them (never the user's own settings files); `translate`
//! turns the JSON a hook receives on stdin into a [`Signal`], and an [`HookAnswer`] back
//! into the output the CLI expects.
//!
//! [`signal`] is the vocabulary the adapters translate into, which the session machine
//! and `architect hook` speak too; [`limit`] reads the reset time out of a CLI's usage-
//! or rate-limit message (from a hook or from the screen).

pub mod claude;
pub mod codex;
pub mod gemini;
pub mod limit;
pub mod signal;

use std::collections::BTreeMap;

use crate::config::ResolvedSession;
use crate::runtime_dir::RuntimeDir;
use signal::{HookAnswer, Signal};

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
        "gemini" => gemini::install(cfg),
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
        "gemini" => gemini::translate(event, input),
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
        "gemini" => gemini::late(event, input),
        _ => None,
    }
}

/// Whether `agent`'s hook `event` asks whether a tool may run (its answer must then
/// refuse when anything goes wrong).
#[must_use]
pub fn is_tool_event(agent: &str, event: &str) -> bool {
    matches!(
        (agent, event),
        ("claude-code" | "codex", "PreToolUse" | "PermissionRequest") | ("gemini", "BeforeTool")
    )
}

/// The CLIs whose hooks architect installs.
pub const AGENTS: &[&str] = &["claude-code", "codex", "gemini"];

/// What the hook prints and its exit status, for `answer` to `agent`'s `event`.
#[must_use]
pub fn render(agent: &str, event: &str, answer: &HookAnswer) -> (String, i32) {
    match agent {
        "claude-code" => claude::render(event, answer),
        "codex" => codex::render(event, answer),
        "gemini" => gemini::render(event, answer),
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

/// Replaces `path` atomically (temporary file, `fsync`, rename), keeping its mode (0600
/// when new): for the CLI settings files architect adds its hooks to.
///
/// # Errors
/// When the temporary file cannot be written or renamed.
pub(crate) fn write_replacing(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let annotate = |e: std::io::Error, what: &str, p: &std::path::Path| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o777);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.architect-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| annotate(e, "creating", &tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| annotate(e, "writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).map_err(|e| annotate(e, "replacing", path))
}

/// A captured hook fixture, `tests/fixtures/hooks/<agent>/<path>`.
#[cfg(test)]
fn fixture(agent: &str, path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hooks")
        .join(agent)
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A captured hook payload as JSON.
#[cfg(test)]
fn fixture_json(agent: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(fixture(agent, path).trim()).unwrap()
}

/// The tail of a JSON-lines file from the line holding the last occurrence of `needle`
/// (the whole text when it is not there): a long session file is parsed from its last
/// turn, not from its start.
fn tail_from_last<'a>(text: &'a str, needle: &str) -> &'a str {
    match text.rfind(needle) {
        Some(i) => &text[text[..i].rfind('\n').map_or(0, |n| n + 1)..],
        None => text,
    }
}

/// The tail of a JSON-lines file from the line holding the first occurrence of `needle`
/// (the whole text when it is not there).
fn tail_from_first<'a>(text: &'a str, needle: &str) -> &'a str {
    match text.find(needle) {
        Some(i) => &text[text[..i].rfind('\n').map_or(0, |n| n + 1)..],
        None => text,
    }
}

/// A string field of a JSON object.
fn str_field(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key)?.as_str().map(str::to_string)
}
