//! Which recordings to delete: `[recording] keep_days` and `keep_total_bytes`. Pure: the
//! caller lists the files and deletes what [`select`] names.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// A recording on disk, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its path.
    pub path: PathBuf,
    /// Last modified (when its last line was written).
    pub modified: SystemTime,
    /// Its size in bytes.
    pub bytes: u64,
    /// Being written now: never deleted (its size still counts towards the total).
    pub open: bool,
}

/// The files to delete, oldest first. The rules, in order:
///
/// 1. a file being written ([`Listed::open`]) is kept;
/// 2. with `keep_days` > 0, every other file last modified more than `keep_days` × 24 h
///    before `now` is deleted;
/// 3. with `keep_total_bytes` > 0, while the files kept add up to more than that, the
///    oldest of them that is not open is deleted (by modification time, then path).
///
/// 0 turns a rule off.
#[must_use]
pub fn select(
    files: &[Listed],
    now: SystemTime,
    keep_days: u32,
    keep_total_bytes: u64,
) -> Vec<PathBuf> {
    let mut by_age: Vec<&Listed> = files.iter().collect();
    by_age.sort_by(|a, b| {
        a.modified
            .cmp(&b.modified)
            .then_with(|| a.path.cmp(&b.path))
    });
    let cutoff = (keep_days > 0)
        .then(|| now.checked_sub(Duration::from_secs(u64::from(keep_days) * 86_400)))
        .flatten();
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut out = Vec::new();
    for f in by_age {
        if f.open {
            continue;
        }
        let expired = cutoff.is_some_and(|c| f.modified < c);
        let over = keep_total_bytes > 0 && total > keep_total_bytes;
        if expired || over {
            total -= f.bytes;
            out.push(f.path.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(100 * DAY)
    }

    fn file(name: &str, age_days: u64, bytes: u64) -> Listed {
        Listed {
            path: PathBuf::from(name),
            modified: now() - Duration::from_secs(age_days * DAY),
            bytes,
            open: false,
        }
    }

    fn names(v: &[PathBuf]) -> Vec<&str> {
        v.iter().map(|p| p.to_str().unwrap()).collect()
    }

    #[test]
    fn files_older_than_keep_days_are_deleted_oldest_first() {
        let files = [
            file("new", 1, 10),
            file("old", 40, 10),
            file("older", 50, 10),
            file("edge", 29, 10),
        ];
        assert_eq!(names(&select(&files, now(), 30, 0)), ["older", "old"]);
    }

    #[test]
    fn past_the_total_the_oldest_go_until_the_rest_fits() {
        let files = [
            file("a", 5, 400),
            file("b", 4, 400),
            file("c", 3, 400),
            file("d", 2, 400),
        ];
        // 1600 bytes, 1000 allowed: a and b go, 800 remain.
        assert_eq!(names(&select(&files, now(), 0, 1000)), ["a", "b"]);
        assert!(select(&files, now(), 0, 1600).is_empty());
    }

    #[test]
    fn a_file_being_written_is_never_deleted_but_counts_towards_the_total() {
        let mut open = file("open", 60, 900);
        open.open = true;
        let files = [open, file("x", 3, 100), file("y", 2, 100)];
        assert_eq!(names(&select(&files, now(), 30, 1000)), ["x"]);
    }

    #[test]
    fn both_rules_off_keeps_everything() {
        let files = [file("a", 400, 1 << 30), file("b", 1, 1 << 30)];
        assert!(select(&files, now(), 0, 0).is_empty());
    }

    #[test]
    fn equal_times_are_broken_by_path() {
        let files = [file("b", 3, 10), file("a", 3, 10), file("c", 3, 10)];
        assert_eq!(names(&select(&files, now(), 0, 15)), ["a", "b"]);
    }
}
