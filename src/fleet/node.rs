//! One node's part in the fleet, decided without I/O (`docs/multi-node.md`): where a new
//! task goes ([`placement`]), and what a node does at each heartbeat ([`NodeCore::tick`])
//! — stand down from what another node claims above it, accept offers made to it, let go
//! of or take back what it offered, and adopt a dead node's tasks when it is the
//! successor.
//!
//! **Claims.** Who owns a task is settled by claims, never by who wrote last: a node's
//! claim on a task is a number carried in its own files — its answer taking an offer
//! (the offer's epoch), its withdrawn offer when it took the task back (one above the
//! offer's), its adoption of a dead node (one above every claim and offer of the task it
//! saw) — and 0 for a task dropped in its own inbox. Every way a task moves writes a
//! claim above the one it moves from, so the node with the highest claim (ties: the
//! smaller node name) owns it, and a node drops a task only when it sees another
//! node's claim above its own. A task is therefore never held by nobody: the highest
//! claim's writer never stands down (a late file can only make a lower claimant run a
//! task twice, which it logs as `duplicate_run` when it learns).
//!
//! The files are reached through [`FleetFiles`] (the daemon: the spool; the simulation:
//! a fake syncer's view of each node) and the tasks through [`TaskHost`] (the daemon: its
//! scheduler; the simulation: a model of one). A node writes only its own files
//! (`nodes/<me>/…`), so every method of `FleetFiles` that writes is about this node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::handoff::{giver_step, taker_step, Answer, GiverStep, Offer, TakerStep};
use crate::log::event::{self, EventBody};
use crate::spool::task::TaskRecord;

/// `nodes/<giver>/offers/<id>.json`: an [`Offer`] with the task's record (dropped once
/// the offer is withdrawn or released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferFile {
    /// The offer.
    pub offer: Offer,
    /// The task's record as the giver held it; `None` in a withdrawn or released offer.
    #[serde(default)]
    pub record: Option<Box<TaskRecord>>,
    /// The taker took it and the giver let go, and the offer is kept (without its
    /// record) as a tombstone: a giver keeps one for an offer above epoch 1, so that a
    /// late copy of the offer never reads as standing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// `nodes/<adopter>/adopted/<node>.json`: "`by` adopted these tasks of `node`, which it
/// presumed dead, at fencing epoch `epoch`". The adopted node, when it comes back, raises
/// its own epoch to this one and stands down from every task the adopter claims above
/// it (`claims`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adoption {
    /// The node presumed dead.
    pub node: String,
    /// The adopter (the file's writer).
    pub by: String,
    /// One above every epoch known for `node` when it was adopted.
    pub epoch: u64,
    /// The ids of the dead node's live tasks the adopter saw (taken, held already, or
    /// left to a node that claims them above the dead node).
    pub tasks: Vec<String>,
    /// The adopter's claim on each task it took (see the module doc): one above every
    /// claim and offer of it the adopter saw. Kept across later adoptions of the node.
    #[serde(default)]
    pub claims: BTreeMap<String, u64>,
}

/// `nodes/<me>/duplicates/<id>.json`: a task that ran on two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Duplicate {
    /// The task id (the idempotency key).
    pub task_id: String,
    /// The nodes it ran on.
    pub nodes: Vec<String>,
    /// How.
    pub why: String,
}

/// Where a task lives on this node, as the node's task host knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    /// Not here.
    Unknown,
    /// Queued here (pending).
    Queued,
    /// Running here.
    Running,
    /// Finished here (a final record in this node's directory).
    Final,
}

