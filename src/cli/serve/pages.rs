//! The dashboard's pages, rendered on the server as HTML from the same readers as the
//! CLI verbs. Every text from the spool or the log is HTML-escaped; event data passes
//! through the redactor (`src/redact.rs`) before it is shown.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use axum::http::StatusCode;

use architect::session::SessionFile;
use architect::spool::task::{TaskRecord, TaskState};
use architect::spool::Spool;
use architect::sql::{self, QueryResult};

use crate::cli::tasks::StateArg;

/// `s` with `& < > " '` escaped, for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the navigation, the live-events counter (`#live`, updated by
/// `app.js` only), a flash line for action results, then `body`.
fn layout(title: &str, page: &str, body: &str) -> String {
    layout_with(title, page, body, false)
}

/// [`layout`], with asciinema-player's style and script when `player` (a page with
/// recordings to play: `app.js` turns each `[data-cast]` element into a player, so the
/// player's script is loaded before it).
fn layout_with(title: &str, page: &str, body: &str, player: bool) -> String {
    use super::{PLAYER_CSS, PLAYER_JS, PLAYER_VERSION};
    let (player_css, player_js) = if player {
        (
            format!("<link rel=\"stylesheet\" href=\"{PLAYER_CSS}?v={PLAYER_VERSION}\">"),
            format!("<script src=\"{PLAYER_JS}?v={PLAYER_VERSION}\"></script>"),
        )
    } else {
        (String::new(), String::new())
    };
    let nav: String = [
        ("fleet", "/", "Fleet"),
        ("tasks", "/tasks", "Tasks"),
        ("approvals", "/approvals", "Approvals"),
        ("cost", "/cost", "Cost"),
        ("nodes", "/nodes", "Nodes"),
    ]
    .iter()
    .map(|(id, href, label)| {
        let cur = if *id == page {
            " class=\"current\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{cur}>{label}</a>")
    })
    .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · architect</title>{player_css}<link rel=\"stylesheet\" href=\"/static/style.css\">\
         </head><body data-page=\"{page}\"><header><strong>architect</strong><nav>{nav}</nav>\
         <span id=\"live\" data-events=\"0\" title=\"events received live (server-sent events)\">\
         connecting…</span></header><p id=\"flash\" hidden></p><main>{body}</main>\
         {player_js}<script src=\"/static/app.js\"></script></body></html>\n",
        esc(title)
    )
}

/// The error page: the status and what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> String {
    layout(
        status.as_str(),
        "",
        &format!(
            "<h1>{}</h1><pre class=\"error\">{}</pre>",
            esc(&status.to_string()),
            esc(message)
        ),
    )
}

fn table(header: &[&str], rows: &[Vec<String>], attrs: &str) -> String {
    let mut t = format!("<table {attrs}><thead><tr>");
    for h in header {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for c in r {
            // Cells are already HTML (escaped by the caller).
            let _ = write!(t, "<td>{c}</td>");
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// A query result as an HTML table (values escaped; numbers as DuckDB gave them).
fn query_table(r: &QueryResult, id: &str) -> String {
    let header: Vec<&str> = r.columns.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => esc(s),
                    other => esc(&other.to_string()),
                })
                .collect()
        })
        .collect();
    if rows.is_empty() {
        return format!("<p class=\"empty\" id=\"{id}\">nothing yet</p>");
    }
    table(&header, &rows, &format!("id=\"{id}\""))
}

/// `pending`, `waiting_lock`, … as the `tasks --state` filter.
pub fn parse_state(s: &str) -> Option<StateArg> {
    Some(match s {
        "pending" => StateArg::Pending,
        "waiting_lock" => StateArg::WaitingLock,
        "active" => StateArg::Active,
        "done" => StateArg::Done,
        "failed" => StateArg::Failed,
        "cancelled" => StateArg::Cancelled,
        _ => return None,
    })
}

fn state_name(s: StateArg) -> &'static str {
    match s {
        StateArg::Pending => "pending",
        StateArg::WaitingLock => "waiting_lock",
        StateArg::Active => "active",
        StateArg::Done => "done",
        StateArg::Failed => "failed",
        StateArg::Cancelled => "cancelled",
    }
}

use crate::cli::tasks::one_line;

fn task_link(id: &str) -> String {
    format!("<a href=\"/tasks/{0}\">{0}</a>", esc(id))
}

