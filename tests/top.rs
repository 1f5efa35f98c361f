//! `architect top` through the real binary: `--once` frames against a running daemon and
//! a stopped one, and the interactive view in a real PTY (read through a vt100 screen),
//! where a key approves an agent's question.

use std::process::Command;
use std::time::{Duration, Instant};

use architect::spool::task::TaskState;

use crate::helper::{fake_agent_session, Env, BIN, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

fn once(env: &Env) -> String {
    env.ok(&["top", "--once", "--width", "120"])
}

#[test]
fn top_once_shows_the_sessions_and_done_count_then_read_only_when_the_daemon_stops() {
    let env = Env::new(ONE_SHELL);
    let daemon = env.daemon();
    env.wait_idle("sh-1", T);
    let out = env.ok(&["submit", "--prompt", "echo from-top-test", "--wait"]);
    assert!(out.contains("from-top-test"), "{out}");
    env.wait_idle("sh-1", T);

    let frame = once(&env);
    let header = frame.lines().next().unwrap();
    assert!(header.contains("architect top"), "{frame}");
    assert!(header.contains("daemon running (pid"), "{frame}");
    assert!(frame.contains("sh-1"), "{frame}");
    let row = frame.lines().find(|l| l.contains("sh-1")).unwrap();
    assert!(row.contains("idle"), "{row}");
    assert!(frame.contains("done 1  "), "{frame}");
    assert!(frame.contains("1 done in the last minute"), "{frame}");
    assert!(
        frame.contains("echo from-top-test"),
        "the task listed: {frame}"
    );
    assert!(frame.lines().all(|l| l.chars().count() <= 120), "{frame}");

    drop(daemon);
    let frame = once(&env);
    assert!(
        frame
            .lines()
            .next()
            .unwrap()
            .contains("daemon down: read-only"),
        "{frame}"
    );
    assert!(
        frame.contains("sh-1") && frame.contains("done 1  "),
        "{frame}"
    );
}

#[test]
fn top_once_on_a_missing_spool_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--spool")
        .arg(dir.path().join("nope"))
        .args(["top", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("architect init"));
}

/// `architect top` in a PTY of 160×50, its output kept on a vt100 screen.
struct Tui {
    session: expectrl::Session,
    screen: vt100::Parser,
}

impl Tui {
    fn start(env: &Env) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("--spool")
            .arg(&env.spool)
            .arg("--config")
            .arg(&env.config)
            .args(["top", "--interval-ms", "200"])
            .env("TERM", "xterm-256color");
        let mut session = expectrl::Session::spawn(cmd).unwrap();
        session.get_process_mut().set_window_size(160, 50).unwrap();
        Tui {
            session,
            screen: vt100::Parser::new(50, 160, 0),
        }
    }

    fn pump(&mut self) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.session.try_read(&mut buf) {
            if n == 0 {
                break;
            }
            self.screen.process(&buf[..n]);
        }
    }

    fn contents(&mut self) -> String {
        self.pump();
        self.screen.screen().contents()
    }

    fn wait_for_text(&mut self, text: &str) {
        let deadline = Instant::now() + T;
        loop {
            let c = self.contents();
            if c.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {text:?} on the screen:\n{c}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn interactive_top_approves_the_selected_sessions_question_and_q_quits() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task(
        "t1.json",
        r#"{"id": "t1", "prompt": "please run: npm install left-pad"}"#,
    );
    env.wait_approval("agent-1", T);

    let mut tui = Tui::start(&env);
    tui.wait_for_text("approve? npm install left-pad");
    tui.wait_for_text("daemon running");
    tui.session.send("a").unwrap();
    tui.wait_for_text("approve requested: npm install left-pad on agent-1");
    let (state, rec) = env.wait_final("t1", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert!(
        rec.result
            .unwrap()
            .output
            .contains("ran: npm install left-pad"),
        "approved, so the agent ran it"
    );
    tui.wait_for_text("approvals   none waiting");

    tui.session.send("q").unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        tui.pump();
        match tui.session.get_process().status().unwrap() {
            expectrl::WaitStatus::StillAlive => {
                assert!(Instant::now() < deadline, "top did not quit on q");
                std::thread::sleep(Duration::from_millis(20));
            }
            s => break s,
        }
    };
    assert_eq!(
        status,
        expectrl::WaitStatus::Exited(tui.session.get_process().pid(), 0)
    );
}
