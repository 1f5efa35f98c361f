//! The spool: the directory tree that is the public interface of `architect`.
//!
//! ```text
//! spool/
//!   inbox/       drop zone: any process writes *.json here, any file name
//!   pending/     <id>.json  queued (waiting for a session, dependencies or a retry backoff)
//!   active/      <id>.json  running on a session
//!   done/        <id>.json  final: completed, with the result
//!   failed/      <id>.json  final: failed, with the error and every attempt
//!   cancelled/   <id>.json  final: cancelled
//!   rejected/    <name> + <name>.error.json  not valid JSON / not a valid task
//!   sessions/    <name>.json  each session's current state
//!   control/     requests from the CLI to the daemon (cancel, retry, send)
//!   log/         events-<node>-<YYYYMMDD>.jsonl, append-only
//!   locks/       lock files (daemon.lock)
//!   recordings/  <task id>.cast, <session>/idle-<ulid>.cast: the terminals, asciicast v2
//! ```
//! A task's state is the directory its record is in; it moves by atomic rename only.

pub mod task;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, Result};
use task::{TaskRecord, TaskSpec, TaskState, Violation};

/// Largest task file accepted, in bytes (4 MiB). Larger files are rejected.
pub const MAX_TASK_BYTES: u64 = 4 * 1024 * 1024;

/// Every subdirectory of a spool.
pub const DIRS: &[&str] = &[
    "inbox",
    "pending",
    "active",
    "done",
    "failed",
    "cancelled",
    "rejected",
    "sessions",
    "control",
    "log",
    "locks",
    "providers",
    "recordings",
];

/// The directories that stay on each machine when several nodes share a spool through a
/// syncer (`.stignore` lists them): every node has its own inbox, control requests and
/// kernel locks at the spool's root.
pub const NODE_LOCAL_DIRS: &[&str] = &["inbox", "control", "locks"];

/// A spool rooted at a directory.
///
/// One node alone keeps every directory at the root. A node of a fleet (`nodes.toml`
/// lists several) keeps [`NODE_LOCAL_DIRS`] at the root and writes all the others —
/// task states, sessions, log, provider state — under `nodes/<node>/`, where no other node
/// writes ([`Spool::for_node`]; `docs/multi-node.md`).
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// Where the task states, sessions and log are: `root`, or `root/nodes/<node>`.
    state_root: PathBuf,
}

/// What an inbox file name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxName {
    /// A task file to read (`*.json`, not hidden, not a temp file).
    Task,
    /// A Syncthing conflict copy (`*.sync-conflict-*`): left alone, reported.
    Conflict,
    /// Ignored: dotfiles, `*.tmp`, Syncthing temp files, anything not `*.json`.
    Ignored,
}

/// Classifies an inbox file name.
#[must_use]
pub fn classify_inbox_name(name: &str) -> InboxName {
    if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".error.json") {
        InboxName::Ignored
    } else if name.contains(".sync-conflict-") {
        InboxName::Conflict
    } else if name.ends_with(".json") {
        InboxName::Task
    } else {
        InboxName::Ignored
    }
}

/// The `<name>.error.json` written beside a rejected file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionReport {
    /// The file's name in the inbox.
    pub file: String,
    /// Its name in `rejected/`.
    pub rejected_as: String,
    /// When it was rejected.
    pub rejected_at: DateTime<Utc>,
    /// Node that rejected it.
    pub node: String,
    /// Each problem, with its JSON Pointer (`""` for the whole file).
    pub errors: Vec<Violation>,
}

