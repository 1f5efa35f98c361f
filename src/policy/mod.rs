//! The command policy: what architect may answer on its own when an agent asks for
//! permission, and what it must refuse or leave to a person.
//!
//! Rules are data, in `config/policy.toml` (the built-in copy is [`DEFAULT_POLICY`]).
//! [`Policy::check`] takes an [`Action`] (a command line, a file edit or read, a fetch,
//! a tool call) and a [`Context`] (the worktree, the home directory, protected branches,
//! the session's profile) and returns a [`Verdict`]: [`Decision::Allow`],
//! [`Decision::Deny`] or [`Decision::Escalate`], with the name of the rule that made it
//! and a sentence saying why.
//!
//! Command lines are parsed ([`shell`]) before anything is matched; nothing is ever
//! approved on a substring. A compound command is denied if any part is, allowed only
//! if every part is, escalated otherwise. What the parser cannot follow (`$(…)`,
//! `eval`, variables it cannot expand, here-documents, unsupported syntax) is never
//! allowed: it is denied when something recognisably dangerous is inside, escalated
//! otherwise.
//!
//! Rule names in verdicts:
//! - from the file: `deny.<name>`, `allow.<name>` (`[[deny]]`, `[[allow]]`);
//! - built-in checks, switched and tuned in the file: `deny.credential-read`,
//!   `deny.write-outside-worktree`, `deny.delete-worktree`, `deny.write-git-dir`,
//!   `deny.delete-unknown`, `deny.pipe-to-shell`, `deny.env-exec`,
//!   `deny.git-push-protected`, `deny.git-config-override`, `deny.git-destructive`,
//!   `deny.fork-bomb`, `allow.read-inside-worktree`, `allow.edit-inside-worktree`,
//!   `allow.no-command`;
//! - escalations: `escalate.not-allowed` (no rule covers it), `escalate.outside-worktree`,
//!   `escalate.unknown-path`, `escalate.unknown-program`, `escalate.substitution`,
//!   `escalate.arithmetic` (arithmetic and array subscripts, which bash evaluates),
//!   `escalate.git-other-repo`, `escalate.git-destructive`, `escalate.code-config`,
//!   `escalate.heredoc`, `escalate.eval`, `escalate.script`, `escalate.env`,
//!   `escalate.loop`, `escalate.function`, `escalate.xargs`, `escalate.unparsed`,
//!   `escalate.fetch`, `escalate.tool`, `escalate.empty`.
//!
//! `check` spawns nothing and uses no network; it touches the filesystem only to resolve
//! symbolic links in paths (so a link inside the worktree that points at `~/.ssh` is
//! treated as `~/.ssh`) and to tell git directories and other repositories inside the
//! worktree (a `.git`, a `HEAD`, `objects/` and `refs/`).

mod arg;
mod eval;
pub mod file;
mod glob;
mod paths;
mod programs;
pub mod shell;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use file::{
    CredentialsSection, EnvSection, GitSection, PathsMode, PipeToShellSection, PolicyFile,
    ShellSection, WorktreeSection, WritesSection,
};

/// The `config/policy.toml` that ships with architect and that `architect init` writes.
pub const DEFAULT_POLICY: &str = include_str!("../../config/policy.toml");

/// Branches a push may not update when the daemon's config names none.
pub const DEFAULT_PROTECTED_BRANCHES: [&str; 4] = ["main", "dev", "qa", "prod"];

/// What the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Answer yes on the agent's behalf.
    Allow,
    /// Answer no.
    Deny,
    /// Leave the question to a person.
    Escalate,
}

impl Decision {
    /// `allow`, `deny` or `escalate`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Escalate => "escalate",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision, the rule that made it (`deny.sudo`; several allow rules are joined with
/// `, `), and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// The rule's name.
    pub rule: String,
    /// Why, for a person.
    pub reason: String,
}

impl Verdict {
    pub(crate) fn new(decision: Decision, rule: &str, reason: impl Into<String>) -> Self {
        Self {
            decision,
            rule: rule.to_string(),
            reason: reason.into(),
        }
    }
}

/// What an agent asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a shell command line (as read off the agent's permission screen).
    Command(String),
    /// Create or change a file. Relative paths are relative to the worktree; `~` is the
    /// home directory.
    Edit(PathBuf),
    /// Read a file.
    Read(PathBuf),
    /// Fetch a URL.
    Fetch(String),
    /// Use a tool that is neither a command nor a file (allowed or denied by name).
    Tool {
        /// The tool's name as the agent shows it.
        name: String,
        /// Its input, as text.
        input: String,
    },
}

/// Where the agent works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The session's working directory; commands run there. Absolute (a relative path
    /// is taken relative to the process's current directory).
    pub worktree: PathBuf,
    /// The home directory `~` and `$HOME` expand to.
    pub home: PathBuf,
    /// Branch names (globs) no push may update or delete.
    pub protected_branches: Vec<String>,
    /// The session's profile, for rules limited to some profiles.
    pub profile: Option<String>,
}

