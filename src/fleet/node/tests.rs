//! `NodeCore` over an in-memory fleet whose files every node sees at once (the
//! simulation, `tests/simulation`, adds the syncer's delays, losses and resurrections).

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::spool::task::parse_task;

fn record(id: &str) -> TaskRecord {
    let mut spec = parse_task(br#"{"prompt": "p"}"#).unwrap();
    spec.id = Some(id.into());
    TaskRecord::new(
        id.into(),
        spec,
        "a".into(),
        format!("{id}.json"),
        chrono::Utc::now(),
    )
}

/// Every node's files, seen by all at once.
#[derive(Default)]
struct Disk {
    offers: BTreeMap<(String, String), OfferFile>,
    answers: BTreeMap<(String, String), Answer>,
    adoptions: BTreeMap<(String, String), Adoption>,
    epochs: BTreeMap<String, u64>,
    duplicates: Vec<(String, Duplicate)>,
}

/// A node's tasks: id → status, and its live records.
#[derive(Default)]
struct Host {
    tasks: BTreeMap<String, (HostStatus, TaskRecord, bool)>,
    disowned: BTreeSet<String>,
}

impl TaskHost for Host {
    fn status(&self, id: &str) -> HostStatus {
        self.tasks.get(id).map_or(HostStatus::Unknown, |t| t.0)
    }
    fn live(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.0 != HostStatus::Final)
            .map(|(id, _)| id.clone())
            .collect()
    }
    fn take(&mut self, record: TaskRecord, started: bool) -> Result<(), String> {
        self.tasks
            .insert(record.id.clone(), (HostStatus::Queued, record, started));
        Ok(())
    }
    fn disown(&mut self, id: &str, _why: String) {
        self.tasks.remove(id);
        self.disowned.insert(id.to_string());
    }
}

struct Fleet {
    disk: Disk,
    hosts: BTreeMap<String, Host>,
}

struct View<'a> {
    me: String,
    disk: &'a mut Disk,
    hosts: &'a BTreeMap<String, Host>,
}

impl FleetFiles for View<'_> {
    fn nodes(&mut self) -> Vec<String> {
        self.hosts
            .keys()
            .cloned()
            .chain(std::iter::once(self.me.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
    fn adoptions_by(&mut self, by: &str) -> Vec<Adoption> {
        self.disk
            .adoptions
            .iter()
            .filter(|((writer, _), _)| writer == by)
            .map(|(_, a)| a.clone())
            .collect()
    }
    fn offers_to_me(&mut self) -> Vec<OfferFile> {
        self.disk
            .offers
            .values()
            .filter(|o| o.offer.to == self.me)
            .cloned()
            .collect()
    }
    fn offer_of(&mut self, giver: &str, id: &str) -> Option<Offer> {
        self.disk
            .offers
            .get(&(giver.to_string(), id.to_string()))
            .map(|o| o.offer.clone())
    }
    fn answer_of(&mut self, taker: &str, id: &str) -> Option<Answer> {
        self.disk
            .answers
            .get(&(taker.to_string(), id.to_string()))
            .cloned()
    }
    fn adoptions_of(&mut self, node: &str) -> Vec<Adoption> {
        self.disk
            .adoptions
            .values()
            .filter(|a| a.node == node)
            .cloned()
            .collect()
    }
    fn live_records(&mut self, node: &str, except: &BTreeSet<String>) -> Vec<(TaskRecord, bool)> {
        self.hosts.get(node).map_or_else(Vec::new, |h| {
            h.tasks
                .values()
                .filter(|t| t.0 != HostStatus::Final && !except.contains(&t.1.id))
                .map(|t| (t.1.clone(), t.0 == HostStatus::Running))
                .collect()
        })
    }
    fn is_final_anywhere(&mut self, id: &str) -> bool {
        self.hosts
            .values()
            .any(|h| h.tasks.get(id).is_some_and(|t| t.0 == HostStatus::Final))
    }
    fn final_on(&mut self, id: &str) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, h)| h.tasks.get(id).is_some_and(|t| t.0 == HostStatus::Final))
            .map(|(n, _)| n.clone())
            .collect()
    }
    fn heartbeat_epoch(&mut self, node: &str) -> Option<u64> {
        Some(self.disk.epochs.get(node).copied().unwrap_or(1))
    }
    fn write_offer(&mut self, offer: &OfferFile) -> Result<(), String> {
        self.disk.offers.insert(
            (self.me.clone(), offer.offer.task_id.clone()),
            offer.clone(),
        );
        Ok(())
    }
    fn remove_offer(&mut self, id: &str) {
        self.disk.offers.remove(&(self.me.clone(), id.to_string()));
    }
    fn write_answer(&mut self, answer: &Answer) -> Result<(), String> {
        self.disk
            .answers
            .insert((self.me.clone(), answer.task_id.clone()), answer.clone());
        Ok(())
    }
    fn write_adoption(&mut self, adoption: &Adoption) -> Result<(), String> {
        self.disk
            .adoptions
            .insert((self.me.clone(), adoption.node.clone()), adoption.clone());
        Ok(())
    }
    fn write_epoch(&mut self, epoch: u64) -> Result<(), String> {
        self.disk.epochs.insert(self.me.clone(), epoch);
        Ok(())
    }
    fn write_duplicate(&mut self, duplicate: &Duplicate) {
        self.disk
            .duplicates
            .push((self.me.clone(), duplicate.clone()));
    }
}

