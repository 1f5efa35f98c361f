//! Who is looking at a session, and what that means for scheduling: pure, no I/O.
//!
//! A session with at least one `attach` client is *held by a person*: it shows as
//! `attached` and takes no new task (a task it runs goes on). `watch` clients hold
//! nothing. When the last `attach` client leaves — a detach, a lost connection, the
//! session's end — the session shows its own state again, exactly what its program's
//! state machine says, so an idle session is free again at once. The state underneath
//! is never changed by an attach: this type only overlays it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SessionState;
use crate::attach::protocol::Mode;

/// One client looking at a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Attach or watch.
    pub mode: Mode,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// What `sessions/<name>.json` says about the people attached (`attached`), present
/// while the session shows as `attached`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedInfo {
    /// Since when a person holds the session (the first attach still connected).
    pub since: DateTime<Utc>,
    /// How many `attach` clients are connected.
    pub clients: u32,
    /// The session's own state underneath (`idle`, `busy`, …): what it goes back to.
    pub state: SessionState,
}

/// The clients of one session, by the daemon's client id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    viewers: BTreeMap<u64, Viewer>,
}

impl Presence {
    /// Client `id` connected in `mode` at `now`. Returns `false` (and changes nothing)
    /// when `id` is already known.
    pub fn attached(&mut self, id: u64, mode: Mode, now: DateTime<Utc>) -> bool {
        if self.viewers.contains_key(&id) {
            return false;
        }
        self.viewers.insert(id, Viewer { mode, since: now });
        true
    }

    /// Client `id` left (detached, lost, or its session ended): what it was, `None` when
    /// it was not known.
    pub fn detached(&mut self, id: u64) -> Option<Viewer> {
        self.viewers.remove(&id)
    }

    /// The clients, by id: (id, mode).
    #[must_use]
    pub fn clients(&self) -> Vec<(u64, Mode)> {
        self.viewers.iter().map(|(id, v)| (*id, v.mode)).collect()
    }

    /// Every client leaves (the session's program ended): who they were.
    pub fn clear(&mut self) -> Vec<(u64, Viewer)> {
        std::mem::take(&mut self.viewers).into_iter().collect()
    }

    /// Whether a person holds the session: any `attach` client. A held session takes
    /// no new task.
    #[must_use]
    pub fn held(&self) -> bool {
        self.viewers.values().any(|v| v.mode == Mode::Attach)
    }

    /// How many clients in `mode`.
    #[must_use]
    pub fn count(&self, mode: Mode) -> u32 {
        u32::try_from(self.viewers.values().filter(|v| v.mode == mode).count()).unwrap_or(u32::MAX)
    }

    /// The state to show for a session whose own state is `own`: `attached` while held,
    /// else `own`.
    #[must_use]
    pub fn shown(&self, own: SessionState) -> SessionState {
        if self.held() {
            SessionState::Attached
        } else {
            own
        }
    }

    /// The `attached` field of the session's file while held.
    #[must_use]
    pub fn info(&self, own: SessionState) -> Option<AttachedInfo> {
        let since = self
            .viewers
            .values()
            .filter(|v| v.mode == Mode::Attach)
            .map(|v| v.since)
            .min()?;
        Some(AttachedInfo {
            since,
            clients: self.count(Mode::Attach),
            state: own,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn an_attach_holds_the_session_and_shows_it_attached() {
        let mut p = Presence::default();
        assert!(p.attached(1, Mode::Attach, t(0)));
        assert!(p.held());
        assert_eq!(p.shown(SessionState::Idle), SessionState::Attached);
        assert_eq!(p.shown(SessionState::Busy), SessionState::Attached);
        assert_eq!(
            p.info(SessionState::Busy),
            Some(AttachedInfo {
                since: t(0),
                clients: 1,
                state: SessionState::Busy
            })
        );
    }

    #[test]
    fn a_watch_holds_nothing() {
        let mut p = Presence::default();
        p.attached(1, Mode::Watch, t(0));
        assert!(!p.held());
        assert_eq!(p.shown(SessionState::Idle), SessionState::Idle);
        assert_eq!(p.info(SessionState::Idle), None);
    }

    #[test]
    fn a_detach_gives_back_exactly_the_state_underneath() {
        for own in [
            SessionState::Idle,
            SessionState::Busy,
            SessionState::WaitingInput,
            SessionState::Limited,
        ] {
            let mut p = Presence::default();
            p.attached(7, Mode::Attach, t(0));
            assert_eq!(p.detached(7).map(|v| v.mode), Some(Mode::Attach));
            assert!(!p.held());
            assert_eq!(p.shown(own), own);
        }
    }

    #[test]
    fn the_session_stays_held_until_the_last_attach_client_leaves() {
        let mut p = Presence::default();
        p.attached(1, Mode::Attach, t(0));
        p.attached(2, Mode::Attach, t(5));
        p.attached(3, Mode::Watch, t(6));
        assert_eq!(p.info(SessionState::Idle).unwrap().clients, 2);
        p.detached(1);
        assert!(p.held());
        assert_eq!(p.info(SessionState::Idle).unwrap().since, t(5));
        p.detached(2);
        assert!(!p.held());
        assert_eq!(p.count(Mode::Watch), 1);
    }

    #[test]
    fn an_unknown_or_repeated_client_changes_nothing() {
        let mut p = Presence::default();
        assert_eq!(p.detached(9), None);
        assert!(p.attached(1, Mode::Attach, t(0)));
        assert!(!p.attached(1, Mode::Watch, t(1)));
        assert!(p.held());
    }

    #[test]
    fn the_end_of_the_session_lets_every_client_go() {
        let mut p = Presence::default();
        p.attached(1, Mode::Attach, t(0));
        p.attached(2, Mode::Watch, t(0));
        let gone: Vec<u64> = p.clear().into_iter().map(|(id, _)| id).collect();
        assert_eq!(gone, [1, 2]);
        assert!(!p.held());
        assert_eq!(p, Presence::default());
    }
}
