//! Handing a task from one node to another without two nodes ever writing one file
//! (`docs/multi-node.md`, "Handing a task to another node"): the giver writes an
//! [`Offer`] in its own directory, the taker answers with an [`Answer`] in its own, and
//! the giver lets go once it sees the answer. Pure: each side's next step from the files
//! it sees, in any order, late, twice, or after they were deleted (the syncer's rules).
//! Who owns a task when these files disagree is settled by claims ([`super::node`]).

use serde::{Deserialize, Serialize};

/// `nodes/<giver>/offers/<id>.json`: "node `to` should run task `task_id`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The task.
    pub task_id: String,
    /// The giver (the offer's writer).
    pub from: String,
    /// The taker.
    pub to: String,
    /// Raised by every new offer of this task and by a take-back: an answer or an offer
    /// at a lower epoch is stale.
    pub epoch: u64,
    /// `true` once the offer no longer stands: the giver took the task back, or stood
    /// down from it (another node claims it above the giver). A taker takes nothing
    /// from a withdrawn offer.
    #[serde(default)]
    pub withdrawn: bool,
    /// The giver's claim on the task when it wrote this file (`docs/multi-node.md`,
    /// "Claims"): below `epoch` in a standing offer, so the taker's answer claims the
    /// task above the giver; `epoch` itself in an offer withdrawn because the giver took
    /// the task back ([`GiverStep::TakeBack`]), above any answer to the offer, so a
    /// taker that accepted it (its answer lost in a partition) stands down.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claim: u64,
}

/// `nodes/<taker>/accepted/<id>.json`: the taker's answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The task.
    pub task_id: String,
    /// The giver whose offer this answers.
    pub from: String,
    /// The epoch of the offer answered.
    pub epoch: u64,
    /// Why the taker refused; `None`: it took the task.
    #[serde(default)]
    pub refused: Option<String>,
    /// The taker's claim on the task when it wrote this answer (`docs/multi-node.md`,
    /// "Claims"): the offer's epoch when it took the task by this offer, or more when it
    /// held the task already by a higher claim (two givers offered it one task). 0 in a
    /// refusal.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claim: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if signature
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Answer {
    /// The taker's claim on the task by this answer: `None` for a refusal.
    #[must_use]
    pub fn claim(&self) -> Option<u64> {
        self.refused.is_none().then_some(self.claim.max(self.epoch))
    }
}

/// What the giver does next about an offer it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiverStep {
    /// No answer to this offer yet (and the taker is alive): keep the offer, do not run
    /// the task.
    Wait,
    /// The taker took it: remove the giver's own record and the offer. The task is the
    /// taker's.
    Release,
    /// The taker refused, or is presumed dead without having answered: the task is the
    /// giver's again. The giver rewrites its offer as withdrawn and taken back at `epoch`
    /// (one above the offer's): its claim, above the claim of a taker that did accept —
    /// its answer lost in a partition — which stands down when it sees it; then the
    /// giver may run or re-offer it.
    TakeBack {
        /// The epoch of the withdrawal.
        epoch: u64,
        /// Why.
        why: String,
    },
}

/// The giver's next step for `offer`, given the taker's `answer` as the giver sees it
/// (`None`: none seen) and whether the taker is presumed dead (on the giver's clock).
#[must_use]
pub fn giver_step(offer: &Offer, answer: Option<&Answer>, taker_dead: bool) -> GiverStep {
    let current = answer.filter(|a| a.epoch == offer.epoch && a.from == offer.from);
    match current {
        Some(Answer {
            refused: Some(why), ..
        }) => GiverStep::TakeBack {
            epoch: offer.epoch + 1,
            why: format!("{} refused it: {why}", offer.to),
        },
        Some(_) => GiverStep::Release,
        None if taker_dead => GiverStep::TakeBack {
            epoch: offer.epoch + 1,
            why: format!("{} is presumed dead and never answered", offer.to),
        },
        None => GiverStep::Wait,
    }
}

/// What the taker does about an offer it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakerStep {
    /// Write an [`Answer`] taking it, and its record in the taker's own directory.
    Accept,
    /// Write an [`Answer`] refusing it, with the reason.
    Refuse(String),
    /// Nothing: the offer is not for this node, was answered already (a late or
    /// resurrected copy), or is withdrawn.
    Nothing,
}

