//! `GET /events`: server-sent events. Each event appended to any node's log after the
//! client connected is pushed as one SSE message (unnamed, so `EventSource.onmessage`
//! gets them all): `data: <the log line's JSON, passed through the redactor>`, whose
//! `type` says what happened (`task_completed`, `approval_needed`, …).
//! The logs are polled every 250 ms (the same tail as `architect logs -f`); a comment
//! line every 15 s keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::Stream;

use super::Shared;
use crate::cli::observe::LogTail;

/// How often the logs are polled for new lines.
const POLL: Duration = Duration::from_millis(250);

/// Opens the stream. Starts at the logs' current end: a page renders the state, the
/// stream brings what changes after.
pub async fn events(
    State(st): State<Shared>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    tokio::task::spawn_blocking(move || {
        let spool = st.spool.clone();
        let mut tail = match LogTail::at_end(&spool) {
            Ok(t) => t,
            Err(e) => {
                let _ = tx.blocking_send(
                    SseEvent::default()
                        .event("error")
                        .data(format!("reading the event log: {e:#}")),
                );
                return;
            }
        };
        loop {
            std::thread::sleep(POLL);
            if tx.is_closed() {
                return; // the client went away
            }
            let events = match tail.poll(&spool) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!("dashboard: tailing the event log: {e:#}");
                    continue;
                }
            };
            for e in events {
                let json = match serde_json::to_value(&e) {
                    Ok(v) => architect::redact::redact_value(v),
                    Err(_) => continue,
                };
                let msg = SseEvent::default().data(json.to_string());
                if tx.blocking_send(msg).is_err() {
                    return;
                }
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
