//! Durable file primitives, for the spool and every other file architect keeps (lock
//! holders, LLM budgets and breakers, worktree bookkeeping, `architect init`'s config).
//! Every file the spool publishes goes through [`write_atomic`]: temp file in the same
//! directory, `fsync`, rename, `fsync` of the directory, mode 0600 (the Maildir delivery
//! rule; see `shared/RELIABILITY.md` rule 1 and 2). Also here: the daemon's group
//! commit ([`WriteBatch`]), the claim by [`rename_noreplace`], and safe reads of files
//! others may have planted ([`read_regular`]).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` and its parents with mode 0700 (existing directories are left as they are).
///
/// # Errors
/// [`Error::Io`] when the directory cannot be created.
pub fn create_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

/// Checks that `dir` is a directory this process can trust to hold its files: a real
/// directory (not a symlink), owned by the effective user, and not writable by others.
/// Otherwise someone else could plant a symlink or swap a file there between our checks
/// and our writes (the log, the daemon lock, task records).
///
/// # Errors
/// [`Error::Io`] (kind `PermissionDenied`) naming what is wrong and the fix.
pub fn check_own_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("checking", dir, e))?;
    let refuse = |why: String| {
        Err(Error::io(
            "checking",
            dir,
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symlink; the spool's directories must be real directories".into());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return refuse(format!(
            "it is owned by uid {}, not by this process (uid {euid}); run architect as its \
             owner, or `chown` it",
            meta.uid()
        ));
    }
    if meta.mode() & 0o002 != 0 {
        return refuse(format!(
            "anyone can write to it (mode {:o}); run `chmod o-w {}`",
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(())
}

/// `fsync`s a directory so that renames and unlinks in it are durable.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("opening directory", dir, e))?;
    f.sync_all()
        .map_err(|e| Error::io("syncing directory", dir, e))
}

fn temp_name(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", ulid::Ulid::new()))
}

/// Writes `bytes` to `path` atomically and durably: a dot-named temp file in the same
/// directory (ignored by every spool reader), `fsync`, rename over `path`, `fsync` of
/// the directory. Mode 0600.
///
/// # Errors
/// [`Error::Io`] naming the step that failed; the temp file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_then_rename(path, bytes, true)?;
    sync_dir(parent(path))
}

/// Writes `bytes` to `path` atomically (temp file, rename; no `fsync`), mode 0644: for
/// files that other users' programs read, such as the metrics file node_exporter's
/// textfile collector picks up. The temp file is dot-named, so a reader matching `*.prom`
/// never sees a half-written file.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomic_public(path: &Path, bytes: &[u8]) -> Result<()> {
    write_then_rename_mode(path, bytes, false, 0o644)
}

/// Creates a new file (never an existing one), with `mode` (before the umask),
/// close-on-exec.
fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn write_then_rename(path: &Path, bytes: &[u8], sync_file: bool) -> Result<()> {
    write_then_rename_mode(path, bytes, sync_file, 0o600)
}

fn write_then_rename_mode(path: &Path, bytes: &[u8], sync_file: bool, mode: u32) -> Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = create_new(&tmp, mode).map_err(|e| Error::io("creating temp file", &tmp, e))?;
        if mode != 0o600 {
            // The mode asked for, whatever the umask (a umask of 077 would hide a public
            // file from the reader it is for).
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io("setting the mode of temp file", &tmp, e))?;
        }
        f.write_all(bytes)
            .map_err(|e| Error::io("writing temp file", &tmp, e))?;
        if sync_file {
            f.sync_all()
                .map_err(|e| Error::io("syncing temp file", &tmp, e))?;
        }
        fs::rename(&tmp, path).map_err(|e| Error::io("renaming temp file onto", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically (temp file, rename) but without any `fsync`: for
/// derived state that is rebuilt at start-up (`sessions/<name>.json`).
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomic_volatile(path: &Path, bytes: &[u8]) -> Result<()> {
    write_then_rename(path, bytes, false)
}

/// Renames `from` to `to` without replacing an existing `to` (`renameat2` with
/// `RENAME_NOREPLACE`), then `fsync`s both directories. Only one of two racing renames of
/// the same source can win: this is how a task is claimed.
///
/// # Errors
/// [`Error::Io`] with `AlreadyExists` when `to` exists, `NotFound` when `from` is gone.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    rename_noreplace_nosync(from, to)?;
    sync_dir(parent(to))?;
    let (a, b) = (parent(from), parent(to));
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// [`rename_noreplace`] without the directory `fsync`s.
///
/// # Errors
/// As [`rename_noreplace`].
pub fn rename_noreplace_nosync(from: &Path, to: &Path) -> Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            // Filesystem without RENAME_NOREPLACE: link + unlink keeps the no-replace guarantee.
            fs::hard_link(from, to)
                .map_err(|e| Error::io(format!("renaming {} to", from.display()), to, e))?;
            fs::remove_file(from).map_err(|e| Error::io("removing after link", from, e))
        }
        Err(err) => Err(Error::io(
            format!("renaming {} to", from.display()),
            to,
            err,
        )),
    }
}

/// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let nul = |_| std::io::Error::other("NUL in path");
    let c_from = CString::new(from.as_os_str().as_bytes()).map_err(nul)?;
    let c_to = CString::new(to.as_os_str().as_bytes()).map_err(nul)?;
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A group commit: durable writes and renames collected during one scheduler pass and
/// carried out together by [`WriteBatch::flush`], so that one pass costs one round of
/// `fsync`s however many tasks moved in it.
///
/// `flush` keeps every per-file rule of [`write_atomic`] (temp file, `fsync` before the
/// rename, directory `fsync` after) and the order of the operations as queued, so a
/// record rewritten and then renamed moves with its new content.
///
/// Temp files are recycled: a rewrite publishes its temp file by swapping it with the old
/// file (`renameat2(RENAME_EXCHANGE)`), so the old file's inode lands under the temp name
/// and is reused for the next write in that directory. At a steady rate nothing is
/// allocated or deleted per write — on this project's VM (ext4 without a journal) a new
/// inode costs ~0.85 ms and was the throughput limit (BENCHMARKS.md). Temp names start
/// with a dot and end in `.tmp`, so every spool reader ignores them.
#[derive(Debug, Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    dirs: std::collections::BTreeSet<std::path::PathBuf>,
    /// Files removed once everything else is durable.
    removals: Vec<std::path::PathBuf>,
    /// Recycled temp files, by directory.
    pool: std::collections::HashMap<std::path::PathBuf, Vec<std::path::PathBuf>>,
    /// Empty temp files made in advance for copies (see [`WriteBatch::write_copy`]).
    spares: Spares,
    /// Bytes of the queued writes.
    queued_bytes: usize,
    /// Every path a queued operation or removal names (for [`WriteBatch::holds`]).
    touched: std::collections::HashSet<std::path::PathBuf>,
    /// Flushes in a row that kept failed operations.
    failures: u32,
    /// When to try kept operations again.
    retry_at: Option<std::time::Instant>,
    /// What [`WriteBatch::publish`] made visible and [`WriteBatch::sync`] makes durable.
    published: Published,
    /// Operations written to temp files whose publication waits for [`WriteBatch::sync`].
    staged: Vec<Staged>,
    /// Operations that failed this round (and those after them on the same file name).
    kept: Vec<BatchOp>,
}

/// An operation with its temp file, written (`None` for a rename, or a write that failed).
#[derive(Debug)]
struct Staged {
    op: BatchOp,
    file: Option<(std::path::PathBuf, File)>,
}

/// Published by [`WriteBatch::publish`], not yet durable.
#[derive(Debug, Default)]
struct Published {
    /// Copies published before their data was synced, open (a rename later in the batch
    /// does not change the inode): `(path published at, file)`.
    copies: Vec<(std::path::PathBuf, File)>,
    /// Directories whose entries changed.
    dirs: std::collections::BTreeSet<std::path::PathBuf>,
    /// Copies written, by directory (the spares to make again).
    copies_in: std::collections::BTreeMap<std::path::PathBuf, usize>,
    /// Removals to make once the rest is durable (only when nothing was kept).
    removals: Vec<std::path::PathBuf>,
    /// Whether a publish has happened that no sync has followed.
    pending: bool,
}

/// Most recycled temp files kept per directory.
const POOL_LIMIT: usize = 256;

/// Fewest spare (empty) temp files kept for copies in a directory that takes them; more
/// when a round used more, up to [`POOL_LIMIT`].
const SPARES_MIN: usize = 8;

#[derive(Debug)]
enum BatchOp {
    /// A write; `copy` when its bytes are also in a file the batch removes only once it is
    /// durable (see [`WriteBatch::write_copy`]).
    Write {
        path: std::path::PathBuf,
        bytes: Vec<u8>,
        copy: bool,
    },
    Rename(std::path::PathBuf, std::path::PathBuf),
}

impl BatchOp {
    /// The file name the operation is about: operations on one name keep their order,
    /// and none runs after one of them failed.
    fn key(&self) -> std::ffi::OsString {
        let path = match self {
            Self::Write { path, .. } | Self::Rename(_, path) => path,
        };
        path.file_name().unwrap_or_default().to_os_string()
    }
}

impl WriteBatch {
    /// Queues an atomic, durable write of `bytes` to `path`: the data is synced before it
    /// is published, so after a crash (even of the machine) `path` holds the old bytes or
    /// the new ones.
    pub fn write(&mut self, path: &Path, bytes: Vec<u8>) {
        self.queue_write(path, bytes, false);
    }

