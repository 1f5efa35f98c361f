//! Bad input: each malformed file goes to rejected/ untouched with `<name>.error.json`
//! saying why (JSON path and message); nothing crashes, nothing vanishes.

use std::time::Duration;

use architect::log::event::{SyncConflict, TaskQueued, TaskRejected};
use architect::spool::task::TaskState;
use architect::spool::RejectionReport;

use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

fn report(env: &Env, name: &str) -> RejectionReport {
    let p = env
        .spool
        .join("rejected")
        .join(format!("{name}.error.json"));
    wait_for(&format!("{name} to be rejected"), T, || p.exists());
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn malformed_corpus_is_rejected_with_reasons_and_the_daemon_keeps_running() {
    let env = Env::new(ONE_SHELL);
    let secret = env.path("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    let mut d = env.daemon();
    env.wait_idle("sh-1", T);

    let big = format!(r#"{{"prompt": "{}"}}"#, "x".repeat(10 * 1024 * 1024));
    let corpus: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "invalid.json",
            b"{\"prompt\": \"unterminated".to_vec(),
            "",
            "invalid JSON",
        ),
        (
            "schema.json",
            br#"{"prompt": "x", "priority": 11}"#.to_vec(),
            "/priority",
            "must be at most 10 (maximum)",
        ),
        (
            "unknown.json",
            br#"{"prompt": "x", "colour": "red"}"#.to_vec(),
            "/colour",
            "unknown field",
        ),
        (
            "noprompt.json",
            br#"{"priority": 1}"#.to_vec(),
            "/prompt",
            "is required",
        ),
        (
            "badid.json",
            br#"{"prompt": "x", "id": "../../etc/passwd"}"#.to_vec(),
            "/id",
            "does not match",
        ),
        (
            "both.json",
            br#"{"prompt": "x", "session": "a", "role": "b"}"#.to_vec(),
            "",
            "not both",
        ),
        ("empty.json", Vec::new(), "", "empty"),
        ("huge.json", big.into_bytes(), "", "limit"),
        (
            "binary.json",
            vec![0x00, 0xff, 0xfe, 0x89, 0x50, 0x4e, 0x47],
            "",
            "UTF-8",
        ),
        ("array.json", b"[1, 2, 3]".to_vec(), "", "object"),
    ];
    for (name, bytes, _, _) in &corpus {
        std::fs::write(env.inbox().join(name), bytes).unwrap();
    }
    std::os::unix::fs::symlink(&secret, env.inbox().join("link.json")).unwrap();
    env.drop_task("dup1.json", r#"{"id": "dup", "prompt": "echo first"}"#);
    assert_eq!(env.wait_final("dup", T).0, TaskState::Done);
    env.drop_task("dup2.json", r#"{"id": "dup", "prompt": "echo second"}"#);
    // Ignored names stay where they are; a conflict copy is reported, not run.
    env.drop_task(".hidden.json", r#"{"prompt": "echo hidden"}"#);
    env.drop_task("partial.json.tmp", r#"{"prompt": "echo tmp"}"#);
    env.drop_task(".syncthing.x.json.tmp", r#"{"prompt": "echo syncthing"}"#);
    env.drop_task(
        "t.sync-conflict-20260101-101010-ABCDEF.json",
        r#"{"id": "conflict", "prompt": "echo conflict"}"#,
    );

    for (name, bytes, path, needle) in &corpus {
        let r = report(&env, name);
        assert_eq!(r.file, *name);
        assert!(
            r.errors
                .iter()
                .any(|e| e.path == *path && e.message.contains(needle)),
            "{name}: expected {needle:?} at {path:?}, got {:?}",
            r.errors
        );
        // Moved untouched.
        let kept = std::fs::read(env.spool.join("rejected").join(name)).unwrap();
        assert_eq!(&kept, bytes, "{name} changed on its way to rejected/");
    }
    let link = report(&env, "link.json");
    assert!(
        link.errors[0].message.contains("symbolic link"),
        "{:?}",
        link.errors
    );
    assert!(
        std::fs::symlink_metadata(env.spool.join("rejected/link.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let dup = report(&env, "dup2.json");
    assert_eq!(dup.errors[0].path, "/id");
    assert!(
        dup.errors[0].message.contains("duplicate"),
        "{:?}",
        dup.errors
    );
    // The first "dup" is untouched by the second.
    let (_, first) = env.spool().find("dup").unwrap();
    assert_eq!(first.result.unwrap().output, "first");

    // Nothing secret was read into the spool or the log.
    let log = std::fs::read_to_string(
        env.spool
            .join("log")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(!log.contains("TOP SECRET"));

    // The daemon is alive and still works.
    assert!(d.is_running(), "daemon died:\n{}", d.stderr());
    env.drop_task(
        "after.json",
        r#"{"id": "after", "prompt": "echo still here"}"#,
    );
    assert_eq!(env.wait_final("after", T).0, TaskState::Done);
    for name in [
        ".hidden.json",
        "partial.json.tmp",
        ".syncthing.x.json.tmp",
        "t.sync-conflict-20260101-101010-ABCDEF.json",
    ] {
        assert!(
            env.inbox().join(name).exists(),
            "{name} should be left alone"
        );
    }
    assert!(
        env.state_of("conflict").is_none(),
        "a conflict copy must not run"
    );
    let conflicts = env.events_of::<SyncConflict>();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(env.events_of::<TaskRejected>().len(), corpus.len() + 2);
}

/// Issue 9: a rejection report names the field and the rule, never the value. A secret
/// pasted into the wrong field, or under a field name the format does not know, reaches
/// neither `rejected/<name>.error.json`, nor the event log, nor the daemon's tracing log.
/// One of the two secrets has no shape the redactor knows: it is kept out because it is a
/// value, not because it was redacted.
#[test]
fn rejection_reports_name_the_field_and_the_rule_never_the_value() {
    const KEY: &str = "sk-test-SECRET123";
    const PLAIN: &str = "correct-horse-battery-staple";
    let env = Env::new(ONE_SHELL);
    let mut d = env.daemon();
    env.wait_idle("sh-1", T);
    let cases = [
        (
            "prio.json",
            format!(r#"{{"prompt": "x", "priority": "{KEY}"}}"#),
            "/priority",
            "must be of type integer (type)",
        ),
        (
            "extra.json",
            format!(r#"{{"prompt": "x", "db_password": "{PLAIN}"}}"#),
            "/db_password",
            "unknown field: not in the task format (additionalProperties)",
        ),
        (
            "id.json",
            format!(r#"{{"prompt": "x", "id": "{PLAIN}/{KEY}"}}"#),
            "/id",
            "does not match the pattern ^[A-Za-z0-9_-]{1,64}$ (pattern)",
        ),
        (
            "lock.json",
            format!(r#"{{"prompt": "x", "locks": {{"paths": ["../{PLAIN}"]}}}}"#),
            "/locks/paths/0",
            "`..` is not allowed",
        ),
        (
            "branch.json",
            format!(r#"{{"prompt": "x", "locks": {{"branch": "{PLAIN}..{KEY}"}}}}"#),
            "/locks/branch",
            "contains '..'",
        ),
    ];
    for (name, body, _, _) in &cases {
        env.drop_task(name, body);
    }
    // A valid id that is taken: the duplicate is reported without the id.
    env.drop_task(
        "dup1.json",
        &format!(r#"{{"id": "{PLAIN}", "prompt": "echo 1"}}"#),
    );
    assert_eq!(env.wait_final(PLAIN, T).0, TaskState::Done);
    env.drop_task(
        "dup2.json",
        &format!(r#"{{"id": "{PLAIN}", "prompt": "echo 2"}}"#),
    );

    let mut reports = String::new();
    for (name, _, path, rule) in &cases {
        let r = report(&env, name);
        assert!(
            r.errors
                .iter()
                .any(|e| e.path == *path && e.message.contains(rule)),
            "{name}: expected {rule:?} at {path:?}, got {:?}",
            r.errors
        );
        reports.push_str(
            &std::fs::read_to_string(
                env.spool
                    .join("rejected")
                    .join(format!("{name}.error.json")),
            )
            .unwrap(),
        );
    }
    let dup = report(&env, "dup2.json");
    assert_eq!(dup.errors[0].path, "/id");
    assert!(dup.errors[0].message.contains("duplicate"), "{dup:?}");
    reports.push_str(&serde_json::to_string(&dup).unwrap());

    // The report is written before the event is logged: wait for the last event.
    wait_for("every task_rejected event", T, || {
        env.events_of::<TaskRejected>().len() > cases.len()
    });
    let rejected = env.events_of::<TaskRejected>();
    assert_eq!(rejected.len(), cases.len() + 1, "{rejected:?}");
    let events: String = rejected
        .iter()
        .map(|e| serde_json::to_string(&e.data).unwrap())
        .collect();
    for (what, text) in [("reports", &reports), ("task_rejected events", &events)] {
        assert!(!text.contains("SECRET123"), "{what}: {text}");
        assert!(!text.contains(PLAIN), "{what}: {text}");
    }
    // The event log as written, and the daemon's tracing (-vv): no rejection quoted the
    // key (the accepted dup1 task's id is PLAIN, so only the key is looked for there).
    for f in std::fs::read_dir(env.spool.join("log")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(!text.contains("SECRET123"), "{text}");
    }
    assert!(!d.stderr().contains("SECRET123"), "{}", d.stderr());
    assert!(d.is_running(), "daemon died:\n{}", d.stderr());
}

#[test]
fn a_burst_that_overflows_the_watch_channel_is_still_processed_in_full() {
    let env = Env::new(ONE_SHELL);
    // A 2-slot channel: the watcher must drop hints and ask for a listing instead.
    let d = env.daemon_with_env(&[("ARCHITECT_WATCH_CHANNEL", "2")]);
    env.wait_idle("sh-1", T);
    for i in 0..600 {
        env.drop_task(
            &format!("burst-{i}.json"),
            &format!(r#"{{"id": "burst-{i}", "prompt": "x", "session": "parked"}}"#),
        );
    }
    wait_for("all 600 queued", Duration::from_secs(60), || {
        crate::helper::ids_in(&env.spool.join("pending")).len() == 600
    });
    // Each inbox file is removed once its copy in pending/ is durable.
    wait_for("the inbox to be empty", Duration::from_secs(10), || {
        crate::helper::ids_in(&env.inbox()).is_empty()
    });
    assert!(
        d.stderr().contains("overflowed"),
        "the overflow path was not taken"
    );
    assert_eq!(env.events_of::<TaskQueued>().len(), 600);
}
