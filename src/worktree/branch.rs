//! Branch names: git's rules, checked without spawning git, plus architect's own.

use crate::error::{Error, Result};

/// Checks that `name` can be a task's branch: git would accept it and it is not protected.
///
/// Git's rules are those of `git check-ref-format --branch` (git-check-ref-format(1),
/// "DESCRIPTION" rules 1 and 3–8 and 10, plus the `--branch` rule that a branch name
/// cannot start with `-`; rule 2, "at least one `/`", does not apply to branch names):
/// no component (the parts between `/`) starts with `.` or ends with `.lock`; no `..`;
/// no ASCII control character, space, `~`, `^`, `:`, `?`, `*`, `[` or `\`; no leading,
/// trailing or doubled `/`; no trailing `.`; no `@{`. Git also refuses a branch named
/// `HEAD` (`git branch HEAD`).
///
/// Architect adds, so that a name always means one ref:
/// - the name is not `@` (rule 9 for whole ref names; gitrevisions(7) reads `@` as
///   `HEAD`), not a pseudo-ref (`FETCH_HEAD`, `ORIG_HEAD`, `MERGE_HEAD`, …: upper case
///   and `_`, ending in `HEAD`), and does not start with `refs/`, `heads/`, `tags/` or
///   `remotes/` (gitrevisions(7) would read `heads/main` as `main`);
/// - the name is none of `protected` (default `main`, `dev`, `qa`, `prod`), compared
///   ignoring ASCII case, because on a case-insensitive filesystem `Main` *is* `main`.
///
/// # Errors
/// [`Error::InvalidBranch`] naming the rule broken; [`Error::ProtectedBranch`].
pub fn validate_branch(name: &str, protected: &[String]) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidBranch {
            branch: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if let Some(reason) = git_rule_broken(name) {
        return bad(reason);
    }
    if name == "HEAD" || is_pseudo_ref(name) {
        return bad("is a name git keeps for HEAD and its pseudo-refs (ORIG_HEAD, FETCH_HEAD, …)");
    }
    for prefix in ["refs/", "heads/", "tags/", "remotes/"] {
        if name.starts_with(prefix) {
            return bad(&format!(
                "starts with {prefix:?}, which git would read as a ref path; \
                 give the short branch name (feature/x, not refs/heads/feature/x)"
            ));
        }
    }
    if protected.iter().any(|p| p.eq_ignore_ascii_case(name)) {
        return Err(Error::ProtectedBranch(name.to_owned()));
    }
    Ok(())
}

/// The first rule of git-check-ref-format(1) that `name` (a branch name) breaks.
fn git_rule_broken(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.starts_with('-') {
        return Some("starts with '-'");
    }
    if name == "@" {
        return Some("is the single character '@'");
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Some("starts or ends with '/'");
    }
    if name.ends_with('.') {
        return Some("ends with '.'");
    }
    if name.contains("..") {
        return Some("contains '..'");
    }
    if name.contains("@{") {
        return Some("contains '@{'");
    }
    if let Some(c) = name.chars().find(|&c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Some(match c {
            ' ' => "contains a space",
            '~' | '^' | ':' => "contains '~', '^' or ':'",
            '?' | '*' | '[' => "contains '?', '*' or '['",
            '\\' => "contains '\\'",
            _ => "contains an ASCII control character",
        });
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Some("contains '//'");
        }
        if component.starts_with('.') {
            return Some("has a component starting with '.'");
        }
        if component.ends_with(".lock") {
            return Some("has a component ending with '.lock'");
        }
    }
    None
}

fn is_pseudo_ref(name: &str) -> bool {
    name.ends_with("HEAD") && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected() -> Vec<String> {
        ["main", "dev", "qa", "prod"].map(String::from).to_vec()
    }

    #[test]
    fn git_accepts_these_and_so_do_we() {
        for name in [
            "feature",
            "feature/login",
            "architect/claude-1",
            "fix-123",
            "a/b/c/d",
            "v1.0",
            "x.y.z",
            "under_score",
            "with@sign",
            "@x",
            "ünïcödé",
            "feature/-dash-inside",
            "main-2",
            "mainline",
            "release/main",
            "locked",
            "a.lockx",
            "HEADS-UP",
            "my-HEAD",
            "trailing-dash-",
        ] {
            validate_branch(name, &protected()).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn git_refuses_these() {
        for name in [
            "",
            "-leading-dash",
            "@",
            "/leading",
            "trailing/",
            "double//slash",
            "ends.",
            "dot..dot",
            "..",
            ".hidden",
            "a/.hidden",
            "x.lock",
            "a/b.lock/c",
            "has space",
            "tab\there",
            "nl\nhere",
            "del\u{7f}",
            "tilde~1",
            "caret^",
            "colon:x",
            "what?",
            "star*",
            "open[bracket",
            "back\\slash",
            "at@{brace",
            "@{-1}",
            "HEAD",
        ] {
            let err = validate_branch(name, &protected()).unwrap_err();
            assert!(
                matches!(err, Error::InvalidBranch { .. }),
                "{name:?} gave {err}"
            );
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for name in [
            "refs/heads/main",
            "refs/heads/feature",
            "heads/main",
            "tags/v1",
            "remotes/origin/x",
            "ORIG_HEAD",
            "FETCH_HEAD",
            "CHERRY_PICK_HEAD",
        ] {
            assert!(
                matches!(
                    validate_branch(name, &protected()),
                    Err(Error::InvalidBranch { .. })
                ),
                "{name:?}"
            );
        }
    }

    #[test]
    fn protected_branches_are_refused_in_any_case() {
        for name in ["main", "dev", "qa", "prod", "Main", "PROD"] {
            assert!(
                matches!(
                    validate_branch(name, &protected()),
                    Err(Error::ProtectedBranch(ref b)) if b == name
                ),
                "{name:?}"
            );
        }
        // Only the configured list is protected.
        validate_branch("main", &[]).unwrap();
        validate_branch("trunk", &protected()).unwrap();
        assert!(matches!(
            validate_branch("trunk", &["trunk".into()]),
            Err(Error::ProtectedBranch(_))
        ));
    }

    #[test]
    fn the_message_says_which_rule() {
        let e = validate_branch("a..b", &[]).unwrap_err().to_string();
        assert!(e.contains("'..'"), "{e}");
        let e = validate_branch("refs/heads/main", &protected())
            .unwrap_err()
            .to_string();
        assert!(e.contains("short branch name"), "{e}");
        let e = validate_branch("qa", &protected()).unwrap_err().to_string();
        assert!(e.contains("protected"), "{e}");
    }
}
