//! The main job: a plain file dropped into the inbox runs on a real shell session and
//! its real output lands in done/; priorities, FIFO and dependencies.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use architect::log::event::{TaskAssigned, TaskQueued};
use architect::spool::task::{AttemptOutcome, TaskState};

use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

#[test]
fn dropped_file_runs_on_a_shell_session_and_lands_in_done() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "anything.json",
        r#"{"id": "t1", "prompt": "echo hello-$((6 * 7)); echo second line"}"#,
    );
    let (state, rec) = env.wait_final("t1", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let result = rec.result.expect("a result");
    assert_eq!(result.output, "hello-42\nsecond line");
    assert_eq!(result.exit_status, Some(0));
    assert_eq!(rec.session.as_deref(), Some("sh-1"));
    assert_eq!(rec.attempts.len(), 1);
    assert_eq!(rec.attempts[0].outcome, AttemptOutcome::Completed);
    assert_eq!(rec.source, "anything.json");
    assert!(rec.started_at.is_some() && rec.finished_at.is_some());
    // The inbox file is gone, the record is in exactly one state directory.
    assert!(!env.inbox().join("anything.json").exists());
    for s in TaskState::ALL {
        let there = env.spool().task_path(s, "t1").exists();
        assert_eq!(there, s == TaskState::Done, "{s:?}");
    }
    let meta = std::fs::metadata(env.spool().task_path(TaskState::Done, "t1")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dmeta = std::fs::metadata(env.spool.join("done")).unwrap();
    assert_eq!(dmeta.permissions().mode() & 0o777, 0o700);
    // The lifecycle is in the log, in order.
    let kinds: Vec<String> = env
        .events()
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some("t1"))
        .filter(|e| e.kind().starts_with("task_") || e.kind() == "prompt_sent")
        .map(|e| e.kind().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "task_received",
            "task_queued",
            "task_assigned",
            "prompt_sent",
            "task_completed"
        ]
    );

    // The files on disk match the published schemas.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.spool().task_path(TaskState::Done, "t1")).unwrap(),
    )
    .unwrap();
    assert_valid("task-record.schema.json", &record);
    let session: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.spool.join("sessions/sh-1.json")).unwrap())
            .unwrap();
    assert_valid("session.schema.json", &session);
    for e in env.events() {
        assert_valid("event.schema.json", &serde_json::to_value(e).unwrap());
    }
}

fn schema(name: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn assert_valid(name: &str, doc: &serde_json::Value) {
    let task = jsonschema::Resource::from_contents(schema("task.schema.json")).unwrap();
    let validator = jsonschema::options()
        .with_resource("https://architect.dev/schemas/task.schema.json", task)
        .build(&schema(name))
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{doc:#}");
}

#[test]
fn a_failing_command_fails_the_task_with_its_output() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "f.json",
        r#"{"id": "f", "prompt": "ls /definitely/not/here"}"#,
    );
    let (state, rec) = env.wait_final("f", T);
    assert_eq!(state, TaskState::Failed);
    let r = rec.result.unwrap();
    assert_eq!(r.exit_status, Some(2));
    assert!(
        r.output.contains("No such file or directory"),
        "{}",
        r.output
    );
    assert_eq!(rec.error.as_deref(), Some("exit status 2"));
}

#[test]
fn higher_priority_first_and_fifo_within_a_priority() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    // Occupy the only session, then queue the rest behind it.
    env.drop_task(
        "block.json",
        r#"{"id": "block", "prompt": "sleep 1.5", "priority": 10}"#,
    );
    wait_for("block to start", T, || {
        env.state_of("block") == Some(TaskState::Active)
    });
    for (id, pri) in [("a", 5), ("b", 9), ("c", 5), ("d", 9), ("e", 0), ("f", 5)] {
        env.drop_task(
            &format!("{id}.json"),
            &format!(r#"{{"id": "{id}", "prompt": "echo {id}", "priority": {pri}}}"#),
        );
        wait_for("queued", T, || env.state_of(id) == Some(TaskState::Pending));
    }
    for id in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(env.wait_final(id, T).0, TaskState::Done);
    }
    let order: Vec<String> = env
        .events_of::<TaskAssigned>()
        .into_iter()
        .filter_map(|e| e.task_id)
        .collect();
    assert_eq!(order, ["block", "b", "d", "a", "c", "f", "e"]);
}

