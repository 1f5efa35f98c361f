//! `fake-agent`: a small, deterministic stand-in for an AI coding agent CLI.
//!
//! Tests and benchmarks drive it through a pseudo-terminal exactly like a real
//! agent TUI. Raw mode comes from running `stty`; the window size from the
//! `TIOCGWINSZ` ioctl (`libc`). It is built as the `fake-agent` binary and is also
//! `architect fake-agent`.
//!
//! # Flags
//!
//! * `--work-ms N`   how long a prompt works (default 300).
//! * `--need-cols N` minimum terminal width (default 0 = any).
//! * `--ask-every N` every Nth prompt asks the permission question (default 0 = never).
//! * `--no-cpr`      skip the start-up terminal queries (`ESC[6n` and `ESC[c`).
//! * `--limited-for-ms N` for N ms after start, every prompt ends at once with
//!   `✗ usage limit reached, try again in <s>s` (the seconds left) instead of a reply.
//! * `--help`        print the usage and exit.
//!
//! # Screen contract
//!
//! The profile `config/profiles/fake-agent.toml` and the tests match these
//! strings; change them together. Every frame is built as one string and
//! written with a single `write_all` + flush; lines end with `\r\n`.
//!
//! * Start-up: `stty raw -echo` (if that fails, stdin is not a terminal: print
//!   `error: stdin is not a terminal (stty raw -echo failed)` and exit 3),
//!   enable bracketed paste, print the banner
//!   `Fake Agent 1.0 (architect tools/fake-agent)` in bold colour, then (unless
//!   `--no-cpr`) ask `ESC[6n` + `ESC[c`. Without an `ESC[<row>;<col>R` reply
//!   within 5 s (or if input ends first) it prints
//!   `error: no reply to cursor position query (ESC[6n)` and exits 3.
//!   Device-attribute replies `ESC[?...c` are discarded. The banner stays on
//!   screen as the first history line.
//! * Too narrow (width < `--need-cols`, polled every 200 ms):
//!   `terminal too narrow: need N columns, have M`, keys ignored (Ctrl-D exits).
//! * Idle: clear screen, the last history lines that fit, then
//!   ```text
//!   ╭──────────────────────────────╮
//!   │ > typed text                 │
//!   ╰──────────────────────────────╯
//!     ? for shortcuts
//!   ```
//!   The box is as wide as the terminal; continuation rows of long or multi-line
//!   input start with `│   `. Backspace deletes, Ctrl-C clears the input,
//!   Ctrl-D exits 0, bracketed paste is taken as typed text (newlines kept),
//!   Enter submits (empty input is ignored). The prompt enters the history as
//!   `> <prompt>` (further lines of a multi-line prompt are indented by two
//!   spaces). History lines are cut to the terminal width.
//! * Busy: history, then one spinner line `<frame> Working… (esc to interrupt)`
//!   with frames `⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏` advancing every 80 ms. Esc (a lone `0x1b` not
//!   followed by `[` within 50 ms) or Ctrl-C interrupts: history gets
//!   `● Interrupted.` and it goes back to idle. Other keys are ignored.
//! * Waiting for permission: history, then as the last line
//!   `Allow fake-agent to run "touch fake.txt"? (y/n)`. `y` continues, `n` adds
//!   `● Denied.` and goes back to idle; any other key is ignored.
//! * Done: history gets `● done: <prompt without directives>` (words joined by
//!   single spaces; `● done: ok` if nothing is left), then `line 1` … `line n`
//!   for `lines=n`, and it goes back to idle.
//!
//! # Directives (whitespace-separated words in the prompt)
//!
//! `sleep=<ms>` works that long, `ask` asks the permission question after
//! working, `crash` prints `fatal: crashed on purpose` after working (and after
//! the question, if any) and exits 42, `hang` works until interrupted,
//! `lines=<n>` adds n lines after the reply (at most 1,000,000). A malformed `sleep=`/`lines=` word
//! is ordinary text. `run: <command>` (to the next `run:`, `fetch:` or `edit:`, or the end
//! of the prompt, one or more times) asks `Allow fake-agent to run "<command>"? (y/n)` for
//! each command in turn after working: `y` adds `● ran: <command>`, `n` adds
//! `● denied: <command>`, and after the last one the task completes as usual. `fetch: <url>`
//! and `edit: <path>` ask `Allow fake-agent to fetch "<url>"? (y/n)` and
//! `… to edit "<path>"? …` the same way (`y` adds `● fetched: …` / `● edited: …`). `deaf` makes Enter do nothing: the prompt
//! stays in the box (a prompt the agent provably did not take).
//!
//! # Exit statuses
//!
//! 0 on Ctrl-D or end of input (read returns 0 or fails), 2 on bad flags,
//! 3 on a missing cursor report or no terminal, 42 on `crash`. SIGHUP keeps its
//! default action (the process is killed by the signal): the standard library
//! has no way to catch it without `unsafe`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

