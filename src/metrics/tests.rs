use super::*;
use serde_json::json;

/// 2026-12-01T10:00:00Z plus `ms`.
fn at(ms: i64) -> DateTime<Utc> {
    "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::milliseconds(ms)
}

/// An event as a log line says it (one this build reads as its typed variant).
fn ev(
    ms: i64,
    kind: &str,
    task: Option<&str>,
    session: Option<&str>,
    data: serde_json::Value,
) -> Event {
    let e: Event = serde_json::from_value(json!({
        "ts": at(ms).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "node": "n1",
        "type": kind,
        "task_id": task,
        "session": session,
        "data": data,
    }))
    .unwrap();
    assert!(
        !matches!(e.body, EventBody::Other { .. }),
        "{kind}'s data does not fit its payload: {e:?}"
    );
    e
}

fn started(ms: i64, session: &str, profile: &str) -> Event {
    ev(
        ms,
        "session_started",
        None,
        Some(session),
        json!({"pid": 1, "command": "bash", "profile": profile, "generation": 1}),
    )
}

fn queued(ms: i64, task: &str) -> Event {
    ev(
        ms,
        "task_queued",
        Some(task),
        None,
        json!({"priority": 5, "session": null, "role": null, "depends_on": [],
               "waiting_for": 0, "unknown_dependencies": [], "attempts": 0}),
    )
}

fn sent(ms: i64, task: &str, session: &str) -> Event {
    ev(
        ms,
        "prompt_sent",
        Some(task),
        Some(session),
        json!({"since_assigned_ms": 1.0,
               "written_at": at(ms).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}),
    )
}

fn completed(ms: i64, task: &str, session: &str, duration_ms: i64) -> Event {
    ev(
        ms,
        "task_completed",
        Some(task),
        Some(session),
        json!({"attempts": 1, "duration_ms": duration_ms, "exit_status": 0, "output_bytes": 3}),
    )
}

