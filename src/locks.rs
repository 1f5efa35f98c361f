//! Branch and path locks: kernel advisory locks (`flock(2)` through `fs2`) on dedicated
//! lock files under `spool/locks/`, so that two tasks (or a task and a person running
//! `architect lock acquire`) never work on the same files or branch at once.
//!
//! # Layout
//! ```text
//! spool/locks/paths/@lock                       the repository root (".")
//! spool/locks/paths/src/@lock                   the directory src/
//! spool/locks/paths/src/db.rs/@lock             the path src/db.rs
//! spool/locks/paths/src/db.rs/@holder.json      who holds it (empty when free)
//! spool/locks/branches/feature/x/@lock          the branch feature/x
//! ```
//! Every repository path component is one directory level; `%` and `@` in a component
//! are percent-encoded, so `@lock` and `@holder.json` can never collide with a
//! component. Lock files are never renamed or deleted (a lock on an unlinked file would
//! exclude nobody).
//!
//! # Rules
//! - A path lock takes an exclusive lock on the path's own lock file and a shared
//!   ("intention") lock on the lock file of every ancestor directory, the root included.
//!   So a lock on `docs/` conflicts with a lock on `docs/a.md` (the directory's
//!   exclusive lock against the file's shared lock on `docs/`), while `docs/a.md` and
//!   `docs/b.md` can be held at once.
//! - A request is all or nothing: every lock is tried without blocking, in one fixed
//!   order (sorted by lock file path); at the first refusal every lock taken so far is
//!   dropped. Nobody ever waits while holding a lock, so there is no deadlock.
//! - Locks belong to the open file description: they die with the holder (a `kill -9`
//!   frees them at once) and are not shared across nodes. Lock files are opened
//!   close-on-exec (the Rust standard library always sets `O_CLOEXEC`), so an agent
//!   process started by the daemon never inherits one.
//! - An exclusive holder writes `@holder.json` ([`Holder`]) beside the lock file and
//!   empties it before unlocking (emptied, not deleted: reusing the file keeps a lock
//!   round trip free of inode allocation). A non-empty holder file whose lock is free is
//!   stale (its holder died); [`LockTable::list`] empties it and the next holder
//!   overwrites it.
//!
//! Paths are normalised by [`normalize_path`]: relative to the repository root, `.` and
//! empty components dropped, `..` refused, absolute paths accepted only inside the
//! repository, symlinks resolved (and refused when they lead outside), so two spellings
//! of one file are one lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use chrono::Utc;
use fs2::FileExt;
use serde::Serialize;

use crate::durable;
use crate::error::{Error, Result};
use crate::spool::task::{TaskSpec, Violation};
use crate::types::path_contains;

// The lock engine's data types, kept with the plain data types task records share.
pub use crate::types::{Conflict, Holder, HolderKind, Resource};

/// Name of the lock file in each lock directory.
pub const LOCK_FILE: &str = "@lock";
/// Name of the holder sidecar beside an exclusively held lock file.
pub const HOLDER_FILE: &str = "@holder.json";

/// The directory under `spool/locks/` that holds `r`'s lock file.
fn lock_dir(r: &Resource, root: &Path) -> PathBuf {
    match r {
        Resource::Branch(b) => encoded(root.join("branches"), b),
        Resource::Path(p) if p == "." => root.join("paths"),
        Resource::Path(p) => encoded(root.join("paths"), p),
    }
}

fn encoded(mut dir: PathBuf, slash_separated: &str) -> PathBuf {
    for part in slash_separated.split('/') {
        let mut name = String::with_capacity(part.len());
        for c in part.chars() {
            match c {
                '%' => name.push_str("%25"),
                '@' => name.push_str("%40"),
                c => name.push(c),
            }
        }
        dir.push(name);
    }
    dir
}

/// Why a lock path or branch name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockNameError {
    /// Empty path.
    #[error("empty path")]
    Empty,
    /// A NUL byte or other control character.
    #[error("{0:?}: control characters are not allowed in a lock path")]
    Control(String),
    /// A `..` component.
    #[error("{0:?}: `..` is not allowed in a lock path (name the path from the repository root)")]
    ParentDir(String),
    /// An absolute path outside the repository.
    #[error("{path:?} is outside the repository {repo}")]
    Outside {
        /// The path as given.
        path: String,
        /// The repository root.
        repo: String,
    },
    /// A symlink on the path leads outside the repository.
    #[error("{path:?}: {link} is a symlink that leads outside the repository")]
    SymlinkEscapes {
        /// The path as given.
        path: String,
        /// The symlink.
        link: String,
    },
    /// The repository root cannot be resolved.
    #[error("repository {repo}: {message}")]
    Repo {
        /// The repository root.
        repo: String,
        /// What went wrong.
        message: String,
    },
}

