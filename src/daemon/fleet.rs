//! This node's part in a fleet (issue 11, `docs/multi-node.md`): when `config/nodes.toml`
//! lists several nodes, the daemon rewrites `nodes/<node>/heartbeat.json` every
//! `heartbeat_ms`, reads the other nodes' heartbeats, judges them on its own clock
//! ([`crate::fleet::Membership`]) and writes what it sees to `nodes/<node>/view.json`
//! for `architect nodes`.
//!
//! A daemon started with the fleet's layout (its states under `nodes/<node>/`) also hands
//! tasks over: intake places each new task ([`crate::fleet::node::placement`]) and offers
//! it when it belongs elsewhere, and every heartbeat runs [`NodeCore::tick`] over the
//! spool's files ([`SpoolFiles`]) and this daemon's scheduler ([`Host`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::durable;
use crate::fleet::handoff::{Answer, Offer};
use crate::fleet::node::{
    Adoption, Duplicate, FleetFiles, HostStatus, Liveness, NodeCore, OfferFile, PlacementAsk,
    TaskHost,
};
use crate::fleet::{Heartbeat, Membership};
use crate::scheduler::{Found, Input};
use crate::spool::task::{TaskRecord, TaskState};
use crate::spool::{Spool, MAX_TASK_BYTES};

use super::Daemon;

/// The largest heartbeat file read (bytes): anything larger is not one.
const HEARTBEAT_MAX: u64 = 64 * 1024;
/// The largest offer, answer or adoption file read (bytes): an offer holds a task record.
const FLEET_FILE_MAX: u64 = MAX_TASK_BYTES * 2;

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
    /// The last heartbeat read of each node (this one's: the last written).
    heartbeats: BTreeMap<String, Heartbeat>,
    /// How long this node has been its repository's lock home, without a break.
    home_clock: crate::fleet::HomeClock,
    /// Hand-offs and adoptions: only when the spool has the fleet's layout (a daemon
    /// that became part of a fleet by a live config edit beats, and waits for a restart
    /// to hand anything over).
    pub(super) core: Option<NodeCore>,
}

impl FleetShell {
    /// For a config whose `nodes.toml` lists several nodes; `None` otherwise. `spool`:
    /// this daemon's spool, whose layout says whether it hands tasks over.
    pub(super) fn for_config(config: &crate::config::Config, spool: &Spool) -> Option<Self> {
        let core = (spool.member_node().as_deref() == Some(config.node.as_str()))
            .then(|| load_core(spool, &config.node));
        config.nodes.is_fleet().then(|| Self {
            started: Instant::now(),
            seq: 0,
            next_beat: Instant::now(),
            membership: Membership::new(config.nodes.lease_s.saturating_mul(1000)),
            heartbeats: BTreeMap::new(),
            home_clock: crate::fleet::HomeClock::default(),
            core,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// This node's `NodeCore` from its own files: `epoch.json`, `offers/`, `accepted/`,
/// `adopted/` under `nodes/<me>/`.
fn load_core(spool: &Spool, me: &str) -> NodeCore {
    let dir = spool.node_dir(me);
    let epoch = read_json::<EpochFile>(&dir.join("epoch.json")).map_or(1, |e| e.epoch);
    NodeCore::new(
        me,
        epoch,
        read_all(&dir.join("offers")),
        read_all(&dir.join("accepted")),
        read_all(&dir.join("adopted")),
    )
}

/// `nodes/<me>/epoch.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EpochFile {
    epoch: u64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = durable::read_regular(path, FLEET_FILE_MAX).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("unreadable fleet file {}: {e}", path.display());
            None
        }
    }
}

/// The `*.json` files of `dir` that are not temp files or conflict copies.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && n.ends_with(".json") && !n.contains(".sync-conflict-")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> Vec<T> {
    json_files(dir)
        .iter()
        .filter_map(|p| read_json(p))
        .collect()
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        durable::create_dir(dir).map_err(|e| e.to_string())?;
    }
    durable::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