const BANNER: &str = "Fake Agent 1.0 (architect tools/fake-agent)";
const HINT: &str = "? for shortcuts";
const WORKING: &str = "Working… (esc to interrupt)";
const QUESTION: &str = "Allow fake-agent to run \"touch fake.txt\"? (y/n)";
const NO_CURSOR_REPORT: &str = "error: no reply to cursor position query (ESC[6n)";
const NOT_A_TERMINAL: &str = "error: stdin is not a terminal (stty raw -echo failed)";
const CRASH_MESSAGE: &str = "fatal: crashed on purpose";
const SPINNER_FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

const SPINNER_INTERVAL_MS: u64 = 80;
const SPINNER_INTERVAL: Duration = Duration::from_millis(SPINNER_INTERVAL_MS);
const SIZE_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a lone ESC (or any incomplete sequence) waits for its next byte.
const ESCAPE_TIMEOUT: Duration = Duration::from_millis(50);
const CURSOR_REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Size assumed when `stty size` fails or reports zeros.
const DEFAULT_SIZE: (u16, u16) = (24, 80);
/// Upper bound for `lines=<n>`, so a typo cannot exhaust memory.
const MAX_EXTRA_LINES: u64 = 1_000_000;

const EXIT_BAD_USAGE: i32 = 2;
const EXIT_NO_TERMINAL: i32 = 3;
const EXIT_CRASH: i32 = 42;

// Escape sequences.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";
const CLEAR_LINE: &str = "\x1b[2K";
const CURSOR_POSITION_QUERY: &str = "\x1b[6n";
const DEVICE_ATTRIBUTES_QUERY: &str = "\x1b[c";
const BRACKETED_PASTE_ON: &str = "\x1b[?2004h";
const BRACKETED_PASTE_OFF: &str = "\x1b[?2004l";
const PASTE_START: &[u8] = b"200~";
const PASTE_END: &[u8] = b"\x1b[201~";
const RESET: &str = "\x1b[0m";
const STYLE_BANNER: &str = "\x1b[1;35m";
const STYLE_BORDER: &str = "\x1b[36m";
const STYLE_PROMPT: &str = "\x1b[90m";
const STYLE_BULLET: &str = "\x1b[32m";
const STYLE_SPINNER: &str = "\x1b[33m";
const STYLE_QUESTION: &str = "\x1b[1;33m";
const STYLE_HINT: &str = "\x1b[2m";

const USAGE: &str = "\
usage: fake-agent [--work-ms N] [--need-cols N] [--ask-every N] [--no-cpr] [--limited-for-ms N] [--help]

A deterministic fake agent TUI for architect's tests and benchmarks.

  --work-ms N    how long a prompt works, in milliseconds (default 300)
  --need-cols N  wait until the terminal is at least N columns wide (default 0)
  --ask-every N  every Nth prompt asks a permission question (default 0 = never)
  --no-cpr       do not query the cursor position / device attributes at start-up
  --limited-for-ms N  for N ms after start every prompt hits a usage limit
  --help         show this help

Prompt directives: sleep=<ms>  ask  crash  hang  lines=<n>  deaf  run: <command>";

/// Command-line options.
struct Options {
    work_ms: u64,
    need_cols: u16,
    ask_every: u64,
    query_terminal: bool,
    limited_for_ms: u64,
}

/// Parses the flags; `Ok(None)` means `--help` was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        work_ms: 300,
        need_cols: 0,
        ask_every: 0,
        query_terminal: true,
        limited_for_ms: 0,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--no-cpr" => options.query_terminal = false,
            "--work-ms" | "--need-cols" | "--ask-every" | "--limited-for-ms" => {
                let value = inline_value
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value"))?;
                let number: u64 = value
                    .parse()
                    .map_err(|_| format!("{flag}: not a number: {value:?}"))?;
                match flag.as_str() {
                    "--work-ms" => options.work_ms = number,
                    "--limited-for-ms" => options.limited_for_ms = number,
                    "--need-cols" => {
                        options.need_cols = u16::try_from(number)
                            .map_err(|_| format!("{flag}: too large: {number}"))?;
                    }
                    _ => options.ask_every = number,
                }
            }
            _ => return Err(format!("unknown argument: {arg:?}")),
        }
    }
    Ok(Some(options))
}

// ---------------------------------------------------------------------------
// Terminal helpers (via `stty`, with stdin inherited so it acts on our tty).

