//! `architect bench`: measures the coordinator with fake agents and prints figures.
//!
//! Everything runs for real: the daemon is this binary in a child process, each agent is
//! `architect fake-agent` in its own PTY, and tasks are plain files written into the
//! inbox. Three measurements:
//! 1. dispatch latency: a task file closed in `inbox/` → the prompt's first byte written
//!    to an idle agent's terminal (`prompt_sent.data.written_at`), one task at a time;
//! 2. throughput: `--tasks` task files dropped at once, run through `--agents` agents;
//! 3. queue add cost: inbox close → `task_queued`, with 100 and with `--queue-depth`
//!    tasks already queued (tasks for a session that does not exist, so they stay queued);
//! 4. locks ([`super::bench_locks`]): acquire/release round trip, `--lock-tasks` tasks
//!    contending for `--lock-paths` paths through `--lock-agents` agents (exclusion
//!    checked from the log), and how soon a task starts after its lock holder is killed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use architect::durable;
use architect::log::event::{PromptSent, TaskQueued};
use architect::log::{read_events, Event};
use architect::session::SessionFile;
use architect::spool::Spool;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Fake agents (sessions).
    #[arg(long, default_value_t = 50)]
    pub(super) agents: usize,
    /// Tasks for the throughput run (default 10,000); with --fidelity, tasks per CLI
    /// (default 30).
    #[arg(long)]
    tasks: Option<usize>,
    /// Measure delivery fidelity with the real agent CLIs instead (comma-separated:
    /// claude, codex, gemini): each prompt carries a unique token its reply must echo;
    /// prints delivered-once, right replies, duplicates, lost and the overhead from the
    /// agent's turn end to the record in done/ (p50/p99). Exits 1 unless every task got
    /// its right reply exactly once.
    #[arg(long, value_name = "CLIS")]
    fidelity: Option<String>,
    /// With --fidelity: sessions per CLI.
    #[arg(long, default_value_t = 2)]
    sessions: usize,
    /// With --fidelity: a slow model (0.05 s before each streamed event, up to 1 s more
    /// per request), so busy screens stay up; default: it answers at once.
    #[arg(long)]
    slow: bool,
    /// Measure the daemon's memory instead: --tasks (default 150) task files of
    /// --task-mib MiB queued with no session, then recovered after a restart; prints
    /// resident memory and its peak at each step.
    #[arg(long)]
    memory: bool,
    /// With --memory: the size of each task file, MiB (at most the 4 MiB the inbox takes).
    #[arg(long, default_value_t = 4)]
    task_mib: usize,
    /// Latency samples (one task at a time; also the kill -9 probes of the lock run).
    #[arg(long, default_value_t = 200)]
    pub(super) samples: usize,
    /// Tasks queued for the second queue-add measurement (0 skips the measurement).
    #[arg(long, default_value_t = 100_000)]
    queue_depth: usize,
    /// Work directory (default: a new temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the figures as JSON too.
    #[arg(long)]
    pub(super) json: bool,
    /// Fake agents for the lock contention run.
    #[arg(long, default_value_t = 20)]
    pub(super) lock_agents: usize,
    /// Tasks for the lock contention run (0 skips the lock measurements).
    #[arg(long, default_value_t = 1000)]
    pub(super) lock_tasks: usize,
    /// Distinct paths those tasks contend for.
    #[arg(long, default_value_t = 10)]
    pub(super) lock_paths: usize,
    /// LLM requests through the provider routing against tools/mock-llm, one at a time
    /// and then all at once (0 skips the LLM measurements).
    #[arg(long, default_value_t = 1000)]
    pub(super) llm_calls: usize,
}

