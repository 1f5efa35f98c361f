//! What a session's terminal shows now, read from its recordings: the one source of the
//! screen previews of `architect top` and the dashboard's fleet page.
//!
//! The recording is the session's running task's newest attempt, else (idle) its newest
//! idle recording. Its output is replayed through a `vt100` screen of the recorded size,
//! so a full-screen program's redraws read as the screen it drew, not as the escape codes
//! that drew it. Only the recording's last `max_bytes` are replayed (whole events from
//! there on), which keeps the read cheap; a program that draws only what changed may
//! then show part of its screen. The lines are redacted ([`crate::redact`]) as a whole,
//! so a secret split between two reads of the terminal is caught.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::asciicast::{EventKind, Header};
use super::{attempt_of, DIR};
use crate::spool::Spool;

/// The recording that shows what `session` of `node` shows now (module doc): in a fleet
/// spool, under that node's part (`nodes/<node>/recordings/`); `None` when there is none
/// (recording off, nothing printed yet).
#[must_use]
pub fn current_recording(
    spool: &Spool,
    node: &str,
    session: &str,
    task: Option<&str>,
) -> Option<PathBuf> {
    let members = spool.members();
    let member = members
        .iter()
        .find(|m| m.member_node().as_deref() == Some(node))
        .unwrap_or(&members[0]);
    let dir = member.dir(DIR);
    match task {
        Some(t) => newest(&dir, |n| attempt_of(n, t)),
        None => newest(&dir.join(session), |n| {
            (n.starts_with("idle-") && n.ends_with(".cast")).then_some(0)
        }),
    }
}

/// The non-blank lines of the screen the recording at `path` leaves, replaying its last
/// `max_bytes` (bytes) of events, redacted. `None` when the file cannot be read or has no
/// asciicast v2 header.
#[must_use]
pub fn screen_lines(path: &Path, max_bytes: u64) -> Option<Vec<String>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut first = String::new();
    BufReader::new(&mut f).read_line(&mut first).ok()?;
    let header: Header = serde_json::from_str(first.trim_end()).ok()?;
    let header_len = first.len() as u64;
    let start = len.saturating_sub(max_bytes).max(header_len);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    // Started inside an event: skip to the first whole one.
    let text = if start > header_len {
        text.split_once('\n').map_or("", |(_, rest)| rest)
    } else {
        &text
    };
    let mut vt = vt100::Parser::new(header.height.max(1), header.width.max(1), 0);
    for line in text.lines() {
        if let Ok((_, code, data)) = serde_json::from_str::<(f64, String, String)>(line) {
            if EventKind::from_code(&code) == Some(EventKind::Output) {
                vt.process(data.as_bytes());
            }
        }
    }
    let contents = crate::redact::redact(&vt.screen().contents());
    Some(
        contents
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// The file of `dir` with the highest `(rank, name)`, among those `rank` accepts.
fn newest(dir: &Path, rank: impl Fn(&str) -> Option<u32>) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            rank(&name).map(|r| (r, name, e.path()))
        })
        .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        .map(|(_, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::asciicast::{encode_event, encode_header, Event};

    fn write_cast(path: &Path, rows: u16, cols: u16, chunks: &[&str]) {
        let header = Header {
            version: 2,
            width: cols,
            height: rows,
            timestamp: None,
            env: Default::default(),
            title: None,
        };
        let mut text = encode_header(&header);
        for (i, c) in chunks.iter().enumerate() {
            text.push_str(&encode_event(&Event::output(i as f64 * 0.1, *c)));
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_screen_is_what_the_output_drew_not_its_escape_codes_and_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.cast");
        write_cast(
            &p,
            5,
            40,
            &[
                "first line\r\n",
                "\x1b[2J\x1b[Hredrawn\r\n\x1b[1mbold\x1b[0m",
                "\r\nkey sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
            ],
        );
        let lines = screen_lines(&p, 1 << 20).unwrap();
        assert_eq!(lines[0], "redrawn");
        assert_eq!(lines[1], "bold");
        assert!(!lines.iter().any(|l| l.contains("first line")));
        assert!(lines[2].contains("[REDACTED]"), "{lines:?}");
        assert!(!lines[2].contains("AAAAAAAA"), "{lines:?}");
    }

    #[test]
    fn only_the_last_bytes_are_replayed_from_a_whole_event() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.cast");
        let chunks: Vec<String> = (0..200).map(|i| format!("line {i}\r\n")).collect();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        write_cast(&p, 50, 40, &refs);
        let lines = screen_lines(&p, 300).unwrap();
        assert_eq!(lines.last().unwrap(), "line 199");
        assert!(lines.len() < 20, "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("line ")), "{lines:?}");
    }

    #[test]
    fn the_current_recording_is_the_task_s_newest_attempt_else_the_newest_idle_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let rec = dir.path().join(DIR);
        for f in ["t1.cast", "t1.2.cast", "t10.cast"] {
            write_cast(&rec.join(f), 2, 10, &["x"]);
        }
        for f in ["idle-01A.cast", "idle-01B.cast"] {
            write_cast(&rec.join("sh-1").join(f), 2, 10, &["x"]);
        }
        let name = |p: Option<PathBuf>| p.map(|p| p.file_name().unwrap().to_owned());
        let node = "n";
        assert_eq!(
            name(current_recording(&spool, node, "sh-1", Some("t1"))),
            Some("t1.2.cast".into())
        );
        assert_eq!(
            name(current_recording(&spool, node, "sh-1", None)),
            Some("idle-01B.cast".into())
        );
        assert_eq!(current_recording(&spool, node, "sh-2", None), None);
        assert_eq!(current_recording(&spool, node, "sh-1", Some("t2")), None);
    }
}
