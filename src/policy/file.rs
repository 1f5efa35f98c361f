//! The on-disk shape of `config/policy.toml`, and its validation.
//!
//! A section left out of the file keeps its built-in value (the repository's
//! `config/policy.toml`); a section written in the file replaces the built-in one whole.
//! `[[deny]]` and `[[allow]]` rules are the file's own: a file with none has none.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};

/// `config/policy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Rules that refuse a command, file or tool; deny always wins over allow.
    #[serde(default)]
    pub deny: Vec<DenyRule>,
    /// Rules that approve; anything no rule approves is escalated to a person.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// `[worktree]`.
    pub worktree: Option<WorktreeSection>,
    /// `[credentials]`: `deny.credential-read`.
    pub credentials: Option<CredentialsSection>,
    /// `[writes]`: `deny.write-outside-worktree`, `deny.delete-worktree`,
    /// `deny.write-git-dir`, `deny.delete-unknown`, `escalate.code-config`.
    pub writes: Option<WritesSection>,
    /// `[pipe_to_shell]`: `deny.pipe-to-shell`.
    pub pipe_to_shell: Option<PipeToShellSection>,
    /// `[env]`: `deny.env-exec`, `escalate.env`.
    pub env: Option<EnvSection>,
    /// `[git]`: `deny.git-push-protected`, `deny.git-config-override`.
    pub git: Option<GitSection>,
    /// `[shell]`: shells parsed recursively, `deny.fork-bomb`.
    pub shell: Option<ShellSection>,
}

/// One `[[deny]]` table. It fires when the program matches and, if given, the arguments
/// begin with one of `subcommands` and one argument matches one of `args`; or when a
/// fetched URL's host matches `hosts`; or a tool's name matches `tools`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    /// `^[a-z0-9][a-z0-9-]*$`; verdicts name the rule `deny.<name>`.
    pub name: String,
    /// Program names (globs over the base name: `/usr/bin/sudo` is `sudo`).
    #[serde(default)]
    pub programs: Vec<String>,
    /// Word sequences the arguments must begin with, space-separated (`"push"`,
    /// `"-m pytest"`). For git, global options (`-C dir`, `--no-pager`) are skipped first.
    #[serde(default)]
    pub subcommands: Vec<String>,
    /// Globs over single arguments; the rule fires if any argument matches one.
    #[serde(default)]
    pub args: Vec<String>,
    /// Globs over URL host names, for fetches.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Tool names (globs), for agent tools that are not commands or files.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Only for sessions of these profiles (default: all).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// A sentence for the person reading the verdict.
    pub reason: String,
}

/// One `[[allow]]` table. A command is allowed when its program matches, its arguments
/// begin with one of `subcommands` (if given), no argument matches `forbid`, every option
/// matches `options` (if given), the first positional argument matches `script` (if
/// given), and every path argument is inside the worktree (unless `paths = "any"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `^[a-z0-9][a-z0-9-]*$`; verdicts name the rule `allow.<name>`.
    pub name: String,
    /// Program names (globs over the base name). The program must be a bare name or live
    /// in a system directory (`/bin`, `/usr/bin`, `/usr/local/bin`, `/sbin`, `/usr/sbin`).
    #[serde(default)]
    pub programs: Vec<String>,
    /// As for [`DenyRule::subcommands`].
    #[serde(default)]
    pub subcommands: Vec<String>,
    /// Globs over single arguments; if any argument matches, this rule does not apply.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// If given, every argument that starts with `-` (before `--`) must match one of
    /// these globs.
    #[serde(default)]
    pub options: Option<Vec<String>>,
    /// If given, the first positional argument (after the subcommand) is a script, not a
    /// path, and must match one of these regexes as a whole (e.g. sed's `1,20p`).
    #[serde(default)]
    pub script: Vec<String>,
    /// `"inside_worktree"` (default): every argument that could be a path must resolve
    /// inside the worktree. `"any"`: arguments are not paths (echo, printf).
    #[serde(default)]
    pub paths: PathsMode,
    /// Globs over URL host names, for fetches.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Tool names (globs).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Only for sessions of these profiles (default: all).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// A sentence for the person reading the verdict (default: none).
    #[serde(default)]
    pub reason: Option<String>,
}

