//! The asciicast v2 format, asciinema's
//! (<https://docs.asciinema.org/manual/asciicast/v2/>): newline-delimited JSON, a header
//! object on the first line, then one event per line, `[time, code, data]`:
//!
//! ```text
//! {"version": 2, "width": 120, "height": 40, "timestamp": 1764666074, "env": {"TERM": "xterm-256color"}, "title": "sh-1: task t1"}
//! [0.000512, "o", "$ echo hi\r\n"]
//! [0.104301, "o", "hi\r\n"]
//! [9.500000, "m", "truncated: the recording reached its cap of 8388608 bytes"]
//! ```
//!
//! `time` is in seconds since the recording started (a float, written with µs
//! precision); `code` is `o` (output), `i` (input), `r` (resize: data `"<cols>x<rows>"`)
//! or `m` (a marker: data is its label). Strings are JSON strings: control characters
//! (ESC, CR, …) are written as `\u001b`-style escapes, so a line holds no raw newline.
//! Pure: nothing here does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The format version this module writes and reads.
pub const VERSION: u8 = 2;

/// Room kept free at the end of a capped file for the marker that says it was truncated
/// (bytes): a [`CastWriter`] stops writing events this far before its cap.
pub const MARKER_RESERVE: u64 = 256;

/// The header: the file's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`VERSION`].
    pub version: u8,
    /// Terminal width, in columns.
    pub width: u16,
    /// Terminal height, in rows.
    pub height: u16,
    /// When the recording started, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Environment of the recorded program that a player may use (`TERM`, `SHELL`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A title for players to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// What an event is: its `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `o`: bytes the program wrote to the terminal.
    Output,
    /// `i`: bytes typed into the terminal.
    Input,
    /// `r`: the terminal was resized; data is `"<cols>x<rows>"`.
    Resize,
    /// `m`: a marker; data is its label.
    Marker,
}

impl EventKind {
    /// The one-letter code written in the file.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Output => "o",
            Self::Input => "i",
            Self::Resize => "r",
            Self::Marker => "m",
        }
    }

    /// The kind a code names (`None`: not one of v2's).
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "o" => Some(Self::Output),
            "i" => Some(Self::Input),
            "r" => Some(Self::Resize),
            "m" => Some(Self::Marker),
            _ => None,
        }
    }
}

/// One event line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the recording started.
    pub time: f64,
    /// Its code.
    pub kind: EventKind,
    /// Output text, input text, `"<cols>x<rows>"` or a marker's label.
    pub data: String,
}

impl Event {
    /// An output event.
    #[must_use]
    pub fn output(time: f64, data: impl Into<String>) -> Self {
        Self {
            time,
            kind: EventKind::Output,
            data: data.into(),
        }
    }

    /// A marker event with a label.
    #[must_use]
    pub fn marker(time: f64, label: impl Into<String>) -> Self {
        Self {
            time,
            kind: EventKind::Marker,
            data: label.into(),
        }
    }

    /// A resize event to `cols` × `rows`.
    #[must_use]
    pub fn resize(time: f64, cols: u16, rows: u16) -> Self {
        Self {
            time,
            kind: EventKind::Resize,
            data: format!("{cols}x{rows}"),
        }
    }
}

/// The header's line, newline included.
#[must_use]
pub fn encode_header(header: &Header) -> String {
    // A struct of plain fields and a string map cannot fail to serialise.
    let mut line = serde_json::to_string(header).unwrap_or_default();
    line.push('\n');
    line
}

/// An event's line, newline included: `[<time, 6 decimals>, "<code>", <data as a JSON
/// string>]`. A negative or non-finite time is written as 0.
#[must_use]
pub fn encode_event(event: &Event) -> String {
    let time = if event.time.is_finite() && event.time > 0.0 {
        event.time
    } else {
        0.0
    };
    let data = serde_json::to_string(&event.data).unwrap_or_else(|_| "\"\"".into());
    format!("[{time:.6}, \"{}\", {data}]\n", event.kind.code())
}