/// A request from the CLI to the daemon, a file in `control/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Cancel a pending or active task.
    Cancel {
        /// Task id.
        task_id: String,
    },
    /// Put a failed or cancelled task back in the queue with a fresh retry budget.
    Retry {
        /// Task id.
        task_id: String,
    },
    /// Type text into a session's terminal, then Enter.
    Send {
        /// Session name.
        session: String,
        /// Text to type.
        text: String,
        /// Send Enter after the text (default true).
        #[serde(default = "yes")]
        enter: bool,
    },
    /// Answer the permission question a session is waiting on (`architect approve|deny`).
    Answer {
        /// Session name.
        session: String,
        /// Approve (yes) or deny (no).
        approve: bool,
        /// The question's id, as `architect sessions` shows it: a question that changed
        /// since is not answered.
        question: String,
    },
}

fn yes() -> bool {
    true
}

impl Spool {
    /// A spool at `root` (nothing is created; see [`Spool::init`]).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            state_root: root.clone(),
            root,
        }
    }

    /// The spool at `root` as node `node` of a fleet writes it: its task states, sessions
    /// and log under `root/nodes/<node>/`, its inbox, control requests and locks at the
    /// root (nothing is created; see [`Spool::init`]).
    #[must_use]
    pub fn for_node(root: impl Into<PathBuf>, node: &str) -> Self {
        let root = root.into();
        Self {
            state_root: root.join("nodes").join(node),
            root,
        }
    }

    /// Every node's part of a fleet's spool, found under `nodes/` (each a [`Spool`] whose
    /// states are that node's), after this spool's root itself, which holds a single
    /// node's states. What the fleet's readers (`status`, `tasks`, `show`, `sql`) walk.
    #[must_use]
    pub fn members(&self) -> Vec<Spool> {
        let mut out = vec![Spool::new(&self.root)];
        let Ok(dir) = fs::read_dir(self.root.join("nodes")) else {
            return out;
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| crate::types::valid_id(n))
            .collect();
        names.sort();
        out.extend(names.iter().map(|n| Spool::for_node(&self.root, n)));
        out
    }

    /// Every task of the fleet ([`Spool::members`]) with its state and the member that
    /// holds it. A final record wins over a live one, and `active/` over `pending/`: a
    /// node that was away keeps live records of tasks another node adopted and finished
    /// (its files are its own to remove, when it comes back).
    #[must_use]
    pub fn fleet_tasks(&self) -> std::collections::BTreeMap<String, (TaskState, Spool)> {
        let mut out: std::collections::BTreeMap<String, (TaskState, Spool)> =
            std::collections::BTreeMap::new();
        for m in self.members() {
            for state in TaskState::ALL {
                for id in m.list_ids(state).unwrap_or_default() {
                    let better = out
                        .get(&id)
                        .is_none_or(|(s, _)| state_rank(state) > state_rank(*s));
                    if better {
                        out.insert(id, (state, m.clone()));
                    }
                }
            }
        }
        out
    }

    /// Finds task `id` anywhere in the fleet (as [`Spool::fleet_tasks`] ranks copies).
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], or the record's read error.
    pub fn find_in_fleet(&self, id: &str) -> Result<(TaskState, TaskRecord)> {
        let best = self
            .members()
            .into_iter()
            .filter_map(|m| m.locate(id).map(|s| (s, m)))
            .max_by_key(|(s, _)| state_rank(*s))
            .ok_or_else(|| Error::TaskNotFound(id.to_string()))?;
        let rec = best.1.read_record(&best.1.task_path(best.0, id))?;
        Ok((best.0, rec))
    }

    /// The log directories of every member ([`Spool::members`]) that exist: what `sql`,
    /// `stats` and `logs` read.
    #[must_use]
    pub fn log_dirs(&self) -> Vec<PathBuf> {
        self.members()
            .iter()
            .map(|m| m.dir("log"))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// The node whose states this spool holds (`None`: the root's, a single node's).
    #[must_use]
    pub fn member_node(&self) -> Option<String> {
        (self.state_root != self.root).then(|| {
            self.state_root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// Creates every spool directory (mode 0700) that does not exist yet, then checks
    /// that the root and every directory the daemon writes in (all but `inbox/` and
    /// `control/`, which may be shared with other users) are real directories owned by
    /// this user that nobody else can write to ([`durable::check_own_dir`]).
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be created or is not ours.
    pub fn init(&self) -> Result<()> {
        for d in DIRS {
            durable::create_dir(&self.dir(d))?;
        }
        durable::check_own_dir(&self.root)?;
        durable::check_own_dir(&self.state_root)?;
        for d in DIRS.iter().filter(|d| !matches!(**d, "inbox" | "control")) {
            durable::check_own_dir(&self.dir(d))?;
        }
        Ok(())
    }

    /// Whether this looks like an initialised spool (has `inbox/`, and `pending/` at the
    /// root or in this node's directory).
    #[must_use]
    pub fn exists(&self) -> bool {
        self.root.join("inbox").is_dir()
            && (self.root.join("pending").is_dir() || self.dir("pending").is_dir())
    }

    /// The spool root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory `name` (one of [`DIRS`], or `nodes`): `<root>/<name>` for a single
    /// node, for [`NODE_LOCAL_DIRS`] and `nodes`; `<root>/nodes/<node>/<name>` for the
    /// states, sessions and log of a fleet's node.
    #[must_use]
    pub fn dir(&self, name: &str) -> PathBuf {
        if name == "nodes" || NODE_LOCAL_DIRS.contains(&name) {
            self.root.join(name)
        } else {
            self.state_root.join(name)
        }
    }

    /// Where this node's states are: the root, or `<root>/nodes/<node>` in a fleet.
    #[must_use]
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// `<root>/inbox`.
    #[must_use]
    pub fn inbox(&self) -> PathBuf {
        self.dir("inbox")
    }

    /// `<root>/nodes/<node>`: what node `node` writes when several nodes share the spool
    /// (`docs/multi-node.md`); no other node writes there.
    #[must_use]
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir("nodes").join(node)
    }

    /// The directory of a state.
    #[must_use]
    pub fn state_dir(&self, state: TaskState) -> PathBuf {
        self.dir(state.dir())
    }

    /// `<root>/<state>/<id>.json`.
    #[must_use]
    pub fn task_path(&self, state: TaskState, id: &str) -> PathBuf {
        self.state_dir(state).join(format!("{id}.json"))
    }

    /// Finds which state directory holds task `id`. Final states are looked at first, so
    /// a task caught mid-move reports where it is going.
    #[must_use]
    pub fn locate(&self, id: &str) -> Option<TaskState> {
        if !crate::types::valid_id(id) {
            return None;
        }
        [
            TaskState::Done,
            TaskState::Failed,
            TaskState::Cancelled,
            TaskState::Active,
            TaskState::Pending,
        ]
        .into_iter()
        .find(|s| self.task_path(*s, id).exists())
    }

    /// Reads a task record. A file in `pending/` that holds the task as submitted (how
    /// intake leaves it: the inbox file is renamed, not rewritten) is read as a record with
    /// no attempts, received at the file's mtime.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Json`] when the file is neither a record nor a task.
    pub fn read_record(&self, path: &Path) -> Result<TaskRecord> {
        let bytes = fs::read(path).map_err(|e| Error::io("reading task record", path, e))?;
        let record_err = match serde_json::from_slice::<TaskRecord>(&bytes) {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        let Ok(spec) = serde_json::from_slice::<TaskSpec>(&bytes) else {
            return Err(Error::json(
                format!("parsing task record {}", path.display()),
                record_err,
            ));
        };
        Ok(Self::record_of_spec(path, spec))
    }

    /// [`Spool::read_record`], validated against the schemas: the record against
    /// `schemas/task-record.schema.json`, a task as submitted against
    /// `schemas/task.schema.json`. What the daemon reads back at start-up is checked as
    /// strictly as what intake took in (an out-of-range field never reaches a session).
    ///
    /// # Errors
    /// `Err(Ok(violations))` for a file that breaks the schemas; `Err(Err(e))` when it
    /// cannot be read.
    pub fn read_record_checked(
        &self,
        path: &Path,
    ) -> std::result::Result<TaskRecord, std::result::Result<Vec<Violation>, Error>> {
        let bytes = fs::read(path).map_err(|e| Err(Error::io("reading task record", path, e)))?;
        // Parsed once: the bytes are dropped before the value becomes a record.
        let value = task::parse_json(&bytes).map_err(Ok)?;
        drop(bytes);
        if task::is_record(&value) {
            return task::record_of_value(value).map_err(Ok);
        }
        task::task_of_value(value)
            .map(|spec| Self::record_of_spec(path, spec))
            .map_err(Ok)
    }

    /// A task as submitted, found in a state directory, as a record with no attempts,
    /// received at the file's mtime.
    fn record_of_spec(path: &Path, mut spec: TaskSpec) -> TaskRecord {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let id = name.strip_suffix(".json").unwrap_or(&name).to_string();
        spec.id = Some(id.clone());
        let received_at = fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or_else(|_| Utc::now(), DateTime::<Utc>::from);
        TaskRecord::new(id, spec, String::new(), name, received_at)
    }

    /// Finds and reads task `id`, with the state its directory says.
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], or the read error.
    pub fn find(&self, id: &str) -> Result<(TaskState, TaskRecord)> {
        let state = self
            .locate(id)
            .ok_or_else(|| Error::TaskNotFound(id.to_string()))?;
        let rec = self.read_record(&self.task_path(state, id))?;
        Ok((state, rec))
    }

    /// Task ids in a state directory, sorted by name (ULIDs sort by creation time).
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn list_ids(&self, state: TaskState) -> Result<Vec<String>> {
        let dir = self.state_dir(state);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if let Some(id) = name.strip_suffix(".json") {
                if crate::types::valid_id(id) {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Reads every record in a state directory (records that fail to parse are skipped
    /// with a warning).
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn list(&self, state: TaskState) -> Result<Vec<TaskRecord>> {
        let mut out = Vec::new();
        for id in self.list_ids(state)? {
            match self.read_record(&self.task_path(state, &id)) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("skipping {id}: {e}"),
            }
        }
        Ok(out)
    }

    /// The name a rejected file gets in `rejected/`: its own, or with a ULID in front
    /// when that is taken (on disk, or by a rejection in flight in `batch`).
    fn rejected_name(&self, name: &str, batch: &durable::WriteBatch) -> String {
        let rejected = self.dir("rejected");
        let taken = |n: &str| {
            let p = rejected.join(n);
            p.symlink_metadata().is_ok() || batch.holds(&p)
        };
        if taken(name) {
            format!("{}.{}", ulid::Ulid::new(), name)
        } else {
            name.to_string()
        }
    }

    /// Rejects a bad spool file (`from`: an inbox file that was not read, or a record in
    /// a state directory that fails validation): queues its move into `rejected/`
    /// untouched, and `<name>.error.json` beside it, into `batch` (carried out with the
    /// daemon's group commit). `shown` is the name the report gives it; `as_name`, the
    /// name it gets in `rejected/` (default: its own, with a ULID in front on a clash),
    /// which is returned.
    ///
    /// # Errors
    /// [`Error::Json`] when the report cannot be serialised.
    pub fn reject_file(
        &self,
        batch: &mut durable::WriteBatch,
        from: &Path,
        shown: &str,
        as_name: Option<&str>,
        node: &str,
        errors: Vec<Violation>,
    ) -> Result<String> {
        let name = from
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let as_name = match as_name {
            Some(n) => n.to_string(),
            None => self.rejected_name(&name, batch),
        };
        batch.rename(from, &self.dir("rejected").join(&as_name));
        self.write_rejection(batch, shown, &as_name, node, errors)?;
        Ok(as_name)
    }

    /// Rejects inbox file `name` whose `bytes` were read: queues a copy of them into
    /// `rejected/` (a new file, 0600: the producer's inode, and its mode, are never kept),
    /// with `<name>.error.json` beside it, and the inbox file's removal once they are
    /// durable. Returns the name it was filed under.
    ///
    /// # Errors
    /// [`Error::Json`] when the report cannot be serialised.
    pub fn reject_bytes(
        &self,
        batch: &mut durable::WriteBatch,
        name: &str,
        bytes: &[u8],
        node: &str,
        errors: Vec<Violation>,
    ) -> Result<String> {
        let as_name = self.rejected_name(name, batch);
        batch.write(&self.dir("rejected").join(&as_name), bytes.to_vec());
        self.write_rejection(batch, name, &as_name, node, errors)?;
        batch.remove_after(&self.inbox().join(name));
        Ok(as_name)
    }

    /// Queues the rejection report `rejected/<as_name>.error.json`.
    fn write_rejection(
        &self,
        batch: &mut durable::WriteBatch,
        name: &str,
        as_name: &str,
        node: &str,
        errors: Vec<Violation>,
    ) -> Result<()> {
        let report = RejectionReport {
            file: name.to_string(),
            rejected_as: as_name.to_string(),
            rejected_at: Utc::now(),
            node: node.to_string(),
            errors,
        };
        let bytes = serde_json::to_vec_pretty(&report).map_err(|e| Error::json("rejection", e))?;
        batch.write(
            &self.dir("rejected").join(format!("{as_name}.error.json")),
            bytes,
        );
        Ok(())
    }

    /// Writes a control request for the daemon into `control/`.
    ///
    /// # Errors
    /// [`Error::Io`] when the spool is not writable.
    pub fn write_control(&self, req: &ControlRequest) -> Result<PathBuf> {
        let path = self
            .dir("control")
            .join(format!("{}.json", ulid::Ulid::new()));
        let bytes = serde_json::to_vec(req).map_err(|e| Error::json("control request", e))?;
        durable::write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Submits a task by writing it into `inbox/` atomically (temp file, rename), as any
    /// other producer would. Returns the task id (assigned here when absent, so the caller
    /// can print it).
    ///
    /// # Errors
    /// [`Error::InvalidTask`] when the task does not validate; [`Error::Io`].
    pub fn submit(&self, mut spec: TaskSpec) -> Result<String> {
        let id = spec
            .id
            .clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
        spec.id = Some(id.clone());
        let bytes = serde_json::to_vec_pretty(&spec).map_err(|e| Error::json("task", e))?;
        if let Err(v) = task::parse_task(&bytes) {
            return Err(Error::InvalidTask(format_violations(&v)));
        }
        if let Some(state) = self.locate(&id) {
            return Err(Error::InvalidTask(format!(
                "duplicate id {id:?}: a task with this id is already in {}/",
                state.dir()
            )));
        }
        durable::write_atomic(&self.inbox().join(format!("{id}.json")), &bytes)?;
        Ok(id)
    }
}

/// How much a copy of a task in `state` says: final over running over queued.
fn state_rank(state: TaskState) -> u8 {
    match state {
        TaskState::Pending => 0,
        TaskState::Active => 1,
        _ => 2,
    }
}

/// Formats violations as `path: message` lines (`(root)` for the whole document).
#[must_use]
pub fn format_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|x| {
            let p = if x.path.is_empty() { "(root)" } else { &x.path };
            format!("{p}: {}", x.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_names() {
        assert_eq!(classify_inbox_name("a.json"), InboxName::Task);
        assert_eq!(classify_inbox_name(".a.json"), InboxName::Ignored);
        assert_eq!(classify_inbox_name("a.json.tmp"), InboxName::Ignored);
        assert_eq!(
            classify_inbox_name(".syncthing.a.json.tmp"),
            InboxName::Ignored
        );
        assert_eq!(
            classify_inbox_name("a.sync-conflict-20260101-101010-ABCDEF.json"),
            InboxName::Conflict
        );
        assert_eq!(classify_inbox_name("notes.txt"), InboxName::Ignored);
    }
}