pub(super) struct Daemon(pub(super) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child.
        unsafe {
            libc::kill(i32::try_from(self.0.id()).unwrap_or(0), libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// `tools/mock-llm` on a free loopback port (killed on drop).
pub(super) struct MockServer {
    child: Child,
    /// Its port.
    pub(super) port: u16,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mock model server's script in this checkout, if there is one.
pub(super) fn mock_script() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mock-llm/mock_llm.py");
    p.exists().then_some(p)
}

/// Starts the mock model server with `args` (after `--port 0`).
pub(super) fn start_mock(server: &Path, args: &[&std::ffi::OsStr]) -> Result<MockServer> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("python3")
        .arg(server)
        .args(["--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the mock model server (python3)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("mock stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the mock model server did not start: {line:?}");
    };
    Ok(MockServer { child, port })
}

/// `architect daemon` (this executable) on `spool` and `config`, its tracing (`-v`) in
/// `log`, output discarded.
pub(super) fn spawn_daemon(spool: &Spool, config: &Path, log: &Path) -> Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(&exe)
        .arg("--spool")
        .arg(spool.root())
        .arg("--config")
        .arg(config)
        .args(["daemon", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting `architect daemon`")
}

/// How many sessions of a spool are idle (their `sessions/*.json`).
pub(super) fn idle_sessions(spool: &Spool) -> usize {
    std::fs::read_dir(spool.dir("sessions")).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<SessionFile>(&b).ok())
            .filter(|s| s.state == architect::session::SessionState::Idle)
            .count()
    })
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(super) fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

pub(super) fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

pub(super) fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting for {what}", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

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

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let temp = a.dir.is_none();
    let root = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("architect-bench-{}", ulid::Ulid::new()))
    });
    if a.memory {
        let r = super::bench_memory::run(a.tasks.unwrap_or(150), a.task_mib, &root, a.json);
        if temp {
            let _ = std::fs::remove_dir_all(&root);
        }
        return r;
    }
    if let Some(list) = &a.fidelity {
        let r = super::bench_fidelity::run(
            list,
            a.tasks.unwrap_or(30),
            a.sessions,
            a.slow,
            &root,
            a.json,
        );
        if temp {
            let _ = std::fs::remove_dir_all(&root);
        }
        return r;
    }
    let mut result = bench(&a, &root);
    if result.is_ok() && a.lock_tasks > 0 {
        result = super::bench_locks::run(&a, &root.join("locks-bench"));
    }
    if result.is_ok() && a.llm_calls > 0 {
        result = super::bench_llm::run(&a, &root.join("llm-bench")).map(|()| ExitCode::SUCCESS);
    }
    if temp {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

/// A spool and config in `root` with `agents` fake agents (`--work-ms work_ms`), and a
/// daemon running them (stopped on drop). Returns the spool, the config directory and
/// the daemon.
pub(super) fn start_fleet(
    root: &Path,
    agents: usize,
    work_ms: u64,
) -> Result<(Spool, PathBuf, Daemon)> {
    let exe = std::env::current_exe()?;
    let spool = Spool::new(root.join("spool"));
    let config = root.join("config");
    spool.init()?;
    durable::create_dir(&config)?;
    let mut sessions = String::new();
    for i in 0..agents {
        sessions.push_str(&format!(
            "[[session]]\nname = \"agent-{i:03}\"\nprofile = \"fake-agent\"\ncommand = \"{}\"\nargs = [\"fake-agent\", \"--work-ms\", \"{work_ms}\"]\n\n",
            exe.display()
        ));
    }
    durable::write_atomic(&config.join("sessions.toml"), sessions.as_bytes())?;
    durable::write_atomic(
        &config.join("architect.toml"),
        b"[node]\nname = \"bench\"\n",
    )?;
    let daemon = Daemon(spawn_daemon(&spool, &config, &root.join("daemon.log"))?);
    wait_until("every agent to be idle", Duration::from_secs(120), || {
        idle_sessions(&spool) == agents
    })?;
    Ok((spool, config, daemon))
}

fn bench(a: &BenchArgs, root: &Path) -> Result<ExitCode> {
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
