//! The fleet benchmark (issue 11 item 9): on demand, printed, never timed against a bar.
//!
//! ```sh
//! cargo test --test tests fleet::bench -- --ignored --nocapture
//! ```
//!
//! 1. **Hand-off latency**: a task file closed in node a's inbox (a dot temp renamed into
//!    place; the time is taken right after the rename) → its prompt's first byte on a
//!    session of node b (`prompt_sent.data.written_at` in b's log: one machine, one wall
//!    clock). One task at a time, the next once the previous is done, after a pause
//!    spread over one heartbeat period. Configurations: one node (no `nodes.toml`, the
//!    task names a local session: the baseline); two nodes on the rsync loop and on
//!    loopback Syncthing, the task dropped at a naming b's session. Besides the total,
//!    the stages as the two logs time them: close → a's `task_handoff offered` → b's
//!    `task_handoff accepted` → the prompt on b.
//! 2. **Throughput**: cheap shell tasks (`true`, no session named) from the first file
//!    dropped to the last `task_completed`, on one node (4 and 8 sessions) and on two
//!    nodes over Syncthing (2+2 and 4+4 sessions, dropped into a's inbox only or spread
//!    over both), and where they ran.
//!
//! Asserted (correctness only): every task finishes exactly once — one final record, in
//! `done/`, across `nodes/*/`, in each spool's view once the syncer settled — unless a
//! live node was presumed dead (an adoption: no node is stopped here), the one case where
//! the design lets a task run twice; then the tasks done twice are printed with the
//! figure. Also printed when they happen: adoptions, offers taken back, tasks prompted
//! twice, `duplicate_run` events, and the daemons' WARN/ERROR lines.
//!
//! Knobs (environment): `FLEET_BENCH_SAMPLES` (latency samples, 100),
//! `FLEET_BENCH_ST_SAMPLES` (latency samples over Syncthing, 50),
//! `FLEET_BENCH_TASKS` (throughput tasks, 2000), `FLEET_BENCH_ONLY` (a comma list of
//! figures to run: `latency`, `throughput`; both by default).
//!
//! Timings: each fleet is labelled with its `heartbeat_ms`/`lease_s` — the short 250 ms /
//! 5 s, or `nodes.toml`'s defaults 2000 ms / 30 s (a daemon runs its hand-offs once per
//! heartbeat) — and runs the test daemon timings of [`FAST`] (`inbox_settle_ms = 200`:
//! a file renamed into the inbox is taken in at once; only plain writes wait to settle).
//! Syncthing scans a path rewritten more often than every `fsWatcherDelayS / 2` (0.5 s
//! here) only after `6 × fsWatcherDelayS`: a heartbeat of 250 ms crosses every ~6 s, so a
//! 5 s lease presumes live nodes dead (BENCHMARKS.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};

use architect::log::event::{PromptSent, TaskCompleted, TaskHandoff};
use architect::log::{read_events, Event};

use super::two_nodes::alive_in_view;
use crate::helper::sync::{RsyncLoop, SyncthingPair};
use crate::helper::{wait_for, Daemon, Env, FAST};

/// A fleet's `heartbeat_ms` and `lease_s`.
#[derive(Clone, Copy, Debug)]
struct Timings {
    heartbeat_ms: u64,
    lease_s: u64,
}

/// Short: what the brief of issue 11 item 9 asked for, and what `tests/fleet` uses.
const SHORT: Timings = Timings {
    heartbeat_ms: 250,
    lease_s: 5,
};
/// `nodes.toml`'s defaults.
const DEFAULTS: Timings = Timings {
    heartbeat_ms: 2000,
    lease_s: 30,
};
const NODES: [&str; 2] = ["a", "b"];
/// How long one latency sample or the whole throughput run may take before it is a bug.
const SAMPLE_LIMIT: Duration = Duration::from_secs(60);
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(figure: &str) -> bool {
    std::env::var("FLEET_BENCH_ONLY").map_or(true, |v| v.split(',').any(|f| f.trim() == figure))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    /// One node, a single-node spool (no `nodes.toml`).
    Single,
    Syncthing,
    Rsync,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::Single => "1 node",
            Engine::Syncthing => "2 nodes, Syncthing",
            Engine::Rsync => "2 nodes, rsync loop",
        }
    }

    /// The label with the timings, for a fleet.
    fn with(self, t: Timings) -> String {
        if self == Engine::Single {
            self.label().into()
        } else {
            format!(
                "{}, hb {} ms/lease {} s",
                self.label(),
                t.heartbeat_ms,
                t.lease_s
            )
        }
    }
}

