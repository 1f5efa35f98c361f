//! Keeping uncommitted work: a commit built with a private index, so that neither the
//! worktree's index nor a merge or rebase in progress there gets in the way, and no hook
//! runs.
//!
//! Why a commit and not `git stash`: stashes live in one stack shared by every worktree
//! and the user's own checkout (`refs/stash` is in the common git directory), where a
//! `git stash pop` in the main checkout would apply a session's work to it, and where
//! they are easy to drop by mistake. A commit on the branch the work was done for is
//! where anyone reviewing that branch will look.

use std::path::{Path, PathBuf};

use super::git::{Git, IDENTITY};
use super::{SavedWork, SAVED_BRANCH_PREFIX};
use crate::error::{Error, Result};

/// Commits the worktree's files (tracked and untracked, not ignored) on top of its
/// `HEAD`, when they differ from it; gives where the work went, or `None` when there was
/// nothing to keep. On a branch (not a protected one), the branch moves to the new
/// commit; otherwise a new `architect-saved/<session>-<time>` branch holds it. A detached
/// `HEAD` that no branch contains is kept the same way, even with nothing uncommitted.
/// The worktree itself is not changed.
pub(super) fn save_work(
    path: &Path,
    session: &str,
    protected: &[String],
    why: &str,
) -> Result<Option<SavedWork>> {
    let head = Git::new(path)
        .args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        .query()?;
    let on_branch = Git::new(path)
        .args(["symbolic-ref", "--quiet", "HEAD"])
        .query()?
        .and_then(|r| r.strip_prefix("refs/heads/").map(str::to_owned));
    let tree = snapshot_tree(path, head.as_deref())?;
    let head_tree = match &head {
        Some(h) => Some(
            Git::new(path)
                .args(["rev-parse", &format!("{h}^{{tree}}")])
                .text()?,
        ),
        None => None,
    };
    let commit = if head_tree.as_deref() == Some(tree.as_str()) {
        None
    } else {
        Some(commit_tree(path, &tree, head.as_deref(), session, why)?)
    };
    let Some(tip) = commit.clone().or(head.clone()) else {
        return Ok(None); // no commit at all and nothing to commit
    };
    let reflog = format!("architect: saved work of session {session} before {why}");
    match on_branch {
        Some(b) if !protected.iter().any(|p| p.eq_ignore_ascii_case(&b)) => {
            let Some(commit) = commit else {
                return Ok(None);
            };
            Git::new(path)
                .args(["update-ref", "-m", &reflog])
                .arg(format!("refs/heads/{b}"))
                .arg(&commit)
                .arg(head.unwrap_or_default())
                .run()?;
            Ok(Some(SavedWork {
                session: session.to_owned(),
                branch: b,
                commit,
                new_branch: false,
            }))
        }
        _ => {
            if commit.is_none() && contained_in_a_branch(path, &tip)? {
                return Ok(None);
            }
            let branch = new_saved_branch(path, session, &tip, &reflog)?;
            Ok(Some(SavedWork {
                session: session.to_owned(),
                branch,
                commit: tip,
                new_branch: true,
            }))
        }
    }
}

/// The tree of the worktree's files as `git add -A` sees them, through a private index.
fn snapshot_tree(path: &Path, head: Option<&str>) -> Result<String> {
    let gitdir = PathBuf::from(
        Git::new(path)
            .args(["rev-parse", "--absolute-git-dir"])
            .text()?,
    );
    let index = gitdir.join(format!("architect-save-{}.index", std::process::id()));
    let git = || Git::new(path).env("GIT_INDEX_FILE", &index);
    let tree = (|| {
        match head {
            Some(h) => git().args(["read-tree", h]).run()?,
            None => git().args(["read-tree", "--empty"]).run()?,
        };
        git().args(["add", "--all"]).run()?;
        git().arg("write-tree").text()
    })();
    let _ = std::fs::remove_file(&index);
    tree
}

fn commit_tree(
    path: &Path,
    tree: &str,
    parent: Option<&str>,
    session: &str,
    why: &str,
) -> Result<String> {
    let (name, email) = IDENTITY;
    let subject = format!("architect: work saved from worktree of session {session}");
    let body = format!(
        "The session left these changes uncommitted; architect committed them before \
         {why}, so that they are not lost. Tracked and untracked files are included, \
         ignored files are not."
    );
    let mut git = Git::new(path)
        .env("GIT_AUTHOR_NAME", name)
        .env("GIT_AUTHOR_EMAIL", email)
        .env("GIT_COMMITTER_NAME", name)
        .env("GIT_COMMITTER_EMAIL", email)
        .args(["commit-tree", "--no-gpg-sign", tree]);
    if let Some(p) = parent {
        git = git.args(["-p", p]);
    }
    git.args(["-m", &subject, "-m", &body]).text()
}

fn contained_in_a_branch(path: &Path, commit: &str) -> Result<bool> {
    let out = Git::new(path)
        .args([
            "for-each-ref",
            "--count=1",
            "--format=%(refname)",
            "--contains",
        ])
        .args([commit, "refs/heads/"])
        .text()?;
    Ok(!out.is_empty())
}

/// Creates `architect-saved/<session>-<UTC time>` (with `-2`, `-3`… when taken) at
/// `commit`; never moves an existing branch.
fn new_saved_branch(path: &Path, session: &str, commit: &str, reflog: &str) -> Result<String> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    for n in 1..=100 {
        let branch = if n == 1 {
            format!("{SAVED_BRANCH_PREFIX}{session}-{stamp}")
        } else {
            format!("{SAVED_BRANCH_PREFIX}{session}-{stamp}-{n}")
        };
        // An empty old value: only if the ref does not exist yet.
        let (out, _) = Git::new(path)
            .args(["update-ref", "-m", reflog])
            .arg(format!("refs/heads/{branch}"))
            .args([commit, ""])
            .output()?;
        if out.success() {
            return Ok(branch);
        }
    }
    Err(Error::Worktree {
        path: path.to_path_buf(),
        message: format!("could not create a {SAVED_BRANCH_PREFIX}{session}-… branch"),
    })
}

/// Makes a worktree whose work is saved ready to change branch: abandons a rebase,
/// `am`, cherry-pick or revert in progress (their commits stay where they are), then
/// `reset --hard` and `clean -fd` (ignored files stay: they are build output).
pub(super) fn settle(path: &Path) -> Result<()> {
    let gitdir = PathBuf::from(
        Git::new(path)
            .args(["rev-parse", "--absolute-git-dir"])
            .text()?,
    );
    if gitdir.join("rebase-apply").join("applying").exists() {
        Git::new(path).args(["am", "--quit"]).run()?;
    } else if gitdir.join("rebase-apply").exists() || gitdir.join("rebase-merge").exists() {
        Git::new(path).args(["rebase", "--quit"]).run()?;
    }
    if gitdir.join("sequencer").exists() {
        Git::new(path).args(["cherry-pick", "--quit"]).run()?;
    }
    Git::new(path).args(["reset", "--quiet", "--hard"]).run()?;
    Git::new(path)
        .args(["clean", "-f", "-d", "--quiet"])
        .run()?;
    Ok(())
}