impl LockNameError {
    /// The rule broken, without the path as given: what a rejection report says (the path
    /// came from a task file, and a report never repeats a value from one).
    #[must_use]
    pub fn rule(&self) -> String {
        match self {
            Self::Empty => "empty path".into(),
            Self::Control(_) => "control characters are not allowed in a lock path".into(),
            Self::ParentDir(_) => {
                "`..` is not allowed in a lock path (name the path from the repository root)".into()
            }
            Self::Outside { .. } => "is outside the repository".into(),
            Self::SymlinkEscapes { .. } => {
                "goes through a symlink that leads outside the repository".into()
            }
            Self::Repo { .. } => self.to_string(),
        }
    }
}

/// Normalises a lock path against the repository root `repo`.
///
/// `raw` is relative to `base` (the repository root for task files; the current
/// directory for `architect lock`), or absolute. Returns the repository-relative path
/// with components joined by `/`, or `"."` for the whole repository. Symlinks in the
/// part of the path that exists are resolved, so a link and its target are one lock.
///
/// # Errors
/// [`LockNameError`]: empty, control characters, any `..` component, outside the
/// repository, a symlink that leads outside it, or a repository that cannot be resolved.
pub fn normalize_path(
    repo: &Path,
    base: &Path,
    raw: &str,
) -> std::result::Result<String, LockNameError> {
    if raw.is_empty() {
        return Err(LockNameError::Empty);
    }
    if raw.chars().any(char::is_control) {
        return Err(LockNameError::Control(raw.to_string()));
    }
    let repo_real = repo.canonicalize().map_err(|e| LockNameError::Repo {
        repo: repo.display().to_string(),
        message: e.to_string(),
    })?;
    let given = Path::new(raw);
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(LockNameError::ParentDir(raw.to_string()));
    }
    let outside = || LockNameError::Outside {
        path: raw.to_string(),
        repo: repo_real.display().to_string(),
    };
    // Lexically: where does it point, relative to the repository root?
    let full = if given.is_absolute() {
        given.to_path_buf()
    } else {
        base.join(given)
    };
    let full = lexical(&full);
    let rel = full
        .strip_prefix(lexical(repo))
        .or_else(|_| full.strip_prefix(&repo_real))
        .map_err(|_| outside())?
        .to_path_buf();
    // Resolve the existing prefix through the filesystem.
    let mut resolved = repo_real.clone();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        let next = resolved.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = next
                    .canonicalize()
                    .map_err(|_| LockNameError::SymlinkEscapes {
                        path: raw.to_string(),
                        link: next.display().to_string(),
                    })?;
                if !target.starts_with(&repo_real) {
                    return Err(LockNameError::SymlinkEscapes {
                        path: raw.to_string(),
                        link: next.display().to_string(),
                    });
                }
                resolved = target;
            }
            Ok(_) => resolved = next,
            Err(_) => {
                // The rest does not exist (yet): no symlinks to follow there.
                resolved = next;
                for rest in parts.by_ref() {
                    resolved.push(rest);
                }
            }
        }
    }
    let rel = resolved.strip_prefix(&repo_real).map_err(|_| outside())?;
    let joined = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    Ok(if joined.is_empty() {
        ".".into()
    } else {
        joined
    })
}

