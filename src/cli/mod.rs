//! The command line. Every verb talks to the daemon only through the spool, so each one
//! works while the daemon is down; the daemon picks the work up when it starts.

mod ask;
mod attach;
mod bench;
mod demo;
mod harness;
mod hook;
mod init;
mod locks;
pub mod logging;
mod metrics;
mod nodes;
mod observe;
mod policy;
mod replay;
mod serve;
mod sql;
mod submit;
mod tasks;
mod top;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use architect::spool::Spool;

/// A file-based coordinator for fleets of AI coding agents.
///
/// Drop a JSON task into spool/inbox/, a daemon hands it to an idle agent terminal
/// (a real pseudo-terminal) and the result lands in spool/done/ (or failed/).
/// Sessions are configured in config/sessions.toml; every event is a JSON line in
/// spool/log/ that `architect sql` can query.
#[derive(Debug, Parser)]
#[command(
    name = "architect",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Start here:\n  architect init && architect daemon -v &\n  \
    architect submit --prompt 'echo hello' --wait\n  architect sql \"SELECT state, count(*) FROM tasks GROUP BY state\""
)]
pub struct Cli {
    /// Spool directory.
    #[arg(long, global = true, env = "ARCHITECT_SPOOL", default_value = "spool")]
    pub spool: PathBuf,
    /// Config directory (sessions.toml, architect.toml, policy.toml, profiles/).
    #[arg(
        long,
        global = true,
        env = "ARCHITECT_CONFIG",
        default_value = "config"
    )]
    pub config: PathBuf,
    /// More tracing on stderr (-v info, -vv debug, -vvv trace). ARCHITECT_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    command: Cmd,
}

impl Cli {
    /// The daemon, the demo and the benchmark (they keep SIGPIPE ignored).
    pub fn is_long_running(&self) -> bool {
        matches!(
            self.command,
            Cmd::Daemon { .. } | Cmd::Demo { .. } | Cmd::Bench(_) | Cmd::Serve(_)
        )
    }