impl Fleet {
    fn new(nodes: &[&str]) -> Self {
        Self {
            disk: Disk::default(),
            hosts: nodes
                .iter()
                .map(|n| ((*n).to_string(), Host::default()))
                .collect(),
        }
    }

    /// Runs `core`'s tick with `live` alive and `dead` presumed dead.
    fn tick(&mut self, core: &mut NodeCore, live: &[&str], dead: &[&str]) -> Vec<Note> {
        let me = core.me.clone();
        let mut host = self.hosts.remove(&me).unwrap();
        let liveness = Liveness {
            live: live.iter().map(|n| (*n, 1)).collect(),
            dead: dead.iter().map(|n| (*n, 60_000)).collect(),
        };
        let mut view = View {
            me,
            disk: &mut self.disk,
            hosts: &self.hosts,
        };
        let notes = core.tick(&mut view, &mut host, &liveness, &|_| Ok(()));
        self.hosts.insert(core.me.clone(), host);
        notes
    }

    fn offer(&mut self, core: &mut NodeCore, id: &str, to: &str) {
        let me = core.me.clone();
        let mut view = View {
            me,
            disk: &mut self.disk,
            hosts: &self.hosts,
        };
        core.offer(&mut view, record(id), to).unwrap();
    }

    fn set(&mut self, node: &str, id: &str, status: HostStatus) {
        self.hosts
            .get_mut(node)
            .unwrap()
            .tasks
            .get_mut(id)
            .unwrap()
            .0 = status;
    }

    fn status(&self, node: &str, id: &str) -> HostStatus {
        self.hosts[node].status(id)
    }
}

fn kinds(notes: &[Note]) -> Vec<String> {
    notes
        .iter()
        .map(|(_, b)| match b {
            EventBody::TaskHandoff(h) => format!("{}:{}", b.kind(), h.step),
            other => other.kind().to_string(),
        })
        .collect()
}

fn core(me: &str) -> NodeCore {
    NodeCore::new(me, 1, Vec::new(), Vec::new(), Vec::new())
}

#[test]
fn an_offer_is_accepted_once_and_the_giver_lets_go_after_the_answer() {
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.offer(&mut a, "t", "b");
    assert!(a.has_offer_out("t"));
    // The giver sees no answer: it waits and does not hold the task.
    assert!(kinds(&f.tick(&mut a, &["a", "b"], &[])).is_empty());
    assert_eq!(f.status("a", "t"), HostStatus::Unknown);
    assert_eq!(
        kinds(&f.tick(&mut b, &["a", "b"], &[])),
        ["task_handoff:accepted"]
    );
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
    // The offer seen again (late, resurrected): nothing more.
    assert!(kinds(&f.tick(&mut b, &["a", "b"], &[])).is_empty());
    assert_eq!(
        kinds(&f.tick(&mut a, &["a", "b"], &[])),
        ["task_handoff:released"]
    );
    assert!(!a.has_offer_out("t"));
    assert!(f.disk.offers.is_empty());
    // A resurrected offer after the release: the taker's own answer stops it.
    f.disk.offers.insert(
        ("a".into(), "t".into()),
        OfferFile {
            offer: Offer {
                task_id: "t".into(),
                from: "a".into(),
                to: "b".into(),
                epoch: 1,
                withdrawn: false,
                claim: 0,
            },
            record: Some(Box::new(record("t"))),
            released: false,
        },
    );
    f.set("b", "t", HostStatus::Final);
    assert!(kinds(&f.tick(&mut b, &["a", "b"], &[])).is_empty());
    assert_eq!(f.status("b", "t"), HostStatus::Final);
}