/// A recording read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    /// The header.
    pub header: Header,
    /// The events, in file order. Events of codes v2 does not define are skipped.
    pub events: Vec<Event>,
    /// The last line was cut short (a file being written, or a writer that died) and was
    /// skipped.
    pub torn_tail: bool,
}

impl Cast {
    /// Every output event's data, concatenated: what the terminal was sent.
    #[must_use]
    pub fn output(&self) -> String {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Output)
            .map(|e| e.data.as_str())
            .collect()
    }

    /// The recording as a file again: the header's line, then each event's
    /// ([`encode_header`], [`encode_event`]).
    #[must_use]
    pub fn encode(&self) -> String {
        let mut text = encode_header(&self.header);
        for e in &self.events {
            text.push_str(&encode_event(e));
        }
        text
    }

    /// The markers' labels, in order.
    #[must_use]
    pub fn markers(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Marker)
            .map(|e| e.data.as_str())
            .collect()
    }
}

/// Why a file is not an asciicast v2 recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

/// Reads a recording. A last line without its newline that does not parse is taken for a
/// line being written and skipped ([`Cast::torn_tail`]); blank lines are skipped.
///
/// # Errors
/// [`ParseError`] naming the line: no header, a header that is not v2, an event that is
/// not `[number, string, string]`.
pub fn parse(text: &str) -> Result<Cast, ParseError> {
    let mut lines = text.split_inclusive('\n').enumerate();
    let (_, first) = lines.next().ok_or_else(|| ParseError {
        line: 1,
        message: "empty file: no header".into(),
    })?;
    let header: Header = serde_json::from_str(first.trim_end()).map_err(|e| ParseError {
        line: 1,
        message: format!("not an asciicast header: {e}"),
    })?;
    if header.version != VERSION {
        return Err(ParseError {
            line: 1,
            message: format!(
                "asciicast version {} (only {VERSION} is read)",
                header.version
            ),
        });
    }
    let mut events = Vec::new();
    let mut torn_tail = false;
    for (i, line) in lines {
        let complete = line.ends_with('\n');
        let body = line.trim_end();
        if body.is_empty() {
            continue;
        }
        match serde_json::from_str::<(f64, String, String)>(body) {
            Ok((time, code, data)) => {
                if let Some(kind) = EventKind::from_code(&code) {
                    events.push(Event { time, kind, data });
                }
            }
            Err(_) if !complete => torn_tail = true,
            Err(e) => {
                return Err(ParseError {
                    line: i + 1,
                    message: format!("not an event [time, code, data]: {e}"),
                })
            }
        }
    }
    Ok(Cast {
        header,
        events,
        torn_tail,
    })
}

/// Turns a byte stream into text split on UTF-8 character boundaries: an incomplete
/// sequence at the end of a chunk waits for the next chunk; bytes that can never be UTF-8
/// become U+FFFD (one per invalid sequence, as `String::from_utf8_lossy` does).
#[derive(Debug, Clone, Default)]
pub struct Utf8Carry {
    /// The start of a character cut by the chunk's end (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// The text of `bytes`, after what the previous chunk left; keeps a trailing
    /// incomplete character for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = buf.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(&String::from_utf8_lossy(good));
                    if let Some(n) = e.error_len() {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &bad[n..];
                    } else {
                        self.pending = bad.to_vec();
                        break;
                    }
                }
            }
        }
        out
    }

    /// What is still held (an incomplete character at the stream's end), as U+FFFD; empty
    /// when nothing is.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// The lines of one capped recording: counts what it wrote and stops at the cap.
///
/// Every line it returns fits: the file never exceeds `max_bytes`. Events stop
/// [`MARKER_RESERVE`] bytes before the cap; the first event that does not fit is replaced
/// by a marker saying the recording was truncated, and every later event is dropped.
#[derive(Debug, Clone)]
pub struct CastWriter {
    max_bytes: u64,
    written: u64,
    truncated: bool,
}

