//! The recordings' I/O: one thread writes every session's files.
//!
//! A session's thread holds a [`SessionTape`] and hands it each chunk it reads from its
//! PTY, with the instant it was read. The tape never blocks and never does I/O: it sends
//! the bytes over a channel to the recorder thread ([`RecorderThread`]), and drops them
//! (counted, and marked in the file later) when more than [`QUEUE_MAX_BYTES`] are
//! already waiting there. The recorder thread decodes the bytes on UTF-8 boundaries
//! ([`Utf8Carry`], per session, so a character cut at a file boundary is whole in the
//! next file), writes events through a buffer, flushes every [`FLUSH_EVERY`] and when a
//! file closes, and prunes old files ([`super::retention`]) when it starts and every
//! [`PRUNE_EVERY`]. A file it cannot create or write is logged once (tracing) and no
//! longer written; nothing else is affected. Recordings are not made durable (no
//! `fsync`): they are for people to look at, not state.
//!
//! Secrets are redacted before they are written ([`crate::redact`]). The redactor reads
//! text, and a secret can arrive in two reads of the terminal, so output is held back
//! until its line ends and written as one event, redacted whole, at the time its last
//! piece was read. A line that does not end is written at the next flush (every
//! [`FLUSH_EVERY`]) or once [`HOLD_MAX_BYTES`] are held; a PEM private key block is held
//! until its `-----END` line (up to the same cap). Markers, resizes and the file's end
//! write what is held first, so events keep their order.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use super::asciicast::{CastWriter, Event, Header, Utf8Carry, VERSION};
use super::{idle_file, retention, task_file_name, RecordingSettings};

/// How often the recorder thread flushes the files it writes to.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How often it prunes old recordings (and once when it starts).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Output bytes that may wait for the recorder thread, all sessions together (16 MiB);
/// past that, output is not recorded until it catches up.
pub const QUEUE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The most output held back for redaction, in bytes (16 KiB: a PEM private key block
/// fits).
pub const HOLD_MAX_BYTES: usize = 16 * 1024;

/// The write buffer of each open file, in bytes.
const BUF_BYTES: usize = 64 * 1024;

/// The `TERM` every session program runs with (`session::runner` sets it), for players.
const TERM: &str = "xterm-256color";

/// What a tape tells the recorder thread.
#[derive(Debug)]
enum Msg {
    /// Start a file (closing the tape's current one): `file` relative to the directory.
    Open {
        tape: u64,
        file: PathBuf,
        header: Header,
        at: Instant,
    },
    /// Output read at `at`; `dropped_before` bytes before it were not recorded.
    Output {
        tape: u64,
        at: Instant,
        bytes: Vec<u8>,
        dropped_before: u64,
    },
    /// The terminal was resized.
    Resize {
        tape: u64,
        at: Instant,
        cols: u16,
        rows: u16,
    },
    /// Close the tape's file.
    Close { tape: u64 },
    /// The tape is gone: close its file and forget it.
    Gone { tape: u64 },
    /// New settings (a config reload).
    Settings(RecordingSettings),
    /// Flush everything and end the thread.
    Shutdown,
}

#[derive(Debug)]
struct Shared {
    enabled: AtomicBool,
    /// Output bytes sent and not yet handled by the thread.
    queued: AtomicUsize,
    /// Most bytes that may be queued ([`QUEUE_MAX_BYTES`]).
    queue_max: usize,
    next_tape: AtomicU64,
}

impl Shared {
    fn new(enabled: bool, queue_max: usize) -> Self {
        Self {
            enabled: AtomicBool::new(enabled),
            queued: AtomicUsize::new(0),
            queue_max,
            next_tape: AtomicU64::new(0),
        }
    }
}

/// A handle on the recorder thread: cheap to clone, one per session thread. A handle
/// whose thread is gone (or that never had one: [`Recorder::disabled`]) records nothing.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl Recorder {
    /// A recorder that records nothing (no thread).
    #[must_use]
    pub fn disabled() -> Self {
        let (tx, _) = mpsc::channel();
        Self {
            tx,
            shared: Arc::new(Shared::new(false, 0)),
        }
    }

    /// Applies new `[recording]` settings (a config reload): `enabled = false` closes
    /// every file and stops recording; the cap applies to files opened from now on, the
    /// retention at the next pruning, which starts now.
    pub fn apply(&self, settings: RecordingSettings) {
        self.shared
            .enabled
            .store(settings.enabled, Ordering::SeqCst);
        let _ = self.tx.send(Msg::Settings(settings));
    }

    /// A tape for session `session`, whose terminal is `cols` × `rows`.
    #[must_use]
    pub fn tape(&self, session: &str, cols: u16, rows: u16) -> SessionTape {
        SessionTape {
            recorder: self.clone(),
            id: self.shared.next_tape.fetch_add(1, Ordering::Relaxed),
            session: session.to_string(),
            cols,
            rows,
            target: Target::Nothing,
            dropped: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }
}

/// What a tape is recording into.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Nothing,
    Idle,
    Task(String),
}

