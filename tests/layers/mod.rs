//! Layering: no module depends on a module that depends back on it.
//!
//! A workspace split (one crate per top-level module, as pueue or watchexec have) would
//! refuse to compile such a cycle; this check refuses it now. It reads the sources under
//! `src/` and, for every module that has submodules (each crate root included), builds
//! the graph of its direct submodules: an edge A → B when code anywhere inside A names a
//! path into B. A cycle in any of these graphs fails the test, naming each edge of the
//! cycle with a file and line that makes it. So the top-level modules (`spool`, `llm`,
//! `locks`, …) must form a DAG, and so must `cli/`'s files, `session/`'s, `daemon/`'s,
//! `policy/eval/`'s, and so on.
//!
//! What counts as naming a path: `use` declarations (groups, `self`, globs and `as`
//! included) and any path in code that starts with `crate::`, `self::` or `super::`, or
//! with a name a `use` of the file imported (`use crate::policy;` then `policy::eval::…`),
//! resolved from the module the text is in (inline `mod x { … }` blocks included).
//! A name reached through a `use` of a parent module (`pub use child::Thing`, then
//! `super::Thing` in a sibling) is followed to where it comes from, so a re-export does
//! not hide an edge. Comments (doc links included) and string literals are not code and
//! are skipped.
//!
//! What is not a node: a module's own file (`mod.rs`, or `machine.rs` beside
//! `machine/`). It declares and re-exports its children, and its children may use its
//! items; only the children are compared with each other. The two crates are checked
//! apart: the library (`src/lib.rs`) and the binary (`src/main.rs`, `src/cli/`), whose
//! `architect::…` paths name the library, which cannot name the binary back.
//!
//! Not read: macro-generated paths, and files outside `src/` that a `#[path]` includes
//! (`tools/fake-agent/main.rs`, `tools/agent-clis/offline.rs`: single files, std only).
//!
//! A second check: no library module uses clap; argument parsing is the binary's
//! (`src/cli/`).
//!
//! Run alone: `cargo test --test tests layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path within one crate, from its root (`["session", "runner"]`).
type ModPath = Vec<String>;

/// Which crate a source file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Crate {
    Lib,
    Bin,
}

/// One source file: its crate, its module and its text.
struct Source {
    file: String,
    krate: Crate,
    module: ModPath,
    text: String,
}

/// A path named in code: where, from which module, and the absolute path named.
#[derive(Debug, Clone)]
struct Reference {
    file: String,
    line: usize,
    from: ModPath,
    to: ModPath,
    shown: String,
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Open,
    Close,
    Semi,
    Comma,
    Star,
    Other,
}

