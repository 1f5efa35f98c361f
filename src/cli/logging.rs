//! Tracing set-up: `-v` counts map to levels (warn, info, debug, trace), `-q` to errors
//! only, and `ARCHITECT_LOG` (an `EnvFilter` directive such as `architect=debug`)
//! overrides both. Output goes to stderr, or to a file (non-blocking writer) when asked.
//! Tracing is for operators; the JSONL event log is the product's record.

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber. Keep the returned guard alive: it flushes the file writer.
pub fn init(
    verbose: u8,
    quiet: bool,
    file: Option<&Path>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
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
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .map_or_else(|| "architect.log".into(), |n| n.to_os_string());
            let appender = tracing_appender::rolling::never(dir, name);
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let _ = builder.with_ansi(false).with_writer(writer).try_init();
            Some(guard)
        }
        None => {
            use std::io::IsTerminal;
            let ansi = std::io::stderr().is_terminal();
            let _ = builder
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .try_init();
            None
        }
    }
}
