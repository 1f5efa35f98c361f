//! Which logged events can notify ([`Trigger`]), what makes two of them the same
//! ([`Trigger::dedup_key`]) and the one line a person reads ([`summary`]).

use std::fmt;

use crate::log::event::{
    ApprovalNeeded, BudgetExceeded, DuplicateRun, NodeAdopted, SessionExited, SessionLimited,
    TaskFailed,
};
use crate::log::{Event, EventBody};

/// An event a `[[notify]]` rule can name in `events`, and the logged event it is read
/// from (`src/log/event.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// `approval_needed`: a permission question waits for `architect approve|deny`.
    ApprovalNeeded,
    /// `task_failed` (a task the daemon ran, failed for good; not the `claimed: false`
    /// shape, a file another process took from `pending/`).
    TaskFailed,
    /// `session_exited` with `requested = false`: a session's program exited without
    /// being asked to (a crash; it is restarted with backoff). Stops on request — the
    /// daemon stopping, a session replaced or removed — do not count.
    SessionDead,
    /// `session_limited`: a session hit its agent's usage limit and is parked.
    SessionLimited,
    /// `budget_exceeded`: an LLM call was not made because it could break a budget.
    BudgetExceeded,
    /// `node_adopted`: this node presumed another node dead and adopted its tasks (only
    /// the adopting node logs it, so one node notifies).
    NodeDead,
    /// `duplicate_run`: a task ran on two nodes.
    DuplicateRun,
}

impl Trigger {
    /// Every trigger, in the order the README lists them.
    pub const ALL: [Trigger; 7] = [
        Self::ApprovalNeeded,
        Self::TaskFailed,
        Self::SessionDead,
        Self::SessionLimited,
        Self::BudgetExceeded,
        Self::NodeDead,
        Self::DuplicateRun,
    ];