    /// Queues the write of a new file `path` whose `bytes` are a copy of a file that the
    /// same batch removes with [`WriteBatch::remove_after`] (intake's copy of an inbox
    /// file). It is published before its data is synced, so what waits for the claim of a
    /// new task waits for no `fsync`; the data, then the directories, are synced by
    /// [`WriteBatch::sync`], and only then is the original removed. A power loss before
    /// the sync can leave `path` missing, empty or cut short — never anything else: it is
    /// a new inode, never a recycled one — while the original is still in place.
    pub fn write_copy(&mut self, path: &Path, bytes: Vec<u8>) {
        self.queue_write(path, bytes, true);
    }

    fn queue_write(&mut self, path: &Path, bytes: Vec<u8>, copy: bool) {
        self.touched.insert(path.to_path_buf());
        self.dirs.insert(parent(path).to_path_buf());
        self.queued_bytes += bytes.len();
        self.ops.push(BatchOp::Write {
            path: path.to_path_buf(),
            bytes,
            copy,
        });
    }

    /// Queues a no-replace rename (see [`rename_noreplace`]).
    pub fn rename(&mut self, from: &Path, to: &Path) {
        self.touched.insert(from.to_path_buf());
        self.touched.insert(to.to_path_buf());
        self.dirs.insert(parent(from).to_path_buf());
        self.dirs.insert(parent(to).to_path_buf());
        self.ops
            .push(BatchOp::Rename(from.to_path_buf(), to.to_path_buf()));
    }

    /// Queues the removal of `path` after the batch's writes and renames are durable (an
    /// inbox file, once its copy is in `pending/`): removals wait while any operation is
    /// kept for another try. Removing it is not made durable: a crash can bring it back,
    /// and intake recognises it then.
    pub fn remove_after(&mut self, path: &Path) {
        self.touched.insert(path.to_path_buf());
        self.removals.push(path.to_path_buf());
    }

    /// Queues a directory `fsync` (for a rename already done by the caller).
    pub fn sync_dir_later(&mut self, dir: &Path) {
        self.dirs.insert(dir.to_path_buf());
    }

    /// The bytes queued for writing (so a caller can carry the batch out before it holds
    /// too much).
    #[must_use]
    pub fn bytes_queued(&self) -> usize {
        self.queued_bytes
    }

    /// Whether a queued write, rename (to or from) or removal names `path`: it is in
    /// flight, and what the disk shows of it now is about to change.
    #[must_use]
    pub fn holds(&self, path: &Path) -> bool {
        self.touched.contains(path)
    }

