//! Shell integration: OSC 133 semantic prompt marks, and the bash set-up that prints them.
//!
//! The marks are the FinalTerm convention that iTerm2, VS Code, WezTerm and kitty use
//! (`OSC 133 ; A` prompt start, `OSC 133 ; C` command start, `OSC 133 ; D ; <status>`
//! command finished). architect's bash integration ([`bash_rcfile`]) prints them with a
//! per-session nonce as the last parameter (`architect=<nonce>`), so output that happens to
//! contain a mark (a nested shell with its own integration, `cat` of a recording, a
//! program printing one on purpose) cannot end a task:
//!
//! | mark | printed by | meaning |
//! |---|---|---|
//! | `ESC ] 133 ; C ; architect=N BEL` | `PS0` (after a command line is read, before it runs) | the typed command was taken and starts |
//! | `ESC ] 133 ; D ; <status> ; architect=N BEL` | `PROMPT_COMMAND`, only when a command ran since the last prompt; the `EXIT` trap | the command finished with `<status>` |
//! | `ESC ] 133 ; A ; architect=N BEL` | `PROMPT_COMMAND` (once per new prompt, never on a redraw) | a fresh primary prompt: the shell waits for a command |
//! | `ESC ] 133 ; A ; k=s ; architect=N BEL` | `PS2` | a continuation prompt: the command line is incomplete |
//!
//! [`MarkScanner`] finds the marks carrying the session's nonce in the terminal output
//! and splits them out of the byte stream; everything else passes through untouched.

use std::fmt::Write as _;

/// Longest mark held back while waiting for its end, in bytes.
const MAX_MARK: usize = 256;

/// A semantic prompt mark from the session's own shell integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `A`: a fresh primary prompt is shown; the shell waits for a command.
    Prompt,
    /// `A;k=s`: a continuation prompt (`PS2`): the command line is not complete.
    Continuation,
    /// `C`: the command line was read and starts running.
    CommandStart,
    /// `D`: the command finished, with its exit status when given.
    CommandFinished(Option<i32>),
}

/// One piece of terminal output: plain bytes or a mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Output bytes (escape sequences other than our marks included).
    Bytes(Vec<u8>),
    /// A mark with the session's nonce.
    Mark(Mark),
}

/// Splits terminal output into bytes and marks (see the module docs). A mark split
/// across two reads is held back until its end arrives.
#[derive(Debug, Clone)]
pub struct MarkScanner {
    nonce: String,
    pending: Vec<u8>,
}

impl MarkScanner {
    /// A scanner for marks carrying `nonce`.
    #[must_use]
    pub fn new(nonce: &str) -> Self {
        Self {
            nonce: nonce.to_string(),
            pending: Vec::new(),
        }
    }

    /// Scans the next chunk of output.
    pub fn scan(&mut self, data: &[u8]) -> Vec<Piece> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut plain_from = 0;
        let mut i = 0;
        while i < buf.len() {
            if buf[i] != 0x1b {
                i += 1;
                continue;
            }
            match osc_133(&buf[i..]) {
                Osc::NotOurs => i += 1,
                Osc::Incomplete if buf.len() - i <= MAX_MARK => {
                    push_bytes(&mut out, &buf[plain_from..i]);
                    self.pending = buf[i..].to_vec();
                    return out;
                }
                Osc::Incomplete => i += 1,
                Osc::Complete(len, body) => match self.parse(body) {
                    Some(mark) => {
                        push_bytes(&mut out, &buf[plain_from..i]);
                        out.push(Piece::Mark(mark));
                        i += len;
                        plain_from = i;
                    }
                    None => i += len,
                },
            }
        }
        push_bytes(&mut out, &buf[plain_from..]);
        out
    }

    /// Parses the body after `133;` when its last parameter is our nonce.
    fn parse(&self, body: &[u8]) -> Option<Mark> {
        let body = std::str::from_utf8(body).ok()?;
        let mut params: Vec<&str> = body.split(';').collect();
        let last = params.pop()?;
        if last.strip_prefix("architect=")? != self.nonce {
            return None;
        }
        let kind = *params.first()?;
        let rest = &params[1..];
        match kind {
            "A" if rest.contains(&"k=s") => Some(Mark::Continuation),
            "A" => Some(Mark::Prompt),
            "C" => Some(Mark::CommandStart),
            "D" => Some(Mark::CommandFinished(
                rest.first().and_then(|s| s.parse().ok()),
            )),
            _ => None,
        }
    }
}

fn push_bytes(out: &mut Vec<Piece>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Piece::Bytes(prev)) = out.last_mut() {
        prev.extend_from_slice(bytes);
    } else {
        out.push(Piece::Bytes(bytes.to_vec()));
    }
}

enum Osc<'a> {
    /// Not an `OSC 133` sequence.
    NotOurs,
    /// Could be one; its end has not arrived.
    Incomplete,
    /// Its length and the body after `133;`.
    Complete(usize, &'a [u8]),
}

