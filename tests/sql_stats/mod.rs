//! `architect sql` and `architect stats` answer from the logs, and match what ran.

use std::io::Write;
use std::time::Duration;

use architect::spool::task::TaskState;

use crate::helper::{Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

#[test]
fn sql_and_stats_match_the_tasks_that_ran() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    for i in 0..4 {
        env.drop_task(
            &format!("ok{i}.json"),
            &format!(r#"{{"id": "ok{i}", "prompt": "echo {i}"}}"#),
        );
    }
    env.drop_task(
        "bad.json",
        r#"{"id": "bad", "prompt": "sh -c 'exit 3'", "max_retries": 0}"#,
    );
    for i in 0..4 {
        assert_eq!(env.wait_final(&format!("ok{i}"), T).0, TaskState::Done);
    }
    assert_eq!(env.wait_final("bad", T).0, TaskState::Failed);

    let out = env.ok(&[
        "sql",
        "SELECT state, count(*) AS n FROM tasks GROUP BY state ORDER BY state",
        "--format",
        "json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"state": "done", "n": 4}, {"state": "failed", "n": 1}])
    );

    let out = env.ok(&[
        "sql",
        "SELECT task_id, session, attempts FROM tasks WHERE task_id = 'ok2'",
        "--format",
        "csv",
    ]);
    assert_eq!(out, "task_id,session,attempts\nok2,sh-1,1\n");

    let out = env.ok(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats[0]["session"], "sh-1");
    assert_eq!(stats[0]["completed"], 4);
    assert_eq!(stats[0]["failed"], 1);
    assert_eq!(stats[0]["success_pct"], 80.0);
    assert!(stats[0]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(stats[0]["p95_ms"].as_f64().unwrap() >= stats[0]["p50_ms"].as_f64().unwrap());
    let table = env.ok(&["stats"]);
    assert!(table.contains("sh-1") && table.contains("80"), "{table}");

    // A torn last line (a crash mid-write) is skipped, not an error.
    let log = std::fs::read_dir(env.spool.join("log"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(br#"{"ts":"2026-01-01T00:00:00Z","node":"test","type":"task_comp"#)
        .unwrap();
    drop(f);
    let out = env.ok(&[
        "sql",
        "SELECT count(*) AS n FROM tasks WHERE state = 'done'",
        "--format",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["n"],
        4
    );

    // Bad SQL: a clear error and a non-zero exit.
    let bad = env.cli(&["sql", "SELEC nonsense"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error"));
}

#[test]
fn secrets_in_prompts_and_session_env_never_reach_the_log() {
    let env = Env::new(
        "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\nenv = { ANTHROPIC_API_KEY = \"sk-ant-api03-SESSIONENVSECRET0123456789\" }\n",
    );
    let _d = env.daemon();
    let prompt = "echo ghp_abcdefghijklmnopqrstuvwxyz0123456789 OPENAI_API_KEY=hunter2hunter2 $ANTHROPIC_API_KEY";
    env.drop_task(
        "s.json",
        &serde_json::json!({"id": "s", "prompt": prompt}).to_string(),
    );
    let (state, rec) = env.wait_final("s", T);
    assert_eq!(state, TaskState::Done);
    // The agent really saw the key (its session env names it), and the result says so
    // without the key itself: results are redacted too …
    let output = rec.result.unwrap().output;
    assert!(!output.contains("SESSIONENVSECRET"), "{output}");
    assert!(output.contains("[REDACTED]"), "{output}");
    // … and the log has none of them.
    let mut log = String::new();
    for f in std::fs::read_dir(env.spool.join("log")).unwrap() {
        log.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap());
    }
    for secret in [
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "hunter2hunter2",
        "SESSIONENVSECRET",
    ] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
    assert!(log.contains("[REDACTED]"));
}
