//! `architect top`: a live view of the fleet in the terminal (ratatui over crossterm).
//!
//! [`snapshot`] reads the spool, [`app`] holds what is shown and turns keys into actions,
//! and this file owns the terminal: it draws, waits for a key or the next refresh, and
//! carries actions out with the same functions as `architect approve|deny|cancel|retry`.

mod app;
mod snapshot;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyEventKind};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::buffer::Buffer;
use ratatui::Terminal;

use architect::spool::Spool;

use app::{Action, App};
use snapshot::{LogFigures, Snapshot};

/// `architect top`'s options.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// How often the data is read again, ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    pub interval_ms: u64,
    /// Print one frame as plain text and exit (for scripts; no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// The frame's width for `--once`, in columns.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u16).range(60..=1000))]
    pub width: u16,
}

/// Runs `architect top` on `spool` (the CLI's, a fleet member's in a fleet).
///
/// # Errors
/// The terminal cannot be set up or drawn on.
pub fn run(spool: &Spool, config: &Path, args: &TopArgs) -> Result<ExitCode> {
    let attach = attach_available();
    let mut log = LogFigures::default();
    let app = App::new(Snapshot::load(spool, config, &mut log), attach);
    if args.once {
        let text = render_text(&app, args.width);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let interval = Duration::from_millis(args.interval_ms);
    let mut screen = Screen::enter()?;
    interactive(&mut screen, app, spool, config, &mut log, interval)?;
    drop(screen);
    Ok(ExitCode::SUCCESS)
}

/// Whether this build has an `attach` verb (it comes with its own change).
fn attach_available() -> bool {
    use clap::CommandFactory;
    super::Cli::command().find_subcommand("attach").is_some()
}

/// One frame of `app`, `width` columns by as many rows as it needs, as plain text: each
/// row's symbols, trailing blanks removed, one line per row.
pub fn render_text(app: &App, width: u16) -> String {
    let height = app.full_height();
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).expect("a test backend never fails");
    terminal
        .draw(|f| app.render(f))
        .expect("a test backend never fails");
    buffer_text(terminal.backend().buffer())
}

/// A buffer's symbols as text, a line per row, trailing blanks removed.
pub fn buffer_text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The terminal in raw mode on the alternate screen; restored when dropped (also on an
/// error or a panic unwinding through `run`).
struct Screen {
    terminal: Terminal<CrosstermBackend<std::io::Stdout>>,
}

impl Screen {
    fn enter() -> Result<Self> {
        terminal::enable_raw_mode().context(
            "putting the terminal in raw mode (architect top needs a terminal; \
             `architect top --once` prints one frame without one)",
        )?;
        crossterm::execute!(std::io::stdout(), EnterAlternateScreen)
            .context("switching to the alternate screen")?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        Ok(Screen { terminal })
    }

    fn leave() {
        let _ = terminal::disable_raw_mode();
        let _ = crossterm::execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        Screen::leave();
    }
}

fn interactive(
    screen: &mut Screen,
    mut app: App,
    spool: &Spool,
    config: &Path,
    log: &mut LogFigures,
    interval: Duration,
) -> Result<()> {
    let mut next_load = Instant::now() + interval;
    loop {
        screen.terminal.draw(|f| app.render(f))?;
        let wait = next_load.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    match app.handle_key(key) {
                        Some(Action::Quit) => return Ok(()),
                        Some(Action::Attach { session }) => {
                            attach(screen, spool, config, &session, &mut app)?;
                            next_load = Instant::now();
                        }
                        Some(action) => {
                            app.message = Some(perform(spool, &action));
                            // Show the daemon's answer soon.
                            next_load = Instant::now() + Duration::from_millis(200);
                        }
                        None => {}
                    }
                }
                _ => {} // a resize or another event: redraw
            }
        }
        if Instant::now() >= next_load {
            app.set_snapshot(Snapshot::load(spool, config, log));
            next_load = Instant::now() + interval;
        }
    }
}

/// Carries out a write action with the CLI verbs' own checks and control requests;
/// returns the line to show.
fn perform(spool: &Spool, action: &Action) -> String {
    let result = match action {
        Action::Approve { session, question } | Action::Deny { session, question } => {
            let approve = matches!(action, Action::Approve { .. });
            super::observe::request_answer(spool, session, Some(question), approve).map(|q| {
                format!(
                    "{} requested: {} on {session}",
                    if approve { "approve" } else { "deny" },
                    q.question
                        .action
                        .as_deref()
                        .unwrap_or("(action unreadable)")
                )
            })
        }
        Action::Cancel { task } => super::tasks::request_cancel(spool, task)
            .map(|()| format!("cancel requested for {task}")),
        Action::Retry { task } => {
            super::tasks::request_retry(spool, task).map(|()| format!("retry requested for {task}"))
        }
        Action::Quit | Action::Attach { .. } => return String::new(),
    };
    result.unwrap_or_else(|e| format!("{e:#}"))
}

/// Hands the terminal to `architect attach SESSION` until it exits, then takes it back.
fn attach(
    screen: &mut Screen,
    spool: &Spool,
    config: &Path,
    session: &str,
    app: &mut App,
) -> Result<()> {
    Screen::leave();
    let exe: PathBuf = std::env::current_exe().context("finding the architect binary")?;
    let status = std::process::Command::new(exe)
        .arg("--spool")
        .arg(spool.root())
        .arg("--config")
        .arg(config)
        .arg("attach")
        .arg(session)
        .status();
    terminal::enable_raw_mode()?;
    crossterm::execute!(std::io::stdout(), EnterAlternateScreen)?;
    screen.terminal.clear()?;
    app.message = Some(match status {
        Ok(s) if s.success() => format!("detached from {session}"),
        Ok(s) => format!("architect attach {session} ended with {s}"),
        Err(e) => format!("could not run architect attach {session}: {e}"),
    });
    Ok(())
}