#[test]
fn a_refused_offer_comes_back_to_the_giver() {
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.offer(&mut a, "t", "b");
    let mut host = f.hosts.remove("b").unwrap();
    let mut view = View {
        me: "b".into(),
        disk: &mut f.disk,
        hosts: &f.hosts,
    };
    let notes = b.tick(&mut view, &mut host, &Liveness::default(), &|_| {
        Err("draining".into())
    });
    f.hosts.insert("b".into(), host);
    assert_eq!(kinds(&notes), ["task_handoff:refused"]);
    assert_eq!(f.status("b", "t"), HostStatus::Unknown);
    assert_eq!(
        kinds(&f.tick(&mut a, &["a", "b"], &[])),
        ["task_handoff:taken_back"]
    );
    assert_eq!(f.status("a", "t"), HostStatus::Queued);
    assert!(!a.has_offer_out("t"));
    // The tombstone stays and fences; nothing more happens.
    assert!(
        f.disk.offers[&("a".to_string(), "t".to_string())]
            .offer
            .withdrawn
    );
    assert!(kinds(&f.tick(&mut a, &["a", "b"], &[])).is_empty());
    assert!(kinds(&f.tick(&mut b, &["a", "b"], &[])).is_empty());
}

#[test]
fn a_taker_whose_answer_came_too_late_stands_down_and_its_run_is_logged_as_a_duplicate() {
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.offer(&mut a, "t", "b");
    f.tick(&mut b, &["a", "b"], &[]);
    f.set("b", "t", HostStatus::Running);
    // The answer is lost in a partition, and b looks dead to a, which also adopts b
    // (nothing of b's is left to take: a holds t again; the adoption names it all the
    // same, so that b stands down from it).
    f.disk.answers.clear();
    assert_eq!(
        kinds(&f.tick(&mut a, &["a"], &["b"])),
        ["task_handoff:taken_back", "node_adopted"]
    );
    assert_eq!(
        f.disk.adoptions[&("a".to_string(), "b".to_string())].tasks,
        ["t"]
    );
    assert_eq!(f.status("a", "t"), HostStatus::Queued);
    // b heals and sees the withdrawal: it stands down, and says it ran.
    assert_eq!(kinds(&f.tick(&mut b, &["a", "b"], &[])), ["duplicate_run"]);
    assert_eq!(f.status("b", "t"), HostStatus::Unknown);
    assert!(f.hosts["b"].disowned.contains("t"));
    assert_eq!(f.disk.duplicates.len(), 1);
    assert_eq!(f.disk.duplicates[0].1.task_id, "t");
    // Once.
    assert!(kinds(&f.tick(&mut b, &["a", "b"], &[])).is_empty());
}

#[test]
fn a_dead_nodes_tasks_are_adopted_once_by_its_successor_and_it_stands_down_when_back() {
    let mut f = Fleet::new(&["a", "b", "c"]);
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    for (id, status) in [
        ("queued", HostStatus::Queued),
        ("running", HostStatus::Running),
        ("finished", HostStatus::Final),
    ] {
        f.hosts
            .get_mut("a")
            .unwrap()
            .take(record(id), false)
            .unwrap();
        f.set("a", id, status);
    }
    let live = ["b", "c"];
    let heir = crate::fleet::successor("a", &[("b", 1), ("c", 1)]).unwrap();
    let (heir_core, other_core, other) = if heir == "b" {
        (&mut b, &mut c, "c")
    } else {
        (&mut c, &mut b, "b")
    };
    // Only the successor adopts.
    assert!(kinds(&f.tick(other_core, &live, &["a"])).is_empty());
    assert_eq!(kinds(&f.tick(heir_core, &live, &["a"])), ["node_adopted"]);
    assert_eq!(f.status(heir, "queued"), HostStatus::Queued);
    assert_eq!(f.status(heir, "running"), HostStatus::Queued);
    assert!(
        f.hosts[heir].tasks["running"].2,
        "a started task is taken as started"
    );
    assert_eq!(f.status(heir, "finished"), HostStatus::Unknown);
    assert_eq!(f.status(other, "queued"), HostStatus::Unknown);
    // Not twice.
    assert!(kinds(&f.tick(heir_core, &live, &["a"])).is_empty());
    // a comes back: it stands down from both, and its running one was a duplicate run.
    let notes = f.tick(&mut a, &["a", "b", "c"], &[]);
    assert_eq!(kinds(&notes), ["duplicate_run"]);
    assert_eq!(a.epoch, 2);
    assert_eq!(f.status("a", "queued"), HostStatus::Unknown);
    assert_eq!(f.status("a", "running"), HostStatus::Unknown);
    assert_eq!(f.status("a", "finished"), HostStatus::Final);
    // Once.
    assert!(kinds(&f.tick(&mut a, &["a", "b", "c"], &[])).is_empty());
    // It dies again with new work: adopted again, at the next epoch.
    f.hosts
        .get_mut("a")
        .unwrap()
        .take(record("later"), false)
        .unwrap();
    assert_eq!(kinds(&f.tick(heir_core, &live, &["a"])), ["node_adopted"]);
    // The new adoption names again what the first one took and the heir still holds.
    let again = &f.disk.adoptions[&(heir.to_string(), "a".to_string())];
    assert_eq!(again.epoch, 3);
    assert_eq!(again.tasks, ["queued", "running", "later"]);
    assert_eq!(f.status(heir, "later"), HostStatus::Queued);
}