/// Runs `stty` with `args` on our stdin; true if it succeeded.
fn stty(args: &[&str]) -> bool {
    Command::new("stty")
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The terminal size as (rows, cols) from the `TIOCGWINSZ` ioctl on stdin, or `None`
/// when stdin is not a terminal or reports zeros. (An ioctl, not `stty size`: the
/// benchmark runs 50 of these agents polling every 200 ms.)
fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid struct we pass.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

// ---------------------------------------------------------------------------
// Input: a reader thread feeding raw bytes, and a parser turning them into keys.

/// What the stdin reader thread reports.
enum Input {
    Bytes(Vec<u8>),
    /// End of input: read returned 0 or failed (e.g. the pty was closed).
    Closed,
}

/// Reads stdin on a thread so the main loop can wait with a timeout.
fn spawn_stdin_reader() -> Receiver<Input> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buffer = [0u8; 4096];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if sender.send(Input::Bytes(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.send(Input::Closed);
    });
    receiver
}

/// A decoded keystroke (or terminal reply).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key {
    /// Typed or pasted text; pasted newlines arrive as `Char('\n')`.
    Char(char),
    Enter,
    Backspace,
    CtrlC,
    CtrlD,
    Escape,
    /// A cursor position report `ESC[<row>;<col>R`.
    CursorReport,
}

/// Turns raw input bytes into [`Key`]s, keeping incomplete sequences pending.
#[derive(Default)]
struct InputParser {
    pending: Vec<u8>,
    /// When the current pending (incomplete) bytes arrived.
    pending_since: Option<Instant>,
    in_paste: bool,
    /// The last pasted byte was `\r`, so a following `\n` belongs to it.
    paste_after_cr: bool,
}

impl InputParser {
    /// Adds bytes read at `now` and decodes what is complete.
    fn feed(&mut self, bytes: &[u8], now: Instant, keys: &mut Vec<Key>) {
        self.pending.extend_from_slice(bytes);
        let consumed = self.parse(false, keys);
        self.note_pending(now, consumed > 0);
    }

    /// When pending bytes will be taken at face value (a lone ESC becomes Esc).
    fn deadline(&self) -> Option<Instant> {
        self.pending_since.map(|since| since + ESCAPE_TIMEOUT)
    }

    /// Decodes pending bytes whose wait for more input has run out.
    fn expire(&mut self, now: Instant, keys: &mut Vec<Key>) {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.parse(true, keys);
            self.note_pending(now, true);
        }
    }

    fn note_pending(&mut self, now: Instant, changed: bool) {
        if self.pending.is_empty() {
            self.pending_since = None;
        } else if changed || self.pending_since.is_none() {
            self.pending_since = Some(now);
        }
    }

    /// Decodes as much of `pending` as possible; with `force`, incomplete
    /// sequences are decoded (or dropped) instead of waited for. Returns the
    /// number of bytes consumed.
    fn parse(&mut self, force: bool, keys: &mut Vec<Key>) -> usize {
        let bytes = std::mem::take(&mut self.pending);
        let mut position = 0;
        while position < bytes.len() {
            let rest = &bytes[position..];
            let step = if self.in_paste {
                self.parse_pasted(rest, force, keys)
            } else {
                self.parse_key(rest, force, keys)
            };
            match step {
                Some(length) => position += length,
                None => break,
            }
        }
        self.pending = bytes[position..].to_vec();
        position
    }

    /// Decodes one key at the start of `rest`; returns its length in bytes,
    /// or `None` if it is incomplete (never with `force`).
    fn parse_key(&mut self, rest: &[u8], force: bool, keys: &mut Vec<Key>) -> Option<usize> {
        let key = match rest[0] {
            0x1b => return self.parse_escape(rest, force, keys),
            b'\r' | b'\n' => Key::Enter,
            0x7f | 0x08 => Key::Backspace,
            0x03 => Key::CtrlC,
            0x04 => Key::CtrlD,
            b'\t' => Key::Char(' '),
            byte if byte < 0x20 => return Some(1),
            _ => {
                let (character, length) = decode_char(rest, force)?;
                keys.push(Key::Char(character));
                return Some(length);
            }
        };
        keys.push(key);
        Some(1)
    }

    /// Decodes a sequence starting with ESC.
    fn parse_escape(&mut self, rest: &[u8], force: bool, keys: &mut Vec<Key>) -> Option<usize> {
        match rest.get(1) {
            None if force => {
                keys.push(Key::Escape);
                Some(1)
            }
            None => None,
            Some(b'[') => match csi_length(&rest[2..]) {
                Some(length) => {
                    self.handle_csi(&rest[2..2 + length], keys);
                    Some(2 + length)
                }
                // An unfinished CSI that never completed: drop it.
                None if force => Some(rest.len()),
                None => None,
            },
            // SS3 keys (F1-F4, application-mode arrows): ignored.
            Some(b'O') if rest.len() >= 3 => Some(3),
            Some(b'O') if !force => None,
            // ESC followed by anything else is an Esc press; the next byte is
            // decoded on its own.
            Some(_) => {
                keys.push(Key::Escape);
                Some(1)
            }
        }
    }

    /// Acts on a complete CSI sequence (the bytes after `ESC[`).
    fn handle_csi(&mut self, body: &[u8], keys: &mut Vec<Key>) {
        let Some((&final_byte, parameters)) = body.split_last() else {
            return;
        };
        if body == PASTE_START {
            self.in_paste = true;
            self.paste_after_cr = false;
        } else if final_byte == b'R'
            && !parameters.is_empty()
            && parameters.iter().all(|&b| b.is_ascii_digit() || b == b';')
        {
            keys.push(Key::CursorReport);
        }
        // Everything else (device attributes `ESC[?...c`, a stray paste end,
        // arrows, function keys) is discarded.
    }

    /// Decodes one unit of pasted text; returns its length in bytes.
    fn parse_pasted(&mut self, rest: &[u8], force: bool, keys: &mut Vec<Key>) -> Option<usize> {
        let after_cr = std::mem::replace(&mut self.paste_after_cr, false);
        match rest[0] {
            0x1b if rest.starts_with(PASTE_END) => {
                self.in_paste = false;
                return Some(PASTE_END.len());
            }
            0x1b if PASTE_END.starts_with(rest) && !force => {
                self.paste_after_cr = after_cr;
                return None;
            }
            b'\r' => {
                self.paste_after_cr = true;
                keys.push(Key::Char('\n'));
            }
            b'\n' if !after_cr => keys.push(Key::Char('\n')),
            b'\t' => keys.push(Key::Char(' ')),
            byte if byte < 0x20 || byte == 0x7f => {}
            _ => {
                let Some((character, length)) = decode_char(rest, force) else {
                    self.paste_after_cr = after_cr;
                    return None;
                };
                keys.push(Key::Char(character));
                return Some(length);
            }
        }
        Some(1)
    }
}