/// One session's recording, held by its thread: every method returns at once (no I/O,
/// no lock; a channel send).
///
/// Between tasks, output goes to an idle file, opened at the first output after a task
/// (or after the session started): a session that prints nothing between tasks leaves
/// no idle file. [`SessionTape::task_started`] closes it and opens the task's file;
/// [`SessionTape::task_ended`] closes that. Dropping the tape closes its file.
#[derive(Debug)]
pub struct SessionTape {
    recorder: Recorder,
    id: u64,
    session: String,
    cols: u16,
    rows: u16,
    target: Target,
    /// Output bytes not sent since the last send (the queue was full).
    dropped: u64,
}

impl SessionTape {
    /// Output read from the PTY just now.
    pub fn output(&mut self, bytes: &[u8]) {
        self.output_at(Instant::now(), bytes);
    }

    /// Output read from the PTY at `at`.
    pub fn output_at(&mut self, at: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.recorder.enabled() {
            self.target = Target::Nothing;
            return;
        }
        if self.target == Target::Nothing {
            let file = idle_file(&self.session, ulid::Ulid::new());
            let title = format!("{}: idle", self.session);
            self.open(at, file, title, Target::Idle);
        }
        let shared = &self.recorder.shared;
        let before = shared.queued.fetch_add(bytes.len(), Ordering::SeqCst);
        if before + bytes.len() > shared.queue_max {
            shared.queued.fetch_sub(bytes.len(), Ordering::SeqCst);
            self.dropped += bytes.len() as u64;
            return;
        }
        self.recorder.send(Msg::Output {
            tape: self.id,
            at,
            bytes: bytes.to_vec(),
            dropped_before: std::mem::take(&mut self.dropped),
        });
    }

    /// The prompt of attempt `attempt` (1-based) of task `task_id` is about to be
    /// delivered: its file starts now.
    pub fn task_started(&mut self, task_id: &str, attempt: u32) {
        if !self.recorder.enabled() {
            self.target = Target::Nothing;
            return;
        }
        let title = if attempt > 1 {
            format!("{}: task {task_id}, attempt {attempt}", self.session)
        } else {
            format!("{}: task {task_id}", self.session)
        };
        let file = PathBuf::from(task_file_name(task_id, attempt));
        self.open(
            Instant::now(),
            file,
            title,
            Target::Task(task_id.to_string()),
        );
    }

    /// Task `task_id` ended: its file is closed (nothing happens for another task).
    pub fn task_ended(&mut self, task_id: &str) {
        if matches!(&self.target, Target::Task(t) if t == task_id) {
            self.recorder.send(Msg::Close { tape: self.id });
            self.target = Target::Nothing;
        }
    }

    /// The terminal is now `cols` × `rows` (a resize event in the open file, and the size
    /// of the next files).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.cols = cols;
        self.rows = rows;
        if self.target != Target::Nothing {
            self.recorder.send(Msg::Resize {
                tape: self.id,
                at: Instant::now(),
                cols,
                rows,
            });
        }
    }

    fn open(&mut self, at: Instant, file: PathBuf, title: String, target: Target) {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let header = Header {
            version: VERSION,
            width: self.cols,
            height: self.rows,
            timestamp: Some(timestamp),
            env: [("TERM".to_string(), TERM.to_string())].into(),
            title: Some(title),
        };
        self.recorder.send(Msg::Open {
            tape: self.id,
            file,
            header,
            at,
        });
        self.target = target;
    }
}

impl Drop for SessionTape {
    fn drop(&mut self) {
        self.recorder.send(Msg::Gone { tape: self.id });
    }
}

