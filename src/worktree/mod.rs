//! Git worktrees for sessions: each session with `worktree = true` works in a linked
//! worktree of its repository, `<dir>/<session>`, checked out on its task's branch.
//!
//! The daemon calls [`WorktreeManager::reconcile`] once at start-up (before any session
//! starts), [`WorktreeManager::prepare`] before a session takes a task, and
//! [`WorktreeManager::status`] for `architect sessions`. Calls are blocking (they run
//! `git`); run them off the async runtime, and not two at a time on one repository.
//!
//! Rules kept everywhere:
//! - no session works on a protected branch ([`validate_branch`]);
//! - one worktree per branch: a branch checked out elsewhere is [`Error::BranchBusy`];
//! - nothing is lost: uncommitted work (tracked and untracked files; ignored files are
//!   build output and are not kept) is committed before a worktree changes branch or is
//!   removed, onto the branch it was on, or onto a new `architect-saved/<session>-<time>`
//!   branch when it was on no branch or on a protected one (see [`SavedWork`]);
//! - only directories directly under `dir` are ever removed, and never a branch with
//!   commits beyond `base`.
//!
//! Git is driven through the `git` binary (see `git.rs` for the environment every
//! command gets): git 2.22 or later (`worktree remove`, `rebase --quit`), `-z` listings
//! from git 2.36 on.

mod branch;
mod ctx;
mod git;
mod reconcile;
mod save;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use branch::validate_branch;
pub use reconcile::Reconciled;

use crate::error::{Error, Result};
use crate::types::valid_id;
use git::{Git, Listed};

/// A session's default branch is `architect/<session>`.
pub const DEFAULT_BRANCH_PREFIX: &str = "architect/";

/// Work that had no branch of its own to go to is kept on `architect-saved/<session>-<UTC
/// time>` (never under `architect/`, so that no session name can clash with it).
pub const SAVED_BRANCH_PREFIX: &str = "architect-saved/";

/// Git's lock reason while `git worktree add` is still running (builtin/worktree.c); left
/// behind, it means the `add` was killed before it finished.
const INITIALIZING: &str = "initializing";

/// `[git]` in `config/architect.toml`: branches and worktrees of sessions with
/// `worktree = true`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSettings {
    /// Branches no task may take and no session works on (default `main`, `dev`, `qa`,
    /// `prod`; compared ignoring ASCII case).
    #[serde(default = "d_protected")]
    pub protected_branches: Vec<String>,
    /// Where session worktrees live, `<worktrees_dir>/<session>`; relative paths are
    /// relative to the session's repository (default `.architect/worktrees`).
    #[serde(default = "d_worktrees_dir")]
    pub worktrees_dir: PathBuf,
    /// The branch a new task branch starts from (default `main`).
    #[serde(default = "d_base")]
    pub base_branch: String,
}

fn d_protected() -> Vec<String> {
    ["main", "dev", "qa", "prod"].map(String::from).to_vec()
}
fn d_worktrees_dir() -> PathBuf {
    PathBuf::from(".architect/worktrees")
}
fn d_base() -> String {
    "main".into()
}

impl Default for GitSettings {
    fn default() -> Self {
        Self {
            protected_branches: d_protected(),
            worktrees_dir: d_worktrees_dir(),
            base_branch: d_base(),
        }
    }
}

impl GitSettings {
    /// Checks the branch names: each must be one git accepts
    /// ([`validate_branch`]), and `worktrees_dir` must not be empty.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        for name in self.protected_branches.iter().chain([&self.base_branch]) {
            validate_branch(name, &[]).map_err(|e| format!("[git]: {e}"))?;
        }
        if self.worktrees_dir.as_os_str().is_empty() {
            return Err("[git]: worktrees_dir must not be empty".into());
        }
        Ok(())
    }
}

/// Gives sessions their worktrees in one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeManager {
    /// The main repository (its working tree, or a bare repository).
    pub repo: PathBuf,
    /// Where session worktrees live: `<dir>/<session>`. Created mode 0700. Must be a
    /// directory of its own: not the repository's working tree, not inside `.git`.
    pub dir: PathBuf,
    /// The branch new branches start from (a local branch, else any revision such as
    /// `origin/main`).
    pub base: String,
    /// Branches no session may work on.
    pub protected: Vec<String>,
}

/// What [`WorktreeManager::prepare`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The worktree, `<dir>/<session>` (canonical): where the session runs.
    pub path: PathBuf,
    /// The branch it is now on.
    pub branch: String,
    /// The worktree was created (it did not exist, or was a crash leftover).
    pub created_worktree: bool,
    /// The branch was created from `base`.
    pub created_branch: bool,
    /// The worktree was on another branch (or a detached commit, given as its id) and
    /// was switched.
    pub switched_from: Option<String>,
    /// Uncommitted work found when switching, and where it was committed.
    pub saved: Option<SavedWork>,
}

