//! Gemini CLI (0.61.0) hooks.
//!
//! What the pinned version offers, as measured against the real program
//! (`tests/fixtures/hooks/gemini/`, captured payloads and timelines):
//!
//! | signal | Gemini CLI event | what it carries |
//! |---|---|---|
//! | hooks work | `SessionStart` (0.4–1.6 s after the first idle screen) | `source` |
//! | prompt taken | `BeforeAgent` | `prompt` |
//! | tool request | `BeforeTool` | `tool_name` (`run_shell_command`, `write_file`, …), `tool_input` |
//! | waiting for a person | `Notification` | the question's details |
//! | turn end | `AfterAgent` | `prompt`; the session file at `transcript_path` |
//!
//! - Hooks live in the session's `~/.gemini/settings.json` (no variable names another
//!   settings file, and system settings must be owned by root): architect adds its own
//!   entries, each named `architect`, and replaces them at every start; the user's other
//!   settings and hooks stay as they are. Gemini CLI runs no hook in a folder it does not
//!   trust, and after answering its trust dialog it restarts without them, so the session
//!   runs with `GEMINI_CLI_TRUST_WORKSPACE=true` (the profile would answer "trust").
//! - `BeforeTool` can deny (`{"decision": "deny", "reason"}`) or force the dialog
//!   (`"ask"`); an "allow" only means "not blocked", and Gemini CLI still asks where it
//!   would: the screen rules answer that dialog from the policy. So allows are not
//!   answered here.
//! - A hook that fails lets the tool run (exit 1, no output, a timeout, a signal); exit 2
//!   with a reason on stderr blocks. The command is wrapped so that any failure of
//!   `architect hook` becomes that.
//! - `AfterAgent`'s `prompt_response` is garbled for streamed replies (chunks repeated);
//!   the reply and the usage come from the session file, which holds the clean reply
//!   when `AfterAgent` runs: JSON lines whose records are upserted by `id`, a
//!   `{"$set": {"messages": […]}}` line replacing the whole list.
//! - A refusal at the dialog (Esc) fires no `AfterAgent`: the screen ends those turns.

use serde_json::Value;

use super::signal::{AgentUsage, HookAnswer, Signal};
use super::{hook_command, str_field, Installed};
use crate::config::ResolvedSession;
use crate::llm::Usage;
use crate::profile::ActionKind;

/// Events installed, with each hook's timeout in ms.
const EVENTS: &[(&str, u64)] = &[
    ("SessionStart", 10_000),
    ("BeforeAgent", 10_000),
    ("BeforeTool", 30_000),
    ("Notification", 5_000),
    ("AfterAgent", 10_000),
];
/// The name architect's hook entries carry (short: Gemini CLI shows it on the spinner
/// row while a hook runs).
const NAME: &str = "architect";

/// The session's Gemini CLI home: `GEMINI_CLI_HOME`, else its `HOME`.
fn gemini_home(cfg: &ResolvedSession) -> std::path::PathBuf {
    cfg.env
        .get("GEMINI_CLI_HOME")
        .map_or_else(|| cfg.home(), std::path::PathBuf::from)
}

/// `settings` with architect's hook entries (re)placed.
#[must_use]
pub fn with_hooks(mut settings: Value) -> Value {
    if !settings.is_object() {
        settings = serde_json::json!({});
    }
    let hooks = settings
        .as_object_mut()
        .expect("an object")
        .entry("hooks")
        .or_insert_with(|| serde_json::json!({}));
    if !hooks.is_object() {
        *hooks = serde_json::json!({});
    }
    let hooks = hooks.as_object_mut().expect("an object");
    // Drop architect's old entries, keep the user's.
    for groups in hooks.values_mut() {
        if let Some(list) = groups.as_array_mut() {
            for g in list.iter_mut() {
                if let Some(hs) = g.get_mut("hooks").and_then(Value::as_array_mut) {
                    hs.retain(|h| h["name"] != NAME);
                }
            }
            list.retain(|g| g["hooks"].as_array().is_none_or(|h| !h.is_empty()));
        }
    }
    for (event, timeout) in EVENTS {
        let mut command = hook_command("gemini", event);
        if *event == "BeforeTool" {
            // Gemini CLI runs the tool when a hook fails; exit 2 with a reason blocks it.
            command.push_str(
                " || { echo 'architect: the policy hook failed, so the tool is refused' >&2; exit 2; }",
            );
        }
        let mut group = serde_json::json!({
            "hooks": [{"name": NAME, "type": "command", "command": command, "timeout": timeout}]
        });
        if *event == "BeforeTool" {
            group["matcher"] = Value::String("*".into());
        }
        let list = hooks
            .entry((*event).to_string())
            .or_insert_with(|| serde_json::json!([]));
        if !list.is_array() {
            *list = serde_json::json!([]);
        }
        list.as_array_mut().expect("an array").push(group);
    }
    settings
}