    /// Whether nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.dirs.is_empty() && self.removals.is_empty()
    }

    /// Carries out the batch: [`WriteBatch::publish`], then [`WriteBatch::sync`]. Returns
    /// the errors met.
    pub fn flush(&mut self) -> Vec<Error> {
        let mut errors = self.publish();
        errors.extend(self.sync());
        errors
    }

    /// The first half of [`WriteBatch::flush`]: writes every queued write to a temp file
    /// and publishes, in queued order, every file's operations that need no `fsync`
    /// first — renames, and [`WriteBatch::write_copy`]s — so that a claim (a copy into
    /// `pending/`, its rename to `active/`) is on disk without waiting for any `fsync`.
    /// The operations of a file with a [`WriteBatch::write`] wait for
    /// [`WriteBatch::sync`], which syncs their data first; [`WriteBatch::holds`] still
    /// names them. What a crash of the process leaves is what was published; what a power
    /// loss leaves is only what a sync made durable. Returns the errors met.
    ///
    /// **No rename after a failed write.** Operations are grouped by file name (a task's
    /// `<id>.json` in every state directory), and keep their order within it. When a
    /// write or rename fails for a reason that may pass (the disk is full, an I/O error,
    /// a permission), it and every later operation on the same file name stay queued, in
    /// order, and are tried again by the next flush ([`WriteBatch::stalled`] says so,
    /// [`WriteBatch::retry_at`] says when, with a backoff from 50 ms doubling to 5 s).
    /// Removals wait until nothing is kept. A rename whose source is gone or whose target
    /// exists is not retried: it is reported and dropped.
    pub fn publish(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        let ops = std::mem::take(&mut self.ops);
        self.queued_bytes = 0;
        self.published.pending = true;
        self.published.dirs.append(&mut self.dirs);
        self.published.removals.append(&mut self.removals);
        let mut staged = Vec::with_capacity(ops.len());
        for op in ops {
            let file = match &op {
                BatchOp::Write { path, bytes, copy } => {
                    let (tmp, written) = if *copy {
                        self.spare_for(path)
                    } else {
                        self.temp_for(path)
                    };
                    match written.and_then(|mut f| f.write_all(bytes).map(|()| f)) {
                        Ok(f) => Some((tmp, f)),
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            errors.push(Error::io("writing temp file", &tmp, e));
                            None
                        }
                    }
                }
                BatchOp::Rename(..) => None,
            };
            staged.push(Staged { op, file });
        }
        // The files whose operations wait for a sync of their data.
        let waits: std::collections::HashSet<std::ffi::OsString> = staged
            .iter()
            .filter(|s| matches!(s.op, BatchOp::Write { copy: false, .. }))
            .map(|s| s.op.key())
            .collect();
        let (later, now): (Vec<Staged>, Vec<Staged>) = staged
            .into_iter()
            .partition(|s| waits.contains(&s.op.key()));
        self.publish_in_order(now, &mut errors);
        self.staged = later;
        self.retouch();
        errors
    }

    /// The second half of [`WriteBatch::flush`]: syncs the data of the waiting writes and
    /// publishes their files' operations (as [`WriteBatch::publish`] does), then makes
    /// everything published durable — the copies' data, then each touched directory once
    /// — and then makes the removals, unless an operation was kept for another try.
    /// Operations queued since the publish wait for the next one. Returns the errors met;
    /// when a copy's data or a directory could not be synced, the removals wait too (an
    /// inbox file left behind is recognised by a later listing as taken in already).
    pub fn sync(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        let mut staged = std::mem::take(&mut self.staged);
        for s in &mut staged {
            if let Some((tmp, f)) = &s.file {
                if let Err(e) = f.sync_all() {
                    errors.push(Error::io("syncing temp file", tmp, e));
                    let _ = fs::remove_file(tmp);
                    s.file = None;
                }
            }
        }
        self.publish_in_order(staged, &mut errors);
        let published = std::mem::take(&mut self.published);
        let mut synced = errors.is_empty();
        for (path, f) in published.copies {
            if let Err(e) = f.sync_all() {
                errors.push(Error::io("syncing", &path, e));
                synced = false;
            }
        }
        for dir in published.dirs {
            if let Err(e) = sync_dir(&dir) {
                errors.push(e);
                synced = false;
            }
        }
        for (dir, used) in published.copies_in {
            self.top_up_spares(&dir, used);
        }
        let kept = std::mem::take(&mut self.kept);
        if kept.is_empty() {
            self.failures = 0;
            self.retry_at = None;
            if synced {
                for path in published.removals {
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => errors.push(Error::io("removing", &path, e)),
                    }
                }
            }
        } else {
            let delay = 50u64.saturating_mul(1 << self.failures.min(7)).min(5000);
            self.failures += 1;
            self.retry_at =
                Some(std::time::Instant::now() + std::time::Duration::from_millis(delay));
            let mut removals = published.removals;
            removals.append(&mut self.removals);
            self.removals = removals;
            // Kept operations go first, before what was queued since the publish.
            let mut ops = kept;
            ops.append(&mut self.ops);
            self.ops = ops;
            self.queued_bytes = 0;
            for op in &self.ops {
                match op {
                    BatchOp::Write { path, bytes, .. } => {
                        self.dirs.insert(parent(path).to_path_buf());
                        self.queued_bytes += bytes.len();
                    }
                    BatchOp::Rename(from, to) => {
                        self.dirs.insert(parent(from).to_path_buf());
                        self.dirs.insert(parent(to).to_path_buf());
                    }
                }
            }
        }
        self.retouch();
        errors
    }

    /// Publishes staged operations in order, keeping (in `self.kept`, in order) a failed
    /// one and every later one on the same file name.
    ///
    /// A copy followed at once (for its file name) by a rename of it — intake's copy into
    /// `pending/` and the claim to `active/` in one round — is published at the rename's
    /// target in one step, with the rename's no-replace rule: when the target exists, the
    /// copy is published where it was bound and the rename is reported as dropped.
    fn publish_in_order(&mut self, staged: Vec<Staged>, errors: &mut Vec<Error>) {
        let mut blocked: std::collections::HashSet<std::ffi::OsString> =
            self.kept.iter().map(BatchOp::key).collect();
        let onward = copies_renamed_next(&staged);
        let mut done_with_copy = std::collections::HashSet::new();
        for (i, Staged { op, file }) in staged.into_iter().enumerate() {
            let key = op.key();
            if blocked.contains(&key) {
                if let Some((tmp, _)) = file {
                    let _ = fs::remove_file(tmp);
                }
                self.kept.push(op);
                continue;
            }
            if done_with_copy.contains(&i) {
                continue; // the rename was carried out with the copy before it
            }
            let result = match (&op, file) {
                (BatchOp::Write { path, copy, .. }, Some((tmp, f))) => {
                    let onward_to = onward.get(&i).and_then(|(rename, to)| {
                        rename_noreplace_nosync(&tmp, to).ok().map(|()| {
                            done_with_copy.insert(*rename);
                            to.clone()
                        })
                    });
                    let published = match onward_to {
                        Some(to) => Ok(to),
                        // A new file: nothing to swap with (the rename to the copy's
                        // target, if it failed above, is carried out in its turn and
                        // fails or is dropped as it would have).
                        None if *copy => {
                            fs::rename(&tmp, path).map(|()| path.clone()).map_err(|e| {
                                let _ = fs::remove_file(&tmp);
                                Error::io("renaming temp file onto", path, e)
                            })
                        }
                        None => self.publish_temp(&tmp, path).map(|()| path.clone()),
                    };
                    match published {
                        Ok(at) => {
                            if *copy {
                                *self
                                    .published
                                    .copies_in
                                    .entry(parent(path).to_path_buf())
                                    .or_default() += 1;
                                self.published.copies.push((at, f));
                            }
                            Ok(())
                        }
                        Err(e) => Err(Some(e)),
                    }
                }
                (BatchOp::Write { .. }, None) => Err(None), // reported when it failed
                (BatchOp::Rename(from, to), _) => rename_noreplace_nosync(from, to).map_err(Some),
            };
            if let Err(e) = result {
                let retry = match (&op, &e) {
                    (BatchOp::Rename(..), Some(Error::Io { source, .. })) => !matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
                    ),
                    _ => true,
                };
                if let Some(e) = e {
                    errors.push(e);
                }
                if retry {
                    blocked.insert(key);
                    self.kept.push(op);
                }
            }
        }
    }

    /// Rebuilds the set [`WriteBatch::holds`] reads: every path named by a queued, staged
    /// or kept operation, or by a removal still to make.
    fn retouch(&mut self) {
        self.touched.clear();
        let ops = self
            .ops
            .iter()
            .chain(&self.kept)
            .chain(self.staged.iter().map(|s| &s.op));
        for op in ops {
            match op {
                BatchOp::Write { path, .. } => {
                    self.touched.insert(path.clone());
                }
                BatchOp::Rename(from, to) => {
                    self.touched.insert(from.clone());
                    self.touched.insert(to.clone());
                }
            }
        }
        self.touched.extend(self.removals.iter().cloned());
        self.touched.extend(self.published.removals.iter().cloned());
    }

    /// Whether a [`WriteBatch::publish`] has made changes visible that no
    /// [`WriteBatch::sync`] has made durable yet.
    #[must_use]
    pub fn unsynced(&self) -> bool {
        self.published.pending
    }

    /// Writes and renames queued (after a flush: those kept for another try).
    #[must_use]
    pub fn queued_ops(&self) -> usize {
        self.ops.len()
    }

    /// Whether operations that failed are kept for another try: the disk refuses.
    #[must_use]
    pub fn stalled(&self) -> bool {
        self.retry_at.is_some()
    }

    /// When kept operations are tried again.
    #[must_use]
    pub fn retry_at(&self) -> Option<std::time::Instant> {
        self.retry_at
    }

    /// A temp file for a write to `path`: a recycled one from the same directory
    /// (truncated), or a new one.
    fn temp_for(&mut self, path: &Path) -> (std::path::PathBuf, std::io::Result<File>) {
        let dir = parent(path).to_path_buf();
        while let Some(tmp) = self.pool.get_mut(&dir).and_then(Vec::pop) {
            let reused = OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp);
            // A recycled inode may have been a producer's file: make it ours (0600) or
            // drop it.
            if let Ok(f) = reused {
                use std::os::unix::fs::PermissionsExt;
                if f.set_permissions(fs::Permissions::from_mode(0o600)).is_ok() {
                    return (tmp, Ok(f));
                }
            }
            let _ = fs::remove_file(&tmp);
        }
        let tmp = temp_name(path);
        let f = create_new(&tmp, 0o600);
        (tmp, f)
    }

    /// A temp file for a copy to `path`: a spare made empty in advance, or a new one. Never
    /// a recycled file: after a power loss a copy holds nothing or its own bytes.
    fn spare_for(&mut self, path: &Path) -> (std::path::PathBuf, std::io::Result<File>) {
        let dir = parent(path);
        while let Some(tmp) = self.spares.take(dir) {
            let opened = OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp);
            match opened {
                Ok(f) => return (tmp, Ok(f)),
                Err(_) => {
                    let _ = fs::remove_file(&tmp);
                }
            }
        }
        let tmp = temp_name(path);
        let f = create_new(&tmp, 0o600);
        (tmp, f)
    }

    /// Asks for spare temp files in `dir` after a round that wrote `used` copies there, so
    /// the next round's copies find them made: at least [`SPARES_MIN`], at most
    /// [`POOL_LIMIT`].
    fn top_up_spares(&mut self, dir: &Path, used: usize) {
        self.spares.want(dir, used.clamp(SPARES_MIN, POOL_LIMIT));
    }

    /// Publishes a written temp file at `path`: swapped with the old file when there is one
    /// (the old inode goes to the pool), renamed into place when there is none.
    fn publish_temp(&mut self, tmp: &Path, path: &Path) -> Result<()> {
        match renameat2(tmp, path, libc::RENAME_EXCHANGE) {
            Ok(()) => {
                let pool = self.pool.entry(parent(path).to_path_buf()).or_default();
                if pool.len() < POOL_LIMIT {
                    pool.push(tmp.to_path_buf());
                } else {
                    let _ = fs::remove_file(tmp);
                }
                Ok(())
            }
            Err(_) => fs::rename(tmp, path).map_err(|e| {
                let _ = fs::remove_file(tmp);
                Error::io("renaming temp file onto", path, e)
            }),
        }
    }
}