/// The files of the fleet as this node sees them. Reads see other nodes' files as the
/// syncer delivered them (late, missing, resurrected); writes are this node's own files
/// and must be durable when they return.
pub trait FleetFiles {
    /// Every node of the fleet (`nodes.toml`), this one included.
    fn nodes(&mut self) -> Vec<String>;
    /// Offers in other nodes' `offers/` that name this node as taker.
    fn offers_to_me(&mut self) -> Vec<OfferFile>;
    /// Node `giver`'s offer of task `id`, if this node sees one.
    fn offer_of(&mut self, giver: &str, id: &str) -> Option<Offer>;
    /// Node `taker`'s answer about task `id`, if this node sees one.
    fn answer_of(&mut self, taker: &str, id: &str) -> Option<Answer>;
    /// Every adoption of `node` this node sees (in any node's `adopted/`).
    fn adoptions_of(&mut self, node: &str) -> Vec<Adoption>;
    /// Every adoption node `by` wrote, as this node sees them (`nodes/<by>/adopted/`).
    fn adoptions_by(&mut self, by: &str) -> Vec<Adoption>;
    /// Node `node`'s live task records (its `pending/` and `active/`) but those whose id
    /// is in `except`: each with `true` when it was in `active/` (started).
    fn live_records(&mut self, node: &str, except: &BTreeSet<String>) -> Vec<(TaskRecord, bool)>;
    /// Whether any node's final directory holds task `id`.
    fn is_final_anywhere(&mut self, id: &str) -> bool;
    /// The nodes whose final directory holds task `id` (this one included), so that a
    /// node that finished a task it holds by a transfer logs it as `duplicate_run` when
    /// another node finished it too. The default sees none (and logs nothing that way).
    fn final_on(&mut self, id: &str) -> Vec<String> {
        let _ = id;
        Vec::new()
    }
    /// The epoch in `node`'s last heartbeat seen.
    fn heartbeat_epoch(&mut self, node: &str) -> Option<u64>;
    /// Writes this node's offer file (replacing one of the same task).
    ///
    /// # Errors
    /// Why the file could not be written durably.
    fn write_offer(&mut self, offer: &OfferFile) -> Result<(), String>;
    /// Removes this node's offer of task `id`.
    fn remove_offer(&mut self, id: &str);
    /// Writes this node's answer file.
    ///
    /// # Errors
    /// Why the file could not be written durably.
    fn write_answer(&mut self, answer: &Answer) -> Result<(), String>;
    /// Writes this node's adoption file.
    ///
    /// # Errors
    /// Why the file could not be written durably.
    fn write_adoption(&mut self, adoption: &Adoption) -> Result<(), String>;
    /// Writes this node's epoch.
    ///
    /// # Errors
    /// Why the file could not be written durably.
    fn write_epoch(&mut self, epoch: u64) -> Result<(), String>;
    /// Records a duplicate run in this node's `duplicates/`.
    fn write_duplicate(&mut self, duplicate: &Duplicate);
}

/// The tasks of this node.
pub trait TaskHost {
    /// Where task `id` is here.
    fn status(&self, id: &str) -> HostStatus;
    /// The ids of the tasks queued or running here (their records in `pending/` or
    /// `active/`).
    fn live(&self) -> Vec<String>;
    /// Takes task `record` as this node's: its file is written (in `active/` when
    /// `started`, so it counts an interrupted attempt and is retried, as after a crash;
    /// else in `pending/`) durably before this returns, then it is tracked.
    ///
    /// # Errors
    /// Why it could not be taken (its file could not be written): nothing changed.
    fn take(&mut self, record: TaskRecord, started: bool) -> Result<(), String>;
    /// Forgets task `id` without a final state (its file here is removed, a running
    /// attempt interrupted).
    fn disown(&mut self, id: &str, why: String);
}

/// What the tick sees of the other nodes' liveness (from [`super::Membership`]).
#[derive(Debug, Clone, Default)]
pub struct Liveness<'a> {
    /// Live nodes, this one included, with their weights.
    pub live: Vec<(&'a str, u32)>,
    /// Nodes presumed dead, with how long their heartbeat has been silent (ms).
    pub dead: Vec<(&'a str, u64)>,
}

/// An event for this node's log: its task id (if any) and body.
pub type Note = (Option<String>, EventBody);

/// A node's claim on a task (see the module doc): the higher `(ballot, node)` owns it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    /// The claim's number.
    pub ballot: u64,
    /// Its writer; among equal ballots the smaller name wins, so it sorts as greater.
    pub node: std::cmp::Reverse<String>,
}

impl Claim {
    /// Node `node`'s claim `ballot`.
    #[must_use]
    pub fn new(ballot: u64, node: &str) -> Self {
        Self {
            ballot,
            node: std::cmp::Reverse(node.to_string()),
        }
    }

    /// The writer.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node.0
    }
}

/// Node `node`'s claim on task `id` from its files: its `answer` about the task, its
/// `offer` of it, and the adoptions it wrote (0 when none claims it: a task dropped in
/// its own inbox).
#[must_use]
pub fn claim_in(
    answer: Option<&Answer>,
    offer: Option<&Offer>,
    adoptions: &[Adoption],
    id: &str,
) -> u64 {
    let by_answer = answer.and_then(Answer::claim).unwrap_or(0);
    let by_offer = offer.map_or(0, |o| o.claim);
    let by_adoption = adoptions
        .iter()
        .filter_map(|a| a.claims.get(id).copied())
        .max()
        .unwrap_or(0);
    by_answer.max(by_offer).max(by_adoption)
}

