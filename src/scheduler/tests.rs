//! Every transition of the scheduler, each named for the rule it checks.

use super::*;
use crate::spool::task::{parse_task, LockSpec};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-02T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(ms)
}

fn sched() -> Scheduler<MemLocks> {
    let mut locks = MemLocks::default();
    // What `lock_released` reports (the table has no clock).
    locks.release_ms = 7;
    Scheduler::new(
        Settings {
            node: "n1".into(),
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1000,
        },
        locks,
    )
}

fn record(id: &str, json: &str) -> TaskRecord {
    let mut spec = parse_task(json.as_bytes()).unwrap();
    spec.id = Some(id.into());
    TaskRecord::new(id.into(), spec, "n1".into(), format!("{id}.json"), t0())
}

fn arrive(s: &mut Scheduler<MemLocks>, id: &str, json: &str) -> Vec<Effect> {
    s.handle(
        Input::Arrived {
            record: record(id, json),
            resources: Ok(Vec::new()),
            on_disk: HashMap::new(),
        },
        t0(),
    )
}

fn arrive_locking(s: &mut Scheduler<MemLocks>, id: &str, branch: &str) -> Vec<Effect> {
    let mut r = record(id, r#"{"prompt":"x"}"#);
    r.task.locks = Some(LockSpec {
        branch: Some(branch.into()),
        paths: Vec::new(),
    });
    s.handle(
        Input::Arrived {
            record: r,
            resources: Ok(vec![Resource::Branch(branch.into())]),
            on_disk: HashMap::new(),
        },
        t0(),
    )
}

fn free(names: &[&str]) -> Input {
    Input::SessionsFree(
        names
            .iter()
            .map(|n| FreeSession {
                name: (*n).into(),
                role: None,
                llm: false,
                at_most_once: false,
            })
            .collect(),
    )
}

/// The (session, task) pairs run by these effects.
fn runs(effects: &[Effect]) -> Vec<(String, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Run {
                session, task_id, ..
            } => Some((session.clone(), task_id.clone())),
            _ => None,
        })
        .collect()
}

fn moves(effects: &[Effect]) -> Vec<(String, TaskState, TaskState)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Move { id, from, to } => Some((id.clone(), *from, *to)),
            _ => None,
        })
        .collect()
}

/// The payloads of the events of type `T` among `effects`.
fn logged<T: crate::log::Payload + Clone>(effects: &[Effect]) -> Vec<T> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Log { body, .. } => T::from_body(body).cloned(),
            _ => None,
        })
        .collect()
}

/// The record written last for `id` before it moved to a final state.
fn final_record(effects: &[Effect], id: &str) -> TaskRecord {
    effects
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::Write { record, .. } if record.id == id && record.state.is_final() => {
                Some((**record).clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no final record for {id} in {effects:#?}"))
}

fn run_on(s: &mut Scheduler<MemLocks>, session: &str) -> Vec<Effect> {
    s.handle(free(&[session]), t0())
}

fn end(
    s: &mut Scheduler<MemLocks>,
    session: &str,
    id: &str,
    e: AttemptEnd,
    ms: i64,
) -> Vec<Effect> {
    s.handle(
        Input::AttemptEnded {
            session: session.into(),
            task_id: id.into(),
            end: e,
        },
        at(ms),
    )
}

fn done() -> AttemptEnd {
    AttemptEnd::Completed(TaskResult {
        output: "ok".into(),
        ..TaskResult::default()
    })
}

#[test]
fn a_task_is_claimed_before_it_is_run() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    let fx = run_on(&mut s, "s1");
    let claim = fx
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::Move {
                    to: TaskState::Active,
                    ..
                }
            )
        })
        .expect("a claim");
    let run = fx
        .iter()
        .position(|e| matches!(e, Effect::Run { .. }))
        .expect("a run");
    assert!(claim < run, "{fx:#?}");
    assert_eq!(runs(&fx), [("s1".to_string(), "a".to_string())]);
    assert!(matches!(
        s.task("a").unwrap().status,
        TaskStatus::Running { attempt: 1, .. }
    ));
}

