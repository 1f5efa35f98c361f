//! Codex CLI (0.169.0) hooks.
//!
//! What the pinned version offers, as measured against the real binary
//! (`tests/fixtures/hooks/codex/`, captured payloads and timelines):
//!
//! | signal | Codex event | what it carries |
//! |---|---|---|
//! | prompt taken | `UserPromptSubmit` | `prompt`, `turn_id` |
//! | tool request | `PreToolUse` (every tool, before it runs) | `tool_name` (`Bash` for shell commands), `tool_input.command` |
//! | approval | `PermissionRequest` (only when Codex would show its dialog) | `tool_input.command` |
//! | turn end | `Stop` | `last_assistant_message` (exact), `transcript_path` (the rollout) |
//! | refused at the dialog | `Interrupt` (no `Stop` follows) | — |
//!
//! - `PreToolUse` can only deny (`permissionDecision: "deny"` with a reason); an
//!   "allow" or "ask" there is an error Codex ignores. So a policy deny answers
//!   `PreToolUse`, and a policy allow answers `PermissionRequest`
//!   (`decision.behavior = "allow"`); "ask" prints nothing, and Codex shows its dialog.
//! - Codex lets a tool run when a `PreToolUse` hook crashes, times out or exits other
//!   than 0 or 2. The hook command is therefore wrapped: any failure of `architect hook`
//!   becomes exit 2 with a reason on stderr, which blocks the tool (fails closed).
//! - Hooks run only when trusted. They are installed in the session's own
//!   `$CODEX_HOME/config.toml`, in a block between two marker lines that architect
//!   rewrites at every start, together with their `[hooks.state]` trust entries: key
//!   `<config.toml path>:<event in snake_case>:<group index>:0`, hash
//!   `sha256:<hex of sha256 of the compact, key-sorted JSON {"event_name", "hooks":
//!   [{"async": false, "command", "timeout", "type": "command"}]}>` (the hash Codex itself
//!   writes when a person trusts the hooks).
//! - Sessions run with `--no-daemon`: hooks are then children of the session's own
//!   process, with its environment (with the shared `codex app-server`, hooks get the
//!   environment of whichever session started it).
//! - Usage: the rollout's `token_usage_record` lines, per turn (`turn_token_usage` of
//!   the last record of the turn); `input_tokens` there includes `cached_input_tokens`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::signal::{AgentUsage, HookAnswer, Signal};
use super::{hook_command, str_field, Installed};
use crate::config::ResolvedSession;
use crate::llm::Usage;
use crate::profile::ActionKind;

/// Marks the start of the block architect writes into `config.toml`.
pub const BLOCK_START: &str =
    "# >>> architect hooks: rewritten by architect at every session start; do not edit >>>";
/// Marks its end.
pub const BLOCK_END: &str = "# <<< architect hooks <<<";
/// The events installed, in order, with each hook's timeout in seconds (Codex's default
/// is 600; it clamps `Interrupt` hooks to 3 s, and the trust hash is over the clamped
/// value).
const EVENTS: &[(&str, u64)] = &[
    ("SessionStart", 30),
    ("UserPromptSubmit", 30),
    ("PreToolUse", 30),
    ("PermissionRequest", 30),
    ("Stop", 30),
    ("Interrupt", 3),
];

/// The session's `CODEX_HOME`: its `CODEX_HOME`, else `<its HOME>/.codex`.
fn codex_home(cfg: &ResolvedSession) -> PathBuf {
    match cfg.env.get("CODEX_HOME") {
        Some(h) => cfg.cwd.join(h),
        None => cfg.home().join(".codex"),
    }
}

