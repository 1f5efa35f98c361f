//! The fleet's pure decisions, each named for the rule it checks.

use super::*;

fn beat(running: u32, free: &[(&str, u32)], draining: bool) -> Heartbeat {
    Heartbeat {
        seq: 1,
        version: "0.1.0".into(),
        epoch: 1,
        running,
        free: free.iter().map(|(r, n)| ((*r).to_string(), *n)).collect(),
        draining,
        locks_held: 0,
        adopted: BTreeMap::new(),
    }
}

#[test]
fn a_node_whose_heartbeat_stops_changing_is_dead_after_the_lease_on_the_readers_clock() {
    let mut m = Membership::new(30_000);
    assert_eq!(m.liveness("a", 0), Liveness::Unknown);
    m.observe("a", 7, 1_000);
    assert_eq!(
        m.liveness("a", 20_000),
        Liveness::Alive { silent_ms: 19_000 }
    );
    // The same seq read again is no sign of life.
    m.observe("a", 7, 25_000);
    assert_eq!(
        m.liveness("a", 31_000),
        Liveness::Dead { silent_ms: 30_000 }
    );
    // A new seq, however late it arrived, is.
    m.observe("a", 8, 40_000);
    assert_eq!(
        m.liveness("a", 41_000),
        Liveness::Alive { silent_ms: 1_000 }
    );
}

#[test]
fn a_restarted_node_with_a_lower_seq_counts_as_alive() {
    let mut m = Membership::new(10_000);
    m.observe("a", 500, 0);
    m.observe("a", 1, 9_000);
    assert_eq!(
        m.liveness("a", 15_000),
        Liveness::Alive { silent_ms: 6_000 }
    );
}

#[test]
fn the_live_nodes_are_listed_by_name() {
    let mut m = Membership::new(10_000);
    m.observe("c", 1, 0);
    m.observe("a", 1, 0);
    m.observe("b", 1, 5_000);
    assert_eq!(m.live(12_000), ["b"]);
    assert_eq!(m.live(1_000), ["a", "b", "c"]);
}

#[test]
fn a_task_for_a_named_session_goes_to_that_sessions_node_even_when_busy() {
    let (a, b) = (beat(0, &[("", 3)], false), beat(9, &[], false));
    let c = [
        Candidate {
            name: "a",
            weight: 1,
            heartbeat: &a,
        },
        Candidate {
            name: "b",
            weight: 1,
            heartbeat: &b,
        },
    ];
    assert_eq!(place(Want::SessionOn("b"), &c), Some("b"));
    assert_eq!(place(Want::SessionOn("gone"), &c), None);
}

#[test]
fn a_role_goes_to_the_least_loaded_node_with_an_idle_session_of_that_role() {
    let a = beat(1, &[("rev", 1)], false);
    let b = beat(0, &[("ops", 2)], false);
    let c = beat(4, &[("rev", 1)], false);
    let nodes = [
        Candidate {
            name: "a",
            weight: 1,
            heartbeat: &a,
        },
        Candidate {
            name: "b",
            weight: 1,
            heartbeat: &b,
        },
        Candidate {
            name: "c",
            weight: 1,
            heartbeat: &c,
        },
    ];
    assert_eq!(place(Want::Role("rev"), &nodes), Some("a"));
    assert_eq!(place(Want::Role("ops"), &nodes), Some("b"));
    assert_eq!(place(Want::Role("none"), &nodes), None);
    assert_eq!(place(Want::Any, &nodes), Some("b"));
}

#[test]
fn load_is_counted_per_unit_of_weight_and_ties_break_by_name() {
    let big = beat(4, &[("", 1)], false);
    let small = beat(1, &[("", 1)], false);
    let nodes = [
        Candidate {
            name: "small",
            weight: 1,
            heartbeat: &small,
        },
        Candidate {
            name: "big",
            weight: 8,
            heartbeat: &big,
        },
    ];
    assert_eq!(place(Want::Any, &nodes), Some("big"), "4/8 < 1/1");
    let (x, y) = (beat(2, &[("", 1)], false), beat(2, &[("", 1)], false));
    let tie = [
        Candidate {
            name: "y",
            weight: 1,
            heartbeat: &y,
        },
        Candidate {
            name: "x",
            weight: 1,
            heartbeat: &x,
        },
    ];
    assert_eq!(place(Want::Any, &tie), Some("x"));
}

#[test]
fn a_draining_node_takes_no_new_work() {
    let a = beat(0, &[("", 5)], true);
    let b = beat(3, &[("", 1)], false);
    let nodes = [
        Candidate {
            name: "a",
            weight: 1,
            heartbeat: &a,
        },
        Candidate {
            name: "b",
            weight: 1,
            heartbeat: &b,
        },
    ];
    assert_eq!(place(Want::Any, &nodes), Some("b"));
    assert_eq!(place(Want::SessionOn("a"), &nodes), None);
}

