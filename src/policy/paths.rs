//! Paths: where an argument points, whether that is inside the worktree, whether it is
//! a credential.
//!
//! A path is inside the worktree when (1) after lexical normalisation it lies under the
//! worktree, (2) a relative path never climbs above the worktree on the way (`../wt/x`
//! from the worktree is refused: the agent's shell may stand in a subdirectory, where the
//! same text lands elsewhere), and (3) with the symbolic links of its existing prefix
//! resolved the way the kernel does (a link, then `..`), it still lies under the
//! worktree's own resolved path.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

use super::glob;

/// Where one path argument points.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Absolute, lexically normalised (glob characters kept).
    pub lexical: PathBuf,
    /// With symbolic links resolved; `None` when that failed (a loop, no permission).
    pub physical: Option<PathBuf>,
    /// A relative path climbed above the worktree, or a glob component could be `..`.
    pub escapes: bool,
    /// The text had glob characters.
    pub globs: bool,
}

/// The worktree and home directory, lexical and resolved.
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    pub root: PathBuf,
    pub root_phys: PathBuf,
    pub home: PathBuf,
    pub home_phys: PathBuf,
}

/// Lexical normalisation of an absolute path (no filesystem access).
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolves symbolic links along `path` (absolute) the way the kernel does, following
/// at most 40 links; components past the first missing one are taken as written.
pub(crate) fn physical(path: &Path) -> Option<PathBuf> {
    let mut queue: VecDeque<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::from("/");
    let mut exists = true;
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        cur.push(&c);
        if !exists {
            continue;
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = std::fs::read_link(&cur).ok()?;
                cur.pop();
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                let comps: Vec<_> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                for c in comps.into_iter().rev() {
                    queue.push_front(c);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => exists = false,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => exists = false,
            Err(_) => return None,
        }
    }
    Some(cur)
}

impl Roots {
    pub(crate) fn new(worktree: &Path, home: &Path) -> Self {
        let abs = |p: &Path| {
            if p.is_absolute() {
                normalize(p)
            } else {
                normalize(
                    &std::env::current_dir()
                        .unwrap_or_else(|_| PathBuf::from("/"))
                        .join(p),
                )
            }
        };
        let root = abs(worktree);
        let home = abs(home);
        Self {
            root_phys: physical(&root).unwrap_or_else(|| root.clone()),
            home_phys: physical(&home).unwrap_or_else(|| home.clone()),
            root,
            home,
        }
    }

    /// `~` and `~/…` expanded to the home directory (other text unchanged).
    pub(crate) fn tilde(&self, text: &str) -> String {
        if text == "~" {
            self.home.to_string_lossy().into_owned()
        } else if let Some(rest) = text.strip_prefix("~/") {
            format!(
                "{}/{rest}",
                self.home.to_string_lossy().trim_end_matches('/')
            )
        } else {
            text.to_string()
        }
    }

