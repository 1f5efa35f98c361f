//! `architect serve`: a web dashboard over the spool and the event log — the fleet's
//! sessions, the queue and tasks, a task's detail and recording, approvals, cost, nodes —
//! with live updates by server-sent events (`/events`). A task's recordings play in its
//! page with asciinema-player, vendored from its npm package (`vendor/`,
//! `tools/vendor-assets`) and served from the binary: nothing is fetched from elsewhere.
//!
//! It reads what `status`, `tasks`, `show`, `sessions`, `nodes` and `stats --cost` read,
//! through their functions, so it works whether the daemon runs or not. Its write actions
//! (approve, deny, cancel, retry) write the same control requests as those verbs.
//!
//! Security (see [`auth`]): writes need the bearer token of `spool/locks/serve.token`;
//! a bind beyond loopback needs it for every request.

mod auth;
mod live;
mod pages;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use architect::record::asciicast;
use architect::spool::Spool;

pub use auth::ensure_token;

/// `architect serve` arguments.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (`host:port`; port 0 picks a free one). Beyond loopback every
    /// request needs the token.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub bind: SocketAddr,
}

/// What every handler reads.
#[derive(Debug)]
struct AppState {
    spool: Spool,
    config: PathBuf,
    token: auth::Token,
    /// The address bound: reads without the token are allowed only on loopback, and only
    /// for requests whose `Host` names it.
    bound: SocketAddr,
    /// `/metrics`: kept between scrapes, so each reads only what the logs gained.
    scraper: std::sync::Mutex<architect::metrics::Scraper>,
}

type Shared = Arc<AppState>;

/// Runs the dashboard until interrupted (Ctrl-C / SIGTERM).
///
/// # Errors
/// The token cannot be read or created, the address cannot be bound.
pub fn run(spool: &Spool, config: &Path, args: &ServeArgs) -> Result<ExitCode> {
    let (token, token_path, created) = ensure_token(spool)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("binding {} (another `architect serve`?)", args.bind))?;
        let bound = listener.local_addr()?;
        let state = Arc::new(AppState {
            spool: spool.clone(),
            config: config.to_path_buf(),
            token,
            bound,
            scraper: std::sync::Mutex::default(),
        });
        let app = router(state.clone());
        println!("dashboard  http://{bound}/");
        println!(
            "log in     http://{bound}/login?token={}   (sets a cookie; needed to approve, deny, cancel, retry{})",
            state.token.reveal(),
            if bound.ip().is_loopback() {
                ""
            } else {
                ", and for every page: bound beyond loopback"
            }
        );
        println!(
            "token      {}{} (0600, this node only; scripts: Authorization: Bearer <token>)",
            token_path.display(),
            if created { ", created now" } else { "" }
        );
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(fleet))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(task))
        .route("/approvals", get(approvals))
        .route("/cost", get(cost))
        .route("/nodes", get(nodes))
        .route("/recordings/{file}", get(recording))
        .route("/events", get(live::events))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status_json))
        .route("/api/screens", get(screens_json))
        .route("/api/answer", post(answer))
        .route("/api/tasks/{id}/{action}", post(task_action))
        .route("/login", get(auth::login))
        .route("/static/app.js", get(app_js))
        .route("/static/style.css", get(style_css))
        .route(PLAYER_JS, get(player_js))
        .route(PLAYER_CSS, get(player_css))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .with_state(state)
}

/// A page or an error page: what went wrong, as text.
struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.0, Html(pages::error_page(self.0, &self.1))).into_response()
    }
}

/// Runs a blocking reader (files, DuckDB) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| PageError(StatusCode::NOT_FOUND, format!("{e:#}")))
}

/// `/metrics`: the Prometheus text of `architect metrics` (format 0.0.4), from a
/// [`architect::metrics::Scraper`] kept between scrapes. A scrape that fails answers 500
/// with the reason (Prometheus marks the target down).
async fn metrics(State(st): State<Shared>) -> Response {
    let scraped = tokio::task::spawn_blocking(move || {
        let mut scraper = st
            .scraper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        scraper.scrape(&st.spool)
    })
    .await;
    match scraped {
        Ok(Ok(text)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scraping: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scraping: {e}\n"),
        )
            .into_response(),
    }
}

async fn fleet(State(st): State<Shared>) -> Result<Html<String>, PageError> {
    blocking(move || pages::fleet(&st.spool)).await.map(Html)
}

