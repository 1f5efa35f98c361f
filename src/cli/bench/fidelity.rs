//! `architect bench --fidelity claude,codex,gemini --tasks N`: delivery fidelity with the
//! real agent CLIs.
//!
//! For each CLI: `--sessions` sessions (default 2) of the pinned CLI (`tools/agent-clis`),
//! each with a private HOME, against `tools/mock-llm` in its fidelity conversation; the
//! daemon is this binary in a child process; `--tasks` task files dropped into the inbox at
//! once, each prompt `FIDELITY <kind> tok-…` with a unique token that the model's reply
//! echoes. The mix (per 10 tasks): 4 plain replies, 2 safe tool calls (`echo`), 2 file
//! creations (`touch`), 2 `rm -rf ~/important`, which the policy refuses. `--slow` slows
//! the model (0.05 s before each streamed event, up to 1 s more per request) so busy
//! screens stay up; without it the model answers at once, the hardest case for a screen.
//!
//! Per task, judged from outside architect:
//! - **delivered**: how many turns the model started for the token (the mock's log: a
//!   request that answered the token's prompt, not a follow-up after a tool result) —
//!   exactly once is right, more is a duplicate, none (or a task not done) is lost;
//! - **right reply**: `all done T`, `echoed T`, `created T.txt`; for the refused command
//!   `refused T` (the CLI passed the refusal to the model) or no reply with `turn_end`
//!   `refused: …`; a reply holding another task's token is a wrong reply;
//! - **overhead**: from the end of the model's last answer for the token (`t_done` in the
//!   mock's log) to the task's `task_completed` event (the record's rename into `done/`),
//!   p50/p99.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use architect::durable;
use architect::spool::task::TaskState;
use architect::spool::Spool;

use super::offline::{self, Cli};
use crate::cli::harness::{
    idle_sessions, mock_script, spawn_daemon, start_mock as start_mock_server, summary, Daemon,
    MockServer,
};

/// What one CLI's run measured.
#[derive(Debug, serde::Serialize)]
struct Figures {
    cli: String,
    mode: &'static str,
    tasks: usize,
    sessions: usize,
    delivered_once: usize,
    right_replies: usize,
    wrong_replies: usize,
    duplicates: usize,
    lost: usize,
    overhead_p50_ms: f64,
    overhead_p99_ms: f64,
    wall_s: f64,
    /// Task ids with anything but one delivery and a right reply, with what went wrong.
    problems: Vec<String>,
}

/// The mock model server and its request log.
struct Mock {
    server: MockServer,
    log: PathBuf,
}

fn start_mock(dir: &Path, slow: bool) -> Result<Mock> {
    let Some(script) = mock_script() else {
        bail!("tools/mock-llm/mock_llm.py not found (run the benchmark from a checkout)");
    };
    let log = dir.join("mock.jsonl");
    let mut args: Vec<&OsStr> = vec!["--log".as_ref(), log.as_os_str()];
    if slow {
        args.extend(["--delay", "0.05", "--jitter", "1.0", "--seed", "1"].map(OsStr::new));
    }
    let server = start_mock_server(&script, &args)?;
    Ok(Mock { server, log })
}

/// The task kind for task number `i` (the mix in the module docs).
fn kind(i: usize) -> &'static str {
    match i % 10 {
        0..=3 => "reply",
        4 | 5 => "echo",
        6 | 7 => "touch",
        _ => "wipe",
    }
}

fn expected(kind: &str, token: &str) -> String {
    match kind {
        "reply" => format!("all done {token}"),
        "echo" => format!("echoed {token}"),
        "touch" => format!("created {token}.txt"),
        _ => format!("refused {token}"),
    }
}

