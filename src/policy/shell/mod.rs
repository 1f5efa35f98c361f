//! A focused parser for the shell command lines agents ask to run.
//!
//! It turns a command line into lists of pipelines of commands (joined by `|`, `|&`,
//! `&&`, `||`, `;`, `&` and newlines), with quotes (single, double, backslash, `$'…'`)
//! removed from literal text, redirections, assignment prefixes, subshells `( … )`,
//! groups `{ …; }`, `if`/`while`/`until`/`for` and function definitions.
//! Command substitutions (`$(…)`, backticks) and process substitutions (`<(…)`, `>(…)`)
//! are parsed recursively, so the policy sees the commands hidden inside them.
//!
//! What it does not understand it refuses with a [`ParseError`] instead of guessing:
//! `case`, `select`, `coproc`, arithmetic commands `(( … ))`, array literals `a=(…)`,
//! extended globs, unterminated quotes. The policy never allows what fails to parse.
//! (Array element assignments `a[i]=x` are parsed, their subscript kept as a word.)
//!
//! Why our own parser: `yash-syntax` is GPL-3.0, `conch-parser` is unmaintained, and
//! `brush-parser` (MIT, maintained) brings about 75 crates (two `darling`s, `bon`,
//! `cached`, `insta`, `pest`, `peg`) and accepts all of bash, where the policy wants the
//! opposite: a small grammar that fails closed. `shlex`/`shell-words` only split words.

use std::cell::RefCell;
use std::rc::Rc;

/// How deep substitutions and `bash -c` strings may nest before we give up.
pub const MAX_DEPTH: usize = 8;

/// A command line we do not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Res<T> = Result<T, ParseError>;

fn err<T>(msg: impl Into<String>) -> Res<T> {
    Err(ParseError(msg.into()))
}

/// A list of and-or chains, run one after the other (`;`, newline) or in the
/// background (`&`).
pub type Script = Vec<AndOr>;

/// Pipelines joined by `&&` and `||`.
#[derive(Debug, Clone)]
pub struct AndOr {
    /// The first pipeline.
    pub first: Pipeline,
    /// The others, each with the operator before it.
    pub rest: Vec<(Connector, Pipeline)>,
    /// Ended by `&`.
    pub background: bool,
}

/// `&&` or `||`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    /// `&&`.
    And,
    /// `||`.
    Or,
}

/// Commands joined by `|` or `|&`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The commands, left to right.
    pub commands: Vec<Command>,
}

/// One command of a pipeline.
#[derive(Debug, Clone)]
pub enum Command {
    /// `NAME=value … word … redirections`.
    Simple(Simple),
    /// A compound command and the redirections after it.
    Compound(Compound, Vec<Redirect>),
    /// `name() body` or `function name body`.
    Function {
        /// The function's name.
        name: String,
        /// Its body.
        body: Box<Command>,
    },
}

/// Compound commands.
#[derive(Debug, Clone)]
pub enum Compound {
    /// `( … )`.
    Subshell(Script),
    /// `{ …; }`.
    Group(Script),
    /// `if … then … [elif … then …] [else …] fi`: conditions and bodies in order.
    If(Vec<Script>),
    /// `while|until … do … done`: the condition and the body.
    Loop(Script, Script),
    /// `for NAME [in WORDS]; do … done`.
    For {
        /// The loop variable.
        var: String,
        /// The words after `in` (the positional parameters when absent).
        words: Vec<Word>,
        /// The body.
        body: Script,
    },
}

/// A simple command.
#[derive(Debug, Clone, Default)]
pub struct Simple {
    /// `NAME=value` prefixes.
    pub assigns: Vec<Assign>,
    /// The program and its arguments.
    pub words: Vec<Word>,
    /// Redirections, in order.
    pub redirects: Vec<Redirect>,
}

/// `NAME=value`, `NAME+=value`, or with an array subscript, `NAME[SUBSCRIPT]=value`.
#[derive(Debug, Clone)]
pub struct Assign {
    /// The variable.
    pub name: String,
    /// The subscript between `[` and `]`, as written (bash evaluates it: arithmetic for
    /// indexed arrays, a word for associative ones).
    pub subscript: Option<Word>,
    /// The value.
    pub value: Word,
}

/// A redirection.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// The file descriptor written before the operator (`2>`).
    pub fd: Option<u32>,
    /// The operator.
    pub op: RedirOp,
    /// The file, fd or here-string word.
    pub target: Word,
    /// The here-document's body, for [`RedirOp::HereDoc`].
    pub heredoc: Option<HereDoc>,
}

