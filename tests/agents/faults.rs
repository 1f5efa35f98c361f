//! The agent-CLI delivery faults, through the real CLIs and the daemon, against the
//! mock's fidelity conversation (each prompt `FIDELITY <kind> tok-…` carries a unique
//! token that the model's reply echoes): a quick turn is not taken for a swallowed
//! prompt, a refused turn gets no older reply, with hooks and with hooks missing (the
//! CLI's own switch turned off, so the screen alone decides), a hook that cannot reach
//! the daemon fails closed, and agent usage is priced per task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use architect::log::event::{
    AgentUsage, HookReceived, PermissionDecided, PromptAccepted, SessionLimited, TaskRetried,
};
use architect::policy::Decision;
use architect::spool::task::{TaskRecord, TaskState};

use super::clis;
use super::offline::{self, Cli};
use crate::helper::{mock_control, wait_for, Daemon, Env, Mock, BIN};

/// How long a CLI may take to start; how long a task may take.
const STARTUP: Duration = Duration::from_secs(90);
const TASK: Duration = Duration::from_secs(90);

/// Sessions of one CLI against one mock.
struct Fleet {
    env: Env,
    mock: Mock,
    daemon: Daemon,
    homes: Vec<PathBuf>,
}

/// Turns the CLI's own hooks off in a prepared home (hooks "missing").
fn disable_hooks(cli: &Cli, home: &Path, env: &BTreeMap<String, String>) {
    match cli.profile {
        "claude-code" => {
            std::fs::create_dir_all(home.join(".claude")).unwrap();
            std::fs::write(
                home.join(".claude/settings.json"),
                r#"{"disableAllHooks": true}"#,
            )
            .unwrap();
        }
        "codex" => {
            let cfg = PathBuf::from(&env["CODEX_HOME"]).join("config.toml");
            let mut text = std::fs::read_to_string(&cfg).unwrap();
            text.push_str("\n[features]\nhooks = false\n");
            std::fs::write(cfg, text).unwrap();
        }
        "gemini" => {
            std::fs::write(
                home.join(".gemini/settings.json"),
                r#"{"security": {"auth": {"selectedType": "gemini-api-key"}}, "hooksConfig": {"enabled": false}}"#,
            )
            .unwrap();
        }
        other => panic!("{other}"),
    }
}

impl Fleet {
    fn start(cli: Cli, n: usize, hooks: bool) -> Self {
        Self::start_with(cli, n, hooks, &[])
    }

    /// [`Fleet::start`] with extra environment variables for every session.
    fn start_with(cli: Cli, n: usize, hooks: bool, extra: &[(&str, &str)]) -> Self {
        let bin = clis();
        let env = Env::new("");
        let mock = Mock::start(env.path("mock.jsonl"), None);
        let mut sessions = String::new();
        let mut homes = Vec::new();
        for i in 1..=n {
            let home = env.path(&format!("home-{i}"));
            let work = env.path(&format!("work-{i}"));
            offline::git_workdir(&work).unwrap();
            let mut senv = offline::prepare_home(&cli, &home, &work, &mock.url()).unwrap();
            for (k, v) in extra {
                senv.insert((*k).to_string(), (*v).to_string());
            }
            if !hooks {
                disable_hooks(&cli, &home, &senv);
            }
            // Something a refused `rm -rf ~/important` would destroy.
            std::fs::create_dir_all(home.join("important")).unwrap();
            let name = format!("{}-{i}", cli.binary);
            sessions.push_str(&offline::session_toml(
                &name, &cli, bin, &work, &senv, "agent",
            ));
            homes.push(home);
        }
        env.write_config("sessions.toml", &sessions);
        env.write_config(
            "prices.toml",
            "[[model]]\npattern = \"*\"\ninput = 3.0\noutput = 15.0\ncache_read = 0.3\ncache_write = 3.75\n",
        );
        let daemon = env.daemon();
        for i in 1..=n {
            let name = format!("{}-{i}", cli.binary);
            env.wait_idle(&name, STARTUP);
        }
        Self {
            env,
            mock,
            daemon,
            homes,
        }
    }

