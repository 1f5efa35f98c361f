//! The simulated spool: state directories and the inbox as maps, and a model of the
//! daemon's group commit (`architect::durable::WriteBatch`): operations queued in
//! order, published by `publish` (what needs no `fsync` first) and `sync` (the rest, then
//! everything made durable), lost by a crash before them. A crash of the process keeps
//! what was published; a power loss also undoes a suffix of what was published since
//! the last completed sync (`Disk::journal`). Not modelled: a copy that a power loss
//! leaves empty or cut short (the real start-up files it in `rejected/`, and the inbox
//! file it was copied from is taken in again).

use std::collections::{BTreeMap, HashMap};

use architect::spool::task::{TaskRecord, TaskSpec, TaskState};
use chrono::{DateTime, Utc};

/// The five state directories, in [`TaskState::ALL`] order.
pub fn slot(s: TaskState) -> usize {
    match s {
        TaskState::Pending => 0,
        TaskState::Active => 1,
        TaskState::Done => 2,
        TaskState::Failed => 3,
        TaskState::Cancelled => 4,
    }
}

/// What the files are, as the last flush left them. Everything here is durable except
/// the removals in `unsynced` (the batch never `fsync`s a removal: a crash can undo it).
#[derive(Default, Clone)]
pub struct Disk {
    pub dirs: [BTreeMap<String, TaskRecord>; 5],
    /// Inbox file name → the task in it.
    pub inbox: BTreeMap<String, TaskSpec>,
    /// Files moved to `rejected/`.
    pub rejected: Vec<String>,
    /// Removals not yet durable, and when they will be (the kernel's commit interval).
    pub unsynced: Vec<(DateTime<Utc>, Removed)>,
    /// `control/`: request file name → the request.
    pub control: BTreeMap<String, Request>,
    /// Per task file name, the sequence number of the last operation a flush carried out
    /// (or dropped): the operations of one file are carried out in order, so everything
    /// queued for it before that is on disk.
    pub processed: HashMap<String, u64>,
    /// Bumped by every change to the state directories or the inbox (the invariants
    /// that read only them are not checked again while it stays).
    pub version: u64,
    /// What the operations published since the last completed sync changed, in order: a
    /// power loss undoes a suffix of it (the operations made durable up to some point).
    pub journal: Vec<Undo>,
}

/// How to undo one published, not yet durable, operation: its change and its mark in
/// `processed`, together (a power loss keeps or loses an operation whole).
#[derive(Clone, Debug)]
pub struct Undo {
    pub change: Change,
    /// The task file the operation is about, and `processed[key]` before it.
    pub key: String,
    pub prev_processed: Option<u64>,
}

/// The change an operation made.
#[derive(Clone, Debug)]
pub enum Change {
    /// `dir/id` held `prev` before a write.
    Put {
        dir: TaskState,
        id: String,
        prev: Option<Box<TaskRecord>>,
    },
    /// `id` was renamed from `from` to `to`.
    Moved {
        id: String,
        from: TaskState,
        to: TaskState,
    },
    /// None (a rename reported and dropped).
    Nothing,
}

/// A request in `control/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Cancel(String),
    Retry(String),
}

/// A file removed, as it was.
#[derive(Clone, Debug)]
pub enum Removed {
    Inbox(String, Box<TaskSpec>),
    Task(TaskState, Box<TaskRecord>),
    Control(String, Request),
}

impl Disk {
    pub fn dir(&self, s: TaskState) -> &BTreeMap<String, TaskRecord> {
        &self.dirs[slot(s)]
    }

    pub fn dir_mut(&mut self, s: TaskState) -> &mut BTreeMap<String, TaskRecord> {
        self.version += 1;
        &mut self.dirs[slot(s)]
    }

    pub fn has(&self, s: TaskState, id: &str) -> bool {
        self.dir(s).contains_key(id)
    }

    /// `Spool::locate`: the first directory holding `id`, final ones first.
    pub fn locate(&self, id: &str) -> Option<TaskState> {
        [
            TaskState::Done,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::Active,
            TaskState::Pending,
        ]
        .into_iter()
        .find(|s| self.has(*s, id))
    }

