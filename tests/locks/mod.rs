//! Branch and path locks through the real daemon: two tasks naming one path never run at
//! once, a directory conflicts with what is inside it, a waiting task does not hold up
//! the queue, a killed holder frees its locks at once, agents never inherit lock files,
//! bad lock paths are rejected, and `architect lock` takes part in the same exclusion.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use architect::locks::verify_exclusion;
use architect::log::event::{LockAcquired, LockReleased, LockWaiting};
use architect::spool::task::TaskState;

use crate::helper::{wait_for, Env};

const T: Duration = Duration::from_secs(60);

const THREE_SHELLS: &str = "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\n\
[[session]]\nname = \"sh-2\"\nprofile = \"shell\"\n\
[[session]]\nname = \"sh-3\"\nprofile = \"shell\"\n";

/// A background `architect lock acquire …` that has printed its first line (held).
fn hold(env: &Env, resources: &[&str]) -> std::process::Child {
    let mut child = env
        .cmd()
        .current_dir(env.dir.path())
        .args(["lock", "acquire", "--json"])
        .args(resources)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line once held");
    assert_eq!(
        v["held"].as_array().unwrap().len(),
        resources.len(),
        "{line}"
    );
    child
}

#[test]
fn tasks_naming_one_path_never_run_at_once_and_do_not_hold_up_the_queue() {
    let env = Env::new(THREE_SHELLS);
    let _d = env.daemon();
    for i in 1..=4 {
        env.drop_task(
            &format!("a{i}.json"),
            &format!(r#"{{"id": "a{i}", "prompt": "sleep 0.3; echo a{i}", "locks": {{"paths": ["src/db.rs"]}}}}"#),
        );
    }
    // The directory conflicts with the file inside it.
    env.drop_task(
        "d1.json",
        r#"{"id": "d1", "prompt": "sleep 0.3; echo d1", "locks": {"paths": ["./src/"]}}"#,
    );
    // Queued behind them, with no lock or an unrelated one: must not wait for them.
    env.drop_task(
        "b1.json",
        r#"{"id": "b1", "prompt": "echo b1", "priority": 1}"#,
    );
    env.drop_task(
        "c1.json",
        r#"{"id": "c1", "prompt": "echo c1", "priority": 1, "locks": {"paths": ["docs/x.md"], "branch": "feature/c"}}"#,
    );
    let mut finished = Vec::new();
    for id in ["a1", "a2", "a3", "a4", "d1", "b1", "c1"] {
        let (state, rec) = env.wait_final(id, T);
        assert_eq!(state, TaskState::Done, "{id}: {rec:?}");
        finished.push((id, rec.finished_at.unwrap()));
    }
    let events = env.events();
    let checked = verify_exclusion(&events).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked, 6, "six tasks took locks");
    // Five tasks contend for src: at least three of them had to wait.
    let waits = env.events_of::<LockWaiting>();
    assert!(waits.len() >= 3, "{waits:?}");
    assert!(waits.iter().all(|w| w.data.reason.contains(" by task ")));
    // Every lock was released, and its holder file emptied.
    assert_eq!(env.events_of::<LockReleased>().len(), 6);
    let sidecar = env.spool.join("locks/paths/src/db.rs/@holder.json");
    assert_eq!(std::fs::metadata(sidecar).unwrap().len(), 0);
    // The low-priority tasks ran while the lock queue was still draining.
    let last_locked = finished[..5].iter().map(|(_, t)| *t).max().unwrap();
    for (id, t) in &finished[5..] {
        assert!(*t < last_locked, "{id} waited behind the locked tasks");
    }
}

#[test]
fn a_task_starts_as_soon_as_its_lock_holder_is_killed() {
    let env = Env::new(crate::helper::ONE_SHELL);
    let _d = env.daemon();
    let mut holder = hold(&env, &["src/db.rs"]);
    env.ok(&[
        "submit",
        "--id",
        "t1",
        "--prompt",
        "echo ran",
        "--lock",
        "src/db.rs",
    ]);
    wait_for("t1 to wait for its lock", T, || {
        env.spool()
            .find("t1")
            .is_ok_and(|(_, r)| r.waiting_lock.is_some())
    });
    let show = env.ok(&["show", "t1"]);
    assert!(show.contains("state     waiting_lock"), "{show}");
    assert!(show.contains("held by `architect lock`"), "{show}");
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["tasks"]["waiting_lock"], 1, "{status}");
    let listed = env.ok(&["tasks", "--state", "waiting-lock"]);
    assert!(listed.contains("t1"), "{listed}");
    let locks: serde_json::Value = serde_json::from_str(&env.ok(&["locks", "--json"])).unwrap();
    assert_eq!(locks["held"][0]["pid"], holder.id(), "{locks}");

    // kill -9: the kernel drops the lock with the process; its holder file stays behind.
    let killed_at = chrono::Utc::now();
    let t0 = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (state, rec) = env.wait_final("t1", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.result.unwrap().output, "ran");
    assert!(
        rec.waiting_lock.is_none(),
        "the final record no longer waits"
    );
    let acquired = env.events_of::<LockAcquired>()[0].ts;
    println!(
        "lock holder killed -> task took the lock after {} ms (observed {} ms)",
        (acquired - killed_at).num_milliseconds(),
        t0.elapsed().as_millis()
    );
    verify_exclusion(&env.events()).unwrap();
    let locks: serde_json::Value = serde_json::from_str(&env.ok(&["locks", "--json"])).unwrap();
    assert_eq!(locks["held"], serde_json::json!([]), "{locks}");
}