    fn session(&self, cli: &Cli, i: usize) -> String {
        format!("{}-{i}", cli.binary)
    }

    /// Submits `FIDELITY <kind> <token>` as task `<token>`.
    fn submit(&self, kind: &str, token: &str, session: Option<&str>) {
        let mut task = serde_json::json!({"id": token, "prompt": format!("FIDELITY {kind} {token}"), "timeout_s": 120, "max_retries": 1});
        if let Some(s) = session {
            task["session"] = s.into();
        }
        self.env
            .drop_task(&format!("{token}.json"), &task.to_string());
    }

    fn done(&self, token: &str) -> (TaskState, TaskRecord) {
        self.env.wait_final(token, TASK)
    }

    /// How many turns the model started for `token`: requests for its prompt that
    /// answered it (a text reply, or a tool call), not follow-ups after a tool result.
    fn deliveries(&self, token: &str) -> usize {
        self.mock
            .requests()
            .iter()
            .filter(|r| r["token"] == token)
            .filter(|r| {
                let a = r["action"].as_str().unwrap_or_default();
                a == "fidelity-reply-text" || a.ends_with("-call")
            })
            .count()
    }

    fn dump_on_failure(&self) {
        if std::thread::panicking() {
            let log = self.daemon.stderr();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- daemon log (last 150 lines) ----\n{}",
                lines[lines.len().saturating_sub(150)..].join("\n")
            );
            for e in self.env.events() {
                eprintln!(
                    "{} {} {:?} {}",
                    e.ts.format("%H:%M:%S%.3f"),
                    e.kind(),
                    e.task_id,
                    e.body.data().unwrap_or_default()
                );
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.dump_on_failure();
    }
}

/// Quick turns (the mock answers at once) on two Claude Code sessions: every task runs
/// exactly once and gets its own reply. With hooks the prompt is taken on the prompt
/// hook; with the hooks switched off, on the screen (the prompt shown in the transcript),
/// never re-sent for want of a busy screen.
fn quick_turns(hooks: bool) {
    let cli = offline::CLAUDE;
    let f = Fleet::start(cli, 2, hooks);
    let tokens: Vec<String> = (0..6)
        .map(|i| format!("tok-q{i}h{}x", u8::from(hooks)))
        .collect();
    for t in &tokens {
        f.submit("reply", t, None);
    }
    for t in &tokens {
        let (state, rec) = f.done(t);
        assert_eq!(state, TaskState::Done, "{t}: {rec:?}");
        assert_eq!(rec.attempts.len(), 1, "{t}: {:?}", rec.attempts);
        let r = rec.result.unwrap();
        assert_eq!(
            r.reply.as_deref(),
            Some(format!("all done {t}").as_str()),
            "{t}"
        );
        assert_eq!(
            f.deliveries(t),
            1,
            "{t} was delivered {} times",
            f.deliveries(t)
        );
    }
    let accepted = f.env.events_of::<PromptAccepted>();
    assert_eq!(accepted.len(), tokens.len(), "{accepted:?}");
    let hook_events = f.env.events_of::<HookReceived>();
    for a in &accepted {
        // Whichever came first: the prompt hook or the busy screen; without hooks, never a hook.
        let evidence = &a.data.evidence;
        assert!(hooks || !evidence.starts_with("hook:"), "{a:?}");
    }
    if hooks {
        for t in &tokens {
            let submitted = hook_events.iter().any(|e| {
                e.task_id.as_deref() == Some(t.as_str()) && e.data.signal == "prompt_submitted"
            });
            assert!(submitted, "no prompt hook for {t}");
        }
    }
    assert_eq!(
        hook_events.is_empty(),
        !hooks,
        "{} hook events",
        hook_events.len()
    );
    assert!(f.env.events_of::<TaskRetried>().is_empty());
}

#[test]
fn claude_code_quick_turns_run_once_with_hooks() {
    quick_turns(true);
}

#[test]
fn claude_code_quick_turns_run_once_on_the_screen_when_hooks_are_missing() {
    quick_turns(false);
}

/// A refused turn (the policy denies `rm -rf ~/important`) right after a turn with a
/// reply, on the same session: the refused task never gets the older reply, and the
/// directory is still there.
fn refused_turn(cli: Cli, hooks: bool) {
    let f = Fleet::start(cli, 1, hooks);
    let session = f.session(&cli, 1);
    let (a, b) = (
        format!("tok-aaa{}", u8::from(hooks)),
        format!("tok-bbb{}", u8::from(hooks)),
    );
    f.submit("reply", &a, Some(&session));
    let (state, rec) = f.done(&a);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.result.unwrap().reply, Some(format!("all done {a}")));
    f.submit("wipe", &b, Some(&session));
    let (state, rec) = f.done(&b);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let r = rec.result.unwrap();
    let reply = r.reply.clone().unwrap_or_default();
    assert!(
        !reply.contains(&a),
        "the refused task got the older reply: {r:?}"
    );
    match &r.reply {
        // With hooks the refusal goes back to the model, which says so.
        Some(text) => assert!(text.contains(&b), "{r:?}"),
        None => assert_eq!(
            r.turn_end.as_deref(),
            Some("refused: rm -rf ~/important"),
            "{r:?}"
        ),
    }
    assert!(f.homes[0].join("important").is_dir(), "rm -rf ran");
    // The hooks really were the ones that spoke (or, switched off, never did).
    let hooks_heard = f.env.events_of::<HookReceived>().len();
    assert_eq!(hooks_heard > 0, hooks, "{hooks_heard} hook events");
    let denied: Vec<_> = f
        .env
        .events_of::<PermissionDecided>()
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some(b.as_str()) && e.data.decision == Decision::Deny)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].data.action.as_deref(), Some("rm -rf ~/important"));
    assert_eq!(f.deliveries(&b), 1);
}

