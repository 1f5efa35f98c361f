//! `architect serve`: the dashboard in a real browser (headless Chromium through the
//! DevTools protocol), against a daemon running a shell and the fake agent; and its
//! token checks over plain HTTP.

mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use architect::log::event;
use architect::spool::task::TaskState;

use crate::helper::{fake_agent_session, wait_for, Env, ONE_SHELL};
use browser::Browser;

const T: Duration = Duration::from_secs(30);

/// A running `architect serve`; killed on drop.
struct Serve {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    token: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `architect serve --bind BIND` and reads its address from the first line it
/// prints; the token from `spool/locks/serve.token`.
fn serve(env: &Env, bind: &str) -> Serve {
    let mut child = env
        .cmd()
        .args(["serve", "--bind", bind])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("serve printed {first:?}"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut rest = String::new();
    for _ in 0..2 {
        out.read_line(&mut rest).unwrap();
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let token = std::fs::read_to_string(env.spool.join("locks/serve.token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        rest.contains(&format!("/login?token={token}")),
        "the login URL carries the token: {rest}"
    );
    Serve { child, addr, token }
}

/// A browser logged in to the dashboard (the login URL sets the cookie and redirects to
/// the fleet page).
fn logged_in(s: &Serve) -> Browser {
    let mut b = Browser::start();
    b.goto(&format!("http://{}/login?token={}", s.addr, s.token));
    b
}

/// One plain HTTP/1.1 request; returns the status code and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_with_head(addr, method, path, headers, body);
    (status, body)
}

/// [`http`], with the response's header lines too (`name: value`, as sent).
fn http_with_head(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr.replace("0.0.0.0", "127.0.0.1")).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (status, head.to_string(), body.to_string())
}

fn control_files(env: &Env) -> usize {
    std::fs::read_dir(env.spool.join("control"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn the_fleet_page_lists_sessions_and_shows_a_task_finishing_live() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let s = serve(&env, "127.0.0.1:0");
    let mut b = logged_in(&s);
    // The login redirected to the fleet page, which lists the session.
    assert_eq!(b.js("document.body.dataset.page"), "fleet");
    assert_eq!(
        b.js("document.querySelector('[data-session-state=\"sh-1\"]').textContent"),
        "idle"
    );
    b.wait_js(
        "the event stream to connect",
        "document.getElementById('live').className === 'on'",
    );
    assert_eq!(
        b.js("document.querySelector('[data-count=\"done\"]').textContent"),
        "0"
    );
    assert_eq!(b.js("document.querySelectorAll('#live-feed li').length"), 0);

    // A task submitted now finishes while the page is open: only the event stream can
    // put it in the page (the feed is filled by the script, never by the server).
    env.drop_task(
        "live-1.json",
        r#"{"id": "live-1", "prompt": "echo served-live"}"#,
    );
    b.wait_js(
        "the finished task in the live feed",
        "!!document.querySelector('#live-feed li[data-task=\"live-1\"][data-type=\"task_completed\"]')",
    );
    b.wait_js(
        "the done count to follow",
        "document.querySelector('[data-count=\"done\"]').textContent === '1'",
    );
    let received: u64 = b
        .js("document.getElementById('live').dataset.events")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        received >= 3,
        "task_received, _assigned, _completed at least: {received}"
    );

    // The page follows a session's screen and state as they change, without a reload
    // (`window.stayed` would be gone after one).
    b.js("window.stayed = 'yes'");
    let screen = "document.querySelector('pre[data-screen$=\"/sh-1\"]').textContent";
    let state = "document.querySelector('[data-session-state=\"sh-1\"]').textContent";
    env.drop_task(
        "shown.json",
        r#"{"id": "shown", "prompt": "echo live-screen-marker; sleep 4"}"#,
    );
    b.wait_js(
        "the running task's output in sh-1's screen",
        &format!("{screen}.includes('live-screen-marker') && {state} === 'busy'"),
    );
    assert_eq!(
        b.js("document.querySelector('[data-session-task=\"sh-1\"] a').textContent"),
        "shown"
    );
    if let Ok(dir) = std::env::var("ARCHITECT_SCREENSHOTS") {
        std::fs::write(format!("{dir}/dashboard-fleet.png"), b.screenshot()).unwrap();
    }
    env.wait_final("shown", T);
    b.wait_js("sh-1 shown idle again", &format!("{state} === 'idle'"));
    assert_eq!(
        b.js("document.querySelector('[data-session-task=\"sh-1\"]').textContent"),
        ""
    );
    assert_eq!(b.js("window.stayed"), "yes", "the page was reloaded");

    // The task's page: record, output, events, and its recording served raw.
    b.goto(&format!("http://{}/tasks/live-1", s.addr));
    assert_eq!(
        b.js("document.getElementById('task-state').textContent"),
        "done"
    );
    assert!(b
        .js("document.getElementById('output').textContent")
        .as_str()
        .unwrap()
        .contains("served-live"));
    let events = b.js("document.getElementById('events').textContent");
    for t in [
        "task_received",
        "task_assigned",
        "prompt_sent",
        "task_completed",
    ] {
        assert!(
            events.as_str().unwrap().contains(t),
            "{t} missing: {events}"
        );
    }
    let cast = b.js("fetch(document.querySelector('#recordings a').href).then(r => r.text())");
    let first = cast.as_str().unwrap().lines().next().unwrap_or("");
    let header: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(header["version"], 2, "{first}");
    assert!(cast.as_str().unwrap().contains("served-live"));

    // The task list filters by state.
    b.goto(&format!("http://{}/tasks?state=done", s.addr));
    assert_eq!(
        b.js("document.querySelectorAll('#tasks tbody tr').length"),
        2
    );
    b.goto(&format!("http://{}/tasks?state=failed", s.addr));
    assert_eq!(
        b.js("document.querySelectorAll('#tasks tbody tr').length"),
        0
    );
}

#[test]
fn the_approve_button_answers_the_question_a_session_waits_on() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task(
        "ask.json",
        r#"{"id": "ask", "prompt": "deps run: npm install left-pad"}"#,
    );
    let question = env.wait_approval("agent-1", T).id;
    let s = serve(&env, "127.0.0.1:0");
    let mut b = logged_in(&s);
    b.goto(&format!("http://{}/approvals", s.addr));
    let asks = b.js("document.getElementById('approvals').textContent");
    assert!(
        asks.as_str().unwrap().contains("npm install left-pad")
            && asks.as_str().unwrap().contains(&question),
        "{asks}"
    );
    b.js("document.querySelector('button[data-answer=\"approve\"][data-session=\"agent-1\"]').click(); true");
    b.wait_js(
        "the row marked answered",
        "!!document.querySelector('tr[data-answered=\"approve\"]')",
    );
    assert!(b
        .js("document.getElementById('flash').textContent")
        .as_str()
        .unwrap()
        .starts_with("approved"));
    let (state, rec) = env.wait_final("ask", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let decided: Vec<_> = env
        .events_of::<event::PermissionDecided>()
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some("ask"))
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0].data.decision.as_str(), "allow");
    assert!(
        matches!(decided[0].data.by, architect::types::DecidedBy::Person),
        "{decided:?}"
    );
}

