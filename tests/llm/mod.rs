//! LLM provider routing through the real binary (`architect ask`) against the mock model
//! server with injected faults: local first, failover, the circuit breaker opening and
//! closing on its own, `Retry-After`, no retry for 4xx, cost from the price table, and no
//! API key in the logs or the errors.

use std::time::{Duration, Instant};

use architect::llm::breaker;
use architect::log::event::{BreakerState, BudgetExceeded, LlmCall};
use serde_json::Value;

use crate::helper::{mock_control, Env, Mock};

const SECRET: &str = "sk-ant-test-DO-NOT-LOG-7f3a9c";

fn providers(port: u16) -> String {
    format!(
        r#"
[[provider]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
model = "local-model"

[[provider]]
name = "strong"
kind = "anthropic"
base_url = "http://127.0.0.1:{port}"
model = "strong-model"
api_key_env = "TEST_STRONG_KEY"
[provider.price]
input = 3.0
output = 15.0

[routing.complexity]
simple = ["local"]
complex = ["strong"]

[retry]
attempts = 2
base_ms = 20

[breaker]
failures = 2
open_s = 1
"#
    )
}

struct Ask {
    ok: bool,
    json: Value,
    stderr: String,
    ms: u128,
}

fn ask(env: &Env, args: &[&str]) -> Ask {
    let t = Instant::now();
    let out = env
        .cmd()
        .env("TEST_STRONG_KEY", SECRET)
        .arg("ask")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    Ask {
        ok: out.status.success(),
        json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ms: t.elapsed().as_millis(),
    }
}

fn calls(env: &Env, provider: &str) -> Vec<LlmCall> {
    env.events_of::<LlmCall>()
        .into_iter()
        .filter(|e| e.data.provider == provider)
        .map(|e| e.data)
        .collect()
}

#[test]
fn routing_failover_breaker_retries_and_cost() {
    let env = Env::new("");
    let mock = Mock::start(env.path("mock.jsonl"), None);
    env.write_config("providers.toml", &providers(mock.port));

    // Complexity routes: simple → the local model (free), complex → the strong one.
    let a = ask(&env, &["--complexity", "simple", "hello"]);
    assert!(a.ok, "{}", a.stderr);
    assert_eq!(
        (a.json["provider"].as_str(), a.json["cost_usd"].as_f64()),
        (Some("local"), Some(0.0))
    );
    let a = ask(&env, &["--complexity", "complex", "a hard question"]);
    assert!(a.ok, "{}", a.stderr);
    assert_eq!(a.json["provider"], "strong");
    let (i, o) = (
        a.json["tokens"]["input"].as_u64().unwrap(),
        a.json["tokens"]["output"].as_u64().unwrap(),
    );
    assert!(i > 0 && o > 0);
    #[allow(clippy::cast_precision_loss)]
    let hand = (i as f64 * 3.0 + o as f64 * 15.0) / 1e6;
    assert!(
        (a.json["cost_usd"].as_f64().unwrap() - hand).abs() < 1e-12,
        "{} vs {hand}",
        a.json
    );

    // The local model fails: each request fails over to the strong one after the
    // retries; the second failed request opens local's breaker.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "local-model", "status": 500}]"#,
    );
    for _ in 0..2 {
        let a = ask(&env, &["fail over please"]);
        assert!(a.ok, "{}", a.stderr);
        assert_eq!(a.json["provider"], "strong", "{}", a.json);
    }
    let failed = calls(&env, "local");
    assert_eq!(
        failed.iter().filter(|c| c.status == Some(500)).count(),
        4,
        "2 attempts × 2 requests"
    );
    let opened = env.events_of::<BreakerState>();
    assert!(
        opened.iter().any(|e| e.data.provider == "local"
            && e.data.state == breaker::State::Open
            && e.data.reason.as_deref().unwrap().contains("HTTP 500")),
        "{opened:?}"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.spool.join("providers/local.json")).unwrap())
            .unwrap();
    assert_eq!(state["state"], "open");
    // Open: local is not even called.
    let before = calls(&env, "local").len();
    let a = ask(&env, &["while open"]);
    assert_eq!(a.json["provider"], "strong");
    assert_eq!(
        calls(&env, "local").len(),
        before,
        "an open circuit is skipped"
    );
    let shown = String::from_utf8(env.cmd().args(["providers"]).output().unwrap().stdout).unwrap();
    assert!(
        shown.contains("open") && shown.contains("HTTP 500"),
        "{shown}"
    );

    // The local model recovers: after open_s one probe goes through and closes it.
    mock_control(mock.port, "DELETE", "/_mock/faults", "");
    std::thread::sleep(Duration::from_millis(1100));
    let a = ask(&env, &["probe"]);
    assert_eq!(a.json["provider"], "local", "{}", a.json);
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.spool.join("providers/local.json")).unwrap())
            .unwrap();
    assert_eq!(state["state"], "closed");
    assert!(env
        .events_of::<BreakerState>()
        .iter()
        .any(|e| e.data.provider == "local" && e.data.state == breaker::State::Closed));

    // 429 with Retry-After: waited for, then retried on the same provider.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "local-model", "status": 429, "retry_after": 1, "times": 1}]"#,
    );
    let a = ask(&env, &["--provider", "local", "rate limited"]);
    assert!(a.ok, "{}", a.stderr);
    assert!(a.ms >= 1000, "Retry-After honoured: {} ms", a.ms);
    // A 4xx client error is not retried.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "local-model", "status": 400, "times": 1}]"#,
    );
    let before = calls(&env, "local").len();
    let a = ask(&env, &["--provider", "local", "bad request"]);
    assert!(!a.ok);
    assert_eq!(
        calls(&env, "local").len(),
        before + 1,
        "no retry after a 400"
    );
    assert!(a.stderr.contains("HTTP 400"), "{}", a.stderr);

    // Malformed body: retryable, and then the next attempt answers.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "local-model", "malformed": true, "times": 1}]"#,
    );
    let a = ask(&env, &["--provider", "local", "malformed once"]);
    assert!(a.ok, "{}", a.stderr);

    // Costs in the log add up, per the SQL view, to what the calls reported.
    let sum: f64 = env
        .events_of::<LlmCall>()
        .iter()
        .map(|e| e.data.cost_usd)
        .sum();
    let out = env
        .cmd()
        .args([
            "sql",
            "--format",
            "json",
            "SELECT sum(cost_usd) AS usd FROM llm_calls",
        ])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        (rows[0]["usd"].as_f64().unwrap() - sum).abs() < 1e-12,
        "{rows}"
    );

    // stats --cost agrees with a hand computation from the price table: every ok call
    // priced at the strong model's table is what "all on the priciest" must say.
    let out = env
        .cmd()
        .args(["stats", "--cost", "--json"])
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut all_strong = 0.0;
    for c in env.events_of::<LlmCall>().iter().filter(|e| e.data.ok) {
        #[allow(clippy::cast_precision_loss)]
        let (i, o) = (c.data.input_tokens as f64, c.data.output_tokens as f64);
        all_strong += (i * 3.0 + o * 15.0) / 1e6;
    }
    assert!(
        (st["total_usd"].as_f64().unwrap() - sum).abs() < 1e-12,
        "{st}"
    );
    assert!(
        (st["all_on_most_expensive_usd"].as_f64().unwrap() - all_strong).abs() < 1e-12,
        "{st}"
    );
    assert!(
        (st["savings_usd"].as_f64().unwrap() - (all_strong - sum)).abs() < 1e-12,
        "{st}"
    );
    assert_eq!(st["most_expensive_provider"], "strong");
    assert!(
        st["savings_usd"].as_f64().unwrap() > 0.0,
        "local answers saved money: {st}"
    );

    // The key reached the server but never the log or an error message.
    let logs: String = std::fs::read_dir(env.spool.join("log"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(!logs.contains(SECRET));
    assert!(!a.stderr.contains(SECRET));
    let out = env
        .cmd()
        .args(["ask", "--provider", "strong", "no key set"])
        .env_remove("TEST_STRONG_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("TEST_STRONG_KEY is not set"),
        "{err}"
    );
}

#[test]
fn a_budget_of_a_few_cents_stops_calls_at_the_limit() {
    let env = Env::new("");
    let mock = Mock::start(env.path("mock.jsonl"), None);
    env.write_config(
        "providers.toml",
        &format!(
            r#"
[[provider]]
name = "pricey"
kind = "openai"
base_url = "http://127.0.0.1:{}/v1"
model = "pricey-model"
max_tokens = 10
[provider.price]
input = 1000.0
output = 1000.0
[provider.budget]
daily_usd = 0.05
"#,
            mock.port
        ),
    );
    let mut answered = 0;
    let mut refused = None;
    for i in 0..20 {
        let a = ask(&env, &[&format!("question number {i}")]);
        if a.ok {
            answered += 1;
        } else {
            refused = Some(a.stderr);
            break;
        }
    }
    let refused = refused.expect("the budget stopped the calls");
    assert!(answered >= 1, "calls were made before the limit");
    assert!(refused.contains("provider daily budget"), "{refused}");
    let spent: f64 = env
        .events_of::<LlmCall>()
        .iter()
        .map(|e| e.data.cost_usd)
        .sum();
    assert!(spent <= 0.05 + 1e-12, "spent {spent} over a 0.05 budget");
    assert!(spent > 0.0);
    let ev = env.events_of::<BudgetExceeded>();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].data.limit_usd, 0.05);
    // No call was made once refused.
    assert_eq!(env.events_of::<LlmCall>().len(), answered);
}

