//! A synthetic transcript corpus for the extraction benchmark (`architect bench
//! --extract`): mostly ordinary agent and build output, with a share of lines that the
//! built-in patterns find, across every category.

/// Ordinary lines (`{w}` a word, `{n}` a number): no built-in pattern matches them.
const ORDINARY: &[&str] = &[
    "   Compiling {w} v0.{n}.{n}",
    "    Checking {w}-core v1.{n}.0",
    "  Downloaded {w} v{n}.{n}.0",
    "test {w}::tests::{w}_{w} ... ok",
    "tests/test_{w}.py::test_{w} PASSED                                [ {n}%]",
    "I'll update src/{w}.rs so that the {w} case is handled before the loop.",
    "Let me read the {w} module first to see how {w} is built.",
    "    let {w} = {w}.iter().map(|x| x + {n}).collect::<Vec<_>>();",
    "    if {w}.len() > {n} {",
    "def {w}_{w}(self, {w}: int = {n}) -> bool:",
    "        return self.{w}[{n}]",
    "export function {w}({w}: string): number {",
    "2026-12-02 09:{n}:{n} INFO {w}: request handled in {n} ms",
    "[INFO] Building {w} {n}.0-SNAPSHOT",
    "=== RUN   Test{w}",
    "--- PASS: Test{w} ({n}.00s)",
    "added {n} packages, and audited {n} packages in {n}s",
    "On branch {w}",
    "",
    "    }",
    "drwxr-xr-x  {n} dev dev 4096 Dec  2 09:00 {w}",
    "The {w} step now takes {n} ms instead of {n} ms on the large input.",
];

/// Lines the built-in patterns find (each matches at least one).
const MATCHING: &[&str] = &[
    "error[E0308]: mismatched types in {w}",
    "  --> src/{w}.rs:{n}:{n}",
    "warning: unused variable: `{w}`",
    "thread 'main' panicked at src/{w}.rs:{n}:{n}:",
    "test result: FAILED. {n} passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.{n}s",
    "test {w}::tests::{w} ... FAILED",
    "Traceback (most recent call last):",
    "  File \"/app/{w}.py\", line {n}, in {w}",
    "ValueError: invalid literal for int() with base 10: '{w}'",
    "=========== 1 failed, {n} passed in 0.{n}s ===========",
    "FAILED tests/test_{w}.py::test_{w} - AssertionError: assert {n} == 0",
    "    at {w} (/app/src/{w}.js:{n}:{n})",
    "TypeError: Cannot read properties of undefined (reading '{w}')",
    "Tests:       1 failed, {n} passed, {n} total",
    "panic: runtime error: index out of range [{n}] with length {n}",
    "--- FAIL: Test{w} (0.{n}s)",
    "\tat com.acme.{w}.run(App.java:{n})",
    "{w}.c:{n}:{n}: error: expected ';' before 'return'",
    " src/{w}.rs | {n} ++++----",
    " {n} files changed, {n} insertions(+), {n} deletions(-)",
    "\tmodified:   src/{w}.rs",
    "⏺ Update(src/{w}.rs)",
    "[{w} 1a2b3c{n}] Fix the {w} case",
    "See https://docs.example.com/{w}/{n} for details",
    "Total cost:            $0.{n}",
];

/// A corpus of `lines` lines (joined with `\n`), about `matching_per_mille` of them
/// matching lines, from a seeded generator (the same seed gives the same text). Returns
/// the text and how many matching lines it holds.
#[must_use]
pub fn corpus(lines: usize, matching_per_mille: u32, seed: u64) -> (String, u64) {
    let mut rng = seed.max(1);
    let mut next = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    const WORDS: &[&str] = &[
        "parser", "config", "session", "queue", "router", "token", "cache", "worker", "lexer",
        "budget", "ledger", "spool",
    ];
    let mut text = String::with_capacity(lines * 56);
    let mut matching = 0;
    for i in 0..lines {
        let r = next();
        let template = if (r % 1000) < u64::from(matching_per_mille) {
            matching += 1;
            MATCHING[(r >> 10) as usize % MATCHING.len()]
        } else {
            ORDINARY[(r >> 10) as usize % ORDINARY.len()]
        };
        let mut parts = template.split('{').peekable();
        if let Some(first) = parts.next() {
            text.push_str(first);
        }
        for part in parts {
            let v = next();
            if let Some(rest) = part.strip_prefix("w}") {
                text.push_str(WORDS[(v >> 20) as usize % WORDS.len()]);
                text.push_str(rest);
            } else if let Some(rest) = part.strip_prefix("n}") {
                text.push_str(&((v >> 20) % 100 + 1).to_string());
                text.push_str(rest);
            } else {
                text.push('{');
                text.push_str(part);
            }
        }
        if i + 1 < lines {
            text.push('\n');
        }
    }
    (text, matching)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_matching_template_is_found_and_no_ordinary_one_is() {
        let x = super::super::builtin();
        let fill = |t: &str| t.replace("{w}", "parser").replace("{n}", "42");
        for t in MATCHING {
            assert!(!x.extract(&fill(t)).is_empty(), "nothing found in {t:?}");
        }
        for t in ORDINARY {
            assert_eq!(x.extract(&fill(t)), Vec::new(), "{t:?}");
        }
    }

    #[test]
    fn the_corpus_has_the_lines_asked_for_and_every_matching_line_is_found() {
        let (text, matching) = corpus(20_000, 40, 7);
        assert_eq!(text.lines().count(), 20_000);
        assert!((600..=1000).contains(&matching), "{matching}");
        let found = super::super::builtin().extract(&text);
        let lines: std::collections::BTreeSet<u64> = found.iter().map(|e| e.line).collect();
        assert_eq!(lines.len() as u64, matching);
        assert_eq!(
            corpus(20_000, 40, 7).0,
            text,
            "the same seed gives the same text"
        );
    }
}
