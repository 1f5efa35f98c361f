//! git's own checks: which repository a git command works in.

use super::{esc, Eval, Judge, State};
use crate::policy::paths::Resolved;
use crate::policy::programs::GitSplit;
use crate::policy::{glob, Verdict};

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
            let r = self
                .roots
                .resolve(&dir.to_string_lossy(), &self.roots.root, false);
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
                        format!(
                            "runs in {shown}, in the repository {}",
                            self.roots.show(&repo)
                        ),
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

    /// A git command allowed to run in a subdirectory, on a command line that also makes
    /// a repository on its way (writes a `HEAD`, `objects`, `refs`, `config`, `.git`,
    /// `commondir` in it or in a directory above it, or writes over one of those
    /// directories: `mv evil src`), or that runs git that may rewrite any file
    /// (checkout, merge, stash): the directory could become another repository before git
    /// reads it. Other writes there (`cargo test > src/test.log`) change nothing.
    pub(super) fn git_dir_race(&self) -> Option<Verdict> {
        const MAKES_A_REPO: &[&str] = &[".git", "head", "objects", "refs", "config", "commondir"];
        let f = self.facts.borrow();
        for (d, label) in &f.git_dirs {
            let pairs = [
                (Some(&d.lexical), &self.roots.root, false),
                (d.physical.as_ref(), &self.roots.root_phys, true),
            ];
            let hit = f.wrote_anywhere
                || f.written.iter().any(|w| {
                    pairs.iter().any(|(dp, root, phys)| {
                        let Some(dp) = dp else { return false };
                        let wp = if *phys {
                            w.physical.as_ref()
                        } else {
                            Some(&w.lexical)
                        };
                        let Some(wp) = wp else { return false };
                        let special = wp.file_name().is_some_and(|n| {
                            MAKES_A_REPO
                                .contains(&n.to_string_lossy().to_ascii_lowercase().as_str())
                        });
                        let on_the_way = wp
                            .parent()
                            .is_some_and(|p| p != root.as_path() && dp.starts_with(p));
                        dp.starts_with(wp) || (special && on_the_way)
                    })
                });
            if hit {
                return Some(esc(
                    "escalate.git-other-repo",
                    format!(
                        "{label} runs git in {}, which this command line could turn into another repository (HEAD, config) before git reads it",
                        self.roots.show(&d.lexical)
                    ),
                ));
            }
        }
        None
    }
}

/// Options of a git subcommand, read the way git's parse-options does: short clusters
/// (`-Dq`), values attached or not (`-Bmain`, `-B main`, `--force-create=main`), `--`.
struct GitOpts {
    /// Short letters and long names (without dashes) given.
    flags: Vec<String>,
    /// Positional arguments and option values (`None`: only known at run time).
    words: Vec<Option<String>>,
    /// Positional arguments only.
    positionals: usize,
}

impl GitOpts {
    fn read(args: &[crate::policy::eval::Arg], short_values: &str, long_values: &[&str]) -> Self {
        let mut o = GitOpts {
            flags: Vec::new(),
            words: Vec::new(),
            positionals: 0,
        };
        let mut i = 0;
        let mut dashdash = false;
        while i < args.len() {
            let v = args[i].value.as_deref();
            i += 1;
            match v {
                Some("--") if !dashdash => dashdash = true,
                Some(v) if !dashdash && v.starts_with("--") => {
                    let (name, inline) = match v[2..].split_once('=') {
                        Some((n, x)) => (n, Some(x.to_string())),
                        None => (&v[2..], None),
                    };
                    o.flags.push(name.to_string());
                    if let Some(x) = inline {
                        o.words.push(Some(x));
                    } else if long_values.iter().any(|l| l.starts_with(name)) {
                        o.words.push(args.get(i).and_then(|a| a.value.clone()));
                        i += 1;
                    }
                }
                Some(v) if !dashdash && v.starts_with('-') && v.len() > 1 => {
                    for (k, c) in v[1..].char_indices() {
                        o.flags.push(c.to_string());
                        if short_values.contains(c) {
                            let rest = &v[1 + k + c.len_utf8()..];
                            if rest.is_empty() {
                                o.words.push(args.get(i).and_then(|a| a.value.clone()));
                                i += 1;
                            } else {
                                o.words.push(Some(rest.to_string()));
                            }
                            break;
                        }
                    }
                }
                other => {
                    o.words.push(other.map(String::from));
                    o.positionals += 1;
                }
            }
        }
        o
    }

    /// Whether a short letter or a long option (or an abbreviation git would take for
    /// it: `--forc`) was given.
    fn has(&self, short: &[char], long: &[&str]) -> bool {
        self.flags.iter().any(|f| {
            let mut cs = f.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => short.contains(&c),
                _ => long
                    .iter()
                    .any(|l| f.len() >= 2 && l.starts_with(f.as_str())),
            }
        })
    }
}

