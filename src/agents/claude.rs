//! Claude Code (2.1.197) hooks.
//!
//! What the pinned version offers, as measured against the real binary
//! (`tests/fixtures/hooks/claude-code/`, captured payloads and timelines):
//!
//! | signal | Claude Code event | what it carries |
//! |---|---|---|
//! | hooks work | `SessionStart` (90–190 ms after the first idle screen) | `source`: `startup` or `resume` |
//! | prompt taken | `UserPromptSubmit` | `prompt`, `prompt_id` |
//! | tool request | `PreToolUse` | `tool_name`, `tool_input` (`command`, `file_path`, `url`) |
//! | approval | `PermissionRequest` (only when a dialog would show) | the same |
//! | turn end | `Stop` (before the idle screen is drawn) | `last_assistant_message` (exact) |
//! | turn failed | `StopFailure` (instead of `Stop`) | `error` (`rate_limit`, …), the error text |
//! | waiting for a person | `Notification` | `message`, `notification_type` |
//!
//! - Hooks are installed with `--settings <file>`, a file in the session's private runtime
//!   directory; they run next to the user's own hooks and nothing of the user's changes.
//! - `PreToolUse` answers `permissionDecision` `allow`, `deny` (the reason goes to the
//!   model, and the turn goes on) or `ask` (Claude Code shows its dialog, which a person
//!   answers). Tools the policy has no rule for (search, task lists, MCP tools) get no
//!   answer: Claude Code's own rules apply.
//! - Every hook failure fails open in Claude Code (its own rules decide). So the
//!   `PreToolUse` command ends with `|| exit 2`, which turns a missing or crashed
//!   `architect hook` into a deny, and `architect hook` prints a deny itself when the
//!   session cannot be reached.
//! - A refusal at the dialog (Esc) fires no hook at all: the screen ends those turns.
//! - The transcript is not fully written when `Stop` fires, so usage is read after it
//!   ([`late`]): once the turn's last message is in the file, each message id counted
//!   once (one line per content block, all with the same final usage), `<synthetic>`
//!   lines skipped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::signal::{AgentUsage, HookAnswer, Signal};
use super::{hook_command, str_field, Installed};
use crate::config::ResolvedSession;
use crate::llm::Usage;
use crate::profile::ActionKind;
use crate::runtime_dir::RuntimeDir;

/// Events installed, with each hook's timeout in seconds.
const EVENTS: &[(&str, u64)] = &[
    ("SessionStart", 10),
    ("UserPromptSubmit", 10),
    ("PreToolUse", 60),
    ("PermissionRequest", 60),
    ("Stop", 10),
    ("StopFailure", 10),
    ("Notification", 10),
];

/// The settings JSON with architect's hooks.
#[must_use]
pub fn settings() -> Value {
    let mut hooks = serde_json::Map::new();
    for (event, timeout) in EVENTS {
        let mut command = hook_command("claude-code", event);
        if *event == "PreToolUse" {
            // Claude Code runs the tool when a hook fails; exit 2 blocks it instead.
            command.push_str(" || exit 2");
        }
        hooks.insert(
            (*event).to_string(),
            serde_json::json!([{"hooks": [{"type": "command", "command": command, "timeout": timeout}]}]),
        );
    }
    serde_json::json!({ "hooks": hooks })
}

/// Writes the settings file and returns `--settings <file>`.
///
/// # Errors
/// When the file cannot be written.
pub fn install(dir: &RuntimeDir, _cfg: &ResolvedSession) -> std::io::Result<Installed> {
    let path = dir.write("claude-settings.json", &settings().to_string())?;
    Ok(Installed {
        args: vec!["--settings".into(), path.display().to_string()],
        ..Installed::default()
    })
}

/// Claude Code's hook JSON as a signal.
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
        "PreToolUse" | "PermissionRequest" => tool_request(input),
        "Stop" => Signal::TurnEnd {
            reply: str_field(input, "last_assistant_message"),
            error: None,
        },
        "StopFailure" => {
            let error = str_field(input, "error").unwrap_or_else(|| "unknown".into());
            let text = str_field(input, "last_assistant_message").unwrap_or_default();
            if error == "rate_limit" {
                Signal::Limited {
                    reset_in_s: super::limit::reset_in(&text, &chrono::Local::now())
                        .map(|d| d.as_secs()),
                    message: text,
                }
            } else {
                Signal::TurnEnd {
                    reply: None,
                    error: Some(format!("{error}: {text}")),
                }
            }
        }
        "Notification" => Signal::Notification {
            message: str_field(input, "message"),
        },
        "PostToolUse" | "PostToolBatch" | "SessionEnd" | "SubagentStop" | "PreCompact" => {
            Signal::Other
        }
        other => return Err(format!("claude-code: unknown hook event {other:?}")),
    })
}

