//! This node's part in a fleet (issue 11, `docs/multi-node.md`): when `config/nodes.toml`
//! lists several nodes, the daemon rewrites `nodes/<node>/heartbeat.json` every
//! `heartbeat_ms`, reads the other nodes' heartbeats, judges them on its own clock
//! ([`crate::fleet::Membership`]) and writes what it sees to `nodes/<node>/view.json`
//! for `architect nodes`. Nothing is placed, handed over or adopted yet.

use std::time::{Duration, Instant};

use crate::durable;
use crate::fleet::{Heartbeat, Membership};

use super::Daemon;

/// The largest heartbeat file read (bytes): anything larger is not one.
const HEARTBEAT_MAX: u64 = 64 * 1024;

/// The fleet state of a daemon whose config lists several nodes.
#[derive(Debug)]
pub(super) struct FleetShell {
    /// This daemon's start: the origin of the monotonic ms the membership reads.
    started: Instant,
    /// The sequence number of the last heartbeat written.
    seq: u64,
    /// When the next heartbeat is due.
    pub(super) next_beat: Instant,
    membership: Membership,
}

impl FleetShell {
    /// For a config whose `nodes.toml` lists several nodes; `None` otherwise.
    pub(super) fn for_config(config: &crate::config::Config) -> Option<Self> {
        config.nodes.is_fleet().then(|| Self {
            started: Instant::now(),
            seq: 0,
            next_beat: Instant::now(),
            membership: Membership::new(config.nodes.lease_s.saturating_mul(1000)),
        })
    }
}

impl Daemon {
    /// Writes this node's heartbeat, reads the others', and writes the view. Errors are
    /// logged: a heartbeat that cannot be written makes this node look dead to the others
    /// after the lease, which is what a node that cannot write is.
    pub(super) fn beat(&mut self) {
        let Some(mut f) = self.fleet.take() else {
            return;
        };
        let now = Instant::now();
        f.next_beat = now + Duration::from_millis(self.config.nodes.heartbeat_ms.max(1));
        f.seq += 1;
        let me = self.config.node.clone();
        let mut free = std::collections::BTreeMap::new();
        for s in self.sessions.values().filter(|s| s.is_free()) {
            let role = s.resolved.spec.role.clone().unwrap_or_default();
            *free.entry(role).or_insert(0u32) += 1;
        }
        let running = u32::try_from(self.sessions.values().filter(|s| s.task.is_some()).count())
            .unwrap_or(u32::MAX);
        let beat = Heartbeat {
            seq: f.seq,
            version: env!("CARGO_PKG_VERSION").to_string(),
            epoch: 1,
            running,
            free,
            draining: false,
        };
        let dir = self.spool.node_dir(&me);
        let written = durable::create_dir(&dir).and_then(|()| {
            let bytes = serde_json::to_vec_pretty(&beat)
                .map_err(|e| crate::error::Error::json("heartbeat", e))?;
            // A heartbeat is worth nothing after a crash: no fsync.
            durable::write_atomic_volatile(&dir.join("heartbeat.json"), &bytes)
        });
        if let Err(e) = written {
            tracing::error!("writing this node's heartbeat: {e}");
        }
        let now_ms = u64::try_from(now.duration_since(f.started).as_millis()).unwrap_or(u64::MAX);
        for spec in &self.config.nodes.node {
            let path = self.spool.node_dir(&spec.name).join("heartbeat.json");
            let Ok(bytes) = durable::read_regular(&path, HEARTBEAT_MAX) else {
                continue; // none yet (or not synced yet): the node stays unknown
            };
            match serde_json::from_slice::<Heartbeat>(&bytes) {
                Ok(hb) => f.membership.observe(&spec.name, hb.seq, now_ms),
                Err(e) => tracing::warn!(node = %spec.name, "unreadable heartbeat: {e}"),
            }
        }
        let view = f.membership.view(now_ms);
        let written = serde_json::to_vec_pretty(&view)
            .map_err(|e| crate::error::Error::json("fleet view", e))
            .and_then(|bytes| durable::write_atomic_volatile(&dir.join("view.json"), &bytes));
        if let Err(e) = written {
            tracing::error!("writing this node's view of the fleet: {e}");
        }
        self.fleet = Some(f);
    }
}
