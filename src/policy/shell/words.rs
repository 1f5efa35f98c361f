//! Words: quotes, `$…` expansions, substitutions, ANSI-C strings.

use std::rc::Rc;

use super::lex::{is_name, Op, Stop, Tok};
use super::{err, parse_at_depth, Parser, Part, Res, Script, Subst, Word, MAX_DEPTH};

impl Parser {
    pub(super) fn word(&mut self) -> Res<Word> {
        let mut w = Word::default();
        while let Some(c) = self.peek_char() {
            match c {
                ' ' | '\t' | '\r' | '\n' | '|' | '&' | ';' | '(' | ')' => break,
                '<' | '>' => {
                    if self.char_at(1) != Some('(') {
                        break;
                    }
                    self.pos += 2;
                    let sub = self.nested_script(|p| p.script(Stop::RParen))?;
                    w.parts.push(Part::ProcessSub(sub));
                }
                '\\' => {
                    self.pos += 1;
                    match self.peek_char() {
                        Some('\n') => self.pos += 1,
                        Some(c) => {
                            self.pos += 1;
                            w.push_char(c, true);
                        }
                        None => w.push_char('\\', true),
                    }
                }
                '\'' => {
                    self.pos += 1;
                    let start = self.pos;
                    while self.peek_char().is_some_and(|c| c != '\'') {
                        self.pos += 1;
                    }
                    if self.peek_char().is_none() {
                        return err("unterminated single quote");
                    }
                    let text: String = self.chars[start..self.pos].iter().collect();
                    self.pos += 1;
                    w.parts.push(Part::Lit { text, quoted: true });
                }
                '"' => {
                    self.pos += 1;
                    self.double_quoted(&mut w)?;
                }
                '$' => self.dollar(&mut w, false)?,
                '`' => self.backtick(&mut w, false)?,
                _ => {
                    self.pos += 1;
                    w.push_char(c, false);
                }
            }
        }
        Ok(w)
    }

