//! `architect attach` and `architect watch` through the real binary: the client runs in
//! a pseudo-terminal of the test's (as in a person's terminal emulator), whose output is
//! rendered by a terminal emulator here; the daemon runs real bash sessions.

use std::fs::File;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use architect::log::event::{SessionAttached, SessionDetached, TaskAssigned};
use architect::session::SessionState;
use architect::spool::task::TaskState;
use expectrl::process::Process as _;

use crate::helper::{fake_agent_session, wait_for, Env, BIN, ONE_SHELL};

const T: Duration = Duration::from_secs(20);

const TWO_SHELLS: &str = "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\nrole = \"shell\"\n\n[[session]]\nname = \"sh-2\"\nprofile = \"shell\"\nrole = \"shell\"\n";

/// `architect attach|watch …` in a pseudo-terminal of 60 × 220 (the shell profile's
/// screen is 50 × 200), its output rendered into `term`.
struct PtyClient {
    proc: Option<expectrl::process::unix::UnixProcess>,
    pty: File,
    pid: i32,
    term: Arc<Mutex<vt100::Parser>>,
    raw: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PtyClient {
    fn start(env: &Env, args: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("--spool")
            .arg(&env.spool)
            .arg("--config")
            .arg(&env.config)
            .args(args);
        let mut proc = expectrl::process::unix::UnixProcess::spawn_command(cmd).unwrap();
        proc.set_window_size(220, 60).unwrap();
        let pid = proc.pid().as_raw();
        let pty = proc.get_raw_handle().unwrap();
        let mut read_end = pty.try_clone().unwrap();
        let term = Arc::new(Mutex::new(vt100::Parser::new(60, 220, 0)));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (t, r) = (term.clone(), raw.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            // Ends with EIO once the client has exited and closed the terminal.
            while let Ok(n) = read_end.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock().unwrap().process(&buf[..n]);
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            proc: Some(proc),
            pty,
            pid,
            term,
            raw,
            reader: Some(reader),
        }
    }

    fn screen(&self) -> String {
        self.term.lock().unwrap().screen().contents()
    }

    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).into_owned()
    }

    fn wait_screen(&self, what: &str, needle: &str) {
        self.wait_until(&format!("{what}: {needle:?}"), |screen| {
            screen.contains(needle)
        });
    }

    /// Waits until `cond` holds for the client's screen; on timeout, fails showing it.
    fn wait_until(&self, what: &str, mut cond: impl FnMut(&str) -> bool) {
        let deadline = std::time::Instant::now() + T;
        while !cond(&self.screen()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {T:?} waiting for {what} on the client's screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.pty.write_all(keys).unwrap();
        self.pty.flush().unwrap();
    }

    /// Waits for the client to exit: its exit code (or 128 + signal).
    fn wait_exit(&mut self) -> i32 {
        let mut status = 0;
        let deadline = std::time::Instant::now() + T;
        loop {
            // SAFETY: waiting for our own child.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc == self.pid {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "client did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }

    fn kill9(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.wait_exit();
    }
}

impl Drop for PtyClient {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (gone already, usually).
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        // The client is gone, so its terminal is closed: the reader ends.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        drop(self.proc.take());
    }
}

fn state(env: &Env, name: &str) -> Option<SessionState> {
    env.session(name).map(|s| s.state)
}

fn sessions_json_state(env: &Env, name: &str) -> String {
    let out = env.ok(&["sessions", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["state"].as_str().unwrap().to_string())
        .unwrap()
}

fn submit(env: &Env, id: &str, prompt: &str) {
    env.ok(&["submit", "--id", id, "--prompt", prompt]);
}

#[test]
fn attach_shows_the_screen_types_into_the_shell_holds_the_session_and_detaches_with_ctrl_bracket() {
    let env = Env::new(TWO_SHELLS);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    env.wait_idle("sh-2", T);
    env.ok(&[
        "submit",
        "--id",
        "before",
        "--session",
        "sh-1",
        "--prompt",
        "echo marker-before-attach",
    ]);
    env.wait_final("before", T);

    let mut c = PtyClient::start(&env, &["attach", "sh-1"]);
    // The first frame is the session's screen as it is: the earlier task's output.
    c.wait_screen("first frame", "marker-before-attach");
    wait_for("session shown as attached", T, || {
        state(&env, "sh-1") == Some(SessionState::Attached)
    });
    assert_eq!(sessions_json_state(&env, "sh-1"), "attached");
    let file = env.session("sh-1").unwrap();
    assert_eq!(file.attached.as_ref().unwrap().state, SessionState::Idle);

    c.type_keys(b"echo hi-from-attach\r");
    // The shell profile turns echo off (the daemon types whole command lines), so the
    // screen shows the command's output alone, on a line of its own.
    c.wait_until("the shell's output of the typed command", |screen| {
        screen.lines().any(|l| l.trim_end() == "hi-from-attach")
    });

    // A task for sh-1 submitted meanwhile waits: the session is held. A later task of
    // lower priority for sh-2 runs to the end, so the scheduler has looked at the held
    // task (it goes first) and passed it over, rather than not having got to it yet.
    env.ok(&[
        "submit",
        "--id",
        "waits",
        "--session",
        "sh-1",
        "--priority",
        "9",
        "--prompt",
        "echo ran-after-detach",
    ]);
    env.ok(&[
        "submit",
        "--id",
        "other",
        "--session",
        "sh-2",
        "--priority",
        "1",
        "--prompt",
        "echo ran-on-sh-2",
    ]);
    assert_eq!(env.wait_final("other", T).0, TaskState::Done);
    assert_eq!(env.state_of("waits"), Some(TaskState::Pending));
    assert!(env
        .events_of::<TaskAssigned>()
        .iter()
        .all(|e| e.task_id.as_deref() != Some("waits")));

    c.type_keys(&[0x1d]);
    assert_eq!(c.wait_exit(), 0, "a detach exits 0; output: {}", c.raw());
    let (st, rec) = env.wait_final("waits", T);
    assert_eq!(st, TaskState::Done);
    assert_eq!(rec.result.unwrap().output.trim(), "ran-after-detach");
    let attached = env.events_of::<SessionAttached>();
    let detached = env.events_of::<SessionDetached>();
    assert_eq!(attached.len(), 1);
    assert_eq!(attached[0].data.mode, "attach");
    assert_eq!(detached.len(), 1);
    assert_eq!(detached[0].data.reason, "detached");
    assert_eq!(detached[0].data.state, "idle");
    // The detach came before the task was handed over.
    let assigned = env
        .events_of::<TaskAssigned>()
        .into_iter()
        .find(|e| e.task_id.as_deref() == Some("waits"))
        .unwrap();
    assert!(detached[0].ts <= assigned.ts);
}

#[test]
fn attach_to_an_agent_mid_task_types_into_it_and_a_detach_leaves_the_task_running() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "2500"]));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    submit(&env, "long", "write the release notes");
    wait_for("the agent busy with the task", T, || {
        env.events_of::<TaskAssigned>()
            .iter()
            .any(|e| e.task_id.as_deref() == Some("long"))
            && state(&env, "agent-1") == Some(SessionState::Busy)
    });
    let mut c = PtyClient::start(&env, &["attach", "agent-1"]);
    c.wait_screen("the agent's live screen", "> write the release notes");
    wait_for("session shown as attached", T, || {
        state(&env, "agent-1") == Some(SessionState::Attached)
    });
    // Underneath, the session is still busy with its task.
    let file = env.session("agent-1").unwrap();
    assert_eq!(file.attached.as_ref().unwrap().state, SessionState::Busy);
    c.type_keys(&[0x1d]);
    assert_eq!(c.wait_exit(), 0, "a detach exits 0; output: {}", c.raw());
    // The task went on through the attach and the detach, and ends as usual.
    let (st, rec) = env.wait_final("long", T);
    assert_eq!(st, TaskState::Done, "{rec:?}");
    env.wait_idle("agent-1", T);

    // Keys reach the agent: typed text shows in its input box, Ctrl-C clears it.
    let mut c = PtyClient::start(&env, &["attach", "agent-1"]);
    wait_for("session shown as attached", T, || {
        state(&env, "agent-1") == Some(SessionState::Attached)
    });
    c.type_keys(b"typed by a person");
    c.wait_screen(
        "the typed text in the agent's input box",
        "> typed by a person",
    );
    c.type_keys(&[0x03]);
    c.wait_until("the input box cleared by Ctrl-C", |screen| {
        !screen.contains("typed by a person")
    });
    c.type_keys(&[0x1d]);
    assert_eq!(c.wait_exit(), 0);
    // Given back as it was: idle, and it takes the next task.
    submit(&env, "next", "say hello");
    assert_eq!(env.wait_final("next", T).0, TaskState::Done);
    let detached = env.events_of::<SessionDetached>();
    assert_eq!(detached.len(), 2);
    assert_eq!(detached[0].data.state, "busy");
    assert!(detached.iter().all(|d| d.data.reason == "detached"));
}