/// One node's fleet state: its epoch and the offers, answers and adoptions it wrote (its
/// own files, loaded at start-up and kept in step with them).
#[derive(Debug, Clone)]
pub struct NodeCore {
    /// This node.
    pub me: String,
    /// Its fencing epoch: raised to an adoption's epoch when it learns it was adopted.
    pub epoch: u64,
    /// Its offers, by task id (withdrawn and released ones stay as tombstones).
    pub offers: BTreeMap<String, OfferFile>,
    /// Its answers, by task id.
    pub answers: BTreeMap<String, Answer>,
    /// Its adoptions, by adopted node.
    pub adopted: BTreeMap<String, Adoption>,
    /// Tasks found final here and on another node, logged as `duplicate_run` (or left
    /// to the node that logs them).
    doubles: BTreeSet<String>,
}

/// Other nodes' claims seen this tick, by task id (the adoptions are read once).
struct Claims {
    others: Vec<String>,
    by_adoption: BTreeMap<String, Vec<Claim>>,
}

impl Claims {
    fn read(files: &mut impl FleetFiles, me: &str) -> Self {
        let others: Vec<String> = files.nodes().into_iter().filter(|n| n != me).collect();
        let mut by_adoption: BTreeMap<String, Vec<Claim>> = BTreeMap::new();
        for n in &others {
            for a in files.adoptions_by(n).into_iter().filter(|a| a.by == *n) {
                for (id, ballot) in a.claims {
                    by_adoption
                        .entry(id)
                        .or_default()
                        .push(Claim::new(ballot, n));
                }
            }
        }
        Self {
            others,
            by_adoption,
        }
    }

    /// The highest claim on task `id` by a node other than this one and `except`.
    fn highest(
        &self,
        files: &mut impl FleetFiles,
        id: &str,
        except: Option<&str>,
    ) -> Option<Claim> {
        let mut best = self
            .by_adoption
            .get(id)
            .and_then(|c| c.iter().filter(|c| Some(c.node()) != except).max().cloned());
        for n in self.others.iter().filter(|n| Some(n.as_str()) != except) {
            let ballot = claim_in(
                files.answer_of(n, id).as_ref(),
                files.offer_of(n, id).as_ref(),
                &[],
                id,
            );
            if ballot > 0 {
                let c = Claim::new(ballot, n);
                if best.as_ref().is_none_or(|b| c > *b) {
                    best = Some(c);
                }
            }
        }
        best
    }
}

impl NodeCore {
    /// Node `me` at `epoch`, with the files it wrote before.
    #[must_use]
    pub fn new(
        me: &str,
        epoch: u64,
        offers: Vec<OfferFile>,
        answers: Vec<Answer>,
        adopted: Vec<Adoption>,
    ) -> Self {
        Self {
            me: me.to_string(),
            epoch: epoch.max(1),
            offers: offers
                .into_iter()
                .map(|o| (o.offer.task_id.clone(), o))
                .collect(),
            answers: answers
                .into_iter()
                .map(|a| (a.task_id.clone(), a))
                .collect(),
            adopted: adopted.into_iter().map(|a| (a.node.clone(), a)).collect(),
            doubles: BTreeSet::new(),
        }
    }

    /// Whether this node has an offer out for task `id` (not withdrawn): it must not run
    /// it.
    #[must_use]
    pub fn has_offer_out(&self, id: &str) -> bool {
        self.offers
            .get(id)
            .is_some_and(|o| !o.offer.withdrawn && !o.released)
    }

    /// This node's claim on task `id`, from the files it wrote (see the module doc).
    #[must_use]
    pub fn claim(&self, id: &str) -> u64 {
        let by_adoption = self
            .adopted
            .values()
            .filter_map(|a| a.claims.get(id).copied())
            .max()
            .unwrap_or(0);
        claim_in(
            self.answers.get(id),
            self.offers.get(id).map(|o| &o.offer),
            &[],
            id,
        )
        .max(by_adoption)
    }

    fn my_claim(&self, id: &str) -> Claim {
        Claim::new(self.claim(id), &self.me)
    }

