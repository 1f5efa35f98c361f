//! `architect init`: the spool directories and a config skeleton with working shell
//! sessions.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use architect::config::{DEFAULT_ARCHITECT, DEFAULT_SESSIONS};
use architect::durable;
use architect::policy::DEFAULT_POLICY;
use architect::profile::BUILTIN;
use architect::spool::Spool;

pub fn run(spool: &Spool, config: &Path, force: bool) -> Result<ExitCode> {
    spool.init().context("creating the spool")?;
    println!(
        "spool   {}/ (inbox, pending, active, done, failed, cancelled, rejected, sessions, log)",
        spool.root().display()
    );
    durable::create_dir(&config.join("profiles"))?;
    let mut files: Vec<(std::path::PathBuf, &str)> = vec![
        (config.join("sessions.toml"), DEFAULT_SESSIONS),
        (config.join("architect.toml"), DEFAULT_ARCHITECT),
        (config.join("policy.toml"), DEFAULT_POLICY),
        (
            config.join("prices.toml"),
            architect::config::prices::DEFAULT_PRICES,
        ),
    ];
    for (name, text) in BUILTIN {
        files.push((config.join("profiles").join(format!("{name}.toml")), text));
    }
    for (path, text) in files {
        if path.exists() && !force {
            println!("kept    {} (exists; --force overwrites)", path.display());
            continue;
        }
        durable::write_atomic(&path, text.as_bytes())?;
        println!("wrote   {}", path.display());
    }
    println!("\nNext: architect daemon -v   (then drop a task: echo '{{\"prompt\": \"echo hello\"}}' > {}/inbox/hello.json)", spool.root().display());
    Ok(ExitCode::SUCCESS)
}