/// A here-document's body, read after the line that announced it.
#[derive(Debug, Clone)]
pub struct HereDoc {
    /// The text, filled in when the parser reaches it.
    pub body: Rc<RefCell<String>>,
    /// Whether `$…` and backticks in the body are expanded (the delimiter was unquoted).
    pub expands: bool,
}

/// Redirection operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirOp {
    /// `<`.
    Read,
    /// `>`, `>|`.
    Write,
    /// `>>`.
    Append,
    /// `<>`.
    ReadWrite,
    /// `<&`: duplicates an input fd (or reads a file).
    DupIn,
    /// `>&`: duplicates an output fd, or writes a file when the word is not a number.
    DupOut,
    /// `&>`, `&>>`.
    WriteBoth,
    /// `<<`, `<<-`.
    HereDoc,
    /// `<<<`.
    HereString,
}

/// A word: literal text and expansions, in order.
#[derive(Debug, Clone, Default)]
pub struct Word {
    /// The parts.
    pub parts: Vec<Part>,
}

/// One part of a word.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text; `quoted` when it came from quotes or a backslash (no globbing, no tilde,
    /// no braces).
    Lit {
        /// The text, quotes removed.
        text: String,
        /// Whether it was quoted.
        quoted: bool,
    },
    /// `$NAME`, `${NAME}`, `$1`, `$@`, …
    Var(String),
    /// An expansion whose value we do not compute: `${x:-y}`, `$((…))`, `$[…]`. The
    /// raw text, kept so that commands hidden inside can still be looked for.
    Opaque(String),
    /// `$(…)` or a backtick substitution.
    CommandSub(Subst),
    /// `<(…)` or `>(…)`.
    ProcessSub(Subst),
}

/// A substitution's source and its parse.
#[derive(Debug, Clone)]
pub struct Subst {
    /// The text between the delimiters.
    pub source: String,
    /// The commands inside, or why they could not be parsed.
    pub script: Result<Rc<Script>, ParseError>,
}

impl Word {
    /// The text when the word is literal throughout (quoted or not).
    #[must_use]
    pub fn literal(&self) -> Option<String> {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Lit { text, .. } => s.push_str(text),
                _ => return None,
            }
        }
        Some(s)
    }

    /// Whether the word is exactly `s`, unquoted (how reserved words are recognised).
    #[must_use]
    pub fn is_bare(&self, s: &str) -> bool {
        matches!(self.parts.as_slice(), [Part::Lit { text, quoted: false }] if text == s)
    }

    fn push_char(&mut self, c: char, quoted: bool) {
        if let Some(Part::Lit { text, quoted: q }) = self.parts.last_mut() {
            if *q == quoted {
                text.push(c);
                return;
            }
        }
        self.parts.push(Part::Lit {
            text: c.to_string(),
            quoted,
        });
    }
}

/// Parses a command line.
///
/// # Errors
/// [`ParseError`] for syntax errors and for constructs this parser does not handle.
pub fn parse(src: &str) -> Result<Script, ParseError> {
    parse_at_depth(src, 0)
}

/// [`parse`], for text nested `depth` levels deep (a `bash -c` string, backticks).
///
/// # Errors
/// As [`parse`]; also when `depth` exceeds [`MAX_DEPTH`].
pub fn parse_at_depth(src: &str, depth: usize) -> Result<Script, ParseError> {
    if depth > MAX_DEPTH {
        return err("nested too deeply");
    }
    let mut p = Parser::new(src, depth);
    let script = p.script(Stop::Eof)?;
    match p.next()? {
        Tok::Eof => {}
        t => return err(format!("unexpected {}", t.describe())),
    }
    Ok(script)
}

/// Parses the body of a here-document whose delimiter was unquoted: `$…` and backticks
/// expand, everything else is literal.
///
/// # Errors
/// [`ParseError`] for a bad substitution inside.
pub fn parse_heredoc_body(src: &str, depth: usize) -> Result<Word, ParseError> {
    let mut p = Parser::new(src, depth);
    let mut w = Word::default();
    while let Some(c) = p.peek_char() {
        match c {
            '\\' if matches!(p.char_at(1), Some('$' | '`' | '\\')) => {
                p.pos += 1;
                let c = p.bump();
                w.push_char(c, true);
            }
            '$' => p.dollar(&mut w, true)?,
            '`' => p.backtick(&mut w, false)?,
            _ => {
                p.pos += 1;
                w.push_char(c, true);
            }
        }
    }
    Ok(w)
}

mod grammar;
mod lex;
#[cfg(test)]
mod tests;
mod words;

use lex::{Parser, Stop, Tok};
