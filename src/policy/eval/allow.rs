//! Allow rules: the first `[[allow]]` rule that covers a command approves it.

use super::{esc, Arg, Eval, State};
use crate::policy::file::PathsMode;
use crate::policy::paths::trusted_program_path;
use crate::policy::{glob, suffix, Decision, Rule, Verdict};

impl Eval<'_> {
    pub(super) fn allow_rules(
        &self,
        name: &str,
        base: &str,
        args: &[Arg],
        extra: &[Arg],
        st: &State,
        label: &str,
    ) -> Verdict {
        let vals: Vec<Option<&str>> = args.iter().map(|a| a.value.as_deref()).collect();
        let mut miss = None;
        for rule in &self.p.allow {
            if !rule.applies_to(self.profile()) || !rule.names_program(base) {
                continue;
            }
            let Some(n) = rule.prefix_len(&vals) else {
                continue;
            };
            match self.allow_miss(rule, name, &args[n..], extra, st, label) {
                None => {
                    return Verdict::new(
                        Decision::Allow,
                        &rule.name,
                        format!("{label}{}", suffix(&rule.reason)),
                    );
                }
                Some(m) => {
                    miss.get_or_insert(m);
                }
            }
        }
        miss.unwrap_or_else(|| {
            esc(
                "escalate.not-allowed",
                format!("no allow rule covers {label}"),
            )
        })
    }

    /// Why `rule` does not allow the command (`None`: it does).
    pub(super) fn allow_miss(
        &self,
        rule: &Rule,
        name: &str,
        rest: &[Arg],
        extra: &[Arg],
        st: &State,
        label: &str,
    ) -> Option<Verdict> {
        if !trusted_program_path(name) {
            return Some(esc(
                "escalate.not-allowed",
                format!("{label} runs {name}, not a program from the system directories"),
            ));
        }
        if let Some(a) = rest.iter().chain(extra).find(|a| a.value.is_none()) {
            return Some(esc(
                "escalate.unknown-path",
                format!("{label}: {} is only known at run time", a.shown),
            ));
        }
        let vals: Vec<&str> = rest.iter().filter_map(|a| a.value.as_deref()).collect();
        if let Some(v) = vals
            .iter()
            .find(|v| rule.forbid.iter().any(|g| glob::matches(g, v)))
        {
            return Some(esc(
                "escalate.not-allowed",
                format!("{label}: {v} is not covered by {}", rule.name),
            ));
        }
        let dd = vals.iter().position(|v| *v == "--").unwrap_or(vals.len());
        let is_opt = |i: usize| i < dd && vals[i].starts_with('-') && vals[i].len() > 1;
        if let Some(opts) = &rule.options {
            if let Some(i) = (0..vals.len())
                .find(|&i| is_opt(i) && !opts.iter().any(|g| glob::matches(g, vals[i])))
            {
                return Some(esc(
                    "escalate.not-allowed",
                    format!(
                        "{label}: option {} is not covered by {}",
                        vals[i], rule.name
                    ),
                ));
            }
        }
        let mut script = None;
        if !rule.script.is_empty() {
            let first = (0..vals.len()).find(|&i| !is_opt(i) && vals[i] != "--");
            match first {
                Some(i) if rule.script.iter().any(|re| re.is_match(vals[i])) => script = Some(i),
                _ => {
                    return Some(esc(
                        "escalate.not-allowed",
                        format!("{label}: the script is not one {} covers", rule.name),
                    ))
                }
            }
        }
        if rule.paths == PathsMode::Any {
            return None;
        }
        let mut cands: Vec<(&Arg, String)> = Vec::new();
        for (i, a) in rest.iter().enumerate() {
            if Some(i) == script || vals[i] == "--" && i == dd {
                continue;
            }
            let v = vals[i];
            if is_opt(i) {
                if let Some((_, x)) = v.split_once('=') {
                    cands.push((a, x.to_string()));
                }
            } else {
                cands.push((a, v.to_string()));
                if let Some((_, x)) = v.split_once('=') {
                    cands.push((a, x.to_string()));
                }
            }
        }
        for a in extra {
            cands.extend(a.value.clone().map(|v| (a, v)));
        }
        for (a, c) in cands {
            if c.is_empty() {
                continue;
            }
            for r in self.resolve_all(&c, a.globby, st) {
                let Some(r) = r else {
                    return Some(esc(
                        "escalate.unknown-path",
                        format!("{label}: {c} is relative to a directory only known at run time"),
                    ));
                };
                if !self.roots.inside(&r) && !self.outside_allowed(&r) {
                    return Some(esc(
                        "escalate.outside-worktree",
                        format!(
                            "{label} reaches {}, outside the worktree",
                            self.roots.show(&r.lexical)
                        ),
                    ));
                }
            }
        }
        None
    }
}
