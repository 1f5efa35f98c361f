//! config/sessions.toml is the single source of truth, applied live.

use std::time::Duration;

use architect::log::event::ConfigApplied;
use architect::spool::task::TaskState;

use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

#[test]
fn sessions_added_changed_and_removed_without_a_restart() {
    let env = Env::new(ONE_SHELL);
    let mut d = env.daemon();
    env.wait_idle("sh-1", T);

    // Add a session with a role; a task for that role runs on it.
    env.write_config(
        "sessions.toml",
        &format!(
            "{ONE_SHELL}\n[[session]]\nname = \"builder\"\nprofile = \"shell\"\nrole = \"build\"\n"
        ),
    );
    env.wait_idle("builder", T);
    env.drop_task(
        "b.json",
        r#"{"id": "b", "prompt": "echo built", "role": "build"}"#,
    );
    let (state, rec) = env.wait_final("b", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(rec.session.as_deref(), Some("builder"));

    // A broken edit is reported and the running config kept.
    env.write_config("sessions.toml", "[[session]\nname = ");
    wait_for("config error event", T, || {
        env.events_of::<ConfigApplied>()
            .iter()
            .any(|e| !e.data.applied)
    });
    assert!(d.is_running());
    env.drop_task(
        "c.json",
        r#"{"id": "c", "prompt": "echo still", "role": "build"}"#,
    );
    assert_eq!(env.wait_final("c", T).0, TaskState::Done);

    // Change the builder's environment: it is restarted with the new one.
    let pid_before = env.session("builder").unwrap().pid;
    env.write_config(
        "sessions.toml",
        &format!("{ONE_SHELL}\n[[session]]\nname = \"builder\"\nprofile = \"shell\"\nrole = \"build\"\nenv = {{ GREETING = \"hi-from-config\" }}\n"),
    );
    wait_for("builder restarted", T, || {
        env.session("builder").is_some_and(|s| {
            s.pid.is_some()
                && s.pid != pid_before
                && s.state == architect::session::SessionState::Idle
        })
    });
    env.drop_task(
        "g.json",
        r#"{"id": "g", "prompt": "echo $GREETING", "session": "builder"}"#,
    );
    assert_eq!(
        env.wait_final("g", T).1.result.unwrap().output,
        "hi-from-config"
    );

    // Remove sh-1: its state file goes, the builder stays.
    env.write_config(
        "sessions.toml",
        "[[session]]\nname = \"builder\"\nprofile = \"shell\"\nrole = \"build\"\nenv = { GREETING = \"hi-from-config\" }\n",
    );
    wait_for("sh-1 removed", T, || env.session("sh-1").is_none());
    assert!(env.session("builder").is_some());
    let out = env.ok(&["sessions", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "builder");
}
