//! `architect demo`: the main job end to end in a scratch directory, with the real
//! binary as the daemon, real shell sessions and the fake agent TUI in real PTYs, and
//! tasks dropped into the inbox as plain file writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use architect::durable;
use architect::spool::task::TaskState;
use architect::spool::Spool;
use architect::sql::{self, Format};

const TASKS: &[(&str, &str)] = &[
    (
        "hello.json",
        r#"{"id": "hello", "prompt": "echo hello from $(tty)", "role": "shell"}"#,
    ),
    (
        "sum.json",
        r#"{"id": "sum", "prompt": "echo $((1 + 2 + 3 + 4 + 5))", "role": "shell", "priority": 9}"#,
    ),
    (
        "after-hello.json",
        r#"{"id": "after-hello", "prompt": "echo runs after hello; ls spool/done", "depends_on": ["hello"], "role": "shell"}"#,
    ),
    (
        "agent.json",
        r#"{"id": "agent", "prompt": "summarise the README sleep=500", "session": "agent-1"}"#,
    ),
    (
        "fails.json",
        r#"{"id": "fails", "prompt": "ls /no/such/dir", "role": "shell", "max_retries": 0}"#,
    ),
    (
        "locked-1.json",
        r#"{"id": "locked-1", "prompt": "sleep 0.5; echo first holder of src/db.rs", "role": "shell", "locks": {"paths": ["src/db.rs"]}}"#,
    ),
    (
        "locked-2.json",
        r#"{"id": "locked-2", "prompt": "echo src/ was free only after locked-1", "role": "shell", "locks": {"paths": ["src/"]}}"#,
    ),
    (
        "asks.json",
        r#"{"id": "asks", "prompt": "tidy up run: touch notes.txt run: sudo rm -rf /", "session": "agent-1"}"#,
    ),
    ("broken.json", r#"{"prompt": 42, "colour": "red"}"#),
];

fn sessions_toml(exe: &Path) -> String {
    format!(
        r#"[[session]]
name = "shell-1"
profile = "shell"
role = "shell"

[[session]]
name = "shell-2"
profile = "shell"
role = "shell"

[[session]]
name = "agent-1"
profile = "fake-agent"
command = "{}"
args = ["fake-agent", "--work-ms", "300"]
role = "agent"
"#,
        exe.display()
    )
}

pub fn run(dir: Option<PathBuf>) -> Result<ExitCode> {
    let root = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("architect-demo-{}", ulid::Ulid::new()))
    });
    let spool = Spool::new(root.join("spool"));
    let config = root.join("config");
    let exe = std::env::current_exe().context("locating the architect binary")?;
    println!("== architect demo in {}", root.display());
    spool.init()?;
    durable::create_dir(&config)?;
    durable::write_atomic(
        &config.join("sessions.toml"),
        sessions_toml(&exe).as_bytes(),
    )?;
    durable::write_atomic(&config.join("architect.toml"), b"[node]\nname = \"demo\"\n")?;
    println!("   config: 2 shell sessions (bash in a PTY) and 1 fake agent TUI (tools/fake-agent)");

    let mut daemon = super::harness::spawn_daemon(&spool, &config, &root.join("daemon.log"))?;
    println!(
        "   daemon started (pid {}), tracing in {}",
        daemon.id(),
        root.join("daemon.log").display()
    );

    let outcome = drive(&spool);
    if outcome.is_ok() {
        // The live view, one frame of it, while the daemon still runs.
        println!("\n== architect top --once (the live view: run `architect top`)");
        let shown = std::process::Command::new(&exe)
            .arg("--spool")
            .arg(spool.root())
            .arg("--config")
            .arg(&config)
            .args(["top", "--once", "--width", "100"])
            .status();
        if !shown.as_ref().is_ok_and(std::process::ExitStatus::success) {
            println!("   (top could not draw: {shown:?})");
        }
    }
    // SAFETY: SIGTERM to the child we started.
    unsafe {
        libc::kill(i32::try_from(daemon.id()).unwrap_or(0), libc::SIGTERM);
    }
    let _ = daemon.wait();
    let ok = outcome?;
    println!(
        "\n== files are in {} — try: architect --spool {} tasks",
        root.display(),
        spool.root().display()
    );
    println!(
        "   watch a running fleet: architect top, or architect serve (dashboard at \
         http://127.0.0.1:7878; it prints a login URL)"
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn drive(spool: &Spool) -> Result<bool> {
    println!(
        "\n== dropping {} task files into {}/ with plain writes",
        TASKS.len(),
        spool.inbox().display()
    );
    for (name, body) in TASKS {
        std::fs::write(spool.inbox().join(name), body)?;
        println!("   {name:<18} {body}");
    }
    let ids: Vec<&str> = TASKS
        .iter()
        .filter(|(n, _)| *n != "broken.json")
        .map(|(n, _)| n.trim_end_matches(".json"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        let states: Vec<Option<TaskState>> = ids.iter().map(|id| spool.locate(id)).collect();
        let finished = states
            .iter()
            .filter(|s| s.is_some_and(TaskState::is_final))
            .count();
        let rejected = spool
            .dir("rejected")
            .join("broken.json.error.json")
            .exists();
        let line = format!(
            "   {finished}/{} tasks finished, malformed file rejected: {rejected}",
            ids.len()
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if finished == ids.len() && rejected {
            break;
        }
        if Instant::now() > deadline {
            bail!("the demo tasks did not finish within 90 s; see the daemon log");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    println!("\n== results (spool/done, spool/failed)");
    let mut ok = true;
    for id in &ids {
        let (state, rec) = spool.find(id)?;
        let expected = if *id == "fails" {
            TaskState::Failed
        } else {
            TaskState::Done
        };
        ok &= state == expected;
        let output = rec
            .result
            .as_ref()
            .map(|r| r.reply.clone().unwrap_or_else(|| r.output.clone()))
            .unwrap_or_default();
        println!(
            "-- {id} [{}] on {}{}",
            state.dir(),
            rec.session.as_deref().unwrap_or("-"),
            rec.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
        for line in output.lines().take(6) {
            println!("   | {line}");
        }
    }
    let report = std::fs::read_to_string(spool.dir("rejected").join("broken.json.error.json"))?;
    println!(
        "-- broken.json [rejected]\n{}",
        report
            .lines()
            .map(|l| format!("   | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let query = "SELECT task_id, type, data->>'resources' AS resources FROM events \
                 WHERE type LIKE 'lock_%' ORDER BY ts";
    println!("\n== locks: locked-1 (src/db.rs) and locked-2 (src/, which holds it) never run at once\n== architect sql \"{query}\"");
    print!(
        "{}",
        sql::run(&spool.log_dirs(), query)?.render(Format::Table)?
    );
    let query = "SELECT data->>'action' AS action, data->>'decision' AS decision, \
                 data->>'rule' AS rule, data->>'by' AS by FROM events \
                 WHERE type = 'permission_decided' ORDER BY ts";
    println!("\n== auto-confirm: the agent's permission questions, answered from config/policy.toml\n== architect sql \"{query}\"");
    print!(
        "{}",
        sql::run(&spool.log_dirs(), query)?.render(Format::Table)?
    );

    let query = "SELECT task_id, state, session, attempts, run_ms FROM tasks ORDER BY received_at";
    println!("\n== architect sql \"{query}\"");
    print!(
        "{}",
        sql::run(&spool.log_dirs(), query)?.render(Format::Table)?
    );
    println!("\n== architect stats");
    print!(
        "{}",
        sql::run(&spool.log_dirs(), sql::STATS_SQL)?.render(Format::Table)?
    );
    if !ok {
        println!("\nsome tasks did not end as expected");
    }
    Ok(ok)
}