/// Looks at the escape sequence at the start of `b` (`b[0]` is ESC).
fn osc_133(b: &[u8]) -> Osc<'_> {
    const HEAD: &[u8] = b"\x1b]133;";
    let n = HEAD.len().min(b.len());
    if b[..n] != HEAD[..n] {
        return Osc::NotOurs;
    }
    if b.len() < HEAD.len() {
        return Osc::Incomplete;
    }
    let mut j = HEAD.len();
    while j < b.len() {
        match b[j] {
            0x07 => return Osc::Complete(j + 1, &b[HEAD.len()..j]),
            0x1b => {
                return match b.get(j + 1) {
                    None => Osc::Incomplete,
                    Some(b'\\') => Osc::Complete(j + 2, &b[HEAD.len()..j]),
                    Some(_) => Osc::NotOurs,
                };
            }
            _ => j += 1,
        }
    }
    Osc::Incomplete
}

/// 16 random bytes from the kernel's random source (a ULID's when it cannot be read).
fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        // No /dev/urandom: a ULID still has 80 random bits.
        return ulid::Ulid::new().to_bytes();
    }
    bytes
}

/// A fresh random nonce (128 bits, hex).
#[must_use]
pub fn new_nonce() -> String {
    let mut s = String::with_capacity(32);
    for b in random_bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fresh random UUID (version 4, RFC 9562), lower-case with hyphens: the id a CLI
/// is given for a new conversation.
#[must_use]
pub fn new_uuid() -> String {
    let mut b = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// The bash start-up file that installs the marks for `nonce` (see the module docs),
/// sourced through `bash --rcfile <file>`. It sets (as shell variables, never exported,
/// so programs the task starts do not inherit them) `PROMPT_COMMAND`, `PS0`, `PS1` (the
/// visible prompt `[<status>] architect$ `), `PS2`, and an `EXIT` trap, and turns off
/// history. Needs bash 4.4 or newer (`PS0`).
#[must_use]
pub fn bash_rcfile(nonce: &str) -> String {
    format!(
        r#"# architect shell integration (OSC 133 marks); written for this session only.
__architect_nonce='{nonce}'
__architect_cmd=0
__architect_seen=0
__architect_prompt() {{
  local s=$?
  if (( __architect_cmd != __architect_seen )); then
    __architect_seen=$__architect_cmd
    printf '\e]133;D;%s;architect=%s\a' "$s" "$__architect_nonce"
  fi
  printf '\e]133;A;architect=%s\a' "$__architect_nonce"
  return $s
}}
PROMPT_COMMAND=__architect_prompt
# The array subscript counts commands and expands to nothing.
PS0='${{__architect_none[++__architect_cmd]}}\e]133;C;architect='"$__architect_nonce"'\a'
PS1='[$?] architect$ '
PS2='\[\e]133;A;k=s;architect='"$__architect_nonce"'\a\]'
trap 'printf "\e]133;D;%s;architect=%s\a" "$?" "$__architect_nonce"' EXIT
unset HISTFILE
set +o history
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(pieces: &[Piece]) -> Vec<Mark> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Mark(m) => Some(*m),
                Piece::Bytes(_) => None,
            })
            .collect()
    }

    fn bytes(pieces: &[Piece]) -> Vec<u8> {
        pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Bytes(b) => b.clone(),
                Piece::Mark(_) => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn marks_with_the_nonce_are_split_out() {
        let mut s = MarkScanner::new("n1");
        let p = s.scan(b"ls\r\n\x1b]133;C;architect=n1\x07a\tb\r\n\x1b]133;D;2;architect=n1\x07\x1b]133;A;architect=n1\x1b\\[2] architect$ ");
        assert_eq!(
            marks(&p),
            [
                Mark::CommandStart,
                Mark::CommandFinished(Some(2)),
                Mark::Prompt
            ]
        );
        assert_eq!(bytes(&p), b"ls\r\na\tb\r\n[2] architect$ ");
    }

    #[test]
    fn forged_marks_pass_through_as_output() {
        let mut s = MarkScanner::new("secret");
        let forged = b"\x1b]133;D;0;architect=guess\x07\x1b]133;D;0\x07\x1b]133;A\x07";
        let p = s.scan(forged);
        assert!(marks(&p).is_empty());
        assert_eq!(bytes(&p), forged);
    }

    #[test]
    fn a_mark_split_across_reads_is_held_back() {
        let mut s = MarkScanner::new("n");
        let first = s.scan(b"out\x1b]133;D;");
        assert_eq!(bytes(&first), b"out");
        assert!(marks(&first).is_empty());
        let second = s.scan(b"7;architect=n\x07more");
        assert_eq!(marks(&second), [Mark::CommandFinished(Some(7))]);
        assert_eq!(bytes(&second), b"more");
        // An ESC at the very end of a read is held too.
        assert_eq!(bytes(&s.scan(b"x\x1b")), b"x");
        assert_eq!(
            marks(&s.scan(b"]133;A;k=s;architect=n\x07")),
            [Mark::Continuation]
        );
    }

    #[test]
    fn other_escape_sequences_are_untouched() {
        let mut s = MarkScanner::new("n");
        let data = b"\x1b[31mred\x1b]0;title\x07\x1b]1337;x\x07";
        assert_eq!(bytes(&s.scan(data)), data);
    }

    #[test]
    fn uuids_are_version_4() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, new_uuid());
    }

    #[test]
    fn nonces_are_fresh_and_hex() {
        let a = new_nonce();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_nonce());
    }
}