impl Context {
    /// A context for `worktree`, with `$HOME` (or `/` when unset) as the home directory,
    /// [`DEFAULT_PROTECTED_BRANCHES`] and no profile.
    #[must_use]
    pub fn new(worktree: impl Into<PathBuf>) -> Self {
        Self {
            worktree: worktree.into(),
            home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
            protected_branches: DEFAULT_PROTECTED_BRANCHES.map(String::from).to_vec(),
            profile: None,
        }
    }
}

/// A `[[deny]]` or `[[allow]]` rule, ready to match.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub programs: Vec<String>,
    pub subcommands: Vec<Vec<String>>,
    pub args: Vec<String>,
    pub forbid: Vec<String>,
    pub options: Option<Vec<String>>,
    pub script: Vec<Regex>,
    pub paths: PathsMode,
    pub hosts: Vec<String>,
    pub tools: Vec<String>,
    pub profiles: Vec<String>,
    pub reason: String,
}

impl Rule {
    pub(crate) fn applies_to(&self, profile: Option<&str>) -> bool {
        self.profiles.is_empty() || profile.is_some_and(|p| self.profiles.iter().any(|x| x == p))
    }

    pub(crate) fn names_program(&self, base: &str) -> bool {
        self.programs.iter().any(|g| glob::matches(g, base))
    }

    /// How many leading arguments a `subcommands` entry matches (0 when the rule has
    /// none); `None` when none matches.
    pub(crate) fn prefix_len(&self, args: &[Option<&str>]) -> Option<usize> {
        if self.subcommands.is_empty() {
            return Some(0);
        }
        self.subcommands.iter().find_map(|seq| {
            (seq.len() <= args.len() && seq.iter().zip(args).all(|(s, a)| *a == Some(s.as_str())))
                .then_some(seq.len())
        })
    }
}

/// A loaded, validated policy: load it once and share it by reference.
#[derive(Debug, Clone)]
pub struct Policy {
    source: PathBuf,
    pub(crate) deny: Vec<Rule>,
    pub(crate) allow: Vec<Rule>,
    pub(crate) worktree: WorktreeSection,
    pub(crate) credentials: CredentialsSection,
    pub(crate) writes: WritesSection,
    pub(crate) pipe: PipeToShellSection,
    pub(crate) env: EnvSection,
    pub(crate) git: GitSection,
    pub(crate) shell: ShellSection,
}

impl Policy {
    /// Loads `<config_dir>/policy.toml`, or the built-in [`DEFAULT_POLICY`] when that file
    /// does not exist.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file: TOML syntax, unknown field, bad or duplicate
    /// rule name, a rule with none or several of programs/hosts/tools, a bad regex.
    /// [`Error::Io`] when the file exists but cannot be read.
    pub fn load(config_dir: &Path) -> Result<Self> {
        let path = config_dir.join("policy.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::builtin()),
            Err(e) => Err(Error::io("reading policy", &path, e)),
        }
    }

