//! What a session installs around its program, and the socket its hooks talk to.
//!
//! Each session program gets a private runtime directory ([`crate::runtime_dir`]; mode
//! 0700, removed when the program ends) under `$XDG_RUNTIME_DIR/architect/` or
//! `/tmp/architect-<uid>/`:
//!
//! - `bashrc`: the shell integration ([`super::marks::bash_rcfile`]) with a fresh nonce,
//!   passed where the profile's arguments say `{shell_integration}`;
//! - `hook.sock`: the hook socket ([`HookServer`]), for a profile with `[hooks]`: the
//!   CLI's hooks run `architect hook <agent> <event>`, which finds the socket and the
//!   session's token in `ARCHITECT_HOOK_SOCKET` and `ARCHITECT_HOOK_TOKEN`;
//! - the CLI's hook settings ([`crate::agents`]).
//!
//! The hook protocol is one JSON line each way over a Unix stream socket: a
//! [`HookMessage`] in, a [`HookAnswer`] out. A connection from another user (checked with
//! `SO_PEERCRED`), or with the wrong token, is refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::marks;
use crate::agents::signal::{HookAnswer, HookMessage};
use crate::config::ResolvedSession;
use crate::runtime_dir::RuntimeDir;

/// Environment variable naming the hook socket.
pub const HOOK_SOCKET_ENV: &str = "ARCHITECT_HOOK_SOCKET";
/// Environment variable holding the session's hook token.
pub const HOOK_TOKEN_ENV: &str = "ARCHITECT_HOOK_TOKEN";
/// The argument a profile writes where the shell integration's start-up file goes.
pub const SHELL_INTEGRATION_ARG: &str = "{shell_integration}";

/// Longest hook message, in bytes (a reply or a tool input can be long).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// A hook connection that has not sent its whole message by then is dropped.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a session program is started with besides its configured command line.
#[derive(Debug)]
pub struct Integration {
    /// The arguments, `{shell_integration}` replaced.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// The marks' nonce, when the shell integration is installed.
    pub nonce: Option<String>,
    /// The hook socket, when the profile has hooks.
    pub hooks: Option<HookServer>,
    /// The runtime directory (kept while the program runs).
    pub dir: Option<RuntimeDir>,
}

impl Integration {
    /// Prepares the shell integration and the hooks the session's profile asks for.
    /// `id` names the runtime directory (unique per program start).
    ///
    /// # Errors
    /// When the runtime directory, a file in it or the socket cannot be made.
    pub fn prepare(cfg: &ResolvedSession, id: &str) -> std::io::Result<Self> {
        let profile = &cfg.profile.spec;
        let wants_shell = profile.shell_integration.is_some()
            && cfg.args.iter().any(|a| a == SHELL_INTEGRATION_ARG);
        let wants_hooks = profile.hooks.is_some();
        let mut me = Self {
            args: cfg.args.clone(),
            env: BTreeMap::new(),
            nonce: None,
            hooks: None,
            dir: None,
        };
        if !wants_shell && !wants_hooks {
            // A placeholder nobody fills would reach the program as is: drop it.
            me.args.retain(|a| a != SHELL_INTEGRATION_ARG);
            return Ok(me);
        }
        let dir = RuntimeDir::create(id)?;
        if wants_shell {
            let nonce = marks::new_nonce();
            let rc = dir.write("bashrc", &marks::bash_rcfile(&nonce))?;
            let rc = rc.display().to_string();
            for a in &mut me.args {
                if a == SHELL_INTEGRATION_ARG {
                    a.clone_from(&rc);
                }
            }
            me.nonce = Some(nonce);
        }
        if let Some(spec) = &profile.hooks {
            let server = HookServer::bind(&dir.path().join("hook.sock"))?;
            me.env
                .insert(HOOK_SOCKET_ENV.into(), server.path().display().to_string());
            me.env
                .insert(HOOK_TOKEN_ENV.into(), server.token().to_string());
            let installed = crate::agents::install(&spec.agent, &dir, cfg)?;
            me.args.extend(installed.args);
            me.env.extend(installed.env);
            me.hooks = Some(server);
        }
        me.dir = Some(dir);
        Ok(me)
    }
}

fn annotate(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// One hook connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    stream: UnixStream,
    buf: Vec<u8>,
    opened: Instant,
    /// Read whole; waiting for the answer.
    answered_later: bool,
}

/// The session's hook socket (see the module docs).
#[derive(Debug)]
pub struct HookServer {
    listener: UnixListener,
    path: PathBuf,
    token: String,
    conns: Vec<Conn>,
    next_id: u64,
}