/// Adds architect's hooks to the session's `~/.gemini/settings.json`.
///
/// # Errors
/// When the file exists but is not JSON, or cannot be written.
pub fn install(cfg: &ResolvedSession) -> std::io::Result<Installed> {
    let dir = gemini_home(cfg).join(".gemini");
    let path = dir.join("settings.json");
    let old = match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().is_empty() => serde_json::json!({}),
        Ok(t) => serde_json::from_str(&t).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is not JSON, so architect cannot add its hooks: {e}",
                    path.display()
                ),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e),
    };
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string_pretty(&with_hooks(old)).unwrap_or_default();
    super::write_replacing(&path, &text)?;
    // Gemini CLI runs no hook in a folder it does not trust, and after its trust dialog it
    // restarts without them: the session's folder is trusted for this process (the
    // profile answered that dialog "trust" anyway).
    let mut installed = Installed::default();
    installed
        .env
        .insert("GEMINI_CLI_TRUST_WORKSPACE".into(), "true".into());
    Ok(installed)
}

/// Gemini CLI's hook JSON as a signal.
///
/// # Errors
/// An event this module does not know.
pub fn translate(event: &str, input: &Value) -> Result<Signal, String> {
    Ok(match event {
        "SessionStart" => Signal::SessionStart {
            source: str_field(input, "source"),
            conversation: str_field(input, "session_id"),
        },
        "BeforeAgent" => Signal::PromptSubmitted {
            prompt: str_field(input, "prompt"),
        },
        "BeforeTool" => tool_request(input),
        "Notification" => Signal::Notification {
            message: str_field(input, "message"),
        },
        "AfterAgent" => {
            let from_file = str_field(input, "transcript_path")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| {
                    let prompt = str_field(input, "prompt").unwrap_or_default();
                    turn(&t, &prompt).0
                });
            // The hook's own copy of the reply is garbled for streamed replies: the
            // session file wins; "[no response text]" means there was none.
            let reply = from_file.or_else(|| {
                str_field(input, "prompt_response").filter(|r| r != "[no response text]")
            });
            Signal::TurnEnd { reply, error: None }
        }
        "AfterTool"
        | "SessionEnd"
        | "PreCompress"
        | "BeforeModel"
        | "AfterModel"
        | "BeforeToolSelection" => Signal::Other,
        other => return Err(format!("gemini: unknown hook event {other:?}")),
    })
}

fn tool_request(input: &Value) -> Signal {
    let tool = str_field(input, "tool_name").unwrap_or_default();
    let ti = &input["tool_input"];
    let (kind, action) = match tool.as_str() {
        "run_shell_command" => (ActionKind::Command, str_field(ti, "command")),
        "write_file" | "replace" => (ActionKind::Edit, str_field(ti, "file_path")),
        "read_file" => (
            ActionKind::Read,
            str_field(ti, "absolute_path").or_else(|| str_field(ti, "file_path")),
        ),
        // Searches, listings, web, MCP tools: Gemini CLI's own rules decide.
        _ => return Signal::Other,
    };
    Signal::ToolRequest {
        tool,
        kind,
        action,
        deny_only: true,
    }
}

/// After `AfterAgent` was answered: the turn's usage from the session file.
#[must_use]
pub fn late(event: &str, input: &Value) -> Option<Signal> {
    if event != "AfterAgent" {
        return None;
    }
    let text = std::fs::read_to_string(str_field(input, "transcript_path")?).ok()?;
    let prompt = str_field(input, "prompt").unwrap_or_default();
    Some(Signal::TurnUsage {
        usage: turn(&text, &prompt).1,
    })
}

/// The messages of a session file, as Gemini CLI reads it back: records upserted by
/// `id` in first-seen order, `{"$set": {"messages": …}}` replacing the list.
fn messages(session: &str) -> Vec<Value> {
    let mut list: Vec<Value> = Vec::new();
    for line in session.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(all) = v.get("$set").and_then(|s| s.get("messages")) {
            list = all.as_array().cloned().unwrap_or_default();
            continue;
        }
        if v.get("type").is_none() || v.get("id").is_none() {
            continue;
        }
        match list.iter_mut().find(|m| m["id"] == v["id"]) {
            Some(m) => *m = v,
            None => list.push(v),
        }
    }
    list
}