/// The key of this config's repository for [`crate::fleet::lock_home`]. A config is one
/// repository's (`config/` is in it, and git carries it to every node), so the fleet has
/// one lock home; the key is a constant, not the checkout's path or name, which may
/// differ from machine to machine.
const LOCK_HOME_KEY: &str = "repository";

/// Whether a task takes locks (a branch or paths): it runs on its repository's lock home.
fn takes_locks(spec: &crate::spool::task::TaskSpec) -> bool {
    spec.locks
        .as_ref()
        .is_some_and(|l| l.branch.is_some() || !l.paths.is_empty())
}

/// The fleet's files in the spool, as this node sees them.
pub(super) struct SpoolFiles<'a> {
    spool: &'a Spool,
    me: &'a str,
    /// Every node listed in `nodes.toml`.
    nodes: Vec<String>,
    /// The file names in other nodes' `offers/` and `accepted/`, each listed once per
    /// tick (this value lives for one): most live tasks have no file there, and one
    /// listing per directory replaces an open per task and node at every beat.
    listed: std::collections::HashMap<(String, &'static str), std::collections::HashSet<String>>,
}

impl<'a> SpoolFiles<'a> {
    /// Node `me`'s view of the fleet `nodes` lists, in `spool`.
    fn new(spool: &'a Spool, me: &'a str, nodes: &crate::config::nodes::Nodes) -> Self {
        Self {
            spool,
            me,
            nodes: nodes.node.iter().map(|n| n.name.clone()).collect(),
            listed: std::collections::HashMap::new(),
        }
    }

    /// Whether node `node`'s `dir` may hold `<id>.json`: for this node, always (its own
    /// files change within a tick); for another, whether this tick's listing of the
    /// directory names it (a directory that cannot be listed holds nothing).
    fn may_hold(&mut self, node: &str, dir: &'static str, id: &str) -> bool {
        if node == self.me {
            return true;
        }
        let spool = self.spool;
        let names = self
            .listed
            .entry((node.to_string(), dir))
            .or_insert_with(|| {
                std::fs::read_dir(spool.node_dir(node).join(dir))
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            });
        names.contains(&format!("{id}.json"))
    }

    fn mine(&self, sub: &str) -> PathBuf {
        self.spool.node_dir(self.me).join(sub)
    }

    /// Whether node `node`'s final directories (`done/`, `failed/`, `cancelled/`) hold
    /// task `id`.
    fn final_here(&self, node: &str, id: &str) -> bool {
        let s = Spool::for_node(self.spool.root(), node);
        [TaskState::Done, TaskState::Failed, TaskState::Cancelled]
            .into_iter()
            .any(|st| s.task_path(st, id).exists())
    }

    /// `nodes/<node>/<dir>/<name>.json`.
    fn file(&self, node: &str, dir: &str, name: &str) -> PathBuf {
        self.spool
            .node_dir(node)
            .join(dir)
            .join(format!("{name}.json"))
    }
}