    /// Every state directory holding `id`.
    pub fn states_of(&self, id: &str) -> Vec<TaskState> {
        TaskState::ALL
            .into_iter()
            .filter(|s| self.has(*s, id))
            .collect()
    }

    /// Removals older than the commit interval are durable now.
    pub fn settle(&mut self, now: DateTime<Utc>) {
        self.unsynced.retain(|(at, _)| *at > now);
    }

    /// Whether a published change to task `id` is not durable yet.
    pub fn unsynced_change(&self, id: &str) -> bool {
        self.journal.iter().any(|u| u.key == id)
    }

    /// A power loss: the last `n` published operations that no sync made durable are
    /// undone (newest first); the rest of the journal is durable from now on.
    pub fn lose_unsynced(&mut self, n: usize) -> Vec<Undo> {
        let keep = self.journal.len().saturating_sub(n);
        let lost = self.journal.split_off(keep);
        self.journal.clear();
        for u in lost.iter().rev() {
            match u.change.clone() {
                Change::Put { dir, id, prev } => {
                    let d = self.dir_mut(dir);
                    match prev {
                        Some(r) => {
                            d.insert(id, *r);
                        }
                        None => {
                            d.remove(&id);
                        }
                    }
                }
                Change::Moved { id, from, to } => {
                    if let Some(r) = self.dir_mut(to).remove(&id) {
                        self.dir_mut(from).insert(id, r);
                    }
                }
                Change::Nothing => {}
            }
            match u.prev_processed {
                Some(p) => {
                    self.processed.insert(u.key.clone(), p);
                }
                None => {
                    self.processed.remove(&u.key);
                }
            }
        }
        lost
    }

    /// Records that `key`'s operations up to `seq` were carried out, with `change`
    /// (undoable until a sync).
    fn carried_out(&mut self, key: String, seq: u64, change: Change) {
        let prev_processed = self.processed.insert(key.clone(), seq);
        self.journal.push(Undo {
            change,
            key,
            prev_processed,
        });
    }
}

/// One queued write or rename, as `WriteBatch` queues them.
#[derive(Clone, Debug)]
pub enum Op {
    Write {
        seq: u64,
        dir: TaskState,
        record: Box<TaskRecord>,
        /// `WriteBatch::write_copy` (intake's copy of an inbox file): published before its
        /// data is synced.
        copy: bool,
    },
    Rename {
        seq: u64,
        id: String,
        from: TaskState,
        to: TaskState,
    },
}

impl Op {
    /// The file name the operation is about (`<id>.json` in every state directory).
    pub fn key(&self) -> &str {
        match self {
            Self::Write { record, .. } => &record.id,
            Self::Rename { id, .. } => id,
        }
    }

    /// Its sequence number (in the order operations were queued, across batches).
    pub fn seq(&self) -> u64 {
        match self {
            Self::Write { seq, .. } | Self::Rename { seq, .. } => *seq,
        }
    }
}

/// A removal queued with `remove_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    Inbox(String),
    Task(TaskState, String),
    Control(String),
}

/// An error the simulated disk returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    Enospc,
    Eio,
    Eacces,
}

/// A fault of the disk for a while: which operations it refuses, and how often.
#[derive(Clone, Debug)]
pub struct Fault {
    pub errno: Errno,
    /// EACCES: the directory refused (`None`: the inbox).
    pub dir: Option<TaskState>,
    pub until: DateTime<Utc>,
    /// How often an operation it covers fails (per mille).
    pub per_mille: u64,
}

/// What an operation touches, for the faults.
pub enum Touch {
    Write(TaskState),
    Rename(TaskState, TaskState),
    RemoveInbox,
    Remove(TaskState),
    RemoveControl,
}

impl Fault {
    pub fn covers(&self, t: &Touch) -> bool {
        match self.errno {
            // A full disk refuses new data; renames and unlinks still work.
            Errno::Enospc => matches!(t, Touch::Write(_)),
            Errno::Eio => true,
            Errno::Eacces => match t {
                Touch::Write(d) | Touch::Remove(d) => self.dir == Some(*d),
                Touch::Rename(a, b) => self.dir == Some(*a) || self.dir == Some(*b),
                Touch::RemoveInbox => self.dir.is_none(),
                Touch::RemoveControl => false,
            },
        }
    }
}