#[test]
fn agent_processes_never_inherit_lock_files() {
    let env = Env::new(crate::helper::ONE_SHELL);
    let _d = env.daemon();
    // The shell running the task lists its own open files while the daemon holds the lock.
    env.drop_task(
        "t.json",
        r#"{"id": "t", "prompt": "ls -l /proc/$$/fd/ | grep -c 'locks/' ; ls -l /proc/$$/fd/ | wc -l", "locks": {"paths": ["src"]}}"#,
    );
    let (state, rec) = env.wait_final("t", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let out = rec.result.unwrap().output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "the shell has a lock file open: {out}");
    assert!(
        lines[1].parse::<u32>().unwrap() >= 3,
        "fd listing worked: {out}"
    );
    assert_eq!(env.events_of::<LockAcquired>().len(), 1);
}

#[test]
fn bad_lock_paths_and_branches_are_rejected_with_the_reason() {
    let env = Env::new(crate::helper::ONE_SHELL);
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), env.dir.path().join("escape")).unwrap();
    let _d = env.daemon();
    let many = format!(
        r#"{{"paths": [{}]}}"#,
        (0..480)
            .map(|i| format!("\"src/f{i}.rs\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let cases = [
        (
            "dotdot",
            r#"{"paths": ["src/../../etc"]}"#,
            "/locks/paths/0",
            "`..`",
        ),
        (
            "abs",
            r#"{"paths": ["ok.rs", "/etc/passwd"]}"#,
            "/locks/paths/1",
            "outside the repository",
        ),
        (
            "link",
            r#"{"paths": ["escape/x"]}"#,
            "/locks/paths/0",
            "symlink",
        ),
        (
            "main",
            r#"{"branch": "main"}"#,
            "/locks/branch",
            "protected",
        ),
        (
            "refsprod",
            r#"{"branch": "refs/heads/prod"}"#,
            "/locks/branch",
            "refs/",
        ),
        ("badref", r#"{"branch": "a..b"}"#, "/locks/branch", "'..'"),
        (
            "extra",
            r#"{"files": ["x"]}"#,
            "/locks/files",
            "unknown field",
        ),
        // Too many paths for the open files they would hold.
        ("many", many.as_str(), "/locks/paths", "at most 64"),
    ];
    for (name, locks, _, _) in &cases {
        env.drop_task(
            &format!("{name}.json"),
            &format!(r#"{{"prompt": "echo no", "locks": {locks}}}"#),
        );
    }
    for (name, _, pointer, says) in &cases {
        let report = env
            .spool
            .join("rejected")
            .join(format!("{name}.json.error.json"));
        wait_for(&format!("{name} to be rejected"), T, || report.exists());
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let errors = v["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["path"] == *pointer && e["message"].as_str().unwrap().contains(says)),
            "{name}: {v}"
        );
        assert!(env
            .spool
            .join("rejected")
            .join(format!("{name}.json"))
            .exists());
    }
    // The CLI refuses the same before anything reaches the spool.
    let out = env.cli(&["submit", "--prompt", "x", "--lock", "../x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`..`"));
}

/// `architect lock …` run from the repository root (paths are relative to the cwd).
fn lock_cli(env: &Env, args: &[&str]) -> std::process::Output {
    env.cmd()
        .current_dir(env.dir.path())
        .arg("lock")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn lock_cli_excludes_waits_releases_and_runs_a_command() {
    let env = Env::new(crate::helper::ONE_SHELL);
    let mut holder = hold(&env, &["docs", "branch:feature/x"]);
    // Held: a path inside the directory is refused at once, and after --wait.
    let out = lock_cli(&env, &["acquire", "docs/a.md"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("docs/a.md is held (through docs) by `architect lock`"),
        "{err}"
    );
    let t0 = Instant::now();
    let out = lock_cli(&env, &["acquire", "branch:feature/x", "--wait", "0.3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // Something else is free.
    let out = lock_cli(&env, &["acquire", "src", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's status is passed on"
    );
    // Release stops the holder cleanly and frees everything.
    let released =
        String::from_utf8(lock_cli(&env, &["release", "docs", "branch:feature/x"]).stdout).unwrap();
    assert!(released.contains("docs: released"), "{released}");
    let status = holder.wait().unwrap();
    assert!(status.success(), "holder exits 0 on release: {status}");
    let locks: serde_json::Value = serde_json::from_str(&env.ok(&["locks", "--json"])).unwrap();
    assert_eq!(locks["held"], serde_json::json!([]), "{locks}");
    assert!(lock_cli(&env, &["acquire", "docs/a.md", "--", "true"])
        .status
        .success());
    // A waiter gets the lock once the holder goes away.
    let holder = hold(&env, &["src/x.rs"]);
    let mut waiter = env
        .cmd()
        .current_dir(env.dir.path())
        .args(["lock", "acquire", "src", "--wait", "30", "--", "true"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(waiter.try_wait().unwrap().is_none(), "the waiter waits");
    drop(holder); // Child's drop does not kill it: release it.
    assert!(lock_cli(&env, &["release", "src/x.rs"]).status.success());
    assert!(waiter.wait().unwrap().success());
}
