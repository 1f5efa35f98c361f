//! One node's part in the fleet, decided without I/O (`docs/multi-node.md`): where a new
//! task goes ([`placement`]), and what a node does at each heartbeat ([`NodeCore::tick`])
//! — accept offers made to it, let go of or take back what it offered, adopt a dead
//! node's tasks when it is the successor, and stand down (disown) what another node
//! adopted from it or took back from it.
//!
//! The files are reached through [`FleetFiles`] (the daemon: the spool; the simulation:
//! a fake syncer's view of each node) and the tasks through [`TaskHost`] (the daemon: its
//! scheduler; the simulation: a model of one). A node writes only its own files
//! (`nodes/<me>/…`), so every method of `FleetFiles` that writes is about this node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::handoff::{giver_step, superseded, taker_step, Answer, GiverStep, Offer, TakerStep};
use crate::log::event::{self, EventBody};
use crate::spool::task::TaskRecord;

/// `nodes/<giver>/offers/<id>.json`: an [`Offer`] with the task's record (dropped once
/// the offer is withdrawn: the tombstone only fences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferFile {
    /// The offer.
    pub offer: Offer,
    /// The task's record as the giver held it; `None` in a withdrawn or released offer.
    #[serde(default)]
    pub record: Option<Box<TaskRecord>>,
    /// The taker took it and the giver let go, and the offer is kept (without its
    /// record) as a tombstone: a giver keeps one for an offer above epoch 1 (the task
    /// was offered before, maybe taken back from a taker that had accepted it), so that
    /// an earlier taker still sees that the task went elsewhere ([`superseded`]) — a
    /// removed offer would tell it nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// `nodes/<adopter>/adopted/<node>.json`: "`by` adopted these tasks of `node`, which it
/// presumed dead, at fencing epoch `epoch`". The adopted node, when it comes back and
/// reads this at an epoch above its own, neither finishes nor retries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adoption {
    /// The node presumed dead.
    pub node: String,
    /// The adopter (the file's writer).
    pub by: String,
    /// One above every epoch known for `node` when it was adopted.
    pub epoch: u64,
    /// The ids of the dead node's live tasks (taken, or held by the adopter already).
    pub tasks: Vec<String>,
    /// The adopter's own epoch when it wrote this (0 in files written before it was
    /// kept): at or above the epoch of an adoption of the adopter by `node`, the
    /// adopter knew of that adoption (see [`NodeCore::tick`] on two nodes that adopt
    /// each other).
    #[serde(default)]
    pub by_epoch: u64,
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
    /// Offers in other nodes' `offers/` that name this node as taker.
    fn offers_to_me(&mut self) -> Vec<OfferFile>;
    /// Node `giver`'s offer of task `id`, if this node sees one.
    fn offer_of(&mut self, giver: &str, id: &str) -> Option<Offer>;
    /// Node `taker`'s answer about task `id`, if this node sees one.
    fn answer_of(&mut self, taker: &str, id: &str) -> Option<Answer>;
    /// Every adoption of `node` this node sees (in any node's `adopted/`).
    fn adoptions_of(&mut self, node: &str) -> Vec<Adoption>;
    /// Node `node`'s live task records (its `pending/` and `active/`): each with `true`
    /// when it was in `active/` (started).
    fn live_records(&mut self, node: &str) -> Vec<(TaskRecord, bool)>;
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

/// One node's fleet state: its epoch and the offers, answers and adoptions it wrote (its
/// own files, loaded at start-up and kept in step with them).
#[derive(Debug, Clone)]
pub struct NodeCore {
    /// This node.
    pub me: String,
    /// Its fencing epoch: raised to an adoption's epoch when it learns it was adopted.
    pub epoch: u64,
    /// Its offers, by task id (withdrawn ones stay as tombstones).
    pub offers: BTreeMap<String, OfferFile>,
    /// Its answers, by task id.
    pub answers: BTreeMap<String, Answer>,
    /// Its adoptions, by adopted node.
    pub adopted: BTreeMap<String, Adoption>,
    /// Answers found fenced (checked once).
    fenced: BTreeSet<String>,
    /// Tasks held by a transfer, finished here and found final on another node too,
    /// logged as `duplicate_run` (or left to the node that logs them).
    doubles: BTreeSet<String>,
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
            fenced: BTreeSet::new(),
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

