//! The simulated spool: state directories and the inbox as maps, and a model of the
//! daemon's group commit (`architect::durable::WriteBatch`): operations queued in
//! order, carried out by `flush`, lost by a crash before it.

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
}

/// One queued write or rename, as `WriteBatch` queues them.
#[derive(Clone, Debug)]
pub enum Op {
    Write {
        seq: u64,
        dir: TaskState,
        record: Box<TaskRecord>,
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

    /// `WriteBatch::holds`: a queued write or rename concerns `dir/id`.
    pub fn holds(&self, dir: TaskState, id: &str) -> bool {
        self.ops.iter().any(|op| match op {
            Op::Write { dir: d, record, .. } => *d == dir && record.id == id,
            Op::Rename {
                id: i, from, to, ..
            } => i == id && (*from == dir || *to == dir),
        })
    }

    /// Whether any queued operation concerns task `id`.
    pub fn touches(&self, id: &str) -> bool {
        self.ops.iter().any(|op| op.key() == id)
    }

    /// `WriteBatch::flush`, operation by operation. `fails` says whether the disk refuses
    /// an operation now; `crash` is asked before each operation and each removal, and
    /// when it says so the flush stops there (`Err(())`): what was applied is on disk, the
    /// rest is lost with the process.
    ///
    /// The rules, as in `WriteBatch::flush`: operations in queued order; a failing one and
    /// every later one on the same file name are kept, in order, for the next flush; a
    /// rename whose source is gone or whose target exists is reported and dropped;
    /// removals wait while anything is kept.
    pub fn flush(
        &mut self,
        disk: &mut Disk,
        now: DateTime<Utc>,
        fails: &mut dyn FnMut(&Touch) -> Option<Errno>,
        crash: &mut dyn FnMut() -> bool,
    ) -> Result<Flushed, ()> {
        let mut errors = Vec::new();
        let ops = std::mem::take(&mut self.ops);
        let mut kept: Vec<Op> = Vec::new();
        let mut blocked: Vec<String> = Vec::new();
        for op in ops {
            if crash() {
                return Err(());
            }
            let key = op.key().to_string();
            if blocked.contains(&key) {
                kept.push(op);
                continue;
            }
            let seq = op.seq();
            match &op {
                Op::Write { dir, record, .. } => {
                    if let Some(e) = fails(&Touch::Write(*dir)) {
                        errors.push(format!("{e:?} writing {}/{}", dir.dir(), record.id));
                        blocked.push(key);
                        kept.push(op);
                        continue;
                    }
                    let Op::Write { dir, record, .. } = op else {
                        unreachable!()
                    };
                    disk.dir_mut(dir).insert(record.id.clone(), *record);
                }
                Op::Rename { id, from, to, .. } => {
                    if !disk.has(*from, id) {
                        errors.push(format!("ENOENT renaming {}/{id}", from.dir()));
                    } else if disk.has(*to, id) {
                        errors.push(format!("EEXIST renaming {id} to {}/", to.dir()));
                    } else if let Some(e) = fails(&Touch::Rename(*from, *to)) {
                        errors.push(format!("{e:?} renaming {id}"));
                        blocked.push(key);
                        kept.push(op);
                        continue;
                    } else {
                        let r = disk.dir_mut(*from).remove(id).expect("checked");
                        disk.dir_mut(*to).insert(id.clone(), r);
                    }
                }
            }
            disk.processed.insert(key, seq);
        }
        if kept.is_empty() {
            self.failures = 0;
            self.retry_at = None;
            for r in std::mem::take(&mut self.removals) {
                if crash() {
                    return Err(());
                }
                let touch = match &r {
                    Removal::Inbox(_) => Touch::RemoveInbox,
                    Removal::Task(d, _) => Touch::Remove(*d),
                    Removal::Control(_) => Touch::RemoveControl,
                };
                if let Some(e) = fails(&touch) {
                    // Reported, not retried (as `WriteBatch::flush`): a listing finds an
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
            self.ops = kept;
        }
        Ok(Flushed { errors })
    }
}