impl FleetFiles for SpoolFiles<'_> {
    fn nodes(&mut self) -> Vec<String> {
        self.nodes.clone()
    }

    fn offers_to_me(&mut self) -> Vec<OfferFile> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| *n != self.me) {
            for f in read_all::<OfferFile>(&self.spool.node_dir(n).join("offers")) {
                if f.offer.to == self.me && f.offer.from == *n {
                    out.push(f);
                }
            }
        }
        out
    }

    fn offer_of(&mut self, giver: &str, id: &str) -> Option<Offer> {
        if !self.may_hold(giver, "offers", id) {
            return None;
        }
        read_json::<OfferFile>(&self.file(giver, "offers", id)).map(|f| f.offer)
    }

    fn answer_of(&mut self, taker: &str, id: &str) -> Option<Answer> {
        if !self.may_hold(taker, "accepted", id) {
            return None;
        }
        read_json(&self.file(taker, "accepted", id))
    }

    fn adoptions_of(&mut self, node: &str) -> Vec<Adoption> {
        self.nodes
            .iter()
            .filter_map(|n| {
                read_json::<Adoption>(&self.file(n, "adopted", node))
                    .filter(|a| a.by == *n && a.node == node)
            })
            .collect()
    }

    fn adoptions_by(&mut self, by: &str) -> Vec<Adoption> {
        read_all::<Adoption>(&self.spool.node_dir(by).join("adopted"))
    }

    fn live_records(
        &mut self,
        node: &str,
        except: &std::collections::BTreeSet<String>,
    ) -> Vec<(TaskRecord, bool)> {
        let theirs = Spool::for_node(self.spool.root(), node);
        let mut out = Vec::new();
        for (state, started) in [(TaskState::Pending, false), (TaskState::Active, true)] {
            for id in theirs.list_ids(state).unwrap_or_default() {
                if except.contains(&id) {
                    continue;
                }
                match theirs.read_record(&theirs.task_path(state, &id)) {
                    Ok(r) => out.push((r, started)),
                    // (Gone since the listing, or half-synced: the next tick sees it.)
                    Err(e) => tracing::debug!(task = %id, "reading {node}'s record: {e}"),
                }
            }
        }
        out
    }

    fn is_final_anywhere(&mut self, id: &str) -> bool {
        self.nodes.iter().any(|n| self.final_here(n, id))
    }

    fn final_on(&mut self, id: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| self.final_here(n, id))
            .cloned()
            .collect()
    }

    fn heartbeat_epoch(&mut self, node: &str) -> Option<u64> {
        read_json::<Heartbeat>(&self.spool.node_dir(node).join("heartbeat.json")).map(|h| h.epoch)
    }

    fn write_offer(&mut self, offer: &OfferFile) -> Result<(), String> {
        let path = self
            .mine("offers")
            .join(format!("{}.json", offer.offer.task_id));
        write_json(&path, offer)
    }

    fn remove_offer(&mut self, id: &str) {
        let path = self.mine("offers").join(format!("{id}.json"));
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("removing {}: {e}", path.display());
        }
    }

    fn write_answer(&mut self, answer: &Answer) -> Result<(), String> {
        let path = self
            .mine("accepted")
            .join(format!("{}.json", answer.task_id));
        write_json(&path, answer)
    }

    fn write_adoption(&mut self, adoption: &Adoption) -> Result<(), String> {
        let path = self.mine("adopted").join(format!("{}.json", adoption.node));
        write_json(&path, adoption)
    }

    fn write_epoch(&mut self, epoch: u64) -> Result<(), String> {
        write_json(&self.mine("epoch.json"), &EpochFile { epoch })
    }

    fn write_duplicate(&mut self, duplicate: &Duplicate) {
        let path = self
            .mine("duplicates")
            .join(format!("{}.json", duplicate.task_id));
        if let Err(e) = write_json(&path, duplicate) {
            tracing::error!("recording a duplicate run: {e}");
        }
    }
}

/// This daemon's tasks, for [`NodeCore`].
pub(super) struct Host<'a>(pub(super) &'a mut Daemon);

