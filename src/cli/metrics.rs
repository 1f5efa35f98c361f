//! `architect metrics`: the Prometheus metrics ([`architect::metrics`]) as text, on stdout
//! or written atomically to a file for node_exporter's textfile collector.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use architect::metrics::Scraper;
use architect::spool::Spool;

/// Prints the metrics, or writes them to `output` (temp file, rename; mode 0644).
///
/// # Errors
/// A log that cannot be read, or a file that cannot be written.
pub fn run(spool: &Spool, output: Option<&Path>) -> Result<ExitCode> {
    let text = Scraper::new()
        .scrape(spool)
        .context("reading the event log for metrics")?;
    match output {
        None => print!("{text}"),
        Some(path) => {
            if !path
                .parent()
                .is_none_or(|d| d.as_os_str().is_empty() || d.is_dir())
            {
                anyhow::bail!(
                    "writing metrics to {}: its directory does not exist (node_exporter's \
                     --collector.textfile.directory names the one to use)",
                    path.display()
                );
            }
            architect::durable::write_atomic_public(path, text.as_bytes())
                .with_context(|| format!("writing metrics to {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
