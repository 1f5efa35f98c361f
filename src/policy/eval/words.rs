//! Words after the shell's expansions: tilde, `$HOME`, braces, substitutions.

use super::{combine, hides_command, short, Arg, Eval, Judge, Outcome, State};
use crate::policy::shell::{self, Part, Subst, Word};
use crate::policy::Decision;

#[derive(Clone, Copy)]
pub(super) enum U<'w> {
    C(char, bool),
    P(&'w Part),
}

fn is_char(u: U<'_>, c: char) -> bool {
    matches!(u, U::C(x, false) if x == c)
}

/// Brace expansion (`{a,b}`) into `out`; false when there would be more than 64 words,
/// more than 16 brace groups, or a sequence (`{a..z}`): then the word is unknown.
pub(super) fn braces<'w>(u: &[U<'w>], out: &mut Vec<Vec<U<'w>>>) -> bool {
    if out.len() > 64 || u.iter().filter(|x| is_char(**x, '{')).count() > 16 {
        return false;
    }
    for open in 0..u.len() {
        if !is_char(u[open], '{') {
            continue;
        }
        let mut depth = 0;
        let mut commas = Vec::new();
        let mut close = None;
        for (k, x) in u.iter().enumerate().skip(open) {
            if is_char(*x, '{') {
                depth += 1;
            } else if is_char(*x, '}') {
                depth -= 1;
                if depth == 0 {
                    close = Some(k);
                    break;
                }
            } else if is_char(*x, ',') && depth == 1 {
                commas.push(k);
            }
        }
        let Some(close) = close else { continue };
        if commas.is_empty() {
            let dots = u[open + 1..close]
                .windows(2)
                .any(|w| is_char(w[0], '.') && is_char(w[1], '.'));
            if dots {
                return false;
            }
            continue;
        }
        let mut bounds = vec![open];
        bounds.extend(commas);
        bounds.push(close);
        for w in bounds.windows(2) {
            let mut v = u[..open].to_vec();
            v.extend_from_slice(&u[w[0] + 1..w[1]]);
            v.extend_from_slice(&u[close + 1..]);
            if !braces(&v, out) {
                return false;
            }
        }
        return true;
    }
    out.push(u.to_vec());
    true
}

