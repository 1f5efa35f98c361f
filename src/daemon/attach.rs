//! Attach and watch clients in the scheduler: a client's request is checked against the
//! sessions and handed to the session's thread (or refused with the reason); what the
//! session reports — a client given the screen, a client gone — updates the session's
//! [`Presence`](crate::session::presence::Presence), the event log and
//! `sessions/<name>.json`. Whether a held session may take a task is
//! [`SessionSlot::is_free`](super::sessions::SessionSlot::is_free)'s business.

use chrono::Utc;

use super::Daemon;
use crate::attach::server::{refuse, AttachRequest};
use crate::attach::viewers::ViewerConn;
use crate::attach::Mode;
use crate::log::event;

impl Daemon {
    /// A client said hello: its session's thread gets it, or it is told why not.
    pub(super) fn on_attach_request(&mut self, req: AttachRequest) {
        let AttachRequest { hello, pid, stream } = req;
        let name = hello.session;
        let Some(slot) = self.sessions.get(&name) else {
            let known: Vec<&str> = self.sessions.keys().map(String::as_str).collect();
            refuse(
                stream,
                &format!(
                    "no session {name:?} on node {} (its sessions: {})",
                    self.config.node,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            return;
        };
        if slot.resolved.spec.kind == crate::config::SessionKind::Provider {
            refuse(
                stream,
                &format!("session {name} is a provider session: it has no terminal to show"),
            );
            return;
        }
        let Some(handle) = &slot.handle else {
            refuse(
                stream,
                &format!(
                    "session {name} is not running ({}{}); try again once it has restarted",
                    slot.state.as_str(),
                    slot.last_exit
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            );
            return;
        };
        self.next_client += 1;
        let conn = ViewerConn {
            id: self.next_client,
            mode: hello.mode,
            stream,
        };
        tracing::info!(session = %name, client = conn.id, ?pid, mode = hello.mode.as_str(), "attach client");
        if let Err(conn) = handle.attach(conn) {
            refuse(
                conn.stream,
                &format!("session {name} is stopping; try again once it has restarted"),
            );
        }
    }

    /// The session gave a client its screen.
    pub(super) fn on_viewer_attached(&mut self, session: &str, client: u64, mode: Mode) {
        let Some(slot) = self.sessions.get_mut(session) else {
            return;
        };
        if !slot.presence.attached(client, mode, Utc::now()) {
            return;
        }
        let state = slot.state.as_str().to_string();
        let clients = slot.presence.count(Mode::Attach);
        let task = slot.task.clone();
        self.log.record(
            task.as_deref(),
            Some(session),
            event::SessionAttached {
                client,
                mode: mode.as_str().to_string(),
                state,
                clients,
            },
        );
        self.publish_session(session);
    }

    /// A client left: the session is as it was once no person holds it.
    pub(super) fn on_viewer_detached(
        &mut self,
        session: &str,
        client: u64,
        mode: Mode,
        reason: &str,
    ) {
        let Some(slot) = self.sessions.get_mut(session) else {
            return;
        };
        let Some(viewer) = slot.presence.detached(client) else {
            return;
        };
        let state = slot.state.as_str().to_string();
        let clients = slot.presence.count(Mode::Attach);
        let task = slot.task.clone();
        let held_ms = u64::try_from((Utc::now() - viewer.since).num_milliseconds()).unwrap_or(0);
        self.log.record(
            task.as_deref(),
            Some(session),
            event::SessionDetached {
                client,
                mode: mode.as_str().to_string(),
                reason: reason.to_string(),
                state,
                clients,
                held_ms,
            },
        );
        self.publish_session(session);
    }

    /// The session's program ended: clients it did not report gone are.
    pub(super) fn clear_viewers(&mut self, session: &str, status: &str) {
        let Some(slot) = self.sessions.get_mut(session) else {
            return;
        };
        for (id, mode) in slot.presence.clients() {
            self.on_viewer_detached(
                session,
                id,
                mode,
                &format!("the session's program exited ({status})"),
            );
        }
    }
}
