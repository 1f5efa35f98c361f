//! Two real daemons on two spools kept in sync by a real engine — two Syncthing
//! instances on loopback, or `rsync -a` loops — running 200 tasks dropped into both
//! inboxes, aimed at sessions on both nodes and at none; one daemon is killed with
//! SIGKILL mid-run and restarted later (`docs/multi-node.md`).
//!
//! What must hold: every task finishes exactly once in the fleet (one final record, in
//! `done/`, on one node); the killed node's tasks are adopted by the other after the
//! lease (started ones retried there); a task naming a session of the killed node waits
//! for it and goes back to it; the restarted node stands down from what was adopted and
//! runs nothing twice; `sql` and `stats` over both logs count what ran.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::helper::sync::{RsyncLoop, SyncthingPair};
use crate::helper::{wait_for, Env, FAST};

const T: Duration = Duration::from_secs(120);
const TASKS: usize = 200;

/// Two sessions per node; every session names its node (the config is the same file on
/// both machines).
const SESSIONS: &str = "\
[[session]]\nname = \"a-1\"\nprofile = \"shell\"\nnode = \"a\"\n\
[[session]]\nname = \"a-2\"\nprofile = \"shell\"\nnode = \"a\"\n\
[[session]]\nname = \"b-1\"\nprofile = \"shell\"\nnode = \"b\"\n\
[[session]]\nname = \"b-2\"\nprofile = \"shell\"\nnode = \"b\"\n";

/// A heartbeat every second and a lease of 6 s. Syncthing (the harness's
/// `fsWatcherDelayS = 1`) sends a file only once it has been still for half the watcher
/// delay, and one that changes more often waits up to 6 delays: a heartbeat every 250 ms
/// crossed only every ~6 s, and live nodes were presumed dead (BENCHMARKS.md, "Several
/// nodes"). The lease also leaves room for a daemon slowed down by a loaded CI machine:
/// a live node presumed dead makes a duplicate run, which the test rightly refuses.
const NODES: &str =
    "lease_s = 6\nheartbeat_ms = 1000\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n";

pub(super) fn node_env(name: &str) -> Env {
    let env = Env::new(SESSIONS);
    env.write_config(
        "architect.toml",
        &FAST.replace("name = \"test\"", &format!("name = \"{name}\"")),
    );
    env.write_config("nodes.toml", NODES);
    env
}

/// Every final record of every node, as `spool` sees the fleet: id → [(node, state dir)].
fn finals(spool: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for node in ["a", "b"] {
        for dir in ["done", "failed", "cancelled"] {
            let Ok(entries) = std::fs::read_dir(spool.join("nodes").join(node).join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name
                    .strip_suffix(".json")
                    .filter(|_| !name.starts_with('.'))
                {
                    out.entry(id.to_string())
                        .or_default()
                        .push((node.to_string(), dir.to_string()));
                }
            }
        }
    }
    out
}

fn live_on(spool: &Path, node: &str, dir: &str) -> Vec<String> {
    crate::helper::ids_in(&spool.join("nodes").join(node).join(dir))
}