#[test]
fn a_completed_attempt_moves_the_task_to_done_with_its_result() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    let fx = end(&mut s, "s1", "a", done(), 1500);
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Done)]
    );
    let r = final_record(&fx, "a");
    assert_eq!(r.result.unwrap().output, "ok");
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Completed);
    assert_eq!(
        logged::<event::TaskCompleted>(&fx)[0].duration_ms,
        Some(1500)
    );
    assert!(s.task("a").is_none());
    assert_eq!(s.state_of("a"), Some(TaskState::Done));
}

#[test]
fn higher_priority_runs_first_then_the_order_of_arrival() {
    let mut s = sched();
    arrive(&mut s, "low", r#"{"prompt":"x","priority":1}"#);
    arrive(&mut s, "first", r#"{"prompt":"x"}"#);
    arrive(&mut s, "second", r#"{"prompt":"x"}"#);
    arrive(&mut s, "high", r#"{"prompt":"x","priority":9}"#);
    let fx = s.handle(free(&["s4", "s2", "s3", "s1"]), t0());
    assert_eq!(
        runs(&fx),
        [
            ("s1".to_string(), "high".to_string()),
            ("s2".into(), "first".into()),
            ("s3".into(), "second".into()),
            ("s4".into(), "low".into()),
        ],
        "free sessions are served in name order"
    );
}

#[test]
fn a_task_naming_a_session_runs_only_there() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","session":"s2"}"#);
    assert!(runs(&run_on(&mut s, "s1")).is_empty());
    assert_eq!(runs(&run_on(&mut s, "s2")), [("s2".into(), "a".into())]);
}

#[test]
fn a_task_waits_for_its_dependency_and_runs_once_it_is_done() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    let fx = arrive(&mut s, "b", r#"{"prompt":"x","depends_on":["a"]}"#);
    assert_eq!(logged::<event::TaskQueued>(&fx)[0].waiting_for, 1);
    assert_eq!(
        s.task("b").unwrap().status,
        TaskStatus::WaitingForDependencies(["a".to_string()].into())
    );
    assert_eq!(
        runs(&s.handle(free(&["s1", "s2"]), t0())),
        [("s1".into(), "a".into())]
    );
    end(&mut s, "s1", "a", done(), 10);
    s.handle(Input::Flushed, at(10));
    assert_eq!(s.task("b").unwrap().status, TaskStatus::Queued);
    assert_eq!(runs(&run_on(&mut s, "s2")), [("s2".into(), "b".into())]);
}

/// Found by the simulation (`tests/simulation.rs`): the group commit carries out each
/// file's operations in order but goes on with other files when one is refused, so b's
/// claim could be durable while a's move to `done/` waited for the disk — and a crash
/// then ran b on a dependency that was never done.
#[test]
fn a_dependent_is_released_only_once_its_dependency_s_final_state_is_durable() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    arrive(&mut s, "b", r#"{"prompt":"x","depends_on":["a"]}"#);
    run_on(&mut s, "s1");
    end(&mut s, "s1", "a", done(), 10);
    assert_eq!(
        s.task("b").unwrap().status,
        TaskStatus::WaitingForDependencies(["a".to_string()].into())
    );
    assert!(runs(&s.handle(free(&["s2"]), at(10))).is_empty());
    assert!(s.handle(Input::Flushed, at(20)).is_empty(), "b is queued");
    assert_eq!(runs(&run_on(&mut s, "s2")), [("s2".into(), "b".into())]);
}

#[test]
fn a_task_arriving_after_its_dependency_finished_waits_until_that_is_durable() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    end(&mut s, "s1", "a", done(), 10);
    let fx = arrive(&mut s, "b", r#"{"prompt":"x","depends_on":["a"]}"#);
    assert_eq!(logged::<event::TaskQueued>(&fx)[0].waiting_for, 1);
    assert!(runs(&run_on(&mut s, "s2")).is_empty());
    s.handle(Input::Flushed, at(20));
    assert_eq!(runs(&run_on(&mut s, "s2")), [("s2".into(), "b".into())]);
}

#[test]
fn a_task_whose_dependency_failed_fails_with_its_name() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","max_retries":0}"#);
    arrive(&mut s, "b", r#"{"prompt":"x","depends_on":["a"]}"#);
    run_on(&mut s, "s1");
    end(
        &mut s,
        "s1",
        "a",
        AttemptEnd::Failed(TaskResult::default(), "exit 1".into()),
        10,
    );
    let fx = s.handle(Input::Flushed, at(10));
    assert_eq!(
        final_record(&fx, "b").error.as_deref(),
        Some("dependency a failed")
    );
    assert_eq!(s.state_of("b"), Some(TaskState::Failed));
}

#[test]
fn a_task_depending_on_a_task_failed_on_disk_fails_at_once() {
    let mut s = sched();
    let fx = s.handle(
        Input::Arrived {
            record: record("b", r#"{"prompt":"x","depends_on":["old"]}"#),
            resources: Ok(Vec::new()),
            on_disk: [("old".to_string(), TaskState::Cancelled)].into(),
        },
        t0(),
    );
    assert_eq!(
        final_record(&fx, "b").error.as_deref(),
        Some("dependency old was cancelled")
    );
}

#[test]
fn a_dependency_cycle_fails_every_task_in_it_naming_the_cycle() {
    let mut s = sched();
    arrive(&mut s, "x", r#"{"prompt":"x","depends_on":["z"]}"#);
    arrive(&mut s, "y", r#"{"prompt":"x","depends_on":["x"]}"#);
    let fx = arrive(&mut s, "z", r#"{"prompt":"x","depends_on":["y"]}"#);
    assert_eq!(
        final_record(&fx, "z").error.as_deref(),
        Some("dependency cycle: z → y → x → z")
    );
    // The others fail with it once its failure is durable, one after the other.
    let mut fx = s.handle(Input::Flushed, t0());
    fx.extend(s.handle(Input::Flushed, t0()));
    assert_eq!(
        final_record(&fx, "x").error.as_deref(),
        Some("dependency z failed")
    );
    assert_eq!(
        final_record(&fx, "y").error.as_deref(),
        Some("dependency x failed")
    );
    assert_eq!(s.tasks().count(), 0);
}

#[test]
fn a_task_depending_on_itself_fails_at_once() {
    let mut s = sched();
    let fx = arrive(&mut s, "a", r#"{"prompt":"x","depends_on":["a"]}"#);
    assert_eq!(
        final_record(&fx, "a").error.as_deref(),
        Some("dependency cycle: a → a")
    );
}

#[test]
fn an_unknown_dependency_is_named_and_waited_for() {
    let mut s = sched();
    let fx = arrive(&mut s, "b", r#"{"prompt":"x","depends_on":["later"]}"#);
    assert_eq!(
        logged::<event::TaskQueued>(&fx)[0].unknown_dependencies,
        ["later"]
    );
    arrive(&mut s, "later", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    end(&mut s, "s1", "later", done(), 5);
    s.handle(Input::Flushed, at(5));
    assert_eq!(runs(&run_on(&mut s, "s1")), [("s1".into(), "b".into())]);
}

#[test]
fn invalid_locks_fail_the_task_with_the_reason() {
    let mut s = sched();
    let fx = s.handle(
        Input::Arrived {
            record: record("a", r#"{"prompt":"x"}"#),
            resources: Err("/locks/branch: main is protected".into()),
            on_disk: HashMap::new(),
        },
        t0(),
    );
    assert_eq!(
        final_record(&fx, "a").error.as_deref(),
        Some("invalid locks: /locks/branch: main is protected")
    );
}

#[test]
fn a_failed_attempt_is_retried_after_a_backoff_that_doubles() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","max_retries":3}"#);
    run_on(&mut s, "s1");
    let fx = end(&mut s, "s1", "a", AttemptEnd::TimedOut, 1000);
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Pending)]
    );
    assert_eq!(logged::<event::TaskRetried>(&fx)[0].retry_in_ms, Some(100));
    assert_eq!(
        s.task("a").unwrap().status,
        TaskStatus::BackingOff { until: at(1100) }
    );
    assert_eq!(s.next_deadline(), Some(at(1100)));
    assert!(
        runs(&s.handle(free(&["s1"]), at(1050))).is_empty(),
        "not before its time"
    );
    s.handle(Input::Tick, at(1100));
    assert_eq!(
        runs(&s.handle(free(&["s1"]), at(1100))),
        [("s1".into(), "a".into())]
    );
    let fx = end(&mut s, "s1", "a", AttemptEnd::TimedOut, 2000);
    assert_eq!(logged::<event::TaskRetried>(&fx)[0].retry_in_ms, Some(200));
}

#[test]
fn a_task_gives_up_after_max_retries() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","max_retries":1}"#);
    run_on(&mut s, "s1");
    end(
        &mut s,
        "s1",
        "a",
        AttemptEnd::NotTaken("still in the box".into()),
        10,
    );
    s.handle(Input::Tick, at(10_000));
    s.handle(free(&["s1"]), at(10_000));
    let fx = end(&mut s, "s1", "a", AttemptEnd::TimedOut, 20_000);
    let r = final_record(&fx, "a");
    assert_eq!(
        r.error.as_deref(),
        Some("gave up after 2 attempt(s): timed out after 1800 s")
    );
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Failed)]
    );
}

#[test]
fn an_uncertain_delivery_fails_without_a_retry() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","max_retries":5}"#);
    run_on(&mut s, "s1");
    let fx = end(
        &mut s,
        "s1",
        "a",
        AttemptEnd::DeliveryUncertain("no proof".into()),
        10,
    );
    assert_eq!(final_record(&fx, "a").error.as_deref(), Some("no proof"));
}

#[test]
fn a_usage_limit_does_not_spend_a_retry() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","max_retries":0}"#);
    run_on(&mut s, "s1");
    let fx = end(
        &mut s,
        "s1",
        "a",
        AttemptEnd::Limited {
            message: "5-hour limit".into(),
            reset_in: std::time::Duration::from_secs(3600),
        },
        10,
    );
    assert!(logged::<event::TaskFailed>(&fx).is_empty(), "{fx:#?}");
    assert_eq!(s.task("a").unwrap().record.attempts_used(), 0);
}

#[test]
fn a_task_not_started_goes_back_to_the_queue_without_an_attempt() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    let fx = end(&mut s, "s1", "a", AttemptEnd::NotStarted("busy".into()), 10);
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Pending)]
    );
    assert!(s.task("a").unwrap().record.attempts.is_empty());
    assert_eq!(runs(&run_on(&mut s, "s2")), [("s2".into(), "a".into())]);
}