#[derive(Debug, Deserialize)]
struct TasksQuery {
    state: Option<String>,
}

async fn tasks(
    State(st): State<Shared>,
    Query(q): Query<TasksQuery>,
) -> Result<Html<String>, PageError> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(pages::parse_state(s).ok_or_else(|| {
            PageError(
                StatusCode::BAD_REQUEST,
                format!(
                    "state {s:?}: one of pending, waiting_lock, active, done, failed, cancelled"
                ),
            )
        })?),
    };
    blocking(move || pages::tasks(&st.spool, state))
        .await
        .map(Html)
}

async fn task(
    State(st): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Html<String>, PageError> {
    if !architect::types::valid_id(&id) {
        return Err(PageError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a task id"),
        ));
    }
    blocking(move || pages::task(&st.spool, &id))
        .await
        .map(Html)
}

async fn approvals(State(st): State<Shared>) -> Result<Html<String>, PageError> {
    blocking(move || pages::approvals(&st.spool))
        .await
        .map(Html)
}

async fn cost(State(st): State<Shared>) -> Result<Html<String>, PageError> {
    blocking(move || pages::cost(&st.spool)).await.map(Html)
}

async fn nodes(State(st): State<Shared>) -> Result<Html<String>, PageError> {
    blocking(move || pages::nodes(&st.spool, &st.config))
        .await
        .map(Html)
}

/// `/recordings/<task>.cast` or `/recordings/<task>.<n>.cast`: the recording (asciicast
/// v2), found on whichever node ran the task, with each output event's text, each
/// marker and the title passed through the redactor, as everything the dashboard shows.
/// A chunk is redacted alone: a secret the terminal got in two reads passes (the file on
/// disk, which `architect replay` plays, is not redacted at all).
async fn recording(
    State(st): State<Shared>,
    UrlPath(file): UrlPath<String>,
) -> Result<Response, PageError> {
    let not_found = |why: String| PageError(StatusCode::NOT_FOUND, why);
    let stem = file
        .strip_suffix(".cast")
        .ok_or_else(|| not_found(format!("{file:?}: recordings end in .cast")))?;
    let (task, attempt) = match stem.rsplit_once('.') {
        Some((t, n)) => (
            t.to_string(),
            n.parse::<u32>()
                .map_err(|_| not_found(format!("{file:?}: not <task>[.<attempt>].cast")))?,
        ),
        None => (stem.to_string(), 1),
    };
    if !architect::types::valid_id(&task) {
        return Err(not_found(format!("{task:?} is not a task id")));
    }
    let bytes = blocking(move || {
        let found = architect::record::find_task(&st.spool, &task);
        let (_, path) = found
            .files
            .iter()
            .find(|(a, _)| *a == attempt.max(1))
            .ok_or_else(|| anyhow::anyhow!("no recording {file} on any node"))?;
        let bytes = architect::durable::read_regular(path, 64 << 20)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let cast = asciicast::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| anyhow::anyhow!("{}: not asciicast v2: {e}", path.display()))?;
        Ok(redacted(cast).encode())
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/x-asciicast; charset=utf-8",
        )],
        bytes,
    )
        .into_response())
}

/// `cast` with the text a person would read (output, markers, title) redacted.
fn redacted(mut cast: asciicast::Cast) -> asciicast::Cast {
    use architect::redact::redact;
    cast.header.title = cast.header.title.as_deref().map(redact);
    for e in &mut cast.events {
        if matches!(
            e.kind,
            asciicast::EventKind::Output | asciicast::EventKind::Marker
        ) {
            e.data = redact(&e.data);
        }
    }
    cast
}

/// `/api/status`: the task counts of `architect status --json` (`tasks`) and the
/// sessions by state (`sessions`: state → count).
async fn status_json(State(st): State<Shared>) -> Result<Json<serde_json::Value>, PageError> {
    blocking(move || pages::status_value(&st.spool))
        .await
        .map(Json)
}

async fn screens_json(State(st): State<Shared>) -> Result<Json<serde_json::Value>, PageError> {
    blocking(move || pages::screens_value(&st.spool))
        .await
        .map(Json)
}

/// The body of `POST /api/answer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    session: String,
    /// The question's id, as the page showed it.
    question: String,
    /// `true`: approve (the profile's yes key); `false`: deny.
    approve: bool,
}