/// The copies among `staged` whose next operation on the same file name is a rename of
/// the copy itself: copy index → (rename index, the rename's target).
fn copies_renamed_next(
    staged: &[Staged],
) -> std::collections::HashMap<usize, (usize, std::path::PathBuf)> {
    let mut last_copy: std::collections::HashMap<std::ffi::OsString, usize> =
        std::collections::HashMap::new();
    let mut found = std::collections::HashMap::new();
    for (i, s) in staged.iter().enumerate() {
        let key = s.op.key();
        let copy_before = last_copy.remove(&key);
        match &s.op {
            BatchOp::Write { copy: true, .. } if s.file.is_some() => {
                last_copy.insert(key, i);
            }
            BatchOp::Rename(from, to) => {
                if let Some(c) = copy_before {
                    if matches!(&staged[c].op, BatchOp::Write { path, .. } if path == from) {
                        found.insert(c, (i, to.clone()));
                    }
                }
            }
            BatchOp::Write { .. } => {}
        }
    }
    found
}

/// Empty temp files made in advance, by directory, by a thread of their own: on ext4
/// without a journal, creating an inode after many deletions costs ~1 ms of the
/// allocator's search (`recently_deleted`, seen with `perf`), which no longer falls on the
/// daemon's own thread. A spare that cannot be made is simply not there (the copy then
/// makes its own file); the spares left at exit are dot-named `.tmp` files, removed by
/// the next start-up's recovery (and by `Drop` when it can).
#[derive(Debug, Default)]
struct Spares {
    shared: std::sync::Arc<SparesShared>,
    /// The thread was started.
    started: bool,
}