/// The group commit.
#[derive(Default)]
pub struct Batch {
    pub ops: Vec<Op>,
    pub removals: Vec<Removal>,
    /// Removals taken by `publish`, made by `sync` unless something was kept.
    pub published_removals: Vec<Removal>,
    /// Operations whose publication waits for `sync` (their file has a write that is
    /// synced before it is published).
    pub staged: Vec<Op>,
    /// Operations kept this round (a failure, and what follows it on the same file).
    pub kept: Vec<Op>,
    /// A publish that no sync has followed yet.
    pub unsynced: bool,
    /// Flushes in a row that kept operations.
    pub failures: u32,
    /// When kept operations are tried again (`WriteBatch::retry_at`).
    pub retry_at: Option<DateTime<Utc>>,
}

/// How a flush ended.
pub struct Flushed {
    /// Errors met (a kept or dropped operation, a failed removal).
    pub errors: Vec<String>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.removals.is_empty()
    }

    pub fn stalled(&self) -> bool {
        self.retry_at.is_some()
    }

    fn all_ops(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().chain(&self.staged).chain(&self.kept)
    }

    /// `WriteBatch::holds`: a queued, staged or kept write or rename concerns `dir/id`.
    pub fn holds(&self, dir: TaskState, id: &str) -> bool {
        self.all_ops().any(|op| match op {
            Op::Write { dir: d, record, .. } => *d == dir && record.id == id,
            Op::Rename {
                id: i, from, to, ..
            } => i == id && (*from == dir || *to == dir),
        })
    }

    /// `WriteBatch::holds` of a removal.
    pub fn removes(&self, r: &Removal) -> bool {
        self.removals.contains(r) || self.published_removals.contains(r)
    }

    /// Whether any queued, staged or kept operation concerns task `id`.
    pub fn touches(&self, id: &str) -> bool {
        self.all_ops().any(|op| op.key() == id)
    }

    /// `WriteBatch::publish`, operation by operation: the operations of every file with
    /// no synced-first write (renames, copies) are carried out in order; the others are
    /// staged for `sync`. `fails` says whether the disk refuses an operation now; `crash`
    /// is asked before each operation, and when it says so the publish stops there
    /// (`Err(())`): what was applied is published, the rest is lost with the process.
    pub fn publish(
        &mut self,
        disk: &mut Disk,
        fails: &mut dyn FnMut(&Touch) -> Option<Errno>,
        crash: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<String>, ()> {
        let mut errors = Vec::new();
        self.unsynced = true;
        self.published_removals.append(&mut self.removals);
        let ops = std::mem::take(&mut self.ops);
        let waits: Vec<String> = ops
            .iter()
            .filter(|op| matches!(op, Op::Write { copy: false, .. }))
            .map(|op| op.key().to_string())
            .collect();
        let (later, now): (Vec<Op>, Vec<Op>) = ops
            .into_iter()
            .partition(|op| waits.iter().any(|k| k == op.key()));
        self.staged = later;
        self.carry_out(now, disk, fails, crash, &mut errors)?;
        Ok(errors)
    }

    /// `WriteBatch::sync`: the staged operations are carried out (their data synced
    /// first), then everything published becomes durable (the journal is cleared), then
    /// the removals are made unless something was kept. `crash` is asked before each
    /// operation and each removal, as in `publish`.
    ///
    /// The rules, as in `WriteBatch`: operations in queued order per file; a failing one
    /// and every later one on the same file name are kept, in order, for the next flush;
    /// a rename whose source is gone or whose target exists is reported and dropped;
    /// removals wait while anything is kept.
    pub fn sync(
        &mut self,
        disk: &mut Disk,
        now: DateTime<Utc>,
        fails: &mut dyn FnMut(&Touch) -> Option<Errno>,
        crash: &mut dyn FnMut() -> bool,
    ) -> Result<Flushed, ()> {
        let mut errors = Vec::new();
        let staged = std::mem::take(&mut self.staged);
        self.carry_out(staged, disk, fails, crash, &mut errors)?;
        if crash() {
            return Err(()); // before the directories' fsync: nothing more is durable
        }
        disk.journal.clear();
        self.unsynced = false;
        let kept = std::mem::take(&mut self.kept);
        let removals = std::mem::take(&mut self.published_removals);
        if kept.is_empty() {
            self.failures = 0;
            self.retry_at = None;
            for r in removals {
                if crash() {
                    return Err(());
                }
                let touch = match &r {
                    Removal::Inbox(_) => Touch::RemoveInbox,
                    Removal::Task(d, _) => Touch::Remove(*d),
                    Removal::Control(_) => Touch::RemoveControl,
                };
                if let Some(e) = fails(&touch) {
                    // Reported, not retried (as `WriteBatch::sync`): a listing finds an
                    // inbox file again.
                    errors.push(format!("{e:?} removing {r:?}"));
                    continue;
                }
                let commit = now + chrono::Duration::seconds(5);
                match r {
                    Removal::Inbox(name) => {
                        disk.version += 1;
                        if let Some(spec) = disk.inbox.remove(&name) {
                            disk.unsynced
                                .push((commit, Removed::Inbox(name, Box::new(spec))));
                        }
                    }
                    Removal::Task(dir, id) => {
                        if let Some(rec) = disk.dir_mut(dir).remove(&id) {
                            disk.unsynced
                                .push((commit, Removed::Task(dir, Box::new(rec))));
                        }
                    }
                    Removal::Control(name) => {
                        if let Some(req) = disk.control.remove(&name) {
                            disk.unsynced.push((commit, Removed::Control(name, req)));
                        }
                    }
                }
            }
        } else {
            let delay = 50i64.saturating_mul(1 << self.failures.min(7)).min(5000);
            self.failures += 1;
            self.retry_at = Some(now + chrono::Duration::milliseconds(delay));
            let mut r = removals;
            r.append(&mut self.removals);
            self.removals = r;
            let mut ops = kept;
            ops.append(&mut self.ops);
            self.ops = ops;
        }
        Ok(Flushed { errors })
    }

    /// Carries out `ops` in order, keeping (in `self.kept`) a failed one and every later
    /// one on the same file name.
    fn carry_out(
        &mut self,
        ops: Vec<Op>,
        disk: &mut Disk,
        fails: &mut dyn FnMut(&Touch) -> Option<Errno>,
        crash: &mut dyn FnMut() -> bool,
        errors: &mut Vec<String>,
    ) -> Result<(), ()> {
        let mut blocked: Vec<String> = self.kept.iter().map(|op| op.key().to_string()).collect();
        for op in ops {
            if crash() {
                return Err(());
            }
            let key = op.key().to_string();
            if blocked.contains(&key) {
                self.kept.push(op);
                continue;
            }
            let seq = op.seq();
            let change = match &op {
                Op::Write { dir, record, .. } => {
                    if let Some(e) = fails(&Touch::Write(*dir)) {
                        errors.push(format!("{e:?} writing {}/{}", dir.dir(), record.id));
                        blocked.push(key);
                        self.kept.push(op);
                        continue;
                    }
                    let Op::Write { dir, record, .. } = op else {
                        unreachable!()
                    };
                    let id = record.id.clone();
                    let prev = disk.dir_mut(dir).insert(id.clone(), *record);
                    Change::Put {
                        dir,
                        id,
                        prev: prev.map(Box::new),
                    }
                }
                Op::Rename { id, from, to, .. } => {
                    if !disk.has(*from, id) {
                        errors.push(format!("ENOENT renaming {}/{id}", from.dir()));
                        Change::Nothing
                    } else if disk.has(*to, id) {
                        errors.push(format!("EEXIST renaming {id} to {}/", to.dir()));
                        Change::Nothing
                    } else if let Some(e) = fails(&Touch::Rename(*from, *to)) {
                        errors.push(format!("{e:?} renaming {id}"));
                        blocked.push(key);
                        self.kept.push(op);
                        continue;
                    } else {
                        let r = disk.dir_mut(*from).remove(id).expect("checked");
                        disk.dir_mut(*to).insert(id.clone(), r);
                        Change::Moved {
                            id: id.clone(),
                            from: *from,
                            to: *to,
                        }
                    }
                }
            };
            disk.carried_out(key, seq, change);
        }
        Ok(())
    }
}
