//! Evaluation of a parsed command line: every simple command gets a verdict, and the
//! verdicts are combined (any deny wins; all allowed allows; otherwise escalate).

use std::cell::RefCell;
use std::path::PathBuf;

use super::glob;
use super::paths::{basename, Resolved, Roots};
use super::programs::{self, listed, positionals};
use super::shell::{self, Command, Compound, Connector, Script, Simple, Word};
use super::{Context, Decision, Policy, Verdict};

mod allow;
mod code;
mod git;
mod runners;
mod targets;
mod words;

pub(crate) use super::arg::Arg;

/// What the shell state is while a command line runs.
#[derive(Debug, Clone)]
struct State {
    /// The directories the shell may stand in (`None`: unknown, after `cd $X`).
    cwds: Option<Vec<PathBuf>>,
    /// Nesting of substitutions and `bash -c`.
    depth: usize,
    /// Standard input comes from a pipe (inside `… | { …; }`).
    stdin_piped: bool,
}

#[derive(Default)]
struct Outcome {
    parts: Vec<Verdict>,
    programs: Vec<String>,
}

/// The first deny and the first escalation found for one command.
#[derive(Default)]
struct Judge {
    deny: Option<Verdict>,
    escalate: Option<Verdict>,
}

impl Judge {
    fn deny(&mut self, rule: &str, reason: impl Into<String>) {
        if self.deny.is_none() {
            self.deny = Some(Verdict::new(Decision::Deny, rule, reason));
        }
    }

    fn escalate(&mut self, rule: &str, reason: impl Into<String>) {
        if self.escalate.is_none() {
            self.escalate = Some(Verdict::new(Decision::Escalate, rule, reason));
        }
    }

    fn take(&mut self, v: Verdict) {
        match v.decision {
            Decision::Deny => self.deny(&v.rule, v.reason),
            Decision::Escalate => self.escalate(&v.rule, v.reason),
            Decision::Allow => {}
        }
    }

    fn verdict(self) -> Option<Verdict> {
        self.deny.or(self.escalate)
    }
}

pub(super) fn esc(rule: &str, reason: impl Into<String>) -> Verdict {
    Verdict::new(Decision::Escalate, rule, reason)
}

pub(super) fn union(a: Option<Vec<PathBuf>>, b: Option<Vec<PathBuf>>) -> Option<Vec<PathBuf>> {
    let (mut a, b) = (a?, b?);
    for p in b {
        if !a.contains(&p) {
            a.push(p);
        }
    }
    (a.len() <= 8).then_some(a)
}

/// Any deny wins; then any escalation; allowed only when every part is.
pub(super) fn combine(parts: &[Verdict]) -> Verdict {
    if parts.is_empty() {
        return esc("escalate.empty", "there is nothing to run");
    }
    if let Some(v) = parts.iter().find(|v| v.decision == Decision::Deny) {
        return v.clone();
    }
    if let Some(v) = parts.iter().find(|v| v.decision == Decision::Escalate) {
        return v.clone();
    }
    if parts.len() == 1 {
        return parts[0].clone();
    }
    let mut rules: Vec<&str> = Vec::new();
    for v in parts {
        for r in v.rule.split(", ") {
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
    }
    let reasons: Vec<&str> = parts.iter().map(|v| v.reason.as_str()).collect();
    Verdict::new(Decision::Allow, &rules.join(", "), reasons.join("; "))
}

/// Whether an expansion we do not compute (`${x:-…}`, `$((…))`) has a command inside.
pub(super) fn hides_command(t: &str) -> bool {
    let inner = ["$((", "${", "$["]
        .iter()
        .find_map(|o| t.strip_prefix(o))
        .unwrap_or(t);
    inner.contains("$(") || inner.contains('`') || inner.contains("<(") || inner.contains(">(")
}

pub(super) fn short(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s
    }
}

fn label(words: &[Arg]) -> String {
    if words.is_empty() {
        return "the redirection".into();
    }
    let s: Vec<&str> = words.iter().map(|a| a.shown.as_str()).collect();
    format!("`{}`", short(&s.join(" ")))
}

/// Whether a command (a function body) calls `name`.
fn calls(c: &Command, name: &str) -> bool {
    let in_script = |s: &Script| {
        s.iter().any(|ao| {
            std::iter::once(&ao.first)
                .chain(ao.rest.iter().map(|(_, p)| p))
                .any(|p| p.commands.iter().any(|c| calls(c, name)))
        })
    };
    match c {
        Command::Simple(s) => s
            .words
            .first()
            .and_then(Word::literal)
            .is_some_and(|w| w == name),
        Command::Compound(k, _) => match k {
            Compound::Subshell(s) | Compound::Group(s) => in_script(s),
            Compound::If(parts) => parts.iter().any(in_script),
            Compound::Loop(a, b) => in_script(a) || in_script(b),
            Compound::For { body, .. } => in_script(body),
        },
        Command::Function { body, .. } => calls(body, name),
    }
}