#[test]
fn writes_without_the_token_or_from_another_origin_are_refused() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let s = serve(&env, "127.0.0.1:0");
    let answer = r#"{"session": "agent-1", "question": "q-1", "approve": true}"#;
    let json = ("Content-Type", "application/json");
    let (code, body) = http(&s.addr, "POST", "/api/answer", &[json], answer);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("needs the dashboard token"), "{body}");
    let (code, _) = http(
        &s.addr,
        "POST",
        "/api/tasks/x/cancel",
        &[("Authorization", "Bearer nope")],
        "",
    );
    assert_eq!(code, 401);
    let (code, _) = http(
        &s.addr,
        "POST",
        "/api/answer",
        &[json, ("Cookie", "architect_token=nope")],
        answer,
    );
    assert_eq!(code, 401);
    // The right token from another site's page: refused by its Origin.
    let bearer = format!("Bearer {}", s.token);
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/answer",
        &[
            json,
            ("Authorization", &bearer),
            ("Origin", "http://evil.example"),
        ],
        answer,
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(control_files(&env), 0, "a refused request wrote nothing");
    // With the token, the request reaches the same checks as `architect approve`.
    let (code, body) = http(
        &s.addr,
        "POST",
        "/api/answer",
        &[json, ("Authorization", &bearer)],
        answer,
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("no session \\\"agent-1\\\"") || body.contains("no session"),
        "{body}"
    );
    assert_eq!(control_files(&env), 0);
    // Reads are open on loopback, but not to a page that re-pointed its name there.
    assert_eq!(http(&s.addr, "GET", "/", &[], "").0, 200);
    assert_eq!(
        http(&s.addr, "GET", "/", &[("Host", "evil.example:80")], "").0,
        401
    );
    // A wrong login sets no cookie.
    assert_eq!(http(&s.addr, "GET", "/login?token=nope", &[], "").0, 401);
}

