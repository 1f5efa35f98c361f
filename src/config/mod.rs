//! Configuration: `config/architect.toml` (node and daemon settings, optional),
//! `config/sessions.toml` (the single source of truth for which sessions exist),
//! `config/profiles/*.toml` (see [`crate::profile`]), `config/prices.toml` ([`prices`]) and
//! `config/nodes.toml` ([`nodes`]: several nodes on one spool; not acted on yet).

pub mod nodes;
pub mod prices;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::log::LogSettings;
use crate::profile::Profile;
use crate::record::RecordingSettings;
use crate::types::valid_id;
use crate::worktree::GitSettings;

/// `config/architect.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectFile {
    /// `[node]`.
    #[serde(default)]
    pub node: NodeSpec,
    /// `[daemon]`.
    #[serde(default)]
    pub daemon: DaemonSettings,
    /// `[git]`.
    #[serde(default)]
    pub git: GitSettings,
    /// `[log]`.
    #[serde(default)]
    pub log: LogSettings,
    /// `[syncthing]`.
    #[serde(default)]
    pub syncthing: SyncthingSettings,
    /// `[recording]`.
    #[serde(default)]
    pub recording: RecordingSettings,
}

/// `[syncthing]` in `config/architect.toml`: where this node's Syncthing answers, so that
/// `architect doctor` can report how far the spool's folder is behind the other devices
/// (its REST API: `/rest/db/status`, `/rest/db/completion`). Optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncthingSettings {
    /// The GUI/REST address, e.g. `http://127.0.0.1:8384`.
    pub url: Option<String>,
    /// The folder id of the spool (default `spool`).
    pub folder: Option<String>,
    /// A file (mode 0600) holding the API key; else `ARCHITECT_SYNCTHING_API_KEY` from
    /// the environment. Never the key itself: this file is in git.
    pub api_key_file: Option<PathBuf>,
}

/// `[node]` in `config/architect.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// This node's name, stamped on every event and log file name (default: the hostname).
    pub name: Option<String>,
}

/// `[daemon]` in `config/architect.toml`: timings, all in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// Full listing of the spool directories, whatever the watcher says (default 30000).
    #[serde(default = "d_reconcile")]
    pub reconcile_interval_ms: u64,
    /// First retry delay after a failed attempt; doubles per attempt (default 2000).
    #[serde(default = "d_retry")]
    pub retry_backoff_ms: u64,
    /// Longest retry delay (default 300000).
    #[serde(default = "d_retry_max")]
    pub retry_backoff_max_ms: u64,
    /// First restart delay for a dead session; doubles per consecutive death (default 1000).
    #[serde(default = "d_restart")]
    pub restart_backoff_ms: u64,
    /// Longest restart delay (default 60000).
    #[serde(default = "d_restart_max")]
    pub restart_backoff_max_ms: u64,
    /// An inbox file found by a listing (not announced closed by the watcher) is read once
    /// it has not changed for this long (default 500).
    #[serde(default = "d_settle")]
    pub inbox_settle_ms: u64,
}

fn d_reconcile() -> u64 {
    30_000
}
fn d_retry() -> u64 {
    2_000
}
fn d_retry_max() -> u64 {
    300_000
}
fn d_restart() -> u64 {
    1_000
}
fn d_restart_max() -> u64 {
    60_000
}
fn d_settle() -> u64 {
    500
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            reconcile_interval_ms: d_reconcile(),
            retry_backoff_ms: d_retry(),
            retry_backoff_max_ms: d_retry_max(),
            restart_backoff_ms: d_restart(),
            restart_backoff_max_ms: d_restart_max(),
            inbox_settle_ms: d_settle(),
        }
    }
}

/// `config/sessions.toml`: `[[session]]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    /// The sessions, in file order.
    #[serde(default)]
    pub session: Vec<SessionSpec>,
}