/// Whether `env`'s daemon sees `node` alive (`architect nodes --json`).
pub(super) fn alive_in_view(env: &Env, node: &str) -> bool {
    let out = env.ok(&["nodes", "--json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    nodes
        .iter()
        .any(|n| n["node"] == node && n["status"] == "alive")
}

/// The tasks: (id, which inbox, body). A third name a session on node a, a third on
/// node b, a third nothing; half of each are dropped on each node.
fn tasks(runs: &Path) -> Vec<(String, &'static str, String)> {
    (0..TASKS)
        .map(|i| {
            let id = format!("t{i:03}");
            let inbox = if i % 2 == 0 { "a" } else { "b" };
            let target = match i % 3 {
                0 => format!(r#","session": "a-{}""#, 1 + i % 2),
                1 => format!(r#","session": "b-{}""#, 1 + i % 2),
                _ => String::new(),
            };
            // Each run appends its id to a file both nodes share (one machine), so that
            // a prompt that ran twice shows.
            let body = format!(
                r#"{{"id": "{id}", "prompt": "sleep 0.05; echo {id} >> {}; echo ran-{id}"{target}}}"#,
                runs.display()
            );
            (id, inbox, body)
        })
        .collect()
}

/// The scenario, with the engine started by `start_sync` (kept alive while it runs) and
/// `settle` waiting until both spools agree.
fn two_nodes_finish_every_task_once(
    start_sync: impl FnOnce(&Path, &Path) -> Box<dyn std::any::Any>,
    settle: impl Fn(&dyn std::any::Any),
) {
    let (ea, eb) = (node_env("a"), node_env("b"));
    let (a, b) = (ea.spool.clone(), eb.spool.clone());
    let sync = start_sync(&a, &b);
    let da = ea.daemon();
    let _db = eb.daemon();
    wait_for("each node to see the other alive", T, || {
        alive_in_view(&ea, "b") && alive_in_view(&eb, "a")
    });
    let runs = ea.dir.path().join("runs.log");
    let all = tasks(&runs);
    for (id, inbox, body) in &all {
        let env = if *inbox == "a" { &ea } else { &eb };
        env.drop_task(&format!("{id}.json"), body);
    }
    // Kill a while it runs something that may run anywhere (retried on b after the lease).
    let unpinned_running_on_a = || {
        live_on(&a, "a", "active").iter().any(|id| {
            all.iter()
                .any(|(t, _, body)| t == id && !body.contains("session"))
        })
    };
    // (Inboxes are node-local: a file a never read would wait for a's return.)
    wait_for(
        "node a to take in its inbox and run an unpinned task",
        T,
        || {
            crate::helper::ids_in(&ea.inbox()).is_empty()
                && (unpinned_running_on_a() || finals(&a).len() >= TASKS / 2)
        },
    );
    da.kill9();
    // (Read after the kill: a may claim another task up to the last moment.)
    let started_on_a: Vec<String> = live_on(&a, "a", "active");
    // b adopts a after the lease; everything not pinned to a's sessions finishes on b.
    let pinned_to_a = |id: &str| {
        all.iter()
            .any(|(t, _, body)| t == id && body.contains(r#""session": "a-"#))
    };
    wait_for("node b to adopt node a", T, || {
        std::fs::read_dir(b.join("nodes/b/adopted")).is_ok_and(|mut d| d.next().is_some())
    });
    let missing = || -> Vec<String> {
        let f = finals(&b);
        all.iter()
            .filter(|(id, ..)| !pinned_to_a(id) && !f.contains_key(id))
            .map(|(id, ..)| id.clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + T;
    while !missing().is_empty() {
        if std::time::Instant::now() > deadline {
            let m = missing();
            let mut where_ = Vec::new();
            for id in m.iter().take(5) {
                for spool in [&a, &b] {
                    for e in walk(spool) {
                        if e.to_string_lossy().contains(id.as_str()) {
                            where_.push(e.display().to_string());
                        }
                    }
                }
            }
            panic!(
                "{} unpinned or b-pinned task(s) never finished after a was killed: {m:?}\n\
                 their files: {where_:#?}\nthe first one's events, as b sees them:\n{}\n\
                 b's adoptions: {:?}\nb's daemon log tail:\n{}",
                m.len(),
                history(&b, &m[0]),
                std::fs::read_dir(b.join("nodes/b/adopted"))
                    .map(|d| d
                        .filter_map(Result::ok)
                        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                        .collect::<Vec<_>>())
                    .unwrap_or_default(),
                tail(
                    &std::fs::read_to_string(_db.log.clone()).unwrap_or_default(),
                    40
                )
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // a comes back: it stands down from what b adopted, and runs its own sessions'
    // tasks (b hands back those it adopted).
    let _da = ea.daemon();
    wait_for("all tasks to finish", T, || {
        let f = finals(&a);
        all.iter().all(|(id, ..)| f.contains_key(id))
    });
    settle(sync.as_ref());
    for spool in [&a, &b] {
        let f = finals(spool);
        for (id, ..) in &all {
            let copies = &f[id];
            assert_eq!(
                copies.len(),
                1,
                "{id} finished more than once: {copies:?}\n{}",
                history(spool, id)
            );
            assert_eq!(copies[0].1, "done", "{id}: {copies:?}");
            if pinned_to_a(id) {
                assert_eq!(copies[0].0, "a", "{id} names a session of a: {copies:?}");
            } else if all
                .iter()
                .any(|(t, _, body)| t == id && body.contains(r#""session": "b-"#))
            {
                assert_eq!(copies[0].0, "b", "{id} names a session of b: {copies:?}");
            }
        }
    }
    // What a was running when it was killed was retried (an interrupted attempt counted),
    // by b or — for a's own sessions — by a after b handed it back.
    for id in &started_on_a {
        let copies = &finals(&a)[id];
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(a.join(format!("nodes/{}/done/{id}.json", copies[0].0))).unwrap(),
        )
        .unwrap();
        let outcomes: Vec<&str> = record["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["outcome"].as_str().unwrap())
            .collect();
        assert!(outcomes.contains(&"interrupted"), "{id}: {outcomes:?}");
    }
    // Each prompt ran once; only one a was running when it was killed may have run twice
    // (its attempt was cut short, then retried on b).
    let log = std::fs::read_to_string(&runs).unwrap();
    let mut ran: BTreeMap<&str, usize> = BTreeMap::new();
    for line in log.lines() {
        *ran.entry(line).or_default() += 1;
    }
    for (id, ..) in &all {
        let n = ran.get(id.as_str()).copied().unwrap_or(0);
        assert!(n >= 1, "{id} never ran");
        assert!(
            n == 1 || started_on_a.contains(id),
            "{id} ran {n} times and was not running on a when it was killed\n{}",
            history(&a, id)
        );
    }
    // No duplicate run was needed: nothing was partitioned.
    for env in [&ea, &eb] {
        let status: serde_json::Value =
            serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
        assert_eq!(status["duplicate_runs"], serde_json::json!([]), "{status}");
        assert_eq!(status["tasks"]["done"], TASKS, "{status}");
        assert_eq!(status["tasks"]["pending"], 0, "{status}");
        assert_eq!(status["tasks"]["active"], 0, "{status}");
        // SQL over both nodes' logs: every task completed, on the node that ran it.
        let out = env.ok(&[
            "sql",
            "--format",
            "csv",
            "SELECT (SELECT count(*) FROM tasks WHERE state = 'done') AS done, \
             count(DISTINCT task_id) AS completed, count(DISTINCT node) AS nodes \
             FROM events WHERE type = 'task_completed'",
        ]);
        // (A task a completed just before the kill, its move to done/ not yet on disk,
        // logged a completion there too before b ran it again: events count attempts,
        // the tasks view counts tasks.)
        assert_eq!(
            out.trim(),
            format!("done,completed,nodes\n{TASKS},{TASKS},2"),
            "{out}"
        );
        let stats = env.ok(&["stats", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stats).unwrap();
        let completed: u64 = rows
            .iter()
            .map(|r| r["completed"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(completed, TASKS as u64, "{stats}");
    }
}

/// Task `id`'s events on both nodes, in time order (for a failure's message).
fn history(spool: &Path, id: &str) -> String {
    let mut lines = Vec::new();
    for node in ["a", "b"] {
        let dir = spool.join("nodes").join(node).join("log");
        for e in architect::log::read_events(&dir).unwrap_or_default() {
            if e.task_id.as_deref() == Some(id) || e.kind() == "node_adopted" {
                lines.push((e.ts, format!("{} {node} {} {:?}", e.ts, e.kind(), e.body)));
            }
        }
    }
    lines.sort();
    lines
        .into_iter()
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn two_nodes_on_syncthing_finish_every_task_once_through_a_kill_and_a_restart() {
    two_nodes_finish_every_task_once(
        |a, b| Box::new(SyncthingPair::start(a, b)),
        |s| {
            s.downcast_ref::<SyncthingPair>()
                .unwrap()
                .wait_in_sync(Duration::from_secs(60));
        },
    );
}

#[test]
fn two_nodes_on_rsync_loops_finish_every_task_once_through_a_kill_and_a_restart() {
    two_nodes_finish_every_task_once(
        |a, b| Box::new(RsyncLoop::start(a, "a", b, "b")),
        |s| s.downcast_ref::<RsyncLoop>().unwrap().wait_in_sync(),
    );
}

#[test]
fn a_drained_node_gives_its_inbox_away_and_gets_its_sessions_tasks_only_after_undrain() {
    let (ea, eb) = (node_env("a"), node_env("b"));
    let (a, b) = (ea.spool.clone(), eb.spool.clone());
    let sync = RsyncLoop::start(&a, "a", &b, "b");
    let _da = ea.daemon();
    let _db = eb.daemon();
    wait_for("each node to see the other alive", T, || {
        alive_in_view(&ea, "b") && alive_in_view(&eb, "a")
    });
    // The same edit on both machines (the file is in git).
    for env in [&ea, &eb] {
        assert!(env.ok(&["node", "drain", "b"]).contains("b: draining"));
    }
    let text = std::fs::read_to_string(ea.config.join("nodes.toml")).unwrap();
    assert!(text.contains("drain = true"), "{text}");
    wait_for("b's heartbeat to say it drains, on a", T, || {
        let nodes: Vec<serde_json::Value> =
            serde_json::from_str(&ea.ok(&["nodes", "--json"])).unwrap();
        nodes
            .iter()
            .any(|n| n["node"] == "b" && n["heartbeat"]["draining"] == true)
    });
    // Work dropped on b runs on a; a task for b's session waits on a.
    for i in 0..10 {
        eb.drop_task(
            &format!("d{i}.json"),
            &format!(r#"{{"id": "d{i}", "prompt": "echo d{i}"}}"#),
        );
    }
    ea.drop_task(
        "pinned.json",
        r#"{"id": "pinned", "prompt": "echo p", "session": "b-1"}"#,
    );
    wait_for("b's inbox to run on a", T, || {
        let f = finals(&a);
        (0..10).all(|i| f.get(&format!("d{i}")).is_some_and(|c| c[0].0 == "a"))
    });
    // (An offer a made before its daemon read b's draining heartbeat is refused and
    // taken back: either way the task ends up waiting on a.)
    wait_for("the task for b's session to wait on a", T, || {
        live_on(&a, "a", "pending") == ["pinned"]
    });
    sync.wait_in_sync();
    assert!(!finals(&a).contains_key("pinned"));
    assert_eq!(live_on(&a, "a", "pending"), ["pinned"]);
    // Undrained: b takes its session's task.
    for env in [&ea, &eb] {
        assert!(env.ok(&["node", "undrain", "b"]).contains("b: takes work"));
    }
    wait_for("the pinned task to run on b", T, || {
        finals(&a)
            .get("pinned")
            .is_some_and(|c| c == &[("b".to_string(), "done".to_string())])
    });
    // An unknown node is refused, and the file is left as it was.
    let before = std::fs::read_to_string(ea.config.join("nodes.toml")).unwrap();
    let out = ea.cli(&["node", "drain", "zeta"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [[node]] named \"zeta\""));
    assert_eq!(
        std::fs::read_to_string(ea.config.join("nodes.toml")).unwrap(),
        before
    );
}

#[test]
fn tasks_naming_one_branch_all_run_on_the_lock_home_and_never_at_once() {
    let (ea, eb) = (node_env("a"), node_env("b"));
    let (a, b) = (ea.spool.clone(), eb.spool.clone());
    let sync = RsyncLoop::start(&a, "a", &b, "b");
    let _da = ea.daemon();
    let _db = eb.daemon();
    let ids: Vec<String> = (0..12).map(|i| format!("br{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let env = if i % 2 == 0 { &ea } else { &eb };
        env.drop_task(
            &format!("{id}.json"),
            &format!(
                r#"{{"id": "{id}", "prompt": "sleep 0.1; echo {id}", "locks": {{"branch": "feature/x"}}}}"#
            ),
        );
    }
    wait_for("every branch task to finish", T, || {
        let f = finals(&a);
        ids.iter().all(|id| f.contains_key(id))
    });
    sync.wait_in_sync();
    let f = finals(&a);
    let homes: std::collections::BTreeSet<&str> =
        ids.iter().map(|id| f[id][0].0.as_str()).collect();
    assert_eq!(homes.len(), 1, "all on one node: {f:?}");
    // From both nodes' logs: each acquisition of the branch ends before the next begins.
    let mut spans: Vec<(chrono::DateTime<chrono::Utc>, i32)> = Vec::new();
    for node in ["a", "b"] {
        for e in architect::log::read_events(&a.join("nodes").join(node).join("log")).unwrap() {
            match e.kind() {
                "lock_acquired" => spans.push((e.ts, 1)),
                "lock_released" => spans.push((e.ts, -1)),
                _ => {}
            }
        }
    }
    spans.sort();
    let (mut held, mut most) = (0, 0);
    for (_, d) in &spans {
        held += d;
        most = most.max(held);
    }
    assert_eq!(spans.len(), 2 * ids.len(), "{spans:?}");
    assert_eq!(most, 1, "the branch was held twice at once: {spans:?}");
}