/// Length of a CSI body (parameters, intermediates and final byte), or `None`
/// if the final byte has not arrived yet. A malformed body ends before the
/// offending byte.
fn csi_length(body: &[u8]) -> Option<usize> {
    for (index, &byte) in body.iter().enumerate() {
        match byte {
            0x20..=0x3f => {}
            0x40..=0x7e => return Some(index + 1),
            _ => return Some(index),
        }
    }
    None
}

/// Decodes one UTF-8 character at the start of `bytes` (invalid input becomes
/// U+FFFD); `None` if it is incomplete and `force` is false.
fn decode_char(bytes: &[u8], force: bool) -> Option<(char, usize)> {
    const REPLACEMENT: (char, usize) = (char::REPLACEMENT_CHARACTER, 1);
    let length = match bytes[0] {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return Some(REPLACEMENT),
    };
    if bytes.len() < length {
        return force.then_some(REPLACEMENT);
    }
    match std::str::from_utf8(&bytes[..length]) {
        Ok(text) => text.chars().next().map(|character| (character, length)),
        Err(_) => Some(REPLACEMENT),
    }
}

// ---------------------------------------------------------------------------
// The agent: conversation history, modes, rendering.

/// One entry of the conversation history.
enum HistoryLine {
    Banner,
    /// A submitted prompt, shown as `> <prompt>`.
    Prompt(String),
    /// An agent message, shown as `● <text>`.
    Reply(String),
    Plain(String),
}

