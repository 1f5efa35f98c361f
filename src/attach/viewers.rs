//! The session thread's side of attach and watch: the clients looking at this session's
//! screen, fed a full frame when they connect and screen diffs after.
//!
//! Why diffs of the rendered screen rather than the raw output: the raw output carries
//! the terminal queries the daemon already answers (a client's terminal would answer
//! them again, into the session when attached), and a client joining late would need
//! every byte since the program started. The daemon's emulator is the truth the profile
//! rules read; a client shows exactly that, and a burst of output costs one diff.
//!
//! All clients share one picture of what they display (`shown`, a terminal emulator fed
//! the same frames): each pass's diff is computed once, from it to the session's screen.
//! A client that does not read (its queue over [`MAX_QUEUED`]) loses its queued frames
//! and gets a full frame instead once it reads again: a slow client never holds up the
//! session, and never drifts from the screen.
//!
//! Sockets are non-blocking; the runner polls [`Viewers::poll_fds`] with its terminal.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::protocol::{Frame, FrameReader, Mode, Welcome};

/// Most bytes queued for one client before its queue is dropped for a full frame.
pub const MAX_QUEUED: usize = 8 * 1024 * 1024;

/// A client handed to a session by the daemon, its hello already read.
#[derive(Debug)]
pub struct ViewerConn {
    /// The daemon's id for it (in `session_attached` / `session_detached`).
    pub id: u64,
    /// Attach or watch.
    pub mode: Mode,
    /// Its connection.
    pub stream: UnixStream,
}

/// Why a client left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// It sent a detach frame.
    Detached,
    /// Its connection closed or failed without one (client killed, network of one
    /// host… the socket closed): the reason.
    Lost(String),
}

impl Left {
    /// `detached`, or `lost: <why>`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Detached => "detached".into(),
            Self::Lost(why) => format!("lost: {why}"),
        }
    }
}

/// What the clients did in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerNote {
    /// Keys from an `attach` client, for the session's terminal.
    Input(Vec<u8>),
    /// A client left.
    Left {
        /// Its id.
        id: u64,
        /// Its mode.
        mode: Mode,
        /// Why.
        why: Left,
    },
}

struct Client {
    conn: ViewerConn,
    reader: FrameReader,
    out: VecDeque<Vec<u8>>,
    /// Bytes of `out.front()` already written.
    head_sent: usize,
    queued: usize,
    /// Frames were dropped: the next one it gets is a full frame.
    resync: bool,
}

impl Client {
    fn queue(&mut self, frame: &Frame) {
        let bytes = frame.encode();
        self.queued += bytes.len();
        self.out.push_back(bytes);
        if self.queued > MAX_QUEUED {
            // Keep only a frame already half written (the stream must stay whole).
            let keep = usize::from(self.head_sent > 0);
            while self.out.len() > keep {
                if let Some(b) = self.out.pop_back() {
                    self.queued -= b.len();
                }
            }
            self.resync = true;
        }
    }