impl TaskHost for Host<'_> {
    fn status(&self, id: &str) -> HostStatus {
        match self.0.sched.state_of(id) {
            Some(TaskState::Active) => HostStatus::Running,
            Some(TaskState::Pending) => HostStatus::Queued,
            Some(_) => HostStatus::Final,
            None => match self.0.spool.locate(id) {
                Some(TaskState::Pending | TaskState::Active) => HostStatus::Queued,
                Some(_) => HostStatus::Final,
                None => HostStatus::Unknown,
            },
        }
    }

    fn live(&self) -> Vec<String> {
        let spool = &self.0.spool;
        let mut ids = spool.list_ids(TaskState::Pending).unwrap_or_default();
        ids.extend(spool.list_ids(TaskState::Active).unwrap_or_default());
        ids
    }

    fn take(&mut self, mut record: TaskRecord, started: bool) -> Result<(), String> {
        let d = &mut *self.0;
        let dir = if started {
            TaskState::Active
        } else {
            TaskState::Pending
        };
        // A record rewritten for its final state whose move a crash cut short stays
        // final: recovery completes the move (the task is not run again).
        if !record.state.is_final() {
            record.state = dir;
        }
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
        durable::write_atomic(&d.spool.task_path(dir, &record.id), &bytes)
            .map_err(|e| e.to_string())?;
        if started {
            let resources = d.resources(&record.task);
            let on_disk = d.deps_on_disk(&record.task.depends_on);
            d.decide(Input::Recovered {
                found: vec![Found {
                    dir,
                    record,
                    also_final: None,
                    resources,
                }],
                on_disk,
            });
        } else {
            d.arrived(record);
        }
        Ok(())
    }

    fn disown(&mut self, id: &str, why: String) {
        let d = &mut *self.0;
        if d.sched.state_of(id).is_some() {
            d.decide(Input::Disown {
                task_id: id.to_string(),
                why,
            });
        } else {
            // Not tracked (start-up, before recovery): its file goes now, durably, so
            // that recovery never sees it and a crash cannot bring it back once this
            // node's epoch says it stood down.
            for state in [TaskState::Pending, TaskState::Active] {
                let path = d.spool.task_path(state, id);
                if std::fs::remove_file(&path).is_ok() {
                    if let Err(e) = durable::sync_dir(&d.spool.state_dir(state)) {
                        tracing::error!("{e}");
                    }
                }
            }
        }
    }
}