/// The taker `me`'s step for `offer`, given its own answer to this task if it wrote one
/// (it wrote it, so it sees it at once) and whether it can take the task now (`Err`: why
/// not — the session is gone, the node drains).
#[must_use]
pub fn taker_step(
    offer: &Offer,
    me: &str,
    answered: Option<&Answer>,
    can_take: Result<(), String>,
) -> TakerStep {
    if offer.to != me || offer.withdrawn {
        return TakerStep::Nothing;
    }
    if answered.is_some_and(|a| a.from == offer.from && a.epoch >= offer.epoch) {
        return TakerStep::Nothing;
    }
    match can_take {
        Ok(()) => TakerStep::Accept,
        Err(why) => TakerStep::Refuse(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(epoch: u64) -> Offer {
        Offer {
            task_id: "t".into(),
            from: "a".into(),
            to: "b".into(),
            epoch,
            withdrawn: false,
            claim: 0,
        }
    }

    fn answer(epoch: u64, refused: Option<&str>) -> Answer {
        Answer {
            task_id: "t".into(),
            from: "a".into(),
            epoch,
            refused: refused.map(str::to_string),
            claim: 0,
        }
    }

    #[test]
    fn the_taker_accepts_an_offer_once_and_ignores_late_or_resurrected_copies() {
        let o = offer(1);
        assert_eq!(taker_step(&o, "b", None, Ok(())), TakerStep::Accept);
        let mine = answer(1, None);
        assert_eq!(taker_step(&o, "b", Some(&mine), Ok(())), TakerStep::Nothing);
        // Not for this node.
        assert_eq!(taker_step(&o, "c", None, Ok(())), TakerStep::Nothing);
    }

    #[test]
    fn a_taker_that_cannot_take_refuses_with_the_reason_and_the_giver_takes_it_back() {
        let o = offer(3);
        let step = taker_step(&o, "b", None, Err("draining".into()));
        assert_eq!(step, TakerStep::Refuse("draining".into()));
        let refusal = answer(3, Some("draining"));
        assert_eq!(
            giver_step(&o, Some(&refusal), false),
            GiverStep::TakeBack {
                epoch: 4,
                why: "b refused it: draining".into()
            }
        );
    }

    #[test]
    fn the_giver_waits_for_an_answer_and_lets_go_once_it_sees_it() {
        let o = offer(2);
        assert_eq!(giver_step(&o, None, false), GiverStep::Wait);
        assert_eq!(
            giver_step(&o, Some(&answer(2, None)), false),
            GiverStep::Release
        );
    }

    #[test]
    fn an_answer_to_an_older_offer_is_stale() {
        let o = offer(5);
        assert_eq!(
            giver_step(&o, Some(&answer(4, None)), false),
            GiverStep::Wait
        );
        // A re-offer at a higher epoch is answered again.
        assert_eq!(
            taker_step(&o, "b", Some(&answer(4, Some("busy"))), Ok(())),
            TakerStep::Accept
        );
    }

    #[test]
    fn a_dead_taker_that_never_answered_loses_the_task_to_a_claim_above_its_answer() {
        let o = offer(1);
        let GiverStep::TakeBack { epoch, why } = giver_step(&o, None, true) else {
            panic!("the giver takes the task back");
        };
        assert_eq!(epoch, 2);
        assert!(why.contains("presumed dead"), "{why}");
        // The taker had accepted, but its answer was lost in a partition: the giver's
        // take-back claims the task above the taker's answer.
        let mine = answer(1, None);
        assert!(mine.claim() < Some(epoch));
        let withdrawn = Offer {
            epoch,
            withdrawn: true,
            claim: epoch,
            ..o.clone()
        };
        // And it takes nothing from a withdrawn offer.
        assert_eq!(
            taker_step(&withdrawn, "b", None, Ok(())),
            TakerStep::Nothing
        );
        // A refusal claims nothing; a taker holding the task by a higher claim says so.
        assert_eq!(answer(1, Some("busy")).claim(), None);
        let held = Answer {
            claim: 7,
            ..answer(1, None)
        };
        assert_eq!(held.claim(), Some(7));
    }

    #[test]
    fn offers_and_answers_read_back_as_written() {
        let o = offer(7);
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Offer>(&text).unwrap(), o);
        let a = answer(7, Some("no session"));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Answer>(&text).unwrap(), a);
        assert!(
            serde_json::from_str::<Answer>(r#"{"task_id":"t","from":"a","epoch":1,"x":1}"#)
                .is_err()
        );
    }
}
