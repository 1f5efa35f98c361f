//! The extraction engine: pulls errors, stack frames, test results, files changed,
//! commits, URLs and cost lines out of a task's transcript, in pure code.
//!
//! The patterns are data: the built-in set is `config/extract.toml`, compiled into the
//! binary ([`BUILTIN`], [`builtin`]); a profile adds its own with `[[extract]]` entries
//! of the same shape (`config/profiles/<name>.toml`, [`crate::profile::Profile`]), and
//! an entry with a built-in's name replaces it ([`merge`]). Each [`PatternSpec`] is a
//! name, a regex whose named groups become the fields, a [`Category`] and a
//! [`Severity`].
//!
//! Matching is line by line: a [`RegexSet`] of every pattern runs once over each line
//! (one pass of one automaton) and says which patterns match it — on most lines, none;
//! only those patterns' regexes then run again for their capture groups. A line is the
//! text between `\n`s with a trailing `\r` dropped; line numbers start at 1.
//!
//! The daemon runs the profile's extractor over the output of each attempt that ended
//! with one and logs an `extraction` event per match, at most [`MAX_PER_ATTEMPT`]
//! (`crate::log::event::Extraction`).

pub mod corpus;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

/// The built-in patterns' TOML, `config/extract.toml`.
pub const BUILTIN: &str = include_str!("../../config/extract.toml");

/// How many extractions the daemon logs for one attempt; the rest are counted.
pub const MAX_PER_ATTEMPT: usize = 200;

/// The longest line text an [`Extraction`] keeps, bytes (cut at a character boundary).
pub const MAX_TEXT_BYTES: usize = 500;

/// What a pattern finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// An error, exception, panic, compiler diagnostic or warning.
    Error,
    /// A stack frame or source location under a diagnostic.
    Stack,
    /// A test result: a summary, a failed test.
    Test,
    /// A file changed (diff stats, `git status`, an agent's edit).
    File,
    /// A commit or a push.
    Commit,
    /// A URL.
    Url,
    /// Spend or tokens.
    Cost,
}

impl Category {
    /// The name as written in TOML and in events (`error`, `stack`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Stack => "stack",
            Self::Test => "test",
            Self::File => "file",
            Self::Commit => "commit",
            Self::Url => "url",
            Self::Cost => "cost",
        }
    }
}

/// How much a match matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing (a summary, a file changed, a URL).
    Info,
    /// Something may be wrong (a compiler warning, a lint).
    Warning,
    /// Something went wrong (an error, a failed test).
    Error,
}

impl Severity {
    /// The name as written in TOML and in events (`info`, `warning`, `error`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One `[[pattern]]` of `config/extract.toml` (or `[[extract]]` of a profile), as
/// written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    /// Unique name (the event's `pattern`).
    pub name: String,
    /// What it catches (for people).
    #[serde(default)]
    pub description: String,
    /// The regex (`regex` crate syntax), matched against one line; its named groups are
    /// the fields.
    pub regex: String,
    /// What it finds.
    pub category: Category,
    /// How much it matters.
    pub severity: Severity,
}

/// The shape of `config/extract.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternsFile {
    pattern: Vec<PatternSpec>,
}

/// A pattern set could not be used. The message names the pattern at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The TOML does not parse, or an entry has a missing or unknown field.
    #[error("{0}")]
    Toml(String),
    /// A pattern's regex does not compile.
    #[error("extraction pattern {name:?}: invalid regex: {message}")]
    Regex {
        /// The pattern.
        name: String,
        /// The regex crate's message.
        message: String,
    },
    /// Two patterns of one set have the same name.
    #[error("extraction pattern {0:?} is defined twice; names must be unique")]
    Duplicate(String),
    /// A pattern's name is empty or not kebab-case (`a-z`, `0-9`, `-`).
    #[error("extraction pattern {0:?}: the name must be non-empty kebab-case (a-z, 0-9, -)")]
    BadName(String),
}

/// Parses a patterns file (`[[pattern]]` entries) and checks every entry on its own
/// (name, regex); [`Extractor::new`] checks the set.
///
/// # Errors
/// [`ExtractError::Toml`] with the TOML parser's message (it names the line), or the
/// first entry's error from [`check`].
pub fn parse(text: &str) -> Result<Vec<PatternSpec>, ExtractError> {
    let file: PatternsFile = toml::from_str(text).map_err(|e| ExtractError::Toml(e.to_string()))?;
    for spec in &file.pattern {
        check(spec)?;
    }
    Ok(file.pattern)
}

/// Checks one entry: its name is kebab-case and its regex compiles.
///
/// # Errors
/// [`ExtractError::BadName`] or [`ExtractError::Regex`], naming the pattern.
pub fn check(spec: &PatternSpec) -> Result<(), ExtractError> {
    compile(spec).map(|_| ())
}

fn compile(spec: &PatternSpec) -> Result<Regex, ExtractError> {
    let kebab = !spec.name.is_empty()
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !kebab {
        return Err(ExtractError::BadName(spec.name.clone()));
    }
    Regex::new(&spec.regex).map_err(|e| ExtractError::Regex {
        name: spec.name.clone(),
        message: e.to_string(),
    })
}