/// What the walk of one command line learns beyond verdicts, for checks across its parts.
#[derive(Default)]
struct Facts {
    /// Paths written (inside the worktree or not).
    written: Vec<Resolved>,
    /// A git command that may rewrite any file of the worktree ran (checkout, merge, …).
    wrote_anywhere: bool,
    /// Subdirectories git was allowed to run in, with the command's label.
    git_dirs: Vec<(Resolved, String)>,
}

pub(crate) struct Eval<'a> {
    p: &'a Policy,
    ctx: &'a Context,
    roots: Roots,
    facts: RefCell<Facts>,
}

impl<'a> Eval<'a> {
    pub(crate) fn new(p: &'a Policy, ctx: &'a Context) -> Self {
        Self {
            p,
            ctx,
            roots: Roots::new(&ctx.worktree, &ctx.home),
            facts: RefCell::default(),
        }
    }

    fn profile(&self) -> Option<&str> {
        self.ctx.profile.as_deref()
    }

    // ---- entry points ---------------------------------------------------------------

    pub(crate) fn command_line(&self, line: &str) -> Verdict {
        if line.trim().is_empty() {
            return esc("escalate.empty", "the command line is empty");
        }
        let st = State {
            cwds: Some(vec![self.roots.root.clone()]),
            depth: 0,
            stdin_piped: false,
        };
        let v = self.text(line, st, &mut Vec::new());
        if v.decision == Decision::Allow {
            if let Some(race) = self.git_dir_race() {
                return race;
            }
        }
        v
    }

    /// Parses and evaluates a command line, a `bash -c` string or eval's words.
    fn text(&self, text: &str, mut st: State, programs: &mut Vec<String>) -> Verdict {
        match shell::parse_at_depth(text, st.depth) {
            Ok(script) => {
                let mut out = Outcome::default();
                self.script(&script, &mut st, &mut out);
                programs.extend(out.programs);
                combine(&out.parts)
            }
            Err(e) => self.unparsed(text, &e.0),
        }
    }

    fn unparsed(&self, text: &str, why: &str) -> Verdict {
        self.scan(text).unwrap_or_else(|| {
            esc(
                "escalate.unparsed",
                format!(
                    "the command line could not be parsed ({why}); nothing unparsed is allowed"
                ),
            )
        })
    }

    /// Looks through text we could not parse for recognisably dangerous words: a program
    /// a deny rule names outright, a credential path.
    fn scan(&self, text: &str) -> Option<Verdict> {
        let cleaned: String = text
            .chars()
            .filter(|c| !matches!(c, '\'' | '"' | '\\'))
            .collect();
        let seps = |c: char| c.is_whitespace() || ";|&()<>`${}".contains(c);
        for tok in cleaned.split(seps).filter(|t| !t.is_empty()) {
            let base = basename(tok);
            if let Some(r) = self.p.deny.iter().find(|r| {
                r.applies_to(self.profile())
                    && r.subcommands.is_empty()
                    && r.args.is_empty()
                    && r.names_program(base)
            }) {
                return Some(Verdict::new(
                    Decision::Deny,
                    &r.name,
                    format!(
                        "{} (found `{base}` in text that could not be fully parsed)",
                        r.reason
                    ),
                ));
            }
            let r = self
                .roots
                .resolve(tok, &self.roots.root, glob::has_magic(tok));
            if let Some(what) = self.credential(&r) {
                return Some(Verdict::new(
                    Decision::Deny,
                    "deny.credential-read",
                    format!("mentions {what}, a credential file, in text that could not be fully parsed"),
                ));
            }
        }
        None
    }

    // ---- the walk ---------------------------------------------------------------------

    fn script(&self, s: &Script, st: &mut State, out: &mut Outcome) {
        for ao in s {
            let before = st.cwds.clone();
            let pipes: Vec<_> = std::iter::once(&ao.first)
                .chain(ao.rest.iter().map(|(_, p)| p))
                .collect();
            for (i, p) in pipes.iter().enumerate() {
                let next_and = ao.rest.get(i).is_some_and(|(c, _)| *c == Connector::And);
                if p.commands.len() == 1 {
                    self.command(&p.commands[0], st, false, next_and && !ao.background, out);
                } else {
                    // Each part of a pipeline runs in a subshell.
                    let mut after = st.cwds.clone();
                    for (k, c) in p.commands.iter().enumerate() {
                        let mut sub = st.clone();
                        self.command(c, &mut sub, k > 0, false, out);
                        after = union(after, sub.cwds);
                    }
                    st.cwds = after;
                }
            }
            // A later command may run whether or not a `cd` in this chain did.
            st.cwds = union(before, st.cwds.take());
        }
    }

