//! The attach socket's wire format: length-prefixed frames, pure encoding and decoding.
//!
//! A frame is one kind byte, the payload's length as a big-endian `u32`, then the
//! payload. Kinds:
//!
//! | kind | from | payload |
//! |---|---|---|
//! | `H` hello | client, first frame | JSON [`Hello`]: `{"version": 1, "mode": "attach" \| "watch", "session": "sh-1"}` |
//! | `I` input | client (`attach` only) | bytes for the session's terminal (keys as typed) |
//! | `D` detach | client | empty: the person detached (an EOF without it is a lost client) |
//! | `W` welcome | daemon, first answer | JSON [`Welcome`]: `{"session", "mode", "rows", "cols"}` |
//! | `S` screen | daemon | a full repaint of the session's screen (terminal bytes: clear, every cell, cursor, input modes) |
//! | `U` update | daemon | the screen's changes since the last `S`/`U` (terminal bytes) |
//! | `E` end | daemon, last frame | UTF-8 text: why the daemon refused or ended the connection |
//!
//! `S` and `U` payloads are written to the client's terminal as they are: `S` first,
//! then every `U` in order, reproduces the session's screen.

use serde::{Deserialize, Serialize};

/// Protocol version a [`Hello`] carries.
pub const VERSION: u32 = 1;

/// Largest payload accepted, in bytes (a full 500 × 500 screen with colours fits).
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Attach (keys go to the session, the session takes no new task) or watch (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Keys go to the session's terminal; the session takes no new task meanwhile.
    Attach,
    /// Read-only: the screen only.
    Watch,
}

impl Mode {
    /// `attach` or `watch`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Watch => "watch",
        }
    }
}

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// [`VERSION`].
    pub version: u32,
    /// What the client wants.
    pub mode: Mode,
    /// The session's name.
    pub session: String,
}

/// The daemon's first answer when it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The session.
    pub session: String,
    /// The mode granted.
    pub mode: Mode,
    /// The session's terminal size, rows.
    pub rows: u16,
    /// The session's terminal size, columns.
    pub cols: u16,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `H`.
    Hello(Hello),
    /// `I`: keys.
    Input(Vec<u8>),
    /// `D`.
    Detach,
    /// `W`.
    Welcome(Welcome),
    /// `S`: a full repaint.
    Screen(Vec<u8>),
    /// `U`: a diff.
    Update(Vec<u8>),
    /// `E`: why the connection ends.
    End(String),
}

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Unknown kind byte.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// Payload over [`MAX_PAYLOAD`].
    #[error("frame of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    /// A JSON payload that does not parse.
    #[error("bad {kind} frame: {error}")]
    BadJson {
        /// `hello` or `welcome`.
        kind: &'static str,
        /// The parser's message.
        error: String,
    },
}

impl Frame {
    /// The frame's bytes: kind, length (u32, big-endian), payload.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Self::Hello(h) => (b'H', serde_json::to_vec(h).unwrap_or_default()),
            Self::Input(b) => (b'I', b.clone()),
            Self::Detach => (b'D', Vec::new()),
            Self::Welcome(w) => (b'W', serde_json::to_vec(w).unwrap_or_default()),
            Self::Screen(b) => (b'S', b.clone()),
            Self::Update(b) => (b'U', b.clone()),
            Self::End(s) => (b'E', s.as_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, payload: Vec<u8>) -> Result<Self, ProtocolError> {
        let json = |kind: &'static str, e: serde_json::Error| ProtocolError::BadJson {
            kind,
            error: e.to_string(),
        };
        Ok(match kind {
            b'H' => Self::Hello(serde_json::from_slice(&payload).map_err(|e| json("hello", e))?),
            b'I' => Self::Input(payload),
            b'D' => Self::Detach,
            b'W' => {
                Self::Welcome(serde_json::from_slice(&payload).map_err(|e| json("welcome", e))?)
            }
            b'S' => Self::Screen(payload),
            b'U' => Self::Update(payload),
            b'E' => Self::End(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }
}

/// Reassembles frames from a byte stream read in pieces of any size.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Adds bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` while it is incomplete.
    ///
    /// # Errors
    /// An unknown kind, a payload over [`MAX_PAYLOAD`] or bad JSON: the stream cannot be
    /// read further.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        if !matches!(kind, b'H' | b'I' | b'D' | b'W' | b'S' | b'U' | b'E') {
            return Err(ProtocolError::UnknownKind(kind));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Frame::decode(kind, payload).map(Some)
    }
}

/// Reads one whole frame from a blocking reader (`Ok(None)` at a clean end of stream).
///
/// # Errors
/// I/O errors, an end of stream inside a frame, or a [`ProtocolError`] (as
/// `InvalidData`).
pub fn read_frame(r: &mut impl std::io::Read) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = usize::try_from(u32::from_be_bytes([head[1], head[2], head[3], head[4]]))
        .unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            ProtocolError::TooLarge(len),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Frame::decode(head[0], payload)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                version: VERSION,
                mode: Mode::Watch,
                session: "sh-1".into(),
            }),
            Frame::Input(b"ls\r".to_vec()),
            Frame::Detach,
            Frame::Welcome(Welcome {
                session: "sh-1".into(),
                mode: Mode::Attach,
                rows: 50,
                cols: 200,
            }),
            Frame::Screen(b"\x1b[H\x1b[Jhello".to_vec()),
            Frame::Update(Vec::new()),
            Frame::End("no session \"x\"".into()),
        ]
    }

    #[test]
    fn every_frame_reads_back_as_written_even_one_byte_at_a_time() {
        let bytes: Vec<u8> = all().iter().flat_map(Frame::encode).collect();
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for b in &bytes {
            r.push(std::slice::from_ref(b));
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all());
        let mut cursor = std::io::Cursor::new(bytes);
        let mut blocking = Vec::new();
        while let Some(f) = read_frame(&mut cursor).unwrap() {
            blocking.push(f);
        }
        assert_eq!(blocking, all());
    }

    #[test]
    fn hello_is_the_documented_json() {
        let f = Frame::Hello(Hello {
            version: 1,
            mode: Mode::Attach,
            session: "a".into(),
        })
        .encode();
        assert_eq!(f[0], b'H');
        assert_eq!(
            std::str::from_utf8(&f[5..]).unwrap(),
            r#"{"version":1,"mode":"attach","session":"a"}"#
        );
    }

    #[test]
    fn an_unknown_kind_or_an_oversized_frame_is_an_error_not_a_wait() {
        let mut r = FrameReader::default();
        r.push(b"Z\0\0\0\0");
        assert_eq!(r.next_frame(), Err(ProtocolError::UnknownKind(b'Z')));
        let mut r = FrameReader::default();
        r.push(&[b'I', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Err(ProtocolError::TooLarge(_))));
    }

    #[test]
    fn a_hello_with_an_unknown_mode_is_refused() {
        let mut bytes = vec![b'H'];
        let payload = br#"{"version":1,"mode":"steal","session":"a"}"#;
        bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(payload);
        let mut r = FrameReader::default();
        r.push(&bytes);
        assert!(matches!(r.next_frame(), Err(ProtocolError::BadJson { .. })));
    }
}
