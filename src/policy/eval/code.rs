//! Where bash evaluates text as code without a `$(…)` in sight: arithmetic (`[[ x -eq y ]]`,
//! `$((…))`, `let`), array subscripts (`test -v 'a[…]'`, `printf -v 'a[…]'`, `a[…]=x`,
//! `${a[i]}`), indirection (`${!x}`) and prompt expansion (`${x@P}`). A variable named
//! there is evaluated in turn, so `[[ x -eq 0 ]]` runs whatever `$(…)` x holds. And the
//! builtins that assign variables by name (`printf -v`, `read`, `mapfile`, `getopts`,
//! `declare -n`, `for NAME in`): the names the `[env]` deny list protects are denied
//! there as in `NAME=value`.

use super::{Arg, Eval, Judge};
use crate::policy::programs::{self, is_env_name};

/// `0`, `42`, `-1`: arithmetic that names nothing.
fn integer(s: &str) -> bool {
    let d = s.strip_prefix(['-', '+']).unwrap_or(s);
    !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
}

/// A subscript that evaluates nothing: digits, or `@`/`*`.
pub(super) fn plain_subscript(s: &str) -> bool {
    integer(s) || s == "@" || s == "*"
}

/// `NAME` and its subscript, for `NAME[SUB]` (`None` when there is none).
fn split_subscript(v: &str) -> (&str, Option<&str>) {
    match v.split_once('[') {
        Some((n, rest)) => (n, Some(rest.strip_suffix(']').unwrap_or(rest))),
        None => (v, None),
    }
}

/// The `${…}` operators after a name that evaluate nothing beyond the words they carry.
const PARAM_OPS: &[&str] = &[
    ":-", ":=", ":?", ":+", "-", "=", "?", "+", "##", "#", "%%", "%", "//", "/#", "/%", "/", "^^",
    "^", ",,", ",", "@Q", "@E", "@A", "@K", "@a", "@u", "@U", "@L", "@k",
];

/// Whether an expansion we do not compute (`$((…))`, `$[…]`, `${…}`) evaluates code:
/// arithmetic naming a variable, a subscript that is not a plain number, `${!x}`,
/// `${x:offset}`, `${x@P}`. Returns the name it assigns with `${NAME:=…}`, if any, as
/// the second item.
pub(super) fn opaque_code(t: &str) -> (bool, Option<&str>) {
    if let Some(body) = t
        .strip_prefix("$((")
        .and_then(|b| b.strip_suffix("))"))
        .or_else(|| t.strip_prefix("$[").and_then(|b| b.strip_suffix(']')))
    {
        let names = body
            .chars()
            .any(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '[' | '`'));
        return (names, None);
    }
    let Some(body) = t.strip_prefix("${").and_then(|b| b.strip_suffix('}')) else {
        return (true, None);
    };
    let body = body
        .strip_prefix('#')
        .filter(|b| !b.is_empty())
        .unwrap_or(body);
    let name_len = if body.starts_with(|c: char| "@*#?$!-".contains(c) || c.is_ascii_digit()) {
        1
    } else {
        body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len())
    };
    if name_len == 0 || body.starts_with('!') {
        return (true, None); // `${!x}`, `${!x[@]}`: indirection
    }
    let (name, mut rest) = body.split_at(name_len);
    if let Some(after) = rest.strip_prefix('[') {
        let Some((sub, more)) = after.split_once(']') else {
            return (true, None);
        };
        if !plain_subscript(sub) {
            return (true, None);
        }
        rest = more;
    }
    if rest.is_empty() {
        return (false, None);
    }
    let Some(op) = PARAM_OPS.iter().find(|op| rest.starts_with(**op)) else {
        return (true, None); // `${x:1}`, `${x@P}`, …
    };
    let word = &rest[op.len()..];
    // A nested expansion in the word is not looked into: count it as code.
    let nested = word.contains("${") || word.contains("$[") || word.contains("$((");
    let assigns = matches!(*op, ":=" | "=").then_some(name);
    (nested, assigns)
}