    /// Offers task `record` to node `to`: the offer file is written (durably) and kept.
    /// The caller has not queued the task, or removes it from its queue after this.
    /// The offer's epoch is above this node's claim on the task, so the taker's answer
    /// claims it above this node.
    ///
    /// # Errors
    /// The offer could not be written: the task stays the caller's.
    pub fn offer(
        &mut self,
        files: &mut impl FleetFiles,
        record: TaskRecord,
        to: &str,
    ) -> Result<Note, String> {
        // Above this node's claim, its last offer of the task, and the taker's answer
        // to an earlier one (the offer was released and forgotten since): the taker
        // ignores an offer at or below an epoch it answered (a late or resurrected copy).
        let answered = files
            .answer_of(to, &record.id)
            .filter(|a| a.from == self.me)
            .map_or(0, |a| a.epoch);
        let claim = self.claim(&record.id);
        let epoch = self
            .offers
            .get(&record.id)
            .map_or(0, |o| o.offer.epoch)
            .max(answered)
            .max(claim)
            + 1;
        let file = OfferFile {
            offer: Offer {
                task_id: record.id.clone(),
                from: self.me.clone(),
                to: to.to_string(),
                epoch,
                withdrawn: false,
                claim,
            },
            record: Some(Box::new(record)),
            released: false,
        };
        files.write_offer(&file)?;
        let id = file.offer.task_id.clone();
        self.offers.insert(id.clone(), file);
        Ok((
            Some(id),
            event::TaskHandoff {
                step: "offered".into(),
                peer: to.to_string(),
                epoch,
                why: None,
            }
            .into(),
        ))
    }

    /// One heartbeat's worth of fleet work, in this order: raise this node's epoch to
    /// that of an adoption of it; stand down from what another node claims above it;
    /// answer offers made to it; let go of or take back its own offers; adopt the dead
    /// nodes it succeeds; log tasks finished here and elsewhere. `can_take` says whether
    /// this node can run a task now (`Err`: why not — draining, its session is not
    /// here). Returns what to log.
    pub fn tick(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        liveness: &Liveness<'_>,
        can_take: &dyn Fn(&TaskRecord) -> Result<(), String>,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        let claims = Claims::read(files, &self.me);
        self.stand_down_outclaimed(files, host, &claims, &mut notes);
        self.answer_offers(files, host, &claims, can_take, &mut notes);
        self.settle_own_offers(files, host, liveness, &mut notes);
        self.adopt_dead(files, host, liveness, &mut notes);
        self.log_double_finals(files, host, &mut notes);
        notes
    }

    /// What the tick does first, alone: the epoch raised to that of an adoption of this
    /// node, and every task another node claims above this one let go. A daemon runs it
    /// at start-up, before it recovers its tasks, so that it neither retries nor logs
    /// what it no longer owns.
    pub fn stand_down_adopted(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        let claims = Claims::read(files, &self.me);
        self.stand_down_outclaimed(files, host, &claims, &mut notes);
        notes
    }

    /// Raises this node's epoch to that of the adoptions of it it sees (for its
    /// heartbeat: the adopter's and a returning node's sign that it learnt), and stands
    /// down from each task it holds — queued, running or offered — that another node
    /// claims above it.
    fn stand_down_outclaimed(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        claims: &Claims,
        notes: &mut Vec<Note>,
    ) {
        let me = self.me.clone();
        let adoptions: Vec<Adoption> = files
            .adoptions_of(&me)
            .into_iter()
            .filter(|a| a.epoch > self.epoch)
            .collect();
        let mut ids: BTreeSet<String> = host.live().into_iter().collect();
        ids.extend(
            self.offers
                .keys()
                .filter(|id| self.has_offer_out(id))
                .cloned(),
        );
        for id in ids {
            let Some(theirs) = claims.highest(files, &id, None) else {
                continue;
            };
            if theirs <= self.my_claim(&id) {
                continue;
            }
            if let Some(o) = self.offers.get(&id).filter(|_| self.has_offer_out(&id)) {
                let answered = files.answer_of(&o.offer.to, &id).is_some_and(|a| {
                    a.from == self.me && a.epoch == o.offer.epoch && a.refused.is_none()
                });
                if answered && o.offer.to == theirs.node() {
                    continue; // its taker took it: the offer is released below
                }
            }
            let why = match adoptions.iter().find(|a| a.by == theirs.node()) {
                Some(a) => format!("{} adopted this node's tasks at epoch {}", a.by, a.epoch),
                None => format!("{} claims it above this node", theirs.node()),
            };
            if self.has_offer_out(&id) {
                self.withdraw(files, &id);
            }
            self.stand_down(files, host, &id, theirs.node(), &why, notes);
        }
        if let Some(top) = adoptions.iter().map(|a| a.epoch).max() {
            if let Err(e) = files.write_epoch(top) {
                tracing::error!("writing this node's epoch: {e}");
            }
            self.epoch = top;
        }
    }

