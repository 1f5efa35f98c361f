//! Secrets and planted files, through the real daemon: sessions get a minimal
//! environment (a provider key reaches them only when their config names it), task
//! results and the tracing log are redacted (the log file 0600), a symlink planted at the
//! event log or the daemon lock is refused, and events carry a prompt's start, size and
//! hash rather than the whole prompt.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use architect::log::event::TaskReceived;
use architect::spool::task::TaskState;

use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);
/// A key in a shape the redactor knows.
const KEY: &str = "sk-ant-api03-SECRETSECRETSECRETSECRET";

#[test]
fn a_provider_key_reaches_a_session_only_when_its_config_names_it() {
    let env = Env::new(
        "[[session]]\nname = \"plain\"\nprofile = \"shell\"\nrole = \"plain\"\n\
         [[session]]\nname = \"named\"\nprofile = \"shell\"\nrole = \"named\"\nenv_passthrough = [\"ANTHROPIC_API_KEY\"]\n",
    );
    let _d = env.daemon_with_env(&[("ANTHROPIC_API_KEY", KEY), ("OTHER_SECRET", "x")]);
    let count = "env | grep -c -E '^(ANTHROPIC_API_KEY|OTHER_SECRET)=' || true";
    for role in ["plain", "named"] {
        env.drop_task(
            &format!("{role}.json"),
            &serde_json::json!({"id": role, "prompt": count, "role": role}).to_string(),
        );
    }
    let plain = env.wait_final("plain", T).1.result.unwrap();
    assert_eq!(
        plain.output, "0",
        "the daemon's environment leaked: {plain:?}"
    );
    let named = env.wait_final("named", T).1.result.unwrap();
    assert_eq!(named.output, "1", "{named:?}");
    // PATH, HOME and the rest a program needs are there.
    env.drop_task(
        "base.json",
        r#"{"id": "base", "prompt": "test -n \"$PATH\" && test -n \"$HOME\" && echo ok", "role": "plain"}"#,
    );
    assert_eq!(env.wait_final("base", T).1.result.unwrap().output, "ok");
}