impl Eval<'_> {
    pub(super) fn expand(
        &self,
        w: &Word,
        st: &State,
        brace: bool,
        j: &mut Judge,
        out: &mut Outcome,
    ) -> Vec<Arg> {
        let mut programs = Vec::new();
        for p in &w.parts {
            match p {
                Part::CommandSub(s) | Part::ProcessSub(s) => {
                    programs.extend(self.subst(s, st, j, out))
                }
                Part::Opaque(t) if hides_command(t) => match self.scan(t) {
                    Some(v) => j.take(v),
                    None => j.escalate(
                        "escalate.substitution",
                        format!("`{}` hides a command", short(t)),
                    ),
                },
                Part::Opaque(t) => {
                    let (code, assigns) = super::code::opaque_code(t);
                    if code {
                        self.code(t, "the expansion", j);
                    }
                    if let Some(name) = assigns {
                        self.env_var(name, &format!("`{}`", short(t)), false, j);
                    }
                }
                _ => {}
            }
        }
        let mut units = Vec::new();
        for p in &w.parts {
            match p {
                Part::Lit { text, quoted } => units.extend(text.chars().map(|c| U::C(c, *quoted))),
                other => units.push(U::P(other)),
            }
        }
        let mut alts = Vec::new();
        let ok = !brace || braces(&units, &mut alts);
        if !ok || !brace {
            alts = vec![units];
        }
        alts.iter()
            .map(|u| {
                let mut a = self.expand_units(u, st);
                if !ok {
                    a.value = None;
                    a.globby = true;
                }
                a.programs.clone_from(&programs);
                a
            })
            .collect()
    }

    pub(super) fn var(&self, name: &str, st: &State) -> Option<String> {
        match name {
            "HOME" => Some(self.roots.home.to_string_lossy().into_owned()),
            "PWD" => match st.cwds.as_deref() {
                Some([one]) => Some(one.to_string_lossy().into_owned()),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn expand_units(&self, u: &[U<'_>], st: &State) -> Arg {
        let mut value = String::new();
        let mut shown = String::new();
        let mut prefix: Option<usize> = None;
        let mut globby = false;
        let mut i = 0;
        if matches!(u.first(), Some(U::C('~', false))) {
            let end = u
                .iter()
                .position(|x| matches!(x, U::C('/', _)))
                .unwrap_or(u.len());
            let user: Option<String> = u[1..end]
                .iter()
                .map(|x| match x {
                    U::C(c, false) => Some(*c),
                    _ => None,
                })
                .collect();
            if let Some(user) = user {
                let home = match user.as_str() {
                    "" => Some(self.roots.home.to_string_lossy().into_owned()),
                    "+" => self.var("PWD", st),
                    "-" => None,
                    "root" => Some("/root".into()),
                    other => Some(format!("/home/{other}")),
                };
                shown.push('~');
                shown.push_str(&user);
                match home {
                    Some(h) => value.push_str(&h),
                    None => prefix = Some(0),
                }
                i = end;
            }
        }
        for x in &u[i..] {
            let unknown = match x {
                U::C(c, q) => {
                    value.push(*c);
                    shown.push(*c);
                    globby |= !q && matches!(c, '*' | '?' | '[');
                    false
                }
                U::P(Part::Var(name)) => {
                    shown.push('$');
                    shown.push_str(name);
                    match self.var(name, st) {
                        Some(v) => {
                            value.push_str(&v);
                            false
                        }
                        None => true,
                    }
                }
                U::P(Part::Opaque(t)) => {
                    shown.push_str(t);
                    true
                }
                U::P(Part::CommandSub(s)) => {
                    shown.push_str(&format!("$({})", short(&s.source)));
                    true
                }
                U::P(Part::ProcessSub(s)) => {
                    shown.push_str(&format!("<({})", short(&s.source)));
                    true
                }
                U::P(Part::Lit { .. }) => false,
            };
            if unknown && prefix.is_none() {
                prefix = Some(value.len());
            }
        }
        match prefix {
            None => Arg {
                pattern: value.clone(),
                value: Some(value),
                globby,
                shown,
                programs: Vec::new(),
            },
            Some(n) => Arg {
                pattern: format!("{}*", &value[..n]),
                value: None,
                globby: true,
                shown,
                programs: Vec::new(),
            },
        }
    }

    /// Evaluates a substitution's commands; returns the programs they run.
    pub(super) fn subst(
        &self,
        s: &Subst,
        st: &State,
        j: &mut Judge,
        out: &mut Outcome,
    ) -> Vec<String> {
        let shown = short(&s.source);
        match &s.script {
            Ok(script) if st.depth < shell::MAX_DEPTH => {
                let mut inner = State {
                    cwds: st.cwds.clone(),
                    depth: st.depth + 1,
                    stdin_piped: false,
                };
                let mut o = Outcome::default();
                self.script(script, &mut inner, &mut o);
                let v = combine(&o.parts);
                out.programs.extend(o.programs.iter().cloned());
                if v.decision == Decision::Deny {
                    j.deny(&v.rule, format!("inside $({shown}): {}", v.reason));
                } else {
                    j.escalate(
                        "escalate.substitution",
                        format!("$({shown}) runs a command whose output becomes part of the command line"),
                    );
                }
                o.programs
            }
            Ok(_) => {
                j.escalate("escalate.unparsed", "substitutions nested too deeply");
                Vec::new()
            }
            Err(e) => {
                j.take(self.unparsed(&s.source, &e.0));
                Vec::new()
            }
        }
    }
}
