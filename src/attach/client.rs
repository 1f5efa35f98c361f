//! The client of `architect attach` / `architect watch`: connects to the daemon's socket,
//! shows the session's screen in the local terminal (raw mode, alternate screen) and
//! forwards keys until the detach key.
//!
//! The terminal is restored on every way out: a detach, the daemon or the session
//! going away, an error, a panic (the guard's `Drop`), and SIGTERM, SIGHUP, SIGINT or
//! SIGQUIT (caught; the loop ends and the guard restores). Only SIGKILL leaves it raw
//! (`reset` fixes it); the daemon then sees a lost client and frees the session.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::protocol::{read_frame, Frame, FrameReader, Hello, Mode, Welcome, VERSION};

/// The default detach key: Ctrl-] (0x1d), as telnet's.
pub const DEFAULT_DETACH_KEY: u8 = 0x1d;

/// Ctrl-C, which also ends `watch`.
const CTRL_C: u8 = 0x03;

/// What to attach to and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon's socket ([`super::socket_path`]).
    pub socket: PathBuf,
    /// The session's name.
    pub session: String,
    /// Attach or watch.
    pub mode: Mode,
    /// The byte that detaches (a control character, e.g. 0x1d for Ctrl-]).
    pub detach_key: u8,
}

/// How a client ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The person pressed the detach key (or Ctrl-C in watch, or closed stdin).
    Detached,
    /// The daemon ended the connection with this reason (the session's program exited,
    /// the daemon is stopping).
    Ended(String),
    /// The connection closed without a reason (the daemon was killed).
    Lost,
    /// A signal ended it (its number).
    Signal(i32),
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket cannot be reached.
    #[error("connecting to {path}: {error}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The daemon said no (unknown session, session not running, …).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing the socket or the terminal.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Splits what the person typed: the bytes for the session (none in watch), and whether
/// they asked to detach (the detach key; in watch also Ctrl-C). Bytes after the detach
/// key are dropped.
#[must_use]
pub fn route_keys(input: &[u8], mode: Mode, detach_key: u8) -> (Vec<u8>, bool) {
    let end = input
        .iter()
        .position(|&b| b == detach_key || (mode == Mode::Watch && b == CTRL_C));
    let typed = &input[..end.unwrap_or(input.len())];
    let forward = match mode {
        Mode::Attach => typed.to_vec(),
        Mode::Watch => Vec::new(),
    };
    (forward, end.is_some())
}