    /// Withdraws this node's offer of task `id`, which another node claims above it:
    /// a taker that has not answered takes nothing from it (one that did holds the task
    /// by its answer's claim, and the higher of the two claims wins).
    fn withdraw(&mut self, files: &mut impl FleetFiles, id: &str) {
        let Some(file) = self.offers.get(id) else {
            return;
        };
        let tombstone = OfferFile {
            offer: Offer {
                withdrawn: true,
                ..file.offer.clone()
            },
            record: None,
            released: false,
        };
        if let Err(e) = files.write_offer(&tombstone) {
            tracing::error!(task = %id, "withdrawing an offer: {e}");
            return;
        }
        self.offers.insert(id.to_string(), tombstone);
    }

    /// Task `id` belongs to `owner` now: forget it here; if it ran or finished here too,
    /// that is a duplicate run, recorded once.
    fn stand_down(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        id: &str,
        owner: &str,
        why: &str,
        notes: &mut Vec<Note>,
    ) {
        let status = host.status(id);
        if matches!(status, HostStatus::Queued | HostStatus::Running) {
            host.disown(id, why.to_string());
        }
        // (A task finished here is not disowned, and its other run, if any, is logged
        // when both final records are seen: `log_double_finals`. An adopter may have
        // taken it from a record that synced before its done record, and never run it.)
        if status == HostStatus::Running && self.doubles.insert(id.to_string()) {
            let d = Duplicate {
                task_id: id.to_string(),
                nodes: vec![self.me.clone(), owner.to_string()],
                why: format!("{why}; it had started here"),
            };
            files.write_duplicate(&d);
            notes.push((
                Some(id.to_string()),
                event::DuplicateRun {
                    idempotency_key: d.task_id.clone(),
                    nodes: d.nodes.clone(),
                    why: d.why.clone(),
                }
                .into(),
            ));
        }
    }

    fn answer_offers(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        claims: &Claims,
        can_take: &dyn Fn(&TaskRecord) -> Result<(), String>,
        notes: &mut Vec<Note>,
    ) {
        for o in files.offers_to_me() {
            let id = o.offer.task_id.clone();
            let Some(record) = o.record.as_deref() else {
                continue;
            };
            if record.id != id {
                continue; // not an offer anyone wrote: its record is another task
            }
            let answered = self.answers.get(&id);
            // A task here already (or finished here) is not taken twice, whatever offers
            // say; the answer tells the giver to let go, with this node's claim if it
            // is above the offer's epoch.
            let here = host.status(&id) != HostStatus::Unknown;
            let mut can = can_take(record);
            if !here && can.is_ok() {
                // Another node claims it at or above this offer: the offer is stale (its
                // giver stands down when it sees that claim).
                if let Some(c) = claims.highest(files, &id, None) {
                    if c > Claim::new(o.offer.epoch, &self.me) {
                        can = Err(format!("{} holds it (claim {})", c.node(), c.ballot));
                    }
                }
            }
            let step = match taker_step(&o.offer, &self.me, answered, can) {
                TakerStep::Refuse(_) if here => TakerStep::Accept,
                step => step,
            };
            let (refused, claim, step_name) = match step {
                TakerStep::Nothing => continue,
                TakerStep::Accept => {
                    let claim = self.claim(&id).max(o.offer.epoch);
                    if !here {
                        if let Err(e) = host.take(record.clone(), false) {
                            tracing::error!(task = %id, "taking an offered task: {e}");
                            continue;
                        }
                    }
                    (None, claim, "accepted")
                }
                TakerStep::Refuse(why) => (Some(why), 0, "refused"),
            };
            let answer = Answer {
                task_id: id.clone(),
                from: o.offer.from.clone(),
                epoch: o.offer.epoch,
                refused: refused.clone(),
                claim,
            };
            if let Err(e) = files.write_answer(&answer) {
                // The task is here (if taken); the giver waits, and the answer is
                // written at the next tick (the host knows the task by then).
                tracing::error!(task = %id, "writing an answer: {e}");
                continue;
            }
            self.answers.insert(id.clone(), answer);
            notes.push((
                Some(id),
                event::TaskHandoff {
                    step: step_name.into(),
                    peer: o.offer.from.clone(),
                    epoch: o.offer.epoch,
                    why: refused,
                }
                .into(),
            ));
        }
    }