    /// The name a rule's `events` uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApprovalNeeded => "approval_needed",
            Self::TaskFailed => "task_failed",
            Self::SessionDead => "session_dead",
            Self::SessionLimited => "session_limited",
            Self::BudgetExceeded => "budget_exceeded",
            Self::NodeDead => "node_dead",
            Self::DuplicateRun => "duplicate_run",
        }
    }

    /// The trigger called `name` in a rule's `events`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The trigger `event` is, if it is one; `None` for every other event.
    #[must_use]
    pub fn of(event: &Event) -> Option<Self> {
        match &event.body {
            EventBody::ApprovalNeeded(_) => Some(Self::ApprovalNeeded),
            EventBody::TaskFailed(TaskFailed::Finished { .. }) => Some(Self::TaskFailed),
            EventBody::SessionExited(x) if !x.requested => Some(Self::SessionDead),
            EventBody::SessionLimited(_) => Some(Self::SessionLimited),
            EventBody::BudgetExceeded(_) => Some(Self::BudgetExceeded),
            EventBody::NodeAdopted(_) => Some(Self::NodeDead),
            EventBody::DuplicateRun(_) => Some(Self::DuplicateRun),
            _ => None,
        }
    }

    /// What makes two events of this trigger the same, for de-duplication: the trigger
    /// and what it is about — the task (`task_failed`, `duplicate_run`), the session
    /// (`session_dead`, `session_limited`), the session and question
    /// (`approval_needed`), the provider and budget (`budget_exceeded`), the node
    /// (`node_dead`).
    #[must_use]
    pub fn dedup_key(self, event: &Event) -> String {
        let task = event.task_id.as_deref().unwrap_or("");
        let session = event.session.as_deref().unwrap_or("");
        let about = match &event.body {
            EventBody::ApprovalNeeded(a) => format!("{session}/{}", a.question),
            EventBody::BudgetExceeded(b) => format!("{}/{}", b.provider, b.budget),
            EventBody::NodeAdopted(n) => n.node.clone(),
            EventBody::SessionExited(_) | EventBody::SessionLimited(_) => session.to_string(),
            _ => task.to_string(),
        };
        format!("{}:{about}", self.as_str())
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest summary, characters (a longer one is cut with `…`).
pub const SUMMARY_MAX_CHARS: usize = 300;

/// One line a person reads: `[<node>] <what happened>`, at most [`SUMMARY_MAX_CHARS`]
/// characters. Built from `event`'s redacted form, so nothing the log would not show
/// gets out.
#[must_use]
pub fn summary(event: &Event) -> String {
    let e = redacted(event);
    let task = e.task_id.as_deref().unwrap_or("?");
    let on = e
        .session
        .as_deref()
        .map_or_else(String::new, |s| format!(" on session {s}"));
    let what = match &e.body {
        EventBody::ApprovalNeeded(ApprovalNeeded {
            question,
            kind,
            action,
            tool,
            rule,
            ..
        }) => {
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let asked = match action.as_deref().or(tool.as_deref()) {
                Some(a) => format!("{kind} `{a}`"),
                None => format!("{kind} (unreadable)"),
            };
            let session = e.session.as_deref().unwrap_or("SESSION");
            format!(
                "approval needed{on}: {asked} (rule {rule}); answer with: architect \
                 approve|deny {session} --question {question}"
            )
        }
        EventBody::TaskFailed(TaskFailed::Finished {
            attempts, error, ..
        }) => format!(
            "task {task} failed{on} after {attempts} attempt(s): {}",
            error.as_deref().unwrap_or("no error given")
        ),
        EventBody::SessionExited(SessionExited {
            status, uptime_ms, ..
        }) => {
            let during = e
                .task_id
                .as_deref()
                .map_or_else(String::new, |t| format!(" during task {t}"));
            let after = uptime_ms.map_or_else(String::new, |ms| format!(" after {} s", ms / 1000));
            format!(
                "session {} died ({status}){after}{during}; it is restarted",
                e.session.as_deref().unwrap_or("?")
            )
        }
        EventBody::SessionLimited(SessionLimited { message, until, .. }) => format!(
            "session {} hit a usage limit, parked until {}: {message}",
            e.session.as_deref().unwrap_or("?"),
            until.format("%Y-%m-%d %H:%M UTC")
        ),
        EventBody::BudgetExceeded(BudgetExceeded {
            provider,
            budget,
            limit_usd,
            spent_usd,
            reserved_usd,
            estimate_usd,
        }) => format!(
            "budget exceeded: {budget} ${limit_usd:.2} (spent ${spent_usd:.2}, reserved \
             ${reserved_usd:.2}, this call ${estimate_usd:.2}); {provider} not called"
        ),
        EventBody::NodeAdopted(NodeAdopted {
            node,
            tasks,
            silent_ms,
            ..
        }) => {
            #[allow(clippy::cast_precision_loss)] // ms to s, for reading
            let silent_s = *silent_ms as f64 / 1000.0;
            format!("node {node} presumed dead (silent {silent_s:.1} s): {tasks} task(s) adopted")
        }
        EventBody::DuplicateRun(DuplicateRun { nodes, why, .. }) => {
            format!("task {task} ran on nodes {}: {why}", nodes.join(", "))
        }
        other => other.kind().to_string(),
    };
    let line = format!("[{}] {what}", e.node).replace(['\n', '\r'], " ");
    if line.chars().count() > SUMMARY_MAX_CHARS {
        let cut: String = line.chars().take(SUMMARY_MAX_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// `event` as the log writes it: every string in its data redacted.
#[must_use]
pub fn redacted(event: &Event) -> Event {
    serde_json::to_value(event)
        .and_then(serde_json::from_value)
        .unwrap_or_else(|_| event.clone())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::log::event;
    use crate::log::EventBody;

    fn ev(task: Option<&str>, session: Option<&str>, body: impl Into<EventBody>) -> Event {
        Event {
            ts: Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap(),
            node: "n1".into(),
            task_id: task.map(str::to_string),
            session: session.map(str::to_string),
            body: body.into(),
        }
    }

    fn failed(error: &str) -> event::TaskFailed {
        event::TaskFailed::Finished {
            attempts: 2,
            duration_ms: Some(10),
            error: Some(error.into()),
        }
    }

    fn exited(requested: bool) -> event::SessionExited {
        event::SessionExited {
            status: "signal 9".into(),
            requested,
            uptime_ms: Some(61_500),
        }
    }

    #[test]
    fn every_trigger_name_reads_back_and_unknown_names_do_not() {
        for t in Trigger::ALL {
            assert_eq!(Trigger::from_name(t.as_str()), Some(t));
        }
        assert_eq!(Trigger::from_name("task_completed"), None);
        assert_eq!(Trigger::from_name("TASK_FAILED"), None);
    }

    #[test]
    fn only_the_events_that_need_a_person_are_triggers() {
        assert_eq!(
            Trigger::of(&ev(Some("t"), None, failed("x"))),
            Some(Trigger::TaskFailed)
        );
        let not_claimed = event::TaskFailed::NotClaimed {
            claimed: false,
            error: "gone".into(),
        };
        assert_eq!(Trigger::of(&ev(Some("t"), None, not_claimed)), None);
        assert_eq!(
            Trigger::of(&ev(None, Some("s"), exited(false))),
            Some(Trigger::SessionDead)
        );
        // A stop on request (the daemon stopping, a session replaced) is no death.
        assert_eq!(Trigger::of(&ev(None, Some("s"), exited(true))), None);
        let dead_state = event::SessionState {
            state: "dead".into(),
            previous: Some("busy".into()),
            reason: None,
        };
        assert_eq!(Trigger::of(&ev(None, Some("s"), dead_state)), None);
        assert_eq!(
            Trigger::of(&ev(
                None,
                None,
                event::NodeAdopted {
                    node: "b".into(),
                    epoch: 2,
                    tasks: 3,
                    silent_ms: 3000
                }
            )),
            Some(Trigger::NodeDead)
        );
        assert_eq!(
            Trigger::of(&ev(Some("t"), None, event::TaskCancelled { attempts: 1 })),
            None
        );
    }

    #[test]
    fn the_dedup_key_names_what_the_event_is_about() {
        let a = Trigger::TaskFailed.dedup_key(&ev(Some("t1"), Some("s"), failed("x")));
        let b = Trigger::TaskFailed.dedup_key(&ev(Some("t1"), Some("s2"), failed("y")));
        let c = Trigger::TaskFailed.dedup_key(&ev(Some("t2"), Some("s"), failed("x")));
        assert_eq!(a, "task_failed:t1");
        assert_eq!(a, b, "the same task, whatever the error");
        assert_ne!(a, c);
        let d = Trigger::SessionDead.dedup_key(&ev(Some("t1"), Some("s"), exited(false)));
        assert_eq!(d, "session_dead:s");
        assert_eq!(
            summary(&ev(Some("t1"), Some("s"), exited(false))),
            "[n1] session s died (signal 9) after 61 s during task t1; it is restarted"
        );
    }

    #[test]
    fn a_summary_is_one_readable_line_without_secrets() {
        let secret = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH";
        let s = summary(&ev(
            Some("t1"),
            Some("sh-1"),
            failed(&format!("curl -H 'Authorization: Bearer {secret}'\nexit 1")),
        ));
        assert!(
            s.starts_with("[n1] task t1 failed on session sh-1 after 2 attempt(s): curl"),
            "{s}"
        );
        assert!(!s.contains(secret), "{s}");
        assert!(!s.contains('\n'), "{s}");
        let asked = summary(&ev(
            Some("t1"),
            Some("agent-1"),
            event::ApprovalNeeded {
                question: "q7".into(),
                permission: "bash".into(),
                kind: crate::profile::ActionKind::Command,
                action: Some("npm install left-pad".into()),
                tool: None,
                rule: "escalate.install".into(),
                reason: "installs code".into(),
            },
        ));
        assert_eq!(
            asked,
            "[n1] approval needed on session agent-1: command `npm install left-pad` (rule \
             escalate.install); answer with: architect approve|deny agent-1 --question q7"
        );
        let long = summary(&ev(Some("t1"), None, failed(&"x".repeat(1000))));
        assert_eq!(long.chars().count(), SUMMARY_MAX_CHARS);
        assert!(long.ends_with('…'));
    }
}
