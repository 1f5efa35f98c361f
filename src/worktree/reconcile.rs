//! Start-up clean-up of session worktrees and branches after crashes and config changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ctx::{leftover_is_empty, Ctx};
use super::git::{self, Git};
use super::{save, SavedWork, WorktreeManager, DEFAULT_BRANCH_PREFIX, INITIALIZING};
use crate::durable;
use crate::error::{Error, Result};
use crate::types::valid_id;

/// What [`WorktreeManager::reconcile`] did, for the daemon to log. Paths are canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    /// Lock files a crash left in session worktrees' git directories (`index.lock`,
    /// `HEAD.lock`), removed. At start-up no session runs yet and the daemon's lock keeps
    /// other daemons out, so no git command can be holding them.
    pub stale_locks: Vec<PathBuf>,
    /// Worktrees whose `git worktree add` was killed before it finished (git's
    /// `initializing` lock still there): removed without saving, since no session ever
    /// ran in them.
    pub half_created: Vec<PathBuf>,
    /// Session worktrees whose directory or `.git` file had gone: registration dropped
    /// (`git worktree prune` for these only; worktrees outside `dir` are left to git gc).
    pub pruned: Vec<PathBuf>,
    /// Work committed from orphaned worktrees before they were removed.
    pub saved: Vec<SavedWork>,
    /// Orphaned worktrees (session no longer configured) removed.
    pub removed: Vec<PathBuf>,
    /// Leftover directories holding nothing (empty, or only a `.git` file) deleted.
    pub cleared: Vec<PathBuf>,
    /// Directories that were worktrees of this repository but lost their registration,
    /// with files in them: moved to `<dir>/.orphaned/<name>-<time>` (from, to).
    pub moved_aside: Vec<(PathBuf, PathBuf)>,
    /// `architect/<session>` branches with no commit beyond `base` and no worktree, deleted.
    pub deleted_branches: Vec<String>,
    /// Things deliberately not touched, with why (a worktree someone locked with `git
    /// worktree lock`, a directory that is not a worktree of this repository).
    pub left_alone: Vec<(PathBuf, String)>,
    /// What failed (path, error); everything else went ahead.
    pub failed: Vec<(PathBuf, String)>,
}

impl Reconciled {
    /// Whether anything was changed on disk or failed (`left_alone` does not count).
    #[must_use]
    pub fn changed(&self) -> bool {
        !(self.stale_locks.is_empty()
            && self.half_created.is_empty()
            && self.pruned.is_empty()
            && self.saved.is_empty()
            && self.removed.is_empty()
            && self.cleared.is_empty()
            && self.moved_aside.is_empty()
            && self.deleted_branches.is_empty()
            && self.failed.is_empty())
    }

    fn fail(&mut self, path: &Path, e: &Error) {
        self.failed.push((path.to_path_buf(), e.to_string()));
    }
}

pub(super) fn run(m: &WorktreeManager, ctx: &Ctx, live: &[String]) -> Result<Reconciled> {
    let mut r = Reconciled::default();
    let half = crash_leftovers(ctx, &mut r)?;
    orphans(m, ctx, live, &half, &mut r)?;
    leftover_dirs(ctx, &mut r)?;
    empty_branches(m, ctx, &mut r)?;
    Ok(r)
}

/// Administrative directories of session worktrees: stale locks, git's `initializing`
/// lock, registrations whose worktree has gone. Gives the half-created worktrees.
fn crash_leftovers(ctx: &Ctx, r: &mut Reconciled) -> Result<HashSet<PathBuf>> {
    let mut half = HashSet::new();
    for admin in git::admin_entries(&ctx.common)? {
        let Some(wt) = admin.worktree.clone().filter(|p| ctx.is_session_path(p)) else {
            continue;
        };
        let mut locked = admin.locked.is_some();
        if admin.locked.as_deref().map(str::trim) == Some(INITIALIZING) {
            let lock = admin.dir.join("locked");
            match std::fs::remove_file(&lock) {
                Ok(()) => {
                    locked = false;
                    half.insert(wt.clone());
                }
                Err(e) => r.fail(&wt, &Error::io("removing", &lock, e)),
            }
        }
        for name in ["index.lock", "HEAD.lock"] {
            let lock = admin.dir.join(name);
            if lock.exists() {
                match std::fs::remove_file(&lock) {
                    Ok(()) => r.stale_locks.push(lock),
                    Err(e) => r.fail(&wt, &Error::io("removing", &lock, e)),
                }
            }
        }
        if !locked && !wt.join(".git").is_file() {
            match ctx.remove_admin(&admin.dir) {
                Ok(()) if half.remove(&wt) => r.half_created.push(wt),
                Ok(()) => r.pruned.push(wt),
                Err(e) => r.fail(&wt, &e),
            }
        }
    }
    Ok(half)
}