fn hb(running: u32, free: &[(&str, u32)], draining: bool) -> crate::fleet::Heartbeat {
    crate::fleet::Heartbeat {
        seq: 1,
        version: "v".into(),
        epoch: 1,
        running,
        free: free.iter().map(|(r, n)| ((*r).to_string(), *n)).collect(),
        draining,
        locks_held: 0,
        adopted: BTreeMap::new(),
    }
}

#[test]
fn placement_follows_the_session_then_the_lock_home_then_idle_sessions() {
    let live = [("a", 1), ("b", 1)];
    let beats: BTreeMap<String, crate::fleet::Heartbeat> = [
        ("a".to_string(), hb(3, &[], false)),
        ("b".to_string(), hb(0, &[("review", 1)], false)),
    ]
    .into();
    let ask = PlacementAsk {
        session_node: None,
        role: None,
        locks: false,
        idle_here: false,
        fits_here: true,
        draining_here: false,
    };
    let go = |ask| placement("a", ask, "repo", None, &live, &beats);
    assert_eq!(
        go(PlacementAsk {
            session_node: Some("b"),
            idle_here: true,
            ..ask
        }),
        Placement::Offer("b".into())
    );
    assert_eq!(
        go(PlacementAsk {
            session_node: Some("a"),
            ..ask
        }),
        Placement::Here
    );
    // Its session's node is not live: it waits here.
    assert_eq!(
        go(PlacementAsk {
            session_node: Some("c"),
            ..ask
        }),
        Placement::Here
    );
    // Locking tasks all meet on the lock home, wherever they arrive.
    let home = crate::fleet::lock_home("repo", None, &live).unwrap();
    let locking = PlacementAsk {
        locks: true,
        idle_here: true,
        ..ask
    };
    assert_eq!(
        placement("a", locking, "repo", None, &live, &beats) == Placement::Here,
        home == "a"
    );
    assert_eq!(
        placement("b", locking, "repo", None, &live, &beats) == Placement::Here,
        home == "b"
    );
    assert_eq!(
        placement("a", locking, "repo", Some("b"), &live, &beats),
        Placement::Offer("b".into())
    );
    // Idle here: stays.
    assert_eq!(
        go(PlacementAsk {
            idle_here: true,
            ..ask
        }),
        Placement::Here
    );
    // Busy here, b idle for the role: goes.
    assert_eq!(
        go(PlacementAsk {
            role: Some("review"),
            ..ask
        }),
        Placement::Offer("b".into())
    );
    // Nobody idle for the role: stays and waits.
    assert_eq!(
        go(PlacementAsk {
            role: Some("build"),
            ..ask
        }),
        Placement::Here
    );
}

#[test]
fn a_draining_node_gives_its_work_away_and_gets_none_but_its_own_sessions_tasks() {
    let live = [("a", 1), ("b", 1), ("c", 1)];
    let beats: BTreeMap<String, crate::fleet::Heartbeat> = [
        ("a".to_string(), hb(0, &[("", 2)], true)),
        ("b".to_string(), hb(2, &[], false)),
        ("c".to_string(), hb(1, &[], true)),
    ]
    .into();
    let ask = PlacementAsk {
        session_node: None,
        role: None,
        locks: false,
        idle_here: true,
        fits_here: true,
        draining_here: true,
    };
    // Idle here, but draining: to the least-loaded node that takes work (c drains too).
    assert_eq!(
        placement("a", ask, "repo", None, &live, &beats),
        Placement::Offer("b".into())
    );
    // A task naming one of its own sessions stays: nobody else can run it.
    let own = PlacementAsk {
        session_node: Some("a"),
        ..ask
    };
    assert_eq!(
        placement("a", own, "repo", None, &live, &beats),
        Placement::Here
    );
    // Elsewhere, a task naming a draining node's session waits where it is.
    let theirs = PlacementAsk {
        session_node: Some("c"),
        draining_here: false,
        ..ask
    };
    assert_eq!(
        placement("b", theirs, "repo", None, &live, &beats),
        Placement::Here
    );
}