    /// Offers task `record` to node `to`: the offer file is written (durably) and kept.
    /// The caller has not queued the task, or removes it from its queue after this.
    ///
    /// # Errors
    /// The offer could not be written, or `to` was adopted at an epoch its heartbeat
    /// does not show yet (it would stand down from the task when it learns): the task
    /// stays the caller's.
    pub fn offer(
        &mut self,
        files: &mut impl FleetFiles,
        record: TaskRecord,
        to: &str,
    ) -> Result<Note, String> {
        // A node adopted at an epoch above the one its heartbeat shows has not stood down
        // yet: when the adoption reaches it, it stands down from every task the adoption
        // names, this one too if it took it meanwhile — and the task would be held by
        // nobody. Wait until its heartbeat shows the adoption's epoch.
        let acknowledged = files.heartbeat_epoch(to).unwrap_or(1);
        if let Some(a) = files
            .adoptions_of(to)
            .iter()
            .chain(self.adopted.get(to))
            .find(|a| a.epoch > acknowledged)
        {
            return Err(format!(
                "{to} was adopted by {} at epoch {} and shows epoch {acknowledged}: \
                 it has not stood down yet",
                a.by, a.epoch
            ));
        }
        // Above this node's last offer of the task, and above the taker's answer to an
        // earlier one (the offer was released and forgotten since): the taker ignores
        // an offer at or below an epoch it answered (a late or resurrected copy).
        let answered = files
            .answer_of(to, &record.id)
            .filter(|a| a.from == self.me)
            .map_or(0, |a| a.epoch);
        let epoch = self
            .offers
            .get(&record.id)
            .map_or(0, |o| o.offer.epoch)
            .max(answered)
            + 1;
        let file = OfferFile {
            offer: Offer {
                task_id: record.id.clone(),
                from: self.me.clone(),
                to: to.to_string(),
                epoch,
                withdrawn: false,
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

    /// One heartbeat's worth of fleet work, in this order: stand down from what another
    /// node adopted from this one; answer offers made to it; stand down from offers
    /// taken back after it accepted them; let go of or take back its own offers; adopt
    /// the dead nodes it succeeds. `can_take` says whether this node can run a task now
    /// (`Err`: why not — draining, its session is not here). Returns what to log.
    pub fn tick(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        liveness: &Liveness<'_>,
        can_take: &dyn Fn(&TaskRecord) -> Result<(), String>,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        self.stand_down_from_adoptions(files, host, &mut notes);
        self.answer_offers(files, host, can_take, &mut notes);
        self.stand_down_from_withdrawals(files, host, &mut notes);
        self.settle_own_offers(files, host, liveness, &mut notes);
        self.adopt_dead(files, host, liveness, &mut notes);
        self.log_double_finals(files, host, &mut notes);
        notes
    }

    /// A task this node holds by a transfer (an answer taking an offer, or an adoption)
    /// and finished, also final on another node: two nodes owned it (one adopted during
    /// a partition handed it on before it learnt of the adoption; a giver took back what
    /// its taker held), and neither stood down. It is logged as `duplicate_run`, once:
    /// by the node with the smallest name among those that finished it and hold it by an
    /// answer (this one counts whatever it holds it by).
    fn log_double_finals(
        &mut self,
        files: &mut impl FleetFiles,
        host: &impl TaskHost,
        notes: &mut Vec<Note>,
    ) {
        let held: BTreeSet<String> = self
            .answers
            .values()
            .filter(|a| a.refused.is_none())
            .map(|a| a.task_id.clone())
            .chain(
                self.adopted
                    .values()
                    .flat_map(|ad| ad.tasks.iter().cloned()),
            )
            .filter(|id| !self.doubles.contains(id))
            .filter(|id| host.status(id) == HostStatus::Final)
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
                    **n == self.me || files.answer_of(n, &id).is_some_and(|a| a.refused.is_none())
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

    /// Another node adopted this one at an epoch above its own: the tasks it took are
    /// not this node's any more. The first step of [`NodeCore::tick`]; a daemon also runs
    /// it alone at start-up, before it recovers its tasks, so that it neither retries
    /// nor logs what it no longer owns.
    pub fn stand_down_adopted(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
    ) -> Vec<Note> {
        let mut notes = Vec::new();
        self.stand_down_from_adoptions(files, host, &mut notes);
        notes
    }

    fn stand_down_from_adoptions(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        notes: &mut Vec<Note>,
    ) {
        let me = self.me.clone();
        let mut adoptions = files.adoptions_of(&me);
        adoptions.retain(|a| a.epoch > self.epoch);
        adoptions.sort_by_key(|a| a.epoch);
        for a in adoptions {
            let why = format!("{} adopted this node's tasks at epoch {}", a.by, a.epoch);
            for id in &a.tasks {
                if self.keeps_in_mutual_adoption(&a, id) || self.given_back_by_heir(files, &a, id) {
                    continue;
                }
                self.stand_down(files, host, id, &a.by, &why, notes);
                self.withdraw_for_adopter(files, id);
            }
            if let Err(e) = files.write_epoch(a.epoch) {
                tracing::error!("writing this node's epoch: {e}");
            }
            self.epoch = a.epoch;
        }
    }

    /// An offer of task `id` this node has out, when an adoption of this node names the
    /// task: the adopter owns it, so the offer is withdrawn (a taker that accepted it
    /// stands down) and the task is not taken back either.
    fn withdraw_for_adopter(&mut self, files: &mut impl FleetFiles, id: &str) {
        if !self.has_offer_out(id) {
            return;
        }
        let Some(file) = self.offers.get(id) else {
            return;
        };
        let tombstone = OfferFile {
            offer: Offer {
                epoch: file.offer.epoch + 1,
                withdrawn: true,
                ..file.offer.clone()
            },
            record: None,
            released: false,
        };
        if let Err(e) = files.write_offer(&tombstone) {
            tracing::error!(task = %id, "withdrawing an adopted task's offer: {e}");
            return;
        }
        self.offers.insert(id.to_string(), tombstone);
    }

    /// Whether this node keeps task `id` although `theirs` (an adoption of this node)
    /// names it: this node's own adoption of the adopter names it too, and neither
    /// adopter knew of the other's adoption when it wrote its own (a partition: each
    /// presumed the other dead). Then the node with the smaller name keeps it and the
    /// other stands down — both decide the same, and the task is held by one of them,
    /// never by none. An adopter that wrote its adoption knowing of this node's (its
    /// `by_epoch` at or above it) adopted the task later: this node stands down.
    fn keeps_in_mutual_adoption(&self, theirs: &Adoption, id: &str) -> bool {
        let Some(mine) = self.adopted.get(&theirs.by) else {
            return false;
        };
        mine.tasks.iter().any(|t| t == id)
            && theirs.by_epoch < mine.epoch
            && mine.by_epoch < theirs.epoch
            && self.me < theirs.by
    }

    /// Task `id` belongs to `owner` now: forget it here; if it ran or finished here too,
    /// that is a duplicate run, recorded once.
    fn stand_down(
        &self,
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
        if matches!(status, HostStatus::Running | HostStatus::Final) {
            let d = Duplicate {
                task_id: id.to_string(),
                nodes: vec![self.me.clone(), owner.to_string()],
                why: format!(
                    "{why}; it had {} here",
                    if status == HostStatus::Final {
                        "finished"
                    } else {
                        "started"
                    }
                ),
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
        can_take: &dyn Fn(&TaskRecord) -> Result<(), String>,
        notes: &mut Vec<Note>,
    ) {
        for o in files.offers_to_me() {
            let id = o.offer.task_id.clone();
            let answered = self.answers.get(&id);
            let Some(record) = o.record.as_deref() else {
                continue;
            };
            if record.id != id {
                continue; // not an offer anyone wrote: its record is another task
            }
            // A task already here (or finished here) is not taken twice, whatever offers
            // say; the answer tells the giver to let go.
            let here = host.status(&id) != HostStatus::Unknown;
            // Held here already by another giver's offer it took: this answer only
            // lets this giver go.
            let held = here
                && answered
                    .is_some_and(|a| a.refused.is_none() && (a.from != o.offer.from || a.held));
            let step = if here && answered.is_none() {
                TakerStep::Accept
            } else {
                taker_step(&o.offer, &self.me, answered, can_take(record))
            };
            let (refused, step_name) = match step {
                TakerStep::Nothing => continue,
                TakerStep::Accept => {
                    self.fenced.remove(&id);
                    if !here {
                        if let Err(e) = host.take(record.clone(), false) {
                            tracing::error!(task = %id, "taking an offered task: {e}");
                            continue;
                        }
                    }
                    (None, "accepted")
                }
                TakerStep::Refuse(why) => (Some(why), "refused"),
            };
            let answer = Answer {
                task_id: id.clone(),
                from: o.offer.from.clone(),
                epoch: o.offer.epoch,
                refused: refused.clone(),
                held: held && refused.is_none(),
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

    /// A giver took back a task this node had accepted (it presumed this node dead
    /// before it saw the answer), and maybe gave it to another node since: the giver's
    /// choice stands. The same for a task this node adopted from a dead node that had
    /// accepted it: the dead node's giver took it back.
    fn stand_down_from_withdrawals(
        &mut self,
        files: &mut impl FleetFiles,
        host: &mut impl TaskHost,
        notes: &mut Vec<Note>,
    ) {
        let me = self.me.clone();
        let accepted: Vec<Answer> = self
            .answers
            .values()
            .filter(|a| a.refused.is_none() && !a.held && !self.fenced.contains(&a.task_id))
            .filter(|a| host.status(&a.task_id) != HostStatus::Unknown)
            .cloned()
            .collect();
        for a in accepted {
            // This node adopted the giver after the giver took the task back (the
            // adoption names it: the giver's record of it was live then): the adoption
            // wins, and the giver stands down from it when it is back.
            if self.adopted_naming(&a.from, &a.task_id)
                || self.heir_of_adopter(files, &a.from, &a.task_id)
                || self.adopted_from_a_later_taker(files, &a)
            {
                continue;
            }
            let now = files.offer_of(&a.from, &a.task_id);
            if superseded(&a, &me, now.as_ref()) {
                let why = format!("{} took it back after this node accepted it", a.from);
                self.stand_down(files, host, &a.task_id, &a.from, &why, notes);
                self.fenced.insert(a.task_id.clone());
            }
        }
        let adopted: Vec<(String, String)> = self
            .adopted
            .values()
            .flat_map(|ad| ad.tasks.iter().map(|t| (ad.node.clone(), t.clone())))
            .filter(|(_, t)| !self.fenced.contains(t))
            .filter(|(_, t)| host.status(t) != HostStatus::Unknown)
            .collect();
        for (dead, id) in adopted {
            if let Some(giver) = self.taken_back_from(files, &dead, &id) {
                let why = format!("{giver} took it back from {dead}, which this node adopted");
                self.stand_down(files, host, &id, &giver, &why, notes);
                self.fenced.insert(id);
            }
        }
    }

    /// Whether this node holds task `id` by a chain of adoptions that starts at an
    /// adoption of `giver` naming it: another node adopted `giver` (naming the task), and
    /// this node adopted that adopter (naming it too), and so on. The adoption of the
    /// giver beats the giver's withdrawal of its offer (it withdraws it for the adopter
    /// when it learns), so the adopter's heir keeps the task; a taker that is no heir
    /// stands down (the adopter, or its heir, holds it).
    fn heir_of_adopter(&self, files: &mut impl FleetFiles, giver: &str, id: &str) -> bool {
        let mut seen = BTreeSet::from([giver.to_string(), self.me.clone()]);
        let mut frontier = vec![giver.to_string()];
        while let Some(node) = frontier.pop() {
            for a in files.adoptions_of(&node) {
                if !a.tasks.iter().any(|t| t == id) {
                    continue;
                }
                if a.by == self.me {
                    if node != giver {
                        return true;
                    }
                    continue;
                }
                if self.adopted_naming(&a.by, id) {
                    return true;
                }
                if seen.insert(a.by.clone()) {
                    frontier.push(a.by);
                }
            }
        }
        false
    }

    /// Whether this node holds the task of its answer `mine` by an adoption of a node
    /// that took a later offer of the same giver: this node's answer is stale (the task
    /// went elsewhere and came back by the adoption), and the adopted node's answer is
    /// the one that counts (see the adopted tasks in `stand_down_from_withdrawals`).
    fn adopted_from_a_later_taker(&self, files: &mut impl FleetFiles, mine: &Answer) -> bool {
        let id = &mine.task_id;
        let nodes: Vec<String> = self
            .adopted
            .values()
            .filter(|ad| ad.tasks.iter().any(|t| t == id))
            .map(|ad| ad.node.clone())
            .collect();
        nodes.iter().any(|n| {
            files
                .answer_of(n, id)
                .is_some_and(|a| a.refused.is_none() && a.from == mine.from && a.epoch > mine.epoch)
        })
    }

    /// Whether this node holds task `id` again, named by `theirs` (an adoption of this
    /// node), by an offer it took from a node that adopted the adopter naming the task
    /// (or adopted a node that did, and so on): the task went from this node to the
    /// adopter, on to the adopter's adopter, and back here by its offer, after the
    /// adoption. It stays here (standing down would leave it to nobody: the adopter
    /// stood down for its own adopter, which released it to this node).
    fn given_back_by_heir(&self, files: &mut impl FleetFiles, theirs: &Adoption, id: &str) -> bool {
        let Some(mine) = self.answers.get(id).filter(|a| a.refused.is_none()) else {
            return false;
        };
        if mine.from == theirs.by || mine.from == self.me {
            return false;
        }
        let mut seen = BTreeSet::from([theirs.by.clone()]);
        let mut frontier = vec![theirs.by.clone()];
        while let Some(node) = frontier.pop() {
            for a in files.adoptions_of(&node) {
                if !a.tasks.iter().any(|t| t == id) || a.by == self.me {
                    continue;
                }
                if a.by == mine.from {
                    return true;
                }
                if seen.insert(a.by.clone()) {
                    frontier.push(a.by);
                }
            }
        }
        false
    }

    /// Whether this node's adoption of `node` names task `id` (a later adoption of the
    /// same node names again the tasks an earlier one named that this node still holds).
    fn adopted_naming(&self, node: &str, id: &str) -> bool {
        self.adopted
            .get(node)
            .is_some_and(|ad| ad.tasks.iter().any(|t| t == id))
    }

    /// The giver that took task `id` back from node `taker` (or gave it to another node)
    /// after `taker` accepted it, as this node sees their files; `None` when `taker`
    /// holds it by no answer, or this node is the giver, or adopted the giver naming it,
    /// or the giver's offer now is to this node (it gave the task to this node since), or
    /// the giver was adopted, naming the task, at an epoch it does not show yet.
    fn taken_back_from(
        &self,
        files: &mut impl FleetFiles,
        taker: &str,
        id: &str,
    ) -> Option<String> {
        let theirs = files
            .answer_of(taker, id)
            .filter(|a| a.refused.is_none() && !a.held)?;
        if theirs.from == self.me
            || self.adopted_naming(&theirs.from, id)
            || self.heir_of_adopter(files, &theirs.from, id)
        {
            return None;
        }
        // The giver was adopted, the task named, at an epoch it has not acknowledged
        // yet: its take-back is void (it stands down from the task when it learns).
        let acknowledged = files.heartbeat_epoch(&theirs.from).unwrap_or(1);
        if files
            .adoptions_of(&theirs.from)
            .iter()
            .any(|a| a.epoch > acknowledged && a.tasks.iter().any(|t| t == id))
        {
            return None;
        }
        let now = files.offer_of(&theirs.from, id);
        if now.as_ref().is_some_and(|o| o.to == self.me) {
            return None;
        }
        superseded(&theirs, taker, now.as_ref()).then_some(theirs.from)
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
            .iter()
            .filter(|(_, o)| !o.offer.withdrawn && !o.released)
            .map(|(id, _)| id.clone())
            .collect();
        for id in out {
            let Some(file) = self.offers.get(&id) else {
                continue;
            };
            let offer = file.offer.clone();
            let answer = files.answer_of(&offer.to, &id);
            if let Some(a) = answer
                .as_ref()
                .filter(|a| a.from == self.me && a.epoch > offer.epoch)
            {
                // The taker answered a later offer of this task, one this node released
                // and forgot (the answer it saw then was stale, or it restarted): the
                // taker takes this one for a late copy and never answers. Offer it again
                // above that answer.
                let again = OfferFile {
                    offer: Offer {
                        epoch: a.epoch + 1,
                        ..offer.clone()
                    },
                    record: file.record.clone(),
                    released: false,
                };
                if let Err(e) = files.write_offer(&again) {
                    tracing::error!(task = %id, "re-offering a task: {e}");
                } else {
                    self.offers.insert(id.clone(), again);
                }
                continue;
            }
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
                    let tombstone = OfferFile {
                        offer: Offer {
                            epoch,
                            withdrawn: true,
                            ..offer.clone()
                        },
                        record: None,
                        released: false,
                    };
                    // The withdrawal is written before the task is queued here: a taker
                    // that accepted meanwhile is fenced before this node can run it.
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

    /// Adopts each dead node this one succeeds, once per epoch of that node: the
    /// adoption file, written first, names every live task of the dead node (it stands
    /// down from each when it is back); those that are final nowhere and not here
    /// already become this node's (started ones count an interrupted attempt and are
    /// retried).
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
            let adoptions = files.adoptions_of(dead);
            let mut known = its_epoch;
            for a in adoptions.iter().chain(self.adopted.get(*dead)) {
                if a.epoch > its_epoch {
                    // Adopted already since it last raised its epoch (by this node, or
                    // by a successor before it): not again.
                    known = u64::MAX;
                    break;
                }
                known = known.max(a.epoch);
            }
            if known == u64::MAX {
                continue;
            }
            let epoch = known + 1;
            // Every live task of the dead node is named, so that it stands down from
            // each when it comes back; this node takes those it does not hold already
            // and that are final nowhere. The tasks a former adoption of it named and
            // this node still holds are named again: this node holds them by adoption.
            let mut named: Vec<String> = self
                .adopted
                .get(*dead)
                .map(|ad| ad.tasks.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| host.status(t) != HostStatus::Unknown)
                .collect();
            let mut take = Vec::new();
            for (record, started) in files.live_records(dead) {
                if named.contains(&record.id) {
                    continue;
                }
                named.push(record.id.clone());
                if host.status(&record.id) == HostStatus::Unknown
                    && !files.is_final_anywhere(&record.id)
                    && self.taken_back_from(files, dead, &record.id).is_none()
                {
                    take.push((record, started));
                }
            }
            let adoption = Adoption {
                node: (*dead).to_string(),
                by: self.me.clone(),
                epoch,
                tasks: named,
                by_epoch: self.epoch,
            };
            if let Err(e) = files.write_adoption(&adoption) {
                tracing::error!(node = %dead, "writing an adoption: {e}");
                continue;
            }
            let mut taken = 0u64;
            for (record, started) in take {
                let id = record.id.clone();
                match host.take(record, started) {
                    Ok(()) => taken += 1,
                    Err(e) => tracing::error!(task = %id, "adopting a task: {e}"),
                }
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