#[test]
fn watch_shows_a_running_tasks_output_and_its_keys_never_reach_the_shell() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let mut c = PtyClient::start(&env, &["watch", "sh-1"]);
    wait_for("watch client counted", T, || {
        !env.events_of::<SessionAttached>().is_empty()
    });
    // A watcher does not hold the session: a task runs at once, and shows.
    submit(
        &env,
        "seen",
        "for i in 1 2 3; do echo tick-$i; sleep 0.2; done",
    );
    c.wait_screen("a running task's output", "tick-3");
    env.wait_final("seen", T);
    assert_ne!(state(&env, "sh-1"), Some(SessionState::Attached));
    // Keys typed into watch go nowhere.
    c.type_keys(b"touch watched-keys-reached-the-shell\r");
    submit(&env, "after", "ls");
    let (_, rec) = env.wait_final("after", T);
    let out = rec.result.unwrap().output;
    assert!(!out.contains("watched-keys"), "ls printed: {out}");
    let sessions_dir = env.dir.path().join("config");
    assert!(!sessions_dir
        .join("../watched-keys-reached-the-shell")
        .exists());
    // Ctrl-C ends watch.
    c.type_keys(&[0x03]);
    assert_eq!(c.wait_exit(), 0);
    wait_for("watch detach logged", T, || {
        env.events_of::<SessionDetached>()
            .iter()
            .any(|e| e.data.mode == "watch" && e.data.reason == "detached")
    });
}

