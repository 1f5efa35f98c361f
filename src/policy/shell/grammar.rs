//! The grammar: lists, and-or chains, pipelines, simple and compound commands.

use std::cell::RefCell;
use std::rc::Rc;

use super::lex::{is_name, Op, Pending, Stop, Tok, RESERVED_ENDS};
use super::{
    err, AndOr, Assign, Command, Compound, Connector, HereDoc, Parser, Part, Pipeline, RedirOp,
    Redirect, Res, Script, Simple, Word, MAX_DEPTH,
};

impl Parser {
    pub(super) fn script(&mut self, stop: Stop<'_>) -> Res<Script> {
        let mut items = Vec::new();
        loop {
            while let Tok::Newline | Tok::Op(Op::Semi) = self.peek()? {
                self.next()?;
            }
            match (self.peek()?, stop) {
                (Tok::Eof, _) | (Tok::Op(Op::RParen), Stop::RParen) => break,
                (Tok::Word(w), Stop::Words(ends)) if ends.iter().any(|e| w.is_bare(e)) => break,
                _ => {}
            }
            let mut ao = self.and_or()?;
            match self.peek()? {
                Tok::Op(Op::Semi) | Tok::Newline => {
                    self.next()?;
                }
                Tok::Op(Op::Amp) => {
                    self.next()?;
                    ao.background = true;
                }
                _ => {
                    items.push(ao);
                    break;
                }
            }
            items.push(ao);
        }
        Ok(items)
    }