    /// A task this node holds by a claim (an answer taking an offer, a take-back, an
    /// adoption) and finished, also final on another node: two nodes owned it (a late
    /// claim) and neither stood down in time. It is logged as `duplicate_run`, once: by
    /// the node with the smallest name among those that finished it and claim it (this
    /// one counts whatever it holds it by).
    fn log_double_finals(
        &mut self,
        files: &mut impl FleetFiles,
        host: &impl TaskHost,
        notes: &mut Vec<Note>,
    ) {
        let held: BTreeSet<String> = self
            .answers
            .keys()
            .chain(self.offers.keys())
            .chain(self.adopted.values().flat_map(|ad| ad.claims.keys()))
            .filter(|id| host.status(id) == HostStatus::Final)
            .filter(|id| !self.doubles.contains(*id) && self.claim(id) > 0)
            .cloned()
            .collect();
        for id in held {
            let mut finals = files.final_on(&id);
            if !finals.contains(&self.me) {
                finals.push(self.me.clone()); // finished here, whatever the files say yet
                finals.sort();
            }
            if !finals.iter().any(|n| *n != self.me) {
                continue;
            }
            self.doubles.insert(id.clone());
            let logger = finals
                .iter()
                .filter(|n| {
                    **n == self.me || {
                        let adoptions = files.adoptions_by(n);
                        claim_in(
                            files.answer_of(n, &id).as_ref(),
                            files.offer_of(n, &id).as_ref(),
                            &adoptions,
                            &id,
                        ) > 0
                    }
                })
                .min();
            if logger != Some(&self.me) {
                continue;
            }
            let d = Duplicate {
                task_id: id.clone(),
                nodes: finals.clone(),
                why: format!("finished on {} too", finals.join(", ")),
            };
            files.write_duplicate(&d);
            notes.push((
                Some(id),
                event::DuplicateRun {
                    idempotency_key: d.task_id.clone(),
                    nodes: d.nodes.clone(),
                    why: d.why.clone(),
                }
                .into(),
            ));
        }
    }

    fn settle_own_offers(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        liveness: &Liveness<'_>,
        notes: &mut Vec<Note>,
    ) {
        let out: Vec<String> = self
            .offers
            .keys()
            .filter(|id| self.has_offer_out(id))
            .cloned()
            .collect();
        for id in out {
            let Some(file) = self.offers.get(&id) else {
                continue;
            };
            let offer = file.offer.clone();
            let answer = files.answer_of(&offer.to, &id);
            let taker_dead = liveness.dead.iter().any(|(n, _)| *n == offer.to);
            let mut step = giver_step(&offer, answer.as_ref(), taker_dead);
            if matches!(step, GiverStep::TakeBack { .. }) && files.is_final_anywhere(&id) {
                // Its final record is in the fleet: the taker did take it and ran it (its
                // answer is late, or lost). Taking it back would run it twice: let go as if
                // the answer had come.
                step = GiverStep::Release;
            }
            match step {
                GiverStep::Wait => {}
                GiverStep::Release => {
                    if offer.epoch > 1 {
                        let tombstone = OfferFile {
                            offer: offer.clone(),
                            record: None,
                            released: true,
                        };
                        if let Err(e) = files.write_offer(&tombstone) {
                            tracing::error!(task = %id, "releasing an offer: {e}");
                            continue;
                        }
                        self.offers.insert(id.clone(), tombstone);
                    } else {
                        files.remove_offer(&id);
                        self.offers.remove(&id);
                    }
                    notes.push((
                        Some(id.clone()),
                        event::TaskHandoff {
                            step: "released".into(),
                            peer: offer.to.clone(),
                            epoch: offer.epoch,
                            why: None,
                        }
                        .into(),
                    ));
                }
                GiverStep::TakeBack { epoch, why } => {
                    let Some(record) = file.record.clone() else {
                        continue;
                    };
                    // The take-back is this node's claim above the taker's answer, written
                    // before the task is queued here: a taker that accepted meanwhile
                    // stands down when it sees it.
                    let tombstone = OfferFile {
                        offer: Offer {
                            epoch,
                            withdrawn: true,
                            claim: epoch,
                            ..offer.clone()
                        },
                        record: None,
                        released: false,
                    };
                    if let Err(e) = files.write_offer(&tombstone) {
                        tracing::error!(task = %id, "withdrawing an offer: {e}");
                        continue;
                    }
                    self.offers.insert(id.clone(), tombstone);
                    if host.status(&id) == HostStatus::Unknown {
                        if let Err(e) = host.take(*record, false) {
                            tracing::error!(task = %id, "taking back an offered task: {e}");
                        }
                    }
                    notes.push((
                        Some(id.clone()),
                        event::TaskHandoff {
                            step: "taken_back".into(),
                            peer: offer.to.clone(),
                            epoch,
                            why: Some(why),
                        }
                        .into(),
                    ));
                }
            }
        }
    }

