//! The daemon's attach socket: a thread accepts connections, checks the peer runs as
//! this user, reads its hello (within [`HELLO_TIMEOUT`]) and hands it to the scheduler
//! loop, which gives it to the session's thread or refuses it with a reason.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{read_frame, Frame, Hello, VERSION};

/// How long a client has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that said hello, for the scheduler loop.
#[derive(Debug)]
pub struct AttachRequest {
    /// What it asks.
    pub hello: Hello,
    /// Its process id (from the socket's peer credentials).
    pub pid: Option<u32>,
    /// Its connection (blocking).
    pub stream: UnixStream,
}

/// Refuses a client: an `E` frame with `reason`, then close.
pub fn refuse(mut stream: UnixStream, reason: &str) {
    use std::io::Write;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&Frame::End(reason.to_string()).encode());
}

/// The listening socket and its thread; stopped and the socket file removed on drop.
#[derive(Debug)]
pub struct AttachServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AttachServer {
    /// Listens on `path` (a stale socket there is replaced: the caller holds the daemon
    /// lock), mode 0600, and sends every client's request to `requests`.
    ///
    /// # Errors
    /// When the socket cannot be bound or its mode set.
    pub fn start(
        path: &Path,
        requests: tokio::sync::mpsc::UnboundedSender<AttachRequest>,
    ) -> std::io::Result<Self> {
        let annotate = |what: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(annotate("removing the stale socket", e)),
        }
        let listener = UnixListener::bind(path).map_err(|e| annotate("binding", e))?;
        // The directory is 0700 already; the socket is closed to others too.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| annotate("setting mode 0600 on", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("attach-socket".into())
            .spawn(move || accept_loop(&listener, &flag, &requests))
            .map_err(|e| annotate("starting the thread for", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: &UnixListener,
    stop: &AtomicBool,
    requests: &tokio::sync::mpsc::UnboundedSender<AttachRequest>,
) {
    loop {
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("attach socket: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Some(req) = greet(stream) {
            if requests.send(req).is_err() {
                return;
            }
        }
    }
}

/// Checks the peer and reads its hello; refuses what is not a valid client.
fn greet(mut stream: UnixStream) -> Option<AttachRequest> {
    let (uid, pid) = peer(&stream);
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if uid != Some(me) {
        tracing::warn!("attach socket: refused a client of uid {uid:?}");
        refuse(stream, "permission denied: the daemon runs as another user");
        return None;
    }
    let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
    let hello = match read_frame(&mut stream) {
        Ok(Some(Frame::Hello(h))) => h,
        Ok(Some(_)) => {
            refuse(stream, "the first frame must be a hello");
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            refuse(stream, &format!("no valid hello: {e}"));
            return None;
        }
    };
    if hello.version != VERSION {
        refuse(
            stream,
            &format!(
                "protocol version {} is not spoken here (the daemon speaks {VERSION}): use the \
                 same architect as the daemon",
                hello.version
            ),
        );
        return None;
    }
    let _ = stream.set_read_timeout(None);
    Some(AttachRequest { hello, pid, stream })
}

/// The peer's uid and pid (`SO_PEERCRED`).
fn peer(stream: &UnixStream) -> (Option<u32>, Option<u32>) {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return (None, None);
    }
    (Some(cred.uid), u32::try_from(cred.pid).ok())
}