/// `.` and empty components dropped (`..` never reaches here).
fn lexical(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Resolves a task's `locks` against the repository: normalised paths and a checked branch.
///
/// # Errors
/// One violation per bad entry, with its JSON Pointer (`/locks/paths/1`, `/locks/branch`).
pub fn resources_for(
    spec: &TaskSpec,
    repo: &Path,
    protected: &[String],
) -> Result<Vec<Resource>, Vec<Violation>> {
    let Some(l) = &spec.locks else {
        return Ok(Vec::new());
    };
    if l.paths.len() > MAX_LOCK_PATHS {
        return Err(vec![Violation {
            path: "/locks/paths".into(),
            message: format!(
                "{} paths; at most {MAX_LOCK_PATHS} per task (each holds open files while the \
                 task runs): lock a directory that holds them instead",
                l.paths.len()
            ),
        }]);
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    if let Some(b) = &l.branch {
        match crate::worktree::validate_branch(b, protected) {
            Ok(()) => out.push(Resource::Branch(b.clone())),
            Err(e) => errors.push(Violation {
                path: "/locks/branch".into(),
                // The rule, not the name (a report never repeats a value).
                message: match e {
                    Error::InvalidBranch { reason, .. } => {
                        format!("not a branch name git or architect accepts: it {reason}")
                    }
                    Error::ProtectedBranch(_) => "is a protected branch \
                        (git.protected_branches in config/architect.toml): give the task a \
                        branch of its own"
                        .into(),
                    other => other.to_string(),
                },
            }),
        }
    }
    for (i, p) in l.paths.iter().enumerate() {
        match normalize_path(repo, repo, p) {
            Ok(n) => out.push(Resource::Path(n)),
            Err(e) => errors.push(Violation {
                path: format!("/locks/paths/{i}"),
                message: e.rule(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Most paths one task may lock: each path holds its lock file and its ancestors'
/// intention locks open while the task runs (480 paths took 987 descriptors and ran the
/// daemon out of them); a directory covers everything inside it.
pub const MAX_LOCK_PATHS: usize = 64;

/// Who is asking for locks (stamped into each [`Holder`]).
#[derive(Debug, Clone)]
pub struct Requester {
    /// Daemon or CLI.
    pub by: HolderKind,
    /// Task id, for the daemon.
    pub task: Option<String>,
    /// Session, for the daemon.
    pub session: Option<String>,
    /// This node's name.
    pub node: String,
    /// Free text.
    pub note: Option<String>,
}

/// Locks held by this process: released (holder files removed, then unlocked) on
/// [`HeldLocks::release`] or drop.
#[derive(Debug)]
pub struct HeldLocks {
    resources: Vec<Resource>,
    /// Open lock files, in acquisition order.
    files: Vec<File>,
    /// Holder files written for the exclusive locks (emptied on release).
    holder_files: Vec<File>,
    since: Instant,
}

impl HeldLocks {
    /// The resources held (as requested, minus those covered by another).
    #[must_use]
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// How long they have been held, in ms.
    #[must_use]
    pub fn held_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Releases every lock.
    pub fn release(self) {}
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        // Holder files first: once unlocked, the next holder may write its own.
        for f in &self.holder_files {
            let _ = f.set_len(0);
        }
        for file in &self.files {
            let _ = FileExt::unlock(file);
        }
    }
}

/// What [`LockTable::list`] found.
#[derive(Debug, Default, Serialize)]
pub struct Listing {
    /// Locks held right now, sorted by resource.
    pub held: Vec<Holder>,
    /// Stale holder files removed (their holder died).
    pub stale_removed: Vec<Resource>,
}

/// The lock files under one spool's `locks/` directory.
#[derive(Debug, Clone)]
pub struct LockTable {
    root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Shared,
    Exclusive,
}

impl LockTable {
    /// The lock table in `dir` (`spool/locks/`).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { root: dir.into() }
    }

    /// The plan for `resources`: `(lock file dir, mode, requested resource)`, sorted by
    /// path, each lock file once. Resources covered by another requested one are dropped.
    fn plan(&self, resources: &[Resource]) -> (Vec<Resource>, Vec<(PathBuf, Mode, Resource)>) {
        let mut wanted: Vec<Resource> = resources.to_vec();
        wanted.sort();
        wanted.dedup();
        let kept: Vec<Resource> = wanted
            .iter()
            .filter(|r| match r {
                Resource::Branch(_) => true,
                Resource::Path(p) => !wanted.iter().any(|o| match o {
                    Resource::Path(q) => q != p && path_contains(q, p),
                    Resource::Branch(_) => false,
                }),
            })
            .cloned()
            .collect();
        let mut ops: BTreeMap<PathBuf, (Mode, Resource)> = BTreeMap::new();
        for r in &kept {
            if let Resource::Path(p) = r {
                if p != "." {
                    // Intention locks on the root and every ancestor directory.
                    let parts: Vec<&str> = p.split('/').collect();
                    for depth in 0..parts.len() {
                        let ancestor = if depth == 0 {
                            Resource::Path(".".into())
                        } else {
                            Resource::Path(parts[..depth].join("/"))
                        };
                        ops.entry(lock_dir(&ancestor, &self.root))
                            .or_insert((Mode::Shared, r.clone()));
                    }
                }
            }
            ops.insert(lock_dir(r, &self.root), (Mode::Exclusive, r.clone()));
        }
        let ops = ops.into_iter().map(|(d, (m, r))| (d, m, r)).collect();
        (kept, ops)
    }

    /// Tries to take every lock in `resources` at once, without waiting.
    ///
    /// Returns `Ok(Ok(held))` when all were taken, `Ok(Err(conflict))` naming the first
    /// resource that is held elsewhere (nothing is kept in that case).
    ///
    /// # Errors
    /// [`Error::Io`] when a lock directory or file cannot be created or locked for a
    /// reason other than contention.
    pub fn try_acquire(
        &self,
        resources: &[Resource],
        who: &Requester,
    ) -> Result<std::result::Result<HeldLocks, Conflict>> {
        let (kept, ops) = self.plan(resources);
        let since = Utc::now();
        let mut held = HeldLocks {
            resources: kept,
            files: Vec::with_capacity(ops.len()),
            holder_files: Vec::new(),
            since: Instant::now(),
        };
        for (dir, mode, resource) in &ops {
            let file = open_lock(dir)?;
            let got = match mode {
                Mode::Shared => FileExt::try_lock_shared(&file),
                Mode::Exclusive => FileExt::try_lock_exclusive(&file),
            };
            match got {
                Ok(()) => held.files.push(file),
                Err(e) if is_contention(&e) => {
                    drop(held);
                    let holder = self.find_holder(dir, *mode);
                    return Ok(Err(Conflict {
                        resource: resource.clone(),
                        holder,
                    }));
                }
                Err(e) => return Err(Error::io("locking", dir.join(LOCK_FILE), e)),
            }
        }
        let pid = std::process::id();
        for (dir, mode, resource) in &ops {
            if *mode != Mode::Exclusive {
                continue;
            }
            let holder = Holder {
                resource: resource.clone(),
                by: who.by,
                task: who.task.clone(),
                session: who.session.clone(),
                node: who.node.clone(),
                pid,
                since,
                note: who.note.clone(),
            };
            let path = dir.join(HOLDER_FILE);
            let bytes =
                serde_json::to_vec_pretty(&holder).map_err(|e| Error::json("lock holder", e))?;
            held.holder_files.push(write_holder(&path, &bytes)?);
        }
        Ok(Ok(held))
    }

    /// Who holds the lock in `dir` (refused in `mode`): its own holder file, else (for a
    /// directory refused because something inside it is held) the first holder file
    /// below it, else an exclusive holder of an ancestor.
    fn find_holder(&self, dir: &Path, mode: Mode) -> Option<Holder> {
        if let Some(h) = read_holder(&dir.join(HOLDER_FILE)) {
            return Some(h);
        }
        if mode == Mode::Exclusive {
            let below = walkdir::WalkDir::new(dir)
                .min_depth(2)
                .into_iter()
                .filter_map(std::result::Result::ok)
                .find(|e| e.file_name() == HOLDER_FILE)
                .and_then(|e| read_holder(e.path()));
            if below.is_some() {
                return below;
            }
        }
        None
    }

    /// Lists the live locks; removes holder files whose lock is free (their holder died).
    ///
    /// # Errors
    /// [`Error::Io`] when the lock directory cannot be read.
    pub fn list(&self) -> Result<Listing> {
        let mut listing = Listing::default();
        if !self.root.exists() {
            return Ok(listing);
        }
        for entry in walkdir::WalkDir::new(&self.root).sort_by_file_name() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&self.root).to_path_buf();
                Error::io(
                    "listing locks",
                    path,
                    e.into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk error")),
                )
            })?;
            if entry.file_name() != HOLDER_FILE {
                continue;
            }
            let sidecar = entry.path();
            let Some(dir) = sidecar.parent() else {
                continue;
            };
            let Ok(file) = open_lock(dir) else { continue };
            match FileExt::try_lock_shared(&file) {
                Ok(()) => {
                    // Free: nobody holds it exclusively, so a holder named there is
                    // stale. Emptied while we hold the shared lock, so no new holder can
                    // have written it in between.
                    if let Some(h) = read_holder(sidecar) {
                        listing.stale_removed.push(h.resource);
                        if let Ok(f) = OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(sidecar)
                        {
                            let _ = f.set_len(0);
                        }
                    }
                    let _ = FileExt::unlock(&file);
                }
                Err(_) => {
                    if let Some(h) = read_holder(sidecar) {
                        listing.held.push(h);
                    }
                }
            }
        }
        listing.held.sort_by(|a, b| a.resource.cmp(&b.resource));
        Ok(listing)
    }
}

/// Checks a node's event log for the locking rule: walking `lock_acquired` and
/// `lock_released` events in log order, no task ever acquires a resource that overlaps
/// one another task still holds (a `daemon_started` event clears the holders: a daemon
/// that died held nothing afterwards). Returns the number of acquisitions checked.
///
/// # Errors
/// A description of the first violation (both tasks and resources).
pub fn verify_exclusion(events: &[crate::log::Event]) -> std::result::Result<usize, String> {
    use crate::log::EventBody;
    let mut held: BTreeMap<String, Vec<Resource>> = BTreeMap::new();
    let mut checked = 0;
    for e in events {
        if let EventBody::DaemonStarted(_) = e.body {
            // A daemon that died held nothing after it (the kernel released its locks).
            held.clear();
            continue;
        }
        let Some(task) = &e.task_id else { continue };
        match &e.body {
            EventBody::LockAcquired(acquired) => {
                let wanted = acquired.resources.clone();
                for (other, theirs) in &held {
                    if other == task {
                        continue;
                    }
                    if let Some((a, b)) = wanted
                        .iter()
                        .find_map(|a| theirs.iter().find(|b| a.overlaps(b)).map(|b| (a, b)))
                    {
                        return Err(format!(
                            "at {}: task {task} acquired {a} while task {other} held {b}",
                            e.ts
                        ));
                    }
                }
                held.insert(task.clone(), wanted);
                checked += 1;
            }
            EventBody::LockReleased(_) => {
                held.remove(task);
            }
            _ => {}
        }
    }
    Ok(checked)
}

fn is_contention(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Opens (creating it and its directories, 0700/0600) the lock file in `dir`.
fn open_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("creating lock directory", dir, e))?;
            open().map_err(|e| Error::io("opening lock file", &path, e))
        }
        Err(e) => Err(Error::io("opening lock file", &path, e)),
    }
}

