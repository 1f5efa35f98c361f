//! `architect attach SESSION` and `architect watch SESSION`: the session's live screen
//! here, through the daemon's attach socket ([`architect::attach`]).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use architect::attach::client::{self, ClientError, Outcome, DEFAULT_DETACH_KEY};
use architect::attach::Mode;
use architect::spool::Spool;

/// `attach` / `watch` arguments.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Session name (`architect sessions` lists them).
    pub session: String,
    /// The key that detaches: a control key such as `ctrl-]` (the default), `ctrl-a`, `^q`.
    #[arg(long, value_name = "KEY", default_value = "ctrl-]")]
    pub detach_key: String,
}

/// Runs the client; exits 0 on a detach, 1 when the session or the daemon ended it,
/// 128 + n after signal n.
pub fn run(spool: &Spool, args: &AttachArgs, mode: Mode) -> Result<ExitCode> {
    let detach_key = if args.detach_key == "ctrl-]" {
        DEFAULT_DETACH_KEY
    } else {
        client::parse_detach_key(&args.detach_key).map_err(anyhow::Error::msg)?
    };
    let socket = architect::attach::socket_path(spool)?;
    if !socket.exists() {
        if let Some(holder) = architect::daemon::DaemonLock::is_held(spool) {
            bail!(
                "the daemon of spool {} runs ({holder}) but has no attach socket at {}: it may be \
                 an older architect, or could not open it (see its log)",
                spool.root().display(),
                socket.display()
            );
        }
        bail!(
            "the daemon is not running on spool {} (no socket at {}): start it with \
             `architect daemon`",
            spool.root().display(),
            socket.display()
        );
    }
    let opts = client::Options {
        socket: socket.clone(),
        session: args.session.clone(),
        mode,
        detach_key,
    };
    match client::run(&opts) {
        Ok((outcome, welcome)) => {
            let key = client::key_name(detach_key);
            match outcome {
                Outcome::Detached => {
                    eprintln!("[detached from {}]", welcome.session);
                    Ok(ExitCode::SUCCESS)
                }
                Outcome::Ended(reason) => {
                    eprintln!("[{}: {reason}]", welcome.session);
                    Ok(ExitCode::FAILURE)
                }
                Outcome::Lost => {
                    eprintln!(
                        "[{}: the connection to the daemon closed (daemon stopped or killed); \
                         {key} was not needed]",
                        welcome.session
                    );
                    Ok(ExitCode::FAILURE)
                }
                Outcome::Signal(n) => {
                    eprintln!("[{}: ended by signal {n}; detached]", welcome.session);
                    Ok(ExitCode::from(u8::try_from(128 + n).unwrap_or(1)))
                }
            }
        }
        Err(ClientError::Connect { path, error }) => match error.kind() {
            std::io::ErrorKind::PermissionDenied => bail!(
                "cannot connect to {}: permission denied (the socket is 0600, owned by the user \
                 who runs the daemon: attach as that user)",
                path.display()
            ),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => bail!(
                "the daemon is not running on spool {} ({} is left from a daemon that stopped): \
                 start it with `architect daemon`",
                spool.root().display(),
                path.display()
            ),
            _ => bail!("cannot connect to {}: {error}", path.display()),
        },
        Err(ClientError::Refused(reason)) => bail!("{reason}"),
        Err(e) => Err(e.into()),
    }
}