/// The tokens of Rust source that matter here, with their line numbers: comments and
/// string, byte-string, raw-string and character literals are dropped.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let s: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    while i < s.len() {
        let c = s[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= s.len() {
                    break;
                } else if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if s[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&s, i + 1, &mut line);
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // An escaped character literal: '\n', '\'', '\u{1F600}'.
                i += 3;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3; // 'x'
            } else {
                i += 1; // a lifetime or label: its name lexes as an identifier
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_') {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            match (word.as_str(), at(i)) {
                ("b" | "c", '"') => i = skip_string(&s, i + 1, &mut line),
                ("b", '\'') => {
                    i += 1;
                    if at(i) == '\\' {
                        i += 1;
                    }
                    i += 1;
                    while i < s.len() && s[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                ("r" | "br" | "cr", '"' | '#') if raw_string_start(&s, i) => {
                    let mut hashes = 0;
                    while at(i) == '#' {
                        hashes += 1;
                        i += 1;
                    }
                    i += 1; // the opening quote
                    loop {
                        if i >= s.len() {
                            break;
                        }
                        if s[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                            i += 1 + hashes;
                            break;
                        }
                        if s[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
                ("r", '#') => i += 1, // a raw identifier: r#type lexes as `type`
                _ => out.push((Tok::Ident(word), line)),
            }
        } else if c.is_ascii_digit() {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_') {
                i += 1;
            }
            out.push((Tok::Other, line));
        } else {
            let tok = match c {
                ':' if at(i + 1) == ':' => {
                    i += 1;
                    Tok::Path
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ';' => Tok::Semi,
                ',' => Tok::Comma,
                '*' => Tok::Star,
                _ => Tok::Other,
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// Skips a (byte) string's body from just after its opening quote; returns the index
/// after its closing quote.
fn skip_string(s: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < s.len() && s[i] != '"' {
        if s[i] == '\\' {
            i += 1;
        }
        if s.get(i) == Some(&'\n') {
            *line += 1;
        }
        i += 1;
    }
    i + 1
}

/// Whether `r`/`br`/`cr` followed by `s[i..]` opens a raw string (`"` or `#…#"`).
fn raw_string_start(s: &[char], mut i: usize) -> bool {
    while s.get(i) == Some(&'#') {
        i += 1;
    }
    s.get(i) == Some(&'"')
}

// ---------------------------------------------------------------- parsing

/// What one file says: the paths it names, the names its `use` declarations bring into
/// each module (for following re-exports), and the inline modules it declares.
#[derive(Default)]
struct Parsed {
    refs: Vec<Reference>,
    /// (module, name, absolute target).
    aliases: Vec<(ModPath, String, ModPath)>,
    inline_modules: Vec<ModPath>,
}

/// Reads the references out of one file. `modules` are the crate's file modules (to
/// resolve a `use` of a child module by its bare name).
fn parse(src: &Source, modules: &BTreeSet<ModPath>) -> Parsed {
    let toks = lex(&src.text);
    let mut p = Parsed::default();
    // Inline modules open at a brace depth: (name, depth inside its braces).
    let mut inline: Vec<(String, usize)> = Vec::new();
    // Names this file's `use` declarations bind to paths of the crate (`use super::marks;`
    // makes `marks::Mark` a path into `marks`).
    let mut imported: BTreeMap<String, ModPath> = BTreeMap::new();
    let mut depth = 0usize;
    let mut i = 0;
    let here = |inline: &[(String, usize)]| -> ModPath {
        let mut m = src.module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        let after_path = i > 0 && toks[i - 1].0 == Tok::Path;
        match tok {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(w) if w == "mod" && !after_path => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Open, _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                    p.inline_modules.push(here(&inline));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(w) if w == "use" && !after_path => {
                let module = here(&inline);
                let mut leaves = Vec::new();
                let mut j = i + 1;
                use_tree(&toks, &mut j, Vec::new(), &mut leaves);
                for (segs, alias) in leaves {
                    let Some(abs) = absolute(&segs, &module, modules, true) else {
                        continue;
                    };
                    if let Some(name) = alias {
                        imported.insert(name.clone(), abs.clone());
                        p.aliases.push((module.clone(), name, abs.clone()));
                    }
                    p.refs.push(Reference {
                        file: src.file.clone(),
                        line,
                        from: module.clone(),
                        to: abs,
                        shown: segs.join("::"),
                    });
                }
                i = j;
                continue;
            }
            Tok::Ident(w)
                if (matches!(w.as_str(), "crate" | "self" | "super")
                    || imported.contains_key(w))
                    && !after_path
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Path) =>
            {
                let mut segs = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j).map(|t| &t.0) == Some(&Tok::Path) {
                    match toks.get(j + 1) {
                        Some((Tok::Ident(n), _)) => {
                            segs.push(n.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                let module = here(&inline);
                let abs = match imported.get(w) {
                    Some(target) => Some(target.iter().chain(&segs[1..]).cloned().collect()),
                    None => absolute(&segs, &module, modules, false),
                };
                if let Some(abs) = abs {
                    p.refs.push(Reference {
                        file: src.file.clone(),
                        line,
                        from: module,
                        to: abs,
                        shown: segs.join("::"),
                    });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    p
}

/// Parses a use tree from `toks[*j]` up to its end (`;`, or the `,`/`}` closing it in a
/// group); pushes each leaf's path segments and the name it binds (`None` for a glob).
fn use_tree(
    toks: &[(Tok, usize)],
    j: &mut usize,
    mut prefix: Vec<String>,
    leaves: &mut Vec<(Vec<String>, Option<String>)>,
) {
    loop {
        match toks.get(*j).map(|t| &t.0) {
            Some(Tok::Ident(w)) if w == "as" => {
                // `… as name`: the leaf binds `name` (`_` binds nothing).
                let name = match toks.get(*j + 1) {
                    Some((Tok::Ident(n), _)) if n != "_" => Some(n.clone()),
                    _ => None,
                };
                *j += 2;
                push_leaf(&prefix, name, leaves);
                return;
            }
            Some(Tok::Ident(w)) => {
                prefix.push(w.clone());
                *j += 1;
            }
            Some(Tok::Path) => *j += 1,
            Some(Tok::Star) => {
                *j += 1;
                leaves.push((prefix, None));
                return;
            }
            Some(Tok::Open) => {
                *j += 1;
                loop {
                    match toks.get(*j).map(|t| &t.0) {
                        Some(Tok::Close) => {
                            *j += 1;
                            return;
                        }
                        Some(Tok::Comma) => *j += 1,
                        None => return,
                        _ => use_tree(toks, j, prefix.clone(), leaves),
                    }
                }
            }
            Some(Tok::Semi) | None => {
                *j += 1;
                if !prefix.is_empty() {
                    let name = prefix.last().cloned();
                    push_leaf(&prefix, name, leaves);
                }
                return;
            }
            Some(Tok::Comma | Tok::Close) => {
                // The end of this tree inside a group; the group's loop takes the token.
                if !prefix.is_empty() {
                    let name = prefix.last().cloned();
                    push_leaf(&prefix, name, leaves);
                }
                return;
            }
            Some(Tok::Other) => *j += 1,
        }
    }
}

/// One leaf of a use tree; `…::self` names the module before it.
fn push_leaf(
    segs: &[String],
    name: Option<String>,
    leaves: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut segs = segs.to_vec();
    let mut name = name;
    if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
        segs.pop();
        if name.as_deref() == Some("self") {
            name = segs.last().cloned();
        }
    }
    leaves.push((segs, name));
}

/// The absolute module path `segs` names from `module`, when it names something in this
/// crate: `crate::…`, `self::…`, `super::…`, or (in a `use`) a child module by its name.
fn absolute(
    segs: &[String],
    module: &ModPath,
    modules: &BTreeSet<ModPath>,
    in_use: bool,
) -> Option<ModPath> {
    let first = segs.first()?;
    let (mut base, mut rest) = match first.as_str() {
        "crate" => (Vec::new(), &segs[1..]),
        "self" => (module.clone(), &segs[1..]),
        "super" => (module.clone(), segs),
        _ if in_use => {
            let mut child = module.clone();
            child.push(first.clone());
            if !modules.contains(&child) {
                return None;
            }
            (module.clone(), segs)
        }
        _ => return None,
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

// ---------------------------------------------------------------- the graph

/// Every module and every named path of one crate.
struct CrateGraph {
    modules: BTreeSet<ModPath>,
    aliases: BTreeMap<(ModPath, String), ModPath>,
    refs: Vec<Reference>,
}

impl CrateGraph {
    fn new(sources: &[&Source]) -> Self {
        let mut modules: BTreeSet<ModPath> = sources.iter().map(|s| s.module.clone()).collect();
        let file_modules = modules.clone();
        let mut aliases = BTreeMap::new();
        let mut refs = Vec::new();
        for src in sources {
            let p = parse(src, &file_modules);
            modules.extend(p.inline_modules);
            for (m, name, target) in p.aliases {
                aliases.insert((m, name), target);
            }
            refs.extend(p.refs);
        }
        Self {
            modules,
            aliases,
            refs,
        }
    }

    /// The module that holds what `path` names: its longest prefix that is a module,
    /// following `use` aliases (re-exports) to where the name comes from.
    fn owner(&self, path: &[String]) -> ModPath {
        let mut path = path.to_vec();
        for _ in 0..32 {
            let k = (0..=path.len())
                .rev()
                .find(|&k| self.modules.contains(&path[..k]))
                .unwrap_or(0);
            if k == path.len() {
                return path;
            }
            match self.aliases.get(&(path[..k].to_vec(), path[k].clone())) {
                Some(target) if *target != path[..=k] => {
                    let mut next = target.clone();
                    next.extend(path[k + 1..].iter().cloned());
                    path = next;
                }
                _ => return path[..k].to_vec(),
            }
        }
        path
    }

    /// For each module with submodules: edges between its direct submodules, each with
    /// the first reference that makes it.
    fn sibling_edges(&self) -> BTreeMap<ModPath, BTreeMap<(String, String), Reference>> {
        let mut levels: BTreeMap<ModPath, BTreeMap<(String, String), Reference>> = BTreeMap::new();
        for r in &self.refs {
            let from = &r.from;
            let to = self.owner(&r.to);
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                levels
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry((from[common].clone(), to[common].clone()))
                    .or_insert_with(|| r.clone());
            }
        }
        levels
    }
}

/// The cycles of each sibling graph (the shortest through each module, each once), each
/// with the lines that make its edges.
fn cycles(sources: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for krate in [Crate::Lib, Crate::Bin] {
        let of_crate: Vec<&Source> = sources.iter().filter(|s| s.krate == krate).collect();
        let graph = CrateGraph::new(&of_crate);
        for (parent, edges) in graph.sibling_edges() {
            let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for (a, b) in edges.keys() {
                next.entry(a).or_default().insert(b);
            }
            // The shortest cycle through each module, each cycle once.
            let mut seen: BTreeSet<Vec<&str>> = BTreeSet::new();
            for start in next.keys() {
                let Some(mut cycle) = shortest_cycle(start, &next) else {
                    continue;
                };
                let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                cycle.rotate_left(first);
                if !seen.insert(cycle.clone()) {
                    continue;
                }
                let at = |m: &str| {
                    let mut p = parent.clone();
                    p.push(m.to_string());
                    let name = p.join("::");
                    match krate {
                        Crate::Lib => name,
                        Crate::Bin => format!("(binary) {name}"),
                    }
                };
                let mut text = cycle
                    .iter()
                    .chain([&cycle[0]])
                    .map(|m| at(m))
                    .collect::<Vec<_>>()
                    .join(" -> ");
                for w in cycle.iter().zip(cycle.iter().cycle().skip(1)) {
                    let r = &edges[&(w.0.to_string(), w.1.to_string())];
                    text.push_str(&format!(
                        "\n    {} -> {}: {}:{} names {}",
                        at(w.0),
                        at(w.1),
                        r.file,
                        r.line,
                        r.shown
                    ));
                }
                found.push(text);
            }
        }
    }
    found
}

/// The shortest path from `start` back to itself, if there is one.
fn shortest_cycle<'a>(
    start: &'a str,
    next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Option<Vec<&'a str>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut frontier = vec![start];
    while !frontier.is_empty() {
        let mut further = Vec::new();
        for n in frontier {
            for &m in next.get(n).into_iter().flatten() {
                if m == start {
                    let mut path = vec![n];
                    let mut at = n;
                    while at != start {
                        at = came_from[at];
                        path.push(at);
                    }
                    path.reverse();
                    return Some(path);
                }
                if !came_from.contains_key(m) {
                    came_from.insert(m, n);
                    further.push(m);
                }
            }
        }
        frontier = further;
    }
    None
}

// ---------------------------------------------------------------- reading src/

/// Every `.rs` file under `root/src`, with its crate and module path.
fn read_sources(root: &Path) -> Vec<Source> {
    let src = root.join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            let text = std::fs::read_to_string(&p).unwrap();
            source(&rel.to_string_lossy(), text)
        })
        .collect()
}

/// A file at `rel` (relative to `src/`) with its crate and module.
fn source(rel: &str, text: String) -> Source {
    let mut module: ModPath = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if matches!(
        module.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        module.pop();
    }
    let krate = if rel == "main.rs" || rel.starts_with("cli/") {
        Crate::Bin
    } else {
        Crate::Lib
    };
    Source {
        file: PathBuf::from("src").join(rel).display().to_string(),
        krate,
        module,
        text,
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_module_cycles() {
    let found = cycles(&read_sources(&repo()));
    assert!(
        found.is_empty(),
        "module cycles (a module must not depend on one that depends back on it):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_library_does_not_use_clap() {
    let mut users = Vec::new();
    for s in read_sources(&repo()) {
        if s.krate != Crate::Lib {
            continue;
        }
        if let Some((_, line)) = lex(&s.text)
            .into_iter()
            .find(|(t, _)| *t == Tok::Ident("clap".into()))
        {
            users.push(format!("{}:{line}", s.file));
        }
    }
    assert!(
        users.is_empty(),
        "argument parsing belongs to the binary (src/cli/); the library uses clap at {}",
        users.join(", ")
    );
}

// ---------------------------------------------------------------- the check, checked

fn planted(files: &[(&str, &str)]) -> Vec<String> {
    let sources: Vec<Source> = files
        .iter()
        .map(|(rel, text)| source(rel, (*text).to_string()))
        .collect();
    cycles(&sources)
}

#[test]
fn a_planted_cycle_is_found_and_named() {
    let found = planted(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        ("b.rs", "pub fn f() { crate::c::g() }\n"),
        ("c.rs", "fn h() { let _ = crate::a::X; }\n"),
    ]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("a -> b -> c -> a"), "{}", found[0]);
    assert!(
        found[0].contains("src/c.rs:1 names crate::a::X"),
        "{}",
        found[0]
    );
}

#[test]
fn sibling_cycles_are_found_at_any_depth_and_in_the_binary() {
    let found = planted(&[
        ("lib.rs", "pub mod p;\n"),
        ("p/mod.rs", "mod x;\nmod y;\n"),
        ("p/x.rs", "use super::y::{self, Y};\n"),
        ("p/y/mod.rs", "mod deep;\n"),
        ("p/y/deep.rs", "use super::super::x::X;\n"),
        ("main.rs", "mod cli;\n"),
        ("cli/mod.rs", "mod bench;\nmod harness;\n"),
        ("cli/bench.rs", "fn f() { super::harness::spawn(); }\n"),
        ("cli/harness.rs", "use crate::cli::bench::Args;\n"),
    ]);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("p::x -> p::y -> p::x"), "{}", found[0]);
    assert!(
        found[1].starts_with("(binary) cli::bench -> (binary) cli::harness"),
        "{}",
        found[1]
    );
}

#[test]
fn a_re_export_does_not_hide_an_edge() {
    // b reaches a through the parent's `pub use`; a uses b directly.
    let found = planted(&[
        ("lib.rs", "pub mod p;\n"),
        ("p/mod.rs", "mod a;\nmod b;\npub use a::Thing;\n"),
        ("p/a.rs", "pub struct Thing; use super::b::f;\n"),
        ("p/b.rs", "use super::Thing;\n"),
    ]);
    assert_eq!(found.len(), 1, "{found:#?}");
}

#[test]
fn a_path_through_an_imported_module_is_followed() {
    // a imports only the parent module by name, then reaches b through it.
    let found = planted(&[
        ("lib.rs", "pub mod p;\n"),
        ("p/mod.rs", "mod a;\nmod b;\n"),
        ("p/a.rs", "use crate::p;\nfn f() { p::b::g(); }\n"),
        ("p/b.rs", "use super::a::X;\n"),
    ]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("src/p/a.rs:2 names p::b::g"),
        "{}",
        found[0]
    );
}

#[test]
fn comments_strings_parents_and_tests_of_a_module_do_not_count() {
    let found = planted(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        // A doc link, a comment and strings naming b: not code.
        (
            "a.rs",
            "//! See [`crate::b`].\n/* crate::b::x */ const S: &str = \"crate::b::x\";\n\
             const R: &str = r#\"use crate::b;\"#; const C: char = '\"';\n\
             #[cfg(test)] mod tests { use super::*; fn t() { self::helper(); } }\n",
        ),
        // The module's own file uses its child, the child uses the module: not a cycle.
        ("b.rs", "pub mod inner; use crate::a::S;\n"),
        ("b/inner.rs", "use super::Parent; use crate::b::Other;\n"),
    ]);
    assert!(found.is_empty(), "{found:#?}");
}