    /// Where the daemon's tracing goes, when it is sent to a file.
    pub fn log_file(&self) -> Option<&Path> {
        match &self.command {
            Cmd::Daemon { log_file } => log_file.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the spool directories and a config with two working shell sessions.
    Init {
        /// Overwrite existing config files.
        #[arg(long)]
        force: bool,
        /// This machine's node name, for a spool shared with other machines: sets
        /// `[node] name`, writes config/nodes.toml listing it, and adds the patterns a
        /// synced spool needs to spool/.stignore (docs/multi-node.md).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Run the daemon in the foreground (Ctrl-C or SIGTERM stops it).
    Daemon {
        /// Write tracing to this file instead of stderr.
        #[arg(long, value_name = "PATH")]
        log_file: Option<PathBuf>,
    },
    /// Submit a task: a JSON file, or built from flags. Prints the task id.
    Submit(submit::SubmitArgs),
    /// Counts of tasks per state, sessions, and whether the daemon runs.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List tasks.
    Tasks {
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<tasks::StateArg>,
        /// Most tasks to list per state (newest last).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one task's record (state, attempts, result or error) and its extractions.
    Show {
        /// Task id.
        id: String,
        /// JSON output (the record as stored, with `state`, `display_state` and
        /// `extractions`: the task's `extraction` events' data with their `ts`).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a pending or running task.
    Cancel {
        /// Task id.
        id: String,
    },
    /// Queue a failed or cancelled task again, with a fresh retry budget.
    Retry {
        /// Task id.
        id: String,
    },
    /// List the nodes that share the spool (config/nodes.toml): heartbeat, load, and
    /// whether this node's daemon sees each alive (judged on its own clock).
    Nodes {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Drain a node, or undo it: sets `drain` on its [[node]] in config/nodes.toml (keep
    /// that file the same on every node: commit and sync it). A draining node takes no new
    /// work, offers its queued tasks to the others and finishes what it runs.
    #[command(subcommand)]
    Node(nodes::NodeCmd),
    /// Check a (synced) spool: Syncthing conflict copies; with several nodes, nodes
    /// presumed dead, unknown node directories, files written by the wrong node,
    /// Syncthing's lag, and .stignore patterns missing. Exits 1 when anything is found.
    Doctor {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List sessions and their states.
    Sessions {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Type text into a session's terminal (then Enter), e.g. to answer a question.
    Send {
        /// Session name.
        session: String,
        /// Text to type.
        text: String,
        /// Do not press Enter after the text.
        #[arg(long)]
        no_enter: bool,
    },
    /// Show a session's live screen here and type into it; Ctrl-] detaches.
    #[command(
        after_help = "While you are attached the session shows as `attached` and takes no new \
        task; a task it runs goes on. Detaching (Ctrl-], or --detach-key), or losing the \
        connection, leaves it as it was. Works through the daemon's socket \
        ($XDG_RUNTIME_DIR/architect/daemon-<hash>.sock or /tmp/architect-<uid>/…, mode 0600)."
    )]
    Attach(attach::AttachArgs),
    /// Show a session's live screen here, read-only; Ctrl-] or Ctrl-C ends it.
    Watch(attach::AttachArgs),
    /// Approve the permission question a session is waiting on (types its yes key).
    #[command(
        after_help = "A question the policy (config/policy.toml) does not clearly allow \
        or deny is escalated: the session waits in waiting_input, an approval_needed event is \
        logged, and `architect sessions` shows what it asks, with the question's id. The \
        answer names that id: if the session has moved on to another question, nothing is \
        answered.\n\nExample:\n  \
        architect sessions            # claude-1  waiting_input — q-3fa9c21b approve? npm install left-pad\n  \
        architect approve claude-1 --question q-3fa9c21b"
    )]
    Approve {
        /// Session name.
        session: String,
        /// The id of the question you read (`architect sessions` prints it).
        #[arg(long, value_name = "ID")]
        question: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Deny the permission question a session is waiting on (types its no key).
    Deny {
        /// Session name.
        session: String,
        /// The id of the question you read (`architect sessions` prints it).
        #[arg(long, value_name = "ID")]
        question: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the fleet: sessions (state, task, elapsed, last screen line), the
    /// queue, throughput, spend today, approvals waiting and nodes, refreshed every second.
    #[command(
        after_help = "Keys: q/Esc quit · ↑↓ or j/k select · Tab sessions/tasks panel · / filter · \
        s cycle sort · a approve / d deny the selected session's question · c cancel / r retry \
        the selected task · Enter attach to the session.\n\nWith the daemon down it shows \
        the spool read-only (\"daemon down: read-only\"). `--once` prints one frame as text."
    )]
    Top(top::TopArgs),
    /// Print the event log.
    Logs {
        /// Keep printing new events as they are written.
        #[arg(short, long)]
        follow: bool,
        /// Only events of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only events of this session.
        #[arg(long)]
        session: Option<String>,
        /// Print the last N events (0 = all).
        #[arg(short = 'n', long, default_value_t = 0)]
        lines: usize,
        /// Raw JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Serve the web dashboard: sessions, queue, tasks, approvals, cost, nodes, with live
    /// updates. Prints its address and a login URL (the token of spool/locks/serve.token).
    #[command(
        after_help = "Pages: / (fleet), /tasks?state=S, /tasks/ID, /approvals, /cost, /nodes; \
        /events is the live event stream (server-sent events), /recordings/TASK.cast a task's \
        recording.\n\nReading is open on loopback; approve, deny, cancel and retry need the \
        token: open the printed login URL once (it sets an HttpOnly, SameSite=Strict cookie), \
        or send `Authorization: Bearer <token>`. Bound beyond loopback, every request needs it."
    )]
    Serve(serve::ServeArgs),
    /// Play a task's terminal recording here, with its timing (asciicast v2, under
    /// spool/recordings/; found on whichever node ran the task).
    Replay(replay::ReplayArgs),
    /// Run SQL (DuckDB) over the event log. Views: events, tasks, llm_calls, agent_usage,
    /// extractions.
    #[command(
        after_help = "Views:\n  events(ts, node, type, task_id, session, data JSON)\n  \
        tasks(task_id, state, session, attempts, priority, prompt, received_at, queued_at,\n        \
        started_at, last_started_at, finished_at, run_ms, error)\n  \
        llm_calls(ts, node, task_id, provider, model, status, attempt, latency_ms, input_tokens,\n        \
        output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, ok, error)\n  \
        agent_usage(ts, node, task_id, session, model, input_tokens, output_tokens,\n        \
        cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, priced)\n  \
        extractions(ts, node, task_id, session, attempt, line, pattern, category, severity,\n        \
        fields JSON, text, dropped)\n\nExample:\n  \
        architect sql \"SELECT session, count(*) AS done FROM tasks WHERE state = 'done' GROUP BY session\""
    )]
    Sql {
        /// The query.
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: sql::FormatArg,
    },
    /// Prometheus metrics (text format 0.0.4), from the event log and the spool's files:
    /// tasks and sessions per state, dispatch latency and task duration histograms,
    /// permission decisions, LLM tokens and spend, breakers, lock waits, node heartbeats.
    #[command(
        after_help = "For node_exporter's textfile collector, run it every minute (cron or a \
        systemd timer):\n  architect metrics --output /var/lib/node_exporter/textfile/architect.prom\n\n\
        The file is replaced atomically (temp file, rename). Works with the daemon up or down; \
        in a fleet it reads every node's log. README, \"Metrics\", lists the metrics."
    )]
    Metrics {
        /// Write to this file (atomically, mode 0644) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Per-session completed/failed counts, success rate and p50/p95 task time, from the log.
    Stats {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Spend instead: agent CLIs per session and task (config/prices.toml), and LLM
        /// calls by provider and model, per completed task, and the savings against
        /// sending every call to the most expensive configured model.
        #[arg(long)]
        cost: bool,
    },
    /// Run the main job end to end in a scratch directory: shell sessions and the fake
    /// agent, example tasks dropped as plain files, their results, one SQL query.
    Demo {
        /// Where to build the demo spool and config (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Measure dispatch latency and throughput with fake agents (prints figures).
    Bench(bench::BenchArgs),
    /// Send one prompt through the LLM provider routing (config/providers.toml): failover,
    /// retries, circuit breakers, cost logged.
    Ask(ask::AskArgs),
    /// Each LLM provider's circuit breaker, calls, latency p50/p95 and spend.
    Providers {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List the branch and path locks held now (by tasks and by `architect lock`).
    Locks {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Take part in the same locks as tasks: `lock acquire`, `lock release`.
    #[command(subcommand)]
    Lock(locks::LockCmd),
    /// The command policy (config/policy.toml): what agents' permission questions get
    /// answered with.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// The program an agent CLI's hooks run (installed by the daemon for each session of
    /// a profile with [hooks]; not for people). Reads the CLI's JSON on stdin.
    #[command(
        hide = true,
        after_help = "Sends what the hook reports to the session it runs under \
        (ARCHITECT_HOOK_SOCKET, ARCHITECT_HOOK_TOKEN) and prints the answer in the CLI's \
        format. A tool request that cannot reach the session is denied (fails closed)."
    )]
    Hook {
        /// The CLI: claude-code, codex or gemini.
        agent: String,
        /// The CLI's hook event (UserPromptSubmit, PreToolUse, Stop, …).
        event: String,
    },
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // In a fleet (nodes.toml lists several nodes), this node's states are under
    // spool/nodes/<node>/; the readers walk every node's (`Spool::members`).
    let spool = match architect::config::Config::load(&cli.config) {
        Ok(c) if c.nodes.is_fleet() => Spool::for_node(&cli.spool, &c.node),
        _ => Spool::new(&cli.spool),
    };
    match cli.command {
        Cmd::Init { force, node } => init::run(&spool, &cli.config, force, node.as_deref()),
        Cmd::Daemon { .. } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(architect::daemon::run(architect::daemon::DaemonOptions {
                spool: cli.spool.clone(),
                config: cli.config.clone(),
            }))
            .with_context(|| format!("daemon on spool {}", cli.spool.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Submit(args) => submit::run(&need(&spool)?, &cli.config, args),
        Cmd::Status { json } => observe::status(&need(&spool)?, &cli.config, json),
        Cmd::Tasks { state, limit, json } => tasks::list(&need(&spool)?, state, limit, json),
        Cmd::Show { id, json } => tasks::show(&need(&spool)?, &id, json),
        Cmd::Cancel { id } => tasks::cancel(&need(&spool)?, &id),
        Cmd::Retry { id } => tasks::retry(&need(&spool)?, &id),
        Cmd::Sessions { json } => observe::sessions(&need(&spool)?, json),
        Cmd::Nodes { json } => nodes::run(&need(&spool)?, &cli.config, json),
        Cmd::Node(cmd) => nodes::node(&cli.config, &cmd),
        Cmd::Doctor { json } => nodes::doctor(&need(&spool)?, &cli.config, json),
        Cmd::Send {
            session,
            text,
            no_enter,
        } => observe::send(&need(&spool)?, &cli.config, &session, &text, !no_enter),
        Cmd::Attach(args) => attach::run(&need(&spool)?, &args, architect::attach::Mode::Attach),
        Cmd::Watch(args) => attach::run(&need(&spool)?, &args, architect::attach::Mode::Watch),
        Cmd::Approve {
            session,
            question,
            json,
        } => observe::answer(&need(&spool)?, &session, question.as_deref(), true, json),
        Cmd::Deny {
            session,
            question,
            json,
        } => observe::answer(&need(&spool)?, &session, question.as_deref(), false, json),
        Cmd::Top(args) => top::run(&need(&spool)?, &cli.config, &args),
        Cmd::Logs {
            follow,
            task,
            session,
            lines,
            json,
        } => observe::logs(
            &need(&spool)?,
            follow,
            task.as_deref(),
            session.as_deref(),
            lines,
            json,
        ),
        Cmd::Replay(args) => replay::run(&need(&spool)?, &args),
        Cmd::Serve(args) => serve::run(&need(&spool)?, &cli.config, &args),
        Cmd::Sql { query, format } => sql::sql(&need(&spool)?, &query, format.into()),
        Cmd::Metrics { output } => metrics::run(&need(&spool)?, output.as_deref()),
        Cmd::Stats { json, cost: false } => sql::stats(&need(&spool)?, json),
        Cmd::Stats { json, cost: true } => sql::cost(&need(&spool)?, &cli.config, json),
        Cmd::Demo { dir } => demo::run(dir),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Ask(args) => ask::ask(&need(&spool)?, &cli.config, args),
        Cmd::Providers { json } => ask::providers(&need(&spool)?, &cli.config, json),
        Cmd::Locks { json } => locks::list(&need(&spool)?, json),
        Cmd::Lock(cmd) => locks::run(&need(&spool)?, &cli.config, cmd),
        Cmd::Policy(cmd) => policy::run(&cli.config, cmd),
        Cmd::Hook { agent, event } => hook::run(&agent, &event),
    }
}

/// The spool, or a clear error when it has not been created.
fn need(spool: &Spool) -> Result<Spool> {
    if !spool.exists() {
        bail!(
            "no spool at {} (run `architect init`, or pass --spool / set ARCHITECT_SPOOL)",
            spool.root().display()
        );
    }
    Ok(spool.clone())
}