#[test]
fn bound_beyond_loopback_every_request_needs_the_token() {
    let env = Env::new(ONE_SHELL);
    let s = serve(&env, "0.0.0.0:0");
    for path in [
        "/",
        "/tasks",
        "/events",
        "/api/status",
        "/metrics",
        "/static/asciinema-player.min.js",
        "/static/asciinema-player.css",
    ] {
        let (code, _) = http(&s.addr, "GET", path, &[], "");
        assert_eq!(code, 401, "{path}");
    }
    let bearer = format!("Bearer {}", s.token);
    let (code, body) = http(
        &s.addr,
        "GET",
        "/api/status",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["daemon"], false);
    assert_eq!(v["tasks"]["done"], 0);
}

#[test]
fn the_cost_page_sums_spend_by_provider_model_session_and_day() {
    let env = Env::new(ONE_SHELL);
    let log = env.spool.join("log/events-test-20261201.jsonl");
    let call = |ts: &str, provider: &str, model: &str, usd: f64| {
        format!(
            r#"{{"ts":"{ts}","node":"test","type":"llm_call","task_id":"t","session":null,"data":{{"attempt":1,"cache_read_tokens":0,"cache_write_tokens":0,"cost_usd":{usd},"error":null,"input_tokens":4,"latency_ms":7,"model":"{model}","ok":true,"output_tokens":10,"provider":"{provider}","reasoning_tokens":0,"status":200}}}}"#
        )
    };
    let usage = r#"{"ts":"2026-12-01T10:00:00Z","node":"test","type":"agent_usage","task_id":"a1","session":"claude-1","data":{"cache_read_tokens":0,"cache_write_tokens":0,"cost_usd":0.5,"input_tokens":1000,"model":"claude-x","output_tokens":20,"priced":true,"reasoning_tokens":0}}"#;
    let lines = [
        call("2026-11-30T10:00:00Z", "strong", "big-model", 0.25),
        call("2026-12-01T10:00:00Z", "strong", "big-model", 0.75),
        call("2026-12-01T11:00:00Z", "local", "small-model", 0.0),
        usage.to_string(),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let s = serve(&env, "127.0.0.1:0");
    let (code, page) = http(&s.addr, "GET", "/cost", &[], "");
    assert_eq!(code, 200, "{page}");
    let table = |id: &str| {
        let start = page
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} missing: {page}"));
        let end = page[start..]
            .find("</table>")
            .map_or(page.len(), |e| start + e);
        page[start..end].to_string()
    };
    // By provider and model: 2 calls, $1 on the strong model.
    let by_model = table("cost-provider");
    assert!(
        by_model.contains("<td>strong</td><td>big-model</td><td>2</td>"),
        "{by_model}"
    );
    // By day: the agent's $0.50 and the $0.75 call on Dec 1, $0.25 on Nov 30.
    let by_day = table("cost-day");
    assert!(
        by_day.contains("<td>2026-11-30</td><td>0.25</td><td>0.0</td><td>0.25</td>"),
        "{by_day}"
    );
    assert!(
        by_day.contains("<td>2026-12-01</td><td>0.75</td><td>0.5</td><td>1.25</td>"),
        "{by_day}"
    );
    // By session: the agent CLI's spend.
    let by_session = table("cost-session");
    assert!(
        by_session.contains("<td>claude-1</td><td>1</td><td>0.5</td>"),
        "{by_session}"
    );
    // The bars are scaled to the largest day.
    assert!(page.contains("style=\"width:100.0%\""), "{page}");
}