/// What a write action answers: `{"ok": true, "message"}` or `{"ok": false, "error"}`
/// with status 409.
fn action_result(r: Result<String>) -> Response {
    match r {
        Ok(message) => Json(serde_json::json!({"ok": true, "message": message})).into_response(),
        Err(e) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"ok": false, "error": format!("{e:#}")})),
        )
            .into_response(),
    }
}

async fn answer(State(st): State<Shared>, Json(body): Json<AnswerBody>) -> Response {
    let r = tokio::task::spawn_blocking(move || {
        let q = super::observe::request_answer(
            &st.spool,
            &body.session,
            Some(&body.question),
            body.approve,
        )?;
        Ok(format!(
            "{}: {} on {}",
            if body.approve { "approved" } else { "denied" },
            q.question
                .action
                .as_deref()
                .unwrap_or("(action unreadable)"),
            body.session
        ))
    })
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
    action_result(r)
}

async fn task_action(
    State(st): State<Shared>,
    UrlPath((id, action)): UrlPath<(String, String)>,
) -> Response {
    let r = tokio::task::spawn_blocking(move || match action.as_str() {
        "cancel" => super::tasks::request_cancel(&st.spool, &id)
            .map(|()| format!("cancel requested for {id}")),
        "retry" => super::tasks::request_retry(&st.spool, &id)
            .map(|()| format!("retry requested for {id}")),
        other => Err(anyhow::anyhow!("no action {other:?} (cancel or retry)")),
    })
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
    action_result(r)
}

/// The version of asciinema-player vendored in `vendor/asciinema-player/` (the one
/// `tools/vendor-assets` pins); pages add it to the player's URLs as `?v=`, so a binary
/// with another version is never served from a browser's cache.
pub(crate) const PLAYER_VERSION: &str = "3.18.0";
/// Where the dashboard serves asciinema-player's script (its npm package's
/// `dist/bundle/asciinema-player.min.js`, which defines `window.AsciinemaPlayer`).
pub(crate) const PLAYER_JS: &str = "/static/asciinema-player.min.js";
/// Where the dashboard serves asciinema-player's style sheet.
pub(crate) const PLAYER_CSS: &str = "/static/asciinema-player.css";

/// `Cache-Control` of the vendored files: their URLs carry the version, so a browser may
/// keep them a year without asking again (still only this browser: `private`, since
/// beyond loopback they are served to token holders only).
const VENDORED_CACHE: &str = "private, max-age=31536000, immutable";

async fn player_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, VENDORED_CACHE),
        ],
        include_bytes!("vendor/asciinema-player/asciinema-player.min.js").as_slice(),
    )
}

async fn player_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, VENDORED_CACHE),
        ],
        include_bytes!("vendor/asciinema-player/asciinema-player.css").as_slice(),
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("app.js"),
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_recording_has_its_output_markers_and_title_redacted() {
        let key = "sk-ant-api03-SECRETSECRETSECRETSECRET";
        let mut text = asciicast::encode_header(&asciicast::Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: None,
            env: std::collections::BTreeMap::new(),
            title: Some(format!("task with {key}")),
        });
        for e in [
            asciicast::Event::output(0.5, format!("\x1b[31mkey {key}\x1b[0m\r\n")),
            asciicast::Event::marker(1.0, format!("saw {key}")),
            asciicast::Event::output(1.5, "plain\r\n"),
        ] {
            text.push_str(&asciicast::encode_event(&e));
        }
        let served = redacted(asciicast::parse(&text).unwrap()).encode();
        assert!(!served.contains("SECRETSECRET"), "{served}");
        let back = asciicast::parse(&served).unwrap();
        assert_eq!(back.events.len(), 3);
        assert!(back.output().contains("\x1b[31mkey [REDACTED]"), "{served}");
        assert!(back.output().ends_with("plain\r\n"));
    }

    #[test]
    fn the_player_version_is_the_one_the_vendoring_script_pins() {
        let script = include_str!("../../../tools/vendor-assets");
        assert!(
            script.contains(&format!("\"asciinema-player {PLAYER_VERSION} sha512-")),
            "tools/vendor-assets pins another asciinema-player than {PLAYER_VERSION}"
        );
        let readme = include_str!("vendor/README.md");
        assert!(
            readme.contains(&format!("| {PLAYER_VERSION} |")),
            "{readme}"
        );
    }
}
