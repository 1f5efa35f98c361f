//! Test fixtures: a temporary spool + config, the real `architect` binary as the daemon
//! (RAII guard), plain-file task drops, and `wait_for` pollers instead of sleeps.

#![allow(dead_code)]

pub mod sync;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use architect::log::{read_events, Event, Payload};
use architect::session::{PendingApproval, SessionFile, SessionState};
use architect::spool::task::{TaskRecord, TaskState};
use architect::spool::Spool;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_architect");
/// The fake agent TUI.
pub const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_fake-agent");

/// Fast daemon timings for tests.
pub const FAST: &str = r#"[node]
name = "test"

[daemon]
reconcile_interval_ms = 1000
retry_backoff_ms = 100
retry_backoff_max_ms = 1000
restart_backoff_ms = 100
restart_backoff_max_ms = 1000
inbox_settle_ms = 200
"#;

/// One shell session called `sh-1`.
pub const ONE_SHELL: &str = "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\nrole = \"shell\"\n";

/// A fake-agent session called `agent-1` with extra flags.
pub fn fake_agent_session(name: &str, flags: &[&str]) -> String {
    let args: Vec<String> = flags.iter().map(|f| format!("{f:?}")).collect();
    format!(
        "[[session]]\nname = \"{name}\"\nprofile = \"fake-agent\"\ncommand = \"{FAKE_AGENT}\"\nargs = [{}]\nrole = \"agent\"\n",
        args.join(", ")
    )
}

/// An event of one type: its envelope and typed payload ([`Env::events_of`]).
#[derive(Debug, Clone)]
pub struct Of<T> {
    pub ts: chrono::DateTime<chrono::Utc>,
    pub task_id: Option<String>,
    pub session: Option<String>,
    pub data: T,
}

/// A scratch spool and config.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub spool: PathBuf,
    pub config: PathBuf,
}

/// A running daemon; SIGTERM and wait on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, as in a crash.
    pub fn kill9(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Env {
    /// A spool and a config with `sessions` as `sessions.toml` and fast timings.
    pub fn new(sessions: &str) -> Self {
        Self::at(tempfile::tempdir().unwrap(), sessions)
    }

    /// [`Env::new`] in `dir` (whose `spool/` may be a mount point already).
    pub fn at(dir: tempfile::TempDir, sessions: &str) -> Self {
        let spool = dir.path().join("spool");
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("sessions.toml"), sessions).unwrap();
        std::fs::write(config.join("architect.toml"), FAST).unwrap();
        Spool::new(&spool).init().unwrap();
        Self { dir, spool, config }
    }

    pub fn spool(&self) -> Spool {
        Spool::new(&self.spool)
    }

    /// `architect --spool … --config … <args>`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--spool")
            .arg(&self.spool)
            .arg("--config")
            .arg(&self.config);
        c.stdin(Stdio::null());
        c
    }

    /// Runs the CLI and returns its output (whatever the exit status).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs the CLI, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "architect {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts `architect daemon -vv` (tracing to `daemon-N.log`).
    pub fn daemon(&self) -> Daemon {
        self.daemon_with_env(&[])
    }

    /// Starts the daemon with extra environment variables.
    pub fn daemon_with_env(&self, vars: &[(&str, &str)]) -> Daemon {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let child = self
            .cmd()
            .envs(vars.iter().copied())
            .args(["daemon", "-vv"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn inbox(&self) -> PathBuf {
        self.spool.join("inbox")
    }

    /// Drops a task file into the inbox with a plain write (open, write, close).
    pub fn drop_task(&self, name: &str, body: &str) {
        std::fs::write(self.inbox().join(name), body).unwrap();
    }

    pub fn state_of(&self, id: &str) -> Option<TaskState> {
        self.spool().locate(id)
    }

    /// Waits for task `id` to reach a final state and returns its record.
    pub fn wait_final(&self, id: &str, timeout: Duration) -> (TaskState, TaskRecord) {
        wait_for(&format!("task {id} to finish"), timeout, || {
            self.state_of(id).is_some_and(TaskState::is_final)
        });
        self.spool().find(id).unwrap()
    }

    pub fn events(&self) -> Vec<Event> {
        read_events(&self.spool.join("log")).unwrap()
    }

    /// The events of type `T`, with their payloads typed.
    pub fn events_of<T: Payload + Clone>(&self) -> Vec<Of<T>> {
        self.events()
            .into_iter()
            .filter_map(|e| {
                Some(Of {
                    data: e.payload::<T>()?.clone(),
                    ts: e.ts,
                    task_id: e.task_id,
                    session: e.session,
                })
            })
            .collect()
    }

    pub fn session(&self, name: &str) -> Option<SessionFile> {
        let p = self.spool.join("sessions").join(format!("{name}.json"));
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    }

    /// Waits until session `name` shows a question for a person; returns it.
    pub fn wait_approval(&self, name: &str, timeout: Duration) -> PendingApproval {
        let mut found = None;
        wait_for(&format!("a question on session {name}"), timeout, || {
            found = self.session(name).and_then(|s| s.approval);
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits until session `name` is idle.
    pub fn wait_idle(&self, name: &str, timeout: Duration) {
        wait_for(&format!("session {name} to be idle"), timeout, || {
            self.session(name)
                .is_some_and(|s| s.state == SessionState::Idle)
        });
    }

    /// Writes a config file atomically (as an editor that renames would).
    pub fn write_config(&self, name: &str, text: &str) {
        let tmp = self.config.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config.join(name)).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// The mock model server (`tools/mock-llm/mock_llm.py`), killed on drop.
pub struct Mock {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Mock {
    /// Starts it on a free port, logging requests to `log`, with `script` as the default
    /// script.
    pub fn start(log: PathBuf, script: Option<&str>) -> Self {
        Self::start_on(log, script, 0)
    }

    /// Starts it on `port` (0: a free one).
    pub fn start_on(log: PathBuf, script: Option<&str>, port: u16) -> Self {
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mock-llm/mock_llm.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&server)
            .args(["--port", &port.to_string(), "--log"])
            .arg(&log);
        if let Some(s) = script {
            cmd.args(["--script", s]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the mock model server with python3 ({e}): these tests need \
                     python3 on PATH (e.g. `apt-get install python3`)"
                )
            });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the mock server's first line");
        let port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the mock model server did not start: first line {line:?}");
        };
        Self { child, port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The model requests logged so far (one JSON object per request).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("path").is_some())
            .collect()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `body` to the mock's control endpoint `path` with `method` (curl-free: a raw
/// HTTP/1.1 request over TCP).
pub fn mock_control(port: u16, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Ids of every task file in a state directory.
pub fn ids_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect();
    v.sort();
    v
}