/// `PreToolUse` → `pre_tool_use`.
fn snake(event: &str) -> String {
    let mut s = String::new();
    for (i, c) in event.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// The trust hash Codex computes for one command hook (see the module docs).
#[must_use]
pub fn trust_hash(event: &str, command: &str, timeout_s: u64) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let json = format!(
        "{{\"event_name\":{},\"hooks\":[{{\"async\":false,\"command\":{},\"timeout\":{timeout_s},\"type\":\"command\"}}]}}",
        q(&snake(event)),
        q(command)
    );
    let digest = Sha256::digest(json.as_bytes());
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// `text` without architect's block.
fn strip_block(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == BLOCK_START {
            inside = true;
            continue;
        }
        if line == BLOCK_END {
            inside = false;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// How many hook groups the user's own config already has for `event`.
fn existing_groups(user: &toml::Value, event: &str) -> usize {
    user.get("hooks")
        .and_then(|h| h.get(event))
        .and_then(toml::Value::as_array)
        .map_or(0, Vec::len)
}

/// Writes the hooks into the session's `config.toml` and adds `--no-daemon`.
///
/// # Errors
/// When `config.toml` exists but does not parse, or cannot be written.
pub fn install(cfg: &ResolvedSession) -> std::io::Result<Installed> {
    install_into(&codex_home(cfg))
}

/// [`install`] into the `CODEX_HOME` `dir`.
///
/// # Errors
/// As [`install`].
pub fn install_into(dir: &Path) -> std::io::Result<Installed> {
    let path = dir.join("config.toml");
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(annotate(e, "reading", &path)),
    };
    let user = strip_block(&old);
    let parsed: toml::Value = toml::from_str(&user).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not parse, so architect cannot add its hooks: {e}",
                path.display()
            ),
        )
    })?;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut block = format!("\n{BLOCK_START}\n");
    let mut state = String::new();
    for (event, timeout) in EVENTS {
        let mut command = hook_command("codex", event);
        if *event == "PreToolUse" {
            // Codex runs a tool whose hook fails: any failure here must block instead.
            command.push_str(
                " || { echo 'architect: the policy hook failed, so the tool is refused' >&2; exit 2; }",
            );
        }
        let _ = write!(
            block,
            "[[hooks.{event}]]\n[[hooks.{event}.hooks]]\ntype = \"command\"\ncommand = {}\ntimeout = {timeout}\n\n",
            q(&command)
        );
        let key = format!(
            "{}:{}:{}:0",
            path.display(),
            snake(event),
            existing_groups(&parsed, event)
        );
        let _ = write!(
            state,
            "[hooks.state.{}]\ntrusted_hash = {}\n\n",
            q(&key),
            q(&trust_hash(event, &command, *timeout))
        );
    }
    block.push_str(&state);
    block.push_str(BLOCK_END);
    block.push('\n');
    let mut text = user.trim_end().to_string();
    text.push('\n');
    text.push_str(&block);
    std::fs::create_dir_all(dir).map_err(|e| annotate(e, "creating", dir))?;
    super::write_replacing(&path, &text)?;
    Ok(Installed {
        args: vec!["--no-daemon".into()],
        ..Installed::default()
    })
}

fn annotate(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Codex's hook JSON as a signal.
///
/// # Errors
/// An event this module does not know.
pub fn translate(event: &str, input: &Value) -> Result<Signal, String> {
    Ok(match event {
        "SessionStart" => Signal::SessionStart {
            source: str_field(input, "source"),
            conversation: str_field(input, "session_id"),
        },
        "UserPromptSubmit" => Signal::PromptSubmitted {
            prompt: str_field(input, "prompt"),
        },
        "PreToolUse" => tool_request(input, true),
        "PermissionRequest" => tool_request(input, false),
        "Stop" => Signal::TurnEnd {
            reply: str_field(input, "last_assistant_message"),
            error: None,
        },
        // A person refused the dialog: the turn is over, with no reply.
        "Interrupt" => Signal::TurnEnd {
            reply: None,
            error: None,
        },
        "PostToolUse" | "SessionEnd" | "PreCompact" | "PostCompact" => Signal::Other,
        other => return Err(format!("codex: unknown hook event {other:?}")),
    })
}

fn tool_request(input: &Value, deny_only: bool) -> Signal {
    let tool = str_field(input, "tool_name").unwrap_or_default();
    let tool_input = &input["tool_input"];
    let command = str_field(tool_input, "command").or_else(|| str_field(tool_input, "cmd"));
    match (tool.as_str(), command) {
        ("Bash" | "exec_command" | "shell" | "local_shell", Some(c)) => Signal::ToolRequest {
            tool,
            kind: ActionKind::Command,
            action: Some(c),
            deny_only,
        },
        _ => Signal::ToolRequest {
            tool,
            kind: ActionKind::Tool,
            action: (!tool_input.is_null()).then(|| tool_input.to_string()),
            deny_only,
        },
    }
}

/// After the `Stop` hook was answered: the turn's usage from the rollout at
/// `transcript_path`, once it stopped changing (at most 1.5 s).
#[must_use]
pub fn late(event: &str, input: &Value) -> Option<Signal> {
    if event != "Stop" {
        return None;
    }
    let path = str_field(input, "transcript_path")?;
    let turn = str_field(input, "turn_id")?;
    let model = str_field(input, "model");
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let mut last: Option<Vec<AgentUsage>> = None;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let now = usage_of_turn(&text, &turn, model.clone());
        let stable = !now.is_empty() && last.as_ref() == Some(&now);
        if stable || std::time::Instant::now() >= deadline {
            return Some(Signal::TurnUsage { usage: now });
        }
        last = Some(now);
        std::thread::sleep(std::time::Duration::from_millis(60));
    }
}

/// The last `token_usage_record` of `turn` in a rollout, normalised (input without
/// cached tokens, output without reasoning tokens).
#[must_use]
pub fn usage_of_turn(rollout: &str, turn: &str, model: Option<String>) -> Vec<AgentUsage> {
    // The turn starts at its first line: parse from there, not from the start.
    let rollout = super::tail_from_first(rollout, &format!("\"turn_id\":\"{turn}\""));
    let last = rollout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "token_usage_record" && v["payload"]["turn_id"] == turn);
    let Some(rec) = last else {
        return Vec::new();
    };
    let u = &rec["payload"]["turn_token_usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let cached = n("cached_input_tokens");
    let reasoning = n("reasoning_output_tokens");
    vec![AgentUsage {
        model,
        tokens: Usage {
            input: n("input_tokens").saturating_sub(cached),
            output: n("output_tokens").saturating_sub(reasoning),
            cache_read: cached,
            cache_write: n("cache_write_input_tokens"),
            reasoning,
        },
    }]
}