/// Parses a detach key: `ctrl-]`, `ctrl-a`, `^]`, `^A` … (a control character: `@`,
/// a letter, `[`, `\`, `]`, `^` or `_` with Ctrl).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_detach_key(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("ctrl+"))
        .or_else(|| lower.strip_prefix('^'));
    match rest.map(str::as_bytes) {
        Some([c]) if c.is_ascii_lowercase() => Ok(c - b'a' + 1),
        Some([c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')]) => Ok(c & 0x1f),
        _ => Err(format!(
            "detach key {s:?}: give a control key such as ctrl-] (the default), ctrl-a or ^q"
        )),
    }
}

/// The key's name, `ctrl-]` for 0x1d.
#[must_use]
pub fn key_name(key: u8) -> String {
    match key {
        1..=26 => format!("ctrl-{}", char::from(b'a' + key - 1)),
        0 | 27..=31 => format!("ctrl-{}", char::from(key | 0x40)),
        _ => format!("{key:#04x}"),
    }
}

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// Catches the signals that would end the client, without `SA_RESTART`, so `poll`
/// returns and the loop restores the terminal; ignores SIGPIPE (a closed socket is an
/// error to handle, not a death).
fn catch_signals() {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: installing an async-signal-safe handler (one atomic store).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: setting a disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The local terminal in raw mode on the alternate screen; restored on drop.
struct RawTerminal {
    saved: Option<libc::termios>,
}

/// Puts back what a session may have switched on (mouse, bracketed paste, keypad and
/// cursor-key modes, hidden cursor, colours), then leaves the alternate screen.
const RESET: &[u8] = b"\x1b[0m\x1b[?25h\x1b[?1l\x1b>\x1b[?2004l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1049l";

impl RawTerminal {
    fn enter() -> std::io::Result<Self> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: isatty on our stdin.
        let saved = if unsafe { libc::isatty(fd) } == 1 {
            // SAFETY: termios is plain data; tcgetattr fills it.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: valid fd and pointer.
            if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut raw = t;
            // SAFETY: cfmakeraw edits the struct it is given.
            unsafe { libc::cfmakeraw(&mut raw) };
            // SAFETY: valid fd and pointer.
            if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Some(t)
        } else {
            None
        };
        let mut out = std::io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[H\x1b[2J")?;
        out.flush()?;
        Ok(Self { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(RESET);
        let _ = out.flush();
        if let Some(t) = &self.saved {
            // SAFETY: restoring the attributes read at the start on the same fd.
            unsafe {
                libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, t);
            }
        }
    }
}

/// Connects and says hello; returns the connection and the daemon's welcome.
///
/// # Errors
/// [`ClientError::Connect`] when the socket cannot be reached,
/// [`ClientError::Refused`] with the daemon's reason.
pub fn connect(opts: &Options) -> Result<(UnixStream, Welcome), ClientError> {
    let mut stream = UnixStream::connect(&opts.socket).map_err(|error| ClientError::Connect {
        path: opts.socket.clone(),
        error,
    })?;
    stream.write_all(
        &Frame::Hello(Hello {
            version: VERSION,
            mode: opts.mode,
            session: opts.session.clone(),
        })
        .encode(),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    match read_frame(&mut stream)? {
        Some(Frame::Welcome(w)) => {
            stream.set_read_timeout(None)?;
            Ok((stream, w))
        }
        Some(Frame::End(reason)) => Err(ClientError::Refused(reason)),
        Some(other) => Err(ClientError::Refused(format!(
            "unexpected answer from the daemon: {other:?}"
        ))),
        None => Err(ClientError::Refused(
            "the daemon closed the connection without an answer".into(),
        )),
    }
}

/// Runs the client until the person detaches or the connection ends (see the module
/// docs); the terminal is restored before it returns.
///
/// # Errors
/// When the daemon cannot be reached or refuses ([`connect`]), or on I/O errors.
pub fn run(opts: &Options) -> Result<(Outcome, Welcome), ClientError> {
    catch_signals();
    let (stream, welcome) = connect(opts)?;
    let terminal = RawTerminal::enter()?;
    let outcome = pump(opts, stream);
    drop(terminal);
    outcome.map(|o| (o, welcome))
}

fn pump(opts: &Options, mut stream: UnixStream) -> Result<Outcome, ClientError> {
    let stdin = std::io::stdin();
    let in_fd = stdin.as_raw_fd();
    let mut stdin_open = true;
    let mut out = std::io::stdout().lock();
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let sig = SIGNALLED.load(Ordering::SeqCst);
        if sig != 0 {
            let _ = stream.write_all(&Frame::Detach.encode());
            return Ok(Outcome::Signal(sig));
        }
        let mut fds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { in_fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of 2 pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if fds[1].revents != 0 {
            // SAFETY: reading into our buffer from stdin's descriptor.
            let n = unsafe { libc::read(in_fd, buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) => {
                    stdin_open = false;
                    if opts.mode == Mode::Attach {
                        let _ = stream.write_all(&Frame::Detach.encode());
                        return Ok(Outcome::Detached);
                    }
                }
                Ok(n) => {
                    let (keys, detach) = route_keys(&buf[..n], opts.mode, opts.detach_key);
                    if !keys.is_empty() && stream.write_all(&Frame::Input(keys).encode()).is_err() {
                        return Ok(Outcome::Lost);
                    }
                    if detach {
                        let _ = stream.write_all(&Frame::Detach.encode());
                        return Ok(Outcome::Detached);
                    }
                }
                Err(_) => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        stdin_open = false;
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            match stream.read(&mut buf) {
                Ok(0) => return Ok(Outcome::Lost),
                Ok(n) => reader.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(Outcome::Lost),
            }
            loop {
                match reader.next_frame() {
                    Ok(Some(Frame::Screen(b) | Frame::Update(b))) => out.write_all(&b)?,
                    Ok(Some(Frame::End(reason))) => return Ok(Outcome::Ended(reason)),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e).into())
                    }
                }
            }
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_forwards_keys_up_to_the_detach_key() {
        assert_eq!(
            route_keys(b"ls\r", Mode::Attach, DEFAULT_DETACH_KEY),
            (b"ls\r".to_vec(), false)
        );
        assert_eq!(
            route_keys(b"ab\x1dcd", Mode::Attach, DEFAULT_DETACH_KEY),
            (b"ab".to_vec(), true)
        );
        // Ctrl-C goes to the session when attached.
        assert_eq!(
            route_keys(b"\x03", Mode::Attach, DEFAULT_DETACH_KEY),
            (b"\x03".to_vec(), false)
        );
    }

    #[test]
    fn watch_forwards_nothing_and_ends_on_the_detach_key_or_ctrl_c() {
        assert_eq!(
            route_keys(b"rm -rf /\r", Mode::Watch, 0x1d),
            (vec![], false)
        );
        assert_eq!(route_keys(b"x\x03", Mode::Watch, 0x1d), (vec![], true));
        assert_eq!(route_keys(b"\x1d", Mode::Watch, 0x1d), (vec![], true));
    }

    #[test]
    fn another_detach_key_can_be_chosen() {
        let k = parse_detach_key("ctrl-a").unwrap();
        assert_eq!(k, 0x01);
        assert_eq!(
            route_keys(b"x\x1dy\x01z", Mode::Attach, k),
            (b"x\x1dy".to_vec(), true)
        );
    }

    #[test]
    fn detach_keys_parse_as_control_characters() {
        assert_eq!(parse_detach_key("ctrl-]"), Ok(0x1d));
        assert_eq!(parse_detach_key("^]"), Ok(0x1d));
        assert_eq!(parse_detach_key("Ctrl-Q"), Ok(0x11));
        assert_eq!(parse_detach_key("ctrl-\\"), Ok(0x1c));
        assert!(parse_detach_key("q").is_err());
        assert!(parse_detach_key("ctrl-1").is_err());
        assert_eq!(key_name(0x1d), "ctrl-]");
        assert_eq!(key_name(0x01), "ctrl-a");
    }
}