/// Splits the `run:`, `fetch:` and `edit:` segments off a prompt: the text before the
/// first one, and each action (verb, whitespace-normalised text) in order.
fn split_actions(prompt: &str) -> (&str, std::collections::VecDeque<(&'static str, String)>) {
    const MARKERS: [(&str, &str); 3] = [("run:", "run"), ("fetch:", "fetch"), ("edit:", "edit")];
    let next = |from: usize| {
        MARKERS
            .iter()
            .filter_map(|(m, verb)| prompt[from..].find(m).map(|i| (from + i, m.len(), *verb)))
            .min_by_key(|(at, _, _)| *at)
    };
    let mut actions = std::collections::VecDeque::new();
    let Some(mut at) = next(0) else {
        return (prompt, actions);
    };
    let head = &prompt[..at.0];
    loop {
        let start = at.0 + at.1;
        let following = next(start);
        let end = following.map_or(prompt.len(), |f| f.0);
        let text = prompt[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() {
            actions.push_back((at.2, text));
        }
        match following {
            Some(f) => at = f,
            None => return (head, actions),
        }
    }
}

/// What a submitted prompt asks for, from its directives.
struct Task {
    /// The prompt with directives removed, or `ok`.
    reply: String,
    /// How long to work; `None` for `hang`.
    work: Option<Duration>,
    ask: bool,
    crash: bool,
    extra_lines: u64,
    /// Actions to ask permission for, one question each (`run:`, `fetch:`, `edit:`
    /// directives): the verb (`run`, `fetch` or `edit`) and what it acts on.
    commands: std::collections::VecDeque<(&'static str, String)>,
}

impl Task {
    fn from_prompt(prompt: &str, default_work_ms: u64) -> Task {
        // `run: <command>`, `fetch: <url>` and `edit: <path>` segments (to the next
        // directive of the three or the end) are actions to ask for.
        let (prompt, commands) = split_actions(prompt);
        let mut words = Vec::new();
        let mut work_ms = default_work_ms;
        let (mut ask, mut crash, mut hang) = (false, false, false);
        let mut extra_lines = 0;
        for word in prompt.split_whitespace() {
            let number = |prefix: &str| word.strip_prefix(prefix)?.parse::<u64>().ok();
            match word {
                "ask" => ask = true,
                "crash" => crash = true,
                "hang" => hang = true,
                _ => {
                    if let Some(ms) = number("sleep=") {
                        work_ms = ms;
                    } else if let Some(count) = number("lines=") {
                        extra_lines = count.min(MAX_EXTRA_LINES);
                    } else {
                        words.push(word);
                    }
                }
            }
        }
        Task {
            reply: if words.is_empty() {
                "ok".to_string()
            } else {
                words.join(" ")
            },
            work: (!hang).then(|| Duration::from_millis(work_ms)),
            ask: ask || !commands.is_empty(),
            crash,
            extra_lines,
            commands,
        }
    }
}

/// A prompt being worked on.
struct Busy {
    task: Task,
    started: Instant,
    /// When the work is done; `None` for `hang`.
    until: Option<Instant>,
    /// Spinner frames shown so far (the glyph is this modulo the frame count).
    frame: u64,
    next_frame: Instant,
    /// 1-based screen row of the spinner line in the last full frame.
    spinner_row: usize,
}

enum Mode {
    Idle,
    /// Waiting for the terminal to reach `--need-cols` columns.
    TooNarrow,
    Busy(Busy),
    /// Waiting for `y`/`n` to the permission question.
    Asking(Task),
}

struct Agent {
    options: Options,
    output: File,
    input: Receiver<Input>,
    parser: InputParser,
    rows: u16,
    cols: u16,
    history: Vec<HistoryLine>,
    /// The text typed into the prompt box so far.
    typed: String,
    mode: Mode,
    prompts_submitted: u64,
    /// A full redraw is due.
    dirty: bool,
    /// How many screen rows the last full frame used.
    frame_rows: usize,
    /// When the program started (for `--limited-for-ms`).
    born: Instant,
}

impl Agent {
    /// Writes one complete frame. If the terminal is gone, exits 0.
    fn write(&mut self, frame: &str) {
        let written = self.output.write_all(frame.as_bytes());
        if written.and_then(|()| self.output.flush()).is_err() {
            restore_terminal();
            std::process::exit(0);
        }
    }

    /// Writes `farewell` (plus terminal clean-up) and exits with `code`.
    fn exit(&mut self, code: i32, farewell: &str) -> ! {
        let frame = format!("{farewell}{BRACKETED_PASTE_OFF}");
        let _ = self.output.write_all(frame.as_bytes());
        let _ = self.output.flush();
        restore_terminal();
        std::process::exit(code);
    }

    /// Exits with `code` after moving the cursor below the last frame.
    fn exit_below_frame(&mut self, code: i32) -> ! {
        let farewell = format!("\x1b[{};1H\r\n", self.frame_rows.max(1));
        self.exit(code, &farewell)
    }

    /// Banner, terminal queries and the wait for the cursor report. Returns
    /// keys typed meanwhile.
    fn start(&mut self) -> Vec<Key> {
        let mut frame = format!("{BRACKETED_PASTE_ON}{STYLE_BANNER}{BANNER}{RESET}\r\n");
        if self.options.query_terminal {
            frame.push_str(CURSOR_POSITION_QUERY);
            frame.push_str(DEVICE_ATTRIBUTES_QUERY);
        }
        self.write(&frame);
        let mut typed_meanwhile = Vec::new();
        if self.options.query_terminal {
            self.await_cursor_report(&mut typed_meanwhile);
        }
        self.history.push(HistoryLine::Banner);
        self.enter_idle();
        typed_meanwhile
    }

    fn await_cursor_report(&mut self, typed_meanwhile: &mut Vec<Key>) {
        let deadline = Instant::now() + CURSOR_REPORT_TIMEOUT;
        let mut keys = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.exit(EXIT_NO_TERMINAL, &format!("{NO_CURSOR_REPORT}\r\n"));
            }
            match self.input.recv_timeout(deadline - now) {
                Ok(Input::Bytes(bytes)) => self.parser.feed(&bytes, Instant::now(), &mut keys),
                // The reply can no longer come.
                Ok(Input::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    self.exit(EXIT_NO_TERMINAL, &format!("{NO_CURSOR_REPORT}\r\n"))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let answered = keys.contains(&Key::CursorReport);
            typed_meanwhile.extend(keys.drain(..).filter(|&key| key != Key::CursorReport));
            if answered {
                return;
            }
        }
    }

    /// The main loop: keys, work progress, size polling, redraws.
    fn run(&mut self, mut keys: Vec<Key>) -> ! {
        let mut next_size_poll = Instant::now();
        loop {
            for key in std::mem::take(&mut keys) {
                self.handle_key(key);
            }
            let now = Instant::now();
            if now >= next_size_poll {
                self.poll_size();
                next_size_poll = now + SIZE_POLL_INTERVAL;
            }
            self.tick(now);
            if self.dirty {
                self.redraw();
            }

            let deadline = [
                Some(next_size_poll),
                self.parser.deadline(),
                self.busy_deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_size_poll);
            let timeout = deadline.saturating_duration_since(Instant::now());
            match self.input.recv_timeout(timeout) {
                Ok(Input::Bytes(bytes)) => self.parser.feed(&bytes, Instant::now(), &mut keys),
                Ok(Input::Closed) | Err(RecvTimeoutError::Disconnected) => self.exit_below_frame(0),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.parser.expire(Instant::now(), &mut keys);
        }
    }

    /// The next spinner frame or end of work, while busy.
    fn busy_deadline(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Busy(busy) => Some(
                busy.until
                    .map_or(busy.next_frame, |until| until.min(busy.next_frame)),
            ),
            _ => None,
        }
    }

    fn handle_key(&mut self, key: Key) {
        match &self.mode {
            Mode::Idle => match key {
                Key::Char(character) => {
                    self.typed.push(character);
                    self.dirty = true;
                }
                Key::Backspace => {
                    self.dirty |= self.typed.pop().is_some();
                }
                Key::CtrlC => {
                    self.typed.clear();
                    self.dirty = true;
                }
                Key::Enter => self.submit(),
                Key::CtrlD => self.exit_below_frame(0),
                Key::Escape | Key::CursorReport => {}
            },
            Mode::TooNarrow => {
                if key == Key::CtrlD {
                    self.exit_below_frame(0);
                }
            }
            Mode::Busy(_) => {
                if matches!(key, Key::Escape | Key::CtrlC) {
                    self.history
                        .push(HistoryLine::Reply("Interrupted.".to_string()));
                    self.enter_idle();
                }
            }
            Mode::Asking(_) => {
                if let Key::Char(answer @ ('y' | 'n')) = key {
                    if let Mode::Asking(mut task) = std::mem::replace(&mut self.mode, Mode::Idle) {
                        match task.commands.pop_front() {
                            // A `run:` question: record the answer, ask the next one.
                            Some((kind, command)) => {
                                let verb = match (answer, kind) {
                                    ('y', "fetch") => "fetched",
                                    ('y', "edit") => "edited",
                                    ('y', _) => "ran",
                                    _ => "denied",
                                };
                                self.history
                                    .push(HistoryLine::Reply(format!("{verb}: {command}")));
                                if task.commands.is_empty() {
                                    self.complete(&task);
                                } else {
                                    self.mode = Mode::Asking(task);
                                    self.dirty = true;
                                }
                            }
                            None if answer == 'y' => self.complete(&task),
                            None => {
                                self.history.push(HistoryLine::Reply("Denied.".to_string()));
                                self.enter_idle();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Enter in the prompt box: start working on the typed text.
    fn submit(&mut self) {
        if self.typed.trim().is_empty() || self.typed.split_whitespace().any(|w| w == "deaf") {
            return;
        }
        let prompt = std::mem::take(&mut self.typed);
        self.prompts_submitted += 1;
        let limit = Duration::from_millis(self.options.limited_for_ms);
        if let Some(left) = limit.checked_sub(self.born.elapsed()) {
            self.history.push(HistoryLine::Prompt(prompt));
            self.history.push(HistoryLine::Plain(format!(
                "✗ usage limit reached, try again in {}s",
                left.as_secs() + 1
            )));
            self.enter_idle();
            return;
        }
        let mut task = Task::from_prompt(&prompt, self.options.work_ms);
        if self.options.ask_every > 0
            && self
                .prompts_submitted
                .is_multiple_of(self.options.ask_every)
        {
            task.ask = true;
        }
        self.history.push(HistoryLine::Prompt(prompt));
        let now = Instant::now();
        self.mode = Mode::Busy(Busy {
            until: task.work.map(|work| now + work),
            task,
            started: now,
            frame: 0,
            next_frame: now + SPINNER_INTERVAL,
            spinner_row: 0,
        });
        self.dirty = true;
    }

    /// Advances the work: finishes it when due, else animates the spinner.
    fn tick(&mut self, now: Instant) {
        let Mode::Busy(busy) = &mut self.mode else {
            return;
        };
        if busy.until.is_some_and(|until| now >= until) {
            if let Mode::Busy(busy) = std::mem::replace(&mut self.mode, Mode::Idle) {
                if busy.task.ask {
                    self.mode = Mode::Asking(busy.task);
                    self.dirty = true;
                } else {
                    self.complete(&busy.task);
                }
            }
            return;
        }
        if now < busy.next_frame {
            return;
        }
        let elapsed_ms = u64::try_from((now - busy.started).as_millis()).unwrap_or(u64::MAX);
        busy.frame = elapsed_ms / SPINNER_INTERVAL_MS;
        busy.next_frame =
            busy.started + Duration::from_millis(SPINNER_INTERVAL_MS * (busy.frame + 1));
        if self.dirty {
            return; // the full redraw will show this frame
        }
        let update = format!(
            "\x1b[{};1H{CLEAR_LINE}{}",
            busy.spinner_row,
            spinner_line(busy.frame)
        );
        self.write(&update);
    }

    /// The work (and permission, if asked) is done: reply, or crash.
    fn complete(&mut self, task: &Task) {
        if task.crash {
            let rows = self.last_history_rows(usize::from(self.rows).saturating_sub(1));
            let mut farewell = String::from(CLEAR_SCREEN);
            for row in rows {
                farewell.push_str(&row);
                farewell.push_str("\r\n");
            }
            farewell.push_str(CRASH_MESSAGE);
            farewell.push_str("\r\n");
            self.exit(EXIT_CRASH, &farewell);
        }
        self.history
            .push(HistoryLine::Reply(format!("done: {}", task.reply)));
        for number in 1..=task.extra_lines {
            self.history
                .push(HistoryLine::Plain(format!("line {number}")));
        }
        self.enter_idle();
    }

    fn enter_idle(&mut self) {
        self.mode = if self.cols < self.options.need_cols {
            Mode::TooNarrow
        } else {
            Mode::Idle
        };
        self.dirty = true;
    }

    /// Re-reads the terminal size; a change means a full redraw.
    fn poll_size(&mut self) {
        let Some((rows, cols)) = terminal_size() else {
            return;
        };
        if (rows, cols) == (self.rows, self.cols) {
            return;
        }
        self.rows = rows;
        self.cols = cols;
        let narrow = cols < self.options.need_cols;
        match self.mode {
            Mode::Idle if narrow => self.mode = Mode::TooNarrow,
            Mode::TooNarrow if !narrow => self.mode = Mode::Idle,
            _ => {}
        }
        self.dirty = true;
    }

    /// Draws the whole screen for the current mode.
    fn redraw(&mut self) {
        let rows = usize::from(self.rows);
        let mut frame = String::from(CLEAR_SCREEN);
        let mut lines: Vec<String>;
        let mut cursor = None;
        match &self.mode {
            Mode::TooNarrow => {
                lines = vec![format!(
                    "terminal too narrow: need {} columns, have {}",
                    self.options.need_cols, self.cols
                )];
            }
            Mode::Idle => {
                let (box_lines, input_rows, last_input_chars) = self.prompt_box();
                lines = self.last_history_rows(rows.saturating_sub(box_lines.len()));
                // The cursor sits after the typed text: the top border is one
                // row below the history, the input rows follow it.
                cursor = Some((lines.len() + 1 + input_rows, 5 + last_input_chars));
                lines.extend(box_lines);
            }
            Mode::Busy(busy) => {
                let spinner = spinner_line(busy.frame);
                lines = self.last_history_rows(rows.saturating_sub(1));
                lines.push(spinner);
            }
            Mode::Asking(task) => {
                let question = match task.commands.front() {
                    Some((kind, command)) => {
                        format!("Allow fake-agent to {kind} \"{command}\"? (y/n)")
                    }
                    None => QUESTION.to_string(),
                };
                let question_rows = question
                    .chars()
                    .count()
                    .div_ceil(usize::from(self.cols).max(1));
                lines = self.last_history_rows(rows.saturating_sub(question_rows));
                lines.push(format!("{STYLE_QUESTION}{question}{RESET}"));
            }
        }
        frame.push_str(&lines.join("\r\n"));
        if let Some((row, column)) = cursor {
            let _ = write!(frame, "\x1b[{row};{column}H");
        }
        if let Mode::Busy(busy) = &mut self.mode {
            busy.spinner_row = lines.len();
        }
        self.frame_rows = lines.len();
        self.dirty = false;
        self.write(&frame);
    }

    /// The prompt box lines (borders, input rows, hint), the number of input
    /// rows, and the character count of the last input row.
    fn prompt_box(&self) -> (Vec<String>, usize, usize) {
        let cols = usize::from(self.cols);
        let text_width = cols.saturating_sub(6).max(1);
        let mut input_rows: Vec<String> = Vec::new();
        for line in self.typed.split('\n') {
            let characters: Vec<char> = line.chars().collect();
            if characters.is_empty() {
                input_rows.push(String::new());
            }
            for chunk in characters.chunks(text_width) {
                input_rows.push(chunk.iter().collect());
            }
        }
        // Keep at least the borders and the hint on screen.
        let max_input_rows = usize::from(self.rows).saturating_sub(3).max(1);
        let hidden = input_rows.len().saturating_sub(max_input_rows);
        let input_rows = &input_rows[hidden..];

        let rule = "─".repeat(cols.saturating_sub(2));
        let mut lines = vec![format!("{STYLE_BORDER}╭{rule}╮{RESET}")];
        for (index, text) in input_rows.iter().enumerate() {
            let marker = if index == 0 && hidden == 0 {
                "> "
            } else {
                "  "
            };
            let padding = " ".repeat(text_width.saturating_sub(text.chars().count()));
            lines.push(format!(
                "{STYLE_BORDER}│{RESET} {marker}{text}{padding} {STYLE_BORDER}│{RESET}"
            ));
        }
        lines.push(format!("{STYLE_BORDER}╰{rule}╯{RESET}"));
        lines.push(format!("  {STYLE_HINT}{HINT}{RESET}"));
        let last_chars = input_rows.last().map_or(0, |text| text.chars().count());
        (lines, input_rows.len(), last_chars)
    }

    /// The last `max_rows` screen rows of the history, styled and cut to the
    /// terminal width.
    fn last_history_rows(&self, max_rows: usize) -> Vec<String> {
        let width = usize::from(self.cols);
        let mut rows_reversed = Vec::new();
        for entry in self.history.iter().rev() {
            if rows_reversed.len() >= max_rows {
                break;
            }
            let entry_rows: Vec<String> = match entry {
                HistoryLine::Banner => {
                    vec![format!("{STYLE_BANNER}{}{RESET}", truncate(BANNER, width))]
                }
                HistoryLine::Prompt(prompt) => prompt
                    .split('\n')
                    .enumerate()
                    .map(|(index, line)| {
                        let marker = if index == 0 { "> " } else { "  " };
                        let text = truncate(&format!("{marker}{line}"), width);
                        format!("{STYLE_PROMPT}{text}{RESET}")
                    })
                    .collect(),
                HistoryLine::Reply(text) => {
                    let row = truncate(&format!("● {text}"), width);
                    let rest = row.strip_prefix('●').unwrap_or("");
                    vec![format!("{STYLE_BULLET}●{RESET}{rest}")]
                }
                HistoryLine::Plain(text) => vec![truncate(text, width)],
            };
            rows_reversed.extend(entry_rows.into_iter().rev());
        }
        rows_reversed.truncate(max_rows);
        rows_reversed.reverse();
        rows_reversed
    }
}

/// The busy line for spinner frame number `frame`.
fn spinner_line(frame: u64) -> String {
    let glyph = SPINNER_FRAMES[(frame % SPINNER_FRAMES.len() as u64) as usize];
    format!("{STYLE_SPINNER}{glyph}{RESET} {WORKING}")
}

/// The first `width` characters of `text`.
fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

fn restore_terminal() {
    stty(&["sane"]);
}

/// The real program: `fake-agent` as its own binary, and `architect fake-agent` (so the
/// demo and the benchmark always have it, whatever cargo built).
#[allow(dead_code)]
fn main() {
    run(std::env::args().skip(1));
}

/// Runs the fake agent with `args` (the flags, without the program name).
pub fn run(args: impl IntoIterator<Item = String>) {
    let options = match parse_args(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("fake-agent: {message}\n\n{USAGE}");
            std::process::exit(EXIT_BAD_USAGE);
        }
    };
    // A private handle on stdout, so each frame is one unbuffered write.
    let mut output = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(error) => {
            eprintln!("fake-agent: cannot use stdout: {error}");
            std::process::exit(1);
        }
    };
    if !stty(&["raw", "-echo"]) {
        let _ = output.write_all(format!("{NOT_A_TERMINAL}\r\n").as_bytes());
        std::process::exit(EXIT_NO_TERMINAL);
    }
    let (rows, cols) = terminal_size().unwrap_or(DEFAULT_SIZE);
    let mut agent = Agent {
        options,
        output,
        input: spawn_stdin_reader(),
        parser: InputParser::default(),
        rows,
        cols,
        history: Vec::new(),
        typed: String::new(),
        mode: Mode::Idle,
        prompts_submitted: 0,
        dirty: true,
        frame_rows: 0,
        born: Instant::now(),
    };
    let typed_meanwhile = agent.start();
    agent.run(typed_meanwhile);
}
