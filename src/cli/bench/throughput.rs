//! The default measurements of `architect bench`: dispatch latency, throughput and queue
//! add cost, through a fleet of fake agents.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use chrono::{DateTime, Utc};

use architect::log::event::{PromptSent, TaskQueued};
use architect::log::{read_events, Event};
use architect::spool::Spool;

use super::BenchArgs;
use crate::cli::harness::{count, start_fleet, summary, wait_until};

/// Writes a task file with a plain open/write/close and returns when it was closed.
fn drop_task(inbox: &Path, id: &str, body: &str) -> Result<SystemTime> {
    std::fs::write(inbox.join(format!("{id}.json")), body)?;
    Ok(SystemTime::now())
}

/// For each task, the time `at` reads off its events (the last one that has one).
fn event_times(
    spool: &Spool,
    at: impl Fn(&Event) -> Option<DateTime<Utc>>,
) -> Result<HashMap<String, DateTime<Utc>>> {
    let mut out = HashMap::new();
    for e in read_events(&spool.dir("log"))? {
        let Some(id) = e.task_id.clone() else {
            continue;
        };
        if let Some(ts) = at(&e) {
            out.insert(id, ts);
        }
    }
    Ok(out)
}

fn ms_between(closed: SystemTime, at: DateTime<Utc>) -> f64 {
    let closed: DateTime<Utc> = closed.into();
    #[allow(clippy::cast_precision_loss)]
    let us = (at - closed).num_microseconds().unwrap_or(i64::MAX) as f64;
    us / 1000.0
}

pub(super) fn run(a: &BenchArgs, root: &Path) -> Result<ExitCode> {
    let host = architect::config::default_node_name();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "architect bench: {} fake agents, {} on {host} ({cores} cores), build profile {}",
        a.agents,
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        if cfg!(debug_assertions) {
            "dev (opt-level 1)"
        } else {
            "release"
        }
    );
    let t = Instant::now();
    let (spool, _config, _daemon) = start_fleet(root, a.agents, 0)?;
    println!(
        "  {} agents idle after {:.1} s",
        a.agents,
        t.elapsed().as_secs_f64()
    );

    // 1. Dispatch latency, one task at a time onto idle agents.
    let inbox = spool.inbox();
    let done_dir = spool.dir("done");
    let mut closed = HashMap::new();
    for i in 0..a.samples {
        let id = format!("lat-{i:05}");
        let before = count(&done_dir);
        closed.insert(
            id.clone(),
            drop_task(
                &inbox,
                &id,
                &format!(r#"{{"id":"{id}","prompt":"latency probe {i}"}}"#),
            )?,
        );
        wait_until("a latency probe to finish", Duration::from_secs(30), || {
            count(&done_dir) > before
        })?;
    }
    let sent = event_times(&spool, |e| Some(e.payload::<PromptSent>()?.written_at))?;
    let lat: Vec<f64> = closed
        .iter()
        .filter_map(|(id, c)| sent.get(id).map(|t| ms_between(*c, *t)))
        .collect();
    let (lat50, lat99) = summary(lat);
    println!(
        "  dispatch latency, inbox close → prompt's first byte ({} samples): p50 {lat50:.2} ms, p99 {lat99:.2} ms  (targets ≤ 5 / ≤ 25 ms)",
        a.samples
    );

    // 2. Throughput.
    let before = count(&done_dir);
    let start = Instant::now();
    let tasks = a.tasks.unwrap_or(10_000);
    for i in 0..tasks {
        let id = format!("tp-{i:06}");
        std::fs::write(
            inbox.join(format!("{id}.json")),
            format!(r#"{{"id":"{id}","prompt":"task {i}"}}"#),
        )?;
    }
    let written = start.elapsed();
    wait_until(
        "the throughput tasks to finish",
        Duration::from_secs(1800),
        || count(&done_dir) >= before + tasks,
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = tasks as f64 / elapsed;
    println!(
        "  throughput: {} tasks through {} agents in {elapsed:.2} s = {rate:.0} tasks/s (writing the files took {:.2} s; target ≥ 1000/s)",
        tasks,
        a.agents,
        written.as_secs_f64()
    );
    let failed = count(&spool.dir("failed"));
    if failed > 0 {
        println!("  warning: {failed} task(s) failed");
    }

    // 3. Queue add cost at two depths.
    let pending = spool.dir("pending");
    let parked = |i: usize, tag: &str| {
        format!(r#"{{"id":"{tag}-{i:06}","prompt":"parked","session":"nobody"}}"#)
    };
    let add_cost = |tag: &str, samples: usize| -> Result<(f64, f64)> {
        let mut closed = HashMap::new();
        for i in 0..samples {
            let id = format!("{tag}-{i:06}");
            closed.insert(id.clone(), drop_task(&inbox, &id, &parked(i, tag))?);
            let p = pending.join(format!("{id}.json"));
            wait_until(
                "a parked task to be queued",
                Duration::from_secs(30),
                || p.exists(),
            )?;
        }
        std::thread::sleep(Duration::from_millis(50));
        let queued = event_times(&spool, |e| e.payload::<TaskQueued>().map(|_| e.ts))?;
        Ok(summary(
            closed
                .iter()
                .filter_map(|(id, c)| queued.get(id).map(|t| ms_between(*c, *t)))
                .collect(),
        ))
    };
    let mut depth_figures = None;
    if a.queue_depth > 0 {
        for i in 0..100 {
            std::fs::write(inbox.join(format!("fill-{i:06}.json")), parked(i, "fill"))?;
        }
        wait_until("100 parked tasks", Duration::from_secs(60), || {
            count(&pending) >= 100
        })?;
        let small = add_cost("small", a.samples)?;
        let t = Instant::now();
        for i in 100..a.queue_depth {
            std::fs::write(inbox.join(format!("fill-{i:06}.json")), parked(i, "fill"))?;
        }
        let target = a.queue_depth + a.samples;
        wait_until("the deep queue", Duration::from_secs(3600), || {
            count(&pending) >= target
        })?;
        println!(
            "  queued {} more tasks in {:.1} s",
            a.queue_depth - 100,
            t.elapsed().as_secs_f64()
        );
        let big = add_cost("big", a.samples)?;
        println!(
            "  queue add cost, inbox close → queued: with 100 queued p50 {:.2} ms p99 {:.2} ms; with {} queued p50 {:.2} ms p99 {:.2} ms",
            small.0, small.1, a.queue_depth, big.0, big.1
        );
        depth_figures = Some((small, big));
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "agents": a.agents, "host": host, "cores": cores,
                "latency_ms": {"p50": lat50, "p99": lat99, "samples": a.samples},
                "throughput": {"tasks": tasks, "seconds": elapsed, "tasks_per_s": rate},
                "queue_add_ms": depth_figures.map(|(s, b)| serde_json::json!({
                    "depth_100": {"p50": s.0, "p99": s.1},
                    "depth": a.queue_depth, "depth_n": {"p50": b.0, "p99": b.1}})),
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