/// The engine that keeps the two spools in sync, stopped on drop.
enum Sync {
    None,
    Syncthing(Box<SyncthingPair>),
    Rsync(RsyncLoop),
}

impl Sync {
    fn settle(&self) {
        match self {
            Sync::None => {}
            Sync::Syncthing(p) => p.wait_in_sync(Duration::from_secs(180)),
            Sync::Rsync(r) => r.wait_in_sync(),
        }
    }
}

/// One configuration running: a daemon per node, the syncer, the spools. (Fields drop in
/// order: daemons first, then the syncer, then the directories.)
struct Fleet {
    daemons: Vec<Daemon>,
    sync: Sync,
    envs: Vec<Env>,
    engine: Engine,
    /// Sessions per node.
    per_node: Vec<usize>,
}

fn sessions_toml(per_node: &[usize], fleet: bool) -> String {
    let mut s = String::new();
    for (node, n) in NODES.iter().zip(per_node) {
        for i in 1..=*n {
            write!(
                s,
                "[[session]]\nname = \"{node}-{i}\"\nprofile = \"shell\"\n"
            )
            .unwrap();
            if fleet {
                writeln!(s, "node = \"{node}\"").unwrap();
            }
        }
    }
    s
}

impl Fleet {
    fn start(engine: Engine, timings: Timings, per_node: &[usize]) -> Self {
        let fleet = engine != Engine::Single;
        let per_node = if fleet { per_node } else { &per_node[..1] };
        let sessions = sessions_toml(per_node, fleet);
        let envs: Vec<Env> = NODES[..per_node.len()]
            .iter()
            .map(|name| {
                let env = Env::new(&sessions);
                env.write_config(
                    "architect.toml",
                    &FAST.replace("name = \"test\"", &format!("name = \"{name}\"")),
                );
                if fleet {
                    env.write_config(
                        "nodes.toml",
                        &format!(
                            "lease_s = {}\nheartbeat_ms = {}\n\
                             [[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n",
                            timings.lease_s, timings.heartbeat_ms
                        ),
                    );
                }
                env
            })
            .collect();
        let sync = match engine {
            Engine::Single => Sync::None,
            Engine::Syncthing => Sync::Syncthing(Box::new(SyncthingPair::start(
                &envs[0].spool,
                &envs[1].spool,
            ))),
            Engine::Rsync => {
                Sync::Rsync(RsyncLoop::start(&envs[0].spool, "a", &envs[1].spool, "b"))
            }
        };
        let daemons = envs.iter().map(Env::daemon).collect();
        let f = Self {
            daemons,
            sync,
            envs,
            engine,
            per_node: per_node.to_vec(),
        };
        f.wait_ready();
        f
    }

    fn is_fleet(&self) -> bool {
        self.engine != Engine::Single
    }

    /// Node `i`'s state directory as its own spool holds it.
    fn state(&self, i: usize) -> PathBuf {
        self.state_in(i, i)
    }

    /// Node `node`'s state directory in node `spool`'s spool.
    fn state_in(&self, spool: usize, node: usize) -> PathBuf {
        if self.is_fleet() {
            self.envs[spool].spool.join("nodes").join(NODES[node])
        } else {
            self.envs[spool].spool.clone()
        }
    }

    /// Every node idle with all its sessions, and (fleet) each seeing the other alive
    /// with those idle sessions in its heartbeat.
    fn wait_ready(&self) {
        let t = Duration::from_secs(120);
        if !self.is_fleet() {
            for i in 1..=self.per_node[0] {
                self.envs[0].wait_idle(&format!("a-{i}"), t);
            }
            return;
        }
        for (reader, env) in self.envs.iter().enumerate() {
            for (node, n) in NODES.iter().zip(&self.per_node) {
                wait_for(
                    &format!(
                        "node {node} with {n} idle sessions, as {} sees it",
                        NODES[reader]
                    ),
                    t,
                    || {
                        free_in_heartbeat(&env.spool.join("nodes").join(node)) == Some(*n)
                            && (NODES[reader] == *node || alive_in_view(env, node))
                    },
                );
            }
        }
    }

