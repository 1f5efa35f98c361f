//! The fleet of nodes that share one spool through a file syncer (issue 11; the design is
//! `docs/multi-node.md`). Pure: the decisions a daemon takes from the files the other
//! nodes wrote — which node is alive, which live node adopts a dead one, where a task and
//! a repository's locks go. No I/O and no clock: times are the caller's monotonic
//! milliseconds, so a node's liveness never depends on another machine's clock.
//!
//! **Not wired into the daemon yet**: a spool is single-node today (README).

pub mod handoff;
pub mod node;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `nodes/<node>/heartbeat.json`, rewritten by its node every `heartbeat_ms`. Readers
/// judge liveness by whether `seq` changes ([`Membership`]), never by a timestamp
/// written on another machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Bumped at every write.
    pub seq: u64,
    /// The writer's architect version.
    pub version: String,
    /// The writer's fencing epoch (raised when it takes work after an adoption of it).
    pub epoch: u64,
    /// Tasks it runs now.
    pub running: u32,
    /// Idle sessions, by role (`""`: sessions with no role).
    pub free: BTreeMap<String, u32>,
    /// Takes no new work (`architect node drain`).
    pub draining: bool,
    /// Locks its running tasks hold now (0 in a heartbeat written before this was
    /// kept): no other node takes a lock while this says some are held
    /// ([`may_take_locks`]).
    #[serde(default)]
    pub locks_held: u32,
    /// The nodes this node adopted, each with the epoch of its latest adoption. A node
    /// that restarts waits until every live peer's fresh heartbeat is read, and until the
    /// adoption files they claim about it have arrived, before it recovers its tasks: a
    /// heartbeat is one file, so it cannot say less than the peer did before the restart,
    /// while an adoption file may arrive after it (no order across files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adopted: BTreeMap<String, u64>,
}

/// Whether a node is alive, as one reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its heartbeat changed less than the lease ago.
    Alive {
        /// Since this reader saw it change, ms.
        silent_ms: u64,
    },
    /// Its heartbeat has not changed for the lease or longer: presumed dead.
    Dead {
        /// Since this reader saw it change, ms.
        silent_ms: u64,
    },
    /// No heartbeat seen yet.
    Unknown,
}

/// Leases on the reader's own clock: a node is presumed dead when its heartbeat's `seq`
/// has not changed for `lease_ms`, measured from the moment this reader first saw the
/// current `seq`. Clock skew between machines does not matter, and a heartbeat that
/// arrives late only delays the verdict.
#[derive(Debug, Clone)]
pub struct Membership {
    lease_ms: u64,
    seen: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    seq: u64,
    /// When this reader saw `seq` first (its monotonic ms).
    since_ms: u64,
}

impl Membership {
    /// A reader with a lease of `lease_ms` (set it well above the syncer's usual delay:
    /// Syncthing carries a small file across loopback in about 1 s).
    #[must_use]
    pub fn new(lease_ms: u64) -> Self {
        Self {
            lease_ms,
            seen: BTreeMap::new(),
        }
    }

    /// `node`'s heartbeat, read at `now_ms` (this reader's monotonic clock), says `seq`.
    /// A `seq` lower than one seen before (a node restarted with a fresh counter, or a
    /// late copy) counts as a change too: the node wrote something new to us.
    pub fn observe(&mut self, node: &str, seq: u64, now_ms: u64) {
        match self.seen.get_mut(node) {
            Some(s) if s.seq == seq => {}
            Some(s) => {
                *s = Seen {
                    seq,
                    since_ms: now_ms,
                }
            }
            None => {
                self.seen.insert(
                    node.to_string(),
                    Seen {
                        seq,
                        since_ms: now_ms,
                    },
                );
            }
        }
    }

    /// `node`'s liveness at `now_ms`.
    #[must_use]
    pub fn liveness(&self, node: &str, now_ms: u64) -> Liveness {
        match self.seen.get(node) {
            None => Liveness::Unknown,
            Some(s) => {
                let silent_ms = now_ms.saturating_sub(s.since_ms);
                if silent_ms >= self.lease_ms {
                    Liveness::Dead { silent_ms }
                } else {
                    Liveness::Alive { silent_ms }
                }
            }
        }
    }