#[test]
fn every_reader_picks_the_same_successor_and_a_removed_node_moves_only_its_own_keys() {
    let all = [("n1", 1), ("n2", 1), ("n3", 1), ("n4", 1)];
    let keys: Vec<String> = (0..200).map(|i| format!("task-{i}")).collect();
    let before: Vec<&str> = keys.iter().map(|k| rendezvous(k, &all).unwrap()).collect();
    // Same inputs, another order: the same choice.
    let shuffled = [("n3", 1), ("n1", 1), ("n4", 1), ("n2", 1)];
    for (k, b) in keys.iter().zip(&before) {
        assert_eq!(rendezvous(k, &shuffled), Some(*b));
    }
    // Every node gets some keys.
    for (n, _) in all {
        assert!(before.contains(&n), "{n} got no key");
    }
    let without_n2 = [("n1", 1), ("n3", 1), ("n4", 1)];
    for (k, b) in keys.iter().zip(&before) {
        let after = rendezvous(k, &without_n2).unwrap();
        if *b != "n2" {
            assert_eq!(after, *b, "{k} moved although its node stayed");
        }
    }
    assert_eq!(successor("n2", &all), rendezvous("n2", &without_n2));
    assert_ne!(successor("n2", &all), Some("n2"));
    assert_eq!(successor("n1", &[("n1", 1)]), None);
}

#[test]
fn a_heavier_node_gets_more_keys() {
    let nodes = [("light", 1), ("heavy", 4)];
    let heavy = (0..2000)
        .filter(|i| rendezvous(&format!("k{i}"), &nodes) == Some("heavy"))
        .count();
    assert!(
        (1400..1800).contains(&heavy),
        "{heavy} of 2000 (expected about 1600)"
    );
}

#[test]
fn a_repositorys_locks_live_on_its_configured_home_while_it_is_live() {
    let live = [("a", 1), ("b", 1)];
    assert_eq!(lock_home("/srv/repo", Some("b"), &live), Some("b"));
    let fallback = lock_home("/srv/repo", Some("gone"), &live);
    assert_eq!(fallback, rendezvous("/srv/repo", &live));
    assert_eq!(lock_home("/srv/repo", None, &[]), None);
}

#[test]
fn a_heartbeat_reads_back_as_written_and_refuses_unknown_fields() {
    let b = beat(2, &[("rev", 1)], false);
    let text = serde_json::to_string(&b).unwrap();
    assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), b);
    let extra = text.replacen('{', r#"{"colour":"red","#, 1);
    assert!(serde_json::from_str::<Heartbeat>(&extra).is_err());
}

#[test]
fn a_heartbeat_written_before_locks_held_was_kept_reads_as_holding_none() {
    let old = r#"{"seq":1,"version":"0.1.0","epoch":1,"running":0,"free":{},"draining":false}"#;
    assert_eq!(
        serde_json::from_str::<Heartbeat>(old).unwrap().locks_held,
        0
    );
}

#[test]
fn a_node_takes_locks_only_as_the_home_for_a_lease_while_no_other_live_node_holds_any() {
    let idle = beat(0, &[], false);
    let holding = Heartbeat {
        locks_held: 1,
        ..beat(1, &[], false)
    };
    let lease = 10_000;
    // The home, for a lease, with the others holding nothing.
    assert!(may_take_locks(
        "a",
        Some("a"),
        lease,
        lease,
        &[("b", &idle)]
    ));
    // Not the home, or not for a lease yet (just started, or just became the home).
    assert!(!may_take_locks(
        "a",
        Some("b"),
        lease,
        lease,
        &[("b", &idle)]
    ));
    assert!(!may_take_locks("a", None, lease, lease, &[]));
    assert!(!may_take_locks(
        "a",
        Some("a"),
        lease - 1,
        lease,
        &[("b", &idle)]
    ));
    // The former home still holds a lock: wait until its heartbeat says 0.
    assert!(!may_take_locks(
        "a",
        Some("a"),
        lease,
        lease,
        &[("b", &holding)]
    ));
    // Its own heartbeat does not count.
    assert!(may_take_locks(
        "a",
        Some("a"),
        lease,
        lease,
        &[("a", &holding)]
    ));
}

#[test]
fn the_home_clock_counts_from_when_a_node_became_the_home_and_restarts_after_a_break() {
    let mut c = HomeClock::default();
    assert_eq!(c.home_for(true, 1_000), 0);
    assert_eq!(c.home_for(true, 4_000), 3_000);
    assert_eq!(c.home_for(false, 5_000), 0);
    assert_eq!(c.home_for(true, 6_000), 0);
    assert_eq!(c.home_for(true, 16_000), 10_000);
}
