//! A command's output as text, the way a terminal shows it line by line.
//!
//! [`OutputBuffer`] keeps the raw bytes a task printed (the newest [`OUTPUT_LIMIT`]
//! bytes, counting what was dropped), and [`render`] turns them into text:
//!
//! - escape sequences are removed (CSI, OSC, DCS/SOS/PM/APC, two- and three-byte ESC
//!   sequences), except the few that move the cursor along a line: `CSI n C` / `CSI n D`
//!   (forward / back), `CSI n G` (to column n) and `CSI n K` (erase in line), which are
//!   applied, so a progress bar redrawn with `\r` or `\r ESC[K` ends as the terminal
//!   showed it last;
//! - a carriage return goes back to column 0 and what follows overwrites the line
//!   (`"abc\rX"` is `"Xbc"`), a backspace moves one column back;
//! - a tab is kept as a tab character (it spans the columns up to the next multiple of
//!   8, so text written over it later lands where a terminal would put it);
//! - bytes that are not UTF-8 are replaced with U+FFFD and counted;
//! - trailing spaces on a line and trailing blank lines are dropped.
//!
//! The rules follow ECMA-48 for the sequences and xterm's behaviour for tabs (stops
//! every 8 columns) and for carriage return.

/// Most output bytes kept for one task, 1 MiB: beyond it the oldest bytes are dropped
/// and the record says so.
pub const OUTPUT_LIMIT: usize = 1024 * 1024;

/// The raw output of one task: the newest `limit` bytes, and how many came in all.
#[derive(Debug, Clone)]
pub struct OutputBuffer {
    bytes: Vec<u8>,
    total: u64,
    limit: usize,
}

impl Default for OutputBuffer {
    fn default() -> Self {
        Self::new(OUTPUT_LIMIT)
    }
}

impl OutputBuffer {
    /// An empty buffer that keeps the newest `limit` bytes.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            total: 0,
            limit,
        }
    }

    /// Appends output.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.limit {
            // Drop in large steps so a long stream costs O(n), not O(n²).
            let excess = self.bytes.len() - self.limit;
            let cut = excess.max(self.limit / 4).min(self.bytes.len());
            self.bytes.drain(..cut);
        }
    }

    /// Forgets everything (the total too).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.total = 0;
    }

    /// The bytes kept.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes received in all, kept or not.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes dropped from the start.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.total - self.bytes.len() as u64
    }

    /// Renders the kept bytes ([`render`]), with notes for what was cut or replaced.
    #[must_use]
    pub fn render(&self) -> Rendered {
        let mut r = render(&self.bytes);
        let dropped = self.dropped();
        if dropped > 0 {
            r.notes.insert(
                0,
                format!(
                    "output cut: the first {dropped} of {} bytes were dropped (limit {} bytes)",
                    self.total, self.limit
                ),
            );
        }
        r.dropped_bytes = dropped;
        r
    }
}

/// Rendered output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// The text, lines joined with `\n`.
    pub text: String,
    /// Invalid UTF-8 sequences replaced with U+FFFD.
    pub invalid_utf8: usize,
    /// Bytes dropped from the start (set by [`OutputBuffer::render`]).
    pub dropped_bytes: u64,
    /// What a reader should know: output cut, bytes replaced.
    pub notes: Vec<String>,
}

/// One cell of a rendered line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// A character written there.
    Char(char),
    /// Never written (the cursor moved past it).
    Blank,
    /// A tab character.
    Tab,
    /// Covered by the tab to its left.
    TabFill,
}

#[derive(Default)]
struct Line {
    cells: Vec<Cell>,
    col: usize,
}

impl Line {
    fn put(&mut self, cell: Cell) {
        if self.cells.len() <= self.col {
            self.cells.resize(self.col + 1, Cell::Blank);
        }
        // Writing over part of a tab turns the rest of it into blanks.
        if matches!(self.cells[self.col], Cell::Tab | Cell::TabFill) {
            let mut i = self.col + 1;
            while i < self.cells.len() && self.cells[i] == Cell::TabFill {
                self.cells[i] = Cell::Blank;
                i += 1;
            }
        }
        self.cells[self.col] = cell;
        self.col += 1;
    }

    fn tab(&mut self) {
        let next = (self.col / 8 + 1) * 8;
        self.put(Cell::Tab);
        while self.col < next {
            self.put(Cell::TabFill);
        }
    }

    /// `CSI n K`: 0 from the cursor to the end, 1 from the start to the cursor, 2 all.
    fn erase(&mut self, mode: usize) {
        match mode {
            0 => self.cells.truncate(self.col),
            1 => {
                let end = (self.col + 1).min(self.cells.len());
                for c in &mut self.cells[..end] {
                    *c = Cell::Blank;
                }
            }
            _ => self.cells.clear(),
        }
    }

    fn text(&self) -> String {
        // Trailing spaces do not show on a terminal: they are dropped (tabs are kept).
        let end = self
            .cells
            .iter()
            .rposition(|c| !matches!(c, Cell::Blank | Cell::TabFill | Cell::Char(' ')))
            .map_or(0, |i| i + 1);
        let mut s = String::with_capacity(end);
        for c in &self.cells[..end] {
            match c {
                Cell::Char(ch) => s.push(*ch),
                Cell::Blank => s.push(' '),
                Cell::Tab => s.push('\t'),
                Cell::TabFill => {}
            }
        }
        s
    }
}