    /// Drops a task into node `i`'s inbox as a dot temp renamed into place; returns the
    /// time right after the rename.
    fn drop_task(&self, i: usize, id: &str, body: &str) -> SystemTime {
        let inbox = self.envs[i].inbox();
        let tmp = inbox.join(format!(".{id}.json.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, inbox.join(format!("{id}.json"))).unwrap();
        SystemTime::now()
    }

    /// Every node's events, from its own log.
    fn events(&self) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        for i in 0..self.envs.len() {
            for e in read_events(&self.state(i).join("log")).unwrap() {
                out.push((i, e));
            }
        }
        out
    }

    /// The final records of every node as spool `spool` sees the fleet: id → [(node, dir)].
    fn finals_in(&self, spool: usize) -> BTreeMap<String, Vec<(usize, &'static str)>> {
        let mut out: BTreeMap<String, Vec<(usize, &'static str)>> = BTreeMap::new();
        for node in 0..self.envs.len() {
            for dir in ["done", "failed", "cancelled"] {
                for id in ids(&self.state_in(spool, node).join(dir)) {
                    out.entry(id).or_default().push((node, dir));
                }
            }
        }
        out
    }

    /// Records in `dir` (e.g. `done`) of each node, in its own spool.
    fn counts(&self, dir: &str) -> Vec<usize> {
        (0..self.envs.len())
            .map(|i| ids(&self.state(i).join(dir)).len())
            .collect()
    }

    /// What to show when something never finished: where each node's tasks are, the
    /// daemons' log tails.
    fn diagnose(&self) -> String {
        let mut s = String::new();
        for (i, env) in self.envs.iter().enumerate() {
            let state = self.state(i);
            write!(s, "node {}: inbox {}", NODES[i], ids(&env.inbox()).len()).unwrap();
            for dir in ["pending", "active", "done", "failed", "offers", "accepted"] {
                write!(s, ", {dir} {}", ids(&state.join(dir)).len()).unwrap();
            }
            s.push('\n');
        }
        for (i, d) in self.daemons.iter().enumerate() {
            let log = d.stderr();
            let lines: Vec<&str> = log.lines().collect();
            writeln!(
                s,
                "--- daemon {} ({}), last lines:\n{}",
                NODES[i],
                d.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            )
            .unwrap();
        }
        s
    }

    /// `ERROR`/`WARN` lines the daemons logged (reported, not hidden).
    fn daemon_complaints(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, d) in self.daemons.iter().enumerate() {
            for l in d.stderr().lines() {
                if l.contains(" ERROR ") || l.contains(" WARN ") {
                    out.push(format!("{}: {l}", NODES[i]));
                }
            }
        }
        out
    }
}

fn ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !n.contains(".sync-conflict-"))
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect()
}

fn free_in_heartbeat(node_dir: &Path) -> Option<usize> {
    let hb: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node_dir.join("heartbeat.json")).ok()?).ok()?;
    let free = hb["free"].as_object()?;
    Some(
        free.values()
            .filter_map(serde_json::Value::as_u64)
            .sum::<u64>() as usize,
    )
}

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let us = (to - from).num_microseconds().unwrap_or(i64::MAX) as f64;
    us / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// `p50 … p99 … max …` of `v` in ms, with a width fit for the figure.
fn spread(v: &[f64]) -> String {
    let v = sorted(v.to_vec());
    let f = |x: f64| {
        if x.abs() < 10.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.0}")
        }
    };
    format!(
        "min {:>6} ms  p50 {:>6} ms  p99 {:>6} ms  max {:>6} ms",
        f(*v.first().unwrap_or(&f64::NAN)),
        f(pct(&v, 50.0)),
        f(pct(&v, 99.0)),
        f(*v.last().unwrap_or(&f64::NAN))
    )
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn machine_facts() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    format!(
        "machine: nproc {}, {cpu}, {mem}, Linux {}; {}; {}; build profile {}\n\
         date: {}\n\
         timings: heartbeat_ms/lease_s as labelled (short {}/{}, nodes.toml defaults {}/{}), \
         inbox_settle_ms = 200; \
         Syncthing fsWatcherDelayS = 1 (tests/helper/sync.rs), rsync loop period 200 ms",
        command_line("nproc", &[]),
        command_line("uname", &["-r"]),
        command_line("syncthing", &["--version"])
            .split(" (")
            .next()
            .unwrap_or("?"),
        command_line("rsync", &["--version"]),
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        SHORT.heartbeat_ms,
        SHORT.lease_s,
        DEFAULTS.heartbeat_ms,
        DEFAULTS.lease_s,
    )
}

