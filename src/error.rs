//! The library's error type.

use std::path::{Path, PathBuf};

/// Everything the library can fail with. I/O errors carry the operation and the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}{}", path.display(), io_help(source))]
    Io {
        /// What we were doing ("renaming", "reading task file", …).
        op: String,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration file is invalid.
    #[error("config {}: {message}", path.display())]
    Config {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A profile is invalid or unknown.
    #[error("profile {profile:?}: {message}")]
    Profile {
        /// Profile name.
        profile: String,
        /// What is wrong.
        message: String,
    },
    /// A task is invalid (schema violation, bad id, duplicate).
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// A task id was not found in any spool directory.
    #[error(
        "no task {0:?} in the spool (looked in inbox, pending, active, done, failed, cancelled)"
    )]
    TaskNotFound(String),
    /// Another daemon holds this spool on this node.
    #[error("another architect daemon is already running on this spool ({0})")]
    DaemonRunning(String),
    /// The file watcher failed.
    #[error("watching {}: {source}{}", path.display(), watch_help(source))]
    Watch {
        /// Directory being watched.
        path: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
    /// DuckDB failed.
    #[error("sql: {0}")]
    Sql(#[from] duckdb::Error),
    /// JSON (de)serialisation failed.
    #[error("{context}: {source}")]
    Json {
        /// What was being read or written.
        context: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A `git` command exited with a failure.
    #[error("{command} failed ({}): {}{}", exit_text(*status), stderr.trim_end(), git_help(stderr))]
    Git {
        /// The command as run (`git -C <dir> worktree add …`).
        command: String,
        /// Exit status; `None` when git was killed by a signal.
        status: Option<i32>,
        /// What git wrote on stderr.
        stderr: String,
    },
    /// A branch name is not one git accepts, or one architect refuses.
    #[error("branch {branch:?}: {reason}")]
    InvalidBranch {
        /// The name as given.
        branch: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A task or session asked for a protected branch.
    #[error(
        "branch {0:?} is protected (git.protected_branches in config/architect.toml): \
         no task works on it; give the task a branch of its own"
    )]
    ProtectedBranch(String),
    /// The branch is checked out in another worktree: one session per branch at a time.
    #[error(
        "branch {branch:?} is already checked out in {} (one session per branch at a time)",
        worktree.display()
    )]
    BranchBusy {
        /// The branch asked for.
        branch: String,
        /// The worktree (or main checkout) that has it.
        worktree: PathBuf,
    },
    /// A session worktree is in a state architect will not touch on its own.
    #[error("worktree {}: {message}", path.display())]
    Worktree {
        /// The worktree directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: impl Into<String>, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            op: op.into(),
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Builds an [`Error::Json`].
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            context: context.into(),
            source,
        }
    }
}

fn io_help(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => " (disk full, or for watches: raise fs.inotify.max_user_watches)",
        Some(libc::EMFILE) => " (too many open files: raise the limit with ulimit -n)",
        Some(libc::EXDEV) => " (the spool directories must be on one filesystem)",
        _ => "",
    }
}

fn exit_text(status: Option<i32>) -> String {
    status.map_or_else(
        || "killed by a signal".into(),
        |c| format!("exit status {c}"),
    )
}

fn git_help(stderr: &str) -> &'static str {
    if stderr.contains("index.lock") || stderr.contains(".lock': File exists") {
        " (another git process is running there, or a crash left the lock file behind: \
         remove it once no git runs there)"
    } else if stderr.contains("dubious ownership") {
        " (the repository belongs to another user: see git config safe.directory)"
    } else if stderr.contains("not a git repository") {
        " (check repo in config/sessions.toml)"
    } else {
        ""
    }
}

fn watch_help(e: &notify::Error) -> &'static str {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            " (raise fs.inotify.max_user_watches, e.g. sysctl fs.inotify.max_user_watches=524288)"
        }
        _ => "",
    }
}