#[test]
fn an_attempt_end_from_another_session_is_ignored() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    assert!(end(&mut s, "s2", "a", done(), 10).is_empty());
    assert!(matches!(
        s.task("a").unwrap().status,
        TaskStatus::Running { .. }
    ));
}

/// Found by the simulation: a session died while the claim of its task waited for a
/// disk that refused writes; the task was retried and claimed again for another session;
/// when the disk took the writes, the daemon sent both runs, and the prompt ran twice.
#[test]
fn a_run_whose_attempt_ended_before_its_claim_was_durable_is_stale() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    assert_eq!(runs(&run_on(&mut s, "s1")), [("s1".into(), "a".into())]);
    assert!(s.is_running("a", "s1", 1));
    s.handle(
        Input::SessionExited {
            session: "s1".into(),
            task_id: "a".into(),
            status: "signal 9".into(),
            at_most_once_sent: false,
        },
        at(10),
    );
    s.handle(Input::Tick, at(1000));
    assert_eq!(
        runs(&s.handle(free(&["s2"]), at(1000))),
        [("s2".into(), "a".into())]
    );
    assert!(!s.is_running("a", "s1", 1), "s1's run is stale");
    assert!(s.is_running("a", "s2", 2));
}

#[test]
fn a_pending_task_is_cancelled_at_once() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    let fx = s.handle(
        Input::Cancel {
            task_id: "a".into(),
        },
        t0(),
    );
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Pending, TaskState::Cancelled)]
    );
    assert_eq!(
        final_record(&fx, "a").error.as_deref(),
        Some("cancelled before it ran")
    );
    assert!(runs(&run_on(&mut s, "s1")).is_empty());
}

