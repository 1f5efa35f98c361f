//! `architect replay TASK`: plays a task's terminal recording (asciicast v2, written by
//! the daemon under `recordings/`) in this terminal.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use architect::record::{self, asciicast, replay};
use architect::spool::Spool;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The files are asciicast v2: `asciinema play FILE` plays them too \
    (`--print` names no file; they are spool/recordings/<task>.cast, or under \
    spool/nodes/<node>/recordings/ in a fleet).\n\nExamples:\n  \
    architect replay fix-login-bug --speed 4 --idle-cap 2\n  \
    architect replay fix-login-bug --print | less -R"
)]
pub struct ReplayArgs {
    /// Task id.
    pub id: String,
    /// Playback speed: 2 plays twice as fast.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
    /// Longest pause between two outputs, in seconds of the recording (before --speed).
    #[arg(long, value_name = "S")]
    pub idle_cap: Option<f64>,
    /// Write the whole output at once, without the recorded pauses (for pipes and files).
    #[arg(long, visible_alias = "no-delay")]
    pub print: bool,
    /// Which attempt of the task (default: the last one recorded).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
}

/// Plays the recording.
///
/// # Errors
/// A bad argument, no recording (saying where it looked), a file that is not asciicast v2.
pub fn run(spool: &Spool, args: &ReplayArgs) -> Result<ExitCode> {
    if !architect::types::valid_id(&args.id) {
        bail!("{:?} is not a task id (^[A-Za-z0-9_-]{{1,64}}$)", args.id);
    }
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed {} must be a number above 0", args.speed);
    }
    if let Some(cap) = args.idle_cap {
        if !(cap.is_finite() && cap >= 0.0) {
            bail!("--idle-cap {cap} must be 0 or more seconds");
        }
    }
    let found = record::find_task(spool, &args.id);
    let Some((attempt, path)) = (match args.attempt {
        Some(n) => found.files.iter().find(|(a, _)| *a == n),
        None => found.files.last(),
    }) else {
        let looked: Vec<String> = found
            .looked_in
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let what = match args.attempt {
            Some(n) => format!(
                "attempt {n} of task {} ({})",
                args.id,
                record::task_file_name(&args.id, n)
            ),
            None => format!("task {} ({}.cast)", args.id, args.id),
        };
        let why = if !found.files.is_empty() {
            let have: Vec<String> = found.files.iter().map(|(a, _)| a.to_string()).collect();
            format!("recorded attempts: {}", have.join(", "))
        } else if spool.find_in_fleet(&args.id).is_err() {
            "no such task in the spool either".to_string()
        } else {
            "the task ran on a provider session, before recordings were on, with \
             [recording] enabled = false, or its file was pruned ([recording] keep_days, \
             keep_total_bytes)"
                .to_string()
        };
        bail!(
            "no recording of {what}: looked in {} ({why})",
            looked.join(", ")
        );
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the recording {}", path.display()))?;
    let cast = asciicast::parse(&text)
        .with_context(|| format!("{} is not an asciicast v2 recording", path.display()))?;
    let mut out = std::io::stdout().lock();
    if args.print {
        out.write_all(cast.output().as_bytes())?;
    } else {
        let attempts = found.files.len();
        eprintln!(
            "replaying {} (attempt {attempt} of {attempts} recorded), {}x{}, speed {}",
            path.display(),
            cast.header.width,
            cast.header.height,
            args.speed
        );
        for frame in replay::frames(&cast.events, args.speed, args.idle_cap) {
            if !frame.delay.is_zero() {
                out.flush()?;
                std::thread::sleep(frame.delay);
            }
            out.write_all(frame.data.as_bytes())?;
        }
    }
    out.flush()?;
    for label in cast.markers() {
        eprintln!("[recording] {label}");
    }
    if cast.torn_tail {
        eprintln!("[recording] its last line was cut short (still being written?) and was skipped");
    }
    Ok(ExitCode::SUCCESS)
}