#[test]
fn a_task_offered_again_to_a_taker_that_answered_an_earlier_offer_is_answered() {
    // a gives t to b (epoch 1), lets go; t comes back to a (b gives it back); a offers it
    // to b again: the new offer must be above b's answer, or b takes it for a late copy
    // of the first and never answers.
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.offer(&mut a, "t", "b");
    f.tick(&mut b, &["a", "b"], &[]);
    f.tick(&mut a, &["a", "b"], &[]);
    assert!(!a.has_offer_out("t"));
    f.hosts.get_mut("b").unwrap().disown("t", String::new());
    f.offer(&mut a, "t", "b");
    assert_eq!(a.offers["t"].offer.epoch, 2);
    assert_eq!(
        kinds(&f.tick(&mut b, &["a", "b"], &[])),
        ["task_handoff:accepted"]
    );
    // A node that forgot its released offer (it kept no tombstone at epoch 1) offers
    // above the taker's answer it sees.
    f.tick(&mut a, &["a", "b"], &[]);
    f.hosts.get_mut("b").unwrap().disown("t", String::new());
    let mut forgetful = core("a");
    f.offer(&mut forgetful, "t", "b"); // sees b's answer at 2: offers at 3
    assert_eq!(forgetful.offers["t"].offer.epoch, 3);
    assert_eq!(
        kinds(&f.tick(&mut b, &["a", "b"], &[])),
        ["task_handoff:accepted"]
    );
}

#[test]
fn a_node_adopted_before_it_learnt_keeps_what_it_took_since_and_stands_down_from_the_rest() {
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.hosts
        .get_mut("b")
        .unwrap()
        .take(record("t1"), false)
        .unwrap();
    assert_eq!(kinds(&f.tick(&mut a, &["a"], &["b"])), ["node_adopted"]);
    assert_eq!(f.status("a", "t1"), HostStatus::Queued);
    // b is back and, before it learns of the adoption, takes t2 by a's offer: its
    // answer claims t2 above a; a's adoption claims t1 above b.
    f.offer(&mut a, "t2", "b");
    f.tick(&mut b, &["a", "b"], &[]);
    assert_eq!(b.epoch, 2, "it learnt of the adoption");
    assert_eq!(f.status("b", "t1"), HostStatus::Unknown);
    assert_eq!(f.status("b", "t2"), HostStatus::Queued);
    f.tick(&mut a, &["a", "b"], &[]);
    assert!(!a.has_offer_out("t2"));
    assert_eq!(f.status("a", "t1"), HostStatus::Queued);
    assert_eq!(f.status("a", "t2"), HostStatus::Unknown);
}

#[test]
fn a_taker_that_adopts_the_giver_after_it_took_the_task_back_keeps_the_task_and_the_giver_stands_down(
) {
    // Simulation seed 29 (chaotic): b accepts t, its answer is lost, a takes t back; b
    // adopts a (a's record of t is live), then sees a's withdrawal.
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.offer(&mut a, "t", "b");
    f.tick(&mut b, &["a", "b"], &[]);
    f.disk.answers.clear();
    f.tick(&mut a, &["a"], &["b"]);
    assert_eq!(f.status("a", "t"), HostStatus::Queued);
    assert_eq!(kinds(&f.tick(&mut b, &["b"], &["a"])), ["node_adopted"]);
    assert_eq!(
        f.disk.adoptions[&("b".to_string(), "a".to_string())].tasks,
        ["t"],
        "the adoption names t, which b holds already"
    );
    // The withdrawal does not make b stand down: the adoption wins.
    assert!(kinds(&f.tick(&mut b, &["b"], &["a"])).is_empty());
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
    // a is back: it stands down from t.
    f.tick(&mut a, &["a", "b"], &[]);
    assert_eq!(f.status("a", "t"), HostStatus::Unknown);
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
}

#[test]
fn a_taker_fenced_while_down_stands_down_when_the_task_went_to_another_node_and_was_released() {
    // Simulation seed 120 (strict): b accepts t and crashes before its answer syncs; a
    // takes t back, offers it to c, and releases it to c; b comes back with t in its
    // `pending/` and its answer, and sees no withdrawal any more.
    let mut f = Fleet::new(&["a", "b", "c"]);
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    f.offer(&mut a, "t", "b");
    f.tick(&mut b, &["a", "b", "c"], &[]);
    let lost = f.disk.answers.remove(&("b".to_string(), "t".to_string()));
    f.tick(&mut a, &["a", "c"], &["b"]);
    let record = f.hosts.get_mut("a").unwrap().tasks.remove("t").unwrap().1;
    let mut view = View {
        me: "a".into(),
        disk: &mut f.disk,
        hosts: &f.hosts,
    };
    a.offer(&mut view, record, "c").unwrap();
    assert_eq!(a.offers["t"].offer.epoch, 3);
    f.tick(&mut c, &["a", "c"], &["b"]);
    assert_eq!(
        kinds(&f.tick(&mut a, &["a", "c"], &["b"]))[0],
        "task_handoff:released"
    );
    // The released offer stays as a tombstone, without its record.
    let tomb = &f.disk.offers[&("a".to_string(), "t".to_string())];
    assert!(tomb.released && tomb.record.is_none() && tomb.offer.to == "c");
    assert!(!a.has_offer_out("t"));
    // b is back (its answer synced at last): it stands down.
    f.disk
        .answers
        .insert(("b".into(), "t".into()), lost.unwrap());
    f.tick(&mut b, &["a", "b", "c"], &[]);
    assert_eq!(f.status("b", "t"), HostStatus::Unknown);
    assert_eq!(f.status("c", "t"), HostStatus::Queued);
}