    /// Writes what it can. `Err` when the connection is gone.
    fn flush(&mut self) -> Result<(), String> {
        while let Some(head) = self.out.front() {
            match self.conn.stream.write(&head[self.head_sent..]) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => {
                    self.head_sent += n;
                    if self.head_sent == head.len() {
                        self.queued -= head.len();
                        self.out.pop_front();
                        self.head_sent = 0;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

/// The clients of one session (see the module docs).
#[derive(Default)]
pub struct Viewers {
    clients: Vec<Client>,
    /// What every client displays (no scrollback); `None` without clients.
    shown: Option<vt100::Parser>,
    /// The screen changed since the last broadcast.
    dirty: bool,
}

impl std::fmt::Debug for Viewers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewers")
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Viewers {
    /// No clients.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The screen changed (new output was rendered).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Takes a client: the others first get what changed, then it gets a welcome and a
    /// full frame of `screen` (the session's terminal, `screen.size()` rows × columns).
    /// `Err` with the connection's error when it cannot be made non-blocking.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking (the client is dropped).
    pub fn add(
        &mut self,
        session: &str,
        conn: ViewerConn,
        screen: &vt100::Screen,
    ) -> std::io::Result<()> {
        conn.stream.set_nonblocking(true)?;
        self.broadcast(screen);
        let (rows, cols) = screen.size();
        let full = screen.state_formatted();
        if self.shown.is_none() {
            let mut shown = vt100::Parser::new(rows, cols, 0);
            shown.process(&full);
            self.shown = Some(shown);
        }
        let mut c = Client {
            reader: FrameReader::default(),
            out: VecDeque::new(),
            head_sent: 0,
            queued: 0,
            resync: false,
            conn,
        };
        c.queue(&Frame::Welcome(Welcome {
            session: session.to_string(),
            mode: c.conn.mode,
            rows,
            cols,
        }));
        c.queue(&Frame::Screen(full));
        let _ = c.flush();
        self.clients.push(c);
        Ok(())
    }

    /// Sends every client what changed on `screen` since the last call (nothing when
    /// nothing changed or nobody looks).
    pub fn broadcast(&mut self, screen: &vt100::Screen) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let Some(shown) = self.shown.as_mut() else {
            return;
        };
        let diff = screen.state_diff(shown.screen());
        if !diff.is_empty() {
            shown.process(&diff);
        }
        let mut full: Option<Vec<u8>> = None;
        for c in &mut self.clients {
            if c.resync && c.out.len() <= usize::from(c.head_sent > 0) {
                c.resync = false;
                let bytes = full.get_or_insert_with(|| screen.state_formatted()).clone();
                c.queue(&Frame::Screen(bytes));
            } else if !diff.is_empty() {
                c.queue(&Frame::Update(diff.clone()));
            }
            let _ = c.flush();
        }
    }

    /// The descriptors to poll, in client order: readable always, writable while a
    /// client has frames queued.
    #[must_use]
    pub fn poll_fds(&self) -> Vec<libc::pollfd> {
        self.clients
            .iter()
            .map(|c| libc::pollfd {
                fd: c.conn.stream.as_raw_fd(),
                events: if c.out.is_empty() {
                    libc::POLLIN
                } else {
                    libc::POLLIN | libc::POLLOUT
                },
                revents: 0,
            })
            .collect()
    }

    /// Handles the clients' sockets after a poll: `revents` in the order of
    /// [`Viewers::poll_fds`]. Returns keys to type and clients that left (removed).
    pub fn on_ready(&mut self, revents: &[i16]) -> Vec<ViewerNote> {
        let mut notes = Vec::new();
        let mut gone: Vec<(usize, Left)> = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let ev = revents.get(i).copied().unwrap_or(0);
            if ev == 0 {
                continue;
            }
            if ev & libc::POLLOUT != 0 {
                if let Err(e) = c.flush() {
                    gone.push((i, Left::Lost(e)));
                    continue;
                }
            }
            if ev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let Some(why) = read_client(c, &mut notes) {
                    gone.push((i, why));
                }
            }
        }
        for (i, why) in gone.into_iter().rev() {
            let c = self.clients.remove(i);
            notes.push(ViewerNote::Left {
                id: c.conn.id,
                mode: c.conn.mode,
                why,
            });
        }
        if self.clients.is_empty() {
            self.shown = None;
        }
        notes
    }

    /// Ends every connection with `reason` (an `E` frame, written if the socket takes
    /// it at once): who they were.
    pub fn close_all(&mut self, reason: &str) -> Vec<(u64, Mode)> {
        self.shown = None;
        std::mem::take(&mut self.clients)
            .into_iter()
            .map(|mut c| {
                c.queue(&Frame::End(reason.to_string()));
                let _ = c.flush();
                let _ = c.conn.stream.shutdown(std::net::Shutdown::Both);
                (c.conn.id, c.conn.mode)
            })
            .collect()
    }
}

/// Reads what a client sent; `Some` when it left.
fn read_client(c: &mut Client, notes: &mut Vec<ViewerNote>) -> Option<Left> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.conn.stream.read(&mut buf) {
            Ok(0) => return Some(Left::Lost("connection closed".into())),
            Ok(n) => c.reader.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Left::Lost(e.to_string())),
        }
        loop {
            match c.reader.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Input(keys))) => {
                    // A watch client's keys never reach the session.
                    if c.conn.mode == Mode::Attach && !keys.is_empty() {
                        notes.push(ViewerNote::Input(keys));
                    }
                }
                Ok(Some(Frame::Detach)) => return Some(Left::Detached),
                Ok(Some(_)) => {}
                Err(e) => return Some(Left::Lost(format!("bad frame: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every frame waiting on the client's end.
    fn frames(s: &mut UnixStream) -> Vec<Frame> {
        s.set_nonblocking(true).unwrap();
        let mut r = FrameReader::default();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => r.push(&buf[..n]),
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    fn render(frames: &[Frame], term: &mut vt100::Parser) {
        for f in frames {
            if let Frame::Screen(b) | Frame::Update(b) = f {
                term.process(b);
            }
        }
    }

    fn conn(id: u64, mode: Mode) -> (ViewerConn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            ViewerConn {
                id,
                mode,
                stream: a,
            },
            b,
        )
    }

    #[test]
    fn a_client_sees_the_screen_first_then_follows_it_through_diffs() {
        let mut session = vt100::Parser::new(10, 40, 100);
        session.process(b"\x1b[1;32mhello\x1b[0m\r\nworld");
        let mut v = Viewers::default();
        let (c, mut peer) = conn(1, Mode::Watch);
        v.add("sh-1", c, session.screen()).unwrap();
        let first = frames(&mut peer);
        assert!(matches!(&first[0], Frame::Welcome(w) if w.rows == 10 && w.cols == 40));
        assert!(matches!(first[1], Frame::Screen(_)));
        let mut term = vt100::Parser::new(10, 40, 0);
        render(&first, &mut term);
        assert_eq!(term.screen().contents(), session.screen().contents());

        for chunk in [
            &b"\r\nmore output"[..],
            b"\x1b[2J\x1b[Hcleared",
            b"\x1b[5;3Hx",
        ] {
            session.process(chunk);
            v.mark_dirty();
            v.broadcast(session.screen());
        }
        let next = frames(&mut peer);
        assert!(next.iter().all(|f| matches!(f, Frame::Update(_))));
        render(&next, &mut term);
        assert_eq!(term.screen().contents(), session.screen().contents());
        assert_eq!(
            term.screen().cursor_position(),
            session.screen().cursor_position()
        );
    }

    #[test]
    fn a_late_client_gets_the_current_screen_and_the_early_one_keeps_in_step() {
        let mut session = vt100::Parser::new(5, 20, 0);
        let mut v = Viewers::default();
        let (c1, mut p1) = conn(1, Mode::Watch);
        v.add("s", c1, session.screen()).unwrap();
        let mut t1 = vt100::Parser::new(5, 20, 0);
        render(&frames(&mut p1), &mut t1);
        session.process(b"one ");
        v.mark_dirty();
        let (c2, mut p2) = conn(2, Mode::Attach);
        v.add("s", c2, session.screen()).unwrap();
        let mut t2 = vt100::Parser::new(5, 20, 0);
        render(&frames(&mut p2), &mut t2);
        render(&frames(&mut p1), &mut t1);
        // vt100 keeps a written blank as a cell and a cleared one as nothing, so a
        // diff and a full frame may differ in trailing blanks only.
        assert_eq!(t1.screen().contents().trim_end(), "one");
        assert_eq!(t2.screen().contents().trim_end(), "one");
    }

    #[test]
    fn keys_of_an_attach_client_are_typed_and_a_watch_clients_are_not() {
        let session = vt100::Parser::new(5, 20, 0);
        let mut v = Viewers::default();
        let (c1, mut p1) = conn(1, Mode::Attach);
        let (c2, mut p2) = conn(2, Mode::Watch);
        v.add("s", c1, session.screen()).unwrap();
        v.add("s", c2, session.screen()).unwrap();
        p1.write_all(&Frame::Input(b"ls\r".to_vec()).encode())
            .unwrap();
        p2.write_all(&Frame::Input(b"rm -rf /\r".to_vec()).encode())
            .unwrap();
        let notes = v.on_ready(&[libc::POLLIN, libc::POLLIN]);
        assert_eq!(notes, [ViewerNote::Input(b"ls\r".to_vec())]);
    }

    #[test]
    fn a_detach_frame_is_a_detach_and_a_closed_socket_is_a_lost_client() {
        let session = vt100::Parser::new(5, 20, 0);
        let mut v = Viewers::default();
        let (c1, mut p1) = conn(1, Mode::Attach);
        let (c2, p2) = conn(2, Mode::Attach);
        v.add("s", c1, session.screen()).unwrap();
        v.add("s", c2, session.screen()).unwrap();
        p1.write_all(&Frame::Detach.encode()).unwrap();
        drop(p2);
        let notes = v.on_ready(&[libc::POLLIN, libc::POLLIN]);
        assert!(notes.contains(&ViewerNote::Left {
            id: 1,
            mode: Mode::Attach,
            why: Left::Detached
        }));
        assert!(notes.iter().any(|n| matches!(
            n,
            ViewerNote::Left {
                id: 2,
                why: Left::Lost(_),
                ..
            }
        )));
        assert!(v.is_empty());
    }

    #[test]
    fn a_client_that_does_not_read_is_given_a_full_frame_instead_of_a_backlog() {
        let mut session = vt100::Parser::new(24, 80, 0);
        let mut v = Viewers::default();
        let (c, mut peer) = conn(1, Mode::Watch);
        v.add("s", c, session.screen()).unwrap();
        // Far more than the socket buffer and the queue limit hold, never read.
        let mut i = 0u64;
        while !v.clients[0].resync {
            i += 1;
            let line = format!("\x1b[{};1H{}", i % 24 + 1, "x".repeat(70) + &i.to_string());
            session.process(line.as_bytes());
            v.mark_dirty();
            v.broadcast(session.screen());
            assert!(
                v.clients[0].queued <= MAX_QUEUED + 64 * 1024,
                "queue bounded"
            );
            assert!(i < 2_000_000, "never dropped its backlog");
        }
        // The client reads everything now; the session changes once more.
        let mut term = vt100::Parser::new(24, 80, 0);
        peer.set_nonblocking(true).unwrap();
        let mut r = FrameReader::default();
        let mut buf = vec![0u8; 1 << 16];
        // One round: the viewers write what they can, the client reads and renders it.
        let mut pump = |v: &mut Viewers, term: &mut vt100::Parser| {
            v.on_ready(&[libc::POLLOUT]);
            if let Ok(n @ 1..) = peer.read(&mut buf) {
                r.push(&buf[..n]);
            }
            while let Some(f) = r.next_frame().unwrap() {
                render(&[f], term);
            }
        };
        for _ in 0..10_000 {
            pump(&mut v, &mut term);
            if v.clients[0].out.is_empty() {
                break;
            }
        }
        session.process(b"\x1b[1;1Hlast");
        v.mark_dirty();
        v.broadcast(session.screen());
        for _ in 0..100 {
            pump(&mut v, &mut term);
        }
        assert_eq!(term.screen().contents(), session.screen().contents());
    }
}