    /// The nodes alive at `now_ms`, by name.
    #[must_use]
    pub fn live(&self, now_ms: u64) -> Vec<&str> {
        self.seen
            .keys()
            .filter(|n| matches!(self.liveness(n, now_ms), Liveness::Alive { .. }))
            .map(String::as_str)
            .collect()
    }
}

/// `nodes/<node>/view.json`: what one node's daemon sees of the fleet, on its own clock
/// (`architect nodes` shows it: liveness is only meaningful as some reader's observation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// The lease the reader applies, ms.
    pub lease_ms: u64,
    /// Every node the reader has seen a heartbeat of, by name.
    pub nodes: BTreeMap<String, NodeView>,
}

/// One node in a [`View`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeView {
    /// Presumed alive: its heartbeat changed less than the lease ago.
    pub alive: bool,
    /// Since the reader saw its heartbeat change, ms.
    pub silent_ms: u64,
    /// The last heartbeat's sequence number.
    pub seq: u64,
}

impl Membership {
    /// The reader's view at `now_ms`.
    #[must_use]
    pub fn view(&self, now_ms: u64) -> View {
        View {
            lease_ms: self.lease_ms,
            nodes: self
                .seen
                .iter()
                .map(|(name, s)| {
                    let silent_ms = now_ms.saturating_sub(s.since_ms);
                    (
                        name.clone(),
                        NodeView {
                            alive: silent_ms < self.lease_ms,
                            silent_ms,
                            seq: s.seq,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A node as placement sees it: its name and weight (`config/nodes.toml`), and what its
/// last heartbeat said.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Node name.
    pub name: &'a str,
    /// Relative capacity (`weight` in `nodes.toml`, ≥ 1).
    pub weight: u32,
    /// Its last heartbeat.
    pub heartbeat: &'a Heartbeat,
}

/// What a task asks for, for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want<'a> {
    /// A named session: it runs on that session's node (`node = …` in `sessions.toml`).
    SessionOn(&'a str),
    /// Any idle session with this role.
    Role(&'a str),
    /// Any idle session.
    Any,
}

/// The node a task goes to among the live `candidates`: the session's own node for a
/// named session (even when it is busy: the task then waits there); otherwise the
/// least-loaded node (running tasks per unit of weight) that is not draining and has an
/// idle session that fits, ties broken by node name. `None`: no node fits now.
#[must_use]
pub fn place<'a>(want: Want<'_>, candidates: &[Candidate<'a>]) -> Option<&'a str> {
    if let Want::SessionOn(node) = want {
        return candidates
            .iter()
            .find(|c| c.name == node && !c.heartbeat.draining)
            .map(|c| c.name);
    }
    candidates
        .iter()
        .filter(|c| !c.heartbeat.draining)
        .filter(|c| match want {
            Want::Role(role) => c.heartbeat.free.get(role).copied().unwrap_or(0) > 0,
            _ => c.heartbeat.free.values().any(|n| *n > 0),
        })
        .min_by(|a, b| by_load(a, b))
        .map(|c| c.name)
}

/// Orders candidates by load — running tasks per unit of weight, compared without
/// division (`a.running * b.weight` vs `b.running * a.weight`) — then by name.
#[must_use]
pub fn by_load(a: &Candidate<'_>, b: &Candidate<'_>) -> std::cmp::Ordering {
    let la = u64::from(a.heartbeat.running) * u64::from(b.weight.max(1));
    let lb = u64::from(b.heartbeat.running) * u64::from(a.weight.max(1));
    la.cmp(&lb).then_with(|| a.name.cmp(b.name))
}

/// Rendezvous (highest-random-weight) hashing: the node `key` belongs to among `nodes`
/// (name, weight). Every reader that knows the same nodes picks the same one, and removing
/// a node moves only the keys that were its own. The hash is FNV-1a 64 (stable across
/// versions and machines, unlike `std`'s, with a finaliser); the weighted score is `weight / -ln(u)` with
/// `u` the hash mapped into (0, 1) (Schindelhauer and Schomaker's weighted rendezvous).
#[must_use]
pub fn rendezvous<'a>(key: &str, nodes: &[(&'a str, u32)]) -> Option<&'a str> {
    nodes
        .iter()
        .map(|(name, weight)| {
            let h = stable_hash(&[name.as_bytes(), b"\0", key.as_bytes()]);
            #[allow(clippy::cast_precision_loss)]
            let u = (h as f64 + 0.5) / 18_446_744_073_709_551_616.0; // 2^64
            let score = f64::from((*weight).max(1)) / -u.ln();
            (score, *name)
        })
        .max_by(|(sa, na), (sb, nb)| sa.total_cmp(sb).then_with(|| nb.cmp(na)))
        .map(|(_, name)| name)
}

/// The live node that adopts `dead`'s tasks: the rendezvous choice for `dead`'s name
/// among the live nodes (`dead` itself excluded).
#[must_use]
pub fn successor<'a>(dead: &str, live: &[(&'a str, u32)]) -> Option<&'a str> {
    let others: Vec<(&str, u32)> = live.iter().copied().filter(|(n, _)| *n != dead).collect();
    rendezvous(dead, &others)
}

