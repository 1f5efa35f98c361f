//! `architect bench`: measures the coordinator with fake agents and prints figures.
//!
//! Everything runs for real: the daemon is this binary in a child process, each agent is
//! `architect fake-agent` in its own PTY, and tasks are plain files written into the
//! inbox. The measurements of one run (1 to 3 in [`throughput`]):
//! 1. dispatch latency: a task file closed in `inbox/` → the prompt's first byte written
//!    to an idle agent's terminal (`prompt_sent.data.written_at`), one task at a time;
//! 2. throughput: `--tasks` task files dropped at once, run through `--agents` agents;
//! 3. queue add cost: inbox close → `task_queued`, with 100 and with `--queue-depth`
//!    tasks already queued (tasks for a session that does not exist, so they stay queued);
//! 4. locks ([`locks`]): acquire/release round trip, `--lock-tasks` tasks contending for
//!    `--lock-paths` paths through `--lock-agents` agents (exclusion checked from the
//!    log), and how soon a task starts after its lock holder is killed;
//! 5. LLM routing ([`llm`]): routing overhead and concurrency against `tools/mock-llm`.
//!
//! `--memory` ([`memory`]), `--fidelity` ([`fidelity`]) and `--extract` ([`extract`])
//! measure other things instead.
//! The shared harness (child daemons, fake-agent fleets, the mock model server, waiting,
//! percentiles) is [`super::harness`], which the demo uses too.

mod extract;
mod fidelity;
mod llm;
mod locks;
mod memory;
#[path = "../../../tools/agent-clis/offline.rs"]
mod offline;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

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
    /// Measure the extraction engine instead: lines per second on one core with the
    /// built-in patterns over a synthetic transcript of --lines lines; prints matches found.
    #[arg(long)]
    extract: bool,
    /// With --extract: the corpus's lines.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
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

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if a.extract {
        return extract::run(a.lines, a.json);
    }
    let temp = a.dir.is_none();
    let root = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("architect-bench-{}", ulid::Ulid::new()))
    });
    if a.memory {
        let r = memory::run(a.tasks.unwrap_or(150), a.task_mib, &root, a.json);
        if temp {
            let _ = std::fs::remove_dir_all(&root);
        }
        return r;
    }
    if let Some(list) = &a.fidelity {
        let r = fidelity::run(
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
    let mut result = throughput::run(&a, &root);
    if result.is_ok() && a.lock_tasks > 0 {
        result = locks::run(&a, &root.join("locks-bench"));
    }
    if result.is_ok() && a.llm_calls > 0 {
        result = llm::run(&a, &root.join("llm-bench")).map(|()| ExitCode::SUCCESS);
    }
    if temp {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}