/// How an allow rule treats path arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathsMode {
    /// Every argument that could be a path resolves inside the worktree.
    #[default]
    InsideWorktree,
    /// Arguments are not checked as paths (credential and write checks still run).
    Any,
}

/// `[worktree]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorktreeSection {
    /// `allow.read-inside-worktree`: an agent's file read inside the worktree is allowed.
    pub read_inside: bool,
    /// `allow.edit-inside-worktree`: an agent's file edit inside the worktree is allowed.
    pub edit_inside: bool,
    /// Paths outside the worktree that commands may read and write (globs): devices.
    #[serde(default)]
    pub outside_allowed: Vec<String>,
}

/// `[credentials]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    /// Turns `deny.credential-read` on or off.
    pub enabled: bool,
    /// Path globs (`~` is the home directory; `/**` also matches the directory itself).
    #[serde(default)]
    pub paths: Vec<String>,
    /// File-name globs that are credentials wherever they are (`id_rsa*`).
    #[serde(default)]
    pub names: Vec<String>,
    /// File-name globs that are credentials outside the worktree only (`.env`).
    #[serde(default)]
    pub names_outside_worktree: Vec<String>,
}

/// `[writes]`: which arguments of which programs are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesSection {
    /// Turns the write checks on or off.
    pub enabled: bool,
    /// Programs that write, change or delete every positional argument.
    #[serde(default)]
    pub every_arg: Vec<String>,
    /// Programs whose last positional argument (or `-t DIR`) is written, when they
    /// have two or more.
    #[serde(default)]
    pub last_arg: Vec<String>,
    /// `"PROGRAM OPTION"`: the option's value is written (`"curl -o"`, `"dd of="`).
    #[serde(default)]
    pub options: Vec<String>,
    /// `"PROGRAM OPTION"`: with this option the program edits its file arguments
    /// (`"sed -i"`); the first positional is its script unless `-e`/`-f` is given.
    #[serde(default)]
    pub in_place: Vec<String>,
    /// Programs that delete; recursive ones (`-r`, `-R`, `--recursive`) on a target
    /// only known at run time are denied (`deny.delete-unknown`).
    #[serde(default)]
    pub delete: Vec<String>,
    /// Path globs relative to the worktree (`**/.cargo/**`): tool configs that can make a
    /// program run another one. Writing one (by a command or a file edit) is escalated
    /// (`escalate.code-config`).
    #[serde(default)]
    pub code_configs: Vec<String>,
}

/// `[pipe_to_shell]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipeToShellSection {
    /// Turns `deny.pipe-to-shell` on or off.
    pub enabled: bool,
    /// Programs that run code read from their input or from a substitution.
    #[serde(default)]
    pub interpreters: Vec<String>,
    /// Programs that download.
    #[serde(default)]
    pub downloaders: Vec<String>,
}

/// `[env]`: variables set on a command (`FOO=1 cmd`, `env FOO=1 cmd`, `export`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Turns the checks on or off.
    pub enabled: bool,
    /// Globs: setting one of these is denied (`deny.env-exec`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Globs: these may be set; any other escalates (`escalate.env`).
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[git]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSection {
    /// `deny.git-push-protected`: a push that updates or deletes a protected branch.
    pub push_protected: bool,
    /// `deny.git-config-override`: `git -c`, `--config-env`, `--exec-path=` before
    /// the subcommand.
    pub config_override: bool,
    /// `deny.git-destructive` / `escalate.git-destructive`: local git that deletes or
    /// forces branches (`branch -D`, `branch -f`, `checkout -f`, `switch -C`, …), expires
    /// reflogs, clears stashes or prunes objects: denied when a protected branch is
    /// concerned, escalated otherwise. On when the file leaves it out.
    #[serde(default = "yes")]
    pub destructive: bool,
}

fn yes() -> bool {
    true
}

