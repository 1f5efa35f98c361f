//! Reading the event logs as they grow: the one incremental reader behind `logs -f`, the
//! dashboard's event stream, `top`'s figures and the metrics [`crate::metrics::Scraper`].
//!
//! A [`LogTail`] remembers, per log file, the bytes it has read up to the end of the last
//! complete line. [`LogTail::poll`] lists the log directories again (a node's directory
//! or a new day's file that appears later is read from its start) and returns the events
//! of the lines completed since, file by file in [`super::file_order`]. A line still
//! being written is read once its newline arrives; a file that shrank (replaced by a
//! syncer) is not read again from its start, so nothing is returned twice; a file gone
//! between the listing and the read (pruned) is skipped. Lines that are not events are
//! skipped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{log_files, Event};
use crate::error::{Error, Result};

/// An event and where its line ends: the log file and the bytes of it read up to and
/// including the line's newline.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The event.
    pub event: Event,
    /// The log file it was read from.
    pub file: PathBuf,
    /// Bytes of `file` read once this line is (a resume point).
    pub end: u64,
}

/// An incremental reader of every log file in a set of directories (module doc).
#[derive(Debug, Default, Clone)]
pub struct LogTail {
    /// Bytes of each file already read (complete lines only).
    offsets: HashMap<PathBuf, u64>,
}

impl LogTail {
    /// A tail that reads every file from its start.
    #[must_use]
    pub fn from_start() -> Self {
        Self::default()
    }

    /// A tail that starts each file in `dirs` where `start` says (given the file's path
    /// and its current length in bytes, the offset to read from); files that appear
    /// later are read from their start.
    ///
    /// # Errors
    /// [`Error::Io`] when a log directory cannot be listed.
    pub fn starting(dirs: &[PathBuf], mut start: impl FnMut(&Path, u64) -> u64) -> Result<Self> {
        let mut offsets = HashMap::new();
        for path in files(dirs)? {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            let off = start(&path, len).min(len);
            offsets.insert(path, off);
        }
        Ok(Self { offsets })
    }

    /// A tail at the current end of every file in `dirs`: it returns only what is
    /// written from now on.
    ///
    /// # Errors
    /// [`Error::Io`] when a log directory cannot be listed.
    pub fn at_end(dirs: &[PathBuf]) -> Result<Self> {
        Self::starting(dirs, |_, len| len)
    }

    /// Bytes read so far of each file this tail has seen.
    pub fn offsets(&self) -> impl Iterator<Item = (&Path, u64)> {
        self.offsets.iter().map(|(p, o)| (p.as_path(), *o))
    }

    /// The events of the lines completed since the last call, in each file's order.
    ///
    /// # Errors
    /// [`Error::Io`] when a log directory cannot be listed or a file read.
    pub fn poll(&mut self, dirs: &[PathBuf]) -> Result<Vec<Event>> {
        Ok(self
            .poll_placed(dirs)?
            .into_iter()
            .map(|p| p.event)
            .collect())
    }

    /// [`LogTail::poll`], each event with where its line ends.
    ///
    /// # Errors
    /// [`Error::Io`] when a log directory cannot be listed or a file read.
    pub fn poll_placed(&mut self, dirs: &[PathBuf]) -> Result<Vec<Placed>> {
        let mut out = Vec::new();
        for path in files(dirs)? {
            self.read_new(&path, &mut out)?;
        }
        Ok(out)
    }

    fn read_new(&mut self, path: &Path, out: &mut Vec<Placed>) -> Result<()> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("opening", path, e)),
        };
        let offset = self.offsets.get(path).copied().unwrap_or(0);
        let len = f
            .metadata()
            .map_err(|e| Error::io("reading the size of", path, e))?
            .len();
        if len <= offset {
            return Ok(());
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("seeking in", path, e))?;
        let mut buf = Vec::new();
        f.take(len - offset)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("reading", path, e))?;
        let Some(last_newline) = buf.iter().rposition(|b| *b == b'\n') else {
            return Ok(()); // only a line still being written
        };
        let mut start = 0;
        for line in buf[..=last_newline].split_inclusive(|b| *b == b'\n') {
            start += line.len();
            if let Ok(event) = serde_json::from_slice::<Event>(line) {
                out.push(Placed {
                    event,
                    file: path.to_path_buf(),
                    end: offset + start as u64,
                });
            }
        }
        self.offsets
            .insert(path.to_path_buf(), offset + last_newline as u64 + 1);
        Ok(())
    }
}

/// Every log file of `dirs`, each directory's in [`super::file_order`]; a directory
/// that does not exist (yet) has none.
fn files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for d in dirs {
        if d.is_dir() {
            all.extend(log_files(d)?);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(kind: &str) -> String {
        format!(
            "{{\"ts\":\"2026-12-02T10:00:00Z\",\"node\":\"n\",\"type\":\"{kind}\",\"task_id\":null,\"session\":null,\"data\":{{}}}}\n"
        )
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.kind().to_string()).collect()
    }

    #[test]
    fn a_tail_returns_each_complete_line_once_and_a_torn_one_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let f = dir.path().join("events-n-20261202.jsonl");
        append(&f, &line("daemon_started"));
        let mut tail = LogTail::from_start();
        assert_eq!(kinds(&tail.poll(&dirs).unwrap()), ["daemon_started"]);
        assert!(tail.poll(&dirs).unwrap().is_empty());
        let torn = line("task_queued");
        let (head, rest) = torn.split_at(20);
        append(&f, head);
        assert!(tail.poll(&dirs).unwrap().is_empty());
        append(&f, rest);
        append(&f, "not json\n");
        let placed = tail.poll_placed(&dirs).unwrap();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].event.kind(), "task_queued");
        let len = std::fs::metadata(&f).unwrap().len();
        assert_eq!(placed[0].end, len - "not json\n".len() as u64);
        assert_eq!(tail.offsets().next().unwrap().1, len);
    }

    #[test]
    fn at_end_skips_what_is_there_and_a_new_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("later");
        let dirs = vec![dir.path().to_path_buf(), missing.clone()];
        append(
            &dir.path().join("events-n-20261201.jsonl"),
            &line("daemon_started"),
        );
        let mut tail = LogTail::at_end(&dirs).unwrap();
        assert!(tail.poll(&dirs).unwrap().is_empty());
        append(
            &dir.path().join("events-n-20261202.jsonl"),
            &line("task_queued"),
        );
        std::fs::create_dir(&missing).unwrap();
        append(
            &missing.join("events-m-20261202.jsonl"),
            &line("task_assigned"),
        );
        let mut got = kinds(&tail.poll(&dirs).unwrap());
        got.sort();
        assert_eq!(got, ["task_assigned", "task_queued"]);
    }

    #[test]
    fn a_file_that_shrank_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let f = dir.path().join("events-n-20261202.jsonl");
        append(&f, &line("daemon_started"));
        append(&f, &line("task_queued"));
        let mut tail = LogTail::from_start();
        assert_eq!(tail.poll(&dirs).unwrap().len(), 2);
        std::fs::write(&f, line("daemon_started")).unwrap();
        assert!(tail.poll(&dirs).unwrap().is_empty());
    }
}