/// One `[[session]]` table: an agent terminal the daemon keeps running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Unique name, `^[A-Za-z0-9_-]{1,64}$`.
    pub name: String,
    /// `terminal` (default: a program in a PTY, read through its profile) or `provider`
    /// (answers a task by calling an LLM API, routed through `config/providers.toml`;
    /// takes tasks that name a `provider` or a `complexity`, and those for its role or
    /// name).
    #[serde(default)]
    pub kind: SessionKind,
    /// Profile name (`config/profiles/<profile>.toml` or built in); terminal sessions only.
    #[serde(default)]
    pub profile: String,
    /// Program to run (default: the profile's `command`). A bare name is looked up in
    /// `PATH`, then beside the `architect` binary.
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments (default: the profile's `args` when `command` is not given).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Working directory; relative paths are relative to the config directory's parent
    /// (default: that directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Extra environment (wins over the profile's `[env]`). Values never reach the logs.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of the daemon's own environment this session gets too (say
    /// `ANTHROPIC_API_KEY`). Sessions start with a minimal environment
    /// ([`BASE_ENV`]): nothing else of the daemon's reaches them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_passthrough: Vec<String>,
    /// Role, for tasks that ask for a role instead of a session.
    #[serde(default)]
    pub role: Option<String>,
    /// Work in a git worktree of its own, `<git.worktrees_dir>/<name>` in `repo`, on the
    /// task's branch (default false). Needs `repo`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    /// The git repository the worktree belongs to; relative paths are relative to the
    /// config directory's parent. Only with `worktree = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<PathBuf>,
    /// The node that runs this session, when `nodes.toml` lists several (then every
    /// session names one, so that a task naming a session runs in one place). Each
    /// node's daemon starts only its own sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A program in a pseudo-terminal.
    #[default]
    Terminal,
    /// LLM HTTP calls (`config/providers.toml`).
    Provider,
}

/// A session spec resolved against its profile: what to run, where, how.
#[derive(Debug, Clone)]
pub struct ResolvedSession {
    /// The spec as written.
    pub spec: SessionSpec,
    /// The loaded profile.
    pub profile: Profile,
    /// Program path or name.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Environment: profile `[env]`, then session `env`.
    pub env: BTreeMap<String, String>,
    /// Absolute path of the repository, with `worktree = true`.
    pub repo: Option<PathBuf>,
    /// The `[git]` settings (branches, where worktrees live), for worktree sessions.
    pub git: GitSettings,
}

/// The daemon's environment variables every session program gets (when set): what a
/// terminal program needs to run, nothing that holds a secret. Everything else of the
/// daemon's environment (provider keys above all) reaches a session only through its
/// `env` or `env_passthrough` in `sessions.toml`.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TERM",
    "COLORTERM",
    "TZ",
    "TMPDIR",
];

impl ResolvedSession {
    /// The program's whole environment: [`BASE_ENV`] and `env_passthrough` from the
    /// daemon's own (`daemon_env`), then the profile's `[env]` and the session's `env`.
    #[must_use]
    pub fn environment(
        &self,
        daemon_env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> BTreeMap<std::ffi::OsString, std::ffi::OsString> {
        let mut out = BTreeMap::new();
        for (k, v) in daemon_env {
            let name = k.to_string_lossy();
            if BASE_ENV.contains(&name.as_ref())
                || self.spec.env_passthrough.iter().any(|p| *p == name)
            {
                out.insert(k, v);
            }
        }
        for (k, v) in &self.env {
            out.insert(k.into(), v.into());
        }
        out
    }

    /// The program's `HOME`: the session's `env.HOME`, else the daemon's, else `/`.
    #[must_use]
    pub fn home(&self) -> PathBuf {
        self.env
            .get("HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    /// Whether switching from `self` to `other` needs the program restarted (anything but
    /// the role changed, `worktree` and `repo` included: the program moves to another
    /// directory).
    #[must_use]
    pub fn needs_restart(&self, other: &ResolvedSession) -> bool {
        self.command != other.command
            || self.args != other.args
            || self.cwd != other.cwd
            || self.env != other.env
            || self.spec.env_passthrough != other.spec.env_passthrough
            || self.spec.worktree != other.spec.worktree
            || self.repo != other.repo
            || (self.repo.is_some() && self.git != other.git)
            || self.spec.kind != other.spec.kind
            || self.spec.profile != other.spec.profile
            || self.profile.spec != other.profile.spec
    }
}

/// Everything loaded from the config directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config directory.
    pub dir: PathBuf,
    /// This node's name.
    pub node: String,
    /// Daemon timings.
    pub daemon: DaemonSettings,
    /// Branches and worktrees.
    pub git: GitSettings,
    /// Event log size and retention.
    pub log: LogSettings,
    /// Sessions, in file order.
    pub sessions: Vec<ResolvedSession>,
    /// The repository the sessions work in: the config directory's parent. Task lock
    /// paths are relative to it.
    pub repo: PathBuf,
    /// What agent CLIs' models cost (`prices.toml`).
    pub prices: prices::Prices,
    /// The nodes that share the spool (`nodes.toml`; empty: one node).
    pub nodes: nodes::Nodes,
    /// This node's Syncthing, if it says where (`[syncthing]`).
    pub syncthing: SyncthingSettings,
    /// The sessions' terminal recordings: on or off, cap, retention (`[recording]`).
    pub recording: RecordingSettings,
}

/// Reads a TOML config file; an absent one is `T::default()`.
fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::io("reading config", path, e)),
    }
}

