//! Tracing set-up: `-v` counts map to levels (warn, info, debug, trace), `-q` to errors
//! only, and `ARCHITECT_LOG` (an `EnvFilter` directive such as `architect=debug`)
//! overrides both. Output goes to stderr, or to a file (non-blocking writer) when asked:
//! created 0600, never through a symlink, appended to. Every line passes through the
//! secret redactor first (at `-vv` the daemon traces screen rows, which can hold a key).
//! Tracing is for operators; the JSONL event log is the product's record.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

/// A writer that redacts secrets from each write (tracing writes one whole event per
/// `write_all`).
struct Redacting<W: Write>(W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(architect::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Opens the log file: created 0600, a symlink refused, an existing file made 0600.
fn open_log(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| {
            format!(
                "opening the log file {} (a symlink is refused)",
                path.display()
            )
        })?;
    let meta = f.metadata()?;
    anyhow::ensure!(
        meta.is_file(),
        "the log file {} is not a regular file",
        path.display()
    );
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Installs the subscriber. Keep the returned guard alive: it flushes the file writer.
///
/// # Errors
/// When the log file cannot be opened safely.
pub fn init(
    verbose: u8,
    quiet: bool,
    file: Option<&Path>,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("ARCHITECT_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let (writer, guard) = tracing_appender::non_blocking(open_log(path)?);
            let _ = builder
                .with_ansi(false)
                .with_writer(move || Redacting(writer.clone()))
                .try_init();
            Ok(Some(guard))
        }
        None => {
            use std::io::IsTerminal;
            let ansi = std::io::stderr().is_terminal();
            let _ = builder
                .with_ansi(ansi)
                .with_writer(|| Redacting(std::io::stderr()))
                .try_init();
            Ok(None)
        }
    }
}