/// `[shell]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellSection {
    /// Shells whose `-c 'string'` is parsed and checked as a command line of its own.
    #[serde(default)]
    pub shells: Vec<String>,
    /// `deny.fork-bomb`: a function that calls itself.
    pub fork_bomb: bool,
}

/// Checks a rule or profile name.
pub(crate) fn valid_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && cs.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.len() <= 64
}

/// Parses and checks the file's text; `path` names the file in errors.
pub(crate) fn parse(text: &str, path: &Path) -> Result<PolicyFile> {
    let bad = |message: String| Error::Config {
        path: path.to_path_buf(),
        message,
    };
    let file: PolicyFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for r in &file.deny {
        let what = format!("[[deny]] {:?}", r.name);
        check_rule(
            &r.name,
            "deny",
            &mut seen,
            &r.programs,
            &r.hosts,
            &r.tools,
            &r.profiles,
        )
        .map_err(|m| bad(format!("{what}: {m}")))?;
        if r.programs.is_empty() && !(r.subcommands.is_empty() && r.args.is_empty()) {
            return Err(bad(format!("{what}: subcommands and args need programs")));
        }
        if r.reason.trim().is_empty() {
            return Err(bad(format!(
                "{what}: give a reason (a sentence for the person reading the verdict)"
            )));
        }
    }
    for r in &file.allow {
        let what = format!("[[allow]] {:?}", r.name);
        check_rule(
            &r.name,
            "allow",
            &mut seen,
            &r.programs,
            &r.hosts,
            &r.tools,
            &r.profiles,
        )
        .map_err(|m| bad(format!("{what}: {m}")))?;
        let command_only = !r.subcommands.is_empty()
            || !r.forbid.is_empty()
            || r.options.is_some()
            || !r.script.is_empty();
        if r.programs.is_empty() && command_only {
            return Err(bad(format!(
                "{what}: subcommands, forbid, options and script need programs"
            )));
        }
        for s in &r.script {
            Regex::new(&format!("^(?:{s})$"))
                .map_err(|e| bad(format!("{what}: script regex {s:?}: {e}")))?;
        }
    }
    if let Some(c) = &file.credentials {
        for p in &c.paths {
            if !(p.starts_with('/') || p == "~" || p.starts_with("~/")) {
                return Err(bad(format!(
                    "[credentials] path {p:?} must start with / or ~/"
                )));
            }
        }
    }
    if let Some(w) = &file.writes {
        if let Some(p) = w
            .code_configs
            .iter()
            .find(|p| p.starts_with('/') || p.starts_with('~'))
        {
            return Err(bad(format!(
                "[writes] code_configs entry {p:?} must be relative to the worktree (e.g. \"**/.npmrc\")"
            )));
        }
        for (key, list) in [("options", &w.options), ("in_place", &w.in_place)] {
            for e in list {
                if e.split_whitespace().count() != 2 {
                    return Err(bad(format!(
                        "[writes] {key} entry {e:?} must be \"PROGRAM OPTION\" (e.g. \"curl -o\")"
                    )));
                }
            }
        }
    }
    Ok(file)
}

fn check_rule(
    name: &str,
    kind: &str,
    seen: &mut std::collections::HashSet<String>,
    programs: &[String],
    hosts: &[String],
    tools: &[String],
    profiles: &[String],
) -> std::result::Result<(), String> {
    if !valid_name(name) {
        return Err(
            "name must match ^[a-z0-9][a-z0-9-]*$ (the verdict adds the deny./allow. prefix)"
                .into(),
        );
    }
    if !seen.insert(format!("{kind}.{name}")) {
        return Err("defined twice".into());
    }
    let kinds = [programs, hosts, tools]
        .iter()
        .filter(|l| !l.is_empty())
        .count();
    if kinds != 1 {
        return Err("give exactly one of programs, hosts or tools".into());
    }
    if let Some(p) = profiles.iter().find(|p| !crate::types::valid_id(p)) {
        return Err(format!("profile {p:?} must match ^[A-Za-z0-9_-]{{1,64}}$"));
    }
    Ok(())
}