#[test]
fn an_adoption_claims_above_the_offer_to_the_dead_taker_so_its_late_answer_loses() {
    // Simulation seed 47 (strict): b accepts t and crashes before its answer syncs; b's
    // successor h adopts b (b's record of t is live: h takes it) above a's offer to b,
    // so the giver withdraws its offer, and b's late answer claims below h.
    let h = ["c", "d", "e", "f", "g", "h", "i", "j"]
        .into_iter()
        .find(|h| crate::fleet::successor("b", &[("a", 1), (h, 1)]) == Some(*h))
        .unwrap();
    let mut f = Fleet::new(&["a", "b", h]);
    let (mut a, mut b, mut c) = (core("a"), core("b"), core(h));
    f.offer(&mut a, "t", "b");
    f.tick(&mut b, &["a", "b", h], &[]);
    let late = f.disk.answers.remove(&("b".into(), "t".into())).unwrap();
    assert_eq!(kinds(&f.tick(&mut c, &["a", h], &["b"])), ["node_adopted"]);
    assert_eq!(f.status(h, "t"), HostStatus::Queued);
    assert!(c.claim("t") > a.offers["t"].offer.epoch);
    // a sees h's claim above its own: it withdraws its offer, and takes nothing back.
    f.tick(&mut a, &["a", h], &["b"]);
    assert_eq!(f.status("a", "t"), HostStatus::Unknown);
    assert!(!a.has_offer_out("t"));
    // b's answer arrives late, and b comes back: it stands down; h keeps t.
    f.disk.answers.insert(("b".into(), "t".into()), late);
    f.tick(&mut c, &["a", h], &["b"]);
    f.tick(&mut b, &["a", "b", h], &[]);
    assert_eq!(f.status("b", "t"), HostStatus::Unknown);
    assert_eq!(f.status(h, "t"), HostStatus::Queued);
}

#[test]
fn two_nodes_that_adopt_each_other_in_a_partition_leave_a_task_to_the_higher_claim() {
    // Simulation seed 2 (chaotic): each side of a partition adopts the other, and both
    // adoptions name t; before claims, each stood down from what the other named.
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.hosts
        .get_mut("a")
        .unwrap()
        .take(record("t"), false)
        .unwrap();
    assert_eq!(kinds(&f.tick(&mut b, &["b"], &["a"])), ["node_adopted"]);
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
    // a has not seen b's adoption (the partition) and adopts b, naming t (b's record,
    // which it holds already: it claims nothing more for it).
    let bs = f.disk.adoptions.remove(&("b".into(), "a".into())).unwrap();
    assert_eq!(kinds(&f.tick(&mut a, &["a"], &["b"])), ["node_adopted"]);
    assert_eq!(f.disk.adoptions[&("a".into(), "b".into())].tasks, ["t"]);
    f.disk.adoptions.insert(("b".into(), "a".into()), bs);
    // Healed: b's adoption claims t above a's own inbox: b keeps it, a stands down.
    f.tick(&mut a, &["a", "b"], &[]);
    f.tick(&mut b, &["a", "b"], &[]);
    assert_eq!(f.status("a", "t"), HostStatus::Unknown);
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
}

#[test]
fn a_node_adopted_while_its_offer_is_out_withdraws_the_offer_and_does_not_take_the_task_back() {
    // Simulation seed 26 (chaotic): the giver, adopted with the task named while its
    // offer was out, later took the task back from the taker it presumed dead.
    let mut f = Fleet::new(&["a", "b", "c"]);
    let mut a = core("a");
    f.offer(&mut a, "t", "b");
    // c adopted a naming t (a stale record of a's).
    f.disk.adoptions.insert(
        ("c".into(), "a".into()),
        Adoption {
            node: "a".into(),
            by: "c".into(),
            epoch: 2,
            tasks: vec!["t".into()],
            claims: BTreeMap::from([("t".into(), 2)]),
        },
    );
    f.tick(&mut a, &["a", "c"], &["b"]);
    assert_eq!(a.epoch, 2);
    assert!(!a.has_offer_out("t"));
    assert!(
        f.disk.offers[&("a".to_string(), "t".to_string())]
            .offer
            .withdrawn
    );
    assert_eq!(f.status("a", "t"), HostStatus::Unknown, "not taken back");
}

