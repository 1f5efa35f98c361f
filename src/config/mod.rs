//! Configuration: `config/architect.toml` (node and daemon settings, optional),
//! `config/sessions.toml` (the single source of truth for which sessions exist) and
//! `config/profiles/*.toml` (see [`crate::profile`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::spool::task::valid_id;

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
    /// Profile name (`config/profiles/<profile>.toml` or built in).
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
    /// Role, for tasks that ask for a role instead of a session.
    #[serde(default)]
    pub role: Option<String>,
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
}

impl ResolvedSession {
    /// Whether switching from `self` to `other` needs the program restarted (anything but
    /// the role changed).
    #[must_use]
    pub fn needs_restart(&self, other: &ResolvedSession) -> bool {
        self.command != other.command
            || self.args != other.args
            || self.cwd != other.cwd
            || self.env != other.env
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
    /// Sessions, in file order.
    pub sessions: Vec<ResolvedSession>,
    /// The repository the sessions work in: the config directory's parent. Task lock
    /// paths are relative to it.
    pub repo: PathBuf,
    /// Branches no task may take (default `main`, `dev`, `qa`, `prod`).
    pub protected_branches: Vec<String>,
}

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
    /// duplicate or invalid session name, unknown profile, bad node name.
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
            let cwd = match &spec.cwd {
                Some(p) if p.is_absolute() => p.clone(),
                Some(p) => base.join(p),
                None => base.clone(),
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
            });
        }
        Ok(Self {
            dir,
            node,
            daemon: arch.daemon,
            sessions,
            repo: base,
            protected_branches: crate::locks::DEFAULT_PROTECTED_BRANCHES
                .map(String::from)
                .to_vec(),
        })
    }
}

/// The `config/sessions.toml` that `architect init` writes: two shell sessions (the
/// repository's own `config/sessions.toml`).
pub const DEFAULT_SESSIONS: &str = include_str!("../../config/sessions.toml");

/// The `config/architect.toml` that `architect init` writes (all settings at their defaults).
pub const DEFAULT_ARCHITECT: &str = include_str!("../../config/architect.toml");