#[derive(Debug, Default)]
struct SparesShared {
    state: std::sync::Mutex<SparesState>,
    wake: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SparesState {
    /// Made, by directory.
    ready: std::collections::HashMap<std::path::PathBuf, Vec<std::path::PathBuf>>,
    /// How many to keep made, by directory.
    want: std::collections::HashMap<std::path::PathBuf, usize>,
    /// Directories where making one failed (not tried again until asked again).
    failing: std::collections::HashSet<std::path::PathBuf>,
    /// The batch is gone: the thread ends.
    closed: bool,
}

impl Spares {
    /// A spare in `dir`, if one is made.
    fn take(&self, dir: &Path) -> Option<std::path::PathBuf> {
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The thread is not woken here: making a file locks its directory, which the
        // copy is about to be renamed in. It is woken by `want`, after the round's sync.
        st.ready.get_mut(dir).and_then(Vec::pop)
    }

    /// Keep `n` spares made in `dir`.
    fn want(&mut self, dir: &Path, n: usize) {
        {
            let mut st = self
                .shared
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.want.insert(dir.to_path_buf(), n);
            st.failing.remove(dir);
        }
        if !self.started {
            self.started = true;
            let shared = std::sync::Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("spare-files".into())
                .spawn(move || make_spares(&shared));
            if spawned.is_err() {
                return; // no thread: copies make their own files
            }
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.closed = true;
        for (_, files) in st.ready.drain() {
            for f in files {
                let _ = fs::remove_file(f);
            }
        }
        self.shared.wake.notify_one();
    }
}

/// The spare-making thread: makes what is wanted, one file at a time, never holding the
/// lock while it makes one.
fn make_spares(shared: &SparesShared) {
    let mut st = shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        if st.closed {
            return;
        }
        let short = st
            .want
            .iter()
            .find(|(dir, n)| {
                !st.failing.contains(*dir) && st.ready.get(*dir).map_or(0, Vec::len) < **n
            })
            .map(|(dir, _)| dir.clone());
        let Some(dir) = short else {
            st = shared
                .wake
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        };
        drop(st);
        let tmp = dir.join(format!(".spare.{}.tmp", ulid::Ulid::new()));
        let made = create_new(&tmp, 0o600).is_ok();
        st = shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !made {
            st.failing.insert(dir);
        } else if st.closed {
            let _ = fs::remove_file(&tmp);
        } else {
            st.ready.entry(dir).or_default().push(tmp);
        }
    }
}

/// Why a spool file could not be read as a regular file.
#[derive(Debug)]
pub enum ReadRefusal {
    /// The path is a symlink (never followed).
    Symlink,
    /// Not a regular file (directory, FIFO, device, socket).
    NotRegular,
    /// Larger than the limit, in bytes.
    TooLarge(u64),
    /// The file vanished before it could be read.
    Gone,
    /// Any other I/O error.
    Io(std::io::Error),
}

impl std::fmt::Display for ReadRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Symlink => write!(f, "is a symbolic link (never followed)"),
            Self::NotRegular => write!(f, "is not a regular file"),
            Self::TooLarge(n) => write!(f, "is {n} bytes, over the limit"),
            Self::Gone => write!(f, "disappeared"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads a file from the spool safely: `O_NOFOLLOW` (a symlink is refused, so a link to
/// `~/.ssh/id_rsa` is never read), `fstat` must show a regular file, at most `limit` bytes.
///
/// # Errors
/// A [`ReadRefusal`] saying why the file was not read.
pub fn read_regular(path: &Path, limit: u64) -> std::result::Result<Vec<u8>, ReadRefusal> {
    read_regular_meta(path, limit).map(|(bytes, _)| bytes)
}

/// [`read_regular`], with the metadata of the file that was read (from the open file,
/// not the path: what was read is what was described).
///
/// # Errors
/// As [`read_regular`].
pub fn read_regular_meta(
    path: &Path,
    limit: u64,
) -> std::result::Result<(Vec<u8>, fs::Metadata), ReadRefusal> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(ReadRefusal::Symlink),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadRefusal::Gone),
        Err(e) => return Err(ReadRefusal::Io(e)),
    };
    let meta = f.metadata().map_err(ReadRefusal::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadRefusal::NotRegular);
    }
    if meta.len() > limit {
        return Err(ReadRefusal::TooLarge(meta.len()));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    Read::by_ref(&mut f)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(ReadRefusal::Io)?;
    if buf.len() as u64 > limit {
        return Err(ReadRefusal::TooLarge(buf.len() as u64));
    }
    Ok((buf, meta))
}

