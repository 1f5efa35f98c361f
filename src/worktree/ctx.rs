//! Where things are, for one call: canonical paths, the checks that keep every change
//! inside `dir`, and the git operations on whole worktrees and branches.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::git::{self, Git, Listed};
use super::WorktreeManager;
use crate::durable;
use crate::error::{Error, Result};
use crate::types::valid_id;

/// Canonical paths of one call.
pub(super) struct Ctx {
    /// The repository, canonical.
    pub(super) repo: PathBuf,
    /// `WorktreeManager::dir`, canonical.
    pub(super) dir: PathBuf,
    /// The repository's common git directory, canonical.
    pub(super) common: PathBuf,
    /// The main working tree; `None` for a bare repository.
    pub(super) toplevel: Option<PathBuf>,
}

impl WorktreeManager {
    /// [`Self::context`], creating `dir`.
    pub(super) fn created_context(&self) -> Result<Ctx> {
        self.context(true)?.ok_or_else(|| Error::Worktree {
            path: self.dir.clone(),
            message: "could not be created".into(),
        })
    }

    /// Resolves the paths and checks that `dir` is well placed, then creates `dir` (mode
    /// 0700) when `create`; without `create`, a missing `dir` gives `None`. Nothing is
    /// created before the repository is found and the place checked.
    pub(super) fn context(&self, create: bool) -> Result<Option<Ctx>> {
        let canon = |p: &Path, what: &str| {
            std::fs::canonicalize(p).map_err(|e| Error::io(format!("resolving {what}"), p, e))
        };
        let repo = canon(&self.repo, "repository")?;
        let common = Git::new(&repo)
            .args(["rev-parse", "--git-common-dir"])
            .text()?;
        let common = canon(&repo.join(common), "git directory")?;
        let (top, _) = Git::new(&repo)
            .args(["rev-parse", "--show-toplevel"])
            .output()?;
        let toplevel = if top.success() {
            let t = String::from_utf8_lossy(&top.stdout).trim_end().to_owned();
            Some(canon(Path::new(&t), "working tree")?)
        } else {
            None
        };
        let check = |dir: &Path| {
            let misplaced = |message: &str| {
                Err(Error::Worktree {
                    path: dir.to_path_buf(),
                    message: format!(
                        "{message}; the worktrees directory (git.worktrees_dir) must be a \
                         directory of its own, such as .architect/worktrees"
                    ),
                })
            };
            if toplevel.as_ref().is_some_and(|t| t.starts_with(dir)) {
                return misplaced("is the repository's working tree or contains it");
            }
            if common.starts_with(dir) || dir.starts_with(&common) {
                return misplaced("is inside the repository's git directory or contains it");
            }
            Ok(())
        };
        check(&resolve_lenient(&self.dir)?)?;
        if create {
            durable::create_dir(&self.dir)?;
        } else if !self.dir.is_dir() {
            return Ok(None);
        }
        let dir = canon(&self.dir, "worktrees directory")?;
        check(&dir)?;
        Ok(Some(Ctx {
            repo,
            dir,
            common,
            toplevel,
        }))
    }
}

/// `path` made absolute and resolved as far as it exists: its deepest existing ancestor
/// canonicalized, the rest appended (after lexical `..` removal).
fn resolve_lenient(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("reading current directory", path, e))?
            .join(path)
    };
    let abs = git::normalize(&abs);
    let mut existing = abs.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let rest = abs.strip_prefix(existing).unwrap_or(Path::new(""));
            return Ok(real.join(rest));
        }
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return Ok(abs),
        }
    }
}