fn tool_request(input: &Value) -> Signal {
    let tool = str_field(input, "tool_name").unwrap_or_default();
    let ti = &input["tool_input"];
    let (kind, action) = match tool.as_str() {
        "Bash" => (ActionKind::Command, str_field(ti, "command")),
        "Write" | "Edit" | "MultiEdit" => (ActionKind::Edit, str_field(ti, "file_path")),
        "NotebookEdit" => (ActionKind::Edit, str_field(ti, "notebook_path")),
        "Read" => (ActionKind::Read, str_field(ti, "file_path")),
        "WebFetch" => (ActionKind::Fetch, str_field(ti, "url")),
        // Search, task lists, sub-agents, MCP tools: Claude Code's own rules decide.
        _ => return Signal::Other,
    };
    Signal::ToolRequest {
        tool,
        kind,
        action,
        deny_only: false,
    }
}

/// After the `Stop` hook was answered: the turn's usage, once the transcript has it.
#[must_use]
pub fn late(event: &str, input: &Value) -> Option<Signal> {
    if event != "Stop" {
        return None;
    }
    let path = str_field(input, "transcript_path")?;
    let prompt_id = str_field(input, "prompt_id")?;
    let last = str_field(input, "last_assistant_message");
    // The writer flushes every 100 ms: wait for the turn's last message, at most 1.5 s.
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let (usage, last_text) = turn_usage(&text, &prompt_id);
        let complete = match &last {
            Some(want) => last_text.as_deref().map(str::trim) == Some(want.trim()),
            None => !usage.is_empty(),
        };
        if complete || Instant::now() >= deadline {
            return Some(Signal::TurnUsage { usage });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The usage of the turn started by prompt `prompt_id` in a transcript, by model, and
/// the text of its last assistant text block.
#[must_use]
pub fn turn_usage(transcript: &str, prompt_id: &str) -> (Vec<AgentUsage>, Option<String>) {
    // The turn starts at the prompt's first line: parse from there, not from the start.
    let transcript = super::tail_from_first(transcript, &format!("\"promptId\":\"{prompt_id}\""));
    let mut seen = std::collections::HashSet::new();
    let mut by_model: BTreeMap<String, Usage> = BTreeMap::new();
    let mut last_text = None;
    let mut in_turn = false;
    for line in transcript.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match v["type"].as_str() {
            Some("user") => {
                // Tool results carry the prompt's id too; another prompt ends the turn.
                match v["promptId"].as_str() {
                    Some(id) if id == prompt_id => in_turn = true,
                    Some(_) => in_turn = false,
                    None => {}
                }
            }
            Some("assistant") if in_turn => {
                let m = &v["message"];
                let model = m["model"].as_str().unwrap_or_default().to_string();
                if model == "<synthetic>" {
                    continue;
                }
                if let Some(block) = m["content"].as_array().and_then(|c| c.first()) {
                    if block["type"] == "text" {
                        last_text = block["text"].as_str().map(str::to_string);
                    }
                }
                let id = m["id"].as_str().unwrap_or_default().to_string();
                if !seen.insert(id) {
                    continue;
                }
                let u = &m["usage"];
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                let e = by_model.entry(model).or_default();
                e.input += n("input_tokens");
                e.output += n("output_tokens");
                e.cache_read += n("cache_read_input_tokens");
                e.cache_write += n("cache_creation_input_tokens");
            }
            _ => {}
        }
    }
    let usage = by_model
        .into_iter()
        .map(|(model, tokens)| AgentUsage {
            model: (!model.is_empty()).then_some(model),
            tokens,
        })
        .collect();
    (usage, last_text)
}

/// The hook's output for Claude Code (see the module docs).
#[must_use]
pub fn render(event: &str, answer: &HookAnswer) -> (String, i32) {
    let (decision, reason) = match answer {
        HookAnswer::Allow { reason } => ("allow", reason),
        HookAnswer::Deny { reason } => ("deny", reason),
        HookAnswer::Ask { reason } => ("ask", reason),
        HookAnswer::Ok | HookAnswer::Refused { .. } => return (String::new(), 0),
    };
    let json = match event {
        "PreToolUse" => serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": decision,
                "permissionDecisionReason": reason,
            }
        }),
        "PermissionRequest" if decision != "ask" => {
            let mut d = serde_json::json!({"behavior": decision});
            if decision == "deny" {
                d["message"] = Value::String(reason.clone());
            }
            serde_json::json!({
                "hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": d}
            })
        }
        _ => return (String::new(), 0),
    };
    (json.to_string(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        crate::agents::fixture("claude-code", path)
    }

    fn json(path: &str) -> Value {
        crate::agents::fixture_json("claude-code", path)
    }

    #[test]
    fn captured_payloads_become_signals() {
        assert_eq!(
            translate(
                "UserPromptSubmit",
                &json("a-plain-reply/02-UserPromptSubmit.json")
            )
            .unwrap(),
            Signal::PromptSubmitted {
                prompt: Some("Say hello".into())
            }
        );
        assert_eq!(
            translate("Stop", &json("a-plain-reply/03-Stop.json")).unwrap(),
            Signal::TurnEnd {
                reply: Some("Hello from the mock model.".into()),
                error: None
            }
        );
        assert_eq!(
            translate("PreToolUse", &json("d-pretooluse-deny/03-PreToolUse.json")).unwrap(),
            Signal::ToolRequest {
                tool: "Bash".into(),
                kind: ActionKind::Command,
                action: Some("touch x.txt".into()),
                deny_only: false,
            }
        );
    }

    #[test]
    fn a_rate_limit_failure_parks_and_names_its_reset() {
        let s = translate(
            "StopFailure",
            &json("stop-failure-subscription-session-limit/03-StopFailure.json"),
        )
        .unwrap();
        let Signal::Limited {
            message,
            reset_in_s,
        } = s
        else {
            panic!("{s:?}")
        };
        assert!(message.contains("session limit"));
        assert!(reset_in_s.is_some_and(|s| s <= 24 * 3600));
    }

    #[test]
    fn usage_counts_each_message_once_and_skips_synthetic_lines() {
        let t = fixture("transcript/session-tools-kill-continue-resume.jsonl");
        let (u, last) = turn_usage(&t, "57c249df-dd6f-44a5-a614-20a76b1eb3bf");
        assert_eq!(u.len(), 1);
        let tok = u[0].tokens;
        assert_eq!((tok.input, tok.output), (1200 + 1300 + 1400, 40 + 45 + 60));
        assert_eq!(
            (tok.cache_read, tok.cache_write),
            (800 + 1900 + 2100, 300 + 50)
        );
        assert!(last.unwrap().starts_with("All finished."));
        let (killed, _) = turn_usage(&t, "db1bac9a-9368-411f-8d4d-16a2119f38d0");
        assert!(killed.is_empty(), "{killed:?}");
    }

    #[test]
    fn answers_use_the_hook_specific_output() {
        let deny = HookAnswer::Deny {
            reason: "rule x".into(),
        };
        let (out, code) = render("PreToolUse", &deny);
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny");
        assert_eq!(
            v["hookSpecificOutput"]["permissionDecisionReason"],
            "rule x"
        );
        let (out, _) = render("PermissionRequest", &deny);
        assert!(out.contains("\"behavior\":\"deny\""), "{out}");
        assert_eq!(render("Stop", &HookAnswer::Ok), (String::new(), 0));
        assert_eq!(render("PreToolUse", &HookAnswer::Ok), (String::new(), 0));
    }

    #[test]
    fn the_pre_tool_use_hook_fails_closed() {
        let s = settings();
        let cmd = s["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap();
        assert!(cmd.ends_with(" || exit 2"), "{cmd}");
        let stop = s["hooks"]["Stop"][0]["hooks"][0]["command"]
            .as_str()
            .unwrap();
        assert!(
            !stop.contains("exit 2"),
            "a Stop exit 2 would continue the turn"
        );
    }
}
