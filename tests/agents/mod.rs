//! End to end with the real agent CLIs: Claude Code, Codex and Gemini CLI (the versions
//! pinned in `tools/agent-clis/`), each run by the daemon in a real PTY, with no model
//! provider: their model requests go to the scripted model server `tools/mock-llm/`
//! (script `autonomy`).
//!
//! Each test starts the daemon with one session of the CLI's built-in profile (a private
//! HOME and a fresh git work dir), waits for the start-up rules to get it past its
//! first-run screens, submits a task, and checks auto-confirm against the real screens:
//! the policy allows `touch made-by-agent.txt` (the file appears), escalates `npm install
//! left-pad` (a person denies it with `architect deny`), and the task completes as done.
//!
//! Needs node/npm (the CLIs are installed once per test process by
//! `tools/agent-clis/install`, ~4 s when up to date), python3 (the mock) and git. A
//! missing one fails the test with a message saying how to fix it: these tests never
//! pass or skip silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use architect::log::event::{ApprovalNeeded, PermissionDecided};
use architect::log::Event;
use architect::session::approval::DecidedBy;
use architect::session::SessionState;
use architect::spool::task::TaskState;

use crate::helper::{Daemon, Env, Mock};

mod faults;
/// The offline set-up the tests share with `architect bench --fidelity` (`clis_dir` is
/// not used: [`clis`] installs the CLIs first).
#[allow(dead_code)]
#[path = "../../tools/agent-clis/offline.rs"]
mod offline;

/// The repository root.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// How long a CLI may take to start and get past its first-run screens.
const STARTUP: Duration = Duration::from_secs(90);
/// How long each step of the task may take.
const STEP: Duration = Duration::from_secs(60);
/// The action the policy allows, and the one it escalates (tools/mock-llm/scripts/autonomy.json).
const ALLOWED: &str = "touch made-by-agent.txt";
const ESCALATED: &str = "npm install left-pad";

/// `node_modules/.bin` of the pinned CLIs, installed (or found up to date) once per test
/// process.
pub(super) fn clis() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(ROOT).join("tools/agent-clis/install");
        let started = Instant::now();
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "installing the agent CLIs failed ({}), so the end-to-end tests cannot run.\n\
             They need node >= 20 and npm on PATH and the npm registry reachable: install \
             them (e.g. `apt-get install nodejs npm`) and run `tools/agent-clis/install`.\n\
             Its output:\n{text}",
            out.status
        );
        eprintln!(
            "agent CLIs ready in {:.1} s:\n{}",
            started.elapsed().as_secs_f64(),
            text.trim_end()
        );
        let dest = std::env::var_os("ARCHITECT_AGENT_CLIS").map_or_else(
            || {
                let home = std::env::var_os("HOME").expect("HOME is not set");
                PathBuf::from(home).join(".cache/architect/agent-clis")
            },
            PathBuf::from,
        );
        dest.join("node_modules/.bin")
    })
}

/// One CLI to drive.
struct Agent {
    /// Session name.
    session: &'static str,
    /// Built-in profile.
    profile: &'static str,
    /// Binary in `node_modules/.bin`.
    binary: &'static str,
    /// A path the CLI's model requests go to (checked in the mock's log).
    api_path: &'static str,
}

const CLAUDE: Agent = Agent {
    session: "claude-e2e",
    profile: "claude-code",
    binary: "claude",
    api_path: "/v1/messages",
};

const CODEX: Agent = Agent {
    session: "codex-e2e",
    profile: "codex",
    binary: "codex",
    api_path: "/v1/responses",
};

const GEMINI: Agent = Agent {
    session: "gemini-e2e",
    profile: "gemini",
    binary: "gemini",
    api_path: ":streamGenerateContent",
};

/// The offline set-up ([`offline`]) of one of these agents.
fn cli(agent: &Agent) -> offline::Cli {
    offline::Cli::named(agent.profile).expect("a CLI with an offline set-up")
}

/// A git work dir with one commit.
fn git_workdir(dir: &Path) {
    offline::git_workdir(dir).unwrap_or_else(|e| panic!("{e}"));
}

/// Writes the CLI's configuration into its private HOME and returns the session's
/// environment.
fn prepare_home(agent: &Agent, home: &Path, work: &Path, mock: &Mock) -> BTreeMap<String, String> {
    offline::prepare_home(&cli(agent), home, work, &mock.url()).unwrap()
}

/// `config/sessions.toml` with one session running `agent`.
fn sessions_toml(agent: &Agent, work: &Path, env: &BTreeMap<String, String>) -> String {
    let command = clis().join(agent.binary);
    assert!(
        command.exists(),
        "{} is missing after tools/agent-clis/install",
        command.display()
    );
    offline::session_toml(agent.session, &cli(agent), clis(), work, env, "agent")
}

