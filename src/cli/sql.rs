//! `architect sql` and `architect stats`.

use std::process::ExitCode;

use anyhow::Result;

use architect::spool::Spool;
use architect::sql::{self, Format};

/// `architect sql --format`: the library's [`Format`], as the command line names it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// A text table.
    Table,
    /// A JSON array of objects.
    Json,
    /// CSV with a header row (RFC 4180).
    Csv,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Table => Self::Table,
            FormatArg::Json => Self::Json,
            FormatArg::Csv => Self::Csv,
        }
    }
}

pub fn sql(spool: &Spool, query: &str, format: Format) -> Result<ExitCode> {
    let result = sql::run(&spool.log_dirs(), query)?;
    print!("{}", result.render(format)?);
    Ok(ExitCode::SUCCESS)
}

pub fn stats(spool: &Spool, json: bool) -> Result<ExitCode> {
    let result = sql::run(&spool.log_dirs(), sql::STATS_SQL)?;
    if json {
        print!("{}", result.render(Format::Json)?);
    } else if result.rows.is_empty() {
        println!("no finished tasks in the log yet");
    } else {
        print!("{}", result.render(Format::Table)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Spend by provider and model, over the `llm_calls` view.
pub(crate) const COST_SQL: &str = "SELECT provider, model, count(*) AS calls, \
    count(*) FILTER (WHERE ok) AS ok, sum(input_tokens) AS input, \
    sum(output_tokens) AS output, sum(cache_read_tokens) AS cache_read, \
    sum(cache_write_tokens) AS cache_write, sum(reasoning_tokens) AS reasoning, \
    round(sum(cost_usd), 6) AS usd \
    FROM llm_calls GROUP BY provider, model ORDER BY usd DESC, provider";

/// Agent CLIs' spend per session and task, over the `agent_usage` view.
pub(crate) const AGENT_TASKS_SQL: &str =
    "SELECT session, task_id, model, sum(input_tokens) AS input, \
    sum(output_tokens) AS output, sum(cache_read_tokens) AS cache_read, \
    sum(cache_write_tokens) AS cache_write, sum(reasoning_tokens) AS reasoning, \
    round(sum(cost_usd), 6) AS usd, bool_and(priced) AS priced \
    FROM agent_usage GROUP BY ALL ORDER BY session, min(ts)";

/// Agent CLIs' spend per session.
pub(crate) const AGENT_SESSIONS_SQL: &str = "SELECT session, count(DISTINCT task_id) AS tasks, \
    round(sum(cost_usd), 6) AS usd, \
    round(sum(cost_usd) / count(DISTINCT task_id), 6) AS usd_per_task \
    FROM agent_usage GROUP BY session ORDER BY session";

/// `architect stats --cost`.
pub fn cost(spool: &Spool, config_dir: &std::path::Path, json: bool) -> Result<ExitCode> {
    use architect::llm::{ProvidersFile, Usage};
    use architect::log::event;
    let by_provider = sql::run(&spool.log_dirs(), COST_SQL)?;
    let providers = ProvidersFile::load(config_dir)?;
    let events = architect::log::read_events_from(&spool.log_dirs())?;
    let mut total = 0.0;
    let mut most_expensive_total = 0.0;
    let mut task_cost: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let done: std::collections::HashSet<String> = events
        .iter()
        .filter(|e| e.payload::<event::TaskCompleted>().is_some())
        .filter_map(|e| e.task_id.clone())
        .collect();
    for (e, call) in events
        .iter()
        .filter_map(|e| Some((e, e.payload::<event::LlmCall>()?)))
    {
        let usd = call.cost_usd;
        total += usd;
        if let Some(t) = &e.task_id {
            *task_cost.entry(t.clone()).or_default() += usd;
        }
        if call.ok {
            let u = Usage {
                input: call.input_tokens,
                output: call.output_tokens,
                cache_read: call.cache_read_tokens,
                cache_write: call.cache_write_tokens,
                reasoning: call.reasoning_tokens,
            };
            most_expensive_total += providers
                .provider
                .iter()
                .map(|p| p.price.cost(&u))
                .fold(0.0, f64::max);
        }
    }
    let done_with_calls: Vec<f64> = task_cost
        .iter()
        .filter(|(t, _)| done.contains(*t))
        .map(|(_, c)| *c)
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let per_task = (!done_with_calls.is_empty())
        .then(|| done_with_calls.iter().sum::<f64>() / done_with_calls.len() as f64);
    let priciest = providers
        .provider
        .iter()
        .max_by(|a, b| {
            (a.price.input + a.price.output).total_cmp(&(b.price.input + b.price.output))
        })
        .map(|p| p.name.clone());
    let savings = most_expensive_total - total;
    let agent_tasks = sql::run(&spool.log_dirs(), AGENT_TASKS_SQL)?;
    let agent_sessions = sql::run(&spool.log_dirs(), AGENT_SESSIONS_SQL)?;
    let agent_total: f64 = events
        .iter()
        .filter_map(|e| e.payload::<event::AgentUsage>())
        .map(|u| u.cost_usd)
        .sum();
    if json {
        let rows = |r: &sql::QueryResult| -> Result<serde_json::Value> {
            Ok(serde_json::from_str(&r.render(Format::Json)?)?)
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "by_provider": rows(&by_provider)?,
                "total_usd": total,
                "completed_tasks_with_llm_calls": done_with_calls.len(),
                "cost_per_completed_task_usd": per_task,
                "most_expensive_provider": priciest,
                "all_on_most_expensive_usd": most_expensive_total,
                "savings_usd": savings,
                "agents": {
                    "by_session": rows(&agent_sessions)?,
                    "by_task": rows(&agent_tasks)?,
                    "total_usd": agent_total,
                },
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !agent_tasks.rows.is_empty() {
        println!("agent CLIs, per session and task (tokens from their own session files, prices from config/prices.toml):");
        print!("{}", agent_tasks.render(Format::Table)?);
        print!("{}", agent_sessions.render(Format::Table)?);
        println!("agent total            ${agent_total:.6}\n");
    }
    if by_provider.rows.is_empty() {
        println!("no LLM calls in the log yet");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", by_provider.render(Format::Table)?);
    println!("total                  ${total:.6}");
    match per_task {
        Some(c) => println!(
            "per completed task     ${c:.6} ({} tasks)",
            done_with_calls.len()
        ),
        None => println!("per completed task     - (no completed task made LLM calls)"),
    }
    if let Some(p) = priciest {
        #[allow(clippy::cast_precision_loss)]
        let pct = if most_expensive_total > 0.0 {
            savings / most_expensive_total * 100.0
        } else {
            0.0
        };
        println!(
            "all on the priciest   ${most_expensive_total:.6} ({p}'s price table for every successful call)"
        );
        println!("saved                  ${savings:.6} ({pct:.1}%)");
    }
    Ok(ExitCode::SUCCESS)
}