#[test]
fn a_killed_attach_client_leaves_the_session_usable() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let mut c = PtyClient::start(&env, &["attach", "sh-1"]);
    wait_for("session shown as attached", T, || {
        state(&env, "sh-1") == Some(SessionState::Attached)
    });
    submit(&env, "queued", "echo after-kill");
    c.kill9();
    let (st, rec) = env.wait_final("queued", T);
    assert_eq!(st, TaskState::Done);
    assert_eq!(rec.result.unwrap().output.trim(), "after-kill");
    let detached = env.events_of::<SessionDetached>();
    assert_eq!(detached.len(), 1);
    assert!(
        detached[0].data.reason.starts_with("lost"),
        "{:?}",
        detached[0].data
    );
    env.wait_idle("sh-1", T);
}

#[test]
fn attach_says_clearly_when_the_daemon_is_down_or_the_session_unknown() {
    let env = Env::new(ONE_SHELL);
    let out = env.cli(&["attach", "sh-1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon is not running"), "{err}");
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let out = env.cli(&["attach", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no session \"nope\"") && err.contains("sh-1"),
        "{err}"
    );
    let out = env.cli(&["attach", "sh-1", "--detach-key", "q"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("control key"));
}

#[test]
fn the_attach_socket_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let path = architect::attach::socket_path(&env.spool()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    let dir = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir & 0o077, 0);
}