#[test]
fn cancelling_a_running_task_interrupts_its_session_once() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    let fx = s.handle(
        Input::Cancel {
            task_id: "a".into(),
        },
        t0(),
    );
    assert_eq!(
        fx,
        [Effect::Interrupt {
            session: "s1".into(),
            task_id: "a".into()
        }]
    );
    assert!(s
        .handle(
            Input::Cancel {
                task_id: "a".into()
            },
            t0()
        )
        .is_empty());
    // However the attempt then ends, the task is cancelled.
    let fx = end(&mut s, "s1", "a", AttemptEnd::TimedOut, 10);
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Cancelled)]
    );
}

#[test]
fn a_graceful_stop_returns_a_running_task_without_spending_an_attempt() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x","max_retries":0}"#);
    run_on(&mut s, "s1");
    s.handle(Input::Stopping, t0());
    let fx = s.handle(
        Input::SessionExited {
            session: "s1".into(),
            task_id: "a".into(),
            status: "signal 15".into(),
            at_most_once_sent: false,
        },
        at(5),
    );
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Pending)]
    );
    assert!(s.task("a").unwrap().record.attempts.is_empty());
    assert!(
        runs(&run_on(&mut s, "s2")).is_empty(),
        "nothing is dispatched while stopping"
    );
}

