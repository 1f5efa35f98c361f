//! SQL over the event logs with DuckDB (bundled, with its `json` extension built in).
//!
//! Views:
//! - `events`: one row per event line of `log/events-*.jsonl` — `ts TIMESTAMP` (UTC),
//!   `node`, `type`, `task_id`, `session`, `data JSON`. Lines that do not parse (a torn
//!   last line after a crash) are skipped (`read_json(…, ignore_errors = true)`).
//! - `tasks`: one row per task id — `task_id`, `state` (`pending | active | done | failed
//!   | cancelled`, from the latest task event), `session` (of the latest assignment),
//!   `attempts`, `priority`, `prompt`, `received_at`, `queued_at`, `started_at` (first
//!   assignment), `last_started_at`, `finished_at`, `run_ms` (last assignment to finish),
//!   `error`.
//! - `llm_calls`, `agent_usage`: one row per `llm_call` / `agent_usage` event, its `data`
//!   fields as columns.
//! - `extractions`: one row per `extraction` event — `ts`, `node`, `task_id`, `session`,
//!   `attempt`, `line` (in the attempt's output, from 1), `pattern`, `category`,
//!   `severity`, `fields JSON` (the pattern's named groups: `fields->>'file'`), `text`
//!   (the line), `dropped` (matches past the per-attempt limit; 0 but on the last one).
//!
//! Everything is derived from the logs; nothing is a counter that can drift.

use std::path::PathBuf;

use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;

use crate::error::{Error, Result};

/// A query's answer: column names and rows of JSON values.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows; each has one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Output formats for [`QueryResult::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A text table.
    Table,
    /// A JSON array of objects.
    Json,
    /// CSV with a header row (RFC 4180).
    Csv,
}

const EMPTY_EVENTS: &str =
    "SELECT NULL::TIMESTAMP AS ts, NULL::VARCHAR AS node, NULL::VARCHAR AS type, \
     NULL::VARCHAR AS task_id, NULL::VARCHAR AS session, NULL::JSON AS data WHERE false";

const TASKS_VIEW: &str = r"
CREATE VIEW tasks AS
SELECT
  task_id,
  -- done is final (retry applies to failed and cancelled tasks): a later event of the
  -- task on another node of a fleet (one that took a stale copy) does not undo it
  CASE WHEN bool_or(type = 'task_completed') THEN 'done'
  ELSE arg_max(CASE type
            WHEN 'task_failed' THEN 'failed'
            WHEN 'task_cancelled' THEN 'cancelled'
            WHEN 'task_assigned' THEN 'active'
            ELSE 'pending' END, ts) END AS state,
  arg_max(session, ts) FILTER (WHERE type = 'task_assigned') AS session,
  count(*) FILTER (WHERE type = 'task_assigned') AS attempts,
  CAST(any_value(data->>'priority') FILTER (WHERE type = 'task_queued') AS INTEGER) AS priority,
  any_value(data->>'prompt') FILTER (WHERE type = 'task_received') AS prompt,
  min(ts) FILTER (WHERE type = 'task_received') AS received_at,
  min(ts) FILTER (WHERE type = 'task_queued') AS queued_at,
  min(ts) FILTER (WHERE type = 'task_assigned') AS started_at,
  max(ts) FILTER (WHERE type = 'task_assigned') AS last_started_at,
  max(ts) FILTER (WHERE type IN ('task_completed', 'task_failed', 'task_cancelled')) AS finished_at,
  date_diff('millisecond',
            max(ts) FILTER (WHERE type = 'task_assigned'),
            max(ts) FILTER (WHERE type IN ('task_completed', 'task_failed', 'task_cancelled'))) AS run_ms,
  arg_max(data->>'error', ts) FILTER (WHERE type IN ('task_failed', 'task_retried')) AS error
FROM events
WHERE task_id IS NOT NULL
  AND type IN ('task_received', 'task_queued', 'task_assigned', 'task_retried',
               'task_completed', 'task_failed', 'task_cancelled')
GROUP BY task_id
";

const LLM_CALLS_VIEW: &str = r"
CREATE VIEW llm_calls AS
SELECT
  ts, node, task_id,
  data->>'provider' AS provider,
  data->>'model' AS model,
  CAST(data->>'status' AS INTEGER) AS status,
  CAST(data->>'attempt' AS INTEGER) AS attempt,
  CAST(data->>'latency_ms' AS BIGINT) AS latency_ms,
  CAST(data->>'input_tokens' AS BIGINT) AS input_tokens,
  CAST(data->>'output_tokens' AS BIGINT) AS output_tokens,
  CAST(data->>'cache_read_tokens' AS BIGINT) AS cache_read_tokens,
  CAST(data->>'cache_write_tokens' AS BIGINT) AS cache_write_tokens,
  CAST(data->>'reasoning_tokens' AS BIGINT) AS reasoning_tokens,
  CAST(data->>'cost_usd' AS DOUBLE) AS cost_usd,
  CAST(data->>'ok' AS BOOLEAN) AS ok,
  data->>'error' AS error
