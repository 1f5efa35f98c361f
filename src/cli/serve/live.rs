//! `GET /events`: server-sent events. Each event appended to any node's log after the
//! client connected is pushed as one SSE message (unnamed, so `EventSource.onmessage`
//! gets them all): `data: <the log line's JSON, passed through the redactor>`, whose
//! `type` says what happened (`task_completed`, `approval_needed`, …), and
//! `id: <where the logs were read up to, that event included>` (a
//! [`LogPosition`]'s text).
//!
//! A browser that reconnects sends the last `id` it got back as `Last-Event-ID`; the
//! stream then starts right after that event, so the events written while it was away
//! come first. Without the header (or with one that is not a position) it starts at the
//! logs' current end.
//! The logs are polled every 250 ms (the same tail as `architect logs -f`); a comment
//! line every 15 s keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::Stream;

use super::Shared;
use crate::cli::observe::LogPosition;

/// How often the logs are polled for new lines.
const POLL: Duration = Duration::from_millis(250);

/// Where a stream opened with these request headers starts: after the position of
/// their `Last-Event-ID`, or (`None`) at the logs' current end when there is none or it
/// is not a position this stream sent.
pub fn resume_from(headers: &HeaderMap) -> Option<LogPosition> {
    let text = headers.get("last-event-id")?.to_str().ok()?;
    let pos = LogPosition::parse(text);
    if pos.is_none() {
        tracing::debug!("dashboard: Last-Event-ID {text:?} is not a log position: from the end");
    }
    pos
}

/// Opens the stream (see the module doc for where it starts).
pub async fn events(
    State(st): State<Shared>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let from = resume_from(&headers);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    // An async task per client; only the reads go to the blocking pool, so an open page
    // holds no thread while it waits.
    tokio::spawn(async move {
        let spool = st.spool.clone();
        let opened = {
            let (spool, from) = (spool.clone(), from.clone());
            tokio::task::spawn_blocking(move || from.unwrap_or_default().tail(&spool)).await
        };
        let mut tail = match opened {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return send_error(&tx, &format!("{e:#}")).await,
            Err(e) => return send_error(&tx, &e.to_string()).await,
        };
        let mut position = LogPosition::of(&tail);
        let dirs = spool.log_dirs();
        // A resumed stream sends what it missed at once; a new one waits for news.
        let mut first = from.is_some();
        loop {
            if !std::mem::take(&mut first) {
                tokio::time::sleep(POLL).await;
            }
            if tx.is_closed() {
                return; // the client went away
            }
            let dirs_now = dirs.clone();
            let polled = tokio::task::spawn_blocking(move || {
                let r = tail.poll_placed(&dirs_now);
                (tail, r)
            })
            .await;
            let events = match polled {
                Ok((t, Ok(ev))) => {
                    tail = t;
                    ev
                }
                Ok((t, Err(e))) => {
                    tail = t;
                    tracing::warn!("dashboard: tailing the event log: {e:#}");
                    continue;
                }
                Err(e) => return send_error(&tx, &e.to_string()).await,
            };
            for placed in events {
                position.advance_past(&placed.file, placed.end);
                let json = match serde_json::to_value(&placed.event) {
                    Ok(v) => architect::redact::redact_value(v),
                    Err(_) => continue,
                };
                let msg = SseEvent::default()
                    .id(position.encode())
                    .data(json.to_string());
                if tx.send(msg).await.is_err() {
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

/// Tells the client the stream cannot go on (an `error` event).
async fn send_error(tx: &tokio::sync::mpsc::Sender<SseEvent>, why: &str) {
    let _ = tx
        .send(
            SseEvent::default()
                .event("error")
                .data(format!("reading the event log: {why}")),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_resumes_from_a_last_event_id_it_sent_and_only_from_one() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_from(&h), None, "no header: from the end");
        h.insert(
            "Last-Event-ID",
            "events-n1-20261202.jsonl:120".parse().unwrap(),
        );
        let pos = resume_from(&h).expect("a position");
        assert_eq!(pos.resume_offset("events-n1-20261202.jsonl", 500), 120);
        for junk in ["", "17", "events-n1-20261202.jsonl", "x:1"] {
            h.insert("Last-Event-ID", junk.parse().unwrap());
            assert_eq!(resume_from(&h), None, "{junk:?}: from the end");
        }
    }
}