/// `/api/status`: `{"tasks": {dir: count, …}, "sessions": {state: count, …},
/// "daemon": bool}`.
pub fn status_value(spool: &Spool) -> Result<serde_json::Value> {
    let counts = crate::cli::observe::task_counts(spool);
    let mut by_state = serde_json::Map::new();
    for s in crate::cli::observe::read_sessions(spool)? {
        let n = by_state
            .get(s.state.as_str())
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        by_state.insert(s.state.as_str().to_string(), (n + 1).into());
    }
    Ok(serde_json::json!({
        "tasks": counts,
        "sessions": by_state,
        "daemon": architect::daemon::DaemonLock::is_held(spool).is_some(),
    }))
}

/// The last lines of what the session's screen shows, from its running task's
/// recording, else its idle one ([`architect::record::screen`]: replayed through a vt100
/// screen of the recorded size, redacted); `None` when there is no recording (a provider
/// session, recordings off, nothing printed yet).
fn screen_preview(spool: &Spool, s: &SessionFile) -> Option<String> {
    let path = architect::record::screen::current_recording(
        spool,
        &s.node,
        &s.name,
        s.task_id.as_deref(),
    )?;
    let lines = architect::record::screen::screen_lines(&path, 1 << 20)?;
    Some(lines[lines.len().saturating_sub(8)..].join("\n"))
}

/// How the fleet page and `/api/screens` name a session's screen: `<node>/<session>`.
fn screen_key(s: &SessionFile) -> String {
    format!("{}/{}", s.node, s.name)
}