    /// Resolves `text` (already expanded by the shell rules) against `cwd`.
    pub(crate) fn resolve(&self, text: &str, cwd: &Path, globs: bool) -> Resolved {
        let text = self.tilde(text);
        let relative = !text.starts_with('/');
        let mut cur = if relative {
            cwd.to_path_buf()
        } else {
            PathBuf::from("/")
        };
        let mut escapes = false;
        for comp in text.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if relative && cur == self.root {
                        escapes = true;
                    }
                    cur.pop();
                }
                c => {
                    if globs && c.starts_with('.') && glob::has_magic(c) {
                        escapes = true; // `.*` may expand to `..`
                    }
                    cur.push(c);
                }
            }
        }
        let raw = if relative {
            cwd.join(&text)
        } else {
            PathBuf::from(&text)
        };
        Resolved {
            physical: physical(&raw),
            lexical: cur,
            escapes,
            globs,
        }
    }

    /// Whether `r` is inside the worktree (the worktree itself included).
    pub(crate) fn inside(&self, r: &Resolved) -> bool {
        // The worktree may be named through a symbolic link (`/tmp` → `/private/tmp`):
        // a path written with either name counts.
        !r.escapes
            && (r.lexical.starts_with(&self.root) || r.lexical.starts_with(&self.root_phys))
            && r.physical
                .as_ref()
                .is_some_and(|p| p.starts_with(&self.root_phys))
    }

    /// Whether `r` is the worktree itself.
    pub(crate) fn is_root(&self, r: &Resolved) -> bool {
        r.lexical == self.root || r.physical.as_ref().is_some_and(|p| *p == self.root_phys)
    }

    /// Whether `r` is in a git directory inside the worktree: under a component named
    /// `.git` at any depth (`sub/.git/config`; in any case, since `.GIT` is `.git` on
    /// case-insensitive file systems; a glob that could expand to it counts), or under a
    /// directory that git itself would take for a git directory (`HEAD` with `objects/`
    /// and `refs/`, or with `commondir`: a bare repository). Their config and hooks run
    /// programs.
    pub(crate) fn in_git_dir(&self, r: &Resolved) -> bool {
        let dotgit = |p: &Path, root: &Path| {
            p.strip_prefix(root).ok().is_some_and(|rest| {
                rest.components()
                    .any(|c| is_dot_git(&c.as_os_str().to_string_lossy(), r.globs))
            })
        };
        if dotgit(&r.lexical, &self.root)
            || dotgit(&r.lexical, &self.root_phys)
            || r.physical
                .as_ref()
                .is_some_and(|p| dotgit(p, &self.root_phys))
        {
            return true;
        }
        let Some(rest) = r
            .physical
            .as_ref()
            .and_then(|p| p.strip_prefix(&self.root_phys).ok())
        else {
            return false;
        };
        let comps: Vec<_> = rest.components().collect();
        let mut dir = self.root_phys.clone();
        for c in &comps[..comps.len().saturating_sub(1)] {
            dir.push(c);
            if is_git_dir(&dir) {
                return true;
            }
        }
        false
    }

    /// The directories between the worktree (excluded) and `dir` (included), through
    /// symbolic links, that are or hold another repository (`.git`, or a `HEAD` of their
    /// own); `Err(())` when `dir` is not an existing directory inside the worktree.
    pub(crate) fn other_repo(&self, dir: &Path) -> Result<Option<PathBuf>, ()> {
        let phys = physical(dir).ok_or(())?;
        if !phys.is_dir() {
            return Err(());
        }
        let rest = phys.strip_prefix(&self.root_phys).map_err(|_| ())?;
        let mut d = self.root_phys.clone();
        for c in rest.components() {
            d.push(c);
            let has = |n: &str| std::fs::symlink_metadata(d.join(n)).is_ok();
            if has(".git") || has("HEAD") || has("commondir") {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// The lexical and physical forms of `r`, as text.
    pub(crate) fn forms(r: &Resolved) -> Vec<String> {
        let mut v = vec![r.lexical.to_string_lossy().into_owned()];
        if let Some(p) = &r.physical {
            let p = p.to_string_lossy().into_owned();
            if p != v[0] {
                v.push(p);
            }
        }
        v
    }

    /// A path pattern with `~` expanded, in its lexical and physical forms.
    pub(crate) fn pattern_forms(&self, pattern: &str) -> Vec<String> {
        let rest = if pattern == "~" {
            Some("")
        } else {
            pattern.strip_prefix("~/")
        };
        match rest {
            Some(rest) => {
                let mut v = vec![format!("{}/{rest}", self.home.to_string_lossy())];
                if self.home_phys != self.home {
                    v.push(format!("{}/{rest}", self.home_phys.to_string_lossy()));
                }
                v
            }
            None => vec![pattern.to_string()],
        }
    }

    /// Shows a path for messages: `~/…` under the home directory.
    pub(crate) fn show(&self, p: &Path) -> String {
        if self.home != Path::new("/") {
            if let Ok(rest) = p.strip_prefix(&self.home) {
                if !self.root.starts_with(&self.home) || !p.starts_with(&self.root) {
                    return if rest.as_os_str().is_empty() {
                        "~".into()
                    } else {
                        format!("~/{}", rest.display())
                    };
                }
            }
        }
        p.display().to_string()
    }
}

/// Whether a path component is `.git`, in any case, or a glob that could expand to it.
fn is_dot_git(name: &str, globs: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == ".git" || (globs && glob::has_magic(&lower) && glob::shell_matches(&lower, ".git"))
}

/// git's own test for a git directory: `HEAD`, and `objects/` and `refs/` (or a
/// `commondir` file, for a linked worktree's directory).
pub(crate) fn is_git_dir(d: &Path) -> bool {
    let is_dir = |n: &str| d.join(n).is_dir();
    std::fs::symlink_metadata(d.join("HEAD")).is_ok()
        && ((is_dir("objects") && is_dir("refs"))
            || std::fs::symlink_metadata(d.join("commondir")).is_ok())
}

/// Whether a program path may be trusted as the program its base name says: a bare
/// name (looked up in `PATH`) or a system directory.
pub(crate) fn trusted_program_path(name: &str) -> bool {
    match name.rsplit_once('/') {
        None => true,
        Some((dir, _)) => matches!(
            dir,
            "/bin" | "/usr/bin" | "/usr/local/bin" | "/sbin" | "/usr/sbin" | "/usr/local/sbin"
        ),
    }
}

/// The base name of a program path.
pub(crate) fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
