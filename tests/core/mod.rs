//! The daemon core's audited defects (issue 10), each through the real binary: one daemon
//! per spool directory, a claim before the run, no move after a failed write, control
//! requests applied at most once, records validated at start-up, FIFO for files found by
//! a listing, and the daemon's own crashes not spending a task's retries.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helper::{wait_for, Env, FAST, ONE_SHELL};
use architect::log::event::{IntakePaused, IntakeResumed, TaskAssigned, TaskRejected, TextSent};
use architect::spool::task::TaskState;

const T: Duration = Duration::from_secs(20);

/// Makes a file or directory immutable (`chattr +i`) until dropped: not even root may
/// then add, remove or rename entries of a directory, or remove a file. This stands in
/// for a directory the daemon may not write or a file it may not delete.
struct Immutable<'a>(&'a Path);

impl<'a> Immutable<'a> {
    fn new(path: &'a Path) -> Self {
        let out = Command::new("chattr").arg("+i").arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "chattr +i {} (needs root and a filesystem with the attribute): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self(path)
    }
}

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}

/// Two daemons on one spool would both claim its tasks: the second is refused, whatever
/// node name it has (the lock was per node name, so a second node name got in).
#[test]
fn a_second_daemon_on_the_same_spool_is_refused_whatever_its_node_name() {
    let env = Env::new(ONE_SHELL);
    let _first = env.daemon();
    wait_for("the first daemon", T, || {
        env.ok(&["status", "--json"]).contains("\"running\": true")
    });
    let other = env.dir.path().join("config-other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("sessions.toml"), ONE_SHELL).unwrap();
    std::fs::write(
        other.join("architect.toml"),
        FAST.replace("name = \"test\"", "name = \"other-node\""),
    )
    .unwrap();
    let log = env.dir.path().join("second.log");
    let mut second = Command::new(crate::helper::BIN)
        .arg("--spool")
        .arg(&env.spool)
        .arg("--config")
        .arg(&other)
        .arg("daemon")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // It waits up to 5 s for the lock, then must give up.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    let status = status.unwrap_or_else(|| panic!("a second daemon runs on the spool: {err}"));
    assert!(!status.success());
    assert!(
        err.contains("already running") && err.contains("node test"),
        "{err}"
    );
}

/// A task is claimed on disk before any session sees it: while `active/` refuses the
/// claim, the task does not run (its witness file stays absent); once it takes writes,
/// the task runs once and is done.
#[test]
fn a_task_runs_only_once_its_claim_is_on_disk() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    wait_for("the session", T, || {
        env.ok(&["sessions", "--json"]).contains("\"idle\"")
    });
    let witness = env.dir.path().join("ran");
    let active = env.spool.join("active");
    {
        let _frozen = Immutable::new(&active);
        env.drop_task(
            "c.json",
            &serde_json::json!({"id": "c", "prompt": format!("echo x >> {}", witness.display())})
                .to_string(),
        );
        wait_for("the task taken in", T, || {
            env.state_of("c") == Some(TaskState::Pending)
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !witness.exists(),
            "the task ran although its claim is not on disk"
        );
        assert_eq!(env.state_of("c"), Some(TaskState::Pending));
    }
    let (state, record) = env.wait_final("c", T);
    assert_eq!(state, TaskState::Done, "{record:?}");
    assert_eq!(std::fs::read_to_string(&witness).unwrap(), "x\n");
}

/// A tmpfs of a few MiB mounted over the spool, so the disk can be filled (ENOSPC);
/// unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a small tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Fills the disk; returns the filler file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// When the disk is full as a task ends, its final record cannot be written: the move to
/// `done/` must not happen without it (before: `done/` held the bare task with no result
/// and `tasks` said pending forever). The write is tried again, and once there is room
/// the task lands in `done/` with its result; a task dropped meanwhile waits in the inbox
/// and runs too.
#[test]
fn a_full_disk_never_moves_a_task_without_its_record_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("spool"));
    let env = Env::at(dir, ONE_SHELL);
    let d = env.daemon();
    env.drop_task(
        "f1.json",
        r#"{"id": "f1", "prompt": "sleep 2; echo the-result"}"#,
    );
    wait_for("f1 running", T, || {
        env.state_of("f1") == Some(TaskState::Active)
    });
    let filler = disk.fill();
    std::thread::sleep(Duration::from_millis(3000));
    assert_ne!(
        env.state_of("f1"),
        Some(TaskState::Done),
        "moved to done/ although its record could not be written"
    );
    // A task dropped while the disk is full: the inbox keeps it.
    let inbox = env.inbox().join("f2.json");
    let dropped = std::fs::write(&inbox, r#"{"id": "f2", "prompt": "echo two"}"#).is_ok();
    std::fs::remove_file(&filler).unwrap();
    if !dropped {
        env.drop_task("f2.json", r#"{"id": "f2", "prompt": "echo two"}"#);
    }
    let (state, record) = env.wait_final("f1", T);
    assert_eq!(state, TaskState::Done, "{record:?}");
    let result = record.result.expect("the result is in the final record");
    assert!(result.output.contains("the-result"), "{result:?}");
    assert_eq!(env.wait_final("f2", T).0, TaskState::Done);
    // Intake said it paused, and why, and that it went on. (The `intake_paused` event
    // itself may not fit on the full disk; the daemon's own log says it too.)
    let said = d.stderr();
    assert!(
        said.contains("intake paused") && said.contains("No space left on device"),
        "{said}"
    );
    for paused in env.events_of::<IntakePaused>() {
        assert!(
            paused.data.error.contains("No space left"),
            "{:?}",
            paused.data
        );
    }
    wait_for("intake_resumed", T, || {
        !env.events_of::<IntakeResumed>().is_empty()
    });
}

/// A control request whose file cannot be removed was applied again at every listing
/// (one `send` typed 6 times). Now it is claimed (removed) before it is applied: one that
/// cannot be removed is not applied at all, and the daemon says so once.
#[test]
fn a_control_request_that_cannot_be_removed_is_never_applied_twice() {
    let env = Env::new(ONE_SHELL);
    // Written and made immutable before the daemon starts, so it cannot take it first.
    let request = env.spool.join("control/01JSTUCK000000000000000000.json");
    std::fs::write(
        &request,
        r#"{"op": "send", "session": "sh-1", "text": "echo typed", "enter": true}"#,
    )
    .unwrap();
    let stuck = Immutable::new(&request);
    let d = env.daemon();
    wait_for("the session", T, || {
        env.ok(&["sessions", "--json"]).contains("\"idle\"")
    });
    // Listings every second (reconcile_interval_ms) see it again and again.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(env.events_of::<TextSent>().len(), 0);
    let said = d.stderr().matches("cannot be removed").count();
    assert_eq!(said, 1, "said once: {}", d.stderr());
    drop(stuck);
    std::fs::remove_file(&request).unwrap();
    // A request that can be removed is applied, once.
    env.ok(&["send", "sh-1", "echo hello"]);
    wait_for("the text typed", T, || {
        env.events_of::<TextSent>().len() == 1
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(env.events_of::<TextSent>().len(), 1);
}

/// A record read back at start-up is validated: one whose `timeout_s` is out of range
/// panicked a session thread and stayed in `active/`; now it goes to `rejected/` with the
/// reason, and the good tasks beside it run.
#[test]
fn a_record_that_breaks_the_schema_at_start_up_goes_to_rejected() {
    let env = Env::new(ONE_SHELL);
    let bad = serde_json::json!({
        "format": 1, "id": "bad", "state": "active",
        "task": {"id": "bad", "prompt": "echo bad", "timeout_s": 18_446_744_073_709_551_615u64},
        "node": "test", "source": "bad.json", "received_at": "2026-12-01T00:00:00Z",
        "attempts": []
    });
    std::fs::write(
        env.spool.join("active/bad.json"),
        serde_json::to_vec_pretty(&bad).unwrap(),
    )
    .unwrap();
    std::fs::write(
        env.spool.join("pending/good.json"),
        r#"{"id": "good", "prompt": "echo good"}"#,
    )
    .unwrap();
    let d = env.daemon();
    assert_eq!(env.wait_final("good", T).0, TaskState::Done);
    wait_for("bad rejected", T, || {
        env.spool.join("rejected/bad.json").exists()
    });
    assert_eq!(env.state_of("bad"), None);
    let report = std::fs::read_to_string(env.spool.join("rejected/bad.json.error.json")).unwrap();
    assert!(report.contains("/task/timeout_s"), "{report}");
    assert!(!d.stderr().contains("panicked"), "{}", d.stderr());
    let rejected = env.events_of::<TaskRejected>();
    assert!(
        rejected.iter().any(|e| e.data.file == "active/bad.json"),
        "{rejected:?}"
    );
}

/// Files written while the daemon was down, with equal modification times, ran in name
/// order (a, m, z although written z, m, a). They now run in the order of the best
/// evidence of arrival: mtime, then change time, then name.
#[test]
fn files_found_by_a_listing_with_equal_mtimes_run_in_the_order_they_were_written() {
    let env = Env::new(ONE_SHELL);
    for name in ["z", "m", "a"] {
        env.drop_task(
            &format!("{name}.json"),
            &format!(r#"{{"id": "{name}", "prompt": "echo {name}"}}"#),
        );
        // The same mtime for all three (as a producer that sets it, or a coarse clock,
        // gives); the change time still tells the order.
        let status = Command::new("touch")
            .args(["-m", "-d", "2026-12-01 12:00:00"])
            .arg(env.inbox().join(format!("{name}.json")))
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(20));
    }
    let _d = env.daemon();
    for id in ["z", "m", "a"] {
        assert_eq!(env.wait_final(id, T).0, TaskState::Done);
    }
    let order: Vec<String> = env
        .events_of::<TaskAssigned>()
        .into_iter()
        .filter_map(|e| e.task_id)
        .collect();
    assert_eq!(order, ["z", "m", "a"]);
}

/// A task that was running when the daemon crashed goes back to `pending/` without
/// spending a retry: with `max_retries: 0` it failed ("gave up after 1 attempt(s): the
/// daemon stopped during the attempt"); now it runs again and is done.
#[test]
fn a_daemon_crash_does_not_spend_a_retry() {
    let env = Env::new(ONE_SHELL);
    let d = env.daemon();
    env.drop_task(
        "once.json",
        r#"{"id": "once", "prompt": "sleep 2; echo survived", "max_retries": 0}"#,
    );
    wait_for("the task running", T, || {
        env.state_of("once") == Some(TaskState::Active)
    });
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    let _d = env.daemon();
    let (state, record) = env.wait_final("once", T);
    assert_eq!(state, TaskState::Done, "{:?}", record.error);
    assert!(record.result.unwrap().output.contains("survived"));
    assert_eq!(
        record.attempts[0].outcome,
        architect::spool::task::AttemptOutcome::Interrupted
    );
}

/// A task running at 5 daemon crashes in a row may be what takes the daemon down: it is
/// failed as quarantined, with the reason, instead of being run again.
#[test]
fn a_task_running_at_five_daemon_crashes_in_a_row_is_quarantined() {
    let env = Env::new(ONE_SHELL);
    env.drop_task(
        "crashy.json",
        r#"{"id": "crashy", "prompt": "sleep 30", "max_retries": 0}"#,
    );
    for crash in 1..=5 {
        let d = env.daemon();
        wait_for(&format!("the task running before crash {crash}"), T, || {
            env.events_of::<TaskAssigned>().len() == crash
                && env.state_of("crashy") == Some(TaskState::Active)
        });
        d.kill9();
    }
    let _d = env.daemon();
    let (state, record) = env.wait_final("crashy", T);
    assert_eq!(state, TaskState::Failed);
    let error = record.error.unwrap();
    assert!(
        error.starts_with("quarantined: the daemon stopped 5 times in a row"),
        "{error}"
    );
}

/// A prompt sent to a session whose profile submits at most once is never sent again by
/// the daemon itself — after a `kill -9` of the daemon too: the task fails with the reason
/// (before, recovery put it back in `pending/` and the prompt ran a second time).
#[test]
fn a_daemon_crash_never_sends_an_at_most_once_prompt_twice() {
    let env = Env::new("[[session]]\nname = \"once-1\"\nprofile = \"once-shell\"\n");
    // The shell profile, as an agent CLI's would be: a prompt is submitted at most once.
    let profile = include_str!("../../config/profiles/shell.toml")
        .replace("[submit]\n", "[submit]\nat_most_once = true\n");
    assert!(profile.contains("at_most_once = true"));
    std::fs::create_dir_all(env.path("config/profiles")).unwrap();
    std::fs::write(env.path("config/profiles/once-shell.toml"), profile).unwrap();
    let witness = env.path("witness");
    let d = env.daemon();
    let prompt = format!("echo sent >> {}; sleep 30", witness.display());
    env.drop_task(
        "w.json",
        &serde_json::json!({"id": "w", "prompt": prompt, "max_retries": 3}).to_string(),
    );
    wait_for("the prompt to run", T, || witness.exists());
    d.kill9();
    let _d = env.daemon();
    let (state, record) = env.wait_final("w", T);
    assert_eq!(state, TaskState::Failed, "{record:?}");
    let error = record.error.unwrap();
    assert!(
        error.contains("submits at most once") && error.contains("architect retry w"),
        "{error}"
    );
    assert_eq!(record.attempt_in_flight, None);
    env.wait_idle("once-1", T);
    assert_eq!(
        std::fs::read_to_string(&witness).unwrap().lines().count(),
        1,
        "the prompt ran once"
    );
}