/// Dependencies that can never be met are said at once: a task depending on itself or
/// closing a cycle fails naming the cycle (and the cycle's other tasks fail with it); one
/// waiting for an unknown id says so in its `task_queued` event.
#[test]
fn impossible_dependencies_fail_with_the_cycle_and_unknown_ones_are_named() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "me.json",
        r#"{"id": "me", "prompt": "echo me", "depends_on": ["me"]}"#,
    );
    let (state, rec) = env.wait_final("me", T);
    assert_eq!(state, TaskState::Failed);
    assert_eq!(rec.error.as_deref(), Some("dependency cycle: me → me"));
    env.drop_task(
        "x.json",
        r#"{"id": "x", "prompt": "echo x", "depends_on": ["y"]}"#,
    );
    wait_for("x queued", T, || {
        env.events_of::<TaskQueued>()
            .iter()
            .any(|e| e.task_id.as_deref() == Some("x"))
    });
    let queued = env.events_of::<TaskQueued>();
    let x = queued
        .iter()
        .find(|e| e.task_id.as_deref() == Some("x"))
        .unwrap();
    assert_eq!(x.data.unknown_dependencies, ["y"]);
    env.drop_task(
        "y.json",
        r#"{"id": "y", "prompt": "echo y", "depends_on": ["z"]}"#,
    );
    // z closes the cycle: it arrives last.
    wait_for("y queued", T, || {
        env.events_of::<TaskQueued>()
            .iter()
            .any(|e| e.task_id.as_deref() == Some("y"))
    });
    env.drop_task(
        "z.json",
        r#"{"id": "z", "prompt": "echo z", "depends_on": ["x"]}"#,
    );
    let (state, rec) = env.wait_final("z", T);
    assert_eq!(state, TaskState::Failed);
    assert_eq!(
        rec.error.as_deref(),
        Some("dependency cycle: z → x → y → z")
    );
    for (id, after) in [("y", "z"), ("x", "y")] {
        let (state, rec) = env.wait_final(id, T);
        assert_eq!(state, TaskState::Failed, "{id}");
        assert_eq!(rec.error, Some(format!("dependency {after} failed")));
        assert!(rec.attempts.is_empty(), "{id} never ran");
    }
}

#[test]
fn depends_on_waits_and_a_failed_dependency_fails_the_dependent() {
    let env = Env::new("[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\n\n[[session]]\nname = \"sh-2\"\nprofile = \"shell\"\n");
    let _d = env.daemon();
    // The dependent arrives first; two sessions are free, yet it must wait.
    env.drop_task(
        "b.json",
        r#"{"id": "b", "prompt": "echo b", "depends_on": ["a"]}"#,
    );
    env.drop_task("a.json", r#"{"id": "a", "prompt": "sleep 0.5; echo a"}"#);
    env.drop_task(
        "bad.json",
        r#"{"id": "bad", "prompt": "false", "max_retries": 0}"#,
    );
    env.drop_task(
        "c.json",
        r#"{"id": "c", "prompt": "echo c", "depends_on": ["a", "bad"]}"#,
    );
    assert_eq!(env.wait_final("b", T).0, TaskState::Done);
    let (cs, crec) = env.wait_final("c", T);
    assert_eq!(cs, TaskState::Failed);
    assert_eq!(crec.error.as_deref(), Some("dependency bad failed"));
    assert!(crec.attempts.is_empty(), "c never ran");
    let ev = env.events();
    let ts = |kind: &str, id: &str| {
        ev.iter()
            .find(|e| e.kind() == kind && e.task_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no {kind} for {id}"))
            .ts
    };
    assert!(ts("task_assigned", "b") >= ts("task_completed", "a"));
    // A task whose dependency already failed fails at once.
    env.drop_task(
        "d.json",
        r#"{"id": "d", "prompt": "echo d", "depends_on": ["bad"]}"#,
    );
    assert_eq!(env.wait_final("d", T).0, TaskState::Failed);
}

/// `tasks` shows a running task as active, as `status` and `sessions` do: the directory is
/// the state, whatever the record's own field still says.
#[test]
fn tasks_shows_a_running_task_as_active() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task("run.json", r#"{"id": "run", "prompt": "sleep 3"}"#);
    wait_for("the task to run", T, || {
        env.state_of("run") == Some(TaskState::Active)
    });
    let out = env.ok(&["tasks", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "run")
        .unwrap();
    assert_eq!(row["state"], "active", "{out}");
    let table = env.ok(&["tasks"]);
    let line = table.lines().find(|l| l.contains(" run ")).unwrap();
    assert!(line.contains("active"), "{table}");
}

/// Stopping the daemon (SIGTERM) while a task runs is not the task's failure: it goes back
/// to `pending/` with no attempt counted — even with `max_retries: 0` — and runs once the
/// daemon is back.
#[test]
fn a_graceful_stop_returns_a_running_task_without_using_a_retry() {
    let env = Env::new(ONE_SHELL);
    {
        let _d = env.daemon();
        env.drop_task(
            "long.json",
            r#"{"id": "long", "prompt": "sleep 5; echo finally", "max_retries": 0}"#,
        );
        wait_for("the task to run", T, || {
            env.state_of("long") == Some(TaskState::Active)
        });
        std::thread::sleep(Duration::from_millis(300));
        // Dropping the daemon sends SIGTERM and waits for it to exit.
    }
    assert_eq!(env.state_of("long"), Some(TaskState::Pending));
    let _d = env.daemon();
    let (state, rec) = env.wait_final("long", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert!(rec.result.unwrap().output.contains("finally"));
    assert!(
        rec.attempts
            .iter()
            .all(|a| a.outcome != AttemptOutcome::Failed),
        "{:?}",
        rec.attempts
    );
}