/// The machine's hostname, made safe for a file name (`[A-Za-z0-9_-]`, others become `-`).
#[must_use]
pub fn default_node_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let cleaned: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "node".into()
    } else {
        cleaned
    }
}

impl Config {
    /// Loads `architect.toml` and `sessions.toml` from `dir` (both optional) and every
    /// profile the sessions name.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and the problem: TOML syntax, unknown field,
    /// duplicate or invalid session name, unknown profile, bad node name, a `[git]`
    /// branch name git would refuse, `worktree = true` without `repo` or `repo` without it.
    pub fn load(dir: &Path) -> Result<Self> {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("reading current directory", dir, e))?
                .join(dir)
        };
        let arch_path = dir.join("architect.toml");
        let arch: ArchitectFile = read_toml(&arch_path)?;
        let node = match arch.node.name {
            Some(n) if valid_id(&n) => n,
            Some(n) => {
                return Err(Error::Config {
                    path: arch_path,
                    message: format!("node.name {n:?} must match ^[A-Za-z0-9_-]{{1,64}}$"),
                })
            }
            None => default_node_name(),
        };
        if arch.log.max_bytes < 4096 {
            return Err(Error::Config {
                path: arch_path,
                message: format!(
                    "log.max_bytes = {} is too small: a log file must hold at least 4096 bytes",
                    arch.log.max_bytes
                ),
            });
        }
        arch.git.validate().map_err(|message| Error::Config {
            path: arch_path.clone(),
            message,
        })?;
        arch.recording.validate().map_err(|message| Error::Config {
            path: arch_path.clone(),
            message,
        })?;
        let sessions_path = dir.join("sessions.toml");
        let file: SessionsFile = read_toml(&sessions_path)?;
        let base = dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf);
        let mut seen = HashSet::new();
        let mut sessions = Vec::new();
        for spec in file.session {
            let bad = |message: String| Error::Config {
                path: sessions_path.clone(),
                message,
            };
            if !valid_id(&spec.name) {
                return Err(bad(format!(
                    "session name {:?} must match ^[A-Za-z0-9_-]{{1,64}}$",
                    spec.name
                )));
            }
            if !seen.insert(spec.name.clone()) {
                return Err(bad(format!("session {:?} is defined twice", spec.name)));
            }
            if let Some(role) = &spec.role {
                if !valid_id(role) {
                    return Err(bad(format!(
                        "session {:?}: role {role:?} must match ^[A-Za-z0-9_-]{{1,64}}$",
                        spec.name
                    )));
                }
            }
            if spec.kind == SessionKind::Provider {
                if spec.worktree || spec.command.is_some() || !spec.profile.is_empty() {
                    return Err(bad(format!(
                        "session {:?}: a provider session runs no program: remove profile, \
                         command and worktree",
                        spec.name
                    )));
                }
                sessions.push(ResolvedSession {
                    // Unused by provider sessions; every ResolvedSession carries one.
                    profile: Profile::builtin("shell")?,
                    command: String::new(),
                    args: Vec::new(),
                    cwd: base.clone(),
                    env: spec.env.clone(),
                    repo: None,
                    git: arch.git.clone(),
                    spec,
                });
                continue;
            }
            if spec.profile.is_empty() {
                return Err(bad(format!(
                    "session {:?}: needs a profile (or kind = \"provider\")",
                    spec.name
                )));
            }
            let profile = Profile::load(&dir, &spec.profile)
                .map_err(|e| bad(format!("session {:?}: {e}", spec.name)))?;
            let (command, args) = match (&spec.command, &profile.spec.command) {
                (Some(c), _) => (c.clone(), spec.args.clone().unwrap_or_default()),
                (None, Some(c)) => (
                    c.clone(),
                    spec.args
                        .clone()
                        .unwrap_or_else(|| profile.spec.args.clone()),
                ),
                (None, None) => {
                    return Err(bad(format!(
                        "session {:?}: no command, and profile {:?} names none",
                        spec.name, spec.profile
                    )))
                }
            };
            let repo = match (spec.worktree, &spec.repo) {
                (true, Some(p)) => Some(base.join(p)),
                (true, None) => {
                    return Err(bad(format!(
                        "session {:?}: worktree = true needs repo = \"<path of the git repository>\"",
                        spec.name
                    )))
                }
                (false, Some(_)) => {
                    return Err(bad(format!(
                        "session {:?}: repo is only used with worktree = true; add that, or remove repo",
                        spec.name
                    )))
                }
                (false, None) => None,
            };
            // A worktree session runs in its worktree, `<repo>/<worktrees_dir>/<name>`.
            let cwd = match (&repo, &spec.cwd) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "session {:?}: a worktree session runs in its worktree; remove cwd",
                        spec.name
                    )))
                }
                (Some(r), None) => r.join(&arch.git.worktrees_dir).join(&spec.name),
                (None, Some(p)) if p.is_absolute() => p.clone(),
                (None, Some(p)) => base.join(p),
                (None, None) => base.clone(),
            };
            let mut env = profile.spec.env.clone();
            env.extend(spec.env.clone());
            sessions.push(ResolvedSession {
                spec,
                profile,
                command,
                args,
                cwd,
                env,
                repo,
                git: arch.git.clone(),
            });
        }
        let prices = prices::Prices::load(&dir)?;
        let nodes = nodes::Nodes::load(&dir, &node)?;
        let bad = |message: String| Error::Config {
            path: sessions_path.clone(),
            message,
        };
        for s in &sessions {
            let listed = |n: &str| nodes.node.iter().any(|spec| spec.name == n);
            match &s.spec.node {
                None if nodes.is_fleet() => {
                    return Err(bad(format!(
                        "session {:?}: nodes.toml lists several nodes, so each session says \
                         which one runs it: add node = \"<name>\"",
                        s.spec.name
                    )))
                }
                Some(n) if !nodes.node.is_empty() && !listed(n) => {
                    return Err(bad(format!(
                        "session {:?}: node = {n:?} is not a [[node]] of nodes.toml",
                        s.spec.name
                    )))
                }
                Some(n) if nodes.node.is_empty() && *n != node => {
                    return Err(bad(format!(
                        "session {:?}: node = {n:?}, but this single node is {node:?} \
                         (list the nodes in nodes.toml to share the spool)",
                        s.spec.name
                    )))
                }
                _ => {}
            }
        }
        Ok(Self {
            dir,
            node,
            daemon: arch.daemon,
            git: arch.git,
            log: arch.log,
            sessions,
            repo: base,
            prices,
            nodes,
            syncthing: arch.syncthing,
            recording: arch.recording,
        })
    }
}

