//! Paths a command reads and writes: credentials, the worktree's edges, `[writes]`.

use super::{esc, Arg, Eval, Judge, State};
use crate::policy::paths::{Resolved, Roots};
use crate::policy::programs::{self, listed, positionals};
use crate::policy::{glob, Decision, Verdict};

impl Eval<'_> {
    pub(crate) fn edit(&self, path: &str) -> Verdict {
        let r = self.roots.resolve(path, &self.roots.root, false);
        let shown = self.roots.show(&r.lexical);
        if !self.roots.inside(&r) {
            let reason = format!(
                "editing {shown}, outside the worktree {}",
                self.roots.root.display()
            );
            return if self.p.writes.enabled {
                Verdict::new(Decision::Deny, "deny.write-outside-worktree", reason)
            } else {
                esc("escalate.outside-worktree", reason)
            };
        }
        if self.roots.in_git_dir(&r) && self.p.writes.enabled {
            return Verdict::new(
                Decision::Deny,
                "deny.write-git-dir",
                format!("editing {shown}: files in a git directory (hooks, config) run outside the agent's control"),
            );
        }
        if let Some(pat) = self.code_config(&r) {
            return esc(
                "escalate.code-config",
                format!("editing {shown}, a tool config that can run programs ({pat})"),
            );
        }
        if self.roots.is_root(&r) || !self.p.worktree.edit_inside {
            return esc(
                "escalate.not-allowed",
                format!("no rule allows editing {shown}"),
            );
        }
        Verdict::new(
            Decision::Allow,
            "allow.edit-inside-worktree",
            format!("editing {shown}, inside the worktree"),
        )
    }

    pub(crate) fn read(&self, path: &str) -> Verdict {
        let r = self.roots.resolve(path, &self.roots.root, false);
        let shown = self.roots.show(&r.lexical);
        if let Some(what) = self.credential(&r) {
            return Verdict::new(
                Decision::Deny,
                "deny.credential-read",
                format!("reading {what}, a credential file"),
            );
        }
        if self.roots.inside(&r) && self.p.worktree.read_inside {
            return Verdict::new(
                Decision::Allow,
                "allow.read-inside-worktree",
                format!("reading {shown}, inside the worktree"),
            );
        }
        esc(
            "escalate.outside-worktree",
            format!("reading {shown}, outside the worktree"),
        )
    }

    /// Every place `v` may point to (one per possible current directory); `None` for a
    /// relative path when the current directory is unknown.
    pub(super) fn resolve_all(&self, v: &str, globs: bool, st: &State) -> Vec<Option<Resolved>> {
        let text = self.roots.tilde(v);
        if text.starts_with('/') {
            return vec![Some(self.roots.resolve(&text, &self.roots.root, globs))];
        }
        match &st.cwds {
            Some(cwds) => cwds
                .iter()
                .map(|c| Some(self.roots.resolve(&text, c, globs)))
                .collect(),
            None => vec![None],
        }
    }

    pub(super) fn outside_allowed(&self, r: &Resolved) -> bool {
        let p = r.lexical.to_string_lossy();
        self.p
            .worktree
            .outside_allowed
            .iter()
            .any(|g| glob::path_matches(g, &p, false))
    }

    /// The `[writes] code_configs` glob this path (inside the worktree) matches, if any.
    pub(super) fn code_config(&self, r: &Resolved) -> Option<&str> {
        let mut rels = Vec::new();
        for (p, root) in [
            (Some(&r.lexical), &self.roots.root),
            (Some(&r.lexical), &self.roots.root_phys),
            (r.physical.as_ref(), &self.roots.root_phys),
        ] {
            if let Some(rest) = p.and_then(|p| p.strip_prefix(root).ok()) {
                rels.push(rest.to_string_lossy().into_owned());
            }
        }
        self.p
            .writes
            .code_configs
            .iter()
            .find(|g| rels.iter().any(|rel| glob::path_matches(g, rel, r.globs)))
            .map(String::as_str)
    }

    /// A credential this path is, if any.
    pub(super) fn credential(&self, r: &Resolved) -> Option<String> {
        let c = &self.p.credentials;
        if !c.enabled {
            return None;
        }
        let forms = Roots::forms(r);
        let shown = || self.roots.show(&r.lexical);
        for pat in &c.paths {
            for pf in self.roots.pattern_forms(pat) {
                if forms.iter().any(|f| glob::path_matches(&pf, f, r.globs)) {
                    return Some(shown());
                }
            }
        }
        let last = |f: &String| {
            std::path::Path::new(f)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        };
        // File names count when they are literal: `rm -rf /*` is not "a file named
        // credentials" (path patterns above still see through globs: `cat ~/.ssh/*`).
        let names: Vec<String> = forms
            .iter()
            .filter_map(last)
            .filter(|n| !(r.globs && glob::has_magic(n)))
            .collect();
        let hit = |list: &[String]| {
            list.iter()
                .any(|g| names.iter().any(|n| glob::matches(g, n)))
        };
        if hit(&c.names) || (hit(&c.names_outside_worktree) && !self.roots.inside(r)) {
            return Some(shown());
        }
        None
    }

    pub(super) fn credential_arg(&self, a: &Arg, st: &State, label: &str, j: &mut Judge) {
        if !self.p.credentials.enabled || j.deny.is_some() {
            return;
        }
        let mut cands = vec![a.pattern.clone()];
        if let Some((_, v)) = a.pattern.split_once('=') {
            cands.push(v.to_string());
        }
        for c in cands.clone() {
            if let Some(x) = c.strip_prefix('@') {
                cands.push(x.to_string());
            }
            if let Some(x) = c.strip_prefix("file://") {
                cands.push(x.to_string());
            }
        }
        let cwds = st
            .cwds
            .clone()
            .unwrap_or_else(|| vec![self.roots.root.clone()]);
        for c in &cands {
            if c.is_empty() {
                continue;
            }
            for cwd in &cwds {
                let r = self.roots.resolve(c, cwd, a.globby);
                if let Some(what) = self.credential(&r) {
                    j.deny(
                        "deny.credential-read",
                        format!("{label} touches {what}, a credential file"),
                    );
                    return;
                }
            }
        }
    }

    pub(super) fn read_target(&self, t: &Arg, st: &State, label: &str, j: &mut Judge) {
        let Some(v) = &t.value else {
            j.escalate(
                "escalate.unknown-path",
                format!("{label} reads {}, only known at run time", t.shown),
            );
            return;
        };
        for r in self.resolve_all(v, t.globby, st) {
            match r {
                None => j.escalate(
                    "escalate.unknown-path",
                    format!("{label} reads {v} from an unknown directory"),
                ),
                Some(r) if !self.roots.inside(&r) && !self.outside_allowed(&r) => j.escalate(
                    "escalate.outside-worktree",
                    format!(
                        "{label} reads {}, outside the worktree",
                        self.roots.show(&r.lexical)
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    pub(super) fn write_target(
        &self,
        t: &Arg,
        delete: bool,
        recursive: bool,
        st: &State,
        label: &str,
        j: &mut Judge,
    ) {
        let enabled = self.p.writes.enabled;
        let refuse = |j: &mut Judge, rule: &str, reason: String| {
            if enabled {
                j.deny(rule, reason);
            } else {
                j.escalate("escalate.outside-worktree", reason);
            }
        };
        let Some(v) = &t.value else {
            if delete && recursive {
                refuse(
                    j,
                    "deny.delete-unknown",
                    format!(
                        "{label} deletes recursively a target only known at run time ({})",
                        t.shown
                    ),
                );
            } else {
                j.escalate(
                    "escalate.unknown-path",
                    format!("{label} writes {}, only known at run time", t.shown),
                );
            }
            return;
        };
        for r in self.resolve_all(v, t.globby, st) {
            let Some(r) = r else {
                if delete && recursive {
                    refuse(
                        j,
                        "deny.delete-unknown",
                        format!("{label} deletes {v} in an unknown directory"),
                    );
                } else {
                    j.escalate(
                        "escalate.unknown-path",
                        format!("{label} writes {v} in an unknown directory"),
                    );
                }
                continue;
            };
            let shown = self.roots.show(&r.lexical);
            if self.outside_allowed(&r) {
                continue;
            }
            self.facts.borrow_mut().written.push(r.clone());
            if !self.roots.inside(&r) {
                refuse(
                    j,
                    "deny.write-outside-worktree",
                    format!(
                        "{label} writes {shown}, outside the worktree {}",
                        self.roots.root.display()
                    ),
                );
            } else if delete && self.roots.is_root(&r) {
                refuse(
                    j,
                    "deny.delete-worktree",
                    format!("{label} deletes the whole worktree"),
                );
            } else if self.roots.in_git_dir(&r) {
                refuse(
                    j,
                    "deny.write-git-dir",
                    format!("{label} writes {shown}: files in a git directory (hooks, config) run outside the agent's control"),
                );
            } else if let Some(pat) = self.code_config(&r).filter(|_| !delete) {
                // (Deleting one runs nothing: `rm -rf ./*` stays allowed.)
                j.escalate(
                    "escalate.code-config",
                    format!("{label} writes {shown}, a tool config that can run programs ({pat})"),
                );
            }
        }
    }

    /// The files a program writes or deletes, from `[writes]`.
    pub(super) fn writes(
        &self,
        base: &str,
        args: &[Arg],
        xargs: bool,
        st: &State,
        label: &str,
        j: &mut Judge,
    ) {
        let w = &self.p.writes;
        if !w.enabled {
            return;
        }
        let pos = positionals(args);
        let delete = listed(&w.delete, base);
        let recursive = delete
            && args.iter().filter_map(|a| a.value.as_deref()).any(|v| {
                v == "--recursive"
                    || (v.starts_with('-') && !v.starts_with("--") && v.contains(['r', 'R']))
            });
        let mut targets: Vec<Arg> = Vec::new();
        let mut writes_files = false;
        if listed(&w.every_arg, base) {
            writes_files = true;
            targets.extend(pos.iter().map(|a| (*a).clone()));
        }
        if listed(&w.last_arg, base) {
            writes_files = true;
            let mut dirs = programs::option_values(args, "-t");
            dirs.extend(programs::option_values(args, "--target-directory"));
            if !dirs.is_empty() {
                targets.extend(dirs);
            } else if pos.len() >= 2 {
                targets.extend(pos.last().map(|a| (*a).clone()));
            }
        }
        for spec in &w.options {
            if let Some((prog, opt)) = spec.split_once(' ') {
                if glob::matches(prog, base) {
                    targets.extend(programs::option_values(args, opt.trim()));
                }
            }
        }
        for spec in &w.in_place {
            if let Some((prog, opt)) = spec.split_once(' ') {
                if glob::matches(prog, base) && programs::has_option(args, opt.trim()) {
                    writes_files = true;
                    let script_given = ["-e", "-f", "--expression", "--file"]
                        .iter()
                        .any(|o| !programs::option_values(args, o).is_empty());
                    targets.extend(
                        pos.iter()
                            .skip(usize::from(!script_given))
                            .map(|a| (*a).clone()),
                    );
                }
            }
        }
        if base == "find" {
            let (starts, files) = programs::find_paths(args);
            if programs::has_option(args, "-delete")
                || args.iter().any(|a| a.value.as_deref() == Some("-delete"))
            {
                for s in &starts {
                    self.write_target(s, false, false, st, label, j);
                }
            }
            targets.extend(files.into_iter().cloned());
        }
        if xargs && writes_files {
            targets.push(Arg::unknown("(arguments from xargs)"));
        }
        for t in &targets {
            self.write_target(t, delete, recursive, st, label, j);
        }
    }
}
