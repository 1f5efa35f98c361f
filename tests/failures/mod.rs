//! Things going wrong: a session that dies mid-task, a task that outlives its timeout,
//! and `kill -9` of the daemon with tasks in every state.

use std::collections::HashMap;
use std::time::Duration;

use architect::log::event::{
    SessionExited, SessionLimited, SessionStarted, TaskCompleted, TaskRetried,
};
use architect::session::SessionState;
use architect::spool::task::{AttemptOutcome, TaskState};

use crate::helper::{ids_in, wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(40);

#[test]
fn a_session_that_dies_mid_task_is_restarted_and_the_task_retried() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    let marker = env.path("marker");
    // First attempt: the shell kills itself. Second attempt: succeeds.
    let prompt = format!(
        "if [ -e {m} ]; then echo survived; else touch {m}; kill -9 $$; fi",
        m = marker.display()
    );
    env.drop_task(
        "die.json",
        &serde_json::json!({"id": "die", "prompt": prompt, "max_retries": 2}).to_string(),
    );
    let (state, rec) = env.wait_final("die", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.result.unwrap().output, "survived");
    assert_eq!(rec.attempts.len(), 2);
    assert_eq!(rec.attempts[0].outcome, AttemptOutcome::SessionDied);
    assert!(
        rec.attempts[0].error.as_deref().unwrap().contains("died"),
        "{:?}",
        rec.attempts[0]
    );
    assert!(
        env.events_of::<SessionStarted>().len() >= 2,
        "the session was restarted"
    );
    assert!(env
        .events_of::<SessionExited>()
        .iter()
        .any(|e| e.task_id.as_deref() == Some("die")));

    // With no retries left the task fails, with the reason.
    env.drop_task(
        "die2.json",
        r#"{"id": "die2", "prompt": "kill -9 $$", "max_retries": 0}"#,
    );
    let (state, rec) = env.wait_final("die2", T);
    assert_eq!(state, TaskState::Failed);
    let err = rec.error.unwrap();
    assert!(
        err.contains("gave up after 1 attempt") && err.contains("died"),
        "{err}"
    );
    env.wait_idle("sh-1", T);
}

#[test]
fn a_task_past_its_timeout_is_interrupted_and_the_session_stays_usable() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "slow.json",
        r#"{"id": "slow", "prompt": "sleep 60", "timeout_s": 1, "max_retries": 1}"#,
    );
    let (state, rec) = env.wait_final("slow", T);
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    assert_eq!(rec.attempts.len(), 2, "one retry");
    assert!(rec
        .attempts
        .iter()
        .all(|a| a.outcome == AttemptOutcome::TimedOut));
    assert!(rec.error.unwrap().contains("timed out after 1 s"));
    assert_eq!(env.events_of::<TaskRetried>().len(), 1);
    env.drop_task("next.json", r#"{"id": "next", "prompt": "echo next"}"#);
    let (state, rec) = env.wait_final("next", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(rec.result.unwrap().output, "next");
}

#[test]
fn kill_9_of_the_daemon_loses_nothing_and_completes_nothing_twice() {
    let env = Env::new(
        "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\n\n[[session]]\nname = \"sh-2\"\nprofile = \"shell\"\n",
    );
    let d = env.daemon();
    env.drop_task("done1.json", r#"{"id": "done1", "prompt": "echo one"}"#);
    env.drop_task(
        "failed1.json",
        r#"{"id": "failed1", "prompt": "false", "max_retries": 0}"#,
    );
    env.drop_task(
        "cancel1.json",
        r#"{"id": "cancel1", "prompt": "echo never", "session": "nobody"}"#,
    );
    assert_eq!(env.wait_final("done1", T).0, TaskState::Done);
    assert_eq!(env.wait_final("failed1", T).0, TaskState::Failed);
    wait_for("cancel1 queued", T, || {
        env.state_of("cancel1") == Some(TaskState::Pending)
    });
    env.ok(&["cancel", "cancel1"]);
    assert_eq!(env.wait_final("cancel1", T).0, TaskState::Cancelled);
    // Two long tasks occupy both sessions; more wait in pending/.
    let counter = env.path("runs");
    for id in ["long1", "long2"] {
        let prompt = format!(
            "echo {id} >> {}; sleep 2; echo {id} done",
            counter.display()
        );
        env.drop_task(
            &format!("{id}.json"),
            &serde_json::json!({"id": id, "prompt": prompt}).to_string(),
        );
    }
    wait_for("both long tasks running", T, || {
        env.state_of("long1") == Some(TaskState::Active)
            && env.state_of("long2") == Some(TaskState::Active)
    });
    for i in 0..5 {
        env.drop_task(
            &format!("p{i}.json"),
            &format!(r#"{{"id": "p{i}", "prompt": "echo p{i}"}}"#),
        );
    }
    wait_for("pending tasks queued", T, || {
        (0..5).all(|i| env.state_of(&format!("p{i}")) == Some(TaskState::Pending))
    });
    d.kill9();
    // One more arrives while the daemon is down.
    env.drop_task("late.json", r#"{"id": "late", "prompt": "echo late"}"#);

    let _d = env.daemon();
    let all = [
        "done1", "failed1", "cancel1", "long1", "long2", "p0", "p1", "p2", "p3", "p4", "late",
    ];
    for id in all {
        env.wait_final(id, T);
    }
    assert!(ids_in(&env.spool.join("pending")).is_empty());
    assert!(ids_in(&env.spool.join("active")).is_empty());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for dir in ["done", "failed", "cancelled"] {
        for id in ids_in(&env.spool.join(dir)) {
            *seen.entry(id).or_default() += 1;
        }
    }
    for id in all {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} must be in exactly one final directory"
        );
    }
    for id in ["long1", "long2"] {
        let (state, rec) = env.spool().find(id).unwrap();
        assert_eq!(state, TaskState::Done);
        assert_eq!(rec.attempts.len(), 2, "the interrupted attempt is counted");
        assert_eq!(rec.attempts[0].outcome, AttemptOutcome::Interrupted);
    }
    let completions = env.events_of::<TaskCompleted>();
    for id in all {
        let n = completions
            .iter()
            .filter(|e| e.task_id.as_deref() == Some(id))
            .count();
        assert!(n <= 1, "{id} completed {n} times");
    }
    assert_eq!(env.spool().find("cancel1").unwrap().0, TaskState::Cancelled);
}

fn processes_running(cmdline: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).replace('\0', " ").trim() == cmdline)
        .count()
}

