//! Glob matching for policy rules: `*` (any text), `?` (one character), `[abc]`,
//! `[a-z]`, `[!x]` (a class or its complement). Path patterns are matched component by
//! component, where `**` stands for any number of directories (none included).

/// Whether `text` matches `pattern` as a whole. `*` matches any text, `/` included.
#[must_use]
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    match_chars(&p, &t)
}

fn match_chars(p: &[char], t: &[char]) -> bool {
    // Iterative with one backtrack point for the last `*` (linear in practice).
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, len)) = class(&p[pi..], t[ti]) {
                        if ok {
                            pi += len;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A `[…]` class at the start of `p`: whether `c` is in it and the class's length; `None`
/// when the bracket is not closed (then it is a literal `[`).
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

/// Whether a glob has any special character.
#[must_use]
pub fn has_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether the absolute `path` matches the path `pattern`, component by component.
///
/// Pattern components are globs and `**` (any number of components, none included, so
/// `/a/**` matches `/a` itself). Path components may be globs too (`cat ~/.ss*/id`):
/// such a component matches a literal pattern component when the shell could expand it
/// to that name (a leading `.` must be matched explicitly); it never matches a glob
/// pattern component (`*` would otherwise look like every credential name).
#[must_use]
pub fn path_matches(pattern: &str, path: &str, path_has_globs: bool) -> bool {
    let pc: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let tc: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    comps(&pc, &tc, path_has_globs)
}

/// Component lists, by dynamic programming (no recursion, whatever the depth): row `i`
/// holds, for every `j`, whether `p[i..]` matches `t[j..]`.
fn comps(p: &[&str], t: &[&str], globs: bool) -> bool {
    let mut next = vec![false; t.len() + 1];
    next[t.len()] = true; // an empty pattern matches only an empty path
    for i in (0..p.len()).rev() {
        let mut cur = vec![false; t.len() + 1];
        for j in (0..=t.len()).rev() {
            cur[j] = if p[i] == "**" {
                next[j] || (j < t.len() && cur[j + 1])
            } else {
                j < t.len() && next[j + 1] && component(p[i], t[j], globs)
            };
        }
        next = cur;
    }
    next[0]
}

/// One component: pattern `p` against path component `t`.
pub(crate) fn component(p: &str, t: &str, path_has_globs: bool) -> bool {
    if path_has_globs && has_magic(t) {
        return !has_magic(p) && shell_matches(t, p);
    }
    matches(p, t)
}

/// The shell's rule for file names: a leading `.` is matched only by a literal `.`.
#[must_use]
pub fn shell_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    matches(pattern, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("id_rsa*", "id_rsa.pub"));
        assert!(matches("*", ""));
        assert!(matches("-[!-]*f*", "-uf"));
        assert!(!matches("-[!-]*f*", "--follow-tags"));
        assert!(matches("--force-with-lease*", "--force-with-lease=main"));
        assert!(matches("LD_*", "LD_PRELOAD"));
        assert!(!matches("LD_*", "OLD_X"));
        assert!(matches("mkfs.*", "mkfs.ext4"));
        assert!(matches("a?c", "abc"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[a-c]x", "dx"));
        assert!(matches("*.github.com", "api.github.com"));
        assert!(matches("[", "["));
    }

    #[test]
    fn paths() {
        assert!(path_matches("/h/.ssh/**", "/h/.ssh", false));
        assert!(path_matches("/h/.ssh/**", "/h/.ssh/a/b", false));
        assert!(!path_matches("/h/.ssh/**", "/h/.sshx", false));
        assert!(path_matches(
            "/home/*/.aws/**",
            "/home/bob/.aws/credentials",
            false
        ));
        assert!(path_matches("/h/.ssh/**", "/h/.ss*/x", true));
        assert!(
            !path_matches("/h/.ssh/**", "/h/*/x", true),
            "* does not match a dot file"
        );
        assert!(path_matches("/h/.ssh/**", "/h/.*/x", true));
    }
}