fn failed(ms: i64, task: &str, session: &str, duration_ms: i64) -> Event {
    ev(
        ms,
        "task_failed",
        Some(task),
        Some(session),
        json!({"attempts": 1, "duration_ms": duration_ms, "error": "exit 1"}),
    )
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

fn snapshot() -> Snapshot {
    Snapshot {
        daemon_up: true,
        tasks: [
            (TaskState::Pending, 2),
            (TaskState::Active, 1),
            (TaskState::Done, 7),
            (TaskState::Failed, 1),
            (TaskState::Cancelled, 0),
        ]
        .into_iter()
        .collect(),
        sessions: vec![
            SessionSnap {
                name: "a".into(),
                profile: "shell".into(),
                state: SessionState::Busy,
            },
            SessionSnap {
                name: "b".into(),
                profile: "shell".into(),
                state: SessionState::Idle,
            },
            SessionSnap {
                name: "c".into(),
                profile: "claude".into(),
                state: SessionState::Idle,
            },
        ],
        heartbeat_age_s: BTreeMap::new(),
    }
}

#[test]
fn tasks_and_sessions_per_state_come_from_the_snapshot_with_zeros_written() {
    let text = metrics_from(&[], &snapshot());
    assert_eq!(value(&text, r#"architect_tasks{state="done"}"#), Some(7.0));
    assert_eq!(
        value(&text, r#"architect_tasks{state="pending"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"architect_tasks{state="cancelled"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"architect_sessions{state="idle"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, r#"architect_sessions{state="busy"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"architect_sessions{state="dead"}"#),
        Some(0.0)
    );
    assert_eq!(value(&text, "architect_daemon_up"), Some(1.0));
    assert!(
        !text.contains("architect_node_heartbeat_age_seconds"),
        "a single node has no heartbeat ages:\n{text}"
    );
}

#[test]
fn dispatch_latency_runs_from_queued_to_prompt_sent_by_session_and_profile() {
    let events = [
        started(0, "a", "shell"),
        queued(1_000, "t1"),
        sent(1_040, "t1", "a"), // 40 ms
        queued(2_000, "t2"),
        sent(5_000, "t2", "a"), // 3 s
        // A prompt with no queued event in the log (older than the oldest file): skipped.
        sent(6_000, "t3", "a"),
    ];
    let text = metrics_from(&events, &Snapshot::default());
    let series = r#"session="a",profile="shell""#;
    assert_eq!(
        value(
            &text,
            &format!("architect_dispatch_latency_seconds_count{{{series}}}")
        ),
        Some(2.0)
    );
    let sum = value(
        &text,
        &format!("architect_dispatch_latency_seconds_sum{{{series}}}"),
    )
    .unwrap();
    assert!((sum - 3.04).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(
            &text,
            &format!(r#"architect_dispatch_latency_seconds_bucket{{le="0.05",{series}}}"#)
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn a_retry_back_off_is_not_counted_as_dispatch_latency() {
    let events = [
        started(0, "a", "shell"),
        queued(0, "t1"),
        sent(10, "t1", "a"),
        ev(
            1_000,
            "task_retried",
            Some("t1"),
            Some("a"),
            json!({"attempt": 1, "error": "exit 1", "retry_in_ms": 5_000}),
        ),
        sent(6_500, "t1", "a"), // ready at 6 000: 0.5 s
    ];
    let text = metrics_from(&events, &Snapshot::default());
    let sum = value(
        &text,
        r#"architect_dispatch_latency_seconds_sum{session="a",profile="shell"}"#,
    )
    .unwrap();
    assert!((sum - 0.51).abs() < 1e-9, "{sum}");
}

#[test]
fn task_durations_are_observed_by_session_profile_and_outcome() {
    let events = [
        started(0, "a", "shell"),
        completed(10_000, "t1", "a", 2_000),
        completed(20_000, "t2", "a", 45_000),
        failed(30_000, "t3", "a", 500),
        // A session the log never saw start: its profile is unknown.
        completed(40_000, "t4", "z", 1_000),
    ];
    let text = metrics_from(&events, &Snapshot::default());
    let done = r#"session="a",profile="shell",outcome="done""#;
    assert_eq!(
        value(
            &text,
            &format!("architect_task_duration_seconds_count{{{done}}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("architect_task_duration_seconds_sum{{{done}}}")
        ),
        Some(47.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"architect_task_duration_seconds_bucket{{le="5.0",{done}}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"architect_task_duration_seconds_count{session="a",profile="shell",outcome="failed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"architect_task_duration_seconds_count{session="z",profile="unknown",outcome="done"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn decisions_spend_breakers_and_lock_waits_are_counted() {
    let decided = |ms, decision: &str, rule: &str| {
        ev(
            ms,
            "permission_decided",
            Some("t1"),
            Some("a"),
            json!({"permission": "bash", "kind": "command", "action": "ls", "tool": null,
                   "decision": decision, "rule": rule, "reason": "r", "by": "policy"}),
        )
    };
    let call = |ms, ok: bool, cost: f64| {
        ev(
            ms,
            "llm_call",
            None,
            None,
            json!({"provider": "anthropic", "model": "m1", "status": 200, "attempt": 1,
                   "latency_ms": 100, "input_tokens": 1000, "output_tokens": 50,
                   "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0,
                   "cost_usd": cost, "ok": ok, "error": null}),
        )
    };
    let breaker = |ms, state: &str| {
        ev(
            ms,
            "breaker_state",
            None,
            None,
            json!({"provider": "anthropic", "state": state, "failures": 3,
                   "reason": null, "retry_at": null}),
        )
    };
    let events = [
        decided(0, "allow", "safe-reads"),
        decided(1, "allow", "safe-reads"),
        decided(2, "deny", "no-push"),
        call(3, true, 0.25),
        call(4, true, 0.5),
        call(5, false, 0.0),
        breaker(6, "open"),
        breaker(7, "half_open"),
        ev(
            8,
            "lock_waiting",
            Some("t2"),
            None,
            json!({"resources": ["branch:main"],
                   "blocked_by": {"resource": "branch:main", "holder": null},
                   "reason": "held"}),
        ),
        ev(
            9,
            "lock_acquired",
            Some("t2"),
            None,
            json!({"resources": ["branch:main"], "waited_ms": 12_000}),
        ),
    ];
    let tally = {
        let mut t = Tally::new();
        for e in &events {
            t.observe(e);
        }
        t
    };
    assert_eq!(tally.events(), events.len() as u64);
    let text = render(&tally, &Snapshot::default());
    assert_eq!(
        value(
            &text,
            r#"architect_permission_decisions_total{decision="allow",rule="safe-reads"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            r#"architect_permission_decisions_total{decision="deny",rule="no-push"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"architect_llm_tokens_total{provider="anthropic",model="m1",kind="input"}"#
        ),
        Some(3000.0)
    );
    assert_eq!(
        value(
            &text,
            r#"architect_llm_spend_usd_total{provider="anthropic",model="m1"}"#
        ),
        Some(0.75)
    );
    assert_eq!(
        value(
            &text,
            r#"architect_llm_calls_total{provider="anthropic",model="m1",outcome="error"}"#
        ),
        Some(1.0)
    );
    // The last breaker event wins: half-open is 1.
    assert_eq!(
        value(
            &text,
            r#"architect_llm_breaker_state{provider="anthropic"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "architect_lock_waits_total"), Some(1.0));
    assert_eq!(value(&text, "architect_lock_wait_seconds_sum"), Some(12.0));
    assert_eq!(
        value(&text, r#"architect_lock_wait_seconds_bucket{le="10.0"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"architect_lock_wait_seconds_bucket{le="30.0"}"#),
        Some(1.0)
    );
}

#[test]
fn the_text_is_the_classic_prometheus_format() {
    let events = [decided_once()];
    let text = metrics_from(&events, &snapshot());
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE architect_permission_decisions_total counter\n"),
        "{text}"
    );
    assert!(text.contains("# HELP architect_permission_decisions_total "));
    assert!(text.contains("# TYPE architect_tasks gauge\n"));
    assert!(text.contains("# TYPE architect_lock_wait_seconds histogram\n"));
    assert!(text.ends_with('\n'));
}

fn decided_once() -> Event {
    ev(
        0,
        "permission_decided",
        None,
        None,
        json!({"permission": "bash", "kind": "command", "action": "ls", "tool": null,
               "decision": "escalate", "rule": "default", "reason": "r", "by": "policy"}),
    )
}

#[test]
fn breaker_states_map_to_documented_numbers() {
    assert_eq!(breaker_value(CircuitState::Closed), 0);
    assert_eq!(breaker_value(CircuitState::HalfOpen), 1);
    assert_eq!(breaker_value(CircuitState::Open), 2);
}

#[test]
fn heartbeat_ages_add_the_views_age_to_what_it_said() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.json");
    std::fs::write(
        &path,
        r#"{"lease_ms": 30000, "nodes": {
            "n1": {"alive": true, "silent_ms": 1500, "seq": 9},
            "n2": {"alive": false, "silent_ms": 40000, "seq": 3}}}"#,
    )
    .unwrap();
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();
    let ages = heartbeat_ages(&path, written + std::time::Duration::from_secs(10));
    assert_eq!(ages.get("n1"), Some(&11.5));
    assert_eq!(ages.get("n2"), Some(&50.0));
    let snap = Snapshot {
        heartbeat_age_s: ages,
        ..Snapshot::default()
    };
    let text = render(&Tally::new(), &snap);
    assert_eq!(
        value(&text, r#"architect_node_heartbeat_age_seconds{node="n2"}"#),
        Some(50.0)
    );
    assert!(heartbeat_ages(&dir.path().join("missing.json"), written).is_empty());
}

#[test]
fn a_scraper_reads_only_what_was_appended_and_waits_for_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path());
    spool.init().unwrap();
    let log = crate::log::EventLog::new(spool.dir("log"), "n1");
    log.append(&started(0, "a", "shell")).unwrap();
    log.append(&completed(1_000, "t1", "a", 2_000)).unwrap();
    let mut s = Scraper::new();
    let count =
        r#"architect_task_duration_seconds_count{session="a",profile="shell",outcome="done"}"#;
    assert_eq!(value(&s.scrape(&spool).unwrap(), count), Some(1.0));
    assert_eq!(s.tally().events(), 2);

    log.append(&completed(2_000, "t2", "a", 3_000)).unwrap();
    let file = crate::log::log_files(&spool.dir("log")).unwrap().remove(0);
    // Half a line, as a writer mid-write leaves it.
    let line = serde_json::to_string(&completed(3_000, "t3", "a", 1_000)).unwrap();
    let (head, tail) = line.split_at(20);
    let append = |s: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    };
    append(head);
    assert_eq!(value(&s.scrape(&spool).unwrap(), count), Some(2.0));
    assert_eq!(s.tally().events(), 3, "each event is read once");

    append(&format!("{tail}\n"));
    assert_eq!(value(&s.scrape(&spool).unwrap(), count), Some(3.0));
    assert_eq!(value(&s.scrape(&spool).unwrap(), count), Some(3.0));
    assert_eq!(s.tally().events(), 4);
}

#[test]
fn a_snapshot_counts_task_records_and_session_files() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path());
    spool.init().unwrap();
    // The snapshot counts record files per state directory (it does not parse them).
    for (state, id) in [
        (TaskState::Done, "t1"),
        (TaskState::Done, "t2"),
        (TaskState::Failed, "t3"),
        (TaskState::Pending, "t4"),
    ] {
        std::fs::write(spool.task_path(state, id), b"{}").unwrap();
    }
    std::fs::write(spool.state_dir(TaskState::Done).join(".t5.json.tmp"), b"{}").unwrap();
    std::fs::write(
        spool.dir("sessions").join("a.json"),
        serde_json::to_vec(&json!({"name": "a", "node": "n1", "profile": "shell",
            "state": "waiting_input", "since": "2026-12-01T10:00:00Z", "restarts": 0}))
        .unwrap(),
    )
    .unwrap();
    let snap = Snapshot::read(&spool, SystemTime::now());
    assert!(!snap.daemon_up);
    assert_eq!(
        snap.sessions,
        vec![SessionSnap {
            name: "a".into(),
            profile: "shell".into(),
            state: SessionState::WaitingInput,
        }]
    );
    assert_eq!(snap.tasks[&TaskState::Done], 2);
    assert_eq!(snap.tasks[&TaskState::Failed], 1);
    assert_eq!(snap.tasks[&TaskState::Pending], 1);
    assert_eq!(snap.tasks[&TaskState::Cancelled], 0);
}