    pub(super) fn and_or(&mut self) -> Res<AndOr> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            let c = match self.peek()? {
                Tok::Op(Op::And) => Connector::And,
                Tok::Op(Op::Or) => Connector::Or,
                _ => break,
            };
            self.next()?;
            self.skip_newlines()?;
            rest.push((c, self.pipeline()?));
        }
        Ok(AndOr {
            first,
            rest,
            background: false,
        })
    }

    pub(super) fn pipeline(&mut self) -> Res<Pipeline> {
        loop {
            match self.peek()? {
                Tok::Word(w) if w.is_bare("!") => {
                    self.next()?;
                }
                Tok::Word(w) if w.is_bare("time") => {
                    self.next()?;
                    if matches!(self.peek()?, Tok::Word(w) if w.is_bare("-p")) {
                        self.next()?;
                    }
                }
                _ => break,
            }
        }
        let mut commands = vec![self.command()?];
        while matches!(self.peek()?, Tok::Op(Op::Pipe | Op::PipeAmp)) {
            self.next()?;
            self.skip_newlines()?;
            commands.push(self.command()?);
        }
        Ok(Pipeline { commands })
    }

    pub(super) fn expect_word(&mut self, s: &str) -> Res<()> {
        match self.next()? {
            Tok::Word(w) if w.is_bare(s) => Ok(()),
            t => err(format!("expected `{s}`, found {}", t.describe())),
        }
    }

    pub(super) fn command(&mut self) -> Res<Command> {
        let tok = self.peek()?.clone();
        match tok {
            Tok::Op(Op::LParen) => {
                self.next()?;
                if self.peek_char() == Some('(') {
                    return err("arithmetic commands `(( … ))` are not supported");
                }
                let body = self.deeper(|p| p.script(Stop::RParen))?;
                match self.next()? {
                    Tok::Op(Op::RParen) => {}
                    t => return err(format!("expected `)`, found {}", t.describe())),
                }
                let redirects = self.redirects()?;
                Ok(Command::Compound(Compound::Subshell(body), redirects))
            }
            Tok::Word(w) => {
                let Some(kw) = w
                    .literal()
                    .filter(|_| matches!(w.parts.as_slice(), [Part::Lit { quoted: false, .. }]))
                else {
                    return self.simple();
                };
                match kw.as_str() {
                    "{" => {
                        self.next()?;
                        let body = self.deeper(|p| p.script(Stop::Words(&["}"])))?;
                        self.expect_word("}")?;
                        let r = self.redirects()?;
                        Ok(Command::Compound(Compound::Group(body), r))
                    }
                    "if" => {
                        self.next()?;
                        let mut parts = vec![self.deeper(|p| p.script(Stop::Words(&["then"])))?];
                        self.expect_word("then")?;
                        loop {
                            parts.push(
                                self.deeper(|p| p.script(Stop::Words(&["elif", "else", "fi"])))?,
                            );
                            match self.next()? {
                                Tok::Word(w) if w.is_bare("elif") => {
                                    parts.push(self.deeper(|p| p.script(Stop::Words(&["then"])))?);
                                    self.expect_word("then")?;
                                }
                                Tok::Word(w) if w.is_bare("else") => {
                                    parts.push(self.deeper(|p| p.script(Stop::Words(&["fi"])))?);
                                    self.expect_word("fi")?;
                                    break;
                                }
                                Tok::Word(w) if w.is_bare("fi") => break,
                                t => return err(format!("expected `fi`, found {}", t.describe())),
                            }
                        }
                        let r = self.redirects()?;
                        Ok(Command::Compound(Compound::If(parts), r))
                    }
                    "while" | "until" => {
                        self.next()?;
                        let cond = self.deeper(|p| p.script(Stop::Words(&["do"])))?;
                        self.expect_word("do")?;
                        let body = self.deeper(|p| p.script(Stop::Words(&["done"])))?;
                        self.expect_word("done")?;
                        let r = self.redirects()?;
                        Ok(Command::Compound(Compound::Loop(cond, body), r))
                    }
                    "for" => {
                        self.next()?;
                        let var = match self.next()? {
                            Tok::Word(w) => w.literal().filter(|v| is_name(v)),
                            _ => None,
                        };
                        let Some(var) = var else {
                            return err(
                                "`for` needs a variable name (`for (( … ))` is not supported)",
                            );
                        };
                        self.skip_newlines()?;
                        let mut words = Vec::new();
                        if matches!(self.peek()?, Tok::Word(w) if w.is_bare("in")) {
                            self.next()?;
                            while let Tok::Word(_) = self.peek()? {
                                let Tok::Word(w) = self.next()? else {
                                    unreachable!()
                                };
                                words.push(w);
                            }
                        } else {
                            words.push(Word {
                                parts: vec![Part::Var("@".into())],
                            });
                        }
                        while matches!(self.peek()?, Tok::Newline | Tok::Op(Op::Semi)) {
                            self.next()?;
                        }
                        self.expect_word("do")?;
                        let body = self.deeper(|p| p.script(Stop::Words(&["done"])))?;
                        self.expect_word("done")?;
                        let r = self.redirects()?;
                        Ok(Command::Compound(Compound::For { var, words, body }, r))
                    }
                    "function" => {
                        self.next()?;
                        let name = match self.next()? {
                            Tok::Word(w) => w.literal(),
                            _ => None,
                        };
                        let Some(name) = name else {
                            return err("`function` needs a name");
                        };
                        if matches!(self.peek()?, Tok::Op(Op::LParen)) {
                            self.next()?;
                            if !matches!(self.next()?, Tok::Op(Op::RParen)) {
                                return err("expected `()` after the function name");
                            }
                        }
                        self.function_body(name)
                    }
                    "[[" => self.double_bracket(),
                    "case" | "select" | "coproc" => err(format!("`{kw}` is not supported")),
                    "!" => err("`!` may only start a pipeline"),
                    k if RESERVED_ENDS.contains(&k) => err(format!("unexpected `{k}`")),
                    _ => self.simple(),
                }
            }
            Tok::Op(Op::Redir(..)) => self.simple(),
            t => err(format!("expected a command, found {}", t.describe())),
        }
    }

    pub(super) fn deeper<T>(&mut self, f: impl FnOnce(&mut Self) -> Res<T>) -> Res<T> {
        if self.depth >= MAX_DEPTH * 4 {
            return err("nested too deeply");
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    pub(super) fn function_body(&mut self, name: String) -> Res<Command> {
        self.skip_newlines()?;
        let body = self.deeper(Self::command)?;
        Ok(Command::Function {
            name,
            body: Box::new(body),
        })
    }

    /// `[[ … ]]`: everything up to `]]` is an argument, operators included.
    pub(super) fn double_bracket(&mut self) -> Res<Command> {
        let mut words = Vec::new();
        loop {
            match self.next()? {
                Tok::Word(w) => {
                    let end = w.is_bare("]]");
                    words.push(w);
                    if end {
                        break;
                    }
                }
                Tok::Op(op) if !matches!(op, Op::Semi | Op::Amp | Op::DSemi) => words.push(Word {
                    parts: vec![Part::Lit {
                        text: op.text().to_string(),
                        quoted: true,
                    }],
                }),
                t => return err(format!("unterminated `[[`: found {}", t.describe())),
            }
        }
        let redirects = self.redirects()?;
        Ok(Command::Simple(Simple {
            assigns: Vec::new(),
            words,
            redirects,
        }))
    }

    pub(super) fn redirects(&mut self) -> Res<Vec<Redirect>> {
        let mut out = Vec::new();
        while let Tok::Op(Op::Redir(..)) = self.peek()? {
            let Tok::Op(Op::Redir(op, fd, strip)) = self.next()? else {
                unreachable!()
            };
            out.push(self.redirect(op, fd, strip)?);
        }
        Ok(out)
    }

    pub(super) fn redirect(&mut self, op: RedirOp, fd: Option<u32>, strip: bool) -> Res<Redirect> {
        let target = match self.next()? {
            Tok::Word(w) => w,
            t => {
                return err(format!(
                    "expected a file after `{}`, found {}",
                    Op::Redir(op, fd, strip).text(),
                    t.describe()
                ))
            }
        };
        let heredoc = if op == RedirOp::HereDoc {
            let Some(delim) = target.literal() else {
                return err("here-document delimiters with expansions are not supported");
            };
            let expands = target
                .parts
                .iter()
                .all(|p| matches!(p, Part::Lit { quoted: false, .. }));
            let body = Rc::new(RefCell::new(String::new()));
            self.pending.push(Pending {
                delim,
                strip_tabs: strip,
                body: Rc::clone(&body),
            });
            Some(HereDoc { body, expands })
        } else {
            None
        };
        Ok(Redirect {
            fd,
            op,
            target,
            heredoc,
        })
    }

    pub(super) fn simple(&mut self) -> Res<Command> {
        let mut cmd = Simple::default();
        loop {
            match self.peek()? {
                Tok::Word(_) => {
                    let Tok::Word(w) = self.next()? else {
                        unreachable!()
                    };
                    if cmd.words.is_empty() {
                        if let Some(a) = assignment(&w) {
                            if matches!(self.peek()?, Tok::Op(Op::LParen)) {
                                return err("array assignments are not supported");
                            }
                            cmd.assigns.push(a);
                            continue;
                        }
                    }
                    cmd.words.push(w);
                    if cmd.words.len() == 1
                        && cmd.assigns.is_empty()
                        && cmd.redirects.is_empty()
                        && matches!(self.peek()?, Tok::Op(Op::LParen))
                    {
                        // `name() body`
                        self.next()?;
                        if !matches!(self.next()?, Tok::Op(Op::RParen)) {
                            return err("unexpected `(` (extended globs are not supported)");
                        }
                        let Some(name) = cmd.words[0].literal() else {
                            return err("function names must be plain words");
                        };
                        return self.function_body(name);
                    }
                }
                Tok::Op(Op::Redir(..)) => {
                    let Tok::Op(Op::Redir(op, fd, strip)) = self.next()? else {
                        unreachable!()
                    };
                    let r = self.redirect(op, fd, strip)?;
                    cmd.redirects.push(r);
                }
                Tok::Op(Op::LParen) => return err("unexpected `(`"),
                Tok::Op(Op::DSemi) => return err("unexpected `;;`"),
                _ => break,
            }
        }
        if cmd.words.is_empty() && cmd.assigns.is_empty() && cmd.redirects.is_empty() {
            return err("expected a command");
        }
        Ok(Command::Simple(cmd))
    }
}

/// `NAME=value` / `NAME+=value` with an unquoted name, or `NAME[SUBSCRIPT]=value` /
/// `NAME[SUBSCRIPT]+=value` (the subscript may hold quotes and expansions).
fn assignment(w: &Word) -> Option<Assign> {
    let Some(Part::Lit {
        text,
        quoted: false,
    }) = w.parts.first()
    else {
        return None;
    };
    let eq = text.find('=');
    if let Some(open) = text.find('[').filter(|b| eq.is_none_or(|e| *b < e)) {
        return subscripted(w, &text[..open], open);
    }
    let eq = eq?;
    let name = text[..eq].strip_suffix('+').unwrap_or(&text[..eq]);
    if !is_name(name) {
        return None;
    }
    let mut value = Word::default();
    let rest = &text[eq + 1..];
    if !rest.is_empty() {
        value.parts.push(Part::Lit {
            text: rest.to_string(),
            quoted: false,
        });
    }
    value.parts.extend(w.parts[1..].iter().cloned());
    Some(Assign {
        name: name.to_string(),
        subscript: None,
        value,
    })
}

/// `NAME[…]=value`: the first part's unquoted text has `NAME[` at its start (`open` is the
/// `[`); the subscript runs to the matching unquoted `]`, which `=` or `+=` must follow.
fn subscripted(w: &Word, name: &str, open: usize) -> Option<Assign> {
    if !is_name(name) {
        return None;
    }
    enum U<'a> {
        C(char, bool),
        P(&'a Part),
    }
    let mut units = Vec::new();
    for (k, p) in w.parts.iter().enumerate() {
        match p {
            Part::Lit { text, quoted } => {
                let text = if k == 0 { &text[open + 1..] } else { text };
                units.extend(text.chars().map(|c| U::C(c, *quoted)));
            }
            other => units.push(U::P(other)),
        }
    }
    let word = |us: &[U<'_>]| {
        let mut out = Word::default();
        for u in us {
            match u {
                U::C(c, q) => out.push_char(*c, *q),
                U::P(p) => out.parts.push((*p).clone()),
            }
        }
        out
    };
    let mut depth = 1;
    for (i, u) in units.iter().enumerate() {
        match u {
            U::C('[', false) => depth += 1,
            U::C(']', false) => {
                depth -= 1;
                if depth == 0 {
                    let after = match (units.get(i + 1), units.get(i + 2)) {
                        (Some(U::C('=', false)), _) => i + 2,
                        (Some(U::C('+', false)), Some(U::C('=', false))) => i + 3,
                        _ => return None,
                    };
                    return Some(Assign {
                        name: name.to_string(),
                        subscript: Some(word(&units[..i])),
                        value: word(&units[after..]),
                    });
                }
            }
            _ => {}
        }
    }
    None
}