/// `/api/screens`: each session's state, task and the last lines of its screen (as the
/// fleet page shows them), keyed by [`screen_key`]: `{"<node>/<session>": {"state":
/// "busy", "task": "t-1" | null, "screen": "…"}}`. The fleet page's script reads it
/// every 2 s.
///
/// # Errors
/// The sessions directory cannot be read.
pub fn screens_value(spool: &Spool) -> Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for s in crate::cli::observe::read_sessions(spool)? {
        out.insert(
            screen_key(&s),
            serde_json::json!({
                "state": s.state.as_str(),
                "task": s.task_id,
                "screen": screen_preview(spool, &s).unwrap_or_default(),
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// `/`: task counts, sessions (state, task, approval, the last lines of their screen) and a live feed of finished tasks that only the page's script fills.
pub fn fleet(spool: &Spool) -> Result<String> {
    let status = status_value(spool)?;
    let mut body = String::from("<h1>Fleet</h1>");
    let daemon = status["daemon"].as_bool().unwrap_or(false);
    let _ = write!(
        body,
        "<p class=\"daemon {}\">daemon {}</p><section class=\"counts\">",
        if daemon { "up" } else { "down" },
        if daemon {
            "running"
        } else {
            "not running (tasks wait in the spool until it starts)"
        }
    );
    if let Some(tasks) = status["tasks"].as_object() {
        for (k, v) in tasks {
            let _ = write!(
                body,
                "<a class=\"count\" href=\"/tasks?state={k}\"><span class=\"n\" data-count=\"{k}\">{v}</span> {k}</a>",
                k = esc(k)
            );
        }
    }
    body.push_str("</section><h2>Sessions</h2>");
    let sessions = crate::cli::observe::read_sessions(spool)?;
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let mut state = format!(
                "<span class=\"state {0}\" data-session-state=\"{1}\">{0}</span>",
                esc(s.state.as_str()),
                esc(&s.name)
            );
            if let Some(a) = &s.approval {
                let _ = write!(
                    state,
                    " <a href=\"/approvals\">{} asks: {}</a>",
                    esc(&a.id),
                    esc(a
                        .question
                        .action
                        .as_deref()
                        .unwrap_or("(action unreadable)"))
                );
            }
            if let Some(until) = s.limited_until {
                let _ = write!(state, " until {}", until.format("%H:%M:%S"));
            }
            // Always there, so the page's script can fill it as the screen changes.
            let preview = format!(
                "<pre class=\"screen\" data-screen=\"{}\">{}</pre>",
                esc(&screen_key(s)),
                esc(&screen_preview(spool, s).unwrap_or_default())
            );
            vec![
                esc(&s.name),
                state,
                format!(
                    "<span data-session-task=\"{}\">{}</span>",
                    esc(&s.name),
                    s.task_id.as_deref().map(task_link).unwrap_or_default()
                ),
                esc(&s.profile),
                esc(&s.node),
                s.since.format("%Y-%m-%d %H:%M:%S").to_string(),
                s.restarts.to_string(),
                preview,
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str(
            "<p class=\"empty\" id=\"sessions\">no session files yet (the daemon writes \
             spool/sessions/ when it starts)</p>",
        );
    } else {
        body.push_str(&table(
            &[
                "session", "state", "task", "profile", "node", "since", "restarts", "screen",
            ],
            &rows,
            "id=\"sessions\"",
        ));
    }
    body.push_str(
        "<h2>Finished while you watched</h2><ul id=\"live-feed\"></ul>\
         <p class=\"hint\">Tasks that end while this page is open appear here, from the \
         event stream.</p>",
    );
    Ok(layout("Fleet", "fleet", &body))
}

/// `/tasks?state=S`: the newest 200 tasks per state, with filter links.
pub fn tasks(spool: &Spool, state: Option<StateArg>) -> Result<String> {
    let rows = crate::cli::tasks::collect(spool, state, 200)?;
    let mut body = String::from("<h1>Tasks</h1><p class=\"filters\">");
    let cur = state.map(state_name);
    let _ = write!(
        body,
        "<a href=\"/tasks\"{}>all</a>",
        if cur.is_none() {
            " class=\"current\""
        } else {
            ""
        }
    );
    for &s in crate::cli::observe::TASK_STATES {
        let _ = write!(
            body,
            " <a href=\"/tasks?state={s}\"{}>{s}</a>",
            if cur == Some(s) {
                " class=\"current\""
            } else {
                ""
            }
        );
    }
    body.push_str("</p>");
    let rows: Vec<Vec<String>> = rows
        .iter()
        .rev()
        .map(|(s, r)| {
            vec![
                task_link(&r.id),
                format!("<span class=\"state {0}\">{0}</span>", r.display_state(*s)),
                r.task.priority().to_string(),
                esc(r.session.as_deref().unwrap_or("")),
                r.attempts.len().to_string(),
                r.received_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                esc(&one_line(&r.task.prompt, 80)),
                esc(&r
                    .error
                    .as_deref()
                    .map(|e| one_line(e, 80))
                    .unwrap_or_default()),
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str("<p class=\"empty\" id=\"tasks\">no tasks</p>");
    } else {
        body.push_str(&table(
            &[
                "id", "state", "pri", "session", "tries", "received", "prompt", "error",
            ],
            &rows,
            "id=\"tasks\"",
        ));
    }
    Ok(layout("Tasks", "tasks", &body))
}

/// `/tasks/<id>`: the record, its attempts, its result, its extractions, its recordings
/// (played in the page) and its events.
pub fn task(spool: &Spool, id: &str) -> Result<String> {
    let (state, rec) = spool.find_in_fleet(id)?;
    let display = rec.display_state(state);
    let mut body = format!(
        "<h1>Task {}</h1><dl class=\"record\"><dt>state</dt><dd><span class=\"state {d}\" id=\"task-state\">{d}</span></dd>",
        esc(&rec.id),
        d = display
    );
    let mut field = |k: &str, v: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    if let Some(w) = &rec.waiting_lock {
        field("waiting for", esc(&w.blocked_by.to_string()));
    }
    field("priority", rec.task.priority().to_string());
    if let Some(s) = &rec.task.session {
        field("session asked", esc(s));
    }
    if let Some(r) = &rec.task.role {
        field("role", esc(r));
    }
    if let Some(l) = &rec.task.locks {
        let mut parts: Vec<String> = l.branch.iter().map(|b| format!("branch:{b}")).collect();
        parts.extend(l.paths.iter().cloned());
        field("locks", esc(&parts.join(", ")));
    }
    if !rec.task.depends_on.is_empty() {
        field("after", esc(&rec.task.depends_on.join(", ")));
    }
    field(
        "received",
        format!("{} from {}", rec.received_at.to_rfc3339(), esc(&rec.source)),
    );
    if let Some(t) = rec.finished_at {
        field("finished", t.to_rfc3339());
    }
    field(
        "prompt",
        format!(
            "<pre>{}</pre>",
            esc(&architect::redact::redact(&rec.task.prompt))
        ),
    );
    if let Some(e) = &rec.error {
        field("error", format!("<pre class=\"error\">{}</pre>", esc(e)));
    }
    body.push_str("</dl>");
    let actions = match state {
        TaskState::Pending | TaskState::Active => vec!["cancel"],
        TaskState::Failed | TaskState::Cancelled => vec!["retry"],
        TaskState::Done => vec![],
    };
    if !actions.is_empty() {
        body.push_str("<p class=\"actions\">");
        for a in actions {
            let _ = write!(
                body,
                "<button data-action=\"{a}\" data-task=\"{}\">{a}</button> ",
                esc(&rec.id)
            );
        }
        body.push_str("</p>");
    }
    body.push_str("<h2>Attempts</h2>");
    let rows: Vec<Vec<String>> = rec
        .attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                esc(&a.session),
                esc(&a.node),
                a.started_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                (a.finished_at - a.started_at)
                    .num_milliseconds()
                    .to_string(),
                esc(&format!("{:?}", a.outcome)),
                esc(a.error.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">none yet</p>");
    } else {
        body.push_str(&table(
            &["#", "session", "node", "started", "ms", "outcome", "error"],
            &rows,
            "id=\"attempts\"",
        ));
    }
    if let Some(r) = &rec.result {
        body.push_str("<h2>Result</h2>");
        if let Some(code) = r.exit_status {
            let _ = write!(body, "<p>exit status {code}</p>");
        }
        if let Some(reply) = &r.reply {
            let _ = write!(body, "<h3>Reply</h3><pre id=\"reply\">{}</pre>", esc(reply));
        }
        let _ = write!(
            body,
            "<h3>Output</h3><pre id=\"output\">{}</pre>",
            esc(&r.output)
        );
    }
    body.push_str(&extractions_section(spool, &rec)?);
    let found = architect::record::find_task(spool, &rec.id);
    body.push_str(&recordings_section(&rec, &found));
    body.push_str("<h2>Events</h2>");
    let events = architect::log::read_events_from(&spool.log_dirs())?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .filter(|e| e.task_id.as_deref() == Some(&rec.id))
        .map(|e| {
            let data = serde_json::to_value(e)
                .ok()
                .and_then(|v| v.get("data").cloned())
                .map(architect::redact::redact_value)
                .map(|d| d.to_string())
                .unwrap_or_default();
            vec![
                e.ts.format("%H:%M:%S%.3f").to_string(),
                esc(&e.node),
                esc(e.kind()),
                esc(e.session.as_deref().unwrap_or("")),
                format!("<code>{}</code>", esc(&one_line(&data, 400))),
            ]
        })
        .collect();
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">no events in the log</p>");
    } else {
        body.push_str(&table(
            &["time", "node", "type", "session", "data"],
            &rows,
            "id=\"events\"",
        ));
    }
    Ok(layout_with(
        &format!("Task {}", rec.id),
        "tasks",
        &body,
        !found.files.is_empty(),
    ))
}

/// The task page's extractions: the task's `extraction` events as `architect show`
/// reads them, one row each (attempt, line number, pattern, category, severity, fields,
/// the line). Fields and line were redacted when logged and pass the redactor again here,
/// as every event shown does.
///
/// # Errors
/// A log directory cannot be read.
fn extractions_section(spool: &Spool, rec: &TaskRecord) -> Result<String> {
    let mut out = String::from("<h2>Extractions</h2>");
    let extracted = crate::cli::tasks::extractions_of(spool, rec)?;
    if extracted.is_empty() {
        out.push_str(
            "<p class=\"empty\" id=\"no-extractions\">nothing extracted (no line of its \
             output matched an extraction pattern, or no attempt has finished)</p>",
        );
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = extracted
        .iter()
        .map(|x| {
            let e = &x.data;
            let fields: Vec<String> = e
                .fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<code>{}={}</code>",
                        esc(k),
                        esc(&architect::redact::redact(v))
                    )
                })
                .collect();
            let mut text = format!("<code>{}</code>", esc(&architect::redact::redact(&e.text)));
            if e.dropped > 0 {
                let _ = write!(text, " (+{} more not logged)", e.dropped);
            }
            vec![
                e.attempt.to_string(),
                e.line.to_string(),
                esc(&e.pattern),
                esc(e.category.as_str()),
                format!(
                    "<span class=\"severity {0}\">{0}</span>",
                    esc(e.severity.as_str())
                ),
                fields.join(" "),
                text,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "#", "line", "pattern", "category", "severity", "fields", "text",
        ],
        &rows,
        "id=\"extractions\"",
    ));
    Ok(out)
}

/// The task page's recordings: one asciinema player per attempt recorded (an element
/// `[data-cast]` naming its `/recordings/…` URL, made a player by `app.js`), with the
/// link to the raw file; or a sentence saying there is none, and why there may be none.
fn recordings_section(rec: &TaskRecord, found: &architect::record::Found) -> String {
    let mut out = String::from("<h2>Recordings</h2>");
    if found.files.is_empty() {
        out.push_str(if rec.attempts.is_empty() {
            "<p class=\"empty\" id=\"no-recording\">No recording: the task has not run \
             yet.</p>"
        } else {
            "<p class=\"empty\" id=\"no-recording\">No recording of this task: it ran \
             on a provider session (no terminal), recordings are off, or its recording \
             was pruned.</p>"
        });
        return out;
    }
    out.push_str("<div id=\"recordings\">");
    for (attempt, path) in &found.files {
        let name = architect::record::task_file_name(&rec.id, *attempt);
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let _ = write!(
            out,
            "<figure class=\"recording\" data-attempt=\"{attempt}\"><figcaption>attempt \
             {attempt}: <a href=\"/recordings/{n}\">{n}</a> ({size} bytes, asciicast v2; \
             in a terminal: <code>architect replay {id} --attempt {attempt}</code>)\
             </figcaption><div class=\"player\" data-cast=\"/recordings/{n}\"></div></figure>",
            n = esc(&name),
            id = esc(&rec.id)
        );
    }
    out.push_str("</div>");
    out
}

/// `/approvals`: each question a session waits on, with approve and deny buttons.
pub fn approvals(spool: &Spool) -> Result<String> {
    let mut body = String::from("<h1>Approvals</h1>");
    let waiting: Vec<SessionFile> = crate::cli::observe::read_sessions(spool)?
        .into_iter()
        .filter(|s| s.approval.is_some())
        .collect();
    if waiting.is_empty() {
        body.push_str(
            "<p class=\"empty\" id=\"approvals\">no question is waiting for a person</p>",
        );
        return Ok(layout("Approvals", "approvals", &body));
    }
    let rows: Vec<Vec<String>> = waiting
        .iter()
        .filter_map(|s| {
            let a = s.approval.as_ref()?;
            let data = format!(
                "data-session=\"{}\" data-question=\"{}\"",
                esc(&s.name),
                esc(&a.id)
            );
            Some(vec![
                esc(&s.name),
                s.task_id.as_deref().map(task_link).unwrap_or_default(),
                format!("<code>{}</code>", esc(&a.id)),
                format!(
                    "<code>{}</code>",
                    esc(a
                        .question
                        .action
                        .as_deref()
                        .unwrap_or("(action unreadable)"))
                ),
                esc(&a.rule),
                esc(&a.reason),
                a.since.format("%H:%M:%S").to_string(),
                format!(
                    "<button class=\"approve\" data-answer=\"approve\" {data}>approve</button> \
                     <button class=\"deny\" data-answer=\"deny\" {data}>deny</button>"
                ),
            ])
        })
        .collect();
    body.push_str(&table(
        &[
            "session", "task", "question", "asks", "rule", "why", "since", "answer",
        ],
        &rows,
        "id=\"approvals\"",
    ));
    body.push_str(
        "<p class=\"hint\">An answer applies to the question shown only: if the session \
         has moved on, nothing is answered. Needs the login cookie (the URL \
         <code>architect serve</code> printed).</p>",
    );
    Ok(layout("Approvals", "approvals", &body))
}

/// Spend by day: LLM calls and agent CLIs, USD.
const COST_BY_DAY_SQL: &str = "SELECT day, round(sum(llm), 6) AS llm_usd, \
    round(sum(agents), 6) AS agents_usd, round(sum(llm) + sum(agents), 6) AS total_usd FROM ( \
    SELECT CAST(ts AS DATE) AS day, cost_usd AS llm, 0.0 AS agents FROM llm_calls \
    UNION ALL SELECT CAST(ts AS DATE), 0.0, cost_usd FROM agent_usage) \
    GROUP BY day ORDER BY day";

/// Bars for a spend column: each row's share of the largest, as a CSS width.
fn bars(r: &QueryResult, label_col: &str, value_col: &str, id: &str) -> String {
    let (Some(li), Some(vi)) = (
        r.columns.iter().position(|c| c == label_col),
        r.columns.iter().position(|c| c == value_col),
    ) else {
        return String::new();
    };
    let vals: Vec<(String, f64)> = r
        .rows
        .iter()
        .map(|row| {
            let label = match &row[li] {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            (label, row[vi].as_f64().unwrap_or(0.0))
        })
        .collect();
    let max = vals.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    if vals.is_empty() || max <= 0.0 {
        return String::new();
    }
    let mut out = format!("<div class=\"bars\" id=\"{id}\">");
    for (label, v) in vals {
        let _ = write!(
            out,
            "<div class=\"bar\"><span class=\"label\">{}</span><span class=\"fill\" \
             style=\"width:{:.1}%\"></span><span class=\"v\">${v:.4}</span></div>",
            esc(&label),
            v / max * 100.0
        );
    }
    out.push_str("</div>");
    out
}

/// `/cost`: spend by provider and model (LLM calls), by session (agent CLIs) and by day,
/// in USD, from the log — the queries of `architect stats --cost`.
pub fn cost(spool: &Spool) -> Result<String> {
    let dirs = spool.log_dirs();
    let by_provider = sql::run(&dirs, crate::cli::sql::COST_SQL)?;
    let by_session = sql::run(&dirs, crate::cli::sql::AGENT_SESSIONS_SQL)?;
    let by_task = sql::run(&dirs, crate::cli::sql::AGENT_TASKS_SQL)?;
    let by_day = sql::run(&dirs, COST_BY_DAY_SQL)?;
    let mut body = String::from(
        "<h1>Cost</h1><p class=\"hint\">USD, from the event log \
        (<code>llm_calls</code> and <code>agent_usage</code>; prices from config/providers.toml \
        and config/prices.toml).</p>",
    );
    body.push_str("<h2>By day</h2>");
    body.push_str(&bars(&by_day, "day", "total_usd", "chart-day"));
    body.push_str(&query_table(&by_day, "cost-day"));
    body.push_str("<h2>LLM calls by provider and model</h2>");
    body.push_str(&bars(&by_provider, "model", "usd", "chart-model"));
    body.push_str(&query_table(&by_provider, "cost-provider"));
    body.push_str("<h2>Agent CLIs by session</h2>");
    body.push_str(&bars(&by_session, "session", "usd", "chart-session"));
    body.push_str(&query_table(&by_session, "cost-session"));
    body.push_str("<h2>Agent CLIs by task</h2>");
    body.push_str(&query_table(&by_task, "cost-task"));
    Ok(layout("Cost", "cost", &body))
}

/// `/nodes`: the rows of `architect nodes`.
pub fn nodes(spool: &Spool, config: &Path) -> Result<String> {
    let (rows, daemon, this) = crate::cli::nodes::rows(spool, config)?;
    let mut body = String::from("<h1>Nodes</h1>");
    if rows.is_empty() {
        let _ = write!(
            body,
            "<p id=\"nodes\">one node (<strong>{}</strong>): no config/nodes.toml, so the \
             spool is not shared</p>",
            esc(&this)
        );
        return Ok(layout("Nodes", "nodes", &body));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let hb = r.heartbeat.as_ref();
            vec![
                format!("{}{}", esc(&r.node), if r.this { " (this)" } else { "" }),
                format!("<span class=\"state {0}\">{0}</span>", esc(&r.status)),
                r.silent_ms.map_or_else(String::new, |ms| {
                    format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
                }),
                hb.map_or_else(String::new, |h| h.epoch.to_string()),
                r.owned.to_string(),
                hb.map_or_else(String::new, |h| h.running.to_string()),
                hb.map_or_else(String::new, |h| if h.draining { "yes" } else { "" }.into()),
                esc(&hb.map_or_else(String::new, |h| h.version.clone())),
                r.weight.to_string(),
                esc(&r.labels.join(", ")),
            ]
        })
        .collect();
    body.push_str(&table(
        &[
            "node", "status", "silent", "epoch", "owned", "running", "draining", "version",
            "weight", "labels",
        ],
        &cells,
        "id=\"nodes\"",
    ));
    if !daemon {
        body.push_str(
            "<p class=\"hint\">this node's daemon is not running: liveness is judged by a \
             running daemon, on its own clock</p>",
        );
    }
    Ok(layout("Nodes", "nodes", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_spool_text_is_escaped() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn every_state_filter_round_trips() {
        for &s in crate::cli::observe::TASK_STATES {
            assert_eq!(parse_state(s).map(state_name), Some(s));
        }
        assert!(parse_state("running").is_none());
    }
}
