//! `architect submit`: write a task into the inbox, as any producer would.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use architect::spool::task::{parse_task, TaskSpec, TaskState};
use architect::spool::{format_violations, Spool};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  architect submit task.json\n  \
    architect submit --prompt 'cargo test' --role shell --priority 8 --wait\n  \
    echo '{\"prompt\": \"ls\"}' | architect submit -")]
pub struct SubmitArgs {
    /// A task file (JSON, schemas/task.schema.json); `-` reads stdin. Flags override its fields.
    file: Option<PathBuf>,
    /// The prompt (for the shell profile: a command line).
    #[arg(long)]
    prompt: Option<String>,
    /// Task id (default: a new ULID).
    #[arg(long)]
    id: Option<String>,
    /// Run on this session.
    #[arg(long, conflicts_with = "role")]
    session: Option<String>,
    /// Run on any session with this role.
    #[arg(long)]
    role: Option<String>,
    /// 0–10, higher first.
    #[arg(long)]
    priority: Option<u8>,
    /// Wait for these task ids to be done first (repeatable).
    #[arg(long = "depends-on", value_name = "ID")]
    depends_on: Vec<String>,
    /// Seconds one attempt may run.
    #[arg(long)]
    timeout: Option<u64>,
    /// Retries after a failed attempt.
    #[arg(long)]
    max_retries: Option<u32>,
    /// Hold this lock while the task runs: a repository path (relative to the repository
    /// root) or branch:<name> (repeatable).
    #[arg(long = "lock", value_name = "RESOURCE")]
    locks: Vec<String>,
    /// Block until the task is done, failed or cancelled; print its result.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds (exit 124).
    #[arg(long, default_value_t = 3600)]
    wait_timeout: u64,
}

pub fn run(spool: &Spool, config_dir: &std::path::Path, a: SubmitArgs) -> Result<ExitCode> {
    let mut value: serde_json::Value = match &a.file {
        Some(p) => {
            let bytes = if p.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
            };
            let spec = parse_task(&bytes)
                .map_err(|v| anyhow::anyhow!("{}: {}", p.display(), format_violations(&v)))?;
            serde_json::to_value(spec)?
        }
        None => serde_json::json!({}),
    };
    let obj = value.as_object_mut().expect("a task is an object");
    let mut set = |k: &str, v: serde_json::Value| {
        obj.insert(k.to_string(), v);
    };
    if let Some(p) = a.prompt {
        set("prompt", p.into());
    }
    if let Some(v) = a.id {
        set("id", v.into());
    }
    if let Some(v) = a.session {
        set("session", v.into());
    }
    if let Some(v) = a.role {
        set("role", v.into());
    }
    if let Some(v) = a.priority {
        set("priority", v.into());
    }
    if !a.depends_on.is_empty() {
        set("depends_on", a.depends_on.into());
    }
    if let Some(v) = a.timeout {
        set("timeout_s", v.into());
    }
    if let Some(v) = a.max_retries {
        set("max_retries", v.into());
    }
    if !a.locks.is_empty() {
        let mut branch = None;
        let mut paths = Vec::new();
        for l in a.locks {
            match l.strip_prefix("branch:") {
                Some(b) if branch.is_none() => branch = Some(b.to_string()),
                Some(_) => bail!("--lock: a task works on one branch; give branch: once"),
                None => paths.push(l),
            }
        }
        let mut locks = serde_json::Map::new();
        if let Some(b) = branch {
            locks.insert("branch".into(), b.into());
        }
        if !paths.is_empty() {
            locks.insert("paths".into(), paths.into());
        }
        set("locks", locks.into());
    }
    if !obj.contains_key("prompt") {
        bail!("a task needs a prompt: give a task file or --prompt");
    }
    let spec: TaskSpec = parse_task(&serde_json::to_vec(&value)?)
        .map_err(|v| anyhow::anyhow!("invalid task: {}", format_violations(&v)))?;
    // The daemon checks locks against the repository too (and rejects the file); saying
    // so here saves a trip through rejected/.
    if let Ok(config) = architect::config::Config::load(config_dir) {
        architect::locks::resources_for(&spec, &config.repo, &config.git.protected_branches)
            .map_err(|v| anyhow::anyhow!("invalid task: {}", format_violations(&v)))?;
    }
    let id = spool.submit(spec)?;
    println!("{id}");
    if !a.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_secs(a.wait_timeout);
    loop {
        if let Some(state) = spool.locate(&id).filter(|s| s.is_final()) {
            let (_, rec) = spool.find(&id)?;
            if let Some(r) = &rec.result {
                print!("{}", r.output);
                if !r.output.ends_with('\n') && !r.output.is_empty() {
                    println!();
                }
            }
            if let Some(e) = &rec.error {
                eprintln!("task {id} {}: {e}", state.dir());
            }
            return Ok(if state == TaskState::Done {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if Instant::now() > deadline {
            eprintln!(
                "gave up waiting for {id} after {} s (it is still {:?})",
                a.wait_timeout,
                spool.locate(&id).map_or("in the inbox", |s| s.dir())
            );
            return Ok(ExitCode::from(124));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
