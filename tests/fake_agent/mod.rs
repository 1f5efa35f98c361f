//! The PTY path against the fake agent TUI: a cursor-position query at start (it exits
//! if unanswered), a 100-column minimum, a spinner while busy, a y/n question.

use std::time::Duration;

use architect::log::event;
use architect::session::SessionState;
use architect::spool::task::TaskState;

use crate::helper::{fake_agent_session, wait_for, Env};

const T: Duration = Duration::from_secs(30);

#[test]
fn fake_agent_runs_a_task_and_waits_for_an_answer() {
    let env = Env::new(&fake_agent_session(
        "agent-1",
        &["--need-cols", "100", "--work-ms", "200"],
    ));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task("a.json", r#"{"id": "a", "prompt": "write the docs"}"#);
    let (state, rec) = env.wait_final("a", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(
        rec.result.unwrap().reply.as_deref(),
        Some("done: write the docs")
    );
    // It was seen busy (spinner) before done.
    assert!(env
        .events_of::<event::SessionState>()
        .iter()
        .any(|e| e.data.state == "busy" && e.session.as_deref() == Some("agent-1")));

    // A permission question puts the session in waiting_input until someone answers.
    env.drop_task("q.json", r#"{"id": "q", "prompt": "touch a file ask"}"#);
    wait_for("waiting_input", T, || {
        env.session("agent-1")
            .is_some_and(|s| s.state == SessionState::WaitingInput)
    });
    assert_eq!(env.state_of("q"), Some(TaskState::Active));
    env.ok(&["send", "agent-1", "y", "--no-enter"]);
    let (state, rec) = env.wait_final("q", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(
        rec.result.unwrap().reply.as_deref(),
        Some("done: touch a file")
    );
}

#[test]
fn multi_line_prompts_arrive_whole_through_bracketed_paste() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let _d = env.daemon();
    env.drop_task(
        "m.json",
        r#"{"id": "m", "prompt": "first line\nsecond line"}"#,
    );
    let (state, rec) = env.wait_final("m", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(
        rec.result.unwrap().reply.as_deref(),
        Some("done: first line second line")
    );
}