/// The hook's output for Codex (see the module docs).
#[must_use]
pub fn render(event: &str, answer: &HookAnswer) -> (String, i32) {
    let json = match (event, answer) {
        ("PreToolUse", HookAnswer::Deny { reason }) => serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }),
        ("PermissionRequest", HookAnswer::Allow { .. }) => serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": {"behavior": "allow"},
            }
        }),
        ("PermissionRequest", HookAnswer::Deny { reason }) => serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": {"behavior": "deny", "message": reason},
            }
        }),
        _ => return (String::new(), 0),
    };
    (json.to_string(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Value {
        crate::agents::fixture_json("codex", path)
    }

    #[test]
    fn trust_hashes_match_the_ones_codex_wrote() {
        // Test vectors from the real binary (research notes, /work/research/codex.md §1).
        assert_eq!(
            trust_hash(
                "PreToolUse",
                "/tmp/rc/fakearch hook codex PreToolUse || { echo 'architect: policy hook failed; denied' >&2; exit 2; }",
                30
            ),
            "sha256:b4f9bcb5cd4f56cc0d06bf40688fe26ce98abc1962c4f70970e40d2f72f05df5"
        );
        assert_eq!(
            trust_hash(
                "PreToolUse",
                "HOOK_DIR=/tmp/rc/r-untrusted/hooklog /tmp/rc/hook.py hook codex PreToolUse",
                600
            ),
            "sha256:b1a67a111c155cf18fc80f84803799e8860a7f48332ebd44eda07291ef233705"
        );
    }

    #[test]
    fn captured_payloads_become_signals() {
        let s = translate(
            "UserPromptSubmit",
            &fixture("a-text/02-UserPromptSubmit.json"),
        )
        .unwrap();
        assert_eq!(
            s,
            Signal::PromptSubmitted {
                prompt: Some("Say hello".into())
            }
        );
        let s = translate(
            "PreToolUse",
            &fixture("d-escalated-pretooluse-deny/03-PreToolUse.json"),
        )
        .unwrap();
        assert_eq!(
            s,
            Signal::ToolRequest {
                tool: "Bash".into(),
                kind: ActionKind::Command,
                action: Some("touch escalated.txt".into()),
                deny_only: true,
            }
        );
        let Signal::TurnEnd { reply, .. } =
            translate("Stop", &fixture("a-text/03-Stop.json")).unwrap()
        else {
            panic!("not a turn end")
        };
        assert_eq!(reply.as_deref(), Some("Hello from the mock model."));
    }

    #[test]
    fn usage_is_the_last_record_of_the_turn_without_double_counting() {
        let rollout = crate::agents::fixture("codex", "b-tool-auto/rollout.jsonl");
        let u = usage_of_turn(
            &rollout,
            "01a232e8-e308-70a3-8c54-f9774aeecabd",
            Some("m".into()),
        );
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].tokens.input, 20657);
        assert_eq!(u[0].tokens.output, 20);
    }

    #[test]
    fn a_deny_answers_pre_tool_use_and_an_allow_answers_permission_request() {
        let deny = HookAnswer::Deny {
            reason: "no".into(),
        };
        let (out, code) = render("PreToolUse", &deny);
        assert_eq!(code, 0);
        assert!(out.contains("\"permissionDecision\":\"deny\""), "{out}");
        let allow = HookAnswer::Allow {
            reason: "ok".into(),
        };
        assert_eq!(render("PreToolUse", &allow), (String::new(), 0));
        assert!(render("PermissionRequest", &allow)
            .0
            .contains("\"behavior\":\"allow\""));
        let ask = HookAnswer::Ask {
            reason: "person".into(),
        };
        assert_eq!(render("PermissionRequest", &ask), (String::new(), 0));
    }

    #[test]
    fn installing_keeps_the_users_config_and_replaces_the_old_block() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("codex-home");
        std::fs::create_dir_all(&home).unwrap();
        let cfg_path = home.join("config.toml");
        std::fs::write(&cfg_path, "model = \"m\"\n[[hooks.Stop]]\n[[hooks.Stop.hooks]]\ntype = \"command\"\ncommand = \"mine\"\n").unwrap();
        install_into(&home).unwrap();
        install_into(&home).unwrap();
        let text = std::fs::read_to_string(&cfg_path).unwrap();
        assert_eq!(text.matches(BLOCK_START).count(), 1, "{text}");
        assert!(text.starts_with("model = \"m\""));
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(parsed["hooks"]["Stop"].as_array().unwrap().len(), 2);
        let key = format!("{}:stop:1:0", cfg_path.display());
        assert!(parsed["hooks"]["state"].get(&key).is_some(), "{text}");
    }
}