/// The built-in patterns, parsed once.
///
/// # Panics
/// Never in a released build: `config/extract.toml` is checked by the unit tests.
#[must_use]
pub fn builtin_specs() -> &'static [PatternSpec] {
    static SPECS: OnceLock<Vec<PatternSpec>> = OnceLock::new();
    SPECS.get_or_init(|| parse(BUILTIN).expect("config/extract.toml is valid"))
}

/// The extractor of the built-in patterns, compiled once and shared.
///
/// # Panics
/// Never in a released build, as [`builtin_specs`].
#[must_use]
pub fn builtin() -> Arc<Extractor> {
    static EXTRACTOR: OnceLock<Arc<Extractor>> = OnceLock::new();
    Arc::clone(EXTRACTOR.get_or_init(|| {
        Arc::new(Extractor::new(builtin_specs().to_vec()).expect("config/extract.toml compiles"))
    }))
}

/// `base` with `extra` laid over it: an entry of `extra` with the name of one in `base`
/// takes its place (in `base`'s order); the others follow, in `extra`'s order.
#[must_use]
pub fn merge(base: &[PatternSpec], extra: &[PatternSpec]) -> Vec<PatternSpec> {
    let mut out: Vec<PatternSpec> = base
        .iter()
        .map(|b| extra.iter().find(|e| e.name == b.name).unwrap_or(b).clone())
        .collect();
    let names: HashSet<&str> = base.iter().map(|b| b.name.as_str()).collect();
    out.extend(
        extra
            .iter()
            .filter(|e| !names.contains(e.name.as_str()))
            .cloned(),
    );
    out
}

/// One match of one pattern on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraction {
    /// The line's number in the text, from 1.
    pub line: u64,
    /// The pattern's name.
    pub pattern: String,
    /// The pattern's category.
    pub category: Category,
    /// The pattern's severity.
    pub severity: Severity,
    /// The named groups that took part in the match: group name → matched text.
    pub fields: BTreeMap<String, String>,
    /// The whole line, at most [`MAX_TEXT_BYTES`] (cut at a character boundary).
    pub text: String,
}

/// What [`Extractor::extract_limited`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    /// The first matches, in line order (then pattern order within a line).
    pub extractions: Vec<Extraction>,
    /// Matches past the limit, counted and not kept.
    pub dropped: u64,
}

struct Compiled {
    spec: PatternSpec,
    regex: Regex,
    /// The named groups, by index.
    names: Vec<(usize, String)>,
}

/// A compiled pattern set. Cheap to share (`Arc`); matching takes `&self`.
pub struct Extractor {
    set: RegexSet,
    patterns: Vec<Compiled>,
}

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor")
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

impl Extractor {
    /// Compiles a pattern set.
    ///
    /// # Errors
    /// The first pattern whose name is not kebab-case ([`ExtractError::BadName`]), whose
    /// regex does not compile ([`ExtractError::Regex`]), or whose name an earlier one
    /// has ([`ExtractError::Duplicate`]).
    pub fn new(specs: Vec<PatternSpec>) -> Result<Self, ExtractError> {
        let mut seen = HashSet::new();
        let mut patterns = Vec::with_capacity(specs.len());
        for spec in specs {
            if !seen.insert(spec.name.clone()) {
                return Err(ExtractError::Duplicate(spec.name));
            }
            let regex = compile(&spec)?;
            let names = regex
                .capture_names()
                .enumerate()
                .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
                .collect();
            patterns.push(Compiled { spec, regex, names });
        }
        let set = RegexSet::new(patterns.iter().map(|p| &p.spec.regex)).map_err(|e| {
            ExtractError::Regex {
                name: "(the whole set)".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Self { set, patterns })
    }

    /// The patterns, in order.
    pub fn specs(&self) -> impl Iterator<Item = &PatternSpec> {
        self.patterns.iter().map(|p| &p.spec)
    }

    /// Every match in `text`, in line order (then pattern order within a line). A
    /// pattern matches a line at most once (its first match).
    #[must_use]
    pub fn extract(&self, text: &str) -> Vec<Extraction> {
        self.extract_limited(text, usize::MAX).extractions
    }

    /// As [`Extractor::extract`], keeping the first `max` matches and counting the rest.
    #[must_use]
    pub fn extract_limited(&self, text: &str, max: usize) -> Extracted {
        let mut out = Extracted::default();
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            // Most lines match nothing: `is_match` answers that without building the set
            // of matching patterns (which costs an allocation per line).
            if !self.set.is_match(line) {
                continue;
            }
            let matched = self.set.matches(line);
            for p in matched.iter() {
                if out.extractions.len() >= max {
                    out.dropped += 1;
                    continue;
                }
                let pattern = &self.patterns[p];
                // The set said it matches; the captures of its leftmost-first match.
                let Some(caps) = pattern.regex.captures(line) else {
                    continue;
                };
                let fields = pattern
                    .names
                    .iter()
                    .filter_map(|(g, name)| {
                        caps.get(*g).map(|m| (name.clone(), m.as_str().to_string()))
                    })
                    .collect();
                out.extractions.push(Extraction {
                    line: i as u64 + 1,
                    pattern: pattern.spec.name.clone(),
                    category: pattern.spec.category,
                    severity: pattern.spec.severity,
                    fields,
                    text: truncate(line, MAX_TEXT_BYTES).to_string(),
                });
            }
        }
        out
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