/// The recorder thread, owned by the daemon's `run`: dropping it flushes and closes every
/// file, then joins the thread.
#[derive(Debug)]
pub struct RecorderThread {
    recorder: Recorder,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecorderThread {
    /// Starts the thread that writes recordings under `dir` (this node's
    /// `recordings/`, created when a file is first written). With `enabled = false` it
    /// records nothing until [`Recorder::apply`] turns it on, and still prunes.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(dir: PathBuf, settings: RecordingSettings) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::new(settings.enabled, QUEUE_MAX_BYTES));
        let writer = Writer {
            dir,
            settings,
            tapes: HashMap::new(),
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Self {
            recorder: Recorder { tx, shared },
            thread: Some(thread),
        })
    }

    /// A handle for a session thread or for applying settings.
    #[must_use]
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }
}

impl Drop for RecorderThread {
    fn drop(&mut self) {
        self.recorder.send(Msg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The recorder thread's state: the open file and UTF-8 carry of each tape.
struct Writer {
    dir: PathBuf,
    settings: RecordingSettings,
    tapes: HashMap<u64, TapeState>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct TapeState {
    carry: Utf8Carry,
    file: Option<OpenCast>,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        self.prune();
        let mut next_prune = Instant::now() + PRUNE_EVERY;
        let mut last_flush = Instant::now();
        loop {
            let wait = FLUSH_EVERY.min(next_prune.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(Msg::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Msg::Settings(s)) => {
                    self.settings = s;
                    if !s.enabled {
                        self.close_all();
                    }
                    next_prune = Instant::now();
                }
                Ok(msg) => self.handle(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now.duration_since(last_flush) >= FLUSH_EVERY {
                last_flush = now;
                for f in self.tapes.values_mut().filter_map(|t| t.file.as_mut()) {
                    f.flush();
                }
            }
            if now >= next_prune {
                self.prune();
                next_prune = now + PRUNE_EVERY;
            }
        }
        self.close_all();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Open {
                tape,
                file,
                header,
                at,
            } => {
                let path = self.dir.join(file);
                let max = self.settings.max_bytes;
                let state = self.tapes.entry(tape).or_default();
                if let Some(mut old) = state.file.take() {
                    old.close();
                }
                state.file = Some(OpenCast::create(path, &header, max, at));
            }
            Msg::Output {
                tape,
                at,
                bytes,
                dropped_before,
            } => {
                self.shared.queued.fetch_sub(bytes.len(), Ordering::SeqCst);
                let state = self.tapes.entry(tape).or_default();
                let text = state.carry.push(&bytes);
                if let Some(f) = state.file.as_mut() {
                    let time = f.time(at);
                    if dropped_before > 0 {
                        f.write(&Event::marker(
                            time,
                            format!(
                                "gap: {dropped_before} bytes of output not recorded (the \
                                 recorder fell behind)"
                            ),
                        ));
                    }
                    if !text.is_empty() {
                        f.output(time, &text);
                    }
                }
            }
            Msg::Resize {
                tape,
                at,
                cols,
                rows,
            } => {
                if let Some(f) = self.tapes.get_mut(&tape).and_then(|t| t.file.as_mut()) {
                    let time = f.time(at);
                    f.write(&Event::resize(time, cols, rows));
                }
            }
            Msg::Close { tape } => {
                if let Some(mut f) = self.tapes.get_mut(&tape).and_then(|t| t.file.take()) {
                    f.close();
                }
            }
            Msg::Gone { tape } => {
                if let Some(mut state) = self.tapes.remove(&tape) {
                    if let Some(mut f) = state.file.take() {
                        let rest = state.carry.finish();
                        if !rest.is_empty() {
                            let time = f.time(Instant::now());
                            f.output(time, &rest);
                        }
                        f.close();
                    }
                }
            }
            Msg::Settings(_) | Msg::Shutdown => {}
        }
    }

    fn close_all(&mut self) {
        for state in self.tapes.values_mut() {
            if let Some(mut f) = state.file.take() {
                f.close();
            }
        }
    }

    /// Deletes what [`retention::select`] names among this node's recordings.
    fn prune(&self) {
        let open: Vec<&Path> = self
            .tapes
            .values()
            .filter_map(|t| t.file.as_ref().map(|f| f.path.as_path()))
            .collect();
        let listed = list_casts(&self.dir, &open);
        let doomed = retention::select(
            &listed,
            SystemTime::now(),
            self.settings.keep_days,
            self.settings.keep_total_bytes,
        );
        let mut removed = 0;
        for p in &doomed {
            match std::fs::remove_file(p) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %p.display(), "pruning a recording: {e}"),
            }
        }
        if removed > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                removed,
                "old recordings pruned ([recording] keep_days, keep_total_bytes)"
            );
        }
    }
}

