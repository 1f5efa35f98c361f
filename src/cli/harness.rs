//! What the benchmark and the demo run on: `architect daemon` (this executable) in a child
//! process, fleets of fake agents, the mock model server (`tools/mock-llm`), waiting for
//! the spool to get somewhere, and percentiles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use architect::durable;
use architect::session::SessionFile;
use architect::spool::Spool;

pub(super) struct Daemon(pub(super) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child.
        unsafe {
            libc::kill(i32::try_from(self.0.id()).unwrap_or(0), libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// `tools/mock-llm` on a free loopback port (killed on drop).
pub(super) struct MockServer {
    child: Child,
    /// Its port.
    pub(super) port: u16,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mock model server's script in this checkout, if there is one.
pub(super) fn mock_script() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mock-llm/mock_llm.py");
    p.exists().then_some(p)
}

/// Starts the mock model server with `args` (after `--port 0`).
pub(super) fn start_mock(server: &Path, args: &[&std::ffi::OsStr]) -> Result<MockServer> {
    use std::io::{BufRead, BufReader};
    let mut child = ends_with_us(&mut Command::new("python3"))
        .arg(server)
        .args(["--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the mock model server (python3)")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("mock stdout")?).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok());
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the mock model server did not start: {line:?}");
    };
    Ok(MockServer { child, port })
}

/// Makes `cmd`'s process get SIGTERM when the thread that starts it ends (Linux
/// `PR_SET_PDEATHSIG`): a benchmark or demo killed by a signal leaves no daemon or mock
/// server behind (left-over benchmark daemons skewed the next runs' figures).
fn ends_with_us(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// `architect daemon` (this executable) on `spool` and `config`, its tracing (`-v`) in
/// `log`, output discarded; it gets SIGTERM if this process dies first.
pub(super) fn spawn_daemon(spool: &Spool, config: &Path, log: &Path) -> Result<Child> {
    let exe = std::env::current_exe()?;
    ends_with_us(&mut Command::new(&exe))
        .arg("--spool")
        .arg(spool.root())
        .arg("--config")
        .arg(config)
        .args(["daemon", "-v"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("starting `architect daemon`")
}

/// How many sessions of a spool are idle (their `sessions/*.json`).
pub(super) fn idle_sessions(spool: &Spool) -> usize {
    std::fs::read_dir(spool.dir("sessions")).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<SessionFile>(&b).ok())
            .filter(|s| s.state == architect::session::SessionState::Idle)
            .count()
    })
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(super) fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

pub(super) fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(std::result::Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    })
}

pub(super) fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting for {what}", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// A spool and config in `root` with `agents` fake agents (`--work-ms work_ms`), and a
/// daemon running them (stopped on drop). Returns the spool, the config directory and
/// the daemon.
pub(super) fn start_fleet(
    root: &Path,
    agents: usize,
    work_ms: u64,
) -> Result<(Spool, PathBuf, Daemon)> {
    let exe = std::env::current_exe()?;
    let spool = Spool::new(root.join("spool"));
    let config = root.join("config");
    spool.init()?;
    durable::create_dir(&config)?;
    let mut sessions = String::new();
    for i in 0..agents {
        sessions.push_str(&format!(
            "[[session]]\nname = \"agent-{i:03}\"\nprofile = \"fake-agent\"\ncommand = \"{}\"\nargs = [\"fake-agent\", \"--work-ms\", \"{work_ms}\"]\n\n",
            exe.display()
        ));
    }
    durable::write_atomic(&config.join("sessions.toml"), sessions.as_bytes())?;
    durable::write_atomic(
        &config.join("architect.toml"),
        b"[node]\nname = \"bench\"\n",
    )?;
    let daemon = Daemon(spawn_daemon(&spool, &config, &root.join("daemon.log"))?);
    wait_until("every agent to be idle", Duration::from_secs(120), || {
        idle_sessions(&spool) == agents
    })?;
    Ok((spool, config, daemon))
}