/// Writes a holder file in place (truncate, write; no temp file, no `fsync`) and returns
/// it open, to be emptied on release. Only the exclusive holder writes it; a reader that
/// catches it half-written reads "holder unknown" — the lock itself is the truth, the
/// file only says who.
fn write_holder(path: &Path, bytes: &[u8]) -> Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("writing lock holder", path, e))?;
    std::io::Write::write_all(&mut f, bytes)
        .map_err(|e| Error::io("writing lock holder", path, e))?;
    Ok(f)
}

fn read_holder(path: &Path) -> Option<Holder> {
    let bytes = durable::read_regular(path, 64 * 1024).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(task: &str) -> Requester {
        Requester {
            by: HolderKind::Daemon,
            task: Some(task.into()),
            session: Some("s1".into()),
            node: "n1".into(),
            note: None,
        }
    }

    fn p(s: &str) -> Resource {
        Resource::Path(s.into())
    }

    /// Issue 9: what intake rejects names the rule, never the branch or path given.
    #[test]
    fn bad_lock_entries_are_reported_without_their_value() {
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), repo.path().join("escape")).unwrap();
        let s = "SECRET123";
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "prompt": "x",
            "locks": {
                "branch": format!("a..{s}"),
                "paths": [
                    format!("../{s}"),
                    format!("/etc/{s}"),
                    format!("escape/{s}"),
                    format!("a\u{7}{s}"),
                ],
            },
        }))
        .unwrap();
        let errors = resources_for(&spec, repo.path(), &["main".into()]).unwrap_err();
        let shown = format!("{errors:?}");
        assert!(!shown.contains(s), "{shown}");
        assert_eq!(errors.len(), 5, "{shown}");
        for (e, says) in errors.iter().zip([
            "contains '..'",
            "`..` is not allowed",
            "outside the repository",
            "symlink",
            "control characters",
        ]) {
            assert!(e.message.contains(says), "{e:?}");
        }
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "prompt": "x", "locks": {"branch": "Main"},
        }))
        .unwrap();
        let errors = resources_for(&spec, repo.path(), &["main".into()]).unwrap_err();
        assert!(
            errors[0].message.starts_with("is a protected branch"),
            "{errors:?}"
        );
        assert!(!errors[0].message.contains("Main"), "{errors:?}");
    }

    #[test]
    fn same_path_excludes_and_frees_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::new(dir.path());
        let a = table
            .try_acquire(&[p("src/db.rs")], &who("a"))
            .unwrap()
            .unwrap();
        let c = table
            .try_acquire(&[p("src/db.rs")], &who("b"))
            .unwrap()
            .unwrap_err();
        assert_eq!(c.resource, p("src/db.rs"));
        assert_eq!(c.holder.unwrap().task.as_deref(), Some("a"));
        assert!(dir.path().join("paths/src/db.rs/@holder.json").exists());
        a.release();
        let sidecar = dir.path().join("paths/src/db.rs/@holder.json");
        assert_eq!(std::fs::metadata(sidecar).unwrap().len(), 0, "emptied");
        table
            .try_acquire(&[p("src/db.rs")], &who("b"))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn directory_conflicts_with_paths_inside_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::new(dir.path());
        let file = table
            .try_acquire(&[p("docs/a.md")], &who("a"))
            .unwrap()
            .unwrap();
        // A sibling is fine; the directory and the root are not.
        let sib = table
            .try_acquire(&[p("docs/b.md")], &who("b"))
            .unwrap()
            .unwrap();
        let c = table
            .try_acquire(&[p("docs")], &who("c"))
            .unwrap()
            .unwrap_err();
        assert_eq!(c.resource, p("docs"));
        let inside = c.holder.unwrap().resource;
        assert!(
            inside == p("docs/a.md") || inside == p("docs/b.md"),
            "{inside}"
        );
        assert!(table.try_acquire(&[p(".")], &who("c")).unwrap().is_err());
        drop((file, sib));
        let d = table.try_acquire(&[p("docs")], &who("d")).unwrap().unwrap();
        let c = table
            .try_acquire(&[p("docs/deep/x")], &who("e"))
            .unwrap()
            .unwrap_err();
        assert_eq!(c.holder.unwrap().task.as_deref(), Some("d"));
        drop(d);
    }

    #[test]
    fn all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::new(dir.path());
        let _b = table.try_acquire(&[p("b")], &who("x")).unwrap().unwrap();
        let c = table
            .try_acquire(&[p("a"), p("b"), p("c")], &who("y"))
            .unwrap()
            .unwrap_err();
        assert_eq!(c.resource, p("b"));
        // Nothing of the refused request is kept: a and c are free.
        table
            .try_acquire(&[p("a"), p("c")], &who("z"))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn covered_resources_are_dropped_and_branches_are_flat() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::new(dir.path());
        let held = table
            .try_acquire(
                &[
                    p("src"),
                    p("src/db.rs"),
                    Resource::Branch("feature/x".into()),
                ],
                &who("a"),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            held.resources(),
            &[Resource::Branch("feature/x".into()), p("src")]
        );
        assert!(table
            .try_acquire(&[Resource::Branch("feature/x".into())], &who("b"))
            .unwrap()
            .is_err());
        table
            .try_acquire(&[Resource::Branch("feature/y".into())], &who("b"))
            .unwrap()
            .unwrap();
    }

    #[test]
    fn names_that_look_like_lock_files_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::new(dir.path());
        let _a = table.try_acquire(&[p("x")], &who("a")).unwrap().unwrap();
        // "x/@lock" is a path inside x: it conflicts because of x, not by a name clash.
        assert!(table
            .try_acquire(&[p("x/@lock")], &who("b"))
            .unwrap()
            .is_err());
        let _c = table
            .try_acquire(&[p("y/@lock")], &who("c"))
            .unwrap()
            .unwrap();
        let _d = table
            .try_acquire(&[p("y/%40lock")], &who("d"))
            .unwrap()
            .unwrap();
        assert!(dir.path().join("paths/y/%40lock/@lock").exists());
    }

    #[test]
    fn stale_holder_files_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let table = LockTable::new(dir.path());
        let held = table.try_acquire(&[p("a")], &who("a")).unwrap().unwrap();
        let listing = table.list().unwrap();
        assert_eq!(listing.held.len(), 1);
        assert_eq!(listing.held[0].task.as_deref(), Some("a"));
        // Simulate a holder that died without cleaning up: keep the file, drop the lock.
        let sidecar = dir.path().join("paths/a/@holder.json");
        let copy = std::fs::read(&sidecar).unwrap();
        drop(held);
        std::fs::write(&sidecar, copy).unwrap();
        let listing = table.list().unwrap();
        assert!(listing.held.is_empty());
        assert_eq!(listing.stale_removed, vec![p("a")]);
        assert_eq!(std::fs::metadata(&sidecar).unwrap().len(), 0, "emptied");
        assert!(table.list().unwrap().stale_removed.is_empty(), "only once");
    }

    #[test]
    fn paths_are_normalised_and_kept_inside() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        std::fs::create_dir_all(r.join("src/sub")).unwrap();
        std::fs::write(r.join("src/db.rs"), "").unwrap();
        let n = |s: &str| normalize_path(r, r, s);
        assert_eq!(n("src/db.rs").unwrap(), "src/db.rs");
        assert_eq!(n("./src//db.rs").unwrap(), "src/db.rs");
        assert_eq!(n("docs/").unwrap(), "docs");
        assert_eq!(n(".").unwrap(), ".");
        assert_eq!(n(&r.join("src").display().to_string()).unwrap(), "src");
        assert_eq!(
            normalize_path(r, &r.join("src"), "sub/x").unwrap(),
            "src/sub/x"
        );
        assert!(matches!(n("../x"), Err(LockNameError::ParentDir(_))));
        assert!(matches!(n("src/../../x"), Err(LockNameError::ParentDir(_))));
        assert!(matches!(
            n("/etc/passwd"),
            Err(LockNameError::Outside { .. })
        ));
        assert!(matches!(n(""), Err(LockNameError::Empty)));
        assert!(matches!(n("a\0b"), Err(LockNameError::Control(_))));
        // Symlinks: one inside resolves to its target; one leading out is refused.
        std::os::unix::fs::symlink(r.join("src"), r.join("alias")).unwrap();
        assert_eq!(n("alias/db.rs").unwrap(), "src/db.rs");
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("out")).unwrap();
        assert!(matches!(
            n("out/x"),
            Err(LockNameError::SymlinkEscapes { .. })
        ));
        std::os::unix::fs::symlink("/nonexistent/target", r.join("dangling")).unwrap();
        assert!(matches!(
            n("dangling"),
            Err(LockNameError::SymlinkEscapes { .. })
        ));
    }

    #[test]
    fn exclusion_checker_catches_overlapping_holders() {
        use crate::log::event::{LockAcquired, LockReleased};
        let ev = |acquire: bool, task: &str, resources: &[&str]| {
            let resources: Vec<Resource> = resources
                .iter()
                .map(|r| match r.strip_prefix("branch:") {
                    Some(b) => Resource::Branch(b.into()),
                    None => Resource::Path((*r).into()),
                })
                .collect();
            crate::log::Event {
                ts: Utc::now(),
                node: "n".into(),
                task_id: Some(task.into()),
                session: None,
                body: if acquire {
                    LockAcquired {
                        resources,
                        waited_ms: 0,
                    }
                    .into()
                } else {
                    LockReleased {
                        resources,
                        held_ms: 0,
                    }
                    .into()
                },
            }
        };
        let ok = [
            ev(true, "a", &["src/db.rs"]),
            ev(true, "b", &["src/other.rs", "branch:x"]),
            ev(false, "a", &["src/db.rs"]),
            ev(true, "c", &["src"]),
        ];
        assert!(
            verify_exclusion(&ok).is_err(),
            "c overlaps b's src/other.rs"
        );
        assert_eq!(verify_exclusion(&ok[..3]), Ok(2));
        let bad = [ev(true, "a", &["branch:x"]), ev(true, "b", &["branch:x"])];
        let err = verify_exclusion(&bad).unwrap_err();
        assert!(
            err.contains("task b acquired branch:x while task a held branch:x"),
            "{err}"
        );
    }
}