    pub(super) fn double_quoted(&mut self, w: &mut Word) -> Res<()> {
        // An empty "" still makes a word.
        w.parts.push(Part::Lit {
            text: String::new(),
            quoted: true,
        });
        loop {
            match self.peek_char() {
                None => return err("unterminated double quote"),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek_char() {
                        Some('\n') => self.pos += 1,
                        Some(c @ ('$' | '`' | '"' | '\\')) => {
                            self.pos += 1;
                            w.push_char(c, true);
                        }
                        _ => w.push_char('\\', true),
                    }
                }
                Some('$') => self.dollar(w, true)?,
                Some('`') => self.backtick(w, true)?,
                Some(c) => {
                    self.pos += 1;
                    w.push_char(c, true);
                }
            }
        }
    }

    /// Runs `f` on this parser one level deeper, then expects `)`; returns the
    /// substitution with its source text.
    pub(super) fn nested_script(&mut self, f: impl FnOnce(&mut Self) -> Res<Script>) -> Res<Subst> {
        if self.depth >= MAX_DEPTH {
            return err("nested too deeply");
        }
        let start = self.pos;
        let saved = self.peeked.take();
        self.depth += 1;
        let script = f(self);
        self.depth -= 1;
        let script = script?;
        let end = if self.peeked.is_some() {
            self.tok_start
        } else {
            self.pos
        };
        match self.next()? {
            Tok::Op(Op::RParen) => {}
            t => return err(format!("expected `)`, found {}", t.describe())),
        }
        self.peeked = saved;
        let source: String = self.chars[start..end].iter().collect();
        Ok(Subst {
            source: source.trim().to_string(),
            script: Ok(Rc::new(script)),
        })
    }

    pub(super) fn dollar(&mut self, w: &mut Word, in_dq: bool) -> Res<()> {
        self.pos += 1; // `$`
        match self.peek_char() {
            Some('(') if self.char_at(1) == Some('(') => {
                let text = self.balanced('(', ')', 2)?;
                w.parts.push(Part::Opaque(format!("$(({text}))")));
            }
            Some('(') => {
                self.pos += 1;
                let sub = self.nested_script(|p| p.script(Stop::RParen))?;
                w.parts.push(Part::CommandSub(sub));
            }
            Some('[') => {
                let text = self.balanced('[', ']', 1)?;
                w.parts.push(Part::Opaque(format!("$[{text}]")));
            }
            Some('{') => {
                let text = self.balanced('{', '}', 1)?;
                let special = text.len() == 1 && "@*#?$!-0123456789".contains(text.as_str());
                if is_name(&text)
                    || special
                    || text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty()
                {
                    w.parts.push(Part::Var(text));
                } else {
                    w.parts.push(Part::Opaque(format!("${{{text}}}")));
                }
            }
            Some('\'') if !in_dq => {
                self.pos += 1;
                let text = self.ansi_c()?;
                w.parts.push(Part::Lit { text, quoted: true });
            }
            Some('"') if !in_dq => {
                self.pos += 1;
                self.double_quoted(w)?;
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self
                    .peek_char()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                w.parts
                    .push(Part::Var(self.chars[start..self.pos].iter().collect()));
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                self.pos += 1;
                w.parts.push(Part::Var(c.to_string()));
            }
            _ => w.push_char('$', in_dq),
        }
        Ok(())
    }

    /// Reads from an opening delimiter (at `self.pos`, `skip` chars long) to its balanced
    /// closing one, honouring quotes; returns the text between.
    pub(super) fn balanced(&mut self, open: char, close: char, skip: usize) -> Res<String> {
        self.pos += skip;
        let start = self.pos;
        let mut depth = skip;
        loop {
            match self.peek_char() {
                None => return err(format!("unterminated `{open}`")),
                Some('\\') => self.pos += 2,
                Some(q @ ('\'' | '"')) => {
                    self.pos += 1;
                    while self.peek_char().is_some_and(|c| c != q) {
                        if q == '"' && self.peek_char() == Some('\\') {
                            self.pos += 1;
                        }
                        self.pos += 1;
                    }
                    self.pos += 1;
                }
                Some(c) if c == open => {
                    depth += 1;
                    self.pos += 1;
                }
                Some(c) if c == close => {
                    depth -= 1;
                    self.pos += 1;
                    if depth == 0 {
                        let end = self.pos - skip;
                        return Ok(self.chars[start..end.max(start)].iter().collect());
                    }
                }
                Some(_) => self.pos += 1,
            }
            if self.pos > self.chars.len() {
                return err(format!("unterminated `{open}`"));
            }
        }
    }

    pub(super) fn backtick(&mut self, w: &mut Word, in_dq: bool) -> Res<()> {
        self.pos += 1;
        let mut inner = String::new();
        loop {
            match self.peek_char() {
                None => return err("unterminated backtick"),
                Some('`') => {
                    self.pos += 1;
                    break;
                }
                Some('\\') => {
                    self.pos += 1;
                    match self.peek_char() {
                        Some(c @ ('$' | '`' | '\\')) => {
                            self.pos += 1;
                            inner.push(c);
                        }
                        Some('"') if in_dq => {
                            self.pos += 1;
                            inner.push('"');
                        }
                        _ => inner.push('\\'),
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    inner.push(c);
                }
            }
        }
        let script = parse_at_depth(&inner, self.depth + 1).map(Rc::new);
        w.parts.push(Part::CommandSub(Subst {
            source: inner.trim().to_string(),
            script,
        }));
        Ok(())
    }

    /// `$'…'` after the opening quote: ANSI-C escapes decoded; a NUL ends the text, as
    /// in bash.
    pub(super) fn ansi_c(&mut self) -> Res<String> {
        let mut out = String::new();
        let mut cut = false;
        loop {
            let Some(c) = self.peek_char() else {
                return err("unterminated $'…' quote");
            };
            self.pos += 1;
            let decoded = match c {
                '\'' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek_char() else {
                        return err("unterminated $'…' quote");
                    };
                    self.pos += 1;
                    match e {
                        'a' => Some('\x07'),
                        'b' => Some('\x08'),
                        'e' | 'E' => Some('\x1b'),
                        'f' => Some('\x0c'),
                        'n' => Some('\n'),
                        'r' => Some('\r'),
                        't' => Some('\t'),
                        'v' => Some('\x0b'),
                        '\\' | '\'' | '"' | '?' => Some(e),
                        '0'..='7' => {
                            let mut v = e.to_digit(8).unwrap_or(0);
                            for _ in 0..2 {
                                match self.peek_char().and_then(|c| c.to_digit(8)) {
                                    Some(d) => {
                                        v = v * 8 + d;
                                        self.pos += 1;
                                    }
                                    None => break,
                                }
                            }
                            char::from_u32(v & 0xff)
                        }
                        'x' | 'u' | 'U' => {
                            let max = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let mut v = 0u32;
                            let mut n = 0;
                            while n < max {
                                match self.peek_char().and_then(|c| c.to_digit(16)) {
                                    Some(d) => {
                                        v = v.wrapping_mul(16).wrapping_add(d);
                                        self.pos += 1;
                                        n += 1;
                                    }
                                    None => break,
                                }
                            }
                            if n == 0 {
                                out.push('\\');
                                Some(e)
                            } else {
                                Some(char::from_u32(v).unwrap_or('\u{fffd}'))
                            }
                        }
                        'c' => {
                            let Some(x) = self.peek_char() else {
                                return err("unterminated $'…' quote");
                            };
                            self.pos += 1;
                            char::from_u32(u32::from(x) & 0x1f)
                        }
                        _ => {
                            out.push('\\');
                            Some(e)
                        }
                    }
                }
                c => Some(c),
            };
            match decoded {
                Some('\0') => cut = true,
                Some(c) if !cut => out.push(c),
                _ => {}
            }
        }
    }
}