#[test]
fn a_session_death_is_a_failed_attempt_unless_the_prompt_may_have_run_once_only() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    arrive(&mut s, "b", r#"{"prompt":"x"}"#);
    s.handle(free(&["s1", "s2"]), t0());
    let died = |task: &str, session: &str, sent: bool| Input::SessionExited {
        session: session.into(),
        task_id: task.into(),
        status: "exit 137".into(),
        at_most_once_sent: sent,
    };
    let fx = s.handle(died("a", "s1", false), at(10));
    assert_eq!(
        logged::<event::TaskRetried>(&fx)[0].error.as_deref(),
        Some("session s1 died during the task (exit 137)")
    );
    let fx = s.handle(died("b", "s2", true), at(10));
    let r = final_record(&fx, "b");
    assert!(r.error.unwrap().contains("not sent again"));
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::SessionDied);
}

#[test]
fn a_task_whose_lock_is_held_waits_without_blocking_the_next() {
    let mut s = sched();
    arrive_locking(&mut s, "a", "feature");
    arrive_locking(&mut s, "b", "feature");
    arrive(&mut s, "c", r#"{"prompt":"x"}"#);
    let fx = s.handle(free(&["s1", "s2"]), t0());
    assert_eq!(
        runs(&fx),
        [("s1".into(), "a".into()), ("s2".into(), "c".into())]
    );
    let waiting = logged::<event::LockWaiting>(&fx);
    assert_eq!(waiting.len(), 1);
    assert!(matches!(
        s.task("b").unwrap().status,
        TaskStatus::WaitingForLock { .. }
    ));
    assert!(s.task("b").unwrap().record.waiting_lock.is_some());
    // a's end releases the lock: b is queued again and takes it.
    let fx = end(&mut s, "s1", "a", done(), 10);
    assert_eq!(logged::<event::LockReleased>(&fx)[0].held_ms, 7);
    let fx = run_on(&mut s, "s1");
    assert_eq!(runs(&fx), [("s1".into(), "b".into())]);
    assert_eq!(logged::<event::LockAcquired>(&fx).len(), 1);
}

#[test]
fn a_lock_held_outside_the_daemon_is_polled() {
    let mut s = sched();
    let cli = HeldBy::Outside(1);
    s.locks
        .take(&cli, &[Resource::Branch("feature".into())])
        .unwrap();
    arrive_locking(&mut s, "a", "feature");
    s.handle(free(&["s1"]), t0());
    assert_eq!(s.next_deadline(), Some(at(LOCK_POLL_MS)));
    s.locks.release_by(&cli);
    s.handle(Input::Tick, at(LOCK_POLL_MS));
    assert_eq!(
        runs(&s.handle(free(&["s1"]), at(60))),
        [("s1".into(), "a".into())]
    );
}

#[test]
fn a_failed_claim_of_a_file_that_is_gone_forgets_the_task() {
    let mut s = sched();
    arrive_locking(&mut s, "a", "feature");
    run_on(&mut s, "s1");
    let fx = s.handle(
        Input::ClaimFailed {
            task_id: "a".into(),
            error: "No such file".into(),
            gone: true,
        },
        t0(),
    );
    assert!(s.task("a").is_none());
    assert!(s.locks.held().is_empty(), "its locks are released");
    assert!(moves(&fx).is_empty(), "nothing moves: the file is not ours");
}

#[test]
fn a_failed_claim_otherwise_is_tried_again_after_a_backoff_without_an_attempt() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    run_on(&mut s, "s1");
    s.handle(
        Input::ClaimFailed {
            task_id: "a".into(),
            error: "EIO".into(),
            gone: false,
        },
        t0(),
    );
    assert_eq!(
        s.task("a").unwrap().status,
        TaskStatus::BackingOff { until: at(100) }
    );
    s.handle(Input::Tick, at(100));
    assert_eq!(
        runs(&s.handle(free(&["s1"]), at(100))),
        [("s1".into(), "a".into())]
    );
    assert!(s.task("a").unwrap().record.attempts.is_empty());
}