#[test]
fn codex_refused_turn_gets_no_older_reply_with_hooks() {
    refused_turn(offline::CODEX, true);
}

#[test]
fn codex_refused_turn_gets_no_older_reply_when_hooks_are_missing() {
    refused_turn(offline::CODEX, false);
}

#[test]
fn gemini_refused_turn_gets_no_older_reply_with_hooks() {
    refused_turn(offline::GEMINI, true);
}

#[test]
fn gemini_refused_turn_gets_no_older_reply_when_hooks_are_missing() {
    refused_turn(offline::GEMINI, false);
}

/// `architect hook` for a tool request, with the session's socket gone: it refuses.
#[test]
fn a_hook_that_cannot_reach_the_daemon_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "claude-code",
            "PreToolUse",
            r#"{"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"touch x"}}"#,
        ),
        (
            "codex",
            "PreToolUse",
            r#"{"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"touch x"}}"#,
        ),
        (
            "gemini",
            "BeforeTool",
            r#"{"hook_event_name":"BeforeTool","tool_name":"run_shell_command","tool_input":{"command":"touch x"}}"#,
        ),
        // Input that is not even JSON is refused too.
        ("claude-code", "PreToolUse", "not json"),
    ];
    for (agent, event, input) in cases {
        for socket in [Some(dir.path().join("gone.sock")), None] {
            let mut cmd = std::process::Command::new(BIN);
            cmd.args(["hook", agent, event])
                .env_remove("ARCHITECT_HOOK_SOCKET")
                .env_remove("ARCHITECT_HOOK_TOKEN")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(s) = &socket {
                cmd.env("ARCHITECT_HOOK_SOCKET", s)
                    .env("ARCHITECT_HOOK_TOKEN", "x");
            }
            let mut child = cmd.spawn().unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{agent} {event}: {stdout}");
            let v: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{agent} {event} {socket:?}: {e}: {stdout:?}"));
            let denied =
                v["hookSpecificOutput"]["permissionDecision"] == "deny" || v["decision"] == "deny";
            assert!(
                denied,
                "{agent} {event} {socket:?} did not refuse: {stdout}"
            );
        }
    }
}