impl Eval<'_> {
    /// Text bash evaluates as code: denied when something recognisably dangerous is in
    /// it, escalated otherwise.
    pub(super) fn code(&self, text: &str, label: &str, j: &mut Judge) {
        match self.scan(text) {
            Some(v) => j.take(v),
            None => j.escalate(
                "escalate.arithmetic",
                format!("{label}: `{text}` is evaluated as arithmetic or an array subscript, where bash runs any command substitution it, or a variable it names, holds"),
            ),
        }
    }

    /// A variable a builtin assigns by name: its subscript is code unless it is a plain
    /// number; a name [env] denies is denied.
    pub(super) fn var_target(&self, a: &Arg, label: &str, j: &mut Judge) {
        let Some(v) = a.value.as_deref() else {
            return j.escalate(
                "escalate.arithmetic",
                format!("{label} assigns the variable {}, only known at run time (a subscript in it would be code)", a.shown),
            );
        };
        let (name, sub) = split_subscript(v);
        if is_env_name(name) {
            self.env_var(name, label, false, j);
        }
        if sub.is_some_and(|s| !plain_subscript(s)) || (!is_env_name(name) && v.contains('$')) {
            self.code(v, label, j);
        }
    }

    /// The builtins that evaluate arithmetic or subscripts, or assign variables by name.
    pub(super) fn code_builtins(&self, base: &str, args: &[Arg], label: &str, j: &mut Judge) {
        let val = |a: &Arg| a.value.clone().unwrap_or_else(|| a.shown.clone());
        match base {
            "[[" | "test" | "[" => {
                for (i, a) in args.iter().enumerate() {
                    let op = a.value.as_deref().unwrap_or("");
                    if op == "-v" {
                        if let Some(x) = args.get(i + 1) {
                            let v = val(x);
                            let (_, sub) = split_subscript(&v);
                            if x.value.is_none() || sub.is_some_and(|s| !plain_subscript(s)) {
                                self.code(&v, label, j);
                            }
                        }
                    }
                    // Only `[[` evaluates the operands of -eq & co.; test and [ want
                    // integers.
                    let arith = matches!(op, "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge");
                    if base == "[[" && arith {
                        for x in [i.checked_sub(1).and_then(|k| args.get(k)), args.get(i + 1)]
                            .into_iter()
                            .flatten()
                        {
                            if !x.value.as_deref().is_some_and(integer) {
                                self.code(&val(x), label, j);
                            }
                        }
                    }
                }
            }
            "printf" => {
                let mut i = 0;
                while let Some(v) = args.get(i).and_then(|a| a.value.as_deref()) {
                    if v == "--" || !v.starts_with('-') {
                        break;
                    }
                    if v == "-v" {
                        if let Some(t) = args.get(i + 1) {
                            self.var_target(t, label, j);
                        }
                        i += 2;
                    } else if let Some(name) = v.strip_prefix("-v") {
                        self.var_target(&args[i].with_value(name), label, j);
                        i += 1;
                    } else {
                        i += 1;
                    }
                }
            }
            "read" | "mapfile" | "readarray" | "wait" => {
                let (values, target_opt, callback): (&str, char, Option<char>) = match base {
                    "read" => ("adinNptu", 'a', None),
                    "wait" => ("p", 'p', None),
                    _ => ("dnOsuCc", '\0', Some('C')),
                };
                let mut pos = Vec::new();
                let mut i = 0;
                let mut opts = true;
                while i < args.len() {
                    let a = &args[i];
                    i += 1;
                    let v = a.value.as_deref().unwrap_or("");
                    if opts && v == "--" {
                        opts = false;
                        continue;
                    }
                    if !(opts && v.starts_with('-') && v.len() > 1) {
                        opts = false;
                        pos.push(a.clone());
                        continue;
                    }
                    for (k, c) in v[1..].char_indices() {
                        if !values.contains(c) {
                            continue;
                        }
                        let rest = &v[1 + k + c.len_utf8()..];
                        let value = if rest.is_empty() {
                            i += 1;
                            args.get(i - 1).cloned()
                        } else {
                            Some(a.with_value(rest))
                        };
                        if let Some(x) = value {
                            if c == target_opt {
                                self.var_target(&x, label, j);
                            } else if Some(c) == callback {
                                self.code(&val(&x), label, j);
                            }
                        }
                        break;
                    }
                }
                let names = match base {
                    "read" => &pos[..],
                    "wait" => &[][..],
                    _ => &pos[..pos.len().min(1)],
                };
                for a in names {
                    self.var_target(a, label, j);
                }
            }
            "getopts" => {
                for a in programs::positionals(args).into_iter().skip(1).take(1) {
                    self.var_target(a, label, j);
                }
            }
            "declare" | "typeset" | "local" | "readonly" | "export" | "unset" => {
                let nameref = base != "export"
                    && args
                        .iter()
                        .filter_map(|a| a.value.as_deref())
                        .any(|v| v.starts_with('-') && !v.starts_with("--") && v.contains('n'));
                for a in args {
                    let p = a.pattern.as_str();
                    if p.starts_with(['-', '+']) {
                        continue;
                    }
                    let (lhs, value) = match p.split_once('=') {
                        Some((l, v)) => (l.trim_end_matches('+'), Some(v)),
                        None => (p, None),
                    };
                    let (name, sub) = split_subscript(lhs);
                    if sub.is_some_and(|s| !plain_subscript(s)) {
                        self.code(lhs, label, j);
                    }
                    if sub.is_some() && is_env_name(name) && base != "unset" {
                        // `declare 'PATH[0]=x'` sets PATH.
                        self.env_var(name, label, true, j);
                    }
                    if let (true, Some(target)) = (nameref && base != "unset", value) {
                        // `declare -n ref=PATH`: assigning ref assigns PATH.
                        let (tname, tsub) = split_subscript(target);
                        if is_env_name(tname) {
                            self.env_var(tname, label, false, j);
                        }
                        if tsub.is_some_and(|s| !plain_subscript(s)) {
                            self.code(target, label, j);
                        }
                    }
                }
            }
            "let" => {
                for a in args {
                    let v = val(a);
                    let name: String = v
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if is_env_name(&name) && v[name.len()..].trim_start().contains('=') {
                        self.env_var(&name, label, false, j);
                    }
                    if !integer(&v) {
                        self.code(&v, label, j);
                    }
                }
            }
            _ => {}
        }
    }
}