    fn command(&self, c: &Command, st: &mut State, piped: bool, next_and: bool, out: &mut Outcome) {
        match c {
            Command::Simple(s) => self.simple(s, st, piped, next_and, out),
            Command::Compound(k, redirects) => {
                let mut j = Judge::default();
                for r in redirects {
                    self.redirect(r, st, "the compound command", &mut j, out, &mut Vec::new());
                }
                out.parts.extend(j.verdict());
                let saved = st.stdin_piped;
                st.stdin_piped |= piped;
                match k {
                    Compound::Subshell(s) => self.script(s, &mut st.clone(), out),
                    Compound::Group(s) => self.script(s, st, out),
                    Compound::If(parts) => {
                        let before = st.cwds.clone();
                        for p in parts {
                            self.script(p, st, out);
                        }
                        st.cwds = union(before, st.cwds.take());
                    }
                    Compound::Loop(cond, body) => {
                        out.parts
                            .push(esc("escalate.loop", "loops are not approved automatically"));
                        let mut inner = st.clone();
                        self.script(cond, &mut inner, out);
                        self.script(body, &mut inner, out);
                        st.cwds = union(st.cwds.take(), inner.cwds);
                    }
                    Compound::For { var, words, body } => {
                        out.parts.push(esc(
                            "escalate.loop",
                            format!("a loop over ${var} is not approved automatically"),
                        ));
                        let mut j = Judge::default();
                        self.env_var(var, &format!("the loop over ${var}"), false, &mut j);
                        for w in words {
                            for a in self.expand(w, st, true, &mut j, out) {
                                self.credential_arg(&a, st, "the for loop", &mut j);
                            }
                        }
                        out.parts.extend(j.verdict());
                        let mut inner = st.clone();
                        self.script(body, &mut inner, out);
                        st.cwds = union(st.cwds.take(), inner.cwds);
                    }
                }
                st.stdin_piped = saved;
            }
            Command::Function { name, body } => {
                if self.p.shell.fork_bomb && calls(body, name) {
                    out.parts.push(Verdict::new(
                        Decision::Deny,
                        "deny.fork-bomb",
                        format!("the function {name} calls itself: the shape of a fork bomb"),
                    ));
                }
                out.parts.push(esc(
                    "escalate.function",
                    format!("defining the shell function {name} is not approved automatically"),
                ));
                self.command(body, &mut st.clone(), false, false, out);
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    fn simple(&self, cmd: &Simple, st: &mut State, piped: bool, next_and: bool, out: &mut Outcome) {
        let mut j = Judge::default();
        let piped = piped || st.stdin_piped;
        let mut words = Vec::new();
        for w in &cmd.words {
            words.extend(self.expand(w, st, true, &mut j, out));
        }
        let label = label(&words);
        for a in &cmd.assigns {
            for v in self.expand(&a.value, st, false, &mut j, out) {
                self.credential_arg(&v, st, &label, &mut j);
            }
            // Alone (`FOO=1`), an assignment sets a shell variable: only the deny list
            // matters (PATH and friends are exported already).
            self.env_var(&a.name, &label, !cmd.words.is_empty(), &mut j);
            if let Some(sub) = &a.subscript {
                // `a[i]=x`: the subscript is arithmetic (or, for an associative array, a
                // word); either way it is evaluated.
                for v in self.expand(sub, st, false, &mut j, out) {
                    if !v.value.as_deref().is_some_and(code::plain_subscript) {
                        self.code(&format!("{}[{}]", a.name, v.shown), &label, &mut j);
                    }
                }
            }
        }
        let mut code_in = Vec::new();
        for r in &cmd.redirects {
            self.redirect(r, st, &label, &mut j, out, &mut code_in);
        }
        let (words, xargs) = self.unwrap(words, st, &label, &mut j);

        let Some(first) = words.first() else {
            let what = if cmd.assigns.is_empty() {
                "redirects only"
            } else {
                "sets shell variables"
            };
            let fallback = Verdict::new(
                Decision::Allow,
                "allow.no-command",
                format!("{label}: {what}"),
            );
            out.parts.push(j.verdict().unwrap_or(fallback));
            return;
        };
        let Some(name) = first.value.clone() else {
            j.escalate(
                "escalate.unknown-program",
                format!("the program `{}` is only known at run time", first.shown),
            );
            out.parts.extend(j.verdict());
            return;
        };
        if first.globby {
            self.deny_glob_program(&name, &mut j);
        }
        let base = basename(&name).to_string();
        out.programs.push(base.clone());
        let args = &words[1..];
        for a in args {
            self.credential_arg(a, st, &label, &mut j);
        }

        let mut extra_paths = Vec::new();
        let mut cmd_args = args;
        if base == "git" {
            let g = programs::git_split(args);
            if let Some(o) = &g.config_override {
                if self.p.git.config_override {
                    j.deny(
                        "deny.git-config-override",
                        format!("{label}: `{o}` can set options that run programs (core.sshCommand, core.pager, alias.*)"),
                    );
                }
            }
            if let Some(u) = &g.unknown {
                j.escalate(
                    "escalate.not-allowed",
                    format!("{label}: git option {u} is not known to the policy"),
                );
            }
            cmd_args = &args[g.sub..];
            let sub = cmd_args.first().and_then(|a| a.value.as_deref());
            self.git_repo(&g, sub, st, &label, &mut j);
            if self.p.git.destructive {
                self.git_destructive(cmd_args, &label, &mut j);
            }
            extra_paths.extend(g.paths);
            if cmd_args.first().and_then(|a| a.value.as_deref()) == Some("push")
                && self.p.git.push_protected
            {
                self.git_push(&cmd_args[1..], &label, &mut j);
            }
        }
        if base == "date" {
            if let Some(why) = programs::date_changes(cmd_args) {
                j.escalate("escalate.not-allowed", format!("{label}: {why}"));
            }
        }
        if matches!(
            base.as_str(),
            "export" | "declare" | "typeset" | "local" | "readonly"
        ) {
            // `pattern`: the name is known even when the value is not (`PATH=/x:$PATH`).
            for a in args.iter().map(|a| a.pattern.as_str()) {
                if let Some((n, _)) = a.split_once('=') {
                    if programs::is_env_name(n.trim_end_matches('+')) {
                        self.env_var(n.trim_end_matches('+'), &label, true, &mut j);
                    }
                }
            }
        }
        if base == "export" {
            let flags: String = args
                .iter()
                .filter_map(|a| a.value.as_deref())
                .filter(|v| v.starts_with('-') && v.len() > 1)
                .flat_map(|v| v[1..].chars())
                .collect();
            if flags.contains('f') {
                j.escalate(
                    "escalate.function",
                    format!("{label} exports shell functions, which child shells run in place of commands"),
                );
            }
            if !flags.contains('n') {
                // `FOO=x` alone sets a shell variable; `export FOO` then puts it in the
                // environment of every command after: the same as `export FOO=x`.
                for a in args.iter().filter_map(|a| a.value.as_deref()) {
                    if programs::is_env_name(a) {
                        self.env_var(a, &label, true, &mut j);
                    }
                }
            }
        }
        self.code_builtins(&base, cmd_args, &label, &mut j);
        self.writes(&base, cmd_args, xargs, st, &label, &mut j);

        let is_shell = listed(&self.p.shell.shells, &base);
        self.pipe_checks(&base, args, piped, is_shell, &code_in, &label, &mut j);
        let mut via = None;
        if is_shell {
            via = self.shell_c(&base, args, st, piped, &label, &mut j, out);
        } else if base == "eval" || base == "watch" {
            self.eval_words(&base, args, st, &label, &mut j, out);
        } else if base == "source" || base == "." {
            let what = args.first().map_or("a script", |a| a.shown.as_str());
            j.escalate(
                "escalate.script",
                format!("{label} runs {what} in this shell; its contents are not checked"),
            );
        }
        if xargs {
            j.escalate(
                "escalate.xargs",
                format!("{label} gets more arguments from its input, which cannot be checked"),
            );
        }
        let cd = matches!(base.as_str(), "cd" | "pushd" | "popd");
        if cd {
            let pos = positionals(cmd_args);
            match pos.first().and_then(|a| a.value.as_deref()) {
                None if pos.is_empty() => {
                    extra_paths.push(Arg::known(&self.roots.home.to_string_lossy()))
                }
                Some("-") => extra_paths.push(Arg::unknown("-")),
                _ => {}
            }
        }

        let verdict = match j.verdict() {
            Some(v) => v,
            None => via.unwrap_or_else(|| {
                self.allow_rules(&name, &base, cmd_args, &extra_paths, st, &label)
            }),
        };
        out.parts.push(verdict);
        if cd {
            self.cd(&base, cmd_args, st, next_and);
        }
    }
}
