//! `architect attach SESSION` and `architect watch SESSION`: a person's terminal on a
//! session's live screen, through a node-local Unix socket of the daemon.
//!
//! - [`protocol`]: the frames (pure);
//! - [`viewers`]: the session thread's clients — a full frame, then screen diffs;
//! - [`server`]: the daemon's socket, which reads a client's hello and hands it on;
//! - [`client`]: the CLI's side — raw mode, keys, the detach key.
//!
//! Who is attached, and what it means for scheduling, is the session's own business:
//! [`crate::session::presence`].
//!
//! The socket is [`socket_path`]: in the per-user runtime directory (mode 0700, the same
//! that holds the sessions' hook sockets), never in the spool, which may be synced. The
//! socket itself is 0600 and the daemon checks that a client runs as the same user.

pub mod client;
pub mod protocol;
pub mod server;
pub mod viewers;

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::spool::Spool;

pub use protocol::Mode;

/// The daemon's attach socket for `spool`:
/// `<runtime root>/daemon-<16 hex digits>.sock`, the digits the start of the SHA-256 of
/// the spool's absolute path (its node directory in a fleet), so that daemons of
/// different spools on one machine have different sockets and every path fits in a
/// socket address (108 bytes). The runtime root is `$XDG_RUNTIME_DIR/architect` or
/// `/tmp/architect-<uid>` ([`crate::runtime_dir::runtime_root`]).
///
/// # Errors
/// When the runtime root cannot be created or is not private.
pub fn socket_path(spool: &Spool) -> std::io::Result<PathBuf> {
    let root = crate::runtime_dir::runtime_root()?;
    let abs = std::fs::canonicalize(spool.root()).unwrap_or_else(|_| {
        std::path::absolute(spool.root()).unwrap_or_else(|_| spool.root().to_path_buf())
    });
    let digest = Sha256::digest(abs.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(root.join(format!("daemon-{hex}.sock")))
}
