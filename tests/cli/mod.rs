//! The CLI works through the spool alone: with the daemon down, then up.

use std::time::Duration;

use architect::spool::task::TaskState;

use crate::helper::{wait_for, Env, BIN, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

#[test]
fn submit_while_the_daemon_is_down_then_it_picks_the_work_up() {
    let env = Env::new(ONE_SHELL);
    let id = env
        .ok(&[
            "submit",
            "--prompt",
            "echo queued while down",
            "--priority",
            "7",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    assert!(env.inbox().join(format!("{id}.json")).exists());
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["daemon"]["running"], false);
    assert_eq!(status["tasks"]["inbox"], 1);

    let _d = env.daemon();
    let (state, rec) = env.wait_final(&id, T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(rec.result.unwrap().output, "queued while down");
    assert_eq!(rec.task.priority, Some(7));
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["daemon"]["running"], true);
    assert_eq!(status["tasks"]["done"], 1);

    // --wait prints the result and exits 0; a failing task exits non-zero.
    let out = env.ok(&["submit", "--prompt", "echo waited for", "--wait"]);
    let mut lines = out.lines();
    lines.next(); // the id
    assert_eq!(lines.next(), Some("waited for"));
    let failing = env.cli(&[
        "submit",
        "--prompt",
        "false",
        "--max-retries",
        "0",
        "--wait",
    ]);
    assert!(!failing.status.success());
    assert!(String::from_utf8_lossy(&failing.stderr).contains("exit status 1"));

    // Listings in JSON.
    let tasks: serde_json::Value =
        serde_json::from_str(&env.ok(&["tasks", "--state", "done", "--json"])).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 2);
    let shown: serde_json::Value = serde_json::from_str(&env.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["state"], "done");
    assert_eq!(shown["id"], id.as_str());
    assert!(env.ok(&["show", &id]).contains("queued while down"));
    let logs = env.ok(&["logs", "--task", &id, "--json"]);
    assert!(logs.lines().count() >= 5, "{logs}");
}

#[test]
fn cancel_and_retry_through_control_files() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    // A pending task (its session does not exist) is cancelled.
    env.ok(&[
        "submit",
        "--id",
        "parked",
        "--prompt",
        "echo x",
        "--session",
        "nobody",
    ]);
    wait_for("parked queued", T, || {
        env.state_of("parked") == Some(TaskState::Pending)
    });
    env.ok(&["cancel", "parked"]);
    assert_eq!(env.wait_final("parked", T).0, TaskState::Cancelled);
    // A running task is interrupted and cancelled.
    env.ok(&["submit", "--id", "running", "--prompt", "sleep 30"]);
    wait_for("running", T, || {
        env.state_of("running") == Some(TaskState::Active)
    });
    env.ok(&["cancel", "running"]);
    let (state, rec) = env.wait_final("running", T);
    assert_eq!(state, TaskState::Cancelled);
    assert_eq!(rec.attempts.len(), 1);
    // A failed task is retried with a fresh budget.
    let flag = env.path("flag");
    let prompt = format!("test -e {}", flag.display());
    env.ok(&[
        "submit",
        "--id",
        "flaky",
        "--prompt",
        &prompt,
        "--max-retries",
        "0",
    ]);
    assert_eq!(env.wait_final("flaky", T).0, TaskState::Failed);
    std::fs::write(&flag, "").unwrap();
    env.ok(&["retry", "flaky"]);
    wait_for("flaky retried", T, || {
        env.state_of("flaky") == Some(TaskState::Done)
    });
    let (_, rec) = env.spool().find("flaky").unwrap();
    assert_eq!(rec.attempts.len(), 2);
    // Errors are clear and non-zero.
    let out = env.cli(&["cancel", "flaky"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already done"));
    let out = env.cli(&["show", "no-such-task"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task"));
}

#[test]
fn errors_are_clear_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args(["status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("architect init"));
    let env = Env::new(ONE_SHELL);
    let out = env.cli(&["submit", "--prompt", "x", "--priority", "12"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/priority"));
    // init writes a working config, and a second daemon is refused.
    let fresh = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .current_dir(fresh.path())
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["init"]).status.success());
    assert!(fresh.path().join("config/sessions.toml").exists());
    assert!(fresh.path().join("spool/inbox").is_dir());
    let _d = env.daemon();
    wait_for("daemon lock", T, || {
        serde_json::from_str::<serde_json::Value>(&env.ok(&["status", "--json"])).unwrap()["daemon"]
            ["running"]
            == true
    });
    let second = env.cli(&["daemon"]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
}

/// A daemon started while its `kill -9`ed predecessor is still exiting (its lock not yet
/// released) waits for the lock instead of giving up, then runs tasks.
#[test]
fn a_daemon_started_while_the_last_one_exits_waits_for_its_lock() {
    use fs2::FileExt;
    let env = Env::new(ONE_SHELL);
    // Stand in for the exiting predecessor: hold the lock for a second.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(env.spool.join("locks/daemon.lock"))
        .unwrap();
    lock.lock_exclusive().unwrap();
    let d = env.daemon();
    std::thread::sleep(Duration::from_millis(1000));
    drop(lock);
    env.drop_task("t.json", r#"{"id": "t", "prompt": "echo after the wait"}"#);
    let (state, rec) = env.wait_final("t", T);
    assert_eq!(state, TaskState::Done, "{rec:?}\n{}", d.stderr());
    assert!(d.stderr().contains("waiting up to 5 s"), "{}", d.stderr());
}