FROM events
WHERE type = 'llm_call'
";

const AGENT_USAGE_VIEW: &str = r"
CREATE VIEW agent_usage AS
SELECT
  ts, node, task_id, session,
  data->>'model' AS model,
  CAST(data->>'input_tokens' AS BIGINT) AS input_tokens,
  CAST(data->>'output_tokens' AS BIGINT) AS output_tokens,
  CAST(data->>'cache_read_tokens' AS BIGINT) AS cache_read_tokens,
  CAST(data->>'cache_write_tokens' AS BIGINT) AS cache_write_tokens,
  CAST(data->>'reasoning_tokens' AS BIGINT) AS reasoning_tokens,
  CAST(data->>'cost_usd' AS DOUBLE) AS cost_usd,
  CAST(data->>'priced' AS BOOLEAN) AS priced
FROM events
WHERE type = 'agent_usage'
";

const EXTRACTIONS_VIEW: &str = r"
CREATE VIEW extractions AS
SELECT
  ts, node, task_id, session,
  CAST(data->>'attempt' AS INTEGER) AS attempt,
  CAST(data->>'line' AS BIGINT) AS line,
  data->>'pattern' AS pattern,
  data->>'category' AS category,
  data->>'severity' AS severity,
  data->'fields' AS fields,
  data->>'text' AS text,
  coalesce(CAST(data->>'dropped' AS BIGINT), 0) AS dropped
FROM events
WHERE type = 'extraction'
";

/// Opens an in-memory DuckDB with the `events`, `tasks`, `llm_calls`, `agent_usage` and
/// `extractions` views over the logs in `log_dirs` (one per node of a fleet: [`crate::spool::Spool::log_dirs`]).
///
/// # Errors
/// [`Error::Sql`] when DuckDB fails, [`Error::Io`] when the directory cannot be listed.
pub fn open(log_dirs: &[PathBuf]) -> Result<Connection> {
    let conn = Connection::open_in_memory()?;
    let globs: Vec<String> = log_dirs
        .iter()
        .filter(|d| !crate::log::log_files(d).unwrap_or_default().is_empty())
        .map(|d| {
            let glob = d.join("events-*.jsonl");
            format!("'{}'", glob.to_string_lossy().replace('\'', "''"))
        })
        .collect();
    let events = if globs.is_empty() {
        EMPTY_EVENTS.to_string()
    } else {
        let glob = globs.join(", ");
        format!(
            "SELECT CAST(ts AS TIMESTAMP) AS ts, node, type, task_id, session, data \
             FROM read_json([{glob}], format = 'newline_delimited', ignore_errors = true, \
             columns = {{ts: 'VARCHAR', node: 'VARCHAR', type: 'VARCHAR', task_id: 'VARCHAR', \
             session: 'VARCHAR', data: 'JSON'}})"
        )
    };
    conn.execute_batch(&format!("CREATE VIEW events AS {events};"))?;
    conn.execute_batch(TASKS_VIEW)?;
    conn.execute_batch(LLM_CALLS_VIEW)?;
    conn.execute_batch(AGENT_USAGE_VIEW)?;
    conn.execute_batch(EXTRACTIONS_VIEW)?;
    Ok(conn)
}

/// Runs one query.
///
/// # Errors
/// [`Error::Sql`] with DuckDB's message (syntax errors, unknown columns, …).
pub fn query(conn: &Connection, sql: &str) -> Result<QueryResult> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let columns = rows
        .as_ref()
        .map(duckdb::Statement::column_names)
        .unwrap_or_default();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let v: Value = row.get(i)?;
            values.push(to_json(v));
        }
        out.push(values);
    }
    Ok(QueryResult { columns, rows: out })
}