#[test]
fn a_manual_retry_gives_a_failed_task_a_fresh_budget() {
    let mut s = sched();
    let mut r = record("a", r#"{"prompt":"x","max_retries":0}"#);
    r.state = TaskState::Failed;
    r.error = Some("boom".into());
    r.attempts.push(Attempt {
        attempt: 1,
        session: "s1".into(),
        node: "n1".into(),
        started_at: t0(),
        finished_at: t0(),
        outcome: AttemptOutcome::Failed,
        error: Some("boom".into()),
    });
    let fx = s.handle(
        Input::Retry {
            dir: TaskState::Failed,
            record: r,
            resources: Ok(Vec::new()),
            on_disk: HashMap::new(),
        },
        t0(),
    );
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Failed, TaskState::Pending)]
    );
    let t = s.task("a").unwrap();
    assert_eq!(t.record.attempt_base, 1);
    assert!(t.record.may_retry() && t.record.error.is_none());
    assert_eq!(runs(&run_on(&mut s, "s1")), [("s1".into(), "a".into())]);
}

/// Found by the simulation: a retry read the task's record from `failed/` while the
/// batch still kept its earlier retry and cancel (the disk refused them); carried out,
/// the stale move was dropped and the task ended in `active/` and `cancelled/` at once.
#[test]
fn a_retry_of_a_task_whose_final_state_is_not_yet_durable_is_refused() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    s.handle(
        Input::Cancel {
            task_id: "a".into(),
        },
        t0(),
    );
    let retry = |dir: TaskState| {
        let mut r = record("a", r#"{"prompt":"x"}"#);
        r.state = dir;
        Input::Retry {
            dir,
            record: r,
            resources: Ok(Vec::new()),
            on_disk: HashMap::new(),
        }
    };
    // Read from a disk that does not show the cancel yet.
    assert!(s.handle(retry(TaskState::Failed), t0()).is_empty());
    assert!(s.task("a").is_none());
    s.handle(Input::Flushed, t0());
    assert_eq!(
        moves(&s.handle(retry(TaskState::Cancelled), t0())),
        [("a".into(), TaskState::Cancelled, TaskState::Pending)],
        "once durable, the disk is where the task is"
    );
}

#[test]
fn final_states_are_forgotten_once_durable() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    s.handle(
        Input::Cancel {
            task_id: "a".into(),
        },
        t0(),
    );
    assert_eq!(s.finals_held(), 1);
    s.handle(Input::Flushed, t0());
    assert_eq!(s.finals_held(), 0);
    assert_eq!(s.state_of("a"), None, "the disk knows it now");
}

fn found(dir: TaskState, r: TaskRecord) -> Found {
    Found {
        dir,
        record: r,
        also_final: None,
        resources: Ok(Vec::new()),
    }
}

fn crashed_attempt(n: u32) -> Attempt {
    Attempt {
        attempt: n,
        session: "s1".into(),
        node: "n1".into(),
        started_at: t0(),
        finished_at: t0(),
        outcome: AttemptOutcome::Interrupted,
        error: Some(DAEMON_STOPPED.into()),
    }
}