/// For each task, the time of the first event that `at` reads a time off, in node
/// `node`'s log (`None`: any node's).
fn times(
    events: &[(usize, Event)],
    node: Option<usize>,
    at: impl Fn(&Event) -> Option<DateTime<Utc>>,
) -> BTreeMap<String, DateTime<Utc>> {
    let mut out = BTreeMap::new();
    for (i, e) in events {
        if node.is_some_and(|n| n != *i) {
            continue;
        }
        if let (Some(id), Some(t)) = (e.task_id.as_ref(), at(e)) {
            out.entry(id.clone()).or_insert(t);
        }
    }
    out
}

fn handoff_at(step: &'static str) -> impl Fn(&Event) -> Option<DateTime<Utc>> {
    move |e: &Event| {
        e.payload::<TaskHandoff>()
            .filter(|h| h.step == step)
            .map(|_| e.ts)
    }
}

/// Task `id`'s events and every event of no task but the nodes' own (adoptions,
/// daemon starts), in time order, for a failure message.
fn story(events: &[(usize, Event)], id: &str) -> String {
    let mut lines: Vec<(DateTime<Utc>, String)> = events
        .iter()
        .filter(|(_, e)| {
            e.task_id.as_deref() == Some(id)
                || (e.task_id.is_none()
                    && !matches!(
                        e.kind(),
                        "session_state" | "session_started" | "config_applied"
                    ))
        })
        .map(|(i, e)| {
            let data = e.body.data().unwrap_or_default();
            (
                e.ts,
                format!("{} {} {} {:?} {data}", e.ts, NODES[*i], e.kind(), e.task_id),
            )
        })
        .collect();
    lines.sort();
    lines
        .into_iter()
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many `prompt_sent` each task got, over every node.
fn prompts(events: &[(usize, Event)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, e) in events {
        if e.payload::<PromptSent>().is_some() {
            if let Some(id) = &e.task_id {
                *out.entry(id.clone()).or_default() += 1;
            }
        }
    }
    out
}

/// The tasks of `ids` that do not have exactly one final record, in `done`, in some
/// spool's view of the fleet (after the syncer settled), described.
fn not_once(fleet: &Fleet, ids: &[String]) -> Vec<String> {
    fleet.sync.settle();
    let mut out = Vec::new();
    for (spool, name) in NODES.iter().enumerate().take(fleet.envs.len()) {
        let f = fleet.finals_in(spool);
        for id in ids {
            let copies = f.get(id).map_or(&[][..], Vec::as_slice);
            if !(copies.len() == 1 && copies[0].1 == "done") {
                let copies: Vec<String> = copies
                    .iter()
                    .map(|(n, d)| format!("{}/{d}", NODES[*n]))
                    .collect();
                out.push(format!(
                    "{id}: final records {copies:?} as {name}'s spool sees the fleet"
                ));
            }
        }
    }
    out
}

/// Asserts every task finished exactly once, unless a live node was presumed dead (an
/// adoption: the one case where the design lets a task run twice, logged as a
/// `duplicate_run`): then what went wrong is reported with the figure.
fn check_once(fleet: &Fleet, ids: &[String], anomalies: &mut Anomalies) {
    let wrong = not_once(fleet, ids);
    assert!(
        wrong.is_empty() || anomalies.adoptions > 0,
        "{} task(s) not finished exactly once, and no node was presumed dead:\n{}\n{}",
        wrong.len(),
        wrong.join("\n"),
        fleet.diagnose()
    );
    anomalies.not_once = wrong;
    // (A duplicate is logged once its node sees the other's record: after the settling.)
    anomalies.duplicates = fleet
        .events()
        .iter()
        .filter(|(_, e)| e.kind() == "duplicate_run")
        .count();
}

/// What a fleet in which no node stops should never show: adoptions (a live node
/// presumed dead), offers taken back, tasks prompted more than once (run twice),
/// duplicate runs logged.
#[derive(Default)]
struct Anomalies {
    adoptions: usize,
    taken_back: usize,
    reprompted: usize,
    duplicates: usize,
    complaints: Vec<String>,
    /// Tasks without exactly one final record (only ever after an adoption).
    not_once: Vec<String>,
}

impl Anomalies {
    fn of(fleet: &Fleet, events: &[(usize, Event)], ids: &[String]) -> Self {
        let count = |kind: &str| events.iter().filter(|(_, e)| e.kind() == kind).count();
        let p = prompts(events);
        Self {
            adoptions: count("node_adopted"),
            taken_back: events
                .iter()
                .filter(|(_, e)| {
                    e.payload::<TaskHandoff>()
                        .is_some_and(|h| h.step == "taken_back")
                })
                .count(),
            reprompted: ids
                .iter()
                .filter(|id| p.get(*id).copied().unwrap_or(0) > 1)
                .count(),
            duplicates: count("duplicate_run"),
            complaints: fleet.daemon_complaints(),
            not_once: Vec::new(),
        }
    }

    /// Nothing, or `; ! …` naming what happened.
    fn note(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.adoptions, "adoptions of a live node"),
            (self.taken_back, "offers taken back"),
            (self.reprompted, "tasks prompted twice or more"),
            (self.duplicates, "duplicate_run events"),
            (self.not_once.len(), "tasks not done exactly once"),
            (self.complaints.len(), "daemon WARN/ERROR lines"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("  ! {}", parts.join(", "))
        }
    }

    fn print_complaints(&self) {
        for c in self.not_once.iter().take(5) {
            println!("  ! {c}");
        }
        for c in self.complaints.iter().take(3) {
            println!("  ! {c}");
        }
    }
}