impl Daemon {
    /// At start-up in a fleet, before recovery: waits (at most a lease) until a fresh
    /// heartbeat of every peer that has one has been read, and until every adoption of this
    /// node those heartbeats claim at an epoch above its own has arrived (`adopted/`):
    /// a daemon restarted while its adopter's file is still on the way would otherwise
    /// run again what was adopted. A peer that does not beat within the lease is dead or
    /// cut off, and not waited for.
    pub(super) async fn wait_for_fleet_view(&mut self) {
        let Some(epoch) = self
            .fleet
            .as_ref()
            .and_then(|f| f.core.as_ref())
            .map(|c| c.epoch)
        else {
            return;
        };
        let me = self.config.node.clone();
        let read = |spool: &Spool, n: &str| {
            durable::read_regular(&spool.node_dir(n).join("heartbeat.json"), HEARTBEAT_MAX)
                .ok()
                .and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok())
        };
        let mut waiting: BTreeMap<String, u64> = self
            .config
            .nodes
            .node
            .iter()
            .filter(|n| n.name != me)
            .filter_map(|n| read(&self.spool, &n.name).map(|h| (n.name.clone(), h.seq)))
            .collect();
        if waiting.is_empty() {
            return;
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.config.nodes.lease_s);
        tracing::info!(
            "waiting for a fresh heartbeat of {} before recovering (at most {} s)",
            waiting.keys().cloned().collect::<Vec<_>>().join(", "),
            self.config.nodes.lease_s
        );
        while !waiting.is_empty() && Instant::now() < deadline {
            waiting.retain(|peer, first_seq| {
                let Some(hb) = read(&self.spool, peer) else {
                    return true;
                };
                if hb.seq == *first_seq {
                    return true; // not fresh yet
                }
                match hb.adopted.get(&me) {
                    Some(e) if *e > epoch => {
                        let path = self
                            .spool
                            .node_dir(peer)
                            .join("adopted")
                            .join(format!("{me}.json"));
                        read_json::<Adoption>(&path).is_none_or(|a| a.epoch < *e)
                    }
                    _ => false,
                }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if waiting.is_empty() {
            tracing::info!("fleet view caught up in {:?}", started.elapsed());
        } else {
            tracing::warn!(
                "no fresh heartbeat (or a claimed adoption file) from {} within the lease: \
                 going on",
                waiting.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }

    /// At start-up, before recovery: stands down from the tasks another node adopted
    /// from this one while it was away (their files here go; what ran here too is a
    /// duplicate run, logged).
    pub(super) fn stand_down_adopted(&mut self) {
        let Some(mut f) = self.fleet.take() else {
            return;
        };
        if let Some(mut core) = f.core.take() {
            let spool = self.spool.clone();
            let me = self.config.node.clone();
            let mut files = SpoolFiles::new(&spool, &me, &self.config.nodes);
            for (task, body) in core.stand_down_adopted(&mut files, &mut Host(self)) {
                self.log.record(task.as_deref(), None, body);
            }
            f.core = Some(core);
        }
        self.fleet = Some(f);
    }

    /// Writes this node's heartbeat, reads the others', writes the view, and (in the
    /// fleet's layout) runs the hand-offs and adoptions due. Errors are logged: a
    /// heartbeat that cannot be written makes this node look dead to the others after
    /// the lease, which is what a node that cannot write is.
    pub(super) fn beat(&mut self) {
        let Some(mut f) = self.fleet.take() else {
            return;
        };
        let now = Instant::now();
        f.next_beat = now + Duration::from_millis(self.config.nodes.heartbeat_ms.max(1));
        f.seq += 1;
        let me = self.config.node.clone();
        let mut free = BTreeMap::new();
        for s in self.sessions.values().filter(|s| s.is_free()) {
            let role = s.resolved.spec.role.clone().unwrap_or_default();
            *free.entry(role).or_insert(0u32) += 1;
        }
        let running = u32::try_from(self.sessions.values().filter(|s| s.task.is_some()).count())
            .unwrap_or(u32::MAX);
        // Running tasks that hold locks (a branch or paths): a node that becomes the lock
        // home waits until no other node's heartbeat shows any (fleet::may_take_locks).
        let locks_held = u32::try_from(
            self.sched
                .tasks()
                .filter(|t| matches!(t.status, crate::scheduler::TaskStatus::Running { .. }))
                .filter(|t| takes_locks(&t.record.task))
                .count(),
        )
        .unwrap_or(u32::MAX);
        let beat = Heartbeat {
            seq: f.seq,
            version: env!("CARGO_PKG_VERSION").to_string(),
            epoch: f.core.as_ref().map_or(1, |c| c.epoch),
            running,
            free,
            draining: self.config.nodes.draining(&me),
            locks_held,
            adopted: f.core.as_ref().map_or_else(BTreeMap::new, |c| {
                c.adopted
                    .iter()
                    .map(|(n, a)| (n.clone(), a.epoch))
                    .collect()
            }),
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
        let now_ms = f.now_ms();
        f.heartbeats.insert(me.clone(), beat);
        for spec in self.config.nodes.node.iter().filter(|n| n.name != me) {
            let path = self.spool.node_dir(&spec.name).join("heartbeat.json");
            let Ok(bytes) = durable::read_regular(&path, HEARTBEAT_MAX) else {
                continue; // none yet (or not synced yet): the node stays unknown
            };
            match serde_json::from_slice::<Heartbeat>(&bytes) {
                Ok(hb) => {
                    f.membership.observe(&spec.name, hb.seq, now_ms);
                    f.heartbeats.insert(spec.name.clone(), hb);
                }
                Err(e) => tracing::warn!(node = %spec.name, "unreadable heartbeat: {e}"),
            }
        }
        f.membership.observe(&me, f.seq, now_ms);
        let view = f.membership.view(now_ms);
        let written = serde_json::to_vec_pretty(&view)
            .map_err(|e| crate::error::Error::json("fleet view", e))
            .and_then(|bytes| durable::write_atomic_volatile(&dir.join("view.json"), &bytes));
        if let Err(e) = written {
            tracing::error!("writing this node's view of the fleet: {e}");
        }
        if let Some(mut core) = f.core.take() {
            let nodes = self.config.nodes.clone();
            let liveness = Liveness {
                live: nodes
                    .node
                    .iter()
                    .filter(|n| n.name == me || view.nodes.get(&n.name).is_some_and(|v| v.alive))
                    .map(|n| (n.name.as_str(), n.weight))
                    .collect(),
                dead: nodes
                    .node
                    .iter()
                    .filter_map(|n| {
                        view.nodes
                            .get(&n.name)
                            .filter(|v| !v.alive && n.name != me)
                            .map(|v| (n.name.as_str(), v.silent_ms))
                    })
                    .collect(),
            };
            let spool = self.spool.clone();
            let mut files = SpoolFiles::new(&spool, &me, &nodes);
            let config = self.config.clone();
            let draining = config.nodes.draining(&me);
            let can_take = |r: &TaskRecord| match r.task.session.as_deref() {
                _ if draining => Err(format!("{me} is draining")),
                Some(s) => match config.session_node(s) {
                    Some(n) if n != me => Err(format!("session {s} runs on node {n}")),
                    _ => Ok(()),
                },
                None => Ok(()),
            };
            let notes = core.tick(&mut files, &mut Host(self), &liveness, &can_take);
            for (task, body) in notes {
                self.log.record(task.as_deref(), None, body);
            }
            f.core = Some(core);
            // Locks: only the lock home takes them, once it has been home for a lease and
            // no other live node still holds any (docs/multi-node.md).
            let home =
                crate::fleet::lock_home(LOCK_HOME_KEY, nodes.lock_home.as_deref(), &liveness.live);
            let home_for = f.home_clock.home_for(home == Some(me.as_str()), now_ms);
            let others: Vec<(&str, &Heartbeat)> = liveness
                .live
                .iter()
                .filter(|(n, _)| *n != me)
                .filter_map(|(n, _)| f.heartbeats.get(*n).map(|h| (*n, h)))
                .collect();
            let lease_ms = nodes.lease_s.saturating_mul(1000);
            let gate = if crate::fleet::may_take_locks(&me, home, home_for, lease_ms, &others) {
                None
            } else {
                Some(match home {
                    Some(h) if h != me => format!("{h} is the lock home"),
                    _ => "this node becomes the lock home once it has seen the fleet for a \
                          lease and no other node holds locks"
                        .to_string(),
                })
            };
            if let Ok(mut g) = self.sched.locks().fleet_gate.lock() {
                *g = gate;
            }
        }
        self.fleet = Some(f);
        self.rebalance();
    }

    /// Offers queued tasks that placement now sends elsewhere: a task whose session is
    /// on another node (adopted from a node that is back, or taken back from one), and
    /// tasks waiting here while another live node has idle sessions for them — at most
    /// as many to a node as its last heartbeat had idle sessions, so two nodes do not
    /// trade one queue back and forth.
    fn rebalance(&mut self) {
        let Some(f) = self.fleet.as_ref() else {
            return;
        };
        if f.core.is_none() || self.shutting_down {
            return;
        }
        let mut room: BTreeMap<String, BTreeMap<String, u32>> = f
            .heartbeats
            .iter()
            .filter(|(n, _)| **n != self.config.node)
            .map(|(n, hb)| (n.clone(), hb.free.clone()))
            .collect();
        let queued: Vec<(String, crate::spool::task::TaskSpec)> = self
            .sched
            .tasks()
            .filter(|t| matches!(t.status, crate::scheduler::TaskStatus::Queued))
            .map(|t| (t.record.id.clone(), t.record.task.clone()))
            .collect();
        for (id, spec) in queued {
            let Some(to) = self.place(&spec) else {
                continue;
            };
            let pinned = spec.session.is_some() || takes_locks(&spec);
            // A draining node gives its queue away whatever the others' idle sessions.
            if !pinned && !self.config.nodes.draining(&self.config.node) {
                let role = spec.role.clone().unwrap_or_default();
                let Some(free) = room.get_mut(&to) else {
                    continue;
                };
                let slot = if spec.role.is_some() {
                    free.get_mut(&role)
                } else {
                    free.values_mut().find(|n| **n > 0)
                };
                match slot {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => continue,
                }
            }
            let Some(task) = self.sched.task(&id) else {
                continue;
            };
            let mut record = task.record.clone();
            if record.task.prompt.is_empty() && self.prompts_on_disk.contains(&id) {
                match self.prompt_from_disk(&id) {
                    Ok(p) => record.task.prompt = p,
                    Err(e) => {
                        tracing::error!(task = %id, "not offered: {e}");
                        continue;
                    }
                }
            }
            // The offer is durable before the task leaves this node's queue: a crash in
            // between leaves both, and start-up drops the pending copy (the offer wins).
            match self.offer(record, &to) {
                Ok(()) => self.decide(Input::Disown {
                    task_id: id,
                    why: format!("offered to {to}"),
                }),
                // (Refused while `to` has not stood down from an adoption: next tick.)
                Err(e) => tracing::debug!(task = %id, "not offered to {to} yet: {e}"),
            }
        }
    }

    /// Where a task taken in here goes: `None` when it stays (single node, or placement
    /// says here), else the node to offer it to.
    pub(super) fn place(&self, spec: &crate::spool::task::TaskSpec) -> Option<String> {
        let f = self.fleet.as_ref()?;
        f.core.as_ref()?;
        let me = self.config.node.as_str();
        // A session fits when the task asks for no role, or for the session's.
        let fits = |role: Option<&str>| spec.role.as_deref().is_none_or(|want| role == Some(want));
        let ask = PlacementAsk {
            session_node: spec
                .session
                .as_deref()
                .and_then(|s| self.config.session_node(s)),
            role: spec.role.as_deref(),
            locks: takes_locks(spec),
            idle_here: self
                .sessions
                .values()
                .any(|s| s.is_free() && fits(s.resolved.spec.role.as_deref())),
            fits_here: self
                .sessions
                .values()
                .any(|s| fits(s.resolved.spec.role.as_deref())),
            draining_here: self.config.nodes.draining(me),
        };
        if spec.provider.is_some() || spec.complexity.is_some() {
            return None; // provider tasks run where they arrive
        }
        let now_ms = f.now_ms();
        let alive = f.membership.view(now_ms);
        let live: Vec<(&str, u32)> = self
            .config
            .nodes
            .node
            .iter()
            .filter(|n| n.name == me || alive.nodes.get(&n.name).is_some_and(|v| v.alive))
            .map(|n| (n.name.as_str(), n.weight))
            .collect();
        match crate::fleet::node::placement(
            me,
            ask,
            LOCK_HOME_KEY,
            self.config.nodes.lock_home.as_deref(),
            &live,
            &f.heartbeats,
        ) {
            crate::fleet::node::Placement::Here => None,
            crate::fleet::node::Placement::Offer(n) => Some(n),
        }
    }

    /// Offers a task taken in here to node `to` (its offer file is durable when this
    /// returns). `Err`: it could not be written; the caller keeps the task.
    pub(super) fn offer(&mut self, record: TaskRecord, to: &str) -> Result<(), String> {
        let Some(mut f) = self.fleet.take() else {
            return Err("not a fleet".into());
        };
        let result = match f.core.as_mut() {
            Some(core) => {
                let mut files = SpoolFiles::new(&self.spool, &self.config.node, &self.config.nodes);
                core.offer(&mut files, record, to).map(|(task, body)| {
                    self.log.record(task.as_deref(), None, body);
                })
            }
            None => Err("this spool does not have the fleet's layout".into()),
        };
        self.fleet = Some(f);
        result
    }

    /// Whether this node has an offer out for task `id` (it is not run here).
    pub(super) fn offered(&self, id: &str) -> bool {
        self.fleet
            .as_ref()
            .and_then(|f| f.core.as_ref())
            .is_some_and(|c| c.has_offer_out(id))
    }
}