    /// The built-in policy ([`DEFAULT_POLICY`]).
    ///
    /// # Panics
    /// Never: a test parses the built-in file.
    #[must_use]
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_POLICY, Path::new("config/policy.toml (built in)"))
            .expect("the built-in policy parses")
    }

    /// Parses a policy file's text; `path` names it in errors. Sections the text leaves
    /// out keep their built-in values.
    ///
    /// # Errors
    /// As [`Policy::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let f = file::parse(text, path)?;
        let builtin = if std::ptr::eq(text, DEFAULT_POLICY) {
            None
        } else {
            Some(file::parse(
                DEFAULT_POLICY,
                Path::new("config/policy.toml (built in)"),
            )?)
        };
        fn pick<T>(
            mine: Option<T>,
            builtin: Option<&PolicyFile>,
            theirs: fn(&PolicyFile) -> Option<T>,
        ) -> Option<T> {
            mine.or_else(|| builtin.and_then(theirs))
        }
        let b = builtin.as_ref();
        let missing = |s: &str| Error::Config {
            path: path.to_path_buf(),
            message: format!("section [{s}] is missing"),
        };
        let worktree = pick(f.worktree.clone(), b, |b| b.worktree.clone())
            .ok_or_else(|| missing("worktree"))?;
        let credentials = pick(f.credentials.clone(), b, |b| b.credentials.clone())
            .ok_or_else(|| missing("credentials"))?;
        let writes =
            pick(f.writes.clone(), b, |b| b.writes.clone()).ok_or_else(|| missing("writes"))?;
        let pipe = pick(f.pipe_to_shell.clone(), b, |b| b.pipe_to_shell.clone())
            .ok_or_else(|| missing("pipe_to_shell"))?;
        let env = pick(f.env.clone(), b, |b| b.env.clone()).ok_or_else(|| missing("env"))?;
        let git = pick(f.git.clone(), b, |b| b.git.clone()).ok_or_else(|| missing("git"))?;
        let shell =
            pick(f.shell.clone(), b, |b| b.shell.clone()).ok_or_else(|| missing("shell"))?;
        let split = |v: &[String]| -> Vec<Vec<String>> {
            v.iter()
                .map(|s| s.split_whitespace().map(String::from).collect())
                .collect()
        };
        let deny = f
            .deny
            .iter()
            .map(|r| Rule {
                name: format!("deny.{}", r.name),
                programs: r.programs.clone(),
                subcommands: split(&r.subcommands),
                args: r.args.clone(),
                forbid: Vec::new(),
                options: None,
                script: Vec::new(),
                paths: PathsMode::Any,
                hosts: r.hosts.clone(),
                tools: r.tools.clone(),
                profiles: r.profiles.clone(),
                reason: r.reason.clone(),
            })
            .collect();
        let allow = f
            .allow
            .iter()
            .map(|r| Rule {
                name: format!("allow.{}", r.name),
                programs: r.programs.clone(),
                subcommands: split(&r.subcommands),
                args: Vec::new(),
                forbid: r.forbid.clone(),
                options: r.options.clone(),
                script: r
                    .script
                    .iter()
                    .map(|s| Regex::new(&format!("^(?:{s})$")).expect("checked by file::parse"))
                    .collect(),
                paths: r.paths,
                hosts: r.hosts.clone(),
                tools: r.tools.clone(),
                profiles: r.profiles.clone(),
                reason: r.reason.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Self {
            source: path.to_path_buf(),
            deny,
            allow,
            worktree,
            credentials,
            writes,
            pipe,
            env,
            git,
            shell,
        })
    }

    /// Where this policy was read from (for messages).
    #[must_use]
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Decides `action` in `ctx`. Deterministic; spawns nothing; reads the filesystem
    /// only to resolve symbolic links.
    #[must_use]
    pub fn check(&self, action: &Action, ctx: &Context) -> Verdict {
        let ev = eval::Eval::new(self, ctx);
        match action {
            Action::Command(line) => ev.command_line(line),
            Action::Edit(path) => ev.edit(&path.to_string_lossy()),
            Action::Read(path) => ev.read(&path.to_string_lossy()),
            Action::Fetch(url) => self.fetch(&ev, url, ctx),
            Action::Tool { name, .. } => self.tool(name, ctx),
        }
    }

    /// A URL is parsed the way browsers and Node do (WHATWG rules, the `url` crate), and
    /// the host matched is the one a client would contact: `https://evil.com\@docs.rs/`
    /// goes to evil.com (a backslash ends the authority), `https://docs.rs@evil.com/` too.
    fn fetch(&self, ev: &eval::Eval<'_>, url: &str, ctx: &Context) -> Verdict {
        let profile = ctx.profile.as_deref();
        let text = url.trim();
        let Ok(parsed) = url::Url::parse(text) else {
            return Verdict::new(
                Decision::Escalate,
                "escalate.fetch",
                format!("{text:?} is not a URL"),
            );
        };
        let scheme = parsed.scheme();
        if scheme == "file" {
            return match parsed.to_file_path() {
                Ok(path) => ev.read(&path.to_string_lossy()),
                Err(()) => Verdict::new(
                    Decision::Escalate,
                    "escalate.fetch",
                    format!("{text:?} names a file on another host"),
                ),
            };
        }
        if scheme != "http" && scheme != "https" {
            return Verdict::new(
                Decision::Escalate,
                "escalate.fetch",
                format!("fetching a {scheme}: URL"),
            );
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => {
                return Verdict::new(
                    Decision::Escalate,
                    "escalate.fetch",
                    format!("{text:?} names no host"),
                )
            }
        };
        self.by_name_rules(
            |r| r.applies_to(profile) && r.hosts.iter().any(|g| glob::matches(g, &host)),
            &format!("fetching from {host}"),
            "escalate.fetch",
            format!("no allow rule covers fetching from {host:?}"),
        )
    }

    fn tool(&self, name: &str, ctx: &Context) -> Verdict {
        let profile = ctx.profile.as_deref();
        self.by_name_rules(
            |r| r.applies_to(profile) && r.tools.iter().any(|g| glob::matches(g, name)),
            &format!("tool {name}"),
            "escalate.tool",
            format!("no allow rule covers the tool {name:?}"),
        )
    }

    /// For actions matched by name (fetch hosts, tools): the first deny rule that
    /// `matches` wins, then the first allow rule, else an escalation.
    fn by_name_rules(
        &self,
        matches: impl Fn(&Rule) -> bool,
        what: &str,
        escalate_rule: &str,
        escalate_reason: String,
    ) -> Verdict {
        if let Some(r) = self.deny.iter().find(|r| matches(r)) {
            return Verdict::new(Decision::Deny, &r.name, r.reason.clone());
        }
        if let Some(r) = self.allow.iter().find(|r| matches(r)) {
            return Verdict::new(
                Decision::Allow,
                &r.name,
                format!("{what}{}", suffix(&r.reason)),
            );
        }
        Verdict::new(Decision::Escalate, escalate_rule, escalate_reason)
    }
}

/// `": reason"`, or nothing for an empty reason.
pub(crate) fn suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