impl Ctx {
    /// A path directly under `dir` named like a session.
    pub(super) fn is_session_path(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path())
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(valid_id)
    }

    /// `path` if it may be deleted: a session path that is a real directory (not a
    /// symlink).
    pub(super) fn owned(&self, path: &Path) -> Result<()> {
        let real_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        if self.is_session_path(path) && real_dir {
            Ok(())
        } else {
            Err(Error::Worktree {
                path: path.to_path_buf(),
                message: format!(
                    "refusing to remove: not a directory directly under {}",
                    self.dir.display()
                ),
            })
        }
    }

    /// `git worktree remove --force --force` (dirty and locked too) of a session path.
    pub(super) fn remove_worktree(&self, path: &Path) -> Result<()> {
        self.owned(path)?;
        Git::new(&self.repo)
            .args(["worktree", "remove", "--force", "--force"])
            .arg(path)
            .run()
            .map(drop)
    }

    /// Forgets a broken registration of a session path: `git worktree remove` when the
    /// directory still has its `.git` file, else the administrative directory is deleted
    /// (what `git worktree prune` does, for this worktree only).
    pub(super) fn drop_registration(&self, w: &Listed) -> Result<()> {
        if w.path.join(".git").is_file() {
            return self.remove_worktree(&w.path);
        }
        for admin in git::admin_entries(&self.common)? {
            if admin.worktree.as_deref() == Some(w.path.as_path()) {
                self.remove_admin(&admin.dir)?;
            }
        }
        Ok(())
    }

    /// Deletes `<common>/worktrees/<id>`.
    pub(super) fn remove_admin(&self, admin: &Path) -> Result<()> {
        if admin.parent() != Some(self.common.join("worktrees").as_path()) {
            return Err(Error::Worktree {
                path: admin.to_path_buf(),
                message: "refusing to remove: not a worktree administrative directory".into(),
            });
        }
        std::fs::remove_dir_all(admin).map_err(|e| Error::io("removing", admin, e))
    }

    /// `git worktree add <path> <branch>` into a fresh 0700 directory. A leftover at
    /// `path` that holds nothing (empty, or only a `.git` file) is cleared first.
    pub(super) fn add(&self, path: &Path, branch: &str) -> Result<()> {
        if std::fs::symlink_metadata(path).is_ok() {
            if leftover_is_empty(path) {
                self.owned(path)?;
                std::fs::remove_dir_all(path).map_err(|e| Error::io("removing", path, e))?;
            } else {
                return Err(Error::Worktree {
                    path: path.to_path_buf(),
                    message: "exists and is not a worktree of the repository; move it away \
                              (architect never deletes files it did not create)"
                        .into(),
                });
            }
        }
        durable::create_dir(path)?;
        Git::new(&self.repo)
            .args(["worktree", "add", "--quiet"])
            .arg(path)
            .arg(branch)
            .run()
            .map(drop)
    }

    /// The commit `refs/heads/<branch>` points at.
    pub(super) fn branch_oid(&self, branch: &str) -> Result<Option<String>> {
        Git::new(&self.repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/heads/{branch}^{{commit}}"))
            .query()
    }

    /// The commit `base` names: the local branch, else any revision.
    pub(super) fn base_oid(&self, base: &str) -> Result<Option<String>> {
        if let Some(oid) = self.branch_oid(base)? {
            return Ok(Some(oid));
        }
        if base.starts_with('-') {
            return Ok(None);
        }
        Git::new(&self.repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{base}^{{commit}}"))
            .query()
    }

    /// Creates `branch` at `base` (no upstream); gives its commit.
    pub(super) fn create_branch(&self, branch: &str, base: &str) -> Result<String> {
        let Some(oid) = self.base_oid(base)? else {
            return Err(Error::Worktree {
                path: self.repo.clone(),
                message: format!(
                    "base branch {base:?} (git.base_branch) does not exist, so branch \
                     {branch:?} cannot be created"
                ),
            });
        };
        Git::new(&self.repo)
            .args(["branch", "--no-track", branch, &oid])
            .run()?;
        Ok(oid)
    }

    /// Deletes `branch` if it still points at `oid` and no worktree has it.
    pub(super) fn delete_branch_if_free(&self, branch: &str, oid: &str) -> Result<bool> {
        if git::list(&self.repo)?
            .iter()
            .any(|w| w.branch.as_deref() == Some(branch))
        {
            return Ok(false);
        }
        Git::new(&self.repo)
            .args(["update-ref", "-d"])
            .arg(format!("refs/heads/{branch}"))
            .arg(oid)
            .run()?;
        Ok(true)
    }

    /// Adds `/<dir>/` to `<common>/info/exclude` when `dir` is inside the working tree.
    pub(super) fn exclude_dir(&self) -> Result<()> {
        let Some(rel) = self
            .toplevel
            .as_ref()
            .and_then(|t| self.dir.strip_prefix(t).ok())
            .and_then(Path::to_str)
        else {
            return Ok(());
        };
        let mut line = String::from("/");
        for c in rel.chars() {
            if matches!(c, '\\' | '*' | '?' | '[' | ' ' | '!' | '#') {
                line.push('\\');
            }
            line.push(c);
        }
        line.push('/');
        let path = self.common.join("info").join("exclude");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        if text.lines().any(|l| l.trim_end() == line) {
            return Ok(());
        }
        durable::create_dir(&self.common.join("info"))?;
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(format!("{sep}# architect: session worktrees\n{line}\n").as_bytes())
            })
            .map_err(|e| Error::io("appending to", &path, e))
    }
}

/// An existing directory with nothing in it but, perhaps, a `.git` file: what a
/// `git worktree add` killed before its checkout leaves.
pub(super) fn leftover_is_empty(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    std::fs::read_dir(path).is_ok_and(|entries| {
        entries.into_iter().all(|e| {
            e.is_ok_and(|e| e.file_name() == ".git" && e.file_type().is_ok_and(|t| t.is_file()))
        })
    })
}