/// Runs the fidelity benchmark for each CLI in `list` (comma-separated).
pub fn run(
    list: &str,
    tasks: usize,
    sessions: usize,
    slow: bool,
    root: &Path,
    json: bool,
) -> Result<ExitCode> {
    let clis: Vec<Cli> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|n| {
            Cli::named(n).with_context(|| format!("unknown CLI {n:?} (claude, codex, gemini)"))
        })
        .collect::<Result<_>>()?;
    let bin = offline::clis_dir();
    for c in &clis {
        if !bin.join(c.binary).exists() {
            bail!(
                "{} is not installed: run tools/agent-clis/install (needs node >= 20 and npm)",
                bin.join(c.binary).display()
            );
        }
    }
    println!(
        "architect bench --fidelity: {} tasks per CLI, {sessions} sessions each, {} model, {}",
        tasks,
        if slow { "slow" } else { "instant" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let mut all = Vec::new();
    for cli in clis {
        let dir = root.join(cli.binary);
        let f = one(cli, tasks, sessions, slow, &dir)?;
        println!(
            "  {:<7} delivered once {}/{} · right replies {}/{} · wrong {} · duplicates {} · lost {} · overhead p50 {:.0} ms, p99 {:.0} ms · {:.0} s",
            cli.binary, f.delivered_once, f.tasks, f.right_replies, f.tasks, f.wrong_replies,
            f.duplicates, f.lost, f.overhead_p50_ms, f.overhead_p99_ms, f.wall_s
        );
        for p in f.problems.iter().take(10) {
            println!("      {p}");
        }
        all.push(f);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    let perfect = all
        .iter()
        .all(|f| f.right_replies == f.tasks && f.duplicates == 0 && f.lost == 0);
    Ok(if perfect {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn one(cli: Cli, tasks: usize, sessions: usize, slow: bool, dir: &Path) -> Result<Figures> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mock = start_mock(dir, slow)?;
    let url = format!("http://127.0.0.1:{}", mock.server.port);
    let spool = Spool::new(dir.join("spool"));
    spool.init()?;
    let config = dir.join("config");
    durable::create_dir(&config)?;
    let mut toml = String::new();
    for i in 1..=sessions {
        let home = dir.join(format!("home-{i}"));
        let work = dir.join(format!("work-{i}"));
        offline::git_workdir(&work)?;
        let env = offline::prepare_home(&cli, &home, &work, &url)?;
        std::fs::create_dir_all(home.join("important"))?;
        toml.push_str(&offline::session_toml(
            &format!("{}-{i}", cli.binary),
            &cli,
            &offline::clis_dir(),
            &work,
            &env,
            "agent",
        ));
    }
    durable::write_atomic(&config.join("sessions.toml"), toml.as_bytes())?;
    durable::write_atomic(
        &config.join("architect.toml"),
        b"[node]\nname = \"bench\"\n",
    )?;
    let _daemon = Daemon(spawn_daemon(&spool, &config, &dir.join("daemon.log"))?);
    crate::cli::harness::wait_until("every session to be idle", Duration::from_secs(180), || {
        idle_sessions(&spool) == sessions
    })?;
    let short = &cli.binary[..2];
    let tokens: Vec<(String, &str)> = (0..tasks)
        .map(|i| (format!("tok-{short}{i:06}"), kind(i)))
        .collect();
    let started = Instant::now();
    for (token, kind) in &tokens {
        let body = serde_json::json!({
            "id": token, "prompt": format!("FIDELITY {kind} {token}"), "timeout_s": 300,
        });
        std::fs::write(
            spool.inbox().join(format!("{token}.json")),
            body.to_string(),
        )?;
    }
    let limit = Duration::from_secs(120 + 30 * u64::try_from(tasks).unwrap_or(u64::MAX));
    let final_dirs = [TaskState::Done, TaskState::Failed, TaskState::Cancelled];
    let finished = || {
        final_dirs
            .iter()
            .map(|s| crate::cli::harness::count(&spool.dir(s.dir())))
            .sum::<usize>()
    };
    let mut last_report = Instant::now();
    while finished() < tasks {
        if started.elapsed() > limit {
            println!(
                "  {}: timed out with {}/{} tasks finished",
                cli.binary,
                finished(),
                tasks
            );
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            println!(
                "  {}: {}/{} tasks finished after {:.0} s",
                cli.binary,
                finished(),
                tasks,
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall_s = started.elapsed().as_secs_f64();
    // Let the turns' last answers reach the mock's log.
    std::thread::sleep(Duration::from_millis(500));
    judge(cli, &spool, &mock, &tokens, sessions, slow, wall_s)
}

fn judge(
    cli: Cli,
    spool: &Spool,
    mock: &Mock,
    tokens: &[(String, &str)],
    sessions: usize,
    slow: bool,
    wall_s: f64,
) -> Result<Figures> {
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    let mut last_answer: HashMap<String, f64> = HashMap::new();
    for line in std::fs::read_to_string(&mock.log)
        .unwrap_or_default()
        .lines()
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(token) = v["token"].as_str() else {
            continue;
        };
        let action = v["action"].as_str().unwrap_or_default();
        if action == "fidelity-reply-text" || action.ends_with("-call") {
            *deliveries.entry(token.to_string()).or_default() += 1;
        }
        if let Some(t) = v["t_done"].as_f64() {
            let e = last_answer.entry(token.to_string()).or_insert(t);
            *e = e.max(t);
        }
    }
    let completed: BTreeMap<String, chrono::DateTime<chrono::Utc>> =
        architect::log::read_events(&spool.dir("log"))?
            .into_iter()
            .filter(|e| {
                e.payload::<architect::log::event::TaskCompleted>()
                    .is_some()
            })
            .filter_map(|e| Some((e.task_id?, e.ts)))
            .collect();
    let all_tokens: Vec<&str> = tokens.iter().map(|(t, _)| t.as_str()).collect();
    let mut f = Figures {
        cli: cli.binary.to_string(),
        mode: if slow { "slow" } else { "instant" },
        tasks: tokens.len(),
        sessions,
        delivered_once: 0,
        right_replies: 0,
        wrong_replies: 0,
        duplicates: 0,
        lost: 0,
        overhead_p50_ms: f64::NAN,
        overhead_p99_ms: f64::NAN,
        wall_s,
        problems: Vec::new(),
    };
    let mut overheads = Vec::new();
    for (token, kind) in tokens {
        let n = deliveries.get(token).copied().unwrap_or(0);
        let found = spool.find(token).ok();
        let done = found.as_ref().is_some_and(|(s, _)| *s == TaskState::Done);
        let result = found.as_ref().and_then(|(_, r)| r.result.clone());
        let reply = result.as_ref().and_then(|r| r.reply.clone());
        match n {
            1 => f.delivered_once += 1,
            0 => {}
            _ => {
                f.duplicates += 1;
                f.problems.push(format!("{token}: delivered {n} times"));
            }
        }
        if !done || n == 0 {
            f.lost += 1;
            let why = found.as_ref().map_or("no record".to_string(), |(s, r)| {
                format!("{s:?}: {}", r.error.clone().unwrap_or_default())
            });
            f.problems.push(format!("{token}: lost ({why})"));
            continue;
        }
        let want = expected(kind, token);
        let refused_note = result
            .as_ref()
            .and_then(|r| r.turn_end.as_deref())
            .is_some_and(|t| t.starts_with("refused:"));
        let right = match &reply {
            Some(r) => r.trim() == want,
            None => *kind == "wipe" && refused_note,
        };
        let other = reply
            .as_deref()
            .is_some_and(|r| all_tokens.iter().any(|t| *t != token && r.contains(t)));
        if right {
            f.right_replies += 1;
        } else {
            if other || reply.is_some() {
                f.wrong_replies += 1;
            }
            f.problems.push(format!(
                "{token} ({kind}): reply {reply:?}, turn_end {:?}",
                result.as_ref().and_then(|r| r.turn_end.clone())
            ));
        }
        if let (Some(end), Some(at)) = (last_answer.get(token), completed.get(token)) {
            #[allow(clippy::cast_precision_loss)]
            let at_s = at.timestamp_micros() as f64 / 1e6;
            overheads.push((at_s - end) * 1000.0);
        }
    }
    let (p50, p99) = summary(overheads);
    f.overhead_p50_ms = p50;
    f.overhead_p99_ms = p99;
    Ok(f)
}