#[test]
fn a_giver_lets_go_of_a_task_whose_final_record_it_sees_though_the_answer_never_came() {
    let mut f = Fleet::new(&["a", "b"]);
    let (mut a, mut b) = (core("a"), core("b"));
    f.offer(&mut a, "t", "b");
    f.tick(&mut b, &["a", "b"], &[]);
    f.set("b", "t", HostStatus::Final);
    // b's answer is lost (a slow syncer), its done record arrived, and b looks dead.
    f.disk.answers.clear();
    let notes = f.tick(&mut a, &["a"], &["b"]);
    assert!(
        kinds(&notes).contains(&"task_handoff:released".to_string()),
        "{notes:?}"
    );
    assert_eq!(
        f.status("a", "t"),
        HostStatus::Unknown,
        "not run again here"
    );
    assert!(!a.has_offer_out("t"));
}

#[test]
fn a_taker_refuses_an_offer_another_node_claims_above_and_the_last_adopter_keeps_the_task() {
    // Simulation seed 55 (chaotic): a offers t to c; b adopts a (naming t, which it
    // takes); c adopts b; a learns it was adopted. Before claims, t was lost.
    let mut f = Fleet::new(&["a", "b", "c"]);
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    f.hosts
        .get_mut("a")
        .unwrap()
        .take(record("t"), false)
        .unwrap();
    f.offer(&mut a, "t", "c");
    assert_eq!(kinds(&f.tick(&mut b, &["b"], &["a"])), ["node_adopted"]);
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
    // b's adoption claims t above a's offer: c refuses it, then adopts b and takes t.
    assert_eq!(
        kinds(&f.tick(&mut c, &["c"], &["b"])),
        ["task_handoff:refused", "node_adopted"]
    );
    assert_eq!(f.status("c", "t"), HostStatus::Queued);
    assert!(c.claim("t") > b.claim("t"));
    // a and b are back: both stand down from t; c keeps it.
    f.tick(&mut a, &["a", "b", "c"], &[]);
    assert!(!a.has_offer_out("t"));
    assert_eq!(f.status("a", "t"), HostStatus::Unknown);
    f.tick(&mut b, &["a", "b", "c"], &[]);
    assert_eq!(f.status("b", "t"), HostStatus::Unknown);
    f.tick(&mut c, &["a", "b", "c"], &[]);
    assert_eq!(f.status("c", "t"), HostStatus::Queued);
}

#[test]
fn a_taker_offered_one_task_by_two_givers_answers_with_its_highest_claim() {
    // Simulation seed 146 (chaotic): a and b both held t (b adopted, not knowing it); a
    // offered t to c and released it; b offered it to c too. c's one answer file names
    // the last giver, with c's claim kept at its highest; b's take-back (it missed the
    // answer) claims above it: b holds t and c stands down — one of them, never none.
    let mut f = Fleet::new(&["a", "b", "c"]);
    let (mut a, mut b, mut c) = (core("a"), core("b"), core("c"));
    f.offer(&mut a, "t", "c");
    f.tick(&mut c, &["a", "b", "c"], &[]);
    assert_eq!(
        kinds(&f.tick(&mut a, &["a", "b", "c"], &[])),
        ["task_handoff:released"]
    );
    f.offer(&mut b, "t", "c");
    assert_eq!(
        kinds(&f.tick(&mut c, &["a", "b", "c"], &[])),
        ["task_handoff:accepted"]
    );
    let answer = &f.disk.answers[&("c".to_string(), "t".to_string())];
    assert!(answer.claim() >= Some(b.offers["t"].offer.epoch) && answer.from == "b");
    let ans = f.disk.answers.remove(&("c".into(), "t".into())).unwrap();
    f.tick(&mut b, &["a", "b"], &["c"]);
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
    f.disk.answers.insert(("c".into(), "t".into()), ans);
    f.tick(&mut c, &["a", "b", "c"], &[]);
    assert_eq!(f.status("c", "t"), HostStatus::Unknown);
    assert_eq!(f.status("b", "t"), HostStatus::Queued);
}

fn taken(id: &str, from: &str, epoch: u64) -> Answer {
    Answer {
        task_id: id.into(),
        from: from.into(),
        epoch,
        refused: None,
        claim: epoch,
    }
}