#[test]
fn processes_that_leave_the_process_group_die_with_the_session() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    // A grandchild in a session of its own escapes the process-group kill (as Codex's
    // app-server does); the environment marker still finds it.
    env.drop_task("spawn.json", r#"{"id": "spawn", "prompt": "setsid sleep 3001 </dev/null >/dev/null 2>&1 & echo spawned"}"#);
    assert_eq!(env.wait_final("spawn", T).0, TaskState::Done);
    wait_for("the escaped sleep to run", T, || {
        processes_running("sleep 3001") == 1
    });
    env.drop_task(
        "die.json",
        r#"{"id": "die", "prompt": "kill -9 $$", "max_retries": 0}"#,
    );
    assert_eq!(env.wait_final("die", T).0, TaskState::Failed);
    wait_for("the escaped sleep to be killed", T, || {
        processes_running("sleep 3001") == 0
    });
}

#[test]
fn a_prompt_proven_not_taken_is_retried_and_one_that_was_taken_never_is() {
    // `deaf`: the fake agent ignores Enter, the prompt stays in its input box.
    let env = Env::new(&crate::helper::fake_agent_session(
        "agent-1",
        &["--work-ms", "50"],
    ));
    let _d = env.daemon();
    env.drop_task(
        "swallowed.json",
        r#"{"id": "swallowed", "prompt": "deaf please", "max_retries": 1, "timeout_s": 600}"#,
    );
    let (state, rec) = env.wait_final("swallowed", T);
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    assert_eq!(rec.attempts.len(), 2);
    assert!(
        rec.attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::NotTaken),
        "{:?}",
        rec.attempts
    );
    assert!(rec.error.unwrap().contains("still in the input box"));
    env.wait_idle("agent-1", T);
    // A prompt that was taken runs once, however fast its turn.
    env.drop_task(
        "quick.json",
        r#"{"id": "quick", "prompt": "sleep=0 quick"}"#,
    );
    let (state, rec) = env.wait_final("quick", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.attempts.len(), 1);
    assert_eq!(rec.result.unwrap().reply.as_deref(), Some("done: quick"));
}

#[test]
fn a_usage_limit_screen_parks_the_session_and_it_comes_back_by_itself() {
    // For its first 2.5 s the fake agent answers every prompt with
    // "✗ usage limit reached, try again in Ns".
    let env = Env::new(&crate::helper::fake_agent_session(
        "agent-1",
        &["--work-ms", "50", "--limited-for-ms", "2500"],
    ));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task(
        "lim.json",
        r#"{"id": "lim", "prompt": "work after the limit", "max_retries": 0}"#,
    );
    wait_for("the session to be limited", T, || {
        env.session("agent-1")
            .is_some_and(|s| s.state == SessionState::Limited && s.limited_until.is_some())
    });
    let (state, rec) = env.wait_final("lim", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let outcomes: Vec<_> = rec.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Limited, AttemptOutcome::Completed]
    );
    assert_eq!(
        rec.result.unwrap().reply.as_deref(),
        Some("done: work after the limit")
    );
    let limited = env.events_of::<SessionLimited>();
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert!(limited[0].data.message.contains("usage limit reached"));
    let status = env.ok(&["status"]);
    assert!(status.contains("limited 0"), "{status}");
}
