//! `architect bench --memory`: the daemon's memory with a queue of large tasks.
//!
//! A daemon with no session (so nothing is dispatched) takes in `--tasks` task files
//! (default 150) of `--task-mib` MiB each (default 4, the largest the inbox accepts),
//! dropped one after another; then it is stopped and started again, and recovers the
//! same queue from `pending/`. Prints the daemon's resident memory (`VmRSS`) and its
//! peak (`VmHWM`, from `/proc/<pid>/status`) idle, after intake and after recovery, and
//! the bytes the event log grew by. The figures are printed, never asserted.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use architect::durable;
use architect::spool::{Spool, MAX_TASK_BYTES};

use crate::cli::harness::{count, spawn_daemon, wait_until, Daemon};

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Ok((
        field("VmRSS:").context("no VmRSS")?,
        field("VmHWM:").context("no VmHWM")?,
    ))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Events of `kind` in the log (a substring count: cheap, and exact for these names).
fn events(spool: &Spool, kind: &str) -> usize {
    let needle = format!("\"type\":\"{kind}\"");
    std::fs::read_dir(spool.dir("log")).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|t| t.matches(&needle).count())
            .sum()
    })
}

#[allow(clippy::cast_precision_loss)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the measurement in `root` (`tasks` files of `task_mib` MiB).
pub(super) fn run(tasks: usize, task_mib: usize, root: &Path, json: bool) -> Result<ExitCode> {
    let spool = Spool::new(root.join("spool"));
    let config = root.join("config");
    spool.init()?;
    durable::create_dir(&config)?;
    durable::write_atomic(&config.join("sessions.toml"), b"")?;
    durable::write_atomic(
        &config.join("architect.toml"),
        b"[node]\nname = \"bench\"\n",
    )?;
    let bytes = (task_mib * 1024 * 1024).min(usize::try_from(MAX_TASK_BYTES)?);
    println!(
        "architect bench --memory: {tasks} queued tasks of {:.1} MiB, no session (nothing dispatched)",
        mib(bytes as u64 / 1024)
    );
    let started = Instant::now();
    let daemon = Daemon(spawn_daemon(&spool, &config, &root.join("daemon.log"))?);
    let pid = daemon.0.id();
    wait_until("the daemon to start", Duration::from_secs(60), || {
        events(&spool, "daemon_started") >= 1
    })?;
    let idle = rss_kib(pid)?;
    let log_before = dir_bytes(&spool.dir("log"));

    // Each file: {"id": "big-NNNN", "prompt": "<filler>"} of up to `bytes` bytes. A
    // prompt may hold 1 Mi characters (the task schema's maxLength): 4-byte characters
    // make a 4 MiB file, and a 4 MiB string in memory.
    let t = Instant::now();
    for i in 0..tasks {
        let head = format!("{{\"id\": \"big-{i:04}\", \"prompt\": \"");
        let chars = (bytes.saturating_sub(head.len() + 2) / 4).min(1024 * 1024);
        let mut body = Vec::with_capacity(bytes);
        body.extend_from_slice(head.as_bytes());
        for _ in 0..chars {
            body.extend_from_slice("\u{1D465}".as_bytes());
        }
        body.extend_from_slice(b"\"}");
        let tmp = spool.inbox().join(format!(".big-{i:04}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        drop(f);
        std::fs::rename(&tmp, spool.inbox().join(format!("big-{i:04}.json")))?;
        if i % 25 == 24 {
            eprint!("\r  dropped {}/{tasks}", i + 1);
        }
    }
    wait_until("every task to be queued", Duration::from_secs(600), || {
        count(&spool.dir("pending")) >= tasks && count(&spool.inbox()) == 0
            || count(&spool.dir("rejected")) > 0
    })?;
    if count(&spool.dir("rejected")) > 0 {
        anyhow::bail!(
            "the daemon rejected a task file; see {}",
            spool.dir("rejected").display()
        );
    }
    eprintln!();
    // The last batch is carried out after the last file is queued.
    std::thread::sleep(Duration::from_millis(500));
    let intake_s = t.elapsed().as_secs_f64();
    let queued = rss_kib(pid)?;
    let log_growth = dir_bytes(&spool.dir("log")) - log_before;
    drop(daemon);

    let t = Instant::now();
    let daemon = Daemon(spawn_daemon(&spool, &config, &root.join("daemon-2.log"))?);
    let pid = daemon.0.id();
    wait_until(
        "the restarted daemon to recover the queue",
        Duration::from_secs(600),
        || events(&spool, "daemon_started") >= 2,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let recover_s = t.elapsed().as_secs_f64();
    let recovered = rss_kib(pid)?;
    drop(daemon);

    let row = |what: &str, (rss, hwm): (u64, u64)| {
        println!(
            "  {what:<28} RSS {:>7.1} MiB   peak {:>7.1} MiB",
            mib(rss),
            mib(hwm)
        );
    };
    row("idle", idle);
    row(&format!("{tasks} tasks queued ({intake_s:.1} s)"), queued);
    row(
        &format!("restarted, recovered ({recover_s:.1} s)"),
        recovered,
    );
    println!(
        "  event log grew by {:.1} KiB",
        mib(log_growth / 1024) * 1024.0
    );
    println!("  total {:.1} s", started.elapsed().as_secs_f64());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "tasks": tasks, "task_bytes": bytes,
                "idle_rss_kib": idle.0, "idle_peak_kib": idle.1,
                "queued_rss_kib": queued.0, "queued_peak_kib": queued.1,
                "recovered_rss_kib": recovered.0, "recovered_peak_kib": recovered.1,
                "log_growth_bytes": log_growth,
            })
        );
    }
    Ok(ExitCode::SUCCESS)
}
