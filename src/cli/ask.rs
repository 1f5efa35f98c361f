//! `architect ask` (one prompt through the provider routing) and `architect providers`
//! (each provider's breaker, latency and spend).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use architect::config::Config;
use architect::llm::breaker::Breaker;
use architect::llm::router::{Request, Router};
use architect::llm::{Complexity, ProvidersFile};
use architect::log::event::LlmCall;
use architect::log::{read_events, EventLog};
use architect::spool::Spool;

/// `architect ask` arguments.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Providers, routing, retries and breakers are in config/providers.toml. \
    Every HTTP call is an llm_call event (tokens, cost in USD); see `architect sql \
    \"SELECT provider, sum(cost_usd) FROM llm_calls GROUP BY ALL\"`.\n\nExamples:\n  \
    architect ask \"Summarise src/main.rs in one line\"\n  \
    architect ask --complexity complex --json \"Design a migration plan\"\n  \
    architect ask --provider local \"hello\""
)]
pub struct AskArgs {
    /// The prompt.
    prompt: String,
    /// Only this provider (no failover).
    #[arg(long, conflicts_with = "complexity")]
    provider: Option<String>,
    /// Route by complexity (the chain in [routing.complexity]); without it,
    /// [routing.classify] decides from the prompt when configured.
    #[arg(long, value_enum, conflicts_with = "model")]
    complexity: Option<ComplexityArg>,
    /// Only providers serving this model (in chain order).
    #[arg(long, conflicts_with = "provider")]
    model: Option<String>,
    /// Give up after this many seconds (waiting for open breakers included).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// JSON output: reply, provider, model, tokens, cost_usd, attempts, latency_ms.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ComplexityArg {
    Simple,
    Standard,
    Complex,
}

impl From<ComplexityArg> for Complexity {
    fn from(c: ComplexityArg) -> Self {
        match c {
            ComplexityArg::Simple => Self::Simple,
            ComplexityArg::Standard => Self::Standard,
            ComplexityArg::Complex => Self::Complex,
        }
    }
}

/// The event log `ask` appends to: the node's, with its `[log]` settings (the defaults when
/// the config does not load).
fn event_log(spool: &Spool, config_dir: &Path) -> EventLog {
    match Config::load(config_dir) {
        Ok(c) => EventLog::new(spool.dir("log"), c.node).with_settings(c.log),
        Err(_) => EventLog::new(spool.dir("log"), architect::config::default_node_name()),
    }
}

/// `architect ask`.
pub fn ask(spool: &Spool, config_dir: &Path, a: AskArgs) -> Result<ExitCode> {
    let providers = ProvidersFile::load(config_dir)?;
    if providers.provider.is_empty() {
        bail!(
            "no providers configured: add [[provider]] tables to {}/providers.toml",
            config_dir.display()
        );
    }
    if let Some(p) = &a.provider {
        if providers.get(p).is_none() {
            bail!(
                "no provider {p:?} in {}/providers.toml",
                config_dir.display()
            );
        }
    }
    let log = event_log(spool, config_dir);
    let budget = architect::llm::budget::Ledger::new(spool.dir("providers"), spool.dir("log"));
    let router = Router {
        budget: &budget,
        config: &providers,
        breakers: spool.dir("providers"),
        log: &log,
        http: reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?,
    };
    let req = Request {
        prompt: &a.prompt,
        provider: a.provider.as_deref(),
        model: a.model.as_deref(),
        complexity: a.complexity.map(Into::into),
        role: None,
        task_id: None,
        deadline: Instant::now() + Duration::from_secs(a.timeout),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match rt.block_on(router.ask(&req)) {
        Ok(answer) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", answer.reply);
                eprintln!(
                    "({} · {} · {} in / {} out tokens · ${:.6} · {} ms)",
                    answer.provider,
                    answer.model,
                    answer.tokens.input + answer.tokens.cache_read,
                    answer.tokens.output + answer.tokens.reasoning,
                    answer.cost_usd,
                    answer.latency_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"error": e.to_string(), "failures": e.failures})
                );
            }
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

/// `architect providers`.
pub fn providers(spool: &Spool, config_dir: &Path, json: bool) -> Result<ExitCode> {
    let providers = ProvidersFile::load(config_dir)?;
    let events = read_events(&spool.dir("log")).unwrap_or_default();
    let mut rows = Vec::new();
    for p in &providers.provider {
        let b = Breaker::load(&spool.dir("providers"), &p.name);
        let calls: Vec<&LlmCall> = events
            .iter()
            .filter_map(|e| e.payload::<LlmCall>())
            .filter(|c| c.provider == p.name)
            .collect();
        let mut lat: Vec<u64> = calls
            .iter()
            .filter(|c| c.ok)
            .map(|c| c.latency_ms)
            .collect();
        lat.sort_unstable();
        let spend: f64 = calls.iter().map(|c| c.cost_usd).sum();
        let failed = calls.iter().filter(|c| !c.ok).count();
        rows.push(serde_json::json!({
            "name": p.name, "kind": p.kind, "model": p.model, "state": b.state,
            "failures": b.failures, "reason": b.reason, "retry_at": b.retry_at,
            "calls": calls.len(), "failed_calls": failed,
            "latency_ms_p50": percentile(&lat, 0.5), "latency_ms_p95": percentile(&lat, 0.95),
            "spend_usd": spend,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "no providers configured ({}/providers.toml)",
            config_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "provider",
        "model",
        "state",
        "failures",
        "calls",
        "p50 ms",
        "p95 ms",
        "spend USD",
        "reason",
    ]);
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(x) => x.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    for r in &rows {
        t.add_row([
            s(&r["name"]),
            s(&r["model"]),
            s(&r["state"]),
            s(&r["failures"]),
            format!("{} ({} failed)", r["calls"], r["failed_calls"]),
            s(&r["latency_ms_p50"]),
            s(&r["latency_ms_p95"]),
            format!("{:.6}", r["spend_usd"].as_f64().unwrap_or(0.0)),
            s(&r["reason"]),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
