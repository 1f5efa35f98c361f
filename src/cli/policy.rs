//! `architect policy check`: what the command policy says about one action.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};

use architect::policy::{Action, Context, Policy, DEFAULT_PROTECTED_BRANCHES};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Print the decision (allow, deny or escalate) for a command line, file, URL or tool,
    /// and the rule behind it.
    #[command(after_help = "\
The policy is <config>/policy.toml (--config, default ./config), or the built-in one when
that file does not exist. Pass the command line as one quoted argument after `--` to keep
its quoting; several arguments are joined with spaces.

Exit status: 0 whatever the decision (allow, deny, escalate); 1 on an error, such as a
policy file that does not parse.

Examples:
  architect policy check -- 'git push --force origin feature'
      deny  (rule deny.git-force-push: a force push rewrites the remote's history)
  architect policy check --json -- 'cargo test && git diff'
      {\"decision\":\"allow\",\"rule\":\"allow.build-tools, allow.git-local\",\"reason\":\"…\"}
  architect policy check --kind read -- ~/.ssh/id_rsa
  architect policy check --kind edit --worktree ../wt-feature -- src/main.rs
  architect policy check --kind fetch -- https://docs.rs/regex
  architect policy check --kind tool -- TodoWrite
  architect policy check --profile codex -- 'git push origin feature/x'")]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check as a session of this profile would be (rules may be limited to profiles).
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// JSON output: {"decision": …, "rule": …, "reason": …}.
    #[arg(long)]
    json: bool,
    /// The agent's worktree (where the command runs; what "inside" means).
    #[arg(long, value_name = "DIR", default_value = ".")]
    worktree: PathBuf,
    /// What is asked: a command line, a file edit or read, a URL fetch, a tool by name.
    #[arg(long, value_enum, default_value = "command")]
    kind: Kind,
    /// Protected branches, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "BRANCHES", default_values_t = DEFAULT_PROTECTED_BRANCHES.map(String::from))]
    protected: Vec<String>,
    /// The command line (or path, URL, tool name and input).
    #[arg(last = true, required = true, value_name = "ACTION")]
    action: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Command,
    Edit,
    Read,
    Fetch,
    Tool,
}

pub fn run(config: &std::path::Path, cmd: PolicyCmd) -> Result<ExitCode> {
    let PolicyCmd::Check(a) = cmd;
    let policy = Policy::load(config)?;
    let worktree = std::fs::canonicalize(&a.worktree)
        .with_context(|| format!("worktree {}", a.worktree.display()))?;
    let mut ctx = Context::new(worktree);
    ctx.protected_branches = a.protected;
    ctx.profile = a.profile;
    let text = a.action.join(" ");
    let action = match a.kind {
        Kind::Command => Action::Command(text),
        Kind::Edit => Action::Edit(PathBuf::from(text)),
        Kind::Read => Action::Read(PathBuf::from(text)),
        Kind::Fetch => Action::Fetch(text),
        Kind::Tool => {
            let mut it = a.action.into_iter();
            let Some(name) = it.next() else {
                bail!("--kind tool needs a tool name");
            };
            Action::Tool {
                name,
                input: it.collect::<Vec<_>>().join(" "),
            }
        }
    };
    let v = policy.check(&action, &ctx);
    if a.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{}  (rule {}: {})", v.decision, v.rule, v.reason);
    }
    Ok(ExitCode::SUCCESS)
}
