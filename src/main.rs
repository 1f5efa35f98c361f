//! The `architect` binary: parse the command line, set up tracing, run the command.

mod cli;
#[allow(dead_code, clippy::all, clippy::pedantic)]
#[path = "../tools/fake-agent/main.rs"]
mod fake_agent;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `architect fake-agent …` runs the fake agent TUI (tests, demo, benchmark).
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some("fake-agent") {
        fake_agent::run(args);
        return ExitCode::SUCCESS;
    }
    let cli = cli::Cli::parse();
    if !cli.is_long_running() {
        // A listing piped into `head` ends quietly, as CLIs do. The daemon keeps Rust's
        // default (SIGPIPE ignored): it writes to sockets whose peers may be gone.
        // SAFETY: setting a signal disposition before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let _guard = match cli::logging::init(cli.verbose, cli.quiet, cli.log_file()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