#[test]
fn recovery_returns_an_interrupted_task_to_pending_without_spending_a_retry() {
    let mut s = sched();
    let r = record("a", r#"{"prompt":"x","max_retries":0}"#);
    let fx = s.handle(
        Input::Recovered {
            found: vec![found(TaskState::Active, r)],
            on_disk: HashMap::new(),
        },
        at(1),
    );
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Pending)]
    );
    let t = s.task("a").unwrap();
    assert_eq!(t.record.attempts[0].outcome, AttemptOutcome::Interrupted);
    assert!(
        t.record.may_retry(),
        "a crash of the daemon is not the task's failure"
    );
    assert_eq!(runs(&run_on(&mut s, "s1")), [("s1".into(), "a".into())]);
}

#[test]
fn a_task_running_at_five_daemon_crashes_in_a_row_is_quarantined() {
    let mut s = sched();
    let mut r = record("a", r#"{"prompt":"x"}"#);
    r.attempts = (1..u32::try_from(CRASH_QUARANTINE).unwrap())
        .map(crashed_attempt)
        .collect();
    let fx = s.handle(
        Input::Recovered {
            found: vec![found(TaskState::Active, r)],
            on_disk: HashMap::new(),
        },
        at(1),
    );
    let error = final_record(&fx, "a").error.unwrap();
    assert!(
        error.starts_with("quarantined: the daemon stopped 5 times in a row"),
        "{error}"
    );
    assert_eq!(
        moves(&fx),
        [
            ("a".into(), TaskState::Active, TaskState::Pending),
            ("a".into(), TaskState::Pending, TaskState::Failed)
        ]
    );
}

#[test]
fn recovery_completes_a_half_done_move_and_drops_a_copy_left_behind() {
    let mut s = sched();
    let mut finished = record("a", r#"{"prompt":"x"}"#);
    finished.state = TaskState::Done;
    let mut copy = found(TaskState::Pending, record("b", r#"{"prompt":"x"}"#));
    copy.also_final = Some(TaskState::Done);
    let fx = s.handle(
        Input::Recovered {
            found: vec![found(TaskState::Active, finished), copy],
            on_disk: HashMap::new(),
        },
        t0(),
    );
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Done)]
    );
    assert!(fx.contains(&Effect::Remove {
        id: "b".into(),
        dir: TaskState::Pending
    }));
    assert_eq!(s.tasks().count(), 0);
}

/// Found by the simulation: a task arriving after recovery completed
/// its dependency's move to a final directory — or recovered with it — waited for it
/// forever (the move released no one, and the scheduler did not know the id), until the
/// next restart found it final on disk.
#[test]
fn recovery_completing_a_half_done_move_releases_the_dependents_once_it_is_durable() {
    let mut s = sched();
    let mut finished = record("a", r#"{"prompt":"x"}"#);
    finished.state = TaskState::Done;
    let dependent = record("b", r#"{"prompt":"x","depends_on":["a"]}"#);
    s.handle(
        Input::Recovered {
            found: vec![
                found(TaskState::Active, finished),
                found(TaskState::Pending, dependent),
            ],
            on_disk: HashMap::new(),
        },
        t0(),
    );
    assert!(
        runs(&run_on(&mut s, "s1")).is_empty(),
        "not before a is in done/"
    );
    arrive(&mut s, "c", r#"{"prompt":"x","depends_on":["a"]}"#);
    s.handle(Input::Flushed, t0());
    assert_eq!(
        runs(&s.handle(free(&["s1", "s2"]), t0())),
        [("s1".into(), "b".into()), ("s2".into(), "c".into())]
    );
}

#[test]
fn recovered_tasks_are_queued_in_the_order_they_were_received() {
    let mut s = sched();
    let mut later = record("a-later", r#"{"prompt":"x"}"#);
    later.received_at = at(20);
    let mut earlier = record("z-earlier", r#"{"prompt":"x"}"#);
    earlier.received_at = at(10);
    s.handle(
        Input::Recovered {
            found: vec![
                found(TaskState::Pending, later),
                found(TaskState::Pending, earlier),
            ],
            on_disk: HashMap::new(),
        },
        at(30),
    );
    assert_eq!(
        runs(&run_on(&mut s, "s1")),
        [("s1".into(), "z-earlier".into())]
    );
}

#[test]
fn a_recovered_lock_wait_is_cleared_and_decided_afresh() {
    let mut s = sched();
    let mut r = record("a", r#"{"prompt":"x"}"#);
    r.waiting_lock = Some(LockWait {
        since: t0(),
        blocked_by: Conflict {
            resource: Resource::Branch("f".into()),
            holder: None,
        },
    });
    let fx = s.handle(
        Input::Recovered {
            found: vec![found(TaskState::Pending, r)],
            on_disk: HashMap::new(),
        },
        t0(),
    );
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::Write { record, .. } if record.waiting_lock.is_none())));
    assert_eq!(s.task("a").unwrap().status, TaskStatus::Queued);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    assert_eq!(backoff_ms(100, 0, 1000), 100);
    assert_eq!(backoff_ms(100, 3, 1000), 800);
    assert_eq!(backoff_ms(100, 4, 1000), 1000);
    assert_eq!(backoff_ms(u64::MAX, 40, u64::MAX), u64::MAX);
}

#[test]
fn a_claim_for_a_session_that_submits_at_most_once_first_records_the_attempt_in_flight() {
    let mut s = sched();
    arrive(&mut s, "a", r#"{"prompt":"x"}"#);
    let fx = s.handle(
        Input::SessionsFree(vec![FreeSession {
            name: "claude1".into(),
            role: None,
            llm: false,
            at_most_once: true,
        }]),
        at(1),
    );
    let written = fx.iter().position(|e| {
        matches!(e, Effect::Write { dir: TaskState::Pending, record }
        if record.attempt_in_flight == Some(InFlight {
            session: "claude1".into(),
            attempt: 1,
            since: at(1),
        }))
    });
    let moved = fx.iter().position(|e| matches!(e, Effect::Move { .. }));
    assert!(
        written.is_some() && written < moved,
        "the mark is written before the claim: {fx:#?}"
    );
    assert_eq!(runs(&fx), [("claude1".into(), "a".into())]);
    // A session that may be sent a prompt twice gets no such write.
    let mut s = sched();
    arrive(&mut s, "b", r#"{"prompt":"x"}"#);
    let fx = run_on(&mut s, "s1");
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Write { .. })),
        "{fx:#?}"
    );
}

#[test]
fn after_a_crash_a_task_in_flight_on_a_session_that_submits_at_most_once_fails_and_is_not_sent_again(
) {
    let mut s = sched();
    let mut r = record("a", r#"{"prompt":"x","max_retries":3}"#);
    r.attempt_in_flight = Some(InFlight {
        session: "claude1".into(),
        attempt: 1,
        since: at(0),
    });
    let fx = s.handle(
        Input::Recovered {
            found: vec![found(TaskState::Active, r)],
            on_disk: HashMap::new(),
        },
        at(5),
    );
    // Failed from `active/` directly: no state between in which the mark is gone.
    assert_eq!(
        moves(&fx),
        [("a".into(), TaskState::Active, TaskState::Failed)]
    );
    let rec = final_record(&fx, "a");
    assert_eq!(rec.attempt_in_flight, None);
    assert_eq!(rec.attempts[0].session, "claude1");
    assert_eq!(rec.attempts[0].outcome, AttemptOutcome::Interrupted);
    let error = rec.error.unwrap();
    assert!(
        error.contains("submits at most once") && error.contains("architect retry a"),
        "{error}"
    );
    assert!(runs(&run_on(&mut s, "s1")).is_empty());
}

#[test]
fn a_mark_of_an_attempt_that_never_left_pending_is_cleared_and_the_task_runs() {
    let mut s = sched();
    let mut r = record("a", r#"{"prompt":"x"}"#);
    r.attempt_in_flight = Some(InFlight {
        session: "claude1".into(),
        attempt: 1,
        since: at(0),
    });
    let fx = s.handle(
        Input::Recovered {
            found: vec![found(TaskState::Pending, r)],
            on_disk: HashMap::new(),
        },
        at(5),
    );
    assert!(fx.iter().any(|e| matches!(e,
        Effect::Write { dir: TaskState::Pending, record } if record.attempt_in_flight.is_none())));
    assert_eq!(runs(&run_on(&mut s, "s1")), [("s1".into(), "a".into())]);
}
