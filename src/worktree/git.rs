//! Running the `git` binary, and reading what it prints.
//!
//! Every command runs as `git -C <dir> --no-pager -c color.ui=false …` with
//! `GIT_TERMINAL_PROMPT=0`, `LC_ALL=C` (messages in English, so errors read the same
//! everywhere), stdin from `/dev/null`, stdout and stderr captured. The repository-local
//! variables git lists in `git rev-parse --local-env-vars` (`GIT_DIR`, `GIT_INDEX_FILE`,
//! …) are removed from the environment, so a daemon started from inside a git hook
//! still operates on the repository it was told about.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::error::{Error, Result};

/// `git rev-parse --local-env-vars` (git 2.47).
const LOCAL_ENV: &[&str] = &[
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
];

/// The identity of the commits architect makes itself (saved work).
pub(super) const IDENTITY: (&str, &str) = ("architect", "architect@localhost");

/// One git command being built.
pub(super) struct Git {
    cmd: Command,
    dir: PathBuf,
    shown: String,
}

/// What a finished command gave.
pub(super) struct Output {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl Git {
    /// `git -C dir`.
    pub fn new(dir: &Path) -> Self {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args(["--no-pager", "-c", "color.ui=false"])
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PAGER", "cat")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in LOCAL_ENV {
            cmd.env_remove(var);
        }
        // Unit tests must not depend on the machine's ~/.gitconfig or /etc/gitconfig.
        #[cfg(test)]
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        Self {
            cmd,
            dir: dir.to_path_buf(),
            shown: format!("git -C {}", dir.display()),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&arg.to_string_lossy());
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(self, args: I) -> Self {
        args.into_iter().fold(self, Self::arg)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs the command, whatever its exit status.
    pub fn output(mut self) -> Result<(Output, String)> {
        let out = self.cmd.output().map_err(|e| {
            Error::io(
                "running git (is git installed and in PATH?) in",
                &self.dir,
                e,
            )
        })?;
        Ok((
            Output {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            self.shown,
        ))
    }

    /// Runs the command; a non-zero exit is an [`Error::Git`]. Gives stdout.
    pub fn run(self) -> Result<Vec<u8>> {
        let (out, shown) = self.output()?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(failed(shown, out))
        }
    }

    /// [`Git::run`], stdout as text with the trailing newline removed.
    pub fn text(self) -> Result<String> {
        let out = self.run()?;
        Ok(String::from_utf8_lossy(&out).trim_end().to_owned())
    }

    /// For commands that answer with their exit status (`rev-parse --verify -q`): exit 0
    /// gives `Some(stdout)`, exit 1 `None`, anything else an [`Error::Git`].
    pub fn query(self) -> Result<Option<String>> {
        let (out, shown) = self.output()?;
        match out.code {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
            )),
            Some(1) => Ok(None),
            _ => Err(failed(shown, out)),
        }
    }
}

fn failed(command: String, out: Output) -> Error {
    Error::Git {
        command,
        status: out.code,
        stderr: out.stderr,
    }
}

/// One entry of `git worktree list --porcelain`.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub path: PathBuf,
    pub head: Option<String>,
    /// Short branch name (`refs/heads/` removed); `None` when detached or bare.
    pub branch: Option<String>,
    /// `locked [reason]`: `Some("")` when locked without a reason.
    pub locked: Option<String>,
    pub prunable: bool,
}

/// Whether `worktree list` takes `-z` (git 2.36+): 0 unknown, 1 yes, 2 no.
static LIST_Z: AtomicU8 = AtomicU8::new(0);

/// `git worktree list --porcelain` of `repo`: the main worktree first. Uses `-z` where
/// git has it (2.36 and later), so that any path reads back exactly.
pub(super) fn list(repo: &Path) -> Result<Vec<Listed>> {
    let base = || Git::new(repo).args(["worktree", "list", "--porcelain"]);
    if LIST_Z.load(Ordering::Relaxed) != 2 {
        let (out, shown) = base().arg("-z").output()?;
        if out.success() {
            LIST_Z.store(1, Ordering::Relaxed);
            return Ok(parse_list(&out.stdout, 0));
        }
        // 129 is git's "unknown option" (usage) exit status.
        if out.code != Some(129) {
            return Err(failed(shown, out));
        }
        LIST_Z.store(2, Ordering::Relaxed);
    }
    Ok(parse_list(&base().run()?, b'\n'))
}

