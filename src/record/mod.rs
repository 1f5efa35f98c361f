//! Recordings of the sessions' terminals, in asciicast v2 (asciinema's format).
//!
//! Each terminal session's output is recorded as it is read from its PTY: one file per
//! task attempt, from the prompt's delivery to the task's end, and one per stretch of
//! idle output in between, under the node's spool directory:
//!
//! ```text
//! recordings/<task id>.cast          the task's first attempt
//! recordings/<task id>.<n>.cast      its attempt n (n ≥ 2)
//! recordings/<session>/idle-<ulid>.cast   what the session printed between tasks
//! ```
//!
//! [`asciicast`] is the format (writer, reader, the UTF-8 split, the size cap),
//! [`retention`] which old files go, [`replay`] the timing of a replay, [`screen`] what a
//! session's screen shows now (the previews of `top` and the dashboard); [`recorder`] is
//! the I/O: a thread that writes every session's files, fed without blocking by each
//! session's [`recorder::SessionTape`].

pub mod asciicast;
pub mod recorder;
pub mod replay;
pub mod retention;
pub mod screen;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::spool::Spool;

/// The spool directory recordings are written in (per node, as the log).
pub const DIR: &str = "recordings";

/// `[recording]` in `config/architect.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// Record the sessions' terminals (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Largest file, in bytes (default 8 MiB): past it a recording keeps its start and
    /// ends with a marker saying it was truncated. At least 4096.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: u64,
    /// Files last written more than this many days ago are deleted (default 30; 0 keeps
    /// them).
    #[serde(default = "d_keep_days")]
    pub keep_days: u32,
    /// The oldest files are deleted while this node's recordings add up to more than this
    /// many bytes (default 1 GiB; 0: no limit). 0 or at least `max_bytes`.
    #[serde(default = "d_keep_total_bytes")]
    pub keep_total_bytes: u64,
}

fn yes() -> bool {
    true
}
fn d_max_bytes() -> u64 {
    8 * 1024 * 1024
}
fn d_keep_days() -> u32 {
    30
}
fn d_keep_total_bytes() -> u64 {
    1024 * 1024 * 1024
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: d_max_bytes(),
            keep_days: d_keep_days(),
            keep_total_bytes: d_keep_total_bytes(),
        }
    }
}

/// Smallest `[recording] max_bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 4096;

impl RecordingSettings {
    /// Checks the values.
    ///
    /// # Errors
    /// A message naming the setting and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(format!(
                "recording.max_bytes = {} is too small: a recording must hold at least \
                 {MIN_MAX_BYTES} bytes",
                self.max_bytes
            ));
        }
        if self.keep_total_bytes != 0 && self.keep_total_bytes < self.max_bytes {
            return Err(format!(
                "recording.keep_total_bytes = {} is below recording.max_bytes = {}: one \
                 recording could not be kept; raise it, or set 0 for no limit",
                self.keep_total_bytes, self.max_bytes
            ));
        }
        Ok(())
    }
}

/// The file name of a task attempt's recording: `<task>.cast` for attempt 1 (or 0),
/// `<task>.<attempt>.cast` after.
#[must_use]
pub fn task_file_name(task_id: &str, attempt: u32) -> String {
    if attempt <= 1 {
        format!("{task_id}.cast")
    } else {
        format!("{task_id}.{attempt}.cast")
    }
}

/// The attempt a file name records for task `task_id` (`None`: not one of its files).
#[must_use]
pub fn attempt_of(file_name: &str, task_id: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(task_id)?.strip_suffix(".cast")?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix('.')?
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 2)
}

/// An idle recording's path under the recordings directory:
/// `<session>/idle-<ulid>.cast` (ULIDs sort by time).
#[must_use]
pub fn idle_file(session: &str, id: ulid::Ulid) -> PathBuf {
    Path::new(session).join(format!("idle-{id}.cast"))
}

/// A task's recordings found in a (fleet's) spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// `(attempt, path)`, by attempt (the same attempt on two nodes: both, by path).
    pub files: Vec<(u32, PathBuf)>,
    /// The recordings directories looked in (each member's, whether it exists or not).
    pub looked_in: Vec<PathBuf>,
}

/// Every recording of task `task_id` in every member of the spool ([`Spool::members`]:
/// the root, then each node's directory), wherever the task ran.
#[must_use]
pub fn find_task(spool: &Spool, task_id: &str) -> Found {
    let mut found = Found::default();
    for m in spool.members() {
        let dir = m.dir(DIR);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(std::result::Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = attempt_of(&name, task_id) {
                    found.files.push((n, e.path()));
                }
            }
        }
        found.looked_in.push(dir);
    }
    found.files.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_file_names_round_trip_and_others_are_not_the_tasks() {
        assert_eq!(task_file_name("t1", 1), "t1.cast");
        assert_eq!(task_file_name("t1", 3), "t1.3.cast");
        for n in 1..5 {
            assert_eq!(attempt_of(&task_file_name("t1", n), "t1"), Some(n));
        }
        assert_eq!(attempt_of("t10.cast", "t1"), None);
        assert_eq!(attempt_of("t1.1.cast", "t1"), None);
        assert_eq!(attempt_of("t1.x.cast", "t1"), None);
        assert_eq!(attempt_of("t1.json", "t1"), None);
    }

    #[test]
    fn settings_default_and_validation_name_the_setting() {
        let d = RecordingSettings::default();
        assert!(d.enabled && d.validate().is_ok());
        let small = RecordingSettings {
            max_bytes: 100,
            ..d
        };
        assert!(small
            .validate()
            .unwrap_err()
            .contains("recording.max_bytes"));
        let total = RecordingSettings {
            keep_total_bytes: 10_000,
            max_bytes: 20_000,
            ..d
        };
        assert!(total
            .validate()
            .unwrap_err()
            .contains("recording.keep_total_bytes"));
        let unlimited = RecordingSettings {
            keep_total_bytes: 0,
            ..d
        };
        assert!(unlimited.validate().is_ok());
    }

    #[test]
    fn a_task_is_found_on_every_node_that_recorded_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = Spool::for_node(dir.path(), "a");
        let b = Spool::for_node(dir.path(), "b");
        for (s, name) in [(&a, "t1.cast"), (&b, "t1.2.cast"), (&b, "t10.cast")] {
            std::fs::create_dir_all(s.dir(DIR)).unwrap();
            std::fs::write(s.dir(DIR).join(name), "x").unwrap();
        }
        let found = find_task(&Spool::new(dir.path()), "t1");
        assert_eq!(
            found.files,
            vec![
                (1, a.dir(DIR).join("t1.cast")),
                (2, b.dir(DIR).join("t1.2.cast"))
            ]
        );
        assert_eq!(
            found.looked_in,
            vec![dir.path().join(DIR), a.dir(DIR), b.dir(DIR)]
        );
    }
}