/// The reply and usage of the turn whose prompt is `prompt` (its last occurrence).
#[must_use]
pub fn turn(session: &str, prompt: &str) -> (Option<String>, Vec<AgentUsage>) {
    // Parse from the prompt's last record on (records after it are the turn's), unless a
    // `$set` of the whole list comes later: then the list must be rebuilt from the start.
    let quoted = serde_json::to_string(prompt.trim()).unwrap_or_default();
    let tail = super::tail_from_last(session, &quoted);
    let list = if tail.len() < session.len() && !tail.contains("\"$set\":{\"messages\"") {
        messages(tail)
    } else {
        messages(session)
    };
    let is_prompt = |m: &Value| {
        m["type"] == "user"
            && m["content"].as_array().is_some_and(|c| {
                c.iter().any(|p| {
                    p["text"]
                        .as_str()
                        .is_some_and(|t| t.trim() == prompt.trim())
                })
            })
    };
    let Some(start) = list.iter().rposition(is_prompt) else {
        return (None, Vec::new());
    };
    let mut reply = None;
    let mut by_model: std::collections::BTreeMap<String, Usage> = Default::default();
    for m in &list[start + 1..] {
        if m["type"] != "gemini" {
            continue;
        }
        if let Some(text) = m["content"].as_str().filter(|t| !t.trim().is_empty()) {
            reply = Some(text.to_string());
        }
        let t = &m["tokens"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        let model = m["model"].as_str().unwrap_or_default().to_string();
        let e = by_model.entry(model).or_default();
        // Gemini's input count includes the cached tokens.
        e.input += n("input").saturating_sub(n("cached"));
        e.cache_read += n("cached");
        e.output += n("output");
        e.reasoning += n("thoughts");
    }
    let usage = by_model
        .into_iter()
        .map(|(model, tokens)| AgentUsage {
            model: (!model.is_empty()).then_some(model),
            tokens,
        })
        .collect();
    (reply, usage)
}

/// The hook's output for Gemini CLI (see the module docs).
#[must_use]
pub fn render(event: &str, answer: &HookAnswer) -> (String, i32) {
    let json = match (event, answer) {
        ("BeforeTool", HookAnswer::Deny { reason }) => {
            serde_json::json!({"decision": "deny", "reason": reason})
        }
        ("BeforeTool", HookAnswer::Ask { reason }) => {
            serde_json::json!({"decision": "ask", "systemMessage": reason})
        }
        _ => serde_json::json!({}),
    };
    (json.to_string(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        crate::agents::fixture("gemini", path)
    }

    fn transcript(dir: &str) -> String {
        let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hooks/gemini")
            .join(dir);
        let f = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("transcript-"))
            .unwrap();
        std::fs::read_to_string(f.path()).unwrap()
    }

    #[test]
    fn the_reply_comes_clean_from_the_session_file() {
        let t = transcript("a-plain-text");
        let (reply, usage) = turn(&t, "Say hello");
        assert_eq!(reply.as_deref(), Some("Hello from the mock model."));
        assert_eq!(usage.len(), 1);
        // The hook's own copy is garbled.
        let v: Value =
            serde_json::from_str(fixture("a-plain-text/09-AfterAgent.json").trim()).unwrap();
        assert_ne!(v["prompt_response"], "Hello from the mock model.");
    }

    #[test]
    fn usage_counts_each_model_call_once_and_splits_off_cached_tokens() {
        let t = transcript("l-tokens");
        let (reply, usage) = turn(&t, "FIDELITY echo tok-bbbb");
        assert_eq!(reply.as_deref(), Some("echoed tok-bbbb"));
        let u = usage[0].tokens;
        // Two model calls (the tool call, written twice with one id, and the reply).
        assert_eq!(
            (u.input, u.cache_read, u.output),
            (2 * 708, 2 * 300, 2 * 20)
        );
        assert_eq!(usage[0].model.as_deref(), Some("gemini-2.5-flash"));
    }

    #[test]
    fn a_tool_request_only_denies_or_asks() {
        let v: Value =
            serde_json::from_str(fixture("d-beforetool-deny/07-BeforeTool.json").trim()).unwrap();
        assert_eq!(
            translate("BeforeTool", &v).unwrap(),
            Signal::ToolRequest {
                tool: "run_shell_command".into(),
                kind: ActionKind::Command,
                action: Some("touch made-by-agent.txt".into()),
                deny_only: true,
            }
        );
        let (out, code) = render("BeforeTool", &HookAnswer::Deny { reason: "r".into() });
        assert_eq!(
            (out.as_str(), code),
            ("{\"decision\":\"deny\",\"reason\":\"r\"}", 0)
        );
        assert_eq!(render("AfterAgent", &HookAnswer::Ok).0, "{}");
    }

    #[test]
    fn installing_keeps_the_users_hooks_and_replaces_architects() {
        let user = serde_json::json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "hooks": {"AfterAgent": [{"hooks": [{"name": "mine", "type": "command", "command": "x"}]}]}
        });
        let once = with_hooks(user);
        let twice = with_hooks(once.clone());
        assert_eq!(once, twice);
        let after: Vec<&str> = twice["hooks"]["AfterAgent"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["hooks"].as_array().unwrap())
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert_eq!(after, ["mine", "architect"]);
        assert_eq!(twice["security"]["auth"]["selectedType"], "gemini-api-key");
    }
}