/// Every `*.cast` file in `dir` and in its subdirectories (one level: the sessions' idle
/// files), with `open` marking the ones being written.
fn list_casts(dir: &Path, open: &[&Path]) -> Vec<retention::Listed> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(std::result::Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(e.path());
            }
        }
    }
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(std::result::Result::ok) {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "cast") {
                continue;
            }
            let Ok(meta) = e.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            out.push(retention::Listed {
                open: open.contains(&path.as_path()),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                bytes: meta.len(),
                path,
            });
        }
    }
    out
}

/// A recording being written. After a write error, `out` is `None` and the rest of the
/// recording is dropped.
struct OpenCast {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    cast: CastWriter,
    start: Instant,
    dirty: bool,
    /// Output held back for redaction (module doc), and when its last piece was read
    /// (seconds from the start).
    held: String,
    held_time: f64,
}

impl OpenCast {
    fn create(path: PathBuf, header: &Header, max_bytes: u64, start: Instant) -> Self {
        let mut me = Self {
            path,
            out: None,
            cast: CastWriter::new(max_bytes),
            start,
            dirty: false,
            held: String::new(),
            held_time: 0.0,
        };
        let opened = crate::durable::create_dir(crate::durable::parent(&me.path))
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&me.path)
            });
        match opened {
            Ok(f) => {
                me.out = Some(BufWriter::with_capacity(BUF_BYTES, f));
                let line = me.cast.header(header);
                me.put(&line);
            }
            Err(e) => me.fail("creating", &e),
        }
        me
    }

    /// Seconds from the file's start to `at`.
    fn time(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Output read at `time`: held back until its line ends (module doc).
    fn output(&mut self, time: f64, text: &str) {
        self.held.push_str(text);
        self.held_time = time;
        if self.held.len() >= HOLD_MAX_BYTES {
            self.release();
            return;
        }
        let Some(last_newline) = self.held.rfind('\n') else {
            return;
        };
        let done = &self.held[..=last_newline];
        // A PEM private key's lines are one secret: hold the block until it ends.
        if let Some(begin) = done.rfind("-----BEGIN ") {
            if !done[begin..].contains("-----END ") {
                return;
            }
        }
        let rest = self.held.split_off(last_newline + 1);
        let done = std::mem::replace(&mut self.held, rest);
        self.write_now(&Event::output(time, crate::redact::redact(&done)));
    }

    /// Writes all the output held back, redacted.
    fn release(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let text = crate::redact::redact(&std::mem::take(&mut self.held));
        self.write_now(&Event::output(self.held_time, text));
    }

    /// Writes a marker or resize after the output held before it.
    fn write(&mut self, event: &Event) {
        self.release();
        self.write_now(event);
    }

    fn write_now(&mut self, event: &Event) {
        if self.out.is_none() {
            return;
        }
        if let Some(line) = self.cast.event(event) {
            self.put(&line);
        }
    }

    fn put(&mut self, line: &str) {
        if let Some(out) = self.out.as_mut() {
            match out.write_all(line.as_bytes()) {
                Ok(()) => self.dirty = true,
                Err(e) => self.fail("writing", &e),
            }
        }
    }

    fn flush(&mut self) {
        self.release();
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.flush() {
                self.fail("writing", &e);
            }
        }
    }

    fn close(&mut self) {
        self.flush();
        self.out = None;
    }

    fn fail(&mut self, what: &str, e: &std::io::Error) {
        tracing::warn!(
            path = %self.path.display(),
            "{what} a recording: {e}; the rest of this recording is dropped"
        );
        // A failed BufWriter would try its buffer again on drop: forget it.
        if let Some(out) = self.out.take() {
            let (_file, _unwritten) = out.into_parts();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::asciicast::{parse, Cast, EventKind};
    use super::*;

    fn settings(max_bytes: u64) -> RecordingSettings {
        RecordingSettings {
            enabled: true,
            max_bytes,
            keep_days: 0,
            keep_total_bytes: 0,
        }
    }

    fn read(path: &Path) -> Cast {
        parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_secret_that_arrives_in_pieces_is_written_redacted_and_lines_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let rt = RecorderThread::start(dir.path().to_path_buf(), settings(1 << 20)).unwrap();
        let mut tape = rt.recorder().tape("sh-1", 100, 30);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        tape.task_started("t1", 1);
        // An API key cut between three reads of the terminal.
        tape.output_at(at(1), b"token=sk-ant-api03-AAAAAAAAAA");
        tape.output_at(at(2), b"BBBBBBBBBBBBBBBBBBBB");
        tape.output_at(at(3), b"CCCCCCCCCC done\r\nnext ");
        // A private key block, a line per read.
        for line in [
            "-----BEGIN OPENSSH PRIVATE KEY-----\r\n",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\r\n",
            "-----END OPENSSH PRIVATE KEY-----\r\n",
        ] {
            tape.output_at(at(4), line.as_bytes());
        }
        tape.resize(120, 40);
        tape.output_at(at(5), b"tail without a newline");
        tape.task_ended("t1");
        drop(tape);
        drop(rt);

        let t1 = read(&dir.path().join("t1.cast"));
        let out = t1.output();
        assert!(!out.contains("AAAAAAAAAA"), "{out}");
        assert!(!out.contains("CCCCCCCCCC"), "{out}");
        assert!(!out.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{out}");
        assert!(out.contains("token=[REDACTED]"), "{out}");
        assert!(out.starts_with("token="), "{out}");
        assert!(out.ends_with("tail without a newline"), "{out}");
        // The resize comes after everything read before it, and before what came after.
        let kinds: Vec<EventKind> = t1.events.iter().map(|e| e.kind).collect();
        let resize = kinds.iter().position(|k| *k == EventKind::Resize).unwrap();
        let before: String = t1.events[..resize]
            .iter()
            .map(|e| e.data.as_str())
            .collect();
        // The whole key block became one [REDACTED].
        assert!(before.ends_with("next [REDACTED]\r\n"), "{before}");
        assert!(!before.contains("tail without"), "{before}");
    }

    #[test]
    fn a_task_gets_its_own_file_and_idle_output_goes_to_the_sessions_idle_file() {
        let dir = tempfile::tempdir().unwrap();
        let rt = RecorderThread::start(dir.path().to_path_buf(), settings(1 << 20)).unwrap();
        let mut tape = rt.recorder().tape("sh-1", 100, 30);
        let t0 = Instant::now();
        tape.output_at(t0, b"$ ");
        tape.task_started("t1", 1);
        tape.output_at(t0 + Duration::from_millis(10), "echo h\u{e9}".as_bytes());
        // A character cut between two reads.
        tape.output_at(t0 + Duration::from_millis(20), b"llo \xe2\x82");
        tape.output_at(t0 + Duration::from_millis(30), b"\xac\r\n");
        tape.task_ended("t1");
        tape.task_started("t1", 2);
        tape.output_at(t0 + Duration::from_millis(40), b"again");
        tape.task_ended("t1");
        drop(tape);
        drop(rt);

        let t1 = read(&dir.path().join("t1.cast"));
        assert_eq!(t1.output(), "echo héllo €\r\n");
        assert_eq!((t1.header.width, t1.header.height), (100, 30));
        assert_eq!(t1.header.title.as_deref(), Some("sh-1: task t1"));
        assert!(t1.events.windows(2).all(|w| w[0].time <= w[1].time));
        assert_eq!(read(&dir.path().join("t1.2.cast")).output(), "again");
        let idle: Vec<_> = std::fs::read_dir(dir.path().join("sh-1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(idle.len(), 1, "{idle:?}");
        assert_eq!(read(&idle[0]).output(), "$ ");
    }

    #[test]
    fn a_file_past_the_cap_ends_with_the_truncation_marker() {
        let dir = tempfile::tempdir().unwrap();
        let rt = RecorderThread::start(dir.path().to_path_buf(), settings(4096)).unwrap();
        let mut tape = rt.recorder().tape("sh-1", 80, 24);
        tape.task_started("big", 1);
        for _ in 0..200 {
            tape.output(&[b'x'; 100]);
        }
        tape.task_ended("big");
        drop(tape);
        drop(rt);
        let path = dir.path().join("big.cast");
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        let cast = read(&path);
        assert_eq!(cast.events.last().unwrap().kind, EventKind::Marker);
        assert!(cast.markers()[0].contains("truncated"));
    }

    #[test]
    fn output_past_a_full_queue_is_dropped_and_the_gap_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        // The thread starts only once the queue is full: nothing drains it before.
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::new(true, 100));
        let recorder = Recorder {
            tx,
            shared: shared.clone(),
        };
        let mut tape = recorder.tape("sh-1", 80, 24);
        tape.task_started("t1", 1);
        tape.output(&[b'a'; 60]);
        tape.output(&[b'b'; 60]);
        tape.output(&[b'c'; 10]);
        tape.task_ended("t1");
        drop(tape);
        drop(recorder);
        let writer = Writer {
            dir: dir.path().to_path_buf(),
            settings: settings(1 << 20),
            tapes: HashMap::new(),
            shared: shared.clone(),
        };
        writer.run(&rx);
        let cast = read(&dir.path().join("t1.cast"));
        assert_eq!(
            cast.output(),
            format!("{}{}", "a".repeat(60), "c".repeat(10))
        );
        assert_eq!(
            cast.markers(),
            ["gap: 60 bytes of output not recorded (the recorder fell behind)"]
        );
        assert_eq!(shared.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn turning_recording_off_closes_the_files_and_on_again_records_the_next_task() {
        let dir = tempfile::tempdir().unwrap();
        let rt = RecorderThread::start(dir.path().to_path_buf(), settings(1 << 20)).unwrap();
        let recorder = rt.recorder();
        let mut tape = recorder.tape("sh-1", 80, 24);
        tape.task_started("t1", 1);
        tape.output(b"before");
        recorder.apply(RecordingSettings {
            enabled: false,
            ..settings(1 << 20)
        });
        tape.output(b"while off");
        tape.task_ended("t1");
        tape.task_started("t2", 1);
        tape.output(b"t2 while off");
        recorder.apply(settings(1 << 20));
        tape.task_ended("t2");
        tape.task_started("t3", 1);
        tape.output(b"back on");
        tape.task_ended("t3");
        drop(tape);
        drop(rt);
        assert_eq!(read(&dir.path().join("t1.cast")).output(), "before");
        assert!(!dir.path().join("t2.cast").exists());
        assert_eq!(read(&dir.path().join("t3.cast")).output(), "back on");
    }

    #[test]
    fn a_disabled_recorder_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let off = RecordingSettings {
            enabled: false,
            ..settings(1 << 20)
        };
        let rt = RecorderThread::start(dir.path().to_path_buf(), off).unwrap();
        let mut tape = rt.recorder().tape("sh-1", 80, 24);
        tape.output(b"idle");
        tape.task_started("t1", 1);
        tape.output(b"work");
        tape.task_ended("t1");
        drop(tape);
        drop(rt);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut never = Recorder::disabled().tape("sh-1", 80, 24);
        never.task_started("t2", 1);
        never.output(b"x");
    }

    #[test]
    fn a_file_that_cannot_be_created_is_skipped_and_the_others_still_record() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the task's file should go.
        std::fs::create_dir(dir.path().join("t1.cast")).unwrap();
        let rt = RecorderThread::start(dir.path().to_path_buf(), settings(1 << 20)).unwrap();
        let mut tape = rt.recorder().tape("sh-1", 80, 24);
        tape.task_started("t1", 1);
        tape.output(b"lost");
        tape.task_ended("t1");
        tape.task_started("t2", 1);
        tape.output(b"kept");
        tape.task_ended("t2");
        drop(tape);
        drop(rt);
        assert!(dir.path().join("t1.cast").is_dir());
        assert_eq!(read(&dir.path().join("t2.cast")).output(), "kept");
    }

    #[test]
    fn pruning_at_start_removes_old_files_and_keeps_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sh-1")).unwrap();
        let old = dir.path().join("sh-1").join("idle-old.cast");
        let new = dir.path().join("new.cast");
        let other = dir.path().join("notes.txt");
        for p in [&old, &new, &other] {
            std::fs::write(p, "x").unwrap();
        }
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 86_400);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let keep = RecordingSettings {
            keep_days: 30,
            ..settings(1 << 20)
        };
        drop(RecorderThread::start(dir.path().to_path_buf(), keep).unwrap());
        assert!(!old.exists());
        assert!(new.exists() && other.exists());
    }
}