/// Decodes `raw` as UTF-8, replacing invalid sequences with U+FFFD; returns the text
/// and how many sequences were replaced.
fn decode(raw: &[u8]) -> (String, usize) {
    let mut out = String::with_capacity(raw.len());
    let mut invalid = 0;
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
            invalid += 1;
        }
    }
    (out, invalid)
}

/// Renders raw terminal output as text (see the module docs for the rules).
#[must_use]
pub fn render(raw: &[u8]) -> Rendered {
    let (text, invalid_utf8) = decode(raw);
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = Vec::new();
    let mut line = Line::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\n' => lines.push(std::mem::take(&mut line).text()),
            '\r' => line.col = 0,
            '\t' => line.tab(),
            '\u{8}' => line.col = line.col.saturating_sub(1),
            '\u{1b}' => i = escape(&chars, i, &mut line),
            c if c.is_control() => {}
            c => line.put(Cell::Char(c)),
        }
    }
    lines.push(line.text());
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let mut notes = Vec::new();
    if invalid_utf8 > 0 {
        notes.push(format!(
            "{invalid_utf8} invalid UTF-8 sequence(s) replaced with U+FFFD"
        ));
    }
    Rendered {
        text: lines.join("\n"),
        invalid_utf8,
        dropped_bytes: 0,
        notes,
    }
}

/// Handles the escape sequence whose ESC was just before `chars[i]`; returns the index
/// after it.
fn escape(chars: &[char], mut i: usize, line: &mut Line) -> usize {
    let Some(&kind) = chars.get(i) else {
        return i;
    };
    i += 1;
    match kind {
        '[' => {
            let start = i;
            while i < chars.len() && ('\u{20}'..='\u{3f}').contains(&chars[i]) {
                i += 1;
            }
            let Some(&fin) = chars.get(i) else {
                return i;
            };
            let params: String = chars[start..i].iter().collect();
            i += 1;
            let n = |default: usize| -> usize {
                params
                    .split(';')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .filter(|v| *v > 0 || default == 0)
                    .unwrap_or(default)
            };
            if params.starts_with(['?', '>', '<', '=']) {
                return i;
            }
            match fin {
                'C' => line.col += n(1),
                'D' => line.col = line.col.saturating_sub(n(1)),
                'G' => line.col = n(1) - 1,
                'K' => line.erase(n(0)),
                _ => {}
            }
            i
        }
        // OSC, DCS, SOS, PM, APC: up to BEL (OSC only) or ST.
        ']' | 'P' | 'X' | '^' | '_' => {
            while i < chars.len() {
                if kind == ']' && chars[i] == '\u{7}' {
                    return i + 1;
                }
                if chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'\\') {
                    return i + 2;
                }
                i += 1;
            }
            i
        }
        // Designate character set and similar: one more character.
        '(' | ')' | '*' | '+' | '#' | '%' | ' ' => i + 1,
        _ => i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &[u8]) -> String {
        render(s).text
    }

    #[test]
    fn tabs_are_kept() {
        assert_eq!(r(b"a\tb\r\nc\t\td\r\n"), "a\tb\nc\t\td");
    }

    #[test]
    fn carriage_return_overwrites_as_a_terminal_shows_it() {
        assert_eq!(r(b"abc\rX\r\n"), "Xbc");
        assert_eq!(r(b"progress 10%\rprogress 100%\r\n"), "progress 100%");
        assert_eq!(r(b"downloading...\r\x1b[Kdone\r\n"), "done");
    }

    #[test]
    fn colours_and_titles_are_removed() {
        assert_eq!(
            r(b"\x1b[1;31mred\x1b[0m \x1b]0;title\x07plain\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\r\n"),
            "red plainlink"
        );
        assert_eq!(r(b"\x1b(Bok\x1b[?25l\r\n"), "ok");
    }

    #[test]
    fn text_over_a_tab_lands_where_a_terminal_puts_it() {
        assert_eq!(r(b"\tx\rab\r\n"), "ab      x");
    }

    #[test]
    fn backspace_and_cursor_moves() {
        assert_eq!(r(b"abc\x08\x08X\r\n"), "aXc");
        assert_eq!(r(b"a\x1b[3Cb\r\n"), "a   b");
        assert_eq!(r(b"abcdef\x1b[3G!\r\n"), "ab!def");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let out = render(b"ok \xff\xfe end\r\n\xc3\x28");
        assert_eq!(out.text, "ok \u{fffd}\u{fffd} end\n\u{fffd}(");
        assert_eq!(out.invalid_utf8, 3);
        assert!(out.notes[0].contains("3 invalid UTF-8"), "{:?}", out.notes);
    }

    #[test]
    fn trailing_blank_lines_are_dropped_inner_ones_kept() {
        assert_eq!(r(b"a\r\n\r\nb\r\n\r\n\r\n"), "a\n\nb");
        assert_eq!(r(b""), "");
    }

    #[test]
    fn buffer_keeps_the_newest_bytes_and_says_what_was_cut() {
        let mut b = OutputBuffer::new(8);
        b.push(b"0123456789");
        b.push(b"abcdef\n");
        assert!(b.bytes().len() <= 8);
        assert!(b.bytes().ends_with(b"abcdef\n"));
        assert_eq!(b.total(), 17);
        let out = b.render();
        assert_eq!(out.dropped_bytes, 17 - b.bytes().len() as u64);
        assert!(
            out.notes[0].starts_with("output cut: the first"),
            "{:?}",
            out.notes
        );
    }
}