/// What the recorded task prints (from a file, so the command line the shell echoes
/// holds none of it): a line to find in the player's terminal, a cargo test summary and
/// an exception carrying an API key, which the extraction patterns pick up.
const RECORDED_OUTPUT: &str = "\
player-shows-this-line
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.05s
ValueError: refused key sk-ant-api03-SECRETSECRETSECRETSECRET
";

#[test]
fn a_task_page_plays_its_recording_and_lists_its_extractions() {
    let env = Env::new(ONE_SHELL);
    let out = env.dir.path().join("out.txt");
    std::fs::write(&out, RECORDED_OUTPUT).unwrap();
    let _d = env.daemon();
    env.drop_task(
        "rec.json",
        &serde_json::json!({"id": "rec", "prompt": format!("cat {}", out.display())}).to_string(),
    );
    let (state, rec) = env.wait_final("rec", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let s = serve(&env, "127.0.0.1:0");

    // The player's files come from the binary, typed, cacheable, under the same guard.
    for (path, ty) in [
        ("/static/asciinema-player.min.js", "text/javascript"),
        ("/static/asciinema-player.css", "text/css"),
    ] {
        let (code, head, body) = http_with_head(&s.addr, "GET", path, &[], "");
        assert_eq!(code, 200, "{path}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-type: {ty}")),
            "{path}: {head}"
        );
        assert!(
            head.contains("cache-control: private, max-age=31536000, immutable"),
            "{path}: {head}"
        );
        assert!(body.len() > 10_000, "{path}: {} bytes", body.len());
    }

    let mut b = Browser::start();
    b.goto(&format!("http://{}/tasks/rec", s.addr));
    // The player is built in the page from the vendored script (no other origin).
    b.wait_js(
        "asciinema-player in the recording's figure",
        "!!document.querySelector('#recordings figure[data-attempt=\"1\"] .ap-player')",
    );
    assert_eq!(b.js("typeof AsciinemaPlayer.create"), "function");
    let scripts = b.js("[...document.scripts].map(s => new URL(s.src).host)");
    for host in scripts.as_array().unwrap() {
        assert_eq!(host.as_str(), Some(s.addr.as_str()), "{scripts}");
    }
    // Played, its terminal shows what the task printed.
    b.wait_js(
        "the player's start button",
        "!!document.querySelector('#recordings .ap-overlay-start')",
    );
    b.js("document.querySelector('#recordings .ap-overlay-start').click(); true");
    b.wait_js(
        "the printed line in the player's terminal",
        "!document.querySelector('#recordings .ap-overlay-error') && \
         (document.querySelector('#recordings .ap-term-text') || {}).textContent \
         ?.includes('player-shows-this-line') === true",
    );
    // What the terminal showed is served redacted, as everything the dashboard shows.
    b.wait_js(
        "the exception line, its key redacted, in the player's terminal",
        "document.querySelector('#recordings .ap-term-text').textContent\
         .includes('refused key [REDACTED]')",
    );
    let term = b.js("document.querySelector('#recordings .ap-term-text').textContent");
    assert!(!term.as_str().unwrap().contains("SECRETSECRET"), "{term}");

    // The extractions table: the cargo summary with its fields, and the exception with
    // the key redacted.
    let row = |pattern: &str| {
        format!(
            "[...document.querySelectorAll('#extractions tbody tr')]\
             .map(r => [...r.cells].map(c => c.textContent))\
             .find(c => c[2] === '{pattern}') || null"
        )
    };
    let summary = b.js(&row("cargo-test-result"));
    let cells: Vec<&str> = summary
        .as_array()
        .unwrap_or_else(|| panic!("no cargo-test-result row: {summary}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let output = rec.result.as_ref().unwrap().output.clone();
    let line = output
        .lines()
        .position(|l| l.starts_with("test result: ok."))
        .unwrap()
        + 1;
    assert_eq!(cells[0], "1", "attempt: {cells:?}");
    assert_eq!(cells[1], line.to_string(), "line: {cells:?}");
    assert_eq!(&cells[3..5], ["test", "info"], "{cells:?}");
    for f in ["passed=3", "failed=0", "status=ok", "duration_s=0.05"] {
        assert!(cells[5].contains(f), "{f} in {cells:?}");
    }
    let exception = b.js(&row("exception"));
    assert!(
        exception.to_string().contains("kind=ValueError"),
        "{exception}"
    );
    let table = b.js("document.getElementById('extractions').textContent");
    assert!(
        !table.as_str().unwrap().contains("SECRETSECRET"),
        "a key in the extractions: {table}"
    );
    if let Ok(dir) = std::env::var("ARCHITECT_SCREENSHOTS") {
        std::fs::write(format!("{dir}/dashboard-task.png"), b.screenshot()).unwrap();
    }

    // A task that has not run has no recording, and the page says so.
    env.drop_task(
        "later.json",
        r#"{"id": "later", "prompt": "true", "depends_on": ["never-submitted"]}"#,
    );
    wait_for("the waiting task to be pending", T, || {
        env.state_of("later") == Some(TaskState::Pending)
    });
    b.goto(&format!("http://{}/tasks/later", s.addr));
    assert_eq!(
        b.js("document.getElementById('no-recording').textContent"),
        "No recording: the task has not run yet."
    );
    assert_eq!(b.js("typeof window.AsciinemaPlayer"), "undefined");
}

/// An `/events` stream read over plain HTTP/1.0 (the body then ends with the
/// connection, no chunking): each message's `id` and `data` as JSON, in order, through a
/// channel filled by a reader thread. Closed on drop.
struct SseStream {
    messages: std::sync::mpsc::Receiver<(String, serde_json::Value)>,
    socket: TcpStream,
}

impl SseStream {
    /// Opens `/events`, sending `last_event_id` as `Last-Event-ID` when given.
    fn open(addr: &str, last_event_id: Option<&str>) -> Self {
        let socket = TcpStream::connect(addr).unwrap();
        let mut req = format!("GET /events HTTP/1.0\r\nHost: {addr}\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        (&socket).write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut id, mut data) = (String::new(), String::new());
            let mut in_body = false;
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if !in_body {
                    in_body = line.is_empty();
                    continue;
                }
                if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                    id = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data.push_str(v);
                } else if line.is_empty() && !data.is_empty() {
                    let v = serde_json::from_str(&data).unwrap();
                    if tx.send((std::mem::take(&mut id), v)).is_err() {
                        return;
                    }
                    data.clear();
                }
            }
        });
        Self { messages, socket }
    }

    /// The messages up to and including the first that `last` accepts (30 s at most).
    fn until(
        &self,
        what: &str,
        last: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<(String, serde_json::Value)> {
        let deadline = std::time::Instant::now() + T;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(m) => {
                    let done = last(&m.1);
                    got.push(m);
                    if done {
                        return got;
                    }
                }
                Err(e) => panic!("{what}: {e}; got {got:#?}"),
            }
        }
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// Whether `m` is task `id`'s `task_completed`.
fn completed(m: &serde_json::Value, id: &str) -> bool {
    m["type"] == "task_completed" && m["task_id"] == id
}