/// Work architect committed so that it would not be lost.
///
/// The commit holds the worktree's files as they were (tracked and untracked, not
/// ignored), on top of the commit the worktree was at; author and committer
/// `architect <architect@localhost>`; no hooks run. Find it with `git log <branch>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedWork {
    /// The session whose worktree it was.
    pub session: String,
    /// The branch that now holds it.
    pub branch: String,
    /// The commit id: the saved work, or for a detached commit no branch contained, that
    /// commit itself.
    pub commit: String,
    /// `branch` was created for it (`architect-saved/…`); otherwise the commit was added
    /// on top of the branch the worktree was on.
    pub new_branch: bool,
}

/// A session worktree's state, for `architect sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorktreeStatus {
    /// The worktree.
    pub path: PathBuf,
    /// Checked-out branch; `None` when detached.
    pub branch: Option<String>,
    /// Commit id of `HEAD`.
    pub head: Option<String>,
    /// Entries `git status` lists: changed, staged, deleted and untracked files (not
    /// ignored ones).
    pub dirty_files: usize,
    /// Registered but unusable (directory or `.git` file gone, creation never finished):
    /// the next `prepare` or `reconcile` recreates or removes it.
    pub broken: bool,
}

/// `architect/<session>`.
#[must_use]
pub fn default_branch(session: &str) -> String {
    format!("{DEFAULT_BRANCH_PREFIX}{session}")
}

fn check_session(session: &str) -> Result<()> {
    if valid_id(session) {
        Ok(())
    } else {
        Err(Error::InvalidTask(format!(
            "session name {session:?} must match ^[A-Za-z0-9_-]{{1,64}}$"
        )))
    }
}

impl WorktreeManager {
    /// A manager for `repo`, keeping worktrees in `dir`.
    #[must_use]
    pub fn new(
        repo: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
        base: impl Into<String>,
        protected: Vec<String>,
    ) -> Self {
        Self {
            repo: repo.into(),
            dir: dir.into(),
            base: base.into(),
            protected,
        }
    }

    /// A manager for `repo` with the `[git]` settings of `config/architect.toml`
    /// (`worktrees_dir` is relative to `repo`).
    #[must_use]
    pub fn from_settings(repo: &Path, git: &GitSettings) -> Self {
        Self::new(
            repo,
            repo.join(&git.worktrees_dir),
            git.base_branch.clone(),
            git.protected_branches.clone(),
        )
    }

    /// `<dir>/<session>`: where the session's worktree is (or will be).
    #[must_use]
    pub fn session_path(&self, session: &str) -> PathBuf {
        self.dir.join(session)
    }

    /// Makes `<dir>/<session>` a worktree of the repository checked out on `branch`
    /// (default `architect/<session>`), and says what it did. Idempotent.
    ///
    /// - No worktree yet (or a crash leftover: half-created, directory gone, an empty
    ///   directory): `git worktree add`, the directory made 0700.
    /// - A branch that does not exist is created from `base` (no upstream).
    /// - A worktree on another branch is switched; uncommitted work there is committed
    ///   first ([`SavedWork`], in [`Prepared::saved`]), any rebase, cherry-pick or merge
    ///   left in progress is abandoned (its commits stay reachable), and the worktree is
    ///   cleaned (ignored files stay).
    /// - A worktree already on `branch` is left as it is, uncommitted changes included.
    ///
    /// The first time, a `/<dir>/` line is added to the repository's `info/exclude` when
    /// `dir` is inside its working tree, so that `git add -A` there never picks up the
    /// session worktrees.
    ///
    /// # Errors
    /// [`Error::InvalidTask`] for a bad session name; [`Error::InvalidBranch`] and
    /// [`Error::ProtectedBranch`] from [`validate_branch`]; [`Error::BranchBusy`] when
    /// another worktree (or the main checkout) has the branch; [`Error::Worktree`] when
    /// `<dir>/<session>` holds files that are not a worktree of this repository, or `dir`
    /// is misplaced, or `base` does not exist; [`Error::Git`] when a git command fails
    /// (not a repository, lock file in the way…); [`Error::Io`]. A branch created by a
    /// call that then fails is deleted again.
    pub fn prepare(&self, session: &str, branch: Option<&str>) -> Result<Prepared> {
        check_session(session)?;
        let branch = branch.map_or_else(|| default_branch(session), str::to_owned);
        validate_branch(&branch, &self.protected)?;
        let ctx = self.created_context()?;
        ctx.exclude_dir()?;
        let path = ctx.dir.join(session);
        let listed = git::list(&ctx.repo)?;
        if let Some(other) = listed
            .iter()
            .find(|w| w.branch.as_deref() == Some(branch.as_str()) && w.path != path)
        {
            return Err(Error::BranchBusy {
                branch,
                worktree: other.path.clone(),
            });
        }
        let mut current = listed.into_iter().find(|w| w.path == path);
        if let Some(w) = &current {
            if is_broken(w) {
                ctx.drop_registration(w)?;
                current = None;
            }
        }
        let created = match ctx.branch_oid(&branch)? {
            Some(_) => None,
            None => Some(ctx.create_branch(&branch, &self.base)?),
        };
        let done = match current {
            None => ctx.add(&path, &branch).map(|()| (true, None, None)),
            Some(w) if w.branch.as_deref() == Some(branch.as_str()) => Ok((false, None, None)),
            Some(w) => {
                let from = w.branch.clone().or_else(|| w.head.clone());
                self.switch(&path, session, &branch)
                    .map(|saved| (false, from, saved))
            }
        };
        match done {
            Ok((created_worktree, switched_from, saved)) => Ok(Prepared {
                path,
                branch,
                created_worktree,
                created_branch: created.is_some(),
                switched_from,
                saved,
            }),
            Err(e) => {
                if let Some(oid) = created {
                    // Best effort: the error that matters is `e`.
                    let _ = ctx.delete_branch_if_free(&branch, &oid);
                }
                Err(e)
            }
        }
    }

