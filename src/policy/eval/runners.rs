//! Redirections, wrappers, interpreters, git, `cd`: what a command runs and where.

use super::{esc, union, Arg, Eval, Judge, Outcome, State};
use crate::policy::paths::{basename, normalize};
use crate::policy::programs::{self, listed, positionals};
use crate::policy::shell::{self, RedirOp, Redirect};
use crate::policy::{glob, Decision, Verdict};

impl Eval<'_> {
    pub(super) fn redirect(
        &self,
        r: &Redirect,
        st: &State,
        label: &str,
        j: &mut Judge,
        out: &mut Outcome,
        code_in: &mut Vec<String>,
    ) {
        match r.op {
            RedirOp::HereDoc | RedirOp::HereString => {
                j.escalate(
                    "escalate.heredoc",
                    format!("{label} reads a here-document or here-string, which is not checked line by line"),
                );
                let words = match &r.heredoc {
                    Some(h) if h.expands => {
                        match shell::parse_heredoc_body(&h.body.borrow(), st.depth + 1) {
                            Ok(w) => vec![w],
                            Err(e) => {
                                j.take(self.unparsed(&h.body.borrow(), &e.0));
                                Vec::new()
                            }
                        }
                    }
                    Some(_) => Vec::new(),
                    None => vec![r.target.clone()],
                };
                for w in &words {
                    for a in self.expand(w, st, false, j, out) {
                        code_in.extend(a.programs);
                    }
                }
            }
            _ => {
                for t in self.expand(&r.target, st, false, j, out) {
                    let fd = matches!(r.op, RedirOp::DupIn | RedirOp::DupOut)
                        && t.value.as_deref().is_some_and(|v| {
                            v == "-" || (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
                        });
                    if fd {
                        continue;
                    }
                    self.credential_arg(&t, st, label, j);
                    if matches!(
                        r.op,
                        RedirOp::Write
                            | RedirOp::Append
                            | RedirOp::ReadWrite
                            | RedirOp::DupOut
                            | RedirOp::WriteBoth
                    ) {
                        self.write_target(&t, false, false, st, label, j);
                    }
                    if matches!(r.op, RedirOp::Read | RedirOp::ReadWrite | RedirOp::DupIn) {
                        self.read_target(&t, st, label, j);
                    }
                }
            }
        }
    }

    /// Peels wrappers (`env`, `nohup`, `timeout`, `xargs`, …) off a command; checks the
    /// deny rules at every layer. Returns the inner command and whether xargs adds
    /// arguments to it.
    pub(super) fn unwrap(
        &self,
        mut words: Vec<Arg>,
        st: &State,
        label: &str,
        j: &mut Judge,
    ) -> (Vec<Arg>, bool) {
        let mut xargs = false;
        while let Some(name) = words.first().and_then(|w| w.value.clone()) {
            let base = basename(&name).to_string();
            self.deny_rules(&base, &words[1..], j);
            let Some(spec) = programs::wrapper(&base) else {
                break;
            };
            let args = &words[1..];
            let u = programs::unwrap(&base, &spec, args);
            for o in &u.unknown {
                j.escalate(
                    "escalate.not-allowed",
                    format!("{label}: {base} option {o} is not known to the policy"),
                );
                // Whatever the option means, a denied program further on is still denied.
                for a in args {
                    if let Some(v) = a.value.as_deref() {
                        self.deny_rules(basename(v), &[], j);
                    }
                }
            }
            for (opt, val) in &u.values {
                match (base.as_str(), *opt) {
                    ("env", "-C" | "--chdir") => j.escalate(
                        "escalate.not-allowed",
                        format!("{label}: env {opt} runs the command in another directory"),
                    ),
                    ("env", "-S" | "--split-string") => {
                        let text = val.value.as_deref().unwrap_or("");
                        j.take(self.scan(text).unwrap_or_else(|| {
                            esc(
                                "escalate.not-allowed",
                                format!("{label}: env {opt} builds the command from a string"),
                            )
                        }));
                    }
                    ("time", "-o" | "--output") => {
                        let v = val
                            .value
                            .as_deref()
                            .map(|v| v.split_once('=').map_or(v, |(_, x)| x));
                        let t = v.map_or_else(|| Arg::unknown(&val.shown), |v| val.with_value(v));
                        self.write_target(&t, false, false, st, label, j);
                    }
                    ("xargs", "-a" | "--arg-file") => self.read_target(val, st, label, j),
                    _ => {}
                }
            }
            for (n, _) in &u.assigns {
                self.env_var(n, label, true, j);
            }
            if u.stopped {
                break;
            }
            if base == "xargs" {
                xargs = true;
            }
            let mut inner = args[u.start..].to_vec();
            if base == "xargs" {
                // `-I R`: R in the command's words is replaced by input we cannot see.
                let repl = u
                    .values
                    .iter()
                    .find(|(o, _)| matches!(*o, "-I" | "--replace"))
                    .and_then(|(o, v)| {
                        v.value
                            .as_deref()
                            .map(|v| v.strip_prefix(&format!("{o}=")).unwrap_or(v))
                    })
                    .map(|v| {
                        v.strip_prefix("-I")
                            .filter(|r| !r.is_empty())
                            .unwrap_or(v)
                            .to_string()
                    })
                    .or_else(|| {
                        args[..u.start]
                            .iter()
                            .any(|a| a.value.as_deref() == Some("-i"))
                            .then(|| "{}".to_string())
                    });
                if let Some(r) = repl {
                    for w in &mut inner {
                        if let Some(at) = w.value.as_deref().and_then(|v| v.find(r.as_str())) {
                            let prefix = w.value.as_deref().unwrap_or("")[..at].to_string();
                            w.value = None;
                            w.pattern = format!("{prefix}*");
                            w.globby = true;
                        }
                    }
                }
            }
            if inner.is_empty() {
                if matches!(base.as_str(), "exec" | "builtin") {
                    words.clear();
                } else if base == "xargs" {
                    words = vec![Arg::known("echo")];
                }
                break;
            }
            words = inner;
        }
        (words, xargs)
    }

    pub(super) fn deny_rules(&self, base: &str, args: &[Arg], j: &mut Judge) {
        let sub_args = if base == "git" {
            &args[programs::git_split(args).sub..]
        } else {
            args
        };
        let vals: Vec<Option<&str>> = sub_args.iter().map(|a| a.value.as_deref()).collect();
        for r in &self.p.deny {
            if !r.applies_to(self.profile())
                || !r.names_program(base)
                || r.prefix_len(&vals).is_none()
            {
                continue;
            }
            let hit = r.args.is_empty()
                || vals
                    .iter()
                    .flatten()
                    .any(|v| r.args.iter().any(|g| glob::matches(g, v)));
            if hit {
                j.deny(&r.name, r.reason.clone());
                return;
            }
        }
    }

    /// A program name that is a glob (`/usr/bin/su*`) is denied when it could expand to a
    /// program a deny rule names outright.
    pub(super) fn deny_glob_program(&self, name: &str, j: &mut Judge) {
        let pat = basename(name);
        for r in &self.p.deny {
            if r.applies_to(self.profile())
                && r.subcommands.is_empty()
                && r.args.is_empty()
                && r.programs
                    .iter()
                    .any(|p| !glob::has_magic(p) && glob::matches(pat, p))
            {
                j.deny(
                    &r.name,
                    format!("{} (the program name {name} could expand to it)", r.reason),
                );
                return;
            }
        }
    }

    pub(super) fn env_var(&self, name: &str, label: &str, exported: bool, j: &mut Judge) {
        let e = &self.p.env;
        if !e.enabled {
            return;
        }
        if listed(&e.deny, name) {
            j.deny(
                "deny.env-exec",
                format!("{label} sets {name}, which can make programs run other programs or load other code"),
            );
        } else if exported && !listed(&e.allow, name) {
            j.escalate(
                "escalate.env",
                format!("{label} sets {name}, which no [env] allow entry covers"),
            );
        }
    }

    // ---- code runners -------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub(super) fn pipe_checks(
        &self,
        base: &str,
        args: &[Arg],
        piped: bool,
        is_shell: bool,
        code_in: &[String],
        label: &str,
        j: &mut Judge,
    ) {
        let pipe = &self.p.pipe;
        if !pipe.enabled {
            return;
        }
        let interpreter = is_shell || listed(&pipe.interpreters, base);
        if !interpreter && !matches!(base, "eval" | "source" | "." | "watch") {
            return;
        }
        if interpreter && piped && programs::reads_code_from_stdin(args, is_shell) {
            j.deny(
                "deny.pipe-to-shell",
                format!("{label} runs code it reads from a pipe"),
            );
            return;
        }
        let downloads = args
            .iter()
            .flat_map(|a| &a.programs)
            .chain(code_in)
            .find(|p| listed(&pipe.downloaders, p));
        if let Some(d) = downloads {
            j.deny(
                "deny.pipe-to-shell",
                format!("{label} runs code that {d} downloads"),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn shell_c(
        &self,
        base: &str,
        args: &[Arg],
        st: &State,
        piped: bool,
        label: &str,
        j: &mut Judge,
        out: &mut Outcome,
    ) -> Option<Verdict> {
        let mut i = 0;
        let mut dash_c = false;
        while let Some(v) = args.get(i).and_then(|a| a.value.as_deref()) {
            if v == "--" || v == "-" {
                i += 1;
                break;
            }
            if let Some(long) = v.strip_prefix("--") {
                if matches!(long, "rcfile" | "init-file") {
                    j.escalate("escalate.script", format!("{label} reads a start-up file"));
                    i += 1;
                }
                i += 1;
                continue;
            }
            if (v.starts_with('-') || v.starts_with('+')) && v.len() > 1 {
                let flags = &v[1..];
                dash_c |= v.starts_with('-') && flags.contains('c');
                i += if flags.ends_with('o') || flags.ends_with('O') {
                    2
                } else {
                    1
                };
                continue;
            }
            break;
        }
        if !dash_c {
            if let Some(script) = args.get(i) {
                j.escalate(
                    "escalate.script",
                    format!(
                        "{label} runs the script {}, whose contents are not checked",
                        script.shown
                    ),
                );
            } else if !piped {
                j.escalate(
                    "escalate.not-allowed",
                    format!("{label} starts an interactive shell"),
                );
            }
            return None;
        }
        let Some(cmd) = args.get(i) else {
            j.escalate(
                "escalate.not-allowed",
                format!("{label}: -c without a command"),
            );
            return None;
        };
        let Some(text) = &cmd.value else {
            j.escalate(
                "escalate.substitution",
                format!("{label} runs a command string only known at run time"),
            );
            return None;
        };
        if st.depth >= shell::MAX_DEPTH {
            j.escalate("escalate.unparsed", "shells nested too deeply");
            return None;
        }
        let inner = State {
            cwds: st.cwds.clone(),
            depth: st.depth + 1,
            stdin_piped: piped,
        };
        let v = self.text(text, inner, &mut out.programs);
        match v.decision {
            Decision::Deny => {
                j.deny(&v.rule, format!("in {base} -c: {}", v.reason));
                None
            }
            Decision::Escalate => {
                j.escalate(&v.rule, v.reason);
                None
            }
            Decision::Allow => Some(Verdict::new(
                Decision::Allow,
                &v.rule,
                format!("{base} -c: {}", v.reason),
            )),
        }
    }

    /// `eval WORDS`, `watch CMD`: the words are a command line. Denied if it is, never
    /// allowed.
    pub(super) fn eval_words(
        &self,
        base: &str,
        args: &[Arg],
        st: &State,
        label: &str,
        j: &mut Judge,
        out: &mut Outcome,
    ) {
        let mut args = args;
        if base == "watch" {
            while let Some(v) = args.first().and_then(|a| a.value.as_deref()) {
                if !v.starts_with('-') {
                    break;
                }
                let takes = matches!(
                    v,
                    "-n" | "--interval" | "-d" | "-q" | "--equexit" | "--chgexit"
                );
                args = &args[if takes { 2.min(args.len()) } else { 1 }..];
            }
        }
        j.escalate(
            "escalate.eval",
            format!("{label} runs its arguments as a command line; that is never approved automatically"),
        );
        let words: Option<Vec<&str>> = args.iter().map(|a| a.value.as_deref()).collect();
        let Some(words) = words else { return };
        if words.is_empty() || st.depth >= shell::MAX_DEPTH {
            return;
        }
        let inner = State {
            cwds: st.cwds.clone(),
            depth: st.depth + 1,
            stdin_piped: false,
        };
        let v = self.text(&words.join(" "), inner, &mut out.programs);
        if v.decision == Decision::Deny {
            j.deny(&v.rule, format!("in {base}: {}", v.reason));
        }
    }

    pub(super) fn git_push(&self, args: &[Arg], label: &str, j: &mut Judge) {
        let t = programs::push_targets(args);
        if t.all {
            j.deny(
                "deny.git-push-protected",
                format!("{label} pushes every branch, protected ones included"),
            );
        }
        for (name, deleted) in &t.refs {
            let hit = self.ctx.protected_branches.iter().find(|p| {
                glob::matches(p, name) || (glob::has_magic(name) && glob::matches(name, p))
            });
            if let Some(p) = hit {
                let what = if *deleted { "delete" } else { "update" };
                j.deny(
                    "deny.git-push-protected",
                    format!("{label} would {what} the protected branch {p}"),
                );
            }
        }
    }

    pub(super) fn cd(&self, base: &str, args: &[Arg], st: &mut State, next_and: bool) {
        let pos = positionals(args);
        let target: Option<String> = match (base, pos.first()) {
            ("popd", _) | ("pushd", None) => None,
            (_, None) => Some(self.roots.home.to_string_lossy().into_owned()),
            (_, Some(a)) if a.globby => None,
            (_, Some(a)) => a.value.clone().filter(|v| v.as_str() != "-"),
        };
        let new = match (target, &st.cwds) {
            (Some(t), _) if self.roots.tilde(&t).starts_with('/') => {
                Some(vec![normalize(std::path::Path::new(&self.roots.tilde(&t)))])
            }
            (Some(t), Some(cwds)) => Some(
                cwds.iter()
                    .map(|c| self.roots.resolve(&t, c, false).lexical)
                    .collect(),
            ),
            _ => None,
        };
        st.cwds = if next_and {
            new
        } else {
            union(st.cwds.take(), new)
        };
    }
}