#[test]
fn results_and_the_tracing_log_are_redacted_and_the_log_is_private() {
    let env = Env::new(ONE_SHELL);
    let log = env.path("daemon-trace.log");
    let mut d = env
        .cmd()
        .args(["daemon", "-vv", "--log-file"])
        .arg(&log)
        .env("ANTHROPIC_API_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    env.drop_task(
        "leak.json",
        &serde_json::json!({"id": "leak", "prompt": format!("echo {KEY}")}).to_string(),
    );
    let (state, rec) = env.wait_final("leak", T);
    assert_eq!(state, TaskState::Done);
    let out = rec.result.unwrap().output;
    assert!(!out.contains("SECRETSECRET"), "{out}");
    assert!(out.contains("[REDACTED]"), "{out}");
    // The record keeps the task as submitted (a retry must run the same command); its
    // result is redacted.
    let done: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.spool.join("done/leak.json")).unwrap()).unwrap();
    assert!(
        !done["result"].to_string().contains("SECRETSECRET"),
        "{done}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(d.id()).unwrap(), libc::SIGTERM) };
    d.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("state change"), "the log was written at -vv");
    assert!(!text.contains("SECRETSECRET"), "a key in the tracing log");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_symlink_planted_at_the_event_log_or_the_daemon_lock_is_refused() {
    let env = Env::new(ONE_SHELL);
    let target = env.path("precious.txt");
    std::fs::write(&target, "keep me\n").unwrap();
    let day = chrono::Utc::now().format("%Y%m%d");
    let log = env.spool.join(format!("log/events-test-{day}.jsonl"));
    std::os::unix::fs::symlink(&target, &log).unwrap();
    {
        let _d = env.daemon();
        env.drop_task("t.json", r#"{"id": "t", "prompt": "echo hi"}"#);
        let _ = env.wait_final("t", T);
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    std::fs::remove_file(&log).unwrap();
    // The lock: the daemon refuses to start rather than truncate the target.
    let lock = architect::daemon::lock_path(&env.spool());
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let out = env.cli(&["daemon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon lock"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
}

/// A spool directory someone else can write to (or swap for a symlink) could redirect the
/// daemon's writes: the daemon refuses to start and says what to fix.
#[test]
fn the_daemon_refuses_spool_directories_others_can_write_or_replace() {
    let env = Env::new(ONE_SHELL);
    let log = env.spool.join("log");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.cli(&["daemon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("anyone can write to it") && err.contains("chmod o-w"),
        "{err}"
    );
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A symlinked directory is refused too, even one of ours.
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let locks = env.spool.join("locks");
    std::fs::remove_dir_all(&locks).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &locks).unwrap();
    let out = env.cli(&["daemon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // A shared inbox is fine: intake copies what it reads into files of its own.
    std::fs::remove_file(&locks).unwrap();
    let inbox = env.spool.join("inbox");
    std::fs::set_permissions(&inbox, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let _d = env.daemon();
    env.drop_task("t.json", r#"{"id": "t", "prompt": "echo shared"}"#);
    let (state, rec) = env.wait_final("t", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
}

#[test]
fn events_carry_a_prompts_start_size_and_hash_not_the_whole_prompt() {
    let env = Env::new("");
    let _d = env.daemon();
    let long = format!("echo {}", "x".repeat(100_000));
    env.drop_task(
        "big.json",
        &serde_json::json!({"id": "big", "prompt": long}).to_string(),
    );
    wait_for("task_received", T, || {
        !env.events_of::<TaskReceived>().is_empty()
    });
    let e = &env.events_of::<TaskReceived>()[0];
    assert_eq!(e.data.prompt.chars().count(), 200);
    assert_eq!(e.data.prompt_chars, 100_005);
    assert_eq!(e.data.prompt_sha256.len(), 64);
    let log_bytes: u64 = std::fs::read_dir(env.spool.join("log"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(log_bytes < 10_000, "the log holds {log_bytes} bytes");
}

/// A long prompt is not held in memory while its task waits: it is read back from the
/// task's file at dispatch, after a daemon restart too, and the final record still
/// carries it whole.
#[test]
fn a_long_prompt_waits_in_its_file_and_runs_whole() {
    let env = Env::new(ONE_SHELL);
    // ~6 KB, past the 4 KiB kept in memory; its last word is the one the output shows.
    let filler = "ab".repeat(3000);
    let prompt = format!("echo {filler} >/dev/null; echo the-long-prompt-ran");
    let task = serde_json::json!({"id": "long", "prompt": prompt, "depends_on": ["gate"]});
    {
        let _d = env.daemon();
        env.drop_task("long.json", &task.to_string());
        // One daemon life: a long task waits behind a busy session, then runs.
        env.drop_task("busy.json", r#"{"id": "busy", "prompt": "sleep 1"}"#);
        let now = serde_json::json!({"id": "now", "prompt": prompt});
        env.drop_task("now.json", &now.to_string());
        let (state, rec) = env.wait_final("now", T);
        assert_eq!(state, TaskState::Done, "{rec:?}");
        assert_eq!(rec.task.prompt, prompt);
        assert!(rec.result.unwrap().output.contains("the-long-prompt-ran"));
        // "long" waits for "gate", which does not exist yet; the daemon stops meanwhile.
        assert_eq!(env.state_of("long"), Some(TaskState::Pending));
    }
    let _d = env.daemon();
    env.drop_task("gate.json", r#"{"id": "gate", "prompt": "true"}"#);
    let (state, rec) = env.wait_final("long", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.task.prompt, prompt, "the record keeps the whole prompt");
    let out = rec.result.unwrap().output;
    assert!(out.contains("the-long-prompt-ran"), "{out}");
    // Read once more, from a second daemon life: the same task file in done/.
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.spool.join("done/long.json")).unwrap()).unwrap();
    assert_eq!(on_disk["task"]["prompt"], prompt.as_str());
}

/// `[log] max_bytes` and `keep_days` through the real daemon: a day's log continues in
/// numbered parts, this node's old files are deleted (another node's are not), and
/// `architect sql` still counts every event of every part.
#[test]
fn the_event_log_rotates_by_size_prunes_by_age_and_sql_reads_every_part() {
    let env = Env::new(ONE_SHELL);
    let toml = env.config.join("architect.toml");
    let mut arch = std::fs::read_to_string(&toml).unwrap();
    arch.push_str("\n[log]\nmax_bytes = 4096\nkeep_days = 30\n");
    std::fs::write(&toml, arch).unwrap();
    let log = env.spool.join("log");
    let old = log.join("events-test-20200101.jsonl");
    let others = log.join("events-elsewhere-20200101.jsonl");
    for f in [&old, &others] {
        std::fs::write(f, "").unwrap();
    }
    let _d = env.daemon();
    for i in 0..12 {
        env.drop_task(
            &format!("t{i}.json"),
            &format!(r#"{{"id": "t{i}", "prompt": "echo {i}"}}"#),
        );
    }
    for i in 0..12 {
        assert_eq!(env.wait_final(&format!("t{i}"), T).0, TaskState::Done);
    }
    assert!(!old.exists(), "this node's 2020 file is past keep_days");
    assert!(others.exists(), "another node's files are its own to keep");
    let day = chrono::Utc::now().format("%Y%m%d").to_string();
    let parts: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("events-test-{day}"))
        })
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let mut lines = 0;
    for p in &parts {
        assert!(p.metadata().unwrap().len() <= 4096);
        lines += std::fs::read_to_string(p.path()).unwrap().lines().count();
    }
    let out = env.ok(&["sql", "SELECT count(*) AS n FROM events", "--format", "csv"]);
    let counted: usize = out.lines().nth(1).unwrap().trim().parse().unwrap();
    // The daemon may log more while sql runs: at least every line counted before.
    assert!(counted >= lines, "sql counted {counted} of {lines} events");
    let out = env.ok(&[
        "sql",
        "SELECT count(DISTINCT task_id) AS n FROM events WHERE type = 'task_completed'",
        "--format",
        "csv",
    ]);
    assert_eq!(out, "n\n12\n");
}
