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

/// One plain HTTP/1.1 request; returns the status code and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
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
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
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
    let mut b = Browser::start();
    b.goto(&format!("http://{}/login?token={}", s.addr, s.token));
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
    if let Ok(dir) = std::env::var("ARCHITECT_SCREENSHOTS") {
        std::fs::write(format!("{dir}/dashboard-fleet.png"), b.screenshot()).unwrap();
    }

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
    if let Ok(dir) = std::env::var("ARCHITECT_SCREENSHOTS") {
        std::fs::write(format!("{dir}/dashboard-task.png"), b.screenshot()).unwrap();
    }

    // The task list filters by state.
    b.goto(&format!("http://{}/tasks?state=done", s.addr));
    assert_eq!(
        b.js("document.querySelectorAll('#tasks tbody tr').length"),
        1
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
    wait_for("the question", T, || {
        env.session("agent-1").is_some_and(|s| s.approval.is_some())
    });
    let question = env.session("agent-1").unwrap().approval.unwrap().id;
    let s = serve(&env, "127.0.0.1:0");
    let mut b = Browser::start();
    b.goto(&format!("http://{}/login?token={}", s.addr, s.token));
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
    for path in ["/", "/tasks", "/events", "/api/status"] {
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