/// On a failing test: the daemon's log (it logs the last screen rows at every state
/// change), the session file, the events and the mock's requests, so a CI failure can be
/// diagnosed from its output alone.
struct Diagnostics<'a> {
    env: &'a Env,
    daemon: &'a Daemon,
    mock: &'a Mock,
    session: &'static str,
}

impl Drop for Diagnostics<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = self.daemon.stderr();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(200)..].join("\n");
        eprintln!("---- daemon log (last 200 lines) ----\n{tail}");
        eprintln!(
            "---- sessions/{}.json ----\n{:#?}",
            self.session,
            self.env.session(self.session)
        );
        eprintln!("---- events ----");
        for e in self.env.events() {
            eprintln!(
                "{} {} {} {}",
                e.ts.format("%H:%M:%S%.3f"),
                e.kind(),
                e.task_id.as_deref().unwrap_or("-"),
                e.body.data().unwrap_or_default()
            );
        }
        eprintln!("---- mock requests ----");
        for r in self.mock.requests() {
            eprintln!("{r}");
        }
    }
}

/// Polls `cond` every 50 ms; panics with `what` after `timeout`. A session that died
/// (or was restarted) fails at once with its exit reason.
fn wait_until(
    env: &Env,
    session: &str,
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if let Some(s) = env.session(session) {
            assert!(
                s.state != SessionState::Dead && s.restarts == 0,
                "session {session} died while waiting for {what}: {:?}",
                s.last_exit
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `permission_decided` events of a task: (action, decision, rule, by).
fn decisions(events: &[Event], task: &str) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .filter(|e| e.task_id.as_deref() == Some(task))
        .filter_map(|e| e.payload::<PermissionDecided>())
        .map(|d| {
            let by = match d.by {
                DecidedBy::Policy => "policy",
                DecidedBy::Person => "person",
            };
            (
                d.action.clone().unwrap_or_default(),
                d.decision.as_str().to_string(),
                d.rule.clone(),
                by.to_string(),
            )
        })
        .collect()
}

/// Every process whose environment has `HOME=<home>` (only this test starts such).
fn processes_with_home(home: &Path) -> Vec<u32> {
    let needle = format!("HOME={}", home.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// The whole scenario for one CLI.
fn drive(agent: &Agent) {
    let t0 = Instant::now();
    let bin = clis();
    let installed = t0.elapsed();
    let env = Env::new("");
    let home = env.path("home");
    let work = env.path("work");
    git_workdir(&work);
    let mock = Mock::start(env.path("mock.jsonl"), Some("autonomy"));
    let session_env = prepare_home(agent, &home, &work, &mock);
    env.write_config("sessions.toml", &sessions_toml(agent, &work, &session_env));
    let name = agent.session;
    eprintln!(
        "{name}: {} (mock on port {}), home {}",
        bin.join(agent.binary).display(),
        mock.port,
        home.display()
    );

    let started = Instant::now();
    // As in a CI job (whatever this test runs in): the daemon's environment reaches the
    // CLIs, and Gemini CLI, for one, goes headless on CI=true unless its profile clears it.
    let daemon = env.daemon_with_env(&[("CI", "true"), ("GITHUB_ACTIONS", "true")]);
    let diag = Diagnostics {
        env: &env,
        daemon: &daemon,
        mock: &mock,
        session: name,
    };
    wait_until(&env, name, &format!("{name} to be idle"), STARTUP, || {
        env.session(name)
            .is_some_and(|s| s.state == SessionState::Idle)
    });
    let startup = started.elapsed();

    let task = format!("e2e-{}", agent.binary);
    let submitted = Instant::now();
    env.drop_task(
        &format!("{task}.json"),
        &serde_json::json!({
            "id": task,
            "prompt": "[script:autonomy] Please create made-by-agent.txt, then install left-pad.",
            "timeout_s": 300,
        })
        .to_string(),
    );

    // 1. The policy allows the touch: typed yes, the file appears.
    wait_until(
        &env,
        name,
        &format!("the policy to allow {ALLOWED:?}"),
        STEP,
        || !decisions(&env.events(), &task).is_empty(),
    );
    let d = decisions(&env.events(), &task);
    assert_eq!(
        (d[0].0.as_str(), d[0].1.as_str(), d[0].3.as_str()),
        (ALLOWED, "allow", "policy"),
        "{d:?}"
    );
    assert!(d[0].2.starts_with("allow."), "{d:?}");
    let made = work.join("made-by-agent.txt");
    wait_until(
        &env,
        name,
        "made-by-agent.txt in the work dir",
        STEP,
        || made.exists(),
    );
    let allowed_at = submitted.elapsed();

    // 2. npm install is escalated: the session waits for a person.
    wait_until(
        &env,
        name,
        &format!("approval_needed for {ESCALATED:?}"),
        STEP,
        || env.session(name).is_some_and(|s| s.approval.is_some()),
    );
    let escalated_at = submitted.elapsed();
    let s = env.session(name).unwrap();
    assert_eq!(s.state, SessionState::WaitingInput);
    assert_eq!(s.task_id.as_deref(), Some(task.as_str()));
    let pending = s.approval.unwrap();
    assert_eq!(pending.question.action.as_deref(), Some(ESCALATED));
    assert!(pending.rule.starts_with("escalate."), "{}", pending.rule);
    let needed = env.events_of::<ApprovalNeeded>();
    assert_eq!(needed.len(), 1, "{needed:?}");
    assert_eq!(needed[0].data.action.as_deref(), Some(ESCALATED));
    assert_eq!(needed[0].task_id.as_deref(), Some(task.as_str()));
    let out = env.ok(&["deny", name, "--question", &pending.id]);
    assert!(out.contains(&format!("deny: {ESCALATED}")), "{out}");

    // 3. The CLI ends its turn after the refusal: the task is done.
    let deadline = STEP;
    wait_until(
        &env,
        name,
        &format!("task {task} to finish"),
        deadline,
        || env.state_of(&task).is_some_and(TaskState::is_final),
    );
    let duration = submitted.elapsed();
    let (state, rec) = env.spool().find(&task).unwrap();
    assert_eq!(state, TaskState::Done, "{rec:?}");
    // The turn ended on the refusal (Claude Code: "Interrupted · What should Claude do
    // instead?", Codex: "Conversation interrupted", Gemini CLI: "Request cancelled."; with
    // hooks the record may be written before the screen says so): no reply, and the record
    // says why.
    let result = rec.result.clone().unwrap_or_default();
    assert_eq!(
        result.turn_end.as_deref(),
        Some(format!("refused: {ESCALATED}").as_str()),
        "{result:?}"
    );
    assert_eq!(result.reply, None, "{result:?}");
    assert!(
        env.spool
            .join("done")
            .join(format!("{task}.json"))
            .is_file(),
        "no spool/done/{task}.json"
    );
    let d = decisions(&env.events(), &task);
    assert_eq!(d.len(), 2, "exactly two questions were answered: {d:?}");
    assert_eq!(
        (
            d[1].0.as_str(),
            d[1].1.as_str(),
            d[1].2.as_str(),
            d[1].3.as_str()
        ),
        (ESCALATED, "deny", "person", "person"),
        "{d:?}"
    );
    assert!(
        !work.join("node_modules").exists(),
        "the denied npm install ran"
    );
    wait_until(
        &env,
        name,
        "the session to drop the answered question",
        STEP,
        || {
            env.session(name)
                .is_some_and(|s| s.approval.is_none() && s.state == SessionState::Idle)
        },
    );

    // The CLI really talked to the mock: both shell turns of the script were played.
    let reqs = mock.requests();
    let played: Vec<u64> = reqs
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.contains(agent.api_path))
                && r["script"] == "autonomy"
                && r["action"] == "shell"
        })
        .filter_map(|r| r["turn"].as_u64())
        .collect();
    assert!(
        played.contains(&0) && played.contains(&1),
        "the mock did not play turns 0 and 1 of the autonomy script to {}: {played:?}",
        agent.api_path
    );

    drop(diag);
    drop(daemon);
    // Nothing the CLI started outlives the daemon (Codex leaves an app-server daemon,
    // Gemini survives its terminal closing: the runner must end them).
    let mut left = processes_with_home(&home);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_with_home(&home);
    }
    assert!(
        left.is_empty(),
        "processes of {name} still running after the daemon stopped: {left:?}"
    );
    eprintln!(
        "{name}: waited for the CLIs {:.1} s, start-up {:.1} s, allowed after {:.1} s, \
         escalated after {:.1} s, task done in {:.1} s, {} model requests",
        installed.as_secs_f64(),
        startup.as_secs_f64(),
        allowed_at.as_secs_f64(),
        escalated_at.as_secs_f64(),
        duration.as_secs_f64(),
        reqs.len()
    );
}

#[test]
fn claude_code_policy_allows_escalates_and_a_person_denies() {
    drive(&CLAUDE);
}

#[test]
fn codex_policy_allows_escalates_and_a_person_denies() {
    drive(&CODEX);
}

#[test]
fn gemini_policy_allows_escalates_and_a_person_denies() {
    drive(&GEMINI);
}