impl HookServer {
    /// Binds a socket at `path` (mode 0600) with a fresh token.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let listener = UnixListener::bind(path).map_err(|e| annotate(e, "binding", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| annotate(e, "setting the mode of", path))?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            token: marks::new_nonce(),
            conns: Vec::new(),
            next_id: 1,
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token hooks must send.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The descriptors to poll for input: the listener, then each open connection.
    #[must_use]
    pub fn poll_fds(&self) -> Vec<i32> {
        std::iter::once(self.listener.as_raw_fd())
            .chain(
                self.conns
                    .iter()
                    .filter(|c| !c.answered_later)
                    .map(|c| c.stream.as_raw_fd()),
            )
            .collect()
    }

    /// Accepts new connections and reads what has arrived. Returns each whole message
    /// with its connection id; messages with the wrong token or from another user are
    /// answered `Refused` here and not returned.
    pub fn receive(&mut self) -> Vec<(u64, HookMessage)> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if !same_user(&stream) {
                        continue; // dropped: closes it
                    }
                    let _ = stream.set_nonblocking(true);
                    self.conns.push(Conn {
                        id: self.next_id,
                        stream,
                        buf: Vec::new(),
                        opened: Instant::now(),
                        answered_later: false,
                    });
                    self.next_id += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        let mut refuse = Vec::new();
        let mut closed = Vec::new();
        for c in &mut self.conns {
            if c.answered_later {
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        if !c.buf.contains(&b'\n') && !c.buf.is_empty() {
                            c.buf.push(b'\n'); // a last line without its newline
                        } else if c.buf.is_empty() {
                            closed.push(c.id);
                        }
                        break;
                    }
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
                if c.buf.len() > MAX_MESSAGE {
                    refuse.push((c.id, "message too long".to_string()));
                    break;
                }
            }
            if let Some(end) = c.buf.iter().position(|b| *b == b'\n') {
                c.answered_later = true;
                match serde_json::from_slice::<HookMessage>(&c.buf[..end]) {
                    Ok(m) if m.token == self.token => out.push((c.id, m)),
                    Ok(_) => refuse.push((c.id, "wrong token for this session".into())),
                    Err(e) => refuse.push((c.id, format!("not a hook message: {e}"))),
                }
            } else if c.opened.elapsed() > CONN_TIMEOUT {
                closed.push(c.id);
            }
        }
        self.conns.retain(|c| !closed.contains(&c.id));
        for (id, reason) in refuse {
            tracing::warn!("hook connection refused: {reason}");
            self.answer(id, &HookAnswer::Refused { reason });
        }
        out
    }

    /// Sends `answer` on connection `id` and closes it.
    pub fn answer(&mut self, id: u64, answer: &HookAnswer) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let c = self.conns.swap_remove(i);
        let _ = c.stream.set_nonblocking(false);
        let _ = c.stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = serde_json::to_vec(answer).unwrap_or_default();
        line.push(b'\n');
        let _ = (&c.stream).write_all(&line);
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the peer of `s` runs as this process's user (`SO_PEERCRED`).
fn same_user(s: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid cannot fail.
    rc == 0 && cred.uid == unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::signal::Signal;

    #[test]
    fn a_message_with_the_token_is_received_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = HookServer::bind(&dir.path().join("h.sock")).unwrap();
        let msg = HookMessage {
            token: server.token().to_string(),
            agent: "claude-code".into(),
            event: "UserPromptSubmit".into(),
            signal: Signal::PromptSubmitted { prompt: None },
        };
        let mut client = UnixStream::connect(server.path()).unwrap();
        let mut line = serde_json::to_vec(&msg).unwrap();
        line.push(b'\n');
        client.write_all(&line).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            let got = server.receive();
            if !got.is_empty() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, msg);
        server.answer(got[0].0, &HookAnswer::Ok);
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "{\"answer\":\"ok\"}\n");
    }

    #[test]
    fn a_wrong_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = HookServer::bind(&dir.path().join("h.sock")).unwrap();
        let mut client = UnixStream::connect(server.path()).unwrap();
        client
            .write_all(b"{\"token\":\"guess\",\"agent\":\"x\",\"event\":\"Stop\",\"signal\":{\"signal\":\"other\"}}\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut reply = String::new();
        while reply.is_empty() && Instant::now() < deadline {
            assert!(server.receive().is_empty());
            client
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let _ = client.read_to_string(&mut reply);
        }
        assert!(reply.contains("\"refused\""), "{reply}");
        let mode = std::fs::metadata(server.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