/// The node where every task that takes a lock in repository `repo` runs, so that two
/// tasks naming the same branch or overlapping paths always meet on one node, whose kernel
/// locks are authoritative: the configured `lock_home` while it is live, else the
/// rendezvous choice for the repository among the live nodes.
#[must_use]
pub fn lock_home<'a>(
    repo: &str,
    configured: Option<&'a str>,
    live: &[(&'a str, u32)],
) -> Option<&'a str> {
    if let Some(home) = configured {
        if live.iter().any(|(n, _)| *n == home) {
            return Some(home);
        }
    }
    rendezvous(repo, live)
}

/// Whether node `me` may start a task that takes locks in a repository now
/// (`docs/multi-node.md`, "Locks across nodes"): it is the repository's lock home in its
/// own view (`home`: [`lock_home`] over the nodes it sees alive), and has been without a
/// break for at least `lease_ms` (`home_for_ms`, kept by a [`HomeClock`]), and no other
/// live node's last heartbeat (`others`: the live nodes' last heartbeats; this node's
/// own is skipped) says it holds locks.
///
/// Why it keeps a branch from being held on two nodes without a partition: a node that
/// just started, or just became the home (the old one died, or came back), sees the
/// others for a lease first — it hears every live node, and a former home, which stops
/// starting locking tasks once it sees the new home alive (within a sync delay, well
/// under the lease), shows in its heartbeats what it still holds; the new home waits
/// until that is 0, and it can only go down. A partition, or a sync delay beyond the
/// lease, breaks it: then a branch may be held on both sides (a live node presumed dead).
#[must_use]
pub fn may_take_locks(
    me: &str,
    home: Option<&str>,
    home_for_ms: u64,
    lease_ms: u64,
    others: &[(&str, &Heartbeat)],
) -> bool {
    home == Some(me)
        && home_for_ms >= lease_ms
        && others.iter().all(|(n, hb)| *n == me || hb.locks_held == 0)
}

/// How long a node has been a repository's lock home without a break, on its own
/// monotonic clock (for [`may_take_locks`]). Starts empty: after a restart a node waits
/// a lease like a new home.
#[derive(Debug, Clone, Copy, Default)]
pub struct HomeClock {
    since_ms: Option<u64>,
}

impl HomeClock {
    /// At `now_ms` the node is (`is_home`) or is not the home: how long it has been,
    /// ms (0 when it is not).
    pub fn home_for(&mut self, is_home: bool, now_ms: u64) -> u64 {
        if !is_home {
            self.since_ms = None;
            return 0;
        }
        let since = *self.since_ms.get_or_insert(now_ms);
        now_ms.saturating_sub(since)
    }
}

/// FNV-1a, 64 bits, over the concatenation of `parts`, finished with MurmurHash3's
/// `fmix64`: FNV alone leaves the high bits of short, similar inputs (`task-1`, `task-2`)
/// badly mixed, and the score reads all 64.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests;