#[test]
fn a_node_that_finished_a_task_it_holds_by_a_transfer_logs_it_once_when_another_node_finished_it_too(
) {
    // Simulation (chaotic): a node adopted during a partition hands a task on before it
    // learns of the adoption; its taker and its adopter both own it and both finish it.
    let mut f = Fleet::new(&["b", "c"]);
    let mut b = NodeCore::new("b", 1, Vec::new(), vec![taken("t", "a", 1)], Vec::new());
    for n in ["b", "c"] {
        f.hosts
            .get_mut(n)
            .unwrap()
            .take(record("t"), false)
            .unwrap();
        f.set(n, "t", HostStatus::Final);
    }
    assert_eq!(kinds(&f.tick(&mut b, &["b", "c"], &[])), ["duplicate_run"]);
    assert_eq!(f.disk.duplicates.len(), 1);
    assert_eq!(f.disk.duplicates[0].1.nodes, ["b", "c"]);
    assert!(kinds(&f.tick(&mut b, &["b", "c"], &[])).is_empty(), "once");
    // c holds it by no answer: it leaves the note to b.
    let mut c = core("c");
    assert!(kinds(&f.tick(&mut c, &["b", "c"], &[])).is_empty());
}

#[test]
fn an_adopter_keeps_a_task_it_took_by_adoption_from_a_later_taker_of_the_giver_it_once_answered() {
    // Simulation seed 43 (chaotic): x took t from g (answer at epoch 1), g took it back
    // and gave it to y (epoch 3, released); x adopted y, naming t. x's own answer is
    // superseded, but it holds t by the adoption of y, whose answer stands.
    let mut f = Fleet::new(&["g", "x", "y"]);
    f.disk.offers.insert(
        ("g".into(), "t".into()),
        OfferFile {
            offer: Offer {
                task_id: "t".into(),
                from: "g".into(),
                to: "y".into(),
                epoch: 3,
                withdrawn: false,
                claim: 2,
            },
            record: None,
            released: true,
        },
    );
    f.disk
        .answers
        .insert(("y".into(), "t".into()), taken("t", "g", 3));
    let adoption = Adoption {
        node: "y".into(),
        by: "x".into(),
        epoch: 2,
        tasks: vec!["t".into()],
        claims: BTreeMap::from([("t".into(), 4)]), // above y's answer
    };
    f.disk
        .adoptions
        .insert(("x".into(), "y".into()), adoption.clone());
    let mut x = NodeCore::new("x", 1, Vec::new(), vec![taken("t", "g", 1)], vec![adoption]);
    f.hosts
        .get_mut("x")
        .unwrap()
        .take(record("t"), false)
        .unwrap();
    f.tick(&mut x, &["g", "x"], &["y"]);
    assert_eq!(f.status("x", "t"), HostStatus::Queued);
}

#[test]
fn a_node_that_got_a_task_back_from_its_adopters_adopter_keeps_it_when_it_learns_of_the_adoption() {
    // Simulation seed 202 (chaotic, `ARCHITECT_SIM_CHAOS=1`): b adopted a (naming t), c
    // adopted b (naming t) and offered t to a, which took it and c released it; then a
    // learns of b's adoption: standing down left t to nobody (b stood down for c).
    let mut f = Fleet::new(&["a", "b", "c"]);
    for (node, by, claim) in [("a", "b", 2), ("b", "c", 3)] {
        f.disk.adoptions.insert(
            (by.into(), node.into()),
            Adoption {
                node: node.into(),
                by: by.into(),
                epoch: 2,
                tasks: vec!["t".into()],
                claims: BTreeMap::from([("t".into(), claim)]),
            },
        );
    }
    // c's offer to a is above c's claim.
    let mut a = NodeCore::new("a", 1, Vec::new(), vec![taken("t", "c", 4)], Vec::new());
    f.hosts
        .get_mut("a")
        .unwrap()
        .take(record("t"), false)
        .unwrap();
    f.tick(&mut a, &["a", "b", "c"], &[]);
    assert_eq!(a.epoch, 2);
    assert_eq!(f.status("a", "t"), HostStatus::Queued);
    // Held by an answer to the adopter itself, it stands down as before.
    let mut f = Fleet::new(&["a", "b"]);
    f.disk.adoptions.insert(
        ("b".into(), "a".into()),
        Adoption {
            node: "a".into(),
            by: "b".into(),
            epoch: 2,
            tasks: vec!["t".into()],
            claims: BTreeMap::from([("t".into(), 2)]),
        },
    );
    let mut a = NodeCore::new("a", 1, Vec::new(), vec![taken("t", "b", 1)], Vec::new());
    f.hosts
        .get_mut("a")
        .unwrap()
        .take(record("t"), false)
        .unwrap();
    f.tick(&mut a, &["a", "b"], &[]);
    assert_eq!(f.status("a", "t"), HostStatus::Unknown);
}
