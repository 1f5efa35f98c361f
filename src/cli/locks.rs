//! `architect locks`, `architect lock acquire`, `architect lock release`: the same branch
//! and path locks the daemon takes for tasks, for a person or a script.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use architect::config::Config;
use architect::locks::{self, Conflict, HolderKind, LockTable, Requester, Resource};
use architect::spool::Spool;

/// `architect lock …`
#[derive(Debug, clap::Subcommand)]
pub enum LockCmd {
    /// Take locks and hold them: until Ctrl-C, SIGTERM or `architect lock release`, or,
    /// with `-- COMMAND`, while the command runs.
    #[command(
        after_help = "Resources are repository paths (relative to the current \
        directory, or absolute inside the repository; a directory locks everything in it) \
        or branch:<name>.\n\nExamples:\n  \
        architect lock acquire src/db.rs docs/ --wait 60 -- cargo test\n  \
        architect lock acquire branch:feature/x &    # hold until released\n  \
        architect lock release branch:feature/x\n\n\
        Exit status: 0 once held (or the command's own status), 1 when the locks are held \
        elsewhere (after --wait), 2 on bad input."
    )]
    Acquire {
        /// Paths and/or branch:<name>.
        #[arg(required = true, value_name = "RESOURCE")]
        resources: Vec<String>,
        /// Wait up to this many seconds for locks held elsewhere (default: do not wait).
        #[arg(long, value_name = "SECONDS")]
        wait: Option<f64>,
        /// A note stored with the holder (shown by `architect locks`).
        #[arg(long)]
        note: Option<String>,
        /// Print what was taken as one JSON line.
        #[arg(long)]
        json: bool,
        /// Command to run while the locks are held (after `--`).
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Release locks held by `architect lock acquire` (the holding process is asked to
    /// stop). Locks of a running task are released by ending it (`architect cancel`).
    Release {
        /// Paths and/or branch:<name>.
        #[arg(required = true, value_name = "RESOURCE")]
        resources: Vec<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Repository root and protected branches from the config (defaults if it does not load).
fn repo_and_protected(config_dir: &Path) -> Result<(PathBuf, Vec<String>)> {
    if let Ok(c) = Config::load(config_dir) {
        return Ok((c.repo, c.git.protected_branches));
    }
    let dir = std::path::absolute(config_dir).context("resolving --config")?;
    let repo = dir.parent().map_or(dir.clone(), Path::to_path_buf);
    Ok((
        repo,
        architect::worktree::GitSettings::default().protected_branches,
    ))
}

/// Parses `branch:<name>` or a path (relative to the current directory).
fn parse_resources(raw: &[String], config_dir: &Path) -> Result<Vec<Resource>> {
    let (repo, protected) = repo_and_protected(config_dir)?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    raw.iter()
        .map(|r| match r.strip_prefix("branch:") {
            Some(b) => {
                architect::worktree::validate_branch(b, &protected)?;
                Ok(Resource::Branch(b.to_string()))
            }
            None => Ok(Resource::Path(locks::normalize_path(&repo, &cwd, r)?)),
        })
        .collect()
}

fn node(config_dir: &Path) -> String {
    Config::load(config_dir).map_or_else(|_| architect::config::default_node_name(), |c| c.node)
}

/// `architect locks`.
pub fn list(spool: &Spool, json: bool) -> Result<ExitCode> {
    let listing = LockTable::new(spool.dir("locks")).list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &listing.stale_removed {
        eprintln!("removed a stale holder file for {r} (its holder had died)");
    }
    if listing.held.is_empty() {
        println!("no locks held");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["resource", "holder", "node", "pid", "since", "held"]);
    let now = chrono::Utc::now();
    for h in &listing.held {
        let holder = match (h.by, &h.task, &h.session) {
            (HolderKind::Daemon, Some(t), Some(s)) => format!("task {t} on {s}"),
            (HolderKind::Daemon, Some(t), None) => format!("task {t}"),
            _ => match &h.note {
                Some(n) => format!("architect lock ({n})"),
                None => "architect lock".to_string(),
            },
        };
        let held = (now - h.since).num_seconds().max(0);
        t.add_row([
            h.resource.to_string(),
            holder,
            h.node.clone(),
            h.pid.to_string(),
            h.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            format!("{held} s"),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

/// `architect lock …`.
pub fn run(spool: &Spool, config_dir: &Path, cmd: LockCmd) -> Result<ExitCode> {
    let (LockCmd::Acquire { resources: raw, .. } | LockCmd::Release { resources: raw, .. }) = &cmd;
    let resources = match parse_resources(raw, config_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    match cmd {
        LockCmd::Acquire {
            wait,
            note,
            json,
            command,
            ..
        } => acquire(spool, config_dir, resources, wait, note, json, &command),
        LockCmd::Release { json, .. } => release(spool, config_dir, &resources, json),
    }
}

fn acquire(
    spool: &Spool,
    config_dir: &Path,
    resources: Vec<Resource>,
    wait: Option<f64>,
    note: Option<String>,
    json: bool,
    command: &[String],
) -> Result<ExitCode> {
    let table = LockTable::new(spool.dir("locks"));
    let who = Requester {
        by: HolderKind::Cli,
        task: None,
        session: None,
        node: node(config_dir),
        note,
    };
    let deadline = wait
        .filter(|w| w.is_finite() && *w > 0.0)
        .map(|w| Instant::now() + Duration::from_secs_f64(w));
    let mut told: Option<Conflict> = None;
    let held = loop {
        match table.try_acquire(&resources, &who)? {
            Ok(held) => break held,
            Err(conflict) => {
                if deadline.is_none_or(|d| Instant::now() >= d) {
                    eprintln!("error: {conflict}");
                    return Ok(ExitCode::FAILURE);
                }
                if told.as_ref() != Some(&conflict) {
                    eprintln!("waiting: {conflict}");
                    told = Some(conflict);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let names: Vec<String> = held.resources().iter().map(ToString::to_string).collect();
    let pid = std::process::id();
    if json {
        println!(
            "{}",
            serde_json::json!({"held": names, "pid": pid, "node": who.node})
        );
    } else if command.is_empty() {
        println!(
            "held {} (pid {pid}); release with Ctrl-C, `kill {pid}` or `architect lock release {}`",
            names.join(" "),
            names.join(" ")
        );
    } else {
        eprintln!("held {}; running {}", names.join(" "), command.join(" "));
    }
    std::io::stdout().flush().ok();
    if let Some((program, args)) = command.split_first() {
        // The lock files are close-on-exec: the command does not inherit them, we hold
        // them until it ends.
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .with_context(|| format!("running {program}"))?;
        drop(held);
        return Ok(ExitCode::from(
            status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)),
        ));
    }
    wait_for_stop_signal()?;
    drop(held);
    Ok(ExitCode::SUCCESS)
}

/// Blocks until SIGINT, SIGTERM or SIGHUP arrives.
fn wait_for_stop_signal() -> Result<()> {
    // SAFETY: plain libc signal-mask calls on a sigset_t we own; this process runs no other
    // threads here, and the signals are blocked before sigwait so none is lost.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&raw mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) != 0 {
            bail!("blocking signals failed");
        }
        let mut sig = 0;
        libc::sigwait(&raw const set, &raw mut sig);
    }
    Ok(())
}

fn release(
    spool: &Spool,
    config_dir: &Path,
    resources: &[Resource],
    json: bool,
) -> Result<ExitCode> {
    let table = LockTable::new(spool.dir("locks"));
    let this_node = node(config_dir);
    let listing = table.list()?;
    let mut signalled = Vec::new();
    let mut report = Vec::new();
    let mut failed = false;
    for r in resources {
        let Some(h) = listing.held.iter().find(|h| &h.resource == r) else {
            report.push(serde_json::json!({"resource": r, "result": "not held"}));
            continue;
        };
        match (h.by, &h.task) {
            (HolderKind::Daemon, Some(task)) => {
                failed = true;
                eprintln!(
                    "error: {r} is held by task {task}; its locks are released when it ends \
                     (`architect cancel {task}`)"
                );
                report.push(
                    serde_json::json!({"resource": r, "result": "held by task", "task": task}),
                );
            }
            _ if h.node != this_node => {
                failed = true;
                eprintln!("error: {r} is held on node {} (pid {})", h.node, h.pid);
                report.push(serde_json::json!({"resource": r, "result": "held on another node"}));
            }
            _ => {
                let pid = libc::pid_t::try_from(h.pid).unwrap_or(0);
                if pid > 0 && !signalled.contains(&pid) {
                    // SAFETY: kill(2) with a pid read from a holder file whose lock is held,
                    // so the process is alive and is the `architect lock` holder.
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                    signalled.push(pid);
                }
                report.push(serde_json::json!({"resource": r, "result": "released", "pid": h.pid}));
            }
        }
    }
    // Wait (up to 5 s) until the signalled holders have let go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !signalled.is_empty() && Instant::now() < deadline {
        let still = table.list()?;
        if !still
            .held
            .iter()
            .any(|h| signalled.contains(&libc::pid_t::try_from(h.pid).unwrap_or(0)))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in &report {
            if r["result"] != "held by task" && r["result"] != "held on another node" {
                println!(
                    "{}: {}",
                    r["resource"].as_str().unwrap_or(""),
                    r["result"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
