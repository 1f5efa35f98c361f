//! The LLM part of `architect bench`, against `tools/mock-llm` on loopback:
//! 1. routing overhead: `--llm-calls` requests one after another through
//!    [`Router::ask`]; per request, its wall time minus the time spent in HTTP calls
//!    ([`architect::llm::router::Answer::http_us`]) is what routing, the breaker, the
//!    budget check and the `llm_call` event cost;
//! 2. concurrency: the same number of requests all at once, with this process's peak
//!    resident memory (`VmHWM`) before and after.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use architect::llm::budget::Ledger;
use architect::llm::router::{Request, Router};
use architect::llm::ProvidersFile;
use architect::log::EventLog;

use super::BenchArgs;
use crate::cli::harness::summary;

/// Peak resident set size of this process, in KiB (`VmHWM` in /proc/self/status).
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn run(a: &BenchArgs, root: &Path) -> Result<()> {
    let Some(server) = crate::cli::harness::mock_script() else {
        println!("  LLM routing: skipped (tools/mock-llm/mock_llm.py not found)");
        return Ok(());
    };
    std::fs::create_dir_all(root.join("log"))?;
    let mock = crate::cli::harness::start_mock(&server, &[])?;
    let port = mock.port;
    let providers = ProvidersFile::parse(
        &format!(
            "[[provider]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"bench\"\n[provider.price]\ninput = 0.15\noutput = 0.6\n[provider.budget]\ndaily_usd = 1000.0\n"
        ),
        Path::new("providers.toml"),
    )?;
    // Leaked: the concurrent run needs 'static references; this process ends soon.
    let providers: &'static ProvidersFile = Box::leak(Box::new(providers));
    let log: &'static EventLog = Box::leak(Box::new(EventLog::new(root.join("log"), "bench")));
    let budget: &'static Ledger = Box::leak(Box::new(Ledger::new(
        root.join("providers"),
        root.join("log"),
    )));
    let router = Arc::new(Router {
        config: providers,
        breakers: root.join("providers"),
        log,
        http: reqwest::Client::builder().build()?,
        budget,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let n = a.llm_calls;

    // 1. Overhead, one request at a time.
    let mut overhead = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    for i in 0..n {
        let prompt = format!("routing probe {i}");
        let req = Request {
            prompt: &prompt,
            provider: None,
            model: None,
            complexity: None,
            role: None,
            task_id: None,
            deadline: Instant::now() + Duration::from_secs(30),
        };
        let t = Instant::now();
        let answer = rt
            .block_on(router.ask(&req))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        #[allow(clippy::cast_precision_loss)]
        let total_us = t.elapsed().as_micros() as f64;
        #[allow(clippy::cast_precision_loss)]
        overhead.push((total_us - answer.http_us as f64).max(0.0) / 1000.0);
        totals.push(total_us / 1000.0);
    }
    let (o50, o99) = summary(overhead);
    let (t50, t99) = summary(totals);
    println!(
        "  LLM routing overhead per request (breaker, budget, llm_call event; HTTP time excluded), {n} requests to mock-llm: p50 {o50:.3} ms, p99 {o99:.3} ms  (target p99 ≤ 1 ms; whole request p50 {t50:.2} ms, p99 {t99:.2} ms)"
    );

    // 2. All at once.
    let before = peak_rss_kib();
    let t = Instant::now();
    let results: Vec<bool> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let router = Arc::clone(&router);
            set.spawn(async move {
                let prompt = format!("concurrent {i}");
                let req = Request {
                    prompt: &prompt,
                    provider: None,
                    model: None,
                    complexity: None,
                    role: None,
                    task_id: None,
                    deadline: Instant::now() + Duration::from_secs(120),
                };
                router.ask(&req).await.is_ok()
            });
        }
        let mut out = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap_or(false));
        }
        out
    });
    let ok = results.iter().filter(|r| **r).count();
    let after = peak_rss_kib();
    println!(
        "  LLM concurrency: {n} requests at once, {ok} answered in {:.2} s; peak RSS {} MiB before, {} MiB after",
        t.elapsed().as_secs_f64(),
        before.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        after.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
    Ok(())
}