fn parse_list(out: &[u8], terminator: u8) -> Vec<Listed> {
    let mut all = Vec::new();
    let mut cur: Option<Listed> = None;
    for field in out.split(|&b| b == terminator) {
        if field.is_empty() {
            all.extend(cur.take());
            continue;
        }
        let (key, value) = match field.iter().position(|&b| b == b' ') {
            Some(i) => (&field[..i], Some(&field[i + 1..])),
            None => (field, None),
        };
        let text = || value.map(|v| String::from_utf8_lossy(v).into_owned());
        if key == b"worktree" {
            all.extend(cur.take());
            cur = Some(Listed {
                path: PathBuf::from(OsString::from_vec(value.unwrap_or_default().to_vec())),
                head: None,
                branch: None,
                locked: None,
                prunable: false,
            });
            continue;
        }
        let Some(w) = cur.as_mut() else { continue };
        match key {
            b"HEAD" => w.head = text(),
            b"branch" => {
                w.branch = text().map(|b| b.strip_prefix("refs/heads/").unwrap_or(&b).to_owned());
            }
            b"locked" => w.locked = Some(text().unwrap_or_default()),
            b"prunable" => w.prunable = true,
            _ => {}
        }
    }
    all.extend(cur);
    all
}

/// One `<common dir>/worktrees/<id>` administrative directory (gitrepository-layout(5)).
#[derive(Debug, Clone)]
pub(super) struct Admin {
    /// `<common dir>/worktrees/<id>`.
    pub dir: PathBuf,
    /// The worktree it belongs to (the directory of the `.git` file its `gitdir` names).
    pub worktree: Option<PathBuf>,
    /// Contents of its `locked` file, when there is one.
    pub locked: Option<String>,
}

/// Lists `<common>/worktrees/*` (an absent directory means none).
pub(super) fn admin_entries(common: &Path) -> Result<Vec<Admin>> {
    let root = common.join("worktrees");
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", &root, e)),
    };
    let mut all = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", &root, e))?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let worktree = read_small(&dir.join("gitdir")).map(|g| {
            // gitdir holds the path of the worktree's `.git` file, relative to this
            // directory when worktree.useRelativePaths is set (git 2.48).
            let dotgit = normalize(&dir.join(PathBuf::from(OsString::from_vec(g))));
            dotgit.parent().map_or(dotgit.clone(), Path::to_path_buf)
        });
        let locked =
            read_small(&dir.join("locked")).map(|l| String::from_utf8_lossy(&l).into_owned());
        all.push(Admin {
            dir,
            worktree,
            locked,
        });
    }
    Ok(all)
}

/// A small git-written file without its trailing newline; `None` when unreadable.
pub(super) fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Some(bytes)
}

/// Where a worktree's `.git` file points (`gitdir: <path>`), resolved against the
/// worktree; `None` when there is no such file.
pub(super) fn dotgit_target(worktree: &Path) -> Option<PathBuf> {
    let text = read_small(&worktree.join(".git"))?;
    let rest = text.strip_prefix(b"gitdir: ")?;
    Some(normalize(
        &worktree.join(PathBuf::from(OsStr::from_bytes(rest))),
    ))
}

/// `path` with `.` and `..` resolved lexically (no filesystem access).
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Number of entries in `git status --porcelain=v1 -z` output (a rename counts once).
pub(super) fn count_status(out: &[u8]) -> usize {
    let mut fields = out.split(|&b| b == 0).filter(|f| !f.is_empty());
    let mut n = 0;
    while let Some(f) = fields.next() {
        n += 1;
        if matches!(f.first(), Some(b'R' | b'C')) {
            fields.next(); // the original path
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_list_reads_both_terminators() {
        let z = b"worktree /r\0HEAD abc\0branch refs/heads/main\0\0worktree /w/a b\0HEAD def\0detached\0locked initializing\0\0worktree /w/x\0HEAD 123\0branch refs/heads/architect/x\0prunable gitdir file points to non-existent location\0\0";
        let nl: Vec<u8> = z.iter().map(|&b| if b == 0 { b'\n' } else { b }).collect();
        for (bytes, t) in [(&z[..], 0), (&nl[..], b'\n')] {
            let l = parse_list(bytes, t);
            assert_eq!(l.len(), 3);
            assert_eq!(l[0].path, Path::new("/r"));
            assert_eq!(l[0].branch.as_deref(), Some("main"));
            assert_eq!(l[1].path, Path::new("/w/a b"));
            assert_eq!(l[1].branch, None);
            assert_eq!(l[1].head.as_deref(), Some("def"));
            assert_eq!(l[1].locked.as_deref(), Some("initializing"));
            assert_eq!(l[2].branch.as_deref(), Some("architect/x"));
            assert!(l[2].prunable && !l[1].prunable);
        }
    }

    #[test]
    fn status_entries_count_renames_once() {
        assert_eq!(count_status(b""), 0);
        assert_eq!(count_status(b" M a\0?? b\0R  new\0old\0D  c\0"), 4);
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/r/.git/worktrees/x/../../../w/./s/.git")),
            Path::new("/r/w/s/.git")
        );
    }
}
