//! Secrets and planted files, through the real daemon: sessions get a minimal
//! environment (a provider key reaches them only when their config names it), task
//! results and the tracing log are redacted (the log file 0600), a symlink planted at the
//! event log or the daemon lock is refused, and events carry a prompt's start, size and
//! hash rather than the whole prompt.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

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
    let lock = env.spool.join("locks/daemon-test.lock");
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let out = env.cli(&["daemon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon lock"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
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
        !env.events_of("task_received").is_empty()
    });
    let e = &env.events_of("task_received")[0];
    assert_eq!(e.data["prompt"].as_str().unwrap().chars().count(), 200);
    assert_eq!(e.data["prompt_chars"], 100_005);
    assert_eq!(e.data["prompt_sha256"].as_str().unwrap().len(), 64);
    let log_bytes: u64 = std::fs::read_dir(env.spool.join("log"))
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert!(log_bytes < 10_000, "the log holds {log_bytes} bytes");
}