#[test]
fn a_stream_reopened_with_last_event_id_gets_the_events_it_missed() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let s = serve(&env, "127.0.0.1:0");

    // A first stream sees task `a` through; the id of its last message is where it was.
    let first = SseStream::open(&s.addr, None);
    env.drop_task("a.json", r#"{"id": "a", "prompt": "echo first"}"#);
    let seen = first.until("a's completion", |m| completed(m, "a"));
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        ids.iter().all(|id| !id.is_empty()),
        "every message has an id: {ids:?}"
    );
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "each id differs: {ids:?}");
    let last_id = seen.last().unwrap().0.clone();
    drop(first);

    // While no stream is open, task `b` runs.
    env.drop_task("b.json", r#"{"id": "b", "prompt": "echo second"}"#);
    assert_eq!(env.wait_final("b", T).0, TaskState::Done);

    // Reopened with that id: what came after it, `b` from its reception, nothing of
    // what the first stream already had.
    let resumed = SseStream::open(&s.addr, Some(&last_id));
    let missed = resumed.until("b's completion, replayed", |m| completed(m, "b"));
    assert!(
        missed
            .iter()
            .any(|(_, m)| m["type"] == "task_received" && m["task_id"] == "b"),
        "{missed:#?}"
    );
    for (_, m) in &missed {
        assert!(!seen.iter().any(|(_, old)| old == m), "sent again: {m}");
    }

    // Without the header a stream starts at the end: a task run now comes first, `b`
    // never.
    let fresh = SseStream::open(&s.addr, None);
    env.drop_task("c.json", r#"{"id": "c", "prompt": "echo third"}"#);
    let new = fresh.until("c's completion", |m| completed(m, "c"));
    assert!(
        new.iter()
            .all(|(_, m)| m["task_id"] != "b" && m["task_id"] != "a"),
        "{new:#?}"
    );
}

/// Reads the fleet page until sh-1's screen preview shows `needle`: the session's state
/// there and its `<pre class="screen">` text.
fn sh1_screen_showing(s: &Serve, needle: &str) -> (String, String) {
    let mut found = None;
    wait_for(
        &format!("{needle:?} in sh-1's screen on the fleet page"),
        T,
        || {
            let page = http(&s.addr, "GET", "/", &[], "").1;
            let Some(row) = page
                .find("data-session-state=\"sh-1\">")
                .map(|i| &page[i..])
            else {
                return false;
            };
            let state = row["data-session-state=\"sh-1\">".len()..]
                .split('<')
                .next()
                .unwrap_or_default()
                .to_string();
            let screen = row
                .find("<pre class=\"screen\"")
                .map(|i| &row[i..])
                .and_then(|r| r.find("</pre>").map(|j| r[..j].to_string()));
            if let Some(screen) = screen.filter(|t| t.contains(needle)) {
                found = Some((state, screen));
            }
            found.is_some()
        },
    );
    found.unwrap()
}

#[test]
fn the_fleet_page_shows_a_busy_and_an_idle_session_s_screen_with_keys_redacted() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let s = serve(&env, "127.0.0.1:0");
    // The key is printed whole, then the task stays running: the preview is of its
    // recording (flushed every second), read while the session is busy.
    env.drop_task(
        "busy.json",
        r#"{"id": "busy", "prompt": "echo key=sk-ant-api03-SECRETSECRETSECRETSECRET; echo preview-ready; sleep 4"}"#,
    );
    let (state, screen) = sh1_screen_showing(&s, "preview-ready");
    assert_eq!(state, "busy");
    assert!(screen.contains("key=[REDACTED]"), "{screen}");
    assert!(!screen.contains("SECRETSECRET"), "{screen}");
    env.wait_final("busy", T);
    // This task ends at once; what its background job prints a moment later lands in
    // the session's idle recording, which the preview shows while the session is idle.
    env.drop_task(
        "bg.json",
        r#"{"id": "bg", "prompt": "(sleep 1; echo printed-while-idle) &"}"#,
    );
    env.wait_final("bg", T);
    let (state, _) = sh1_screen_showing(&s, "printed-while-idle");
    assert_eq!(state, "idle");
    let page = http(&s.addr, "GET", "/", &[], "").1;
    assert!(!page.contains("SECRETSECRET"), "{page}");
}

