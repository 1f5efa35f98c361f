//! git's own checks: which repository a git command works in.

use std::path::Path;

use super::{esc, Eval, Judge, State};
use crate::policy::paths::Resolved;
use crate::policy::programs::GitSplit;
use crate::policy::Verdict;

/// git subcommands that leave the working tree's files as they are (they may write into
/// the git directory). Any other may write anywhere in the worktree (checkout, merge,
/// stash, …).
const KEEPS_FILES: &[&str] = &[
    "status",
    "diff",
    "log",
    "show",
    "rev-parse",
    "ls-files",
    "ls-tree",
    "blame",
    "grep",
    "shortlog",
    "describe",
    "show-ref",
    "cat-file",
    "merge-base",
    "rev-list",
    "for-each-ref",
    "name-rev",
    "add",
    "commit",
    "branch",
    "tag",
    "reflog",
    "fetch",
    "push",
    "remote",
    "config",
    "version",
    "--version",
    "help",
];

impl Eval<'_> {
    /// Escalates a git command whose repository is not the session's own: `--bare`, a
    /// `--git-dir` other than the worktree's `.git`, a `--work-tree` other than the
    /// worktree, or a directory (`-C`, `cd`) that is not an existing directory of the
    /// worktree or that is or lies in another repository (a `.git`, a `HEAD` of its
    /// own). Another repository's config runs programs (core.fsmonitor, core.pager).
    pub(super) fn git_repo(
        &self,
        g: &GitSplit,
        sub: Option<&str>,
        st: &State,
        label: &str,
        j: &mut Judge,
    ) {
        if !sub.is_some_and(|s| KEEPS_FILES.contains(&s)) {
            self.facts.borrow_mut().wrote_anywhere = true;
        }
        let other = |j: &mut Judge, why: String| {
            j.escalate(
                "escalate.git-other-repo",
                format!("{label} {why}: not the session's repository, whose config could run programs (core.fsmonitor, core.pager)"),
            );
        };
        if g.bare {
            return other(j, "takes its directory for a bare repository".into());
        }
        let Some(cwds) = &st.cwds else {
            return other(j, "runs in a directory only known at run time".into());
        };
        for cwd in cwds {
            let mut dir = cwd.clone();
            for c in &g.chdirs {
                let Some(v) = &c.value else {
                    return other(j, format!("runs in {}, only known at run time", c.shown));
                };
                if !v.is_empty() {
                    dir = self.roots.resolve(v, &dir, c.globby).lexical;
                }
            }
            let at = |a: &crate::policy::eval::Arg| -> Option<Resolved> {
                a.value
                    .as_deref()
                    .map(|v| self.roots.resolve(v, &dir, a.globby))
            };
            if let Some(gd) = &g.git_dir {
                let own = self.roots.root.join(".git");
                let own_phys = self.roots.root_phys.join(".git");
                let ok = at(gd).is_some_and(|r| {
                    !r.globs && (r.lexical == own || r.physical.as_deref() == Some(&own_phys))
                });
                if !ok {
                    return other(j, format!("uses the git directory {}", gd.shown));
                }
            }
            if let Some(wt) = &g.work_tree {
                if !at(wt).is_some_and(|r| !r.globs && self.roots.is_root(&r)) {
                    return other(j, format!("uses the work tree {}", wt.shown));
                }
            }
            if g.git_dir.is_some() {
                continue;
            }
            let r = self.roots.resolve(&dir.to_string_lossy(), &self.roots.root, false);
            if self.roots.is_root(&r) {
                continue;
            }
            let shown = self.roots.show(&dir);
            match self.roots.other_repo(&dir) {
                Err(()) => {
                    return other(
                        j,
                        format!("runs in {shown}, not an existing directory of the worktree"),
                    )
                }
                Ok(Some(repo)) => {
                    return other(
                        j,
                        format!("runs in {shown}, in the repository {}", self.roots.show(&repo)),
                    )
                }
                Ok(None) => self
                    .facts
                    .borrow_mut()
                    .git_dirs
                    .push((r, label.to_string())),
            }
        }
    }

    /// A git command allowed to run in a subdirectory, on a command line that also writes
    /// there (or runs git that may rewrite any file): the directory could become another
    /// repository (`HEAD`, `objects/`, `refs/`, `config`) before git reads it.
    pub(super) fn git_dir_race(&self) -> Option<Verdict> {
        let f = self.facts.borrow();
        for (d, label) in &f.git_dirs {
            let top = |p: &Path, root: &Path| {
                p.strip_prefix(root)
                    .ok()
                    .and_then(|rest| rest.components().next())
                    .map(|c| root.join(c))
            };
            let tops: Vec<_> = [
                top(&d.lexical, &self.roots.root),
                d.physical
                    .as_deref()
                    .and_then(|p| top(p, &self.roots.root_phys)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let hit = f.wrote_anywhere
                || f.written.iter().any(|w| {
                    tops.iter().any(|t| {
                        w.lexical.starts_with(t)
                            || w.physical.as_deref().is_some_and(|p| p.starts_with(t))
                    })
                });
            if hit {
                return Some(esc(
                    "escalate.git-other-repo",
                    format!(
                        "{label} runs git in {}, which this command line also changes: it could become another repository (HEAD, config) before git reads it",
                        self.roots.show(&d.lexical)
                    ),
                ));
            }
        }
        None
    }
}