    /// Adopts each dead node this one succeeds, once per epoch of that node (extended,
    /// while it stays dead, by the records of it that arrive late): every live
    /// task of the dead node that it still owns as this node sees the claims (none
    /// claims it above the dead node), that is final nowhere and not here already,
    /// becomes this node's (started ones count an interrupted attempt and are retried),
    /// claimed one above every claim and offer of it seen; the adoption file names the
    /// dead node's live tasks and carries the claims, and the dead node stands down from
    /// those when it is back.
    fn adopt_dead(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        liveness: &Liveness<'_>,
        notes: &mut Vec<Note>,
    ) {
        for (dead, silent_ms) in &liveness.dead {
            if super::successor(dead, &liveness.live) != Some(self.me.as_str()) {
                continue;
            }
            let its_epoch = files.heartbeat_epoch(dead).unwrap_or(1);
            // This node's adoption of it stands (it has not come back since): extend it
            // with the live records that reached this node since (no order across files:
            // some arrive after the lease), keeping its epoch.
            let standing = self
                .adopted
                .get(*dead)
                .filter(|a| a.epoch > its_epoch)
                .map(|a| a.epoch);
            let epoch = match standing {
                Some(e) => e,
                None => {
                    let mut known = its_epoch;
                    let mut adopted_since = false;
                    for a in files
                        .adoptions_of(dead)
                        .iter()
                        .chain(self.adopted.get(*dead))
                    {
                        // Adopted already since it last raised its epoch, by a successor
                        // before this node: not again.
                        adopted_since |= a.epoch > its_epoch;
                        known = known.max(a.epoch);
                    }
                    if adopted_since {
                        continue;
                    }
                    known + 1
                }
            };
            let before = self.adopted.get(*dead);
            let mut named: Vec<String> = before.map(|a| a.tasks.clone()).unwrap_or_default();
            let mut claims = before.map(|a| a.claims.clone()).unwrap_or_default();
            let seen: BTreeSet<String> = if standing.is_some() {
                named.iter().cloned().collect()
            } else {
                BTreeSet::new()
            };
            let others = Claims::read(files, dead);
            let mut taken = 0u64;
            for (record, started) in files.live_records(dead, &seen) {
                let id = record.id.clone();
                if !named.contains(&id) {
                    named.push(id.clone());
                }
                if host.status(&id) != HostStatus::Unknown || files.is_final_anywhere(&id) {
                    continue;
                }
                // The dead node owns it only if no other node (this one included)
                // claims it above the dead node's own claim.
                let its_claim = Claim::new(
                    claim_in(
                        files.answer_of(dead, &id).as_ref(),
                        files.offer_of(dead, &id).as_ref(),
                        &files.adoptions_by(dead),
                        &id,
                    ),
                    dead,
                );
                // (This node claims nothing by a task it does not hold: 0 counts only
                // for a task in a node's own inbox.)
                let mine = self.my_claim(&id);
                let top = others.highest(files, &id, Some(&self.me));
                if (mine.ballot > 0 && mine > its_claim)
                    || top.as_ref().is_some_and(|c| *c > its_claim)
                {
                    continue;
                }
                // Above every claim seen, and above every offer of it by or to the dead
                // node (a late answer to one claims below this adoption).
                let mut offered = files.offer_of(dead, &id).map_or(0, |o| o.epoch);
                for n in others.others.iter().chain(std::iter::once(&self.me)) {
                    if let Some(o) = files.offer_of(n, &id).filter(|o| o.to == *dead) {
                        offered = offered.max(o.epoch);
                    }
                }
                let ballot = its_claim
                    .ballot
                    .max(mine.ballot)
                    .max(top.map_or(0, |c| c.ballot))
                    .max(offered)
                    + 1;
                match host.take(record, started) {
                    Ok(()) => {
                        taken += 1;
                        claims.insert(id, ballot);
                    }
                    Err(e) => tracing::error!(task = %id, "adopting a task: {e}"),
                }
            }
            if standing.is_some() && named.len() == seen.len() {
                continue; // nothing new
            }
            let adoption = Adoption {
                node: (*dead).to_string(),
                by: self.me.clone(),
                epoch,
                tasks: named,
                claims,
            };
            if let Err(e) = files.write_adoption(&adoption) {
                // The tasks taken are here with no claim above the dead node's: this
                // node stands down from them at the next tick, and adopts again.
                tracing::error!(node = %dead, "writing an adoption: {e}");
                continue;
            }
            self.adopted.insert((*dead).to_string(), adoption);
            notes.push((
                None,
                event::NodeAdopted {
                    node: (*dead).to_string(),
                    epoch,
                    tasks: taken,
                    silent_ms: *silent_ms,
                }
                .into(),
            ));
        }
    }
}

