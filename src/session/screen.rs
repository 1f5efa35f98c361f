//! The rendered screen of an agent terminal: output is fed to a terminal emulator
//! ([`vt100`]) so that state is read from what a person would see, not from raw bytes
//! full of escape codes. Terminal queries that TUIs block on are answered here.
//!
//! Answered queries (ECMA-48 / xterm "ctlseqs"):
//! - `CSI 6 n` cursor position report → `CSI <row>;<col> R` (1-based, after the bytes
//!   before the query have been rendered),
//! - `CSI 5 n` device status → `CSI 0 n`,
//! - `CSI c` / `CSI 0 c` primary device attributes → `CSI ? 6 2 ; 2 2 c` (VT220-class),
//! - `CSI > c` secondary device attributes → `CSI > 0 ; 2 7 6 ; 0 c`,
//! - `CSI 1 8 t` text area size → `CSI 8 ; <rows> ; <cols> t`,
//! - `CSI ? u` kitty keyboard flags → `CSI ? 0 u`,
//! - `OSC 10 ; ?` / `OSC 11 ; ?` colours → white on black.

/// Longest escape sequence held back while waiting for its end, in bytes.
const MAX_PENDING: usize = 256;

/// A terminal emulator plus the query answerer.
pub struct Screen {
    parser: vt100::Parser,
    pending: Vec<u8>,
    rows: u16,
    cols: u16,
    scrollback: usize,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screen")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl Screen {
    /// A blank screen of `rows` × `cols` cells.
    #[must_use]
    pub fn new(rows: u16, cols: u16) -> Self {
        Self::with_scrollback(rows, cols, 0)
    }

    /// A blank screen that keeps `scrollback` rows after they scroll off the top.
    #[must_use]
    pub fn with_scrollback(rows: u16, cols: u16, scrollback: usize) -> Self {
        Self {
            parser: vt100::Parser::new(rows, cols, scrollback),
            pending: Vec::new(),
            rows,
            cols,
            scrollback,
        }
    }

    /// Feeds program output. Returns the bytes to write back to the program: the answers
    /// to any queries in `data`, in order.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let mut replies = Vec::new();
        let mut done = 0; // bytes of buf already given to the parser
        let mut i = 0;
        while i < buf.len() {
            if buf[i] != 0x1b {
                i += 1;
                continue;
            }
            match scan_sequence(&buf[i..]) {
                Scan::Incomplete if buf.len() - i <= MAX_PENDING => {
                    self.parser.process(&buf[done..i]);
                    self.pending = buf[i..].to_vec();
                    return replies;
                }
                Scan::Incomplete => i += 1,
                Scan::Other(len) => i += len,
                Scan::Query(len, query) => {
                    self.parser.process(&buf[done..i + len]);
                    done = i + len;
                    i += len;
                    self.answer(query, &mut replies);
                }
            }
        }
        self.parser.process(&buf[done..]);
        replies
    }

    fn answer(&self, query: Query, out: &mut Vec<u8>) {
        match query {
            Query::CursorPosition => {
                let (row, col) = self.parser.screen().cursor_position();
                out.extend_from_slice(format!("\x1b[{};{}R", row + 1, col + 1).as_bytes());
            }
            Query::Status => out.extend_from_slice(b"\x1b[0n"),
            Query::PrimaryAttributes => out.extend_from_slice(b"\x1b[?62;22c"),
            Query::SecondaryAttributes => out.extend_from_slice(b"\x1b[>0;276;0c"),
            Query::TextAreaSize => {
                out.extend_from_slice(format!("\x1b[8;{};{}t", self.rows, self.cols).as_bytes());
            }
            Query::KeyboardFlags => out.extend_from_slice(b"\x1b[?0u"),
            Query::Foreground => out.extend_from_slice(b"\x1b]10;rgb:ffff/ffff/ffff\x1b\\"),
            Query::Background => out.extend_from_slice(b"\x1b]11;rgb:0000/0000/0000\x1b\\"),
        }
    }

    /// The emulator's screen (for attach clients: a full frame, diffs).
    #[must_use]
    pub fn vt(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// The screen as text: one line per row, trailing spaces removed, trailing empty rows
    /// removed, joined with `\n`. This is what profile regexes match against.
    #[must_use]
    pub fn text(&self) -> String {
        let screen = self.parser.screen();
        let mut lines: Vec<String> = screen
            .rows(0, self.cols)
            .map(|r| r.trim_end().to_string())
            .collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines.join("\n")
    }
}