impl Config {
    /// The node that runs session `name` (its `node`, or this node when it names none),
    /// `None` when no session has that name.
    #[must_use]
    pub fn session_node(&self, name: &str) -> Option<&str> {
        self.sessions
            .iter()
            .find(|s| s.spec.name == name)
            .map(|s| s.spec.node.as_deref().unwrap_or(&self.node))
    }

    /// Whether this node's daemon runs `session` (it names this node, or none).
    #[must_use]
    pub fn runs_here(&self, session: &ResolvedSession) -> bool {
        session.spec.node.as_deref().is_none_or(|n| n == self.node)
    }
}

/// The `config/sessions.toml` that `architect init` writes: two shell sessions (the
/// repository's own `config/sessions.toml`).
pub const DEFAULT_SESSIONS: &str = include_str!("../../config/sessions.toml");

/// The `config/architect.toml` that `architect init` writes (all settings at their defaults).
pub const DEFAULT_ARCHITECT: &str = include_str!("../../config/architect.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn load(architect: &str, sessions: &str) -> (tempfile::TempDir, Result<Config>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("config");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("architect.toml"), architect).unwrap();
        std::fs::write(dir.join("sessions.toml"), sessions).unwrap();
        let config = Config::load(&dir);
        (tmp, config)
    }

    const SHELL: &str = "[[session]]\nname = \"s\"\nprofile = \"shell\"\n";

    #[test]
    fn the_default_architect_toml_holds_the_git_defaults() {
        let file: ArchitectFile = toml::from_str(DEFAULT_ARCHITECT).unwrap();
        assert_eq!(file.git, GitSettings::default());
        assert_eq!(file.git.protected_branches, ["main", "dev", "qa", "prod"]);
        let (_tmp, config) = load("", "");
        assert_eq!(config.unwrap().git, GitSettings::default());
    }

    #[test]
    fn a_worktree_session_resolves_its_repository() {
        let (tmp, config) = load("", &format!("{SHELL}worktree = true\nrepo = \"proj\"\n"));
        let config = config.unwrap();
        let s = &config.sessions[0];
        assert!(s.spec.worktree);
        assert_eq!(s.repo.as_deref(), Some(tmp.path().join("proj").as_path()));
        let (_tmp, plain) = load("", SHELL);
        let plain = plain.unwrap();
        assert_eq!(plain.sessions[0].repo, None);
        assert!(plain.sessions[0].needs_restart(s) && s.needs_restart(&plain.sessions[0]));
        let (_tmp, moved) = load(
            "",
            &format!("{SHELL}worktree = true\nrepo = \"/elsewhere\"\n"),
        );
        assert!(moved.unwrap().sessions[0].needs_restart(s));
    }

    #[test]
    fn worktree_and_repo_go_together() {
        for (extra, says) in [
            ("worktree = true\n", "needs repo"),
            ("repo = \".\"\n", "only used with worktree = true"),
        ] {
            let (_tmp, config) = load("", &format!("{SHELL}{extra}"));
            let e = config.unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("sessions.toml"), "{e}");
        }
    }

    #[test]
    fn git_settings_are_checked() {
        for (git, says) in [
            ("protected_branches = [\"ma in\"]", "contains a space"),
            ("base_branch = \"-x\"", "starts with '-'"),
            ("worktrees_dir = \"\"", "worktrees_dir"),
            ("bogus = 1", "unknown field"),
        ] {
            let (_tmp, config) = load(&format!("[git]\n{git}\n"), "");
            let e = config.unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("architect.toml"), "{e}");
        }
        let (_tmp, config) = load(
            "[git]\nprotected_branches = [\"trunk\"]\nbase_branch = \"trunk\"\nworktrees_dir = \"/srv/wt\"\n",
            "",
        );
        let git = config.unwrap().git;
        assert_eq!(git.protected_branches, ["trunk"]);
        assert_eq!(git.worktrees_dir, Path::new("/srv/wt"));
    }

    #[test]
    fn recording_settings_default_on_and_are_checked() {
        let file: ArchitectFile = toml::from_str(DEFAULT_ARCHITECT).unwrap();
        assert_eq!(file.recording, RecordingSettings::default());
        let (_tmp, config) = load("", "");
        assert!(config.unwrap().recording.enabled);
        for (rec, says) in [
            ("max_bytes = 1000", "recording.max_bytes"),
            (
                "max_bytes = 100000\nkeep_total_bytes = 5000",
                "recording.keep_total_bytes",
            ),
            ("keep = 3", "unknown field"),
        ] {
            let (_tmp, config) = load(&format!("[recording]\n{rec}\n"), "");
            let e = config.unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("architect.toml"), "{e}");
        }
        let (_tmp, config) = load("[recording]\nenabled = false\nkeep_days = 0\n", "");
        let r = config.unwrap().recording;
        assert!(!r.enabled);
        assert_eq!(r.keep_days, 0);
    }
}
