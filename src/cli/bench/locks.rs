//! The lock part of `architect bench`:
//! 1. round trip: [`LockTable::try_acquire`] + release of one path, in process (the cost
//!    the scheduler pays per locked task, holder file included);
//! 2. contention: `--lock-tasks` tasks, each locking one of `--lock-paths` paths, through
//!    `--lock-agents` fake agents; the log is then checked with
//!    [`architect::locks::verify_exclusion`] (no two holders of one path at any instant)
//!    and every task must finish (no deadlock);
//! 3. holder killed: a task waits for a lock held by `architect lock acquire`, the holder
//!    is `kill -9`ed, and the time until the task takes the lock is measured.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;

use architect::durable;
use architect::locks::{verify_exclusion, HolderKind, LockTable, Requester, Resource};
use architect::log::event::{LockAcquired, LockWaiting};
use architect::log::read_events;

use super::BenchArgs;
use crate::cli::harness::{count, start_fleet, summary, wait_until};

/// Runs the three lock measurements in `root` (created here).
pub(super) fn run(a: &BenchArgs, root: &Path) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    durable::create_dir(root)?;
    // 1. Round trip, in process.
    let table = LockTable::new(root.join("roundtrip-locks"));
    let who = Requester {
        by: HolderKind::Daemon,
        task: Some("bench".into()),
        session: Some("bench".into()),
        node: "bench".into(),
        note: None,
    };
    let resource = [Resource::Path("src/db.rs".into())];
    let mut trips = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let t = Instant::now();
        let held = table
            .try_acquire(&resource, &who)?
            .map_err(|c| anyhow::anyhow!("unexpected conflict: {c}"))?;
        held.release();
        trips.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (rt50, rt99) = summary(trips);
    println!(
        "  lock acquire + release round trip (path with 2 ancestors, holder file written), 10000 samples: p50 {rt50:.1} µs, p99 {rt99:.1} µs  (target p50 ≤ 100 µs)"
    );

    // 2. Contention through the daemon.
    let (spool, config, _daemon) = start_fleet(root, a.lock_agents, 2)?;
    let inbox = spool.inbox();
    let done = spool.dir("done");
    let paths = a.lock_paths.max(1);
    let start = Instant::now();
    for i in 0..a.lock_tasks {
        let id = format!("lk-{i:06}");
        std::fs::write(
            inbox.join(format!("{id}.json")),
            format!(
                r#"{{"id":"{id}","prompt":"locked {i}","locks":{{"paths":["src/file-{}.rs"]}}}}"#,
                i % paths
            ),
        )?;
    }
    wait_until(
        "the contending tasks to finish (a deadlock would stop here)",
        Duration::from_secs(1800),
        || count(&done) + count(&spool.dir("failed")) >= a.lock_tasks,
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    let failed = count(&spool.dir("failed"));
    let events = read_events(&spool.dir("log"))?;
    let checked = verify_exclusion(&events).map_err(|e| anyhow::anyhow!("{e}"))?;
    let waits = events
        .iter()
        .filter(|e| e.payload::<LockWaiting>().is_some())
        .count();
    #[allow(clippy::cast_precision_loss)]
    let rate = a.lock_tasks as f64 / elapsed;
    println!(
        "  lock contention: {} tasks on {paths} paths through {} agents in {elapsed:.2} s ({rate:.0} tasks/s), {failed} failed, {waits} waits; the log shows {checked} acquisitions and never two holders of one path",
        a.lock_tasks, a.lock_agents
    );
    if failed > 0 || checked != a.lock_tasks {
        bail!(
            "lock contention run: {failed} failed, {checked} of {} acquisitions logged",
            a.lock_tasks
        );
    }

    // 3. A task waiting for a lock whose holder is kill -9'ed.
    let probes = a.samples.clamp(1, 20);
    let mut delays = Vec::with_capacity(probes);
    for i in 0..probes {
        let resource = format!("held/probe-{i}.rs");
        let mut holder = Command::new(&exe)
            .arg("--spool")
            .arg(spool.root())
            .arg("--config")
            .arg(&config)
            .args(["lock", "acquire", "--json", &resource])
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting architect lock acquire")?;
        let mut line = String::new();
        BufReader::new(holder.stdout.take().context("holder stdout")?).read_line(&mut line)?;
        if !line.contains("\"held\"") {
            bail!("architect lock acquire did not take {resource}: {line}");
        }
        let id = format!("kill-{i:03}");
        std::fs::write(
            inbox.join(format!("{id}.json")),
            format!(r#"{{"id":"{id}","prompt":"after kill","locks":{{"paths":["{resource}"]}}}}"#),
        )?;
        let log_dir = spool.dir("log");
        wait_until(
            "the probe to wait for its lock",
            Duration::from_secs(30),
            || {
                read_events(&log_dir).is_ok_and(|ev| {
                    ev.iter().any(|e| {
                        e.payload::<LockWaiting>().is_some() && e.task_id.as_deref() == Some(&id)
                    })
                })
            },
        )?;
        let killed = Utc::now();
        holder.kill()?;
        holder.wait()?;
        wait_until(
            "the probe to take its lock",
            Duration::from_secs(30),
            || {
                read_events(&log_dir).is_ok_and(|ev| {
                    ev.iter().any(|e| {
                        e.payload::<LockAcquired>().is_some() && e.task_id.as_deref() == Some(&id)
                    })
                })
            },
        )?;
        let acquired = read_events(&log_dir)?
            .into_iter()
            .find(|e| e.payload::<LockAcquired>().is_some() && e.task_id.as_deref() == Some(&id))
            .map(|e| e.ts)
            .context("lock_acquired")?;
        #[allow(clippy::cast_precision_loss)]
        delays.push((acquired - killed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
    }
    let max = delays.iter().copied().fold(0.0, f64::max);
    let (k50, _) = summary(delays);
    println!(
        "  lock holder kill -9 → waiting task takes the lock ({probes} probes): p50 {k50:.0} ms, max {max:.0} ms  (target < 1000 ms)"
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "lock_round_trip_us": {"p50": rt50, "p99": rt99},
                "lock_contention": {"tasks": a.lock_tasks, "paths": paths, "agents": a.lock_agents,
                    "seconds": elapsed, "acquisitions_checked": checked, "waits": waits},
                "lock_holder_killed_ms": {"p50": k50, "max": max, "probes": probes},
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