impl Screen {
    /// The rows that scrolled off the top (oldest first, trailing spaces removed),
    /// joined with `\n`; empty without scrollback.
    #[must_use]
    pub fn scrollback_text(&mut self) -> String {
        if self.scrollback == 0 {
            return String::new();
        }
        let rows = usize::from(self.rows);
        let screen = self.parser.screen_mut();
        screen.set_scrollback(usize::MAX);
        let total = screen.scrollback();
        let mut lines: Vec<String> = Vec::with_capacity(total);
        // View at offset k shows scrollback rows [total-k, total-k+rows) on top.
        let mut offset = total;
        while offset > 0 {
            screen.set_scrollback(offset);
            let take = offset.min(rows);
            lines.extend(
                screen
                    .rows(0, self.cols)
                    .take(take)
                    .map(|r| r.trim_end().to_string()),
            );
            offset -= take;
        }
        screen.set_scrollback(0);
        lines.join("\n")
    }
}

/// Normalises captured screen text the way [`Screen::text`] renders it (for fixtures
/// captured elsewhere, e.g. with `tmux capture-pane -p`).
#[must_use]
pub fn normalize_text(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    CursorPosition,
    Status,
    PrimaryAttributes,
    SecondaryAttributes,
    TextAreaSize,
    KeyboardFlags,
    Foreground,
    Background,
}

enum Scan {
    Incomplete,
    Other(usize),
    Query(usize, Query),
}

/// Scans one escape sequence at the start of `b` (`b[0]` is ESC).
fn scan_sequence(b: &[u8]) -> Scan {
    let Some(&kind) = b.get(1) else {
        return Scan::Incomplete;
    };
    match kind {
        b'[' => {
            let mut j = 2;
            while j < b.len() && (0x20..=0x3f).contains(&b[j]) {
                j += 1;
            }
            let Some(&fin) = b.get(j) else {
                return Scan::Incomplete;
            };
            if !(0x40..=0x7e).contains(&fin) {
                return Scan::Other(j);
            }
            let params = &b[2..j];
            let len = j + 1;
            let q = match (params, fin) {
                (b"6", b'n') => Some(Query::CursorPosition),
                (b"5", b'n') => Some(Query::Status),
                (b"" | b"0", b'c') => Some(Query::PrimaryAttributes),
                (b">" | b">0", b'c') => Some(Query::SecondaryAttributes),
                (b"18", b't') => Some(Query::TextAreaSize),
                (b"?", b'u') => Some(Query::KeyboardFlags),
                _ => None,
            };
            q.map_or(Scan::Other(len), |q| Scan::Query(len, q))
        }
        b']' => {
            // OSC: ends with BEL or ST (ESC \).
            let mut j = 2;
            while j < b.len() {
                if b[j] == 0x07 {
                    return osc(&b[2..j], j + 1);
                }
                if b[j] == 0x1b {
                    return match b.get(j + 1) {
                        None => Scan::Incomplete,
                        Some(b'\\') => osc(&b[2..j], j + 2),
                        Some(_) => Scan::Other(j),
                    };
                }
                j += 1;
            }
            Scan::Incomplete
        }
        _ => Scan::Other(2),
    }
}

fn osc(body: &[u8], len: usize) -> Scan {
    match body {
        b"10;?" => Scan::Query(len, Query::Foreground),
        b"11;?" => Scan::Query(len, Query::Background),
        _ => Scan::Other(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_query_is_answered_after_preceding_text() {
        let mut s = Screen::new(24, 80);
        let r = s.feed(b"hello\r\nab\x1b[6n");
        assert_eq!(r, b"\x1b[2;3R");
    }

    #[test]
    fn split_query_is_answered_when_complete() {
        let mut s = Screen::new(24, 80);
        assert!(s.feed(b"x\x1b[").is_empty());
        assert_eq!(s.feed(b"6n"), b"\x1b[1;2R");
        assert_eq!(
            s.feed(b"\x1b[c\x1b]11;?\x07"),
            b"\x1b[?62;22c\x1b]11;rgb:0000/0000/0000\x1b\\"
        );
    }

    #[test]
    fn rows_scrolled_off_are_kept_in_order() {
        let mut s = Screen::with_scrollback(3, 20, 100);
        for i in 1..=7 {
            s.feed(format!("line {i}\r\n").as_bytes());
        }
        assert_eq!(s.text(), "line 6\nline 7");
        assert_eq!(
            s.scrollback_text(),
            "line 1\nline 2\nline 3\nline 4\nline 5"
        );
        assert_eq!(s.text(), "line 6\nline 7", "the view is back at the bottom");
        assert_eq!(Screen::new(3, 20).scrollback_text(), "");
    }

    #[test]
    fn text_is_rendered_not_raw() {
        let mut s = Screen::new(5, 20);
        s.feed(b"\x1b[1;31mred\x1b[0m   \r\nabc\x1b[2Dz\r\n\r\n");
        assert_eq!(s.text(), "red\nazc");
    }
}
