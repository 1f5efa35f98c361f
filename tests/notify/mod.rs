//! Notifications (`config/notify.toml`) through the real daemon: a local webhook
//! receiver gets the JSON and Slack bodies, a command gets the JSON on stdin, a receiver
//! that hangs or is down holds nothing up and is logged, repeats are sent once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use architect::log::event::{ApprovalNeeded, ConfigApplied, NotifyFailed, TaskFailed};
use architect::spool::task::TaskState;
use serde_json::Value;

use crate::helper::{fake_agent_session, wait_for, Env, BIN, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

/// One request the receiver read.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    content_type: String,
    body: Value,
    at: Instant,
}

/// A tiny HTTP/1.1 server on 127.0.0.1: it records each request and answers `200 OK`, or
/// (`hang`) never answers until dropped.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
    released: Arc<AtomicBool>,
}

impl Receiver {
    fn start(hang: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let released = Arc::new(AtomicBool::new(false));
        let (g, r) = (got.clone(), released.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (g, r) = (g.clone(), r.clone());
                std::thread::spawn(move || serve(stream, &g, &r, hang));
            }
        });
        Self {
            port,
            got,
            released,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    /// The bodies POSTed to `path`, in arrival order.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.body)
            .collect()
    }

    /// The `event.task_id` of each body POSTed to `path`.
    fn tasks(&self, path: &str) -> Vec<String> {
        self.bodies(path)
            .iter()
            .map(|b| b["event"]["task_id"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, got: &Mutex<Vec<Request>>, released: &AtomicBool, hang: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    got.lock().unwrap().push(Request {
        path,
        content_type,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    });
    if hang {
        while !released.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    let mut stream = stream;
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// A port nobody listens on (bound, noted, closed).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fail_task(env: &Env, id: &str) {
    env.drop_task(
        &format!("{id}.json"),
        &format!(r#"{{"id": "{id}", "prompt": "false", "max_retries": 0}}"#),
    );
    assert_eq!(env.wait_final(id, T).0, TaskState::Failed);
}

fn notify_failed(env: &Env) -> Vec<NotifyFailed> {
    env.events_of::<NotifyFailed>()
        .into_iter()
        .map(|e| e.data)
        .collect()
}

fn all_logs(env: &Env) -> String {
    architect::log::log_files(&env.spool.join("log"))
        .unwrap()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn a_failing_task_is_posted_as_json_and_as_a_slack_text() {
    let rx = Receiver::start(false);
    let env = Env::new(ONE_SHELL);
    env.write_config(
        "notify.toml",
        &format!(
            "[[notify]]\nname = \"generic\"\nevents = [\"task_failed\"]\nwebhook = \"{}\"\n\n\
             [[notify]]\nname = \"chat\"\nevents = [\"task_failed\"]\nwebhook_env = \"TEST_SLACK_URL\"\n\
             format = \"slack\"\n",
            rx.url("/generic"),
        ),
    );
    let _d = env.daemon_with_env(&[("TEST_SLACK_URL", &rx.url("/services/T0/B0/slack"))]);
    // A task that succeeds notifies nobody; the one that fails, both rules.
    env.drop_task("ok.json", r#"{"id": "ok", "prompt": "echo fine"}"#);
    assert_eq!(env.wait_final("ok", T).0, TaskState::Done);
    fail_task(&env, "f1");
    wait_for("two POSTs", T, || rx.requests().len() >= 2);

    let generic = rx.bodies("/generic");
    assert_eq!(generic.len(), 1, "{generic:?}");
    let b = &generic[0];
    assert_eq!(b["rule"], "generic");
    assert_eq!(b["trigger"], "task_failed");
    assert_eq!(b["suppressed"], 0);
    assert_eq!(b["event"]["type"], "task_failed");
    assert_eq!(b["event"]["task_id"], "f1");
    assert_eq!(b["event"]["session"], "sh-1");
    assert_eq!(b["event"]["node"], "test");
    assert_eq!(b["event"]["data"]["attempts"], 1);
    let summary = b["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("[test] task f1 failed on session sh-1 after 1 attempt(s): "),
        "{summary}"
    );
    // The event in the body is the line the log holds.
    let logged: Value = serde_json::to_value(
        env.events()
            .iter()
            .find(|e| e.payload::<TaskFailed>().is_some())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(b["event"], logged);

    let slack = rx.bodies("/services/T0/B0/slack");
    assert_eq!(slack, [serde_json::json!({ "text": summary })]);
    assert!(rx
        .requests()
        .iter()
        .all(|r| r.content_type == "application/json"));
    assert!(notify_failed(&env).is_empty(), "{:?}", notify_failed(&env));
}

#[test]
fn an_agent_waiting_for_a_person_is_announced_with_the_command_that_answers_it() {
    let rx = Receiver::start(false);
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    env.write_config(
        "notify.toml",
        &format!(
            "[[notify]]\nname = \"agents\"\nevents = [\"approval_needed\"]\nwebhook = \"{}\"\n\
             format = \"slack\"\nprofiles = [\"fake-agent\"]\n\n\
             [[notify]]\nname = \"shells\"\nevents = [\"approval_needed\"]\nwebhook = \"{}\"\n\
             profiles = [\"shell\"]\n",
            rx.url("/agents"),
            rx.url("/shells"),
        ),
    );
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task(
        "t1.json",
        r#"{"id": "t1", "prompt": "deps run: npm install left-pad"}"#,
    );
    wait_for("the question posted", T, || {
        !rx.bodies("/agents").is_empty()
    });
    // The event is logged before it is observed: it is there.
    let question = env.events_of::<ApprovalNeeded>().remove(0).data.question;
    let text = rx.bodies("/agents")[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with(
            "[test] approval needed on session agent-1: command `npm install left-pad` (rule escalate."
        ),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "answer with: architect approve|deny agent-1 --question {question}"
        )),
        "{text}"
    );
    // The rule for shell sessions did not fire on an agent's question.
    assert!(rx.bodies("/shells").is_empty());
    wait_for("the question in the session's file", T, || {
        env.session("agent-1")
            .and_then(|s| s.approval)
            .is_some_and(|a| a.id == question)
    });
    env.ok(&["deny", "agent-1", "--question", &question]);
    assert_eq!(env.wait_final("t1", T).0, TaskState::Done);
    assert_eq!(rx.bodies("/agents").len(), 1);
}

#[test]
fn a_command_gets_each_notification_on_its_stdin_and_a_crashed_session_is_one() {
    let env = Env::new(ONE_SHELL);
    let out = env.path("notified.jsonl");
    // The program is `sh` with arguments, not a shell string: `$0` is the file.
    env.write_config(
        "notify.toml",
        &format!(
            "[[notify]]\nname = \"script\"\nevents = [\"task_failed\", \"session_dead\"]\n\
             command = [\"sh\", \"-c\", \"cat >> \\\"$0\\\"\", {:?}]\n",
            out.display().to_string()
        ),
    );
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    // The task kills its session's shell: the session dies and the task fails.
    env.drop_task(
        "die.json",
        r#"{"id": "die", "prompt": "kill -9 $$", "max_retries": 0}"#,
    );
    assert_eq!(env.wait_final("die", T).0, TaskState::Failed);
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_for("two notifications", T, || lines().len() == 2);
    let mut by_trigger: Vec<(String, Value)> = lines()
        .into_iter()
        .map(|b| (b["trigger"].as_str().unwrap().to_string(), b))
        .collect();
    by_trigger.sort_by(|a, b| a.0.cmp(&b.0));
    let [(dead, died), (failed, task)] = &by_trigger[..] else {
        panic!("{by_trigger:?}")
    };
    assert_eq!(
        (dead.as_str(), failed.as_str()),
        ("session_dead", "task_failed")
    );
    assert_eq!(died["rule"], "script");
    assert_eq!(died["event"]["type"], "session_exited");
    assert_eq!(died["event"]["session"], "sh-1");
    assert_eq!(died["event"]["data"]["requested"], false);
    let summary = died["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("[test] session sh-1 died (signal 9)"),
        "{summary}"
    );
    assert_eq!(task["event"]["type"], "task_failed");
    assert_eq!(task["event"]["task_id"], "die");
}

#[test]
fn a_receiver_that_hangs_or_is_down_holds_up_no_task_and_is_logged_without_its_token() {
    let hanging = Receiver::start(true);
    let down = closed_port();
    let env = Env::new(ONE_SHELL);
    env.write_config(
        "notify.toml",
        &format!(
            "[[notify]]\nname = \"hang\"\nevents = [\"task_failed\"]\nwebhook = \"{}\"\ntimeout_s = 120\n\n\
             [[notify]]\nname = \"slow\"\nevents = [\"task_failed\"]\nwebhook = \"{}\"\ntimeout_s = 1\n\n\
             [[notify]]\nname = \"down\"\nevents = [\"task_failed\"]\n\
             webhook = \"http://127.0.0.1:{down}/services/T0/B0/s3cr3tt0ken\"\n",
            hanging.url("/hang"),
            hanging.url("/slow"),
        ),
    );
    let d = env.daemon();
    fail_task(&env, "f1");
    wait_for("the hanging receiver to have the request", T, || {
        !hanging.bodies("/hang").is_empty()
    });
    // The request hangs (for up to 120 s); the daemon goes on dispatching.
    env.drop_task("next.json", r#"{"id": "next", "prompt": "echo next"}"#);
    let (state, rec) = env.wait_final("next", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(rec.result.unwrap().output, "next");
    assert!(
        !notify_failed(&env).iter().any(|f| f.rule == "hang"),
        "the hanging request is still waiting"
    );
    // The receiver that is down and the one too slow for its timeout are logged.
    wait_for("notify_failed for down and slow", T, || {
        let f = notify_failed(&env);
        f.iter().any(|f| f.rule == "down") && f.iter().any(|f| f.rule == "slow")
    });
    let failed = notify_failed(&env);
    let down_f = failed.iter().find(|f| f.rule == "down").unwrap();
    assert_eq!(down_f.event, "task_failed");
    assert_eq!(down_f.action, format!("webhook http://127.0.0.1:{down}"));
    assert!(down_f.error.starts_with("request failed"), "{down_f:?}");
    let slow_f = failed.iter().find(|f| f.rule == "slow").unwrap();
    assert_eq!(slow_f.error, "timed out after 1 s");
    // The webhook's path, where its token lives, is in no log.
    assert!(!all_logs(&env).contains("s3cr3tt0ken"));
    assert!(!d.stderr().contains("s3cr3tt0ken"), "{}", d.stderr());
}

#[test]
fn the_same_event_twice_is_sent_once_and_events_past_the_rate_limit_are_counted() {
    let rx = Receiver::start(false);
    let env = Env::new(ONE_SHELL);
    let rules = |interval_s: u64| {
        format!(
            "[[notify]]\nname = \"dedup\"\nevents = [\"task_failed\"]\nwebhook = \"{}\"\n\
             min_interval_s = 0\ndedup_window_s = 600\n\n\
             [[notify]]\nname = \"limited\"\nevents = [\"task_failed\"]\nwebhook = \"{}\"\n\
             burst = 1\nmin_interval_s = {interval_s}\n",
            rx.url("/dedup"),
            rx.url("/limited"),
        )
    };
    env.write_config("notify.toml", &rules(3600));
    let _d = env.daemon();
    fail_task(&env, "f1");
    wait_for("f1 on both rules", T, || rx.requests().len() == 2);
    let first_sent = rx.requests()[0].at;

    // f1 fails a second time: the same event within the window.
    env.ok(&["retry", "f1"]);
    wait_for("f1's second failure", T, || {
        env.events_of::<TaskFailed>()
            .iter()
            .filter(|e| e.task_id.as_deref() == Some("f1"))
            .count()
            == 2
    });
    // f2 is news for `dedup`; `limited` has no token left until an hour has passed.
    fail_task(&env, "f2");
    wait_for("f2 on dedup", T, || rx.tasks("/dedup").len() == 2);
    assert_eq!(rx.tasks("/dedup"), ["f1", "f2"]);
    assert_eq!(rx.tasks("/limited"), ["f1"]);

    // The limit is lowered to one per second, live: the rule keeps its bucket, and its
    // next send counts the event it dropped.
    let applied = env.events_of::<ConfigApplied>().len();
    env.write_config("notify.toml", &rules(1));
    wait_for("notify.toml reloaded", T, || {
        env.events_of::<ConfigApplied>().len() > applied
    });
    std::thread::sleep(Duration::from_secs(1).saturating_sub(first_sent.elapsed()));
    fail_task(&env, "f3");
    wait_for("f3 on both rules", T, || {
        rx.tasks("/limited").len() == 2 && rx.tasks("/dedup").len() == 3
    });
    assert_eq!(rx.tasks("/limited"), ["f1", "f3"]);
    assert_eq!(rx.bodies("/limited")[1]["suppressed"], 1);
    assert_eq!(rx.tasks("/dedup"), ["f1", "f2", "f3"]);
    assert!(notify_failed(&env).is_empty(), "{:?}", notify_failed(&env));
}

#[test]
fn a_bad_notify_toml_is_reported_and_the_running_rules_are_kept() {
    let rx = Receiver::start(false);
    let env = Env::new(ONE_SHELL);
    let good = format!(
        "[[notify]]\nname = \"r\"\nevents = [\"task_failed\"]\nwebhook = \"{}\"\nmin_interval_s = 0\n",
        rx.url("/r")
    );
    // At start-up a bad file stops the daemon with the rule and the fix.
    env.write_config(
        "notify.toml",
        "[[notify]]\nname = \"r\"\nevents = [\"task_faild\"]\ncommand = [\"true\"]\n",
    );
    let mut child = env
        .cmd()
        .arg("daemon")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the daemon to refuse to start", T, || {
        child.try_wait().unwrap().is_some()
    });
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notify.toml: [[notify]] #1 (\"r\"): unknown event \"task_faild\"; known: approval_needed, task_failed"),
        "{err}"
    );

    env.write_config("notify.toml", &good);
    let d = env.daemon();
    fail_task(&env, "f1");
    wait_for("f1 posted", T, || rx.tasks("/r") == ["f1"]);
    // A broken edit: reported, and the rules in force stay.
    env.write_config(
        "notify.toml",
        "[[notify]]\nname = \"r\"\nevents = [\"task_failed\"]\n",
    );
    wait_for("the error reported", T, || {
        env.events_of::<ConfigApplied>()
            .iter()
            .any(|e| e.data.file.as_deref() == Some("notify.toml"))
    });
    let e = env
        .events_of::<ConfigApplied>()
        .into_iter()
        .find(|e| e.data.file.as_deref() == Some("notify.toml"))
        .unwrap();
    assert!(!e.data.applied);
    assert!(
        e.data
            .error
            .as_deref()
            .unwrap()
            .contains("no action: give command"),
        "{e:?}"
    );
    fail_task(&env, "f2");
    wait_for("f2 posted by the kept rule", T, || {
        rx.tasks("/r").len() == 2
    });
    assert_eq!(rx.tasks("/r"), ["f1", "f2"]);
    drop(d);

    // `architect init` writes the commented example: no rule enabled.
    let fresh = tempfile::tempdir().unwrap();
    let init = std::process::Command::new(BIN)
        .current_dir(fresh.path())
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success());
    let text = std::fs::read_to_string(fresh.path().join("config/notify.toml")).unwrap();
    assert!(text.contains("# [[notify]]"), "{text}");
    let rules =
        architect::notify::Rules::parse(&text, std::path::Path::new("notify.toml"), |_| None)
            .unwrap();
    assert!(rules.is_empty());
}