/// Registered session worktrees: half-created ones removed, those of sessions not in
/// `live` saved and removed, locked ones left alone.
fn orphans(
    m: &WorktreeManager,
    ctx: &Ctx,
    live: &[String],
    half: &HashSet<PathBuf>,
    r: &mut Reconciled,
) -> Result<()> {
    for w in git::list(&ctx.repo)? {
        if !ctx.is_session_path(&w.path) {
            continue;
        }
        let name = w
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(reason) = &w.locked {
            r.left_alone.push((
                w.path.clone(),
                format!("locked ({reason}): git worktree unlock it"),
            ));
            continue;
        }
        if half.contains(&w.path) {
            match ctx.remove_worktree(&w.path) {
                Ok(()) => r.half_created.push(w.path),
                Err(e) => r.fail(&w.path, &e),
            }
            continue;
        }
        if live.contains(&name) {
            continue;
        }
        let why = "removing the worktree (session no longer configured)";
        match save::save_work(&w.path, &name, &m.protected, why) {
            Ok(saved) => r.saved.extend(saved),
            Err(e) => {
                r.fail(&w.path, &e);
                continue; // never remove what could not be saved
            }
        }
        match ctx.remove_worktree(&w.path) {
            Ok(()) => r.removed.push(w.path),
            Err(e) => r.fail(&w.path, &e),
        }
    }
    Ok(())
}

/// Directories under `dir` that are not registered worktrees.
fn leftover_dirs(ctx: &Ctx, r: &mut Reconciled) -> Result<()> {
    let registered: HashSet<PathBuf> = git::list(&ctx.repo)?.into_iter().map(|w| w.path).collect();
    let entries = std::fs::read_dir(&ctx.dir).map_err(|e| Error::io("listing", &ctx.dir, e))?;
    let ours = ctx.common.join("worktrees");
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", &ctx.dir, e))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') || registered.contains(&path) {
            continue;
        }
        if !ctx.is_session_path(&path) {
            r.left_alone
                .push((path, "not named like a session: not architect's".into()));
            continue;
        }
        if leftover_is_empty(&path) {
            let done = ctx.owned(&path).and_then(|()| {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io("removing", &path, e))
            });
            match done {
                Ok(()) => r.cleared.push(path),
                Err(e) => r.fail(&path, &e),
            }
        } else if git::dotgit_target(&path).is_some_and(|t| t.starts_with(&ours)) {
            match move_aside(ctx, &path) {
                Ok(to) => r.moved_aside.push((path, to)),
                Err(e) => r.fail(&path, &e),
            }
        } else {
            r.left_alone
                .push((path, "not a worktree of this repository".into()));
        }
    }
    Ok(())
}

fn move_aside(ctx: &Ctx, path: &Path) -> Result<PathBuf> {
    ctx.owned(path)?;
    let aside = ctx.dir.join(".orphaned");
    durable::create_dir(&aside)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 1..=100 {
        let to = aside.join(if n == 1 {
            format!("{name}-{stamp}")
        } else {
            format!("{name}-{stamp}-{n}")
        });
        match durable::rename_noreplace(path, &to) {
            Ok(()) => return Ok(to),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Worktree {
        path: path.to_path_buf(),
        message: "could not find a free name under .orphaned".into(),
    })
}

/// Deletes `architect/<session>` branches that no worktree has and that hold no commit
/// beyond `base` (checked against the commit the branch points at, so a branch that moved
/// meanwhile is kept).
fn empty_branches(m: &WorktreeManager, ctx: &Ctx, r: &mut Reconciled) -> Result<()> {
    let Some(base) = ctx.base_oid(&m.base)? else {
        r.failed.push((
            ctx.repo.clone(),
            format!(
                "base branch {:?} (git.base_branch) does not exist: architect/* branches \
                 left alone",
                m.base
            ),
        ));
        return Ok(());
    };
    let checked_out: HashSet<String> = git::list(&ctx.repo)?
        .into_iter()
        .filter_map(|w| w.branch)
        .collect();
    let refs = Git::new(&ctx.repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .arg(format!("refs/heads/{DEFAULT_BRANCH_PREFIX}"))
        .text()?;
    for line in refs.lines() {
        let Some((oid, refname)) = line.split_once(' ') else {
            continue;
        };
        let branch = refname.trim_start_matches("refs/heads/");
        let session = branch.trim_start_matches(DEFAULT_BRANCH_PREFIX);
        if !valid_id(session) || checked_out.contains(branch) {
            continue;
        }
        let ahead = Git::new(&ctx.repo)
            .args(["rev-list", "--count", &format!("{base}..{oid}")])
            .text();
        let done = match ahead {
            Ok(n) if n == "0" => Git::new(&ctx.repo)
                .args(["update-ref", "-d", refname, oid])
                .run()
                .map(|_| true),
            Ok(_) => Ok(false),
            Err(e) => Err(e),
        };
        match done {
            Ok(true) => r.deleted_branches.push(branch.to_owned()),
            Ok(false) => {}
            Err(e) => r.fail(&ctx.repo, &e),
        }
    }
    Ok(())
}