/// The directory holding `path` (`.` for a bare name).
#[must_use]
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn own_dir_refuses_symlinks_files_and_dirs_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        create_dir(&d).unwrap();
        check_own_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
        check_own_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_own_dir(&d).unwrap_err().to_string();
        assert!(e.contains("anyone can write") && e.contains("777"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check_own_dir(&link)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(check_own_dir(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        assert!(check_own_dir(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn atomic_write_is_0600_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn noreplace_rename_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        assert!(rename_noreplace(&a, &b).is_err());
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!a.exists());
    }

    #[test]
    fn a_batch_publishes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("sub/a.json"));
        create_dir(&dir.path().join("sub")).unwrap();
        fs::write(&a, "old").unwrap();
        let mut batch = WriteBatch::default();
        batch.write(&a, b"new".to_vec());
        batch.rename(&a, &b);
        assert_eq!(
            fs::read_to_string(&a).unwrap(),
            "old",
            "nothing happens before flush"
        );
        assert!(batch.flush().is_empty());
        assert!(!a.exists());
        assert_eq!(fs::read_to_string(&b).unwrap(), "new");
        assert!(batch.is_empty());
        let visible: Vec<_> = names(dir.path())
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert_eq!(visible, ["sub"], "only hidden temp files stay behind");
    }

    #[test]
    fn nothing_after_a_failed_write_of_a_file_runs_until_the_write_works() {
        let dir = tempfile::tempdir().unwrap();
        // a/ does not exist yet, so a/t.json cannot be written (as a full or failing disk
        // would refuse it): its move to b/ must not happen, other files go on.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        create_dir(&b).unwrap();
        let inbox = dir.path().join("inbox-file");
        fs::write(&inbox, "x").unwrap();
        let mut batch = WriteBatch::default();
        batch.write(&a.join("t.json"), b"record".to_vec());
        batch.rename(&a.join("t.json"), &b.join("t.json"));
        batch.write(&b.join("other.json"), b"other".to_vec());
        batch.remove_after(&inbox);
        assert!(!batch.flush().is_empty());
        assert!(batch.stalled() && batch.retry_at().is_some());
        assert!(
            batch.holds(&b.join("t.json")),
            "the move is kept behind the write"
        );
        assert!(!b.join("t.json").exists());
        assert_eq!(fs::read_to_string(b.join("other.json")).unwrap(), "other");
        assert!(inbox.exists(), "removals wait while anything is kept");
        // The disk takes writes again: the kept operations run, in order.
        create_dir(&a).unwrap();
        assert!(batch.flush().is_empty());
        assert!(!batch.stalled());
        assert_eq!(fs::read_to_string(b.join("t.json")).unwrap(), "record");
        assert!(!a.join("t.json").exists());
        assert!(!inbox.exists());
    }

    #[test]
    fn a_copy_is_visible_before_the_sync_and_its_original_goes_only_after() {
        let dir = tempfile::tempdir().unwrap();
        let (pending, active) = (dir.path().join("pending"), dir.path().join("active"));
        create_dir(&pending).unwrap();
        create_dir(&active).unwrap();
        let inbox = dir.path().join("t-inbox.json");
        fs::write(&inbox, "task").unwrap();
        let mut batch = WriteBatch::default();
        batch.write_copy(&pending.join("t.json"), b"task".to_vec());
        batch.rename(&pending.join("t.json"), &active.join("t.json"));
        batch.remove_after(&inbox);
        assert!(batch.publish().is_empty());
        // Published in one step at the rename's target; nothing in flight for it now.
        assert_eq!(fs::read_to_string(active.join("t.json")).unwrap(), "task");
        assert!(!pending.join("t.json").exists());
        assert!(!batch.holds(&active.join("t.json")));
        assert!(batch.unsynced());
        assert!(
            inbox.exists(),
            "the original stays until the copy is durable"
        );
        assert!(batch.holds(&inbox));
        assert!(batch.sync().is_empty());
        assert!(!inbox.exists());
        assert!(!batch.unsynced() && batch.is_empty());
    }

    #[test]
    fn a_copy_bound_for_a_taken_name_stays_where_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (pending, active) = (dir.path().join("pending"), dir.path().join("active"));
        create_dir(&pending).unwrap();
        create_dir(&active).unwrap();
        fs::write(active.join("t.json"), "someone else's").unwrap();
        let mut batch = WriteBatch::default();
        batch.write_copy(&pending.join("t.json"), b"task".to_vec());
        batch.rename(&pending.join("t.json"), &active.join("t.json"));
        let errors = batch.flush();
        assert_eq!(errors.len(), 1, "the rename is reported: {errors:?}");
        assert_eq!(fs::read_to_string(pending.join("t.json")).unwrap(), "task");
        assert_eq!(
            fs::read_to_string(active.join("t.json")).unwrap(),
            "someone else's"
        );
        assert!(!batch.stalled(), "a rename onto a taken name is dropped");
    }

    #[test]
    fn a_rewrite_waits_for_the_sync_while_other_files_are_published() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("r.json"), "old").unwrap();
        fs::write(dir.path().join("m.json"), "moved").unwrap();
        let mut batch = WriteBatch::default();
        batch.write(&dir.path().join("r.json"), b"new".to_vec());
        batch.rename(&dir.path().join("m.json"), &dir.path().join("n.json"));
        assert!(batch.publish().is_empty());
        assert!(
            dir.path().join("n.json").exists(),
            "a rename needs no fsync first"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("r.json")).unwrap(),
            "old",
            "a rewrite is published only once its data is synced"
        );
        assert!(batch.holds(&dir.path().join("r.json")));
        assert!(batch.sync().is_empty());
        assert_eq!(
            fs::read_to_string(dir.path().join("r.json")).unwrap(),
            "new"
        );
    }

    #[test]
    fn a_rename_whose_source_is_gone_is_dropped_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = WriteBatch::default();
        batch.rename(&dir.path().join("gone.json"), &dir.path().join("x.json"));
        assert_eq!(batch.flush().len(), 1);
        assert!(!batch.stalled() && batch.is_empty());
    }

    #[test]
    fn rewrites_recycle_the_old_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        fs::write(&a, "a0").unwrap();
        fs::write(&b, "b0").unwrap();
        let old_a = fs::metadata(&a).unwrap().ino();
        let mut batch = WriteBatch::default();
        batch.write(&a, b"a1".to_vec());
        assert!(batch.flush().is_empty());
        assert_eq!(fs::read_to_string(&a).unwrap(), "a1");
        // The old inode of a.json now waits under a dot-named temp file …
        let pooled = names(dir.path())
            .iter()
            .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
            .count();
        assert_eq!(pooled, 1);
        // … and carries the next write, to another file, truncated and made private.
        batch.write(&b, b"b1".to_vec());
        assert!(batch.flush().is_empty());
        assert_eq!(fs::read_to_string(&b).unwrap(), "b1");
        assert_eq!(fs::metadata(&b).unwrap().ino(), old_a);
        let mode = fs::metadata(&b).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("secret");
        fs::write(&target, "secret").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_regular(&link, 100),
            Err(ReadRefusal::Symlink)
        ));
        assert!(matches!(
            read_regular(&target, 3),
            Err(ReadRefusal::TooLarge(6))
        ));
        assert!(matches!(
            read_regular(dir.path(), 3),
            Err(ReadRefusal::NotRegular)
        ));
    }
}