struct Latency {
    label: String,
    total: Vec<f64>,
    /// intake → offered (a), offered → accepted (b), accepted → prompt (b), for the
    /// tasks that went over by offer and acceptance.
    stages: Option<[Vec<f64>; 3]>,
    anomalies: Anomalies,
}

/// `samples` tasks dropped at a one at a time, each naming session `b-1` (fleet) or
/// `a-1` (single node).
fn latency(engine: Engine, timings: Timings, samples: usize) -> Latency {
    let t = Instant::now();
    let fleet = Fleet::start(engine, timings, &[1, 1]);
    let taker = usize::from(fleet.is_fleet());
    let session = format!("{}-1", NODES[taker]);
    let ready = t.elapsed();
    let run_one = |id: &str| -> SystemTime {
        let body = format!(r#"{{"id": "{id}", "prompt": "true", "session": "{session}"}}"#);
        let closed = fleet.drop_task(0, id, &body);
        let done = fleet.state(taker).join("done").join(format!("{id}.json"));
        let deadline = Instant::now() + SAMPLE_LIMIT;
        while !done.exists() {
            assert!(
                Instant::now() < deadline,
                "{}: task {id} not done on node {} after {SAMPLE_LIMIT:?}\n{}",
                engine.label(),
                NODES[taker],
                fleet.diagnose()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        closed
    };
    // Warm-up (intake's first file compiles the schemas): not measured.
    for w in 0..3 {
        run_one(&format!("warm-{w}"));
    }
    let mut closed = BTreeMap::new();
    for i in 0..samples {
        // A pause spread over one heartbeat period, so that drops do not keep one phase
        // of the heartbeat (b accepts offers once per heartbeat, and each sample starts
        // right after the previous one ran, just after one of b's heartbeats).
        std::thread::sleep(Duration::from_millis(
            (i as u64 * 397) % timings.heartbeat_ms,
        ));
        let id = format!("lat-{i:03}");
        closed.insert(id.clone(), DateTime::<Utc>::from(run_one(&id)));
    }
    let events = fleet.events();
    let sent = times(&events, Some(taker), |e| {
        e.payload::<PromptSent>().map(|p| p.written_at)
    });
    let total: Vec<f64> = closed.iter().map(|(id, c)| ms(*c, sent[id])).collect();
    let stages = fleet.is_fleet().then(|| {
        let offered = times(&events, Some(0), handoff_at("offered"));
        let accepted = times(&events, Some(1), handoff_at("accepted"));
        let mut st: [Vec<f64>; 3] = Default::default();
        let mut told = 0;
        for (id, c) in &closed {
            let (Some(o), Some(a)) = (offered.get(id), accepted.get(id)) else {
                // (Went over otherwise: b adopted a, which had taken its offer back.)
                told += 1;
                if told > 2 {
                    continue;
                }
                eprintln!(
                    "  task {id} was not handed over by offer and acceptance; its events, \
                     and the nodes' own:\n{}",
                    story(&events, id)
                );
                continue;
            };
            st[0].push(ms(*c, *o));
            st[1].push(ms(*o, *a));
            st[2].push(ms(*a, sent[id]));
        }
        st
    });
    let all: Vec<String> = closed
        .keys()
        .cloned()
        .chain((0..3).map(|w| format!("warm-{w}")))
        .collect();
    let mut anomalies = Anomalies::of(&fleet, &events, &all);
    check_once(&fleet, &all, &mut anomalies);
    eprintln!(
        "  ({}: ready in {:.1} s, {samples} samples in {:.1} s)",
        engine.with(timings),
        ready.as_secs_f64(),
        t.elapsed().as_secs_f64() - ready.as_secs_f64()
    );
    Latency {
        label: engine.with(timings),
        total,
        stages,
        anomalies,
    }
}

struct Throughput {
    label: String,
    tasks: usize,
    secs: f64,
    write_secs: f64,
    per_node: Vec<usize>,
    offers: usize,
    anomalies: Anomalies,
}

/// `tasks` cheap tasks naming no session, dropped at a (or alternately at a and b when
/// `spread`), through `per_node` sessions.
fn throughput(
    engine: Engine,
    timings: Timings,
    per_node: &[usize],
    tasks: usize,
    spread: bool,
) -> Throughput {
    let t = Instant::now();
    let fleet = Fleet::start(engine, timings, per_node);
    let inboxes = if spread { fleet.envs.len() } else { 1 };
    // Warm-up: one task through each node's intake (its first file compiles the schemas).
    let warm: Vec<String> = (0..fleet.envs.len()).map(|i| format!("warm-{i}")).collect();
    for (i, id) in warm.iter().enumerate() {
        fleet.drop_task(i, id, &format!(r#"{{"id": "{id}", "prompt": "true"}}"#));
    }
    wait_for("the warm-up tasks", SAMPLE_LIMIT, || {
        fleet.counts("done").iter().sum::<usize>() == warm.len()
    });
    let ready = t.elapsed();
    let ids: Vec<String> = (0..tasks).map(|i| format!("tp-{i:05}")).collect();
    let start = SystemTime::now();
    let t0 = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        fleet.drop_task(
            i % inboxes,
            id,
            &format!(r#"{{"id": "{id}", "prompt": "true"}}"#),
        );
    }
    let write_secs = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let n: usize = fleet.counts("done").iter().sum::<usize>()
            + fleet.counts("failed").iter().sum::<usize>()
            + fleet.counts("cancelled").iter().sum::<usize>();
        if n >= tasks + warm.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {n} of {} tasks final after {RUN_LIMIT:?}\n{}",
            engine.label(),
            tasks + warm.len(),
            fleet.diagnose()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = fleet.events();
    let completed = times(&events, None, |e| {
        e.payload::<TaskCompleted>().map(|_| e.ts)
    });
    let last = ids
        .iter()
        .filter_map(|id| completed.get(id))
        .max()
        .copied()
        .expect("completions in the logs");
    let secs = ms(start.into(), last) / 1000.0;
    let mut ran = vec![0; fleet.envs.len()];
    for (i, e) in &events {
        if e.payload::<TaskCompleted>().is_some()
            && e.task_id.as_ref().is_some_and(|id| id.starts_with("tp-"))
        {
            ran[*i] += 1;
        }
    }
    let offers = events
        .iter()
        .filter(|(_, e)| {
            e.payload::<TaskHandoff>()
                .is_some_and(|h| h.step == "offered")
                && e.task_id.as_ref().is_some_and(|id| id.starts_with("tp-"))
        })
        .count();
    let all: Vec<String> = ids.iter().chain(&warm).cloned().collect();
    let mut anomalies = Anomalies::of(&fleet, &events, &all);
    check_once(&fleet, &all, &mut anomalies);
    let sessions = per_node[..fleet.envs.len()]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("+");
    let label = format!(
        "{}, {sessions} session{}, dropped at {}",
        engine.with(timings),
        if fleet.per_node.iter().sum::<usize>() == 1 {
            ""
        } else {
            "s"
        },
        if spread { "a and b" } else { "a" }
    );
    eprintln!(
        "  ({label}: ready in {:.1} s, run {:.1} s)",
        ready.as_secs_f64(),
        t.elapsed().as_secs_f64() - ready.as_secs_f64()
    );
    Throughput {
        label,
        tasks,
        secs,
        write_secs,
        per_node: ran,
        offers,
        anomalies,
    }
}

#[test]
#[ignore = "a benchmark: run on demand with --ignored --nocapture"]
fn fleet_bench() {
    let samples = knob("FLEET_BENCH_SAMPLES", 100);
    // Syncthing: a sample takes 1–3 s.
    let st_samples = knob("FLEET_BENCH_ST_SAMPLES", 50);
    let tasks = knob("FLEET_BENCH_TASKS", 2000);
    let began = Instant::now();
    println!("fleet bench (cargo test --test tests fleet::bench -- --ignored --nocapture)");
    println!("{}", machine_facts());
    if wanted("latency") {
        println!(
            "hand-off latency: task file closed in a's inbox (dot temp renamed; clock read after \
             the rename) → prompt's first byte on b-1 (prompt_sent.written_at in b's log), \
             one task at a time; 1 node: a's own session a-1"
        );
        let configs = [
            (Engine::Single, SHORT, samples),
            (Engine::Rsync, SHORT, samples),
            (Engine::Syncthing, DEFAULTS, st_samples),
            (Engine::Syncthing, SHORT, st_samples),
        ];
        for (engine, timings, n) in configs {
            let l = latency(engine, timings, n);
            println!(
                "  {:<42} {:>3} samples  {}{}",
                l.label,
                l.total.len(),
                spread(&l.total),
                l.anomalies.note()
            );
            if let Some([o, a, p]) = &l.stages {
                let p50 = |v: &[f64]| pct(&sorted(v.to_vec()), 50.0);
                println!(
                    "  {:<42} stages p50 ({} by offer): close → offered (a) {:.1} ms, \
                     offered → accepted (b) {:.0} ms, accepted → prompt (b) {:.2} ms",
                    "",
                    o.len(),
                    p50(o),
                    p50(a),
                    p50(p)
                );
            }
            l.anomalies.print_complaints();
        }
    }
    if wanted("throughput") {
        println!(
            "throughput: {tasks} tasks {{\"prompt\": \"true\"}} (no session named), first file \
             dropped → last task_completed"
        );
        let runs = [
            (Engine::Single, SHORT, [4, 0], false),
            (Engine::Single, SHORT, [8, 0], false),
            (Engine::Syncthing, DEFAULTS, [2, 2], false),
            (Engine::Syncthing, DEFAULTS, [4, 4], false),
            (Engine::Syncthing, DEFAULTS, [4, 4], true),
            (Engine::Syncthing, SHORT, [4, 4], false),
        ];
        for (engine, timings, per_node, spread) in runs {
            let r = throughput(engine, timings, &per_node, tasks, spread);
            #[allow(clippy::cast_precision_loss)]
            let rate = r.tasks as f64 / r.secs;
            let where_ = r
                .per_node
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{} {n}", NODES[i]))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "  {:<72} {:>6.1} tasks/s  ({} in {:.1} s; ran on {where_}; {} offered; \
                 writing the files {:.2} s){}",
                r.label,
                rate,
                r.tasks,
                r.secs,
                r.offers,
                r.write_secs,
                r.anomalies.note()
            );
            r.anomalies.print_complaints();
        }
    }
    println!(
        "every task done exactly once (one final record, in done/, across nodes/*/ as each \
         spool sees the fleet) unless flagged above; whole run {:.0} s",
        began.elapsed().as_secs_f64()
    );
}
