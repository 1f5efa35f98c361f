//! Intake owns its files: a task file dropped into the inbox is copied into a file of the
//! daemon's own, so a producer's hard link or open descriptor can change nothing after
//! validation; names that are not UTF-8 are rejected under a safe name; a UTF-8 byte
//! order mark is accepted.

use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use architect::log::event::{TaskReceived, TaskRejected};
use architect::spool::task::TaskState;

use crate::helper::{ids_in, wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

#[test]
fn a_hard_linked_inbox_file_cannot_touch_the_file_outside() {
    let env = Env::new(ONE_SHELL);
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let template = outside.join("template.json");
    let original = r#"{"id": "linked", "prompt": "echo linked"}"#;
    std::fs::write(&template, original).unwrap();
    std::fs::set_permissions(&template, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _d = env.daemon();
    std::fs::hard_link(&template, env.inbox().join("x.json")).unwrap();
    assert_eq!(env.wait_final("linked", T).0, TaskState::Done);
    // More tasks: their records are written while the linked inode is around.
    for i in 0..5 {
        env.drop_task(
            &format!("more-{i}.json"),
            &format!(r#"{{"id": "more-{i}", "prompt": "echo {i}"}}"#),
        );
    }
    for i in 0..5 {
        assert_eq!(env.wait_final(&format!("more-{i}"), T).0, TaskState::Done);
    }
    assert_eq!(std::fs::read_to_string(&template).unwrap(), original);
    let meta = std::fs::metadata(&template).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o644,
        "its mode was changed"
    );
    assert_eq!(
        meta.nlink(),
        1,
        "the inbox link is gone; nothing else links to it"
    );
    let done = env.spool.join("done/linked.json");
    assert_eq!(
        std::fs::metadata(&done).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_ne!(std::fs::metadata(&done).unwrap().ino(), meta.ino());
}

#[test]
fn a_file_changed_after_validation_changes_nothing() {
    let env = Env::new(ONE_SHELL);
    let d = env.daemon();
    // The producer keeps a second descriptor open on the file it submits.
    let path = env.inbox().join("chg.json");
    let mut first = std::fs::File::create(&path).unwrap();
    let mut kept = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    first
        .write_all(br#"{"id": "chg", "prompt": "echo original", "session": "nobody"}"#)
        .unwrap();
    drop(first);
    wait_for("the task to be taken in", T, || {
        env.state_of("chg") == Some(TaskState::Pending)
    });
    kept.rewind().unwrap();
    kept.write_all(
        br#"{"id": "chg", "prompt": "echo CHANGED", "session": "nobody", "priority": 10, "timeout_s": 9999999}  "#,
    )
    .unwrap();
    drop(kept);
    // A restart reads the pending record back from its file.
    drop(d);
    let _d = env.daemon();
    let out = env.ok(&["show", "chg", "--json"]);
    let rec: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rec["task"]["prompt"], "echo original", "{out}");
    assert!(rec["task"].get("priority").is_none(), "{out}");
    let pending = env.spool.join("pending/chg.json");
    assert_eq!(
        std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o600,
        "the pending file is the daemon's own"
    );
}

#[test]
fn a_name_that_is_not_utf8_is_rejected_under_a_safe_name() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    let raw = std::ffi::OsStr::from_bytes(b"bad-\xff\xfe.json");
    std::fs::write(env.inbox().join(raw), r#"{"prompt": "echo never"}"#).unwrap();
    let listing = || -> Vec<String> {
        std::fs::read_dir(env.spool.join("rejected"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    wait_for("the file and its report in rejected/", T, || {
        listing().iter().any(|n| n.ends_with(".error.json"))
    });
    assert_eq!(std::fs::read_dir(env.inbox()).unwrap().count(), 0);
    let rejected = listing();
    assert!(
        rejected.iter().any(|n| n.ends_with(".name-not-utf8")),
        "{rejected:?}"
    );
    let report = rejected
        .iter()
        .find(|n| n.ends_with(".error.json"))
        .unwrap();
    let text = std::fs::read_to_string(env.spool.join("rejected").join(report)).unwrap();
    assert!(text.contains("not UTF-8"), "{text}");
    wait_for("the task_rejected event", T, || {
        env.events_of::<TaskRejected>().len() == 1
    });
}

#[test]
fn a_utf8_byte_order_mark_is_accepted() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    let mut body = b"\xef\xbb\xbf".to_vec();
    body.extend_from_slice(br#"{"id": "bom", "prompt": "echo with a bom"}"#);
    std::fs::write(env.inbox().join("bom.json"), body).unwrap();
    let (state, rec) = env.wait_final("bom", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.result.unwrap().output, "with a bom");
    assert!(ids_in(&env.spool.join("rejected")).is_empty());
}

#[test]
fn an_inbox_file_left_behind_by_a_crash_after_its_copy_runs_once() {
    // A crash between the copy into pending/ and the inbox file's removal leaves both.
    let env = Env::new(ONE_SHELL);
    let body = r#"{"id": "twice", "prompt": "echo once"}"#;
    std::fs::write(env.spool.join("pending/twice.json"), body).unwrap();
    std::fs::write(env.inbox().join("twice.json"), body).unwrap();
    let _d = env.daemon();
    let (state, rec) = env.wait_final("twice", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.attempts.len(), 1);
    wait_for("the inbox copy to be removed", T, || {
        std::fs::read_dir(env.inbox()).unwrap().count() == 0
    });
    assert!(
        ids_in(&env.spool.join("rejected")).is_empty(),
        "not rejected as a duplicate"
    );
    assert_eq!(
        env.events_of::<TaskReceived>().len(),
        0,
        "not taken in twice"
    );
}