impl Eval<'_> {
    /// The protected branch `name` (a branch, `refs/heads/x`, `x@{1}`) is, if any.
    fn protected(&self, name: &str, remote: bool) -> Option<String> {
        let name = name.split("@{").next().unwrap_or(name);
        let name = name
            .strip_prefix("refs/heads/")
            .or_else(|| name.strip_prefix("heads/"))
            .unwrap_or(name);
        let mut names = vec![name];
        if remote {
            let name = name.strip_prefix("refs/remotes/").unwrap_or(name);
            names.extend(name.split_once('/').map(|(_, b)| b));
        }
        self.ctx.protected_branches.iter().find_map(|p| {
            names
                .iter()
                .any(|n| glob::matches(p, n) || (glob::has_magic(n) && glob::matches(n, p)))
                .then(|| p.clone())
        })
    }

    /// Local git that deletes or forces branches or destroys recovery data: denied when
    /// a protected branch is concerned, escalated otherwise. `args` start at the
    /// subcommand.
    pub(super) fn git_destructive(
        &self,
        args: &[crate::policy::eval::Arg],
        label: &str,
        j: &mut Judge,
    ) {
        let Some(sub) = args.first().and_then(|a| a.value.as_deref()) else {
            return;
        };
        let rest = &args[1..];
        // (what it does, the words that may name branches, whether they are
        // remote-tracking names, whether it is destructive whatever they name)
        let (what, o, remote, always): (&str, GitOpts, bool, bool) = match sub {
            "branch" => {
                let o = GitOpts::read(
                    rest,
                    "u",
                    &[
                        "set-upstream-to",
                        "contains",
                        "no-contains",
                        "merged",
                        "no-merged",
                        "points-at",
                        "format",
                        "sort",
                    ],
                );
                let delete = o.has(&['d', 'D'], &["delete"]);
                let moves = o.has(&['m', 'M'], &["move"]);
                let copy = o.has(&['c', 'C'], &["copy"]);
                let force = o.has(&['f', 'D', 'M', 'C'], &["force"]);
                let remote = o.has(&['r'], &["remotes"]);
                if delete {
                    ("deletes", o, remote, true)
                } else if moves {
                    let current = o.positionals < 2;
                    ("renames", o, false, force || current)
                } else if copy && force {
                    ("overwrites", o, false, true)
                } else if force {
                    ("resets", o, false, true)
                } else {
                    return;
                }
            }
            "checkout" | "switch" => {
                let o = GitOpts::read(
                    rest,
                    "bBcC",
                    &["orphan", "create", "force-create", "conflict"],
                );
                let force = o.has(&['f'], &["force", "discard-changes"]);
                let reset = if sub == "checkout" {
                    o.has(&['B'], &[])
                } else {
                    o.has(&['C'], &["force-create"])
                };
                if !(force || reset) {
                    return;
                }
                let what = if reset {
                    "resets"
                } else {
                    "throws away local changes on the way to"
                };
                (what, o, false, true)
            }
            "reflog"
                if matches!(
                    rest.first().and_then(|a| a.value.as_deref()),
                    Some("expire" | "delete")
                ) =>
            {
                let o = GitOpts::read(&rest[1..], "", &[]);
                if o.has(&[], &["all"]) {
                    return j.deny(
                        "deny.git-destructive",
                        format!("{label} expires every reflog, the protected branches' included: their recovery data"),
                    );
                }
                ("expires the reflog of", o, false, true)
            }
            "update-ref" => {
                let o = GitOpts::read(rest, "m", &[]);
                let always = o.has(&['d'], &["stdin"]);
                ("moves or deletes", o, false, always)
            }
            "stash"
                if matches!(
                    rest.first().and_then(|a| a.value.as_deref()),
                    Some("clear" | "drop")
                ) =>
            {
                return j.escalate(
                    "escalate.git-destructive",
                    format!("{label} deletes stashed changes for good"),
                );
            }
            "gc" | "prune" => {
                let o = GitOpts::read(rest, "", &[]);
                if sub == "prune" || o.has(&[], &["prune"]) {
                    return j.escalate(
                        "escalate.git-destructive",
                        format!("{label} deletes unreachable objects, the last copy of lost work"),
                    );
                }
                return;
            }
            _ => return,
        };
        for w in o.words.iter().flatten() {
            if let Some(p) = self.protected(w, remote) {
                return j.deny(
                    "deny.git-destructive",
                    format!("{label} {what} the protected branch {p}"),
                );
            }
        }
        if always {
            j.escalate(
                "escalate.git-destructive",
                format!("{label} {what} a branch or its recovery data"),
            );
        }
    }
}