/// Usage from the CLIs' own session files, priced per task from `config/prices.toml`,
/// matches what the mock reported, and `stats --cost` shows it per session and task.
#[test]
fn agent_usage_is_priced_per_task_and_matches_the_mock() {
    let cli = offline::CLAUDE;
    let f = Fleet::start(cli, 1, true);
    let tokens = ["tok-usea", "tok-useb"];
    for t in tokens {
        f.submit("reply", t, None);
        assert_eq!(f.done(t).0, TaskState::Done);
    }
    wait_for("agent_usage for both tasks", TASK, || {
        let e = f.env.events_of::<AgentUsage>();
        tokens
            .iter()
            .all(|t| e.iter().any(|u| u.task_id.as_deref() == Some(*t)))
    });
    for t in tokens {
        let events: Vec<_> = f
            .env
            .events_of::<AgentUsage>()
            .into_iter()
            .filter(|e| e.task_id.as_deref() == Some(t))
            .map(|e| e.data)
            .collect();
        let sum = |k: fn(&AgentUsage) -> u64| -> u64 { events.iter().map(k).sum() };
        // What the mock reported for this task's model calls.
        let reqs: Vec<_> = f
            .mock
            .requests()
            .into_iter()
            .filter(|r| r["token"] == t)
            .collect();
        let mock = |k: &str| -> u64 { reqs.iter().map(|r| r["usage"][k].as_u64().unwrap()).sum() };
        assert_eq!(sum(|u| u.input_tokens), mock("input_tokens"), "{t}");
        assert_eq!(sum(|u| u.output_tokens), mock("output_tokens"), "{t}");
        assert_eq!(
            sum(|u| u.cache_read_tokens),
            mock("cache_read_tokens"),
            "{t}"
        );
        assert_eq!(
            sum(|u| u.cache_write_tokens),
            mock("cache_creation_tokens"),
            "{t}"
        );
        let cost: f64 = events.iter().map(|u| u.cost_usd).sum();
        #[allow(clippy::cast_precision_loss)]
        let want = (mock("input_tokens") as f64 * 3.0
            + mock("output_tokens") as f64 * 15.0
            + mock("cache_read_tokens") as f64 * 0.3
            + mock("cache_creation_tokens") as f64 * 3.75)
            / 1e6;
        assert!((cost - want).abs() < 1e-12, "{t}: {cost} vs {want}");
    }
    let out = f.env.ok(&["stats", "--cost", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_task = v["agents"]["by_task"].as_array().unwrap();
    assert_eq!(by_task.len(), 2, "{out}");
    assert_eq!(v["agents"]["by_session"][0]["tasks"], 2, "{out}");
    let text = f.env.ok(&["stats", "--cost"]);
    assert!(
        text.contains("tok-usea") && text.contains("claude-1"),
        "{text}"
    );
}

/// A session killed in the middle of a turn: the task is not sent again (its prompt was
/// taken: it may have run), and the restarted session continues the conversation, as the
/// next model request shows.
fn killed_mid_conversation_resumes_it(cli: Cli) {
    let f = Fleet::start(cli, 1, true);
    let session = f.session(&cli, 1);
    f.submit("reply", "tok-resa", None);
    assert_eq!(f.done("tok-resa").0, TaskState::Done);
    // A slow turn, killed once the prompt was taken.
    mock_control(f.mock.port, "GET", "/_mock/delay?s=3", "");
    f.submit("reply", "tok-resb", None);
    wait_for("tok-resb to be taken", TASK, || {
        f.env
            .events_of::<PromptAccepted>()
            .iter()
            .any(|e| e.task_id.as_deref() == Some("tok-resb"))
    });
    let pid = f.env.session(&session).and_then(|s| s.pid).unwrap();
    // SAFETY: signalling the CLI's process group, which this test's daemon started.
    unsafe { libc::kill(-i32::try_from(pid).unwrap(), libc::SIGKILL) };
    let (state, rec) = f.done("tok-resb");
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    assert_eq!(
        rec.attempts.len(),
        1,
        "never sent again: {:?}",
        rec.attempts
    );
    assert!(
        rec.error.as_deref().unwrap().contains("not sent again"),
        "{rec:?}"
    );
    mock_control(f.mock.port, "GET", "/_mock/delay?s=0", "");
    wait_for("the session to come back", STARTUP, || {
        f.env
            .session(&session)
            .is_some_and(|s| s.restarts == 1 && s.state == architect::session::SessionState::Idle)
    });
    f.submit("reply", "tok-resc", None);
    let (state, rec) = f.done("tok-resc");
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(
        rec.result.unwrap().reply.as_deref(),
        Some("all done tok-resc")
    );
    // The CLI said it resumed, and its request for the new prompt carries the old ones.
    let resumed =
        f.env.events_of::<HookReceived>().into_iter().any(|e| {
            e.data.signal == "session_start" && e.data.source.as_deref() == Some("resume")
        });
    assert!(resumed, "no SessionStart with source resume");
    let body = mock_control(f.mock.port, "GET", "/_mock/requests?bodies=1", "");
    let json_start = body.find('{').unwrap();
    let v: serde_json::Value = serde_json::from_str(&body[json_start..]).unwrap();
    let last = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["token"] == "tok-resc")
        .unwrap()
        .to_string();
    assert!(
        last.contains("FIDELITY reply tok-resa"),
        "the conversation was not continued"
    );
}

#[test]
fn claude_code_killed_mid_conversation_resumes_it() {
    killed_mid_conversation_resumes_it(offline::CLAUDE);
}

#[test]
fn codex_killed_mid_conversation_resumes_it() {
    killed_mid_conversation_resumes_it(offline::CODEX);
}

#[test]
fn gemini_killed_mid_conversation_resumes_it() {
    killed_mid_conversation_resumes_it(offline::GEMINI);
}

/// Claude Code hits a usage limit (the API answers 429 with the mock's limit preset): its
/// StopFailure hook parks the session, the task goes back to the queue without counting
/// an attempt, and the session comes back by itself at the reset time and runs it.
#[test]
fn a_usage_limit_hook_parks_the_session_until_it_resets() {
    let cli = offline::CLAUDE;
    // No retries inside Claude Code: the 429 ends the turn at once.
    let f = Fleet::start_with(cli, 1, true, &[("CLAUDE_CODE_MAX_RETRIES", "0")]);
    let session = f.session(&cli, 1);
    mock_control(
        f.mock.port,
        "POST",
        "/_mock/faults",
        r#"{"limit": true, "reset_s": 4, "times": 1, "side": false}"#,
    );
    f.env.drop_task(
        "lim.json",
        r#"{"id": "tok-lima", "prompt": "FIDELITY reply tok-lima", "max_retries": 0}"#,
    );
    wait_for("the session to be limited", TASK, || {
        f.env
            .session(&session)
            .is_some_and(|s| s.state == architect::session::SessionState::Limited)
    });
    let limited = f.env.events_of::<SessionLimited>();
    assert_eq!(limited.len(), 1, "{limited:?}");
    let reset = limited[0].data.reset_in_s;
    assert!((1..=5).contains(&reset), "{limited:?}");
    let (state, rec) = f.done("tok-lima");
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let outcomes: Vec<_> = rec.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            architect::spool::task::AttemptOutcome::Limited,
            architect::spool::task::AttemptOutcome::Completed
        ]
    );
    assert_eq!(
        rec.result.unwrap().reply.as_deref(),
        Some("all done tok-lima")
    );
}