/// Opens the logs in `log_dirs` and runs one query.
///
/// # Errors
/// As [`open`] and [`query`].
pub fn run(log_dirs: &[PathBuf], sql: &str) -> Result<QueryResult> {
    // A log file can vanish between DuckDB's listing and its read: another node's log is
    // replaced by its syncer (Syncthing writes a temp file and renames it), an old one
    // is pruned. The query then runs again over a fresh listing, a few times.
    let mut tries = 0;
    loop {
        let result = open(log_dirs).and_then(|conn| query(&conn, sql));
        match result {
            Err(Error::Sql(e)) if tries < 5 && e.to_string().contains("Cannot open file") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn micros(unit: TimeUnit, v: i64) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v / 1000,
    }
}

fn to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::TinyInt(n) => n.into(),
        Value::SmallInt(n) => n.into(),
        Value::Int(n) => n.into(),
        Value::BigInt(n) => n.into(),
        Value::UTinyInt(n) => n.into(),
        Value::USmallInt(n) => n.into(),
        Value::UInt(n) => n.into(),
        Value::UBigInt(n) => n.into(),
        Value::HugeInt(n) => i64::try_from(n).map_or_else(|_| J::String(n.to_string()), J::from),
        Value::UHugeInt(n) => u64::try_from(n).map_or_else(|_| J::String(n.to_string()), J::from),
        Value::Float(f) => serde_json::Number::from_f64(f64::from(f)).map_or(J::Null, J::Number),
        Value::Double(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        Value::Decimal(d) => d
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| J::String(d.to_string()), J::Number),
        Value::Timestamp(unit, v) => chrono::DateTime::from_timestamp_micros(micros(unit, v))
            .map_or(J::Null, |t| {
                J::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            }),
        Value::Date32(days) => chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
            .and_then(|d| d.checked_add_signed(chrono::Duration::days(i64::from(days))))
            .map_or(J::Null, |d| J::String(d.to_string())),
        Value::Time64(unit, v) => {
            let us = micros(unit, v);
            J::String(format!(
                "{:02}:{:02}:{:02}.{:06}",
                us / 3_600_000_000,
                us / 60_000_000 % 60,
                us / 1_000_000 % 60,
                us % 1_000_000
            ))
        }
        Value::Interval {
            months,
            days,
            nanos,
        } => J::String(format!(
            "{months} months {days} days {} ms",
            nanos / 1_000_000
        )),
        Value::Text(s) | Value::Enum(s) => J::String(s),
        Value::Blob(b) | Value::Geometry(b) => J::String(format!("<{} bytes>", b.len())),
        Value::List(l) | Value::Array(l) => J::Array(l.into_iter().map(to_json).collect()),
        Value::Struct(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), to_json(v.clone())))
                .collect(),
        ),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (display(&to_json(k.clone())), to_json(v.clone())))
                .collect(),
        ),
        Value::Union(v) => to_json(*v),
        other => J::String(format!("{other:?}")),
    }
}

fn display(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl QueryResult {
    /// Renders the result.
    ///
    /// # Errors
    /// Only when CSV writing fails (it writes to memory, so in practice never).
    pub fn render(&self, format: Format) -> Result<String> {
        match format {
            Format::Table => {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                t.set_header(&self.columns);
                for row in &self.rows {
                    t.add_row(row.iter().map(display));
                }
                Ok(format!(
                    "{t}\n({} row{})\n",
                    self.rows.len(),
                    if self.rows.len() == 1 { "" } else { "s" }
                ))
            }
            Format::Json => {
                let objects: Vec<serde_json::Map<String, serde_json::Value>> = self
                    .rows
                    .iter()
                    .map(|r| {
                        self.columns
                            .iter()
                            .cloned()
                            .zip(r.iter().cloned())
                            .collect()
                    })
                    .collect();
                Ok(
                    serde_json::to_string_pretty(&objects).map_err(|e| Error::json("result", e))?
                        + "\n",
                )
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                let csv_err =
                    |e: csv::Error| Error::io("writing CSV", "", std::io::Error::other(e));
                w.write_record(&self.columns).map_err(csv_err)?;
                for row in &self.rows {
                    w.write_record(row.iter().map(display)).map_err(csv_err)?;
                }
                let bytes = w.into_inner().map_err(|e| {
                    Error::io("writing CSV", "", std::io::Error::other(e.to_string()))
                })?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

/// The query behind `architect stats`: per session, completed and failed counts, success
/// rate (%), and p50/p95 task time (ms, last assignment to completion, completed tasks).
pub const STATS_SQL: &str = r"
SELECT session,
       count(*) FILTER (WHERE state = 'done') AS completed,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       round(100.0 * count(*) FILTER (WHERE state = 'done')
             / nullif(count(*) FILTER (WHERE state IN ('done', 'failed')), 0), 1) AS success_pct,
       round(quantile_cont(run_ms, 0.5) FILTER (WHERE state = 'done'), 1) AS p50_ms,
       round(quantile_cont(run_ms, 0.95) FILTER (WHERE state = 'done'), 1) AS p95_ms
FROM tasks
WHERE session IS NOT NULL
GROUP BY session
ORDER BY session
";
