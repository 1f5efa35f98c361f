//! `architect metrics`: the figures of a daemon's real work, in a text that Prometheus's
//! own checker (`promtool check metrics`, Debian's `prometheus` package) accepts, on
//! stdout or replaced atomically in a textfile-collector file; with the daemon up or down,
//! and across a fleet's nodes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use architect::spool::task::TaskState;

use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

/// The value of the series written exactly as `series` (name and labels).
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Runs `promtool check metrics` on `text`; panics with promtool's words when it refuses
/// it, or with how to install it when it is missing (CI installs it: `.ci/run`).
pub(crate) fn promtool_accepts(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: this test checks the metrics with it \
             (`apt-get install prometheus`, which .ci/run does)"
        ),
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the text ({}):\n{}{}\n--- text:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn metrics_count_a_daemons_tasks_and_promtool_accepts_them_with_the_daemon_up_or_down() {
    let env = Env::new(ONE_SHELL);
    let d = env.daemon();
    for i in 0..3 {
        env.ok(&[
            "submit",
            "--id",
            &format!("ok-{i}"),
            "--prompt",
            "echo fine",
        ]);
    }
    env.ok(&[
        "submit",
        "--id",
        "bad",
        "--prompt",
        "false",
        "--max-retries",
        "0",
    ]);
    for id in ["ok-0", "ok-1", "ok-2", "bad"] {
        env.wait_final(id, T);
    }
    assert_eq!(env.state_of("bad"), Some(TaskState::Failed));

    let text = env.ok(&["metrics"]);
    assert_eq!(value(&text, r#"architect_tasks{state="done"}"#), Some(3.0));
    assert_eq!(
        value(&text, r#"architect_tasks{state="failed"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"architect_tasks{state="pending"}"#),
        Some(0.0)
    );
    assert_eq!(value(&text, "architect_daemon_up"), Some(1.0));
    let labels = r#"session="sh-1",profile="shell""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"architect_task_duration_seconds_count{{{labels},outcome="done"}}"#)
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"architect_task_duration_seconds_count{{{labels},outcome="failed"}}"#)
        ),
        Some(1.0)
    );
    // Every prompt delivered has its dispatch latency, and the +Inf bucket holds them all.
    assert_eq!(
        value(
            &text,
            &format!("architect_dispatch_latency_seconds_count{{{labels}}}")
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"architect_dispatch_latency_seconds_bucket{{le="+Inf",{labels}}}"#)
        ),
        Some(4.0)
    );
    promtool_accepts(&text);

    // The daemon down: the same figures from the files, into a collector's file.
    drop(d);
    let dir = env.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("architect.prom");
    env.ok(&["metrics", "--output", file.to_str().unwrap()]);
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(value(&written, "architect_daemon_up"), Some(0.0));
    assert_eq!(
        value(&written, r#"architect_tasks{state="done"}"#),
        Some(3.0)
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644,
        "node_exporter runs as another user: the file must be readable"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["architect.prom"], "no temp file left behind");
    promtool_accepts(&written);

    // A directory that does not exist is a clear error.
    let out = env.cli(&["metrics", "--output", "/nonexistent-dir/architect.prom"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directory does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One shell session, `sh-1`, run by node `test`.
const SHELL_ON_TEST: &str =
    "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\nrole = \"shell\"\nnode = \"test\"\n";

#[test]
fn in_a_fleet_metrics_read_every_nodes_log_and_give_each_nodes_heartbeat_age() {
    let env = Env::new(SHELL_ON_TEST);
    env.write_config(
        "nodes.toml",
        "lease_s = 5\nheartbeat_ms = 200\n[[node]]\nname = \"test\"\n[[node]]\nname = \"other\"\n",
    );
    // Node `other` beats (draining, so this node's tasks stay here), and its log (synced
    // here) says it finished a task.
    let other = env.path("spool/nodes/other");
    std::fs::create_dir_all(other.join("log")).unwrap();
    // It beats every 200 ms while the test runs (a peer that stops beating holds up this
    // node's start: it waits for every live peer's fresh heartbeat).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beating = {
        let (stop, other) = (stop.clone(), other.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let hb = serde_json::json!({"seq": seq, "version": "0.1.0", "epoch": 1,
                    "running": 0, "free": {"": 1}, "draining": true});
                let tmp = other.join(".heartbeat.json.tmp");
                // (A failed test removes the directory: the thread ends.)
                if std::fs::write(&tmp, hb.to_string()).is_err()
                    || std::fs::rename(tmp, other.join("heartbeat.json")).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let log = architect::log::EventLog::new(other.join("log"), "other");
    log.record(
        Some("remote-1"),
        Some("sh-9"),
        architect::log::event::TaskCompleted {
            attempts: 1,
            duration_ms: Some(1500),
            exit_status: Some(0),
            output_bytes: 2,
        },
    );
    let _d = env.daemon();
    let view = env.path("spool/nodes/test/view.json");
    wait_for("this node's view of the other", T, || {
        std::fs::read_to_string(&view).is_ok_and(|v| v.contains("\"other\""))
    });
    env.ok(&["submit", "--id", "here", "--prompt", "echo here"]);
    let mine = architect::spool::Spool::for_node(&env.spool, "test");
    wait_for("the task done on this node", T, || {
        mine.locate("here") == Some(TaskState::Done)
    });
    let text = env.ok(&["metrics"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beating.join().unwrap();
    assert_eq!(
        value(
            &text,
            r#"architect_task_duration_seconds_count{session="sh-1",profile="shell",outcome="done"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"architect_task_duration_seconds_count{session="sh-9",profile="unknown",outcome="done"}"#
        ),
        Some(1.0),
        "the other node's log is read too:\n{text}"
    );
    for node in ["test", "other"] {
        let age = value(
            &text,
            &format!(r#"architect_node_heartbeat_age_seconds{{node="{node}"}}"#),
        )
        .unwrap_or_else(|| panic!("no heartbeat age for {node}:\n{text}"));
        assert!((0.0..5.0).contains(&age), "{node}: {age} s\n{text}");
    }
    promtool_accepts(&text);
}