#[test]
fn metrics_are_served_at_slash_metrics_and_each_scrape_adds_only_what_is_new() {
    use crate::metrics::{promtool_accepts, value};
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let s = serve(&env, "127.0.0.1:0");
    for id in ["m1", "m2"] {
        env.ok(&["submit", "--id", id, "--prompt", "echo fine"]);
        env.wait_final(id, T);
    }
    let (code, head, text) = http_with_head(&s.addr, "GET", "/metrics", &[], "");
    assert_eq!(code, 200, "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let done = r#"architect_tasks{state="done"}"#;
    let durations =
        r#"architect_task_duration_seconds_count{session="sh-1",profile="shell",outcome="done"}"#;
    assert_eq!(value(&text, done), Some(2.0), "{text}");
    assert_eq!(value(&text, durations), Some(2.0), "{text}");
    promtool_accepts(&text);
    // The same scraper again, after one more task: counted once, the earlier ones not again.
    env.ok(&["submit", "--id", "m3", "--prompt", "echo fine"]);
    env.wait_final("m3", T);
    let (_, text) = http(&s.addr, "GET", "/metrics", &[], "");
    assert_eq!(value(&text, done), Some(3.0), "{text}");
    assert_eq!(value(&text, durations), Some(3.0), "{text}");
    // And it says what `architect metrics` says.
    let cli = env.ok(&["metrics"]);
    assert_eq!(value(&cli, durations), Some(3.0), "{cli}");
}
