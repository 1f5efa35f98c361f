//! Handing a task from one node to another without two nodes ever writing one file
//! (`docs/multi-node.md`, "Handing a task to another node"): the giver writes an
//! [`Offer`] in its own directory, the taker answers with an [`Answer`] in its own, and
//! the giver lets go once it sees the answer. Pure: each side's next step from the files
//! it sees, in any order, late, twice, or after they were deleted (the syncer's rules).
//! Not wired into the daemon yet.

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
    /// `true` once the giver has taken the task back (see [`GiverStep::TakeBack`]): the
    /// taker must not run it, and must not finish it if it had started.
    #[serde(default)]
    pub withdrawn: bool,
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
    /// The taker held the task already when it took this offer, by an earlier offer
    /// of another giver that it took: the answer only tells this giver to let go, and
    /// the taker does not stand down when this giver's offer is withdrawn or goes
    /// elsewhere (two givers offered one task to one taker: the giver that withdraws
    /// may be the one that stands down for an adopter, and the other released it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
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
    /// giver's again. The giver rewrites its offer as withdrawn at `epoch` (one above the
    /// offer's), so that a taker that did accept — its answer lost in a partition — is
    /// fenced and neither finishes nor retries it; then the giver may run or re-offer it.
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

/// Whether a taker that accepted a task (its `answer`) must stop short of finishing or
/// retrying it: the giver's offer as the taker now sees it is withdrawn at a higher epoch.
/// What the taker had finished meanwhile is a duplicate, to be logged as `duplicate_run`.
#[must_use]
pub fn fenced(answer: &Answer, offer_now: Option<&Offer>) -> bool {
    offer_now.is_some_and(|o| o.withdrawn && o.from == answer.from && o.epoch > answer.epoch)
}

/// Whether the task a taker (`taker`) accepted (its `answer`) is not the taker's any
/// more: the giver's offer as the taker now sees it is withdrawn above the answer
/// ([`fenced`]), or went to another node above it (the giver took the task back and
/// offered it again, or released it to that node and kept the offer as a tombstone).
#[must_use]
pub fn superseded(answer: &Answer, taker: &str, offer_now: Option<&Offer>) -> bool {
    fenced(answer, offer_now)
        || offer_now
            .is_some_and(|o| o.from == answer.from && o.epoch > answer.epoch && o.to != taker)
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
        }
    }

    fn answer(epoch: u64, refused: Option<&str>) -> Answer {
        Answer {
            task_id: "t".into(),
            from: "a".into(),
            epoch,
            refused: refused.map(str::to_string),
            held: false,
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
    fn a_dead_taker_that_never_answered_loses_the_task_and_is_fenced_if_it_had_taken_it() {
        let o = offer(1);
        let GiverStep::TakeBack { epoch, why } = giver_step(&o, None, true) else {
            panic!("the giver takes the task back");
        };
        assert_eq!(epoch, 2);
        assert!(why.contains("presumed dead"), "{why}");
        // The taker had accepted, but its answer was lost in a partition: once it sees
        // the withdrawal it must not finish the task.
        let withdrawn = Offer {
            epoch,
            withdrawn: true,
            ..o.clone()
        };
        let mine = answer(1, None);
        assert!(fenced(&mine, Some(&withdrawn)));
        assert!(
            !fenced(&mine, Some(&o)),
            "an offer that stands fences nothing"
        );
        assert!(
            !fenced(&mine, None),
            "an offer removed after the release fences nothing"
        );
        // And it takes nothing from a withdrawn offer.
        assert_eq!(
            taker_step(&withdrawn, "b", None, Ok(())),
            TakerStep::Nothing
        );
    }

    #[test]
    fn an_offer_of_the_task_to_another_node_above_the_answer_supersedes_it() {
        let mine = answer(1, None);
        let again = Offer {
            to: "c".into(),
            epoch: 3,
            ..offer(3)
        };
        assert!(superseded(&mine, "b", Some(&again)));
        assert!(!fenced(&mine, Some(&again)), "fenced alone misses it");
        // Offered to this taker again above its answer: it answers that one.
        assert!(!superseded(&mine, "b", Some(&offer(3))));
        // The offer it answered, or an older one to another node: nothing.
        assert!(!superseded(&mine, "b", Some(&offer(1))));
        let older = Offer {
            to: "c".into(),
            ..offer(1)
        };
        assert!(!superseded(&mine, "b", Some(&older)));
        assert!(!superseded(&mine, "b", None));
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