    /// Saves what the worktree at `path` holds, cleans it, checks out `branch`.
    fn switch(&self, path: &Path, session: &str, branch: &str) -> Result<Option<SavedWork>> {
        let why = format!("switching to {branch}");
        let saved = save::save_work(path, session, &self.protected, &why)?;
        save::settle(path)?;
        Git::new(path)
            .args(["checkout", "--quiet", "--no-guess", branch, "--"])
            .run()?;
        Ok(saved)
    }

    /// Cleans up after crashes and config changes; run once at daemon start-up, before
    /// any session starts, with the sessions that use this repository's worktrees.
    /// Idempotent: after a clean run it changes nothing ([`Reconciled::changed`]).
    ///
    /// What it does is in [`Reconciled`]'s fields, in order: stale locks, half-created
    /// worktrees, registrations of vanished worktrees, orphaned worktrees (session not
    /// in `live_sessions`: work saved, then removed), leftover directories, unused empty
    /// `architect/<session>` branches. Worktrees outside `dir` and every other branch
    /// are left alone; so are worktrees someone locked with `git worktree lock`.
    ///
    /// # Errors
    /// Only for what stops everything ([`Error::Git`] when `repo` is not a repository,
    /// [`Error::Worktree`] when `dir` is misplaced, [`Error::Io`] when `dir` cannot be
    /// created); a worktree or branch that cannot be handled is listed in
    /// [`Reconciled::failed`] and the rest goes ahead.
    pub fn reconcile(&self, live_sessions: &[String]) -> Result<Reconciled> {
        let ctx = self.created_context()?;
        reconcile::run(self, &ctx, live_sessions)
    }

    /// The state of `<dir>/<session>`; `None` when it is not a worktree of the repository.
    /// Reads only (runs `git status` without taking the index lock).
    ///
    /// # Errors
    /// [`Error::InvalidTask`] for a bad session name; [`Error::Git`] (not a repository);
    /// [`Error::Worktree`] when `dir` is misplaced.
    pub fn status(&self, session: &str) -> Result<Option<WorktreeStatus>> {
        check_session(session)?;
        let Some(ctx) = self.context(false)? else {
            return Ok(None);
        };
        let path = ctx.dir.join(session);
        let Some(w) = git::list(&ctx.repo)?.into_iter().find(|w| w.path == path) else {
            return Ok(None);
        };
        let broken = is_broken(&w);
        let dirty_files = if broken {
            0
        } else {
            git::count_status(
                &Git::new(&path)
                    .env("GIT_OPTIONAL_LOCKS", "0")
                    .args(["status", "--porcelain=v1", "-z", "--untracked-files=all"])
                    .arg("--ignore-submodules=none")
                    .run()?,
            )
        };
        Ok(Some(WorktreeStatus {
            path,
            branch: w.branch,
            head: w.head,
            dirty_files,
            broken,
        }))
    }
}

/// Registered, but its creation never finished or its directory is gone.
fn is_broken(w: &Listed) -> bool {
    w.prunable
        || w.locked.as_deref().map(str::trim) == Some(INITIALIZING)
        || !w.path.join(".git").is_file()
}

#[cfg(test)]
mod tests;
