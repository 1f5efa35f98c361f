//! Auto-confirm: answering an agent's permission questions from the command policy.
//!
//! When a session's screen reads `waiting_input` and one of its profile's
//! `[[permission]]` rules sees a question ([`crate::profile::Profile::permission_request`]),
//! the requested action is checked against `config/policy.toml` ([`crate::policy`]):
//! `allow` types the rule's `yes` key, `deny` its `no` key, and anything else leaves the
//! question on screen for `architect approve|deny <session>`. The decision is never made
//! on a substring of the screen: the action read off the dialog is parsed by the policy,
//! and an action that cannot be read exactly — not read at all, or read as several rows
//! (a wrapped or multi-line command, whose row breaks cannot be told from real newlines)
//! — is escalated.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::{Action, Context, Decision, Policy, Verdict};
use crate::profile::{ActionKind, PermissionRequest};

// Who answered, a plain data type the `permission_decided` event carries.
pub use crate::types::DecidedBy;

/// What the auto-confirm of a session needs: the policy and where the session works.
#[derive(Debug, Clone)]
pub struct Approvals {
    /// The loaded policy.
    pub policy: Arc<Policy>,
    /// Branches no push may update (from `[git] protected_branches`).
    pub protected_branches: Vec<String>,
}

/// A permission question as logged and shown in `sessions/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The profile's `[[permission]]` rule that saw it (`bash`, `edit`, …).
    pub permission: String,
    /// What it asks for.
    pub kind: ActionKind,
    /// The requested action as read off the screen (`None`: not readable).
    #[serde(default)]
    pub action: Option<String>,
    /// The tool's name, for `kind = "tool"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

impl Question {
    /// The question for a request read off the screen.
    #[must_use]
    pub fn from_request(req: &PermissionRequest) -> Self {
        Self {
            permission: req.name.clone(),
            kind: req.kind,
            action: req.action.clone(),
            tool: req.tool.clone(),
        }
    }
}

/// Decides a question: the policy's verdict, or an escalation when the action cannot be
/// read exactly. `worktree` is the session's working directory, `home` its `HOME`.
#[must_use]
pub fn decide(
    approvals: &Approvals,
    question: &Question,
    worktree: PathBuf,
    home: PathBuf,
    profile: &str,
) -> Verdict {
    let Some(text) = question.action.as_deref() else {
        return Verdict {
            decision: Decision::Escalate,
            rule: "escalate.unreadable".into(),
            reason: "the requested action could not be read off the screen".into(),
        };
    };
    if text.contains('\n') {
        return Verdict {
            decision: Decision::Escalate,
            rule: "escalate.multi-row".into(),
            reason: "the action spans several screen rows (wrapped or multi-line); its exact \
                     text cannot be known, so a person decides"
                .into(),
        };
    }
    check(approvals, question, text, worktree, home, profile)
}

/// Decides a question whose action is known exactly (from a hook, not read off a
/// screen): only an unknown action is escalated before the policy sees it; a command of
/// several lines is parsed as the policy parses any command line.
#[must_use]
pub fn decide_exact(
    approvals: &Approvals,
    question: &Question,
    worktree: PathBuf,
    home: PathBuf,
    profile: &str,
) -> Verdict {
    let Some(text) = question.action.as_deref() else {
        return Verdict {
            decision: Decision::Escalate,
            rule: "escalate.unreadable".into(),
            reason: "the hook did not say what the tool would do".into(),
        };
    };
    check(approvals, question, text, worktree, home, profile)
}

fn check(
    approvals: &Approvals,
    question: &Question,
    text: &str,
    worktree: PathBuf,
    home: PathBuf,
    profile: &str,
) -> Verdict {
    let action = match question.kind {
        ActionKind::Command => Action::Command(text.to_string()),
        ActionKind::Edit => Action::Edit(PathBuf::from(text)),
        ActionKind::Read => Action::Read(PathBuf::from(text)),
        ActionKind::Fetch => Action::Fetch(text.to_string()),
        ActionKind::Tool => Action::Tool {
            name: question
                .tool
                .clone()
                .unwrap_or_else(|| question.permission.clone()),
            input: text.to_string(),
        },
    };
    let ctx = Context {
        worktree,
        home,
        protected_branches: approvals.protected_branches.clone(),
        profile: Some(profile.to_string()),
    };
    approvals.policy.check(&action, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approvals() -> Approvals {
        Approvals {
            policy: Arc::new(Policy::builtin()),
            protected_branches: vec!["main".into()],
        }
    }

    fn q(kind: ActionKind, action: Option<&str>) -> Question {
        Question {
            permission: "bash".into(),
            kind,
            action: action.map(String::from),
            tool: None,
        }
    }

    #[test]
    fn unreadable_and_multi_row_actions_are_escalated() {
        let a = approvals();
        let wt = std::env::temp_dir();
        let v = decide(
            &a,
            &q(ActionKind::Command, None),
            wt.clone(),
            "/root".into(),
            "x",
        );
        assert_eq!(v.decision, Decision::Escalate);
        // Each row alone would be allowed; together they are not known.
        let v = decide(
            &a,
            &q(ActionKind::Command, Some("ls\nls")),
            wt,
            "/root".into(),
            "x",
        );
        assert_eq!(
            (v.decision, v.rule.as_str()),
            (Decision::Escalate, "escalate.multi-row")
        );
    }

    #[test]
    fn the_policy_decides_readable_actions() {
        let a = approvals();
        let wt = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let check = |kind, action: &str| {
            decide(
                &a,
                &q(kind, Some(action)),
                wt.path().to_path_buf(),
                home.path().to_path_buf(),
                "claude-code",
            )
            .decision
        };
        assert_eq!(
            check(ActionKind::Command, "touch made-by-agent.txt"),
            Decision::Allow
        );
        assert_eq!(check(ActionKind::Command, "sudo rm -rf /"), Decision::Deny);
        assert_eq!(
            check(ActionKind::Command, "npm install left-pad"),
            Decision::Escalate
        );
        assert_eq!(check(ActionKind::Read, "~/.ssh/id_rsa"), Decision::Deny);
        assert_eq!(check(ActionKind::Edit, "/etc/passwd"), Decision::Deny);
    }
}
