//! Tokens: operators, words, here-document bodies.

use std::cell::RefCell;
use std::rc::Rc;

use super::{RedirOp, Res, Word};

#[derive(Debug, Clone)]
pub(super) enum Tok {
    Word(Word),
    Op(Op),
    Newline,
    Eof,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("word {:?}", w.literal().unwrap_or_default()),
            Tok::Op(op) => format!("`{}`", op.text()),
            Tok::Newline => "newline".into(),
            Tok::Eof => "end of line".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Pipe,
    PipeAmp,
    And,
    Or,
    Amp,
    Semi,
    DSemi,
    LParen,
    RParen,
    Redir(RedirOp, Option<u32>, bool),
}

impl Op {
    pub(super) fn text(self) -> &'static str {
        match self {
            Op::Pipe => "|",
            Op::PipeAmp => "|&",
            Op::And => "&&",
            Op::Or => "||",
            Op::Amp => "&",
            Op::Semi => ";",
            Op::DSemi => ";;",
            Op::LParen => "(",
            Op::RParen => ")",
            Op::Redir(op, _, strip) => match op {
                RedirOp::Read => "<",
                RedirOp::Write => ">",
                RedirOp::Append => ">>",
                RedirOp::ReadWrite => "<>",
                RedirOp::DupIn => "<&",
                RedirOp::DupOut => ">&",
                RedirOp::WriteBoth => "&>",
                RedirOp::HereDoc if strip => "<<-",
                RedirOp::HereDoc => "<<",
                RedirOp::HereString => "<<<",
            },
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Stop<'a> {
    Eof,
    RParen,
    Words(&'a [&'a str]),
}

pub(super) struct Pending {
    pub(super) delim: String,
    pub(super) strip_tabs: bool,
    pub(super) body: Rc<RefCell<String>>,
}

pub(super) struct Parser {
    pub(super) chars: Vec<char>,
    pub(super) pos: usize,
    pub(super) depth: usize,
    pub(super) peeked: Option<Tok>,
    /// Where the last token lexed (the peeked one, if any) began.
    pub(super) tok_start: usize,
    pub(super) pending: Vec<Pending>,
}

pub(super) const RESERVED_ENDS: &[&str] =
    &["then", "elif", "else", "fi", "do", "done", "esac", "}"];

pub(super) fn is_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Parser {
    pub(super) fn new(src: &str, depth: usize) -> Self {
        Self {
            chars: src.chars().collect(),
            pos: 0,
            depth,
            peeked: None,
            tok_start: 0,
            pending: Vec::new(),
        }
    }

    pub(super) fn peek_char(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    pub(super) fn char_at(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    pub(super) fn bump(&mut self) -> char {
        let c = self.chars[self.pos];
        self.pos += 1;
        c
    }

    pub(super) fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars.len() >= self.pos + n
            && s.chars().zip(&self.chars[self.pos..]).all(|(a, b)| a == *b)
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    // ---- tokens -------------------------------------------------------------------

    pub(super) fn peek(&mut self) -> Res<&Tok> {
        if self.peeked.is_none() {
            let t = self.lex()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("just set"))
    }

    pub(super) fn next(&mut self) -> Res<Tok> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex(),
        }
    }

    pub(super) fn skip_newlines(&mut self) -> Res<()> {
        while matches!(self.peek()?, Tok::Newline) {
            self.next()?;
        }
        Ok(())
    }

    pub(super) fn lex(&mut self) -> Res<Tok> {
        loop {
            match self.peek_char() {
                Some(' ' | '\t' | '\r') => self.pos += 1,
                Some('\\') if self.char_at(1) == Some('\n') => self.pos += 2,
                Some('#') => {
                    while !matches!(self.peek_char(), None | Some('\n')) {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        self.tok_start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Tok::Eof);
        };
        let op = |o| Ok(Tok::Op(o));
        match c {
            '\n' => {
                self.pos += 1;
                self.read_heredocs();
                Ok(Tok::Newline)
            }
            '|' => {
                self.pos += 1;
                if self.eat("|") {
                    op(Op::Or)
                } else if self.eat("&") {
                    op(Op::PipeAmp)
                } else {
                    op(Op::Pipe)
                }
            }
            '&' => {
                self.pos += 1;
                if self.eat("&") {
                    op(Op::And)
                } else if self.eat(">>") || self.eat(">") {
                    op(Op::Redir(RedirOp::WriteBoth, None, false))
                } else {
                    op(Op::Amp)
                }
            }
            ';' => {
                self.pos += 1;
                if self.eat(";") || self.eat("&") {
                    op(Op::DSemi)
                } else {
                    op(Op::Semi)
                }
            }
            '(' => {
                self.pos += 1;
                op(Op::LParen)
            }
            ')' => {
                self.pos += 1;
                op(Op::RParen)
            }
            '<' | '>' if self.char_at(1) != Some('(') => Ok(Tok::Op(self.redir_op(None))),
            _ => {
                // `2>`: digits right before a redirection are its file descriptor.
                let digits = self.chars[self.pos..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .count();
                if digits > 0
                    && matches!(self.char_at(digits), Some('<' | '>'))
                    && self.char_at(digits + 1) != Some('(')
                {
                    let fd: String = self.chars[self.pos..self.pos + digits].iter().collect();
                    self.pos += digits;
                    return Ok(Tok::Op(self.redir_op(fd.parse().ok())));
                }
                Ok(Tok::Word(self.word()?))
            }
        }
    }

    pub(super) fn redir_op(&mut self, fd: Option<u32>) -> Op {
        let r = |o| Op::Redir(o, fd, false);
        if self.eat("<<<") {
            r(RedirOp::HereString)
        } else if self.eat("<<-") {
            Op::Redir(RedirOp::HereDoc, fd, true)
        } else if self.eat("<<") {
            r(RedirOp::HereDoc)
        } else if self.eat("<&") {
            r(RedirOp::DupIn)
        } else if self.eat("<>") {
            r(RedirOp::ReadWrite)
        } else if self.eat("<") {
            r(RedirOp::Read)
        } else if self.eat(">>") {
            r(RedirOp::Append)
        } else if self.eat(">&") {
            r(RedirOp::DupOut)
        } else {
            self.pos += 1;
            self.eat("|");
            r(RedirOp::Write)
        }
    }

    pub(super) fn read_heredocs(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            let mut body = String::new();
            while self.pos < self.chars.len() {
                let start = self.pos;
                while !matches!(self.peek_char(), None | Some('\n')) {
                    self.pos += 1;
                }
                let mut line: String = self.chars[start..self.pos].iter().collect();
                if self.peek_char() == Some('\n') {
                    self.pos += 1;
                }
                if p.strip_tabs {
                    line = line.trim_start_matches('\t').to_string();
                }
                if line == p.delim {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            *p.body.borrow_mut() = body;
        }
    }
}