/// Calls that cost exactly $1.00 each (10 output tokens at $100,000 per million, input
/// free; `max_tokens = 10`, so the worst case is the actual cost) under `daily_usd`.
fn dollar_calls(port: u16, daily_usd: f64) -> String {
    format!(
        r#"
[[provider]]
name = "pricey"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
model = "pricey-model"
max_tokens = 10
timeout_s = 60
[provider.price]
input = 0.0
output = 100000.0
[provider.budget]
daily_usd = {daily_usd}

[retry]
attempts = 1
"#
    )
}

/// The holders of budget reservations in `spool/providers/`.
fn holders(env: &Env) -> Vec<Value> {
    std::fs::read(env.spool.join("providers/budget.ledger.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["holders"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn concurrent_calls_from_every_process_never_pass_the_budget() {
    // A $3.50 day at $1.00 a call allows exactly 3 calls. 6 `architect ask` processes
    // and 2 tasks on the daemon's provider session ask at once; every answer takes 2 s,
    // so all of them are in flight together.
    let env = Env::new("[[session]]\nname = \"llm-1\"\nkind = \"provider\"\n");
    let mock = Mock::start(env.path("mock.jsonl"), None);
    env.write_config("providers.toml", &dollar_calls(mock.port, 3.5));
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "pricey-model", "hang_s": 2}]"#,
    );
    let _d = env.daemon();
    env.wait_idle("llm-1", Duration::from_secs(30));
    env.drop_task(
        "t1.json",
        r#"{"id": "t1", "prompt": "task one", "provider": "pricey"}"#,
    );
    env.drop_task(
        "t2.json",
        r#"{"id": "t2", "prompt": "task two", "provider": "pricey"}"#,
    );
    let asks: Vec<std::process::Child> = (0..6)
        .map(|i| {
            env.cmd()
                .args(["ask", "--json", &format!("question {i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut answered = 0;
    let mut refusals = Vec::new();
    for child in asks {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            answered += 1;
        } else {
            refusals.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    let t = Duration::from_secs(30);
    for id in ["t1", "t2"] {
        let (state, rec) = env.wait_final(id, t);
        if state == architect::spool::task::TaskState::Done {
            answered += 1;
        } else {
            refusals.push(rec.error.unwrap_or_default());
        }
    }
    let requests = mock.requests().len();
    let spent: f64 = env
        .events_of::<LlmCall>()
        .iter()
        .map(|e| e.data.cost_usd)
        .sum();
    assert_eq!(
        (requests, answered),
        (3, 3),
        "exactly 3 calls made and answered; spent ${spent}; refusals: {refusals:#?}"
    );
    assert!(spent <= 3.5 && (spent - 3.0).abs() < 1e-9, "spent ${spent}");
    assert_eq!(refusals.len(), 5);
    for r in &refusals {
        assert!(
            r.contains("provider daily budget") && r.contains("of $3.5000"),
            "{r}"
        );
    }
    assert_eq!(env.events_of::<BudgetExceeded>().len(), 5);
    assert!(holders(&env).is_empty(), "{:?}", holders(&env));
}

#[test]
fn a_crashed_callers_reservation_does_not_block_the_budget() {
    // $1.50 a day at $1.00 a call: one call at a time. The first caller is killed while
    // its call is in flight; the next caller is not blocked by what it held.
    let env = Env::new("");
    let mock = Mock::start(env.path("mock.jsonl"), None);
    env.write_config("providers.toml", &dollar_calls(mock.port, 1.5));
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "pricey-model", "hang_s": 30, "times": 1}]"#,
    );
    let mut first = env
        .cmd()
        .args(["ask", "hangs, then dies"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::helper::wait_for(
        "the first call's reservation",
        Duration::from_secs(30),
        || holders(&env).len() == 1,
    );
    assert_eq!(holders(&env)[0]["pid"], first.id());
    // While it is in flight, nobody else gets the budget.
    let a = ask(&env, &["while the first is in flight"]);
    assert!(
        !a.ok && a.stderr.contains("$1.0000 reserved"),
        "{}",
        a.stderr
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let a = ask(&env, &["after the crash"]);
    assert!(a.ok, "{}", a.stderr);
    assert!(holders(&env).is_empty(), "{:?}", holders(&env));
}

#[test]
fn provider_sessions_run_tasks_by_complexity_and_fail_over_when_local_dies() {
    let env = Env::new(
        "[[session]]\nname = \"llm-1\"\nkind = \"provider\"\n\
         [[session]]\nname = \"sh-1\"\nprofile = \"shell\"\n",
    );
    let local = Mock::start(env.path("local.jsonl"), None);
    let strong = Mock::start(env.path("strong.jsonl"), None);
    env.write_config(
        "providers.toml",
        &format!(
            r#"
[[provider]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:{}/v1"
model = "local-model"

[[provider]]
name = "strong"
kind = "anthropic"
base_url = "http://127.0.0.1:{}"
model = "strong-model"
[provider.price]
input = 3.0
output = 15.0

[routing.complexity]
simple = ["local"]
complex = ["strong"]

[retry]
attempts = 2
base_ms = 20

[breaker]
failures = 2
open_s = 1
"#,
            local.port, strong.port
        ),
    );
    let local_port = local.port;
    let _d = env.daemon();
    env.wait_idle("llm-1", Duration::from_secs(30));
    env.drop_task(
        "s.json",
        r#"{"id": "s", "prompt": "rename a variable", "complexity": "simple"}"#,
    );
    env.drop_task(
        "c.json",
        r#"{"id": "c", "prompt": "design the schema", "complexity": "complex"}"#,
    );
    env.drop_task("sh.json", r#"{"id": "sh", "prompt": "echo a shell task"}"#);
    let t = Duration::from_secs(30);
    for (id, provider) in [("s", "local"), ("c", "strong")] {
        let (state, rec) = env.wait_final(id, t);
        assert_eq!(state, architect::spool::task::TaskState::Done, "{rec:?}");
        assert_eq!(rec.session.as_deref(), Some("llm-1"));
        assert!(!rec.result.unwrap().output.is_empty());
        let by: Vec<LlmCall> = env
            .events_of::<LlmCall>()
            .into_iter()
            .filter(|e| e.task_id.as_deref() == Some(id))
            .map(|e| e.data)
            .collect();
        assert_eq!(by.len(), 1, "{by:?}");
        assert_eq!(by[0].provider, provider);
    }
    // A plain task is not an LLM task: it goes to the terminal session.
    let (_, rec) = env.wait_final("sh", t);
    assert_eq!(rec.session.as_deref(), Some("sh-1"));

    // The local server dies mid-run: the next task fails over to the strong one.
    drop(local);
    env.drop_task(
        "f.json",
        r#"{"id": "f", "prompt": "anything", "complexity": "standard"}"#,
    );
    let (state, rec) = env.wait_final("f", t);
    assert_eq!(state, architect::spool::task::TaskState::Done, "{rec:?}");
    let by: Vec<LlmCall> = env
        .events_of::<LlmCall>()
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some("f"))
        .map(|e| e.data)
        .collect();
    assert_eq!(
        by.iter().map(|c| c.provider.as_str()).collect::<Vec<_>>(),
        ["local", "local", "strong"],
        "{by:?}"
    );
    assert!(!by[0].ok);
    assert!(strong.requests().len() >= 2);
    // A second failed task opens local's breaker; the next one skips local entirely.
    env.drop_task(
        "g.json",
        r#"{"id": "g", "prompt": "anything", "complexity": "standard"}"#,
    );
    env.wait_final("g", t);
    let breaker = |env: &Env| -> Value {
        serde_json::from_slice(&std::fs::read(env.spool.join("providers/local.json")).unwrap())
            .unwrap()
    };
    assert_eq!(breaker(&env)["state"], "open");
    // The local server comes back on its port: after open_s the next task's probe goes
    // to it and the breaker closes by itself.
    let _local = Mock::start_on(env.path("local-2.jsonl"), None, local_port);
    std::thread::sleep(Duration::from_millis(1100));
    env.drop_task(
        "h.json",
        r#"{"id": "h", "prompt": "anything", "complexity": "standard"}"#,
    );
    let (state, _) = env.wait_final("h", t);
    assert_eq!(state, architect::spool::task::TaskState::Done);
    let h: Vec<LlmCall> = env
        .events_of::<LlmCall>()
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some("h"))
        .map(|e| e.data)
        .collect();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!((h[0].provider.as_str(), h[0].ok), ("local", true));
    assert_eq!(breaker(&env)["state"], "closed");
    let states: Vec<breaker::State> = env
        .events_of::<BreakerState>()
        .iter()
        .filter(|e| e.data.provider == "local")
        .map(|e| e.data.state)
        .collect();
    assert_eq!(
        states,
        [
            breaker::State::Open,
            breaker::State::HalfOpen,
            breaker::State::Closed
        ],
        "{states:?}"
    );
}

#[test]
fn ollama_kind_and_all_breakers_open_waits_for_the_first_to_half_open() {
    let env = Env::new("");
    let mock = Mock::start(env.path("mock.jsonl"), None);
    env.write_config(
        "providers.toml",
        &format!(
            r#"
[[provider]]
name = "ollama"
kind = "ollama"
base_url = "http://127.0.0.1:{port}"
model = "qwen2.5-coder:7b"

[retry]
attempts = 1

[breaker]
failures = 1
open_s = 1
"#,
            port = mock.port
        ),
    );
    let a = ask(&env, &["hello ollama"]);
    assert!(a.ok, "{}", a.stderr);
    assert_eq!(a.json["provider"], "ollama");
    assert!(a.json["tokens"]["input"].as_u64().unwrap() > 0);
    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(paths.iter().any(|p| p == "/api/chat"), "{paths:?}");

    // One failure opens the only breaker; the next request waits for it to half-open
    // (about 1 s) and its probe succeeds, instead of failing at once.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"api": "ollama", "status": 503, "times": 1}]"#,
    );
    let a = ask(&env, &["fails once"]);
    assert!(!a.ok);
    let a = ask(&env, &["waits for the half-open probe"]);
    assert!(a.ok, "{}", a.stderr);
    assert!(a.ms >= 500, "it waited for the breaker: {} ms", a.ms);
    // With a deadline shorter than the wait it fails at once with the reason.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"api": "ollama", "status": 503, "times": 1}]"#,
    );
    assert!(!ask(&env, &["fails again"]).ok);
    let a = ask(&env, &["--timeout", "0", "no time to wait"]);
    assert!(!a.ok);
    assert!(a.stderr.contains("circuit open"), "{}", a.stderr);
}

#[test]
fn model_names_and_classify_rules_route_and_a_hang_times_out_into_a_retry() {
    let env = Env::new("");
    let mock = Mock::start(env.path("mock.jsonl"), None);
    env.write_config(
        "providers.toml",
        &format!(
            r#"
[[provider]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
model = "local-model"
timeout_s = 1

[[provider]]
name = "strong"
kind = "anthropic"
base_url = "http://127.0.0.1:{port}"
model = "strong-model"

[routing.complexity]
simple = ["local"]
complex = ["strong"]

[routing.classify]
complex_keywords = ["architecture"]
simple_if_chars_under = 40

[retry]
attempts = 2
base_ms = 20
"#,
            port = mock.port
        ),
    );
    let a = ask(&env, &["--model", "strong-model", "by model name"]);
    assert_eq!(a.json["provider"], "strong", "{}", a.stderr);
    let a = ask(
        &env,
        &["review the architecture of the whole service layer"],
    );
    assert_eq!(a.json["provider"], "strong", "a complex keyword");
    let a = ask(&env, &["short one"]);
    assert_eq!(a.json["provider"], "local", "a short prompt is simple");
    let a = ask(&env, &["--model", "nobody-serves-this", "x"]);
    assert!(
        !a.ok
            && a.stderr
                .contains("no configured provider serves this model"),
        "{}",
        a.stderr
    );
    // A hang past timeout_s is a timed-out attempt, retried on the same provider.
    mock_control(
        mock.port,
        "POST",
        "/_mock/faults",
        r#"[{"model": "local-model", "hang_s": 3, "times": 1}]"#,
    );
    let a = ask(&env, &["--provider", "local", "hangs once"]);
    assert!(a.ok, "{}", a.stderr);
    let local = calls(&env, "local");
    let last_two = &local[local.len() - 2..];
    assert!(!last_two[0].ok);
    assert!(
        last_two[0].error.as_deref().unwrap().contains("timed out"),
        "{last_two:?}"
    );
    assert!(last_two[1].ok);
}