/// Where a new task goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// It stays on this node.
    Here,
    /// It is offered to this node.
    Offer(String),
}

/// What placement knows of a task.
#[derive(Debug, Clone, Copy)]
pub struct PlacementAsk<'a> {
    /// The node of the session the task names (`None`: it names none).
    pub session_node: Option<&'a str>,
    /// The role it asks for.
    pub role: Option<&'a str>,
    /// It takes locks (a branch or paths): it runs on the repository's lock home.
    pub locks: bool,
    /// This node has an idle session that fits it now.
    pub idle_here: bool,
    /// This node has any session that fits it (idle or not).
    pub fits_here: bool,
    /// This node is draining: it keeps only tasks no other node can run (those naming
    /// its sessions).
    pub draining_here: bool,
}

/// Where a task goes (`docs/multi-node.md`, "Placement" and "Locks across nodes"): to
/// its session's node (when live; else it waits here); a locking task to the repository's lock home; otherwise it stays
/// when a session here is idle for it, else goes to the least-loaded live node with an
/// idle fitting session ([`super::place`]), else stays when a session here fits it at
/// all, else goes to any live node that has one idle later (it waits here meanwhile:
/// a later tick offers it again). `heartbeats`: the live nodes' last heartbeats, this
/// node's included; `live`: their names and weights.
#[must_use]
pub fn placement(
    me: &str,
    ask: PlacementAsk<'_>,
    lock_home_key: &str,
    lock_home_configured: Option<&str>,
    live: &[(&str, u32)],
    heartbeats: &BTreeMap<String, super::Heartbeat>,
) -> Placement {
    let elsewhere = |n: &str| {
        if n == me {
            Placement::Here
        } else {
            Placement::Offer(n.to_string())
        }
    };
    if let Some(node) = ask.session_node {
        // A session on a node not live now, or draining: the task waits here until it
        // can go (a later tick offers it again), rather than going to a node that
        // cannot answer or would refuse it.
        if !live.iter().any(|(n, _)| *n == node)
            || (node != me && heartbeats.get(node).is_some_and(|h| h.draining))
        {
            return Placement::Here;
        }
        return elsewhere(node);
    }
    if ask.locks {
        return super::lock_home(lock_home_key, lock_home_configured, live)
            .map_or(Placement::Here, elsewhere);
    }
    if ask.idle_here && !ask.draining_here {
        return Placement::Here;
    }
    let candidates: Vec<super::Candidate<'_>> = live
        .iter()
        .filter_map(|(name, weight)| {
            heartbeats.get(*name).map(|hb| super::Candidate {
                name,
                weight: *weight,
                heartbeat: hb,
            })
        })
        .collect();
    let want = ask.role.map_or(super::Want::Any, super::Want::Role);
    match super::place(want, &candidates) {
        Some(n) => elsewhere(n),
        None if ask.draining_here => {
            // Nobody idle: a draining node still gives its queue away, to the
            // least-loaded node that takes work (the task waits there instead).
            candidates
                .iter()
                .filter(|c| c.name != me && !c.heartbeat.draining)
                .min_by(|a, b| super::by_load(a, b))
                .map_or(Placement::Here, |c| elsewhere(c.name))
        }
        None => Placement::Here,
    }
}

#[cfg(test)]
mod tests;