impl CastWriter {
    /// A writer for a file of at most `max_bytes` bytes (at least a header and the
    /// [`MARKER_RESERVE`]; the config asks for 4096 or more).
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            written: 0,
            truncated: false,
        }
    }

    /// The header's line (always written: it comes first).
    pub fn header(&mut self, header: &Header) -> String {
        let line = encode_header(header);
        self.written += line.len() as u64;
        line
    }

    /// The line to append for `event`: the event's, or once the cap is reached the
    /// truncation marker, then `None`.
    pub fn event(&mut self, event: &Event) -> Option<String> {
        if self.truncated {
            return None;
        }
        let line = encode_event(event);
        let len = line.len() as u64;
        if self.written + len + MARKER_RESERVE <= self.max_bytes {
            self.written += len;
            return Some(line);
        }
        self.truncated = true;
        let marker = encode_event(&Event::marker(
            event.time,
            format!(
                "truncated: the recording reached its cap of {} bytes",
                self.max_bytes
            ),
        ));
        self.written += marker.len() as u64;
        Some(marker)
    }

    /// Bytes returned so far.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether the cap was reached.
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            width: 80,
            height: 24,
            timestamp: Some(1_764_666_074),
            env: BTreeMap::from([("TERM".into(), "xterm-256color".into())]),
            title: Some("sh-1: task t1".into()),
        }
    }

    #[test]
    fn the_header_is_one_json_line_with_the_v2_fields() {
        let line = encode_header(&header());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["version"], 2);
        assert_eq!(v["width"], 80);
        assert_eq!(v["height"], 24);
        assert_eq!(v["timestamp"], 1_764_666_074);
        assert_eq!(v["env"]["TERM"], "xterm-256color");
        assert_eq!(v["title"], "sh-1: task t1");
    }

    #[test]
    fn a_recording_read_back_encodes_to_the_same_file() {
        let mut text = encode_header(&header());
        for e in [
            Event::output(0.25, "\x1b[1mhi\x1b[0m\r\n"),
            Event::resize(1.0, 100, 30),
            Event::marker(2.5, "gap: 12 bytes"),
        ] {
            text.push_str(&encode_event(&e));
        }
        assert_eq!(parse(&text).unwrap().encode(), text);
    }

    #[test]
    fn control_characters_are_escaped_so_an_event_stays_on_one_line() {
        let data = "\x1b[1mbold\x1b[0m\r\n\ttab \"quoted\" back\\slash \x07\x00";
        let line = encode_event(&Event::output(1.5, data));
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with("]\n"));
        assert!(line.starts_with("[1.500000, \"o\", \""), "{line}");
        assert!(line.contains("\\u001b[1mbold"), "{line}");
        assert!(line.contains("\\r\\n\\t"), "{line}");
        assert!(!line[..line.len() - 1].chars().any(|c| c.is_control()));
        let (t, code, back): (f64, String, String) = serde_json::from_str(&line).unwrap();
        assert!((t - 1.5).abs() < 1e-9);
        assert_eq!(code, "o");
        assert_eq!(back, data);
    }

    #[test]
    fn times_are_written_with_microseconds_and_never_negative() {
        assert!(encode_event(&Event::output(0.000_001_4, "x")).starts_with("[0.000001,"));
        assert!(encode_event(&Event::output(-2.0, "x")).starts_with("[0.000000,"));
        assert!(encode_event(&Event::output(f64::NAN, "x")).starts_with("[0.000000,"));
    }

    #[test]
    fn what_is_written_reads_back() {
        let mut w = CastWriter::new(1 << 20);
        let mut text = w.header(&header());
        let events = vec![
            Event::output(0.1, "héllo \u{1b}[31mred\u{1b}[0m\r\n"),
            Event::resize(0.2, 100, 30),
            Event::output(0.3, "bye"),
            Event::marker(0.4, "done"),
        ];
        for e in &events {
            text.push_str(&w.event(e).unwrap());
        }
        assert_eq!(w.written(), text.len() as u64);
        let cast = parse(&text).unwrap();
        assert_eq!(cast.header, header());
        assert_eq!(cast.events, events);
        assert!(!cast.torn_tail);
        assert_eq!(cast.output(), "héllo \u{1b}[31mred\u{1b}[0m\r\nbye");
        assert_eq!(cast.markers(), vec!["done"]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error() {
        let mut text = encode_header(&header());
        text.push_str(&encode_event(&Event::output(0.1, "a")));
        let torn = format!("{text}[0.2, \"o\", \"b");
        let cast = parse(&torn).unwrap();
        assert!(cast.torn_tail);
        assert_eq!(cast.output(), "a");
        let bad = format!("{text}[0.2, \"o\"]\n[0.3, \"o\", \"c\"]\n");
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn a_file_that_is_not_v2_is_refused_with_the_reason() {
        assert!(parse("").unwrap_err().message.contains("no header"));
        let v1 = "{\"version\": 1, \"width\": 80, \"height\": 24}\n";
        assert!(parse(v1).unwrap_err().message.contains("version 1"));
        assert!(parse("[0.1, \"o\", \"x\"]\n")
            .unwrap_err()
            .message
            .contains("header"));
    }

    #[test]
    fn headers_from_other_writers_read_with_fields_we_do_not_write() {
        let text = "{\"version\": 2, \"width\": 80, \"height\": 24, \"duration\": 1.5, \
                    \"idle_time_limit\": 2, \"theme\": {\"fg\": \"#fff\"}}\n[0.5, \"o\", \"x\"]\n";
        let cast = parse(text).unwrap();
        assert_eq!((cast.header.width, cast.header.height), (80, 24));
        assert_eq!(cast.output(), "x");
    }

    #[test]
    fn a_character_cut_between_chunks_is_carried_to_the_next() {
        let text = "é€😀";
        let bytes = text.as_bytes();
        // Every way of cutting the stream in two gives the text back, unbroken.
        for cut in 0..=bytes.len() {
            let mut carry = Utf8Carry::default();
            let a = carry.push(&bytes[..cut]);
            let b = carry.push(&bytes[cut..]);
            assert!(
                !a.contains('\u{FFFD}') && !b.contains('\u{FFFD}'),
                "cut {cut}"
            );
            assert_eq!(format!("{a}{b}"), text, "cut {cut}");
            assert_eq!(carry.finish(), "");
        }
        // One byte at a time.
        let mut carry = Utf8Carry::default();
        let all: String = bytes.iter().map(|b| carry.push(&[*b])).collect();
        assert_eq!(all, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_and_the_rest_is_kept() {
        let mut carry = Utf8Carry::default();
        assert_eq!(carry.push(b"a\xffb\xc3(c"), "a\u{FFFD}b\u{FFFD}(c");
        // A start left at the end of the stream is flushed as one replacement.
        assert_eq!(carry.push(b"d\xe2\x82"), "d");
        assert_eq!(carry.finish(), "\u{FFFD}");
    }

    #[test]
    fn a_capped_file_stops_at_the_cap_and_ends_with_a_truncation_marker() {
        let max = 4096;
        let mut w = CastWriter::new(max);
        let mut text = w.header(&header());
        let mut written_events = 0;
        for i in 0..1000 {
            let t = f64::from(i) * 0.01;
            if let Some(line) = w.event(&Event::output(t, "0123456789".repeat(5))) {
                text.push_str(&line);
                written_events += 1;
            }
        }
        assert!(w.truncated());
        assert!(text.len() as u64 <= max, "{} > {max}", text.len());
        assert_eq!(w.written(), text.len() as u64);
        let cast = parse(&text).unwrap();
        let last = cast.events.last().unwrap();
        assert_eq!(last.kind, EventKind::Marker);
        assert!(last.data.contains("truncated") && last.data.contains("4096"));
        // Every output event before it was kept whole; none after it.
        assert_eq!(cast.events.len(), written_events);
        assert!(cast.events[..cast.events.len() - 1]
            .iter()
            .all(|e| e.kind == EventKind::Output && e.data.len() == 50));
        assert!(w.event(&Event::output(99.0, "more")).is_none());
    }
}
