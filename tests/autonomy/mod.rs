//! Auto-confirm through the real daemon and a real PTY: the fake agent asks permission for
//! commands; the policy allows the safe one, denies the dangerous one, escalates the rest
//! to `architect approve|deny`; every decision is logged with its rule.

use std::time::Duration;

use architect::log::event::{ApprovalNeeded, ConfigApplied, PermissionDecided};
use architect::session::approval::DecidedBy;
use architect::session::SessionState;
use architect::spool::task::TaskState;

use crate::helper::{fake_agent_session, wait_for, Env};

const T: Duration = Duration::from_secs(30);

fn decisions(env: &Env, task: &str) -> Vec<(String, String, String, String)> {
    env.events_of::<PermissionDecided>()
        .into_iter()
        .filter(|e| e.task_id.as_deref() == Some(task))
        .map(|e| {
            let d = e.data;
            let by = match d.by {
                DecidedBy::Policy => "policy",
                DecidedBy::Person => "person",
            };
            (
                d.action.unwrap_or_default(),
                d.decision.as_str().to_string(),
                d.rule,
                by.to_string(),
            )
        })
        .collect()
}

#[test]
fn policy_allows_denies_and_escalates_and_a_person_answers() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task(
        "t1.json",
        r#"{"id": "t1", "prompt": "fix it run: touch notes.txt run: sudo rm -rf / run: npm install left-pad"}"#,
    );
    // The third question is neither allowed nor denied: it waits for a person.
    env.wait_approval("agent-1", T);
    let s = env.session("agent-1").unwrap();
    assert_eq!(s.state, SessionState::WaitingInput);
    let pending = s.approval.unwrap();
    assert_eq!(
        pending.question.action.as_deref(),
        Some("npm install left-pad")
    );
    assert!(pending.rule.starts_with("escalate."), "{}", pending.rule);
    let needed = env.events_of::<ApprovalNeeded>();
    assert_eq!(needed.len(), 1);
    assert_eq!(
        needed[0].data.action.as_deref(),
        Some("npm install left-pad")
    );
    let listed = env.ok(&["sessions"]);
    assert!(listed.contains("approve? npm install left-pad"), "{listed}");
    assert!(
        listed.contains(&format!(
            "architect approve agent-1 --question {}",
            pending.id
        )),
        "{listed}"
    );

    let out = env.ok(&["deny", "agent-1", "--question", &pending.id]);
    assert!(out.contains("deny: npm install left-pad"), "{out}");
    let (state, rec) = env.wait_final("t1", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let output = rec.result.unwrap().output;
    for line in [
        "● ran: touch notes.txt",
        "● denied: sudo rm -rf /",
        "● denied: npm install left-pad",
        "● done: fix it",
    ] {
        assert!(output.contains(line), "{line:?} missing in:\n{output}");
    }
    let d = decisions(&env, "t1");
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(
        (d[0].0.as_str(), d[0].1.as_str(), d[0].3.as_str()),
        ("touch notes.txt", "allow", "policy")
    );
    assert!(d[0].2.starts_with("allow."), "{d:?}");
    assert_eq!(
        (d[1].0.as_str(), d[1].1.as_str(), d[1].3.as_str()),
        ("sudo rm -rf /", "deny", "policy")
    );
    assert!(d[1].2.starts_with("deny."), "{d:?}");
    assert_eq!(
        (
            d[2].0.as_str(),
            d[2].1.as_str(),
            d[2].2.as_str(),
            d[2].3.as_str()
        ),
        ("npm install left-pad", "deny", "person", "person")
    );
    wait_for("the session file to drop the answered question", T, || {
        env.session("agent-1").is_some_and(|s| s.approval.is_none())
    });

    // Nothing is waiting now: approve is refused with a clear error.
    let out = env.cli(&["approve", "agent-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not waiting for an approval"));

    // The same question approved by a person runs.
    env.drop_task(
        "t2.json",
        r#"{"id": "t2", "prompt": "again run: npm install left-pad"}"#,
    );
    let id = env.wait_approval("agent-1", T).id;
    env.ok(&["approve", "agent-1", "--question", &id]);
    let (state, rec) = env.wait_final("t2", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert!(rec
        .result
        .unwrap()
        .output
        .contains("● ran: npm install left-pad"));
    let d = decisions(&env, "t2");
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].1.as_str(), d[0].3.as_str()), ("allow", "person"));
}

#[test]
fn a_policy_edit_applies_live() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    // Allow npm install from now on (the built-in sections stay as they are).
    env.write_config(
        "policy.toml",
        &format!(
            "{}\n[[allow]]\nname = \"npm-install\"\nprograms = [\"npm\"]\nsubcommands = [\"install\"]\npaths = \"any\"\nreason = \"this project trusts npm\"\n",
            architect::policy::DEFAULT_POLICY
        ),
    );
    wait_for("the config reload", T, || {
        !env.events_of::<ConfigApplied>().is_empty()
    });
    env.drop_task(
        "t.json",
        r#"{"id": "t", "prompt": "deps run: npm install left-pad"}"#,
    );
    let (state, rec) = env.wait_final("t", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let d = decisions(&env, "t");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].1.as_str(), d[0].2.as_str()),
        ("allow", "allow.npm-install")
    );
}

#[test]
fn an_approval_answers_only_the_question_the_person_read() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    env.drop_task(
        "two.json",
        r#"{"id": "two", "prompt": "deps run: npm install left-pad run: npm install evil-pkg"}"#,
    );
    let open = |env: &Env| env.session("agent-1").and_then(|s| s.approval);
    wait_for("the first question", T, || open(&env).is_some());
    let first = open(&env).unwrap();
    assert_eq!(
        first.question.action.as_deref(),
        Some("npm install left-pad")
    );
    // Without the id nothing is answered, and the error says what is open.
    let out = env.cli(&["approve", "agent-1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&first.id) && err.contains("npm install left-pad"),
        "{err}"
    );
    env.ok(&["approve", "agent-1", "--question", &first.id]);
    wait_for("the second question", T, || {
        open(&env).is_some_and(|q| q.id != first.id)
    });
    let second = open(&env).unwrap();
    assert_eq!(
        second.question.action.as_deref(),
        Some("npm install evil-pkg")
    );
    // A second approve of what the person read (the first question) approves nothing.
    let out = env.cli(&["approve", "agent-1", "--question", &first.id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no longer open") && err.contains("npm install evil-pkg"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        open(&env).map(|q| q.id),
        Some(second.id.clone()),
        "still waiting"
    );
    env.ok(&["deny", "agent-1", "--question", &second.id]);
    let (state, rec) = env.wait_final("two", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let output = rec.result.unwrap().output;
    assert!(output.contains("● ran: npm install left-pad"), "{output}");
    assert!(
        output.contains("● denied: npm install evil-pkg"),
        "{output}"
    );
}

/// Code-running forms through the fake agent's permission dialog: the policy denies the
/// ones it must, escalates the others to a person, and nothing runs.
#[test]
fn code_running_forms_are_refused_through_the_dialog() {
    let env = Env::new(&fake_agent_session("agent-1", &["--work-ms", "50"]));
    // The session works in the config directory's parent: give it a nested repository
    // and an agent-written bare one whose config would run a program.
    let wt = env.config.parent().unwrap();
    for d in ["sub/.git", "evil/objects", "evil/refs"] {
        std::fs::create_dir_all(wt.join(d)).unwrap();
    }
    std::fs::write(wt.join("sub/.git/config"), "[core]\n").unwrap();
    std::fs::write(wt.join("evil/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(
        wt.join("evil/config"),
        "[core]\n\tfsmonitor = touch pwned\n",
    )
    .unwrap();
    let _d = env.daemon();
    env.wait_idle("agent-1", T);
    // Every form of the audit, as the fake agent asks about it: commands (`run:`), file
    // edits (`edit:`) and fetches (`fetch:`).
    let denied = [
        ("run", "printf -v PATH /tmp/evil", "deny.env-exec"),
        (
            "run",
            "printf -v PROMPT_COMMAND 'touch pwned'",
            "deny.env-exec",
        ),
        ("run", "git branch -D main", "deny.git-destructive"),
        ("run", "git branch -f main HEAD~3", "deny.git-destructive"),
        ("run", "git checkout -f main", "deny.git-destructive"),
        (
            "run",
            "git reflog expire --expire=now --all",
            "deny.git-destructive",
        ),
        ("run", "echo x > sub/.git/config", "deny.write-git-dir"),
        ("run", "[[ 'a[$(sudo x)]' -eq 0 ]]", "deny.sudo"),
        ("edit", "sub/.git/config", "deny.write-git-dir"),
        ("edit", "evil/config", "deny.write-git-dir"),
    ];
    let escalated = [
        (
            "run",
            "git --git-dir=evil status",
            "escalate.git-other-repo",
        ),
        (
            "run",
            "git --git-dir=./evil --work-tree=. status",
            "escalate.git-other-repo",
        ),
        ("run", "git -C evil log", "escalate.git-other-repo"),
        ("run", "cd evil && git status", "escalate.git-other-repo"),
        ("run", "[[ 'a[$(id)]' -eq 0 ]]", "escalate.arithmetic"),
        ("run", "test -v 'a[$(id)]'", "escalate.arithmetic"),
        ("run", "[ -v 'a[$(id)]' ]", "escalate.arithmetic"),
        ("run", "printf -v 'a[$(id)]' x", "escalate.arithmetic"),
        ("run", "date -s 2030-01-01", "escalate.not-allowed"),
        ("run", "date -f /etc/passwd", "escalate.not-allowed"),
        ("run", "git stash clear", "escalate.git-destructive"),
        ("run", "echo x > .npmrc", "escalate.code-config"),
        ("edit", ".cargo/config.toml", "escalate.code-config"),
        ("fetch", r"https://evil.com\@docs.rs/", "escalate.fetch"),
    ];
    let prompt: String = denied
        .iter()
        .chain(&escalated)
        .map(|(verb, c, _)| format!(" {verb}: {c}"))
        .collect();
    let task = serde_json::json!({"id": "forms", "prompt": format!("audit{prompt}")});
    env.drop_task("forms.json", &task.to_string());
    // The policy answers the denied ones; each of the others waits for a person.
    for (_, cmd, rule) in escalated {
        wait_for(cmd, T, || {
            env.session("agent-1")
                .and_then(|s| s.approval)
                .is_some_and(|a| a.question.action.as_deref() == Some(cmd))
        });
        let pending = env.session("agent-1").unwrap().approval.unwrap();
        assert_eq!(pending.rule, rule, "{cmd}: {pending:?}");
        env.ok(&["deny", "agent-1", "--question", &pending.id]);
    }
    let (state, rec) = env.wait_final("forms", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let output = rec.result.unwrap().output;
    for done in ["● ran:", "● edited:", "● fetched:"] {
        assert!(!output.contains(done), "something ran:\n{output}");
    }
    for (_, cmd, _) in denied.iter().chain(&escalated) {
        assert!(
            output.contains(&format!("● denied: {cmd}")),
            "{cmd:?} not denied in:\n{output}"
        );
    }
    let d = decisions(&env, "forms");
    let want: Vec<(String, String, String, String)> = denied
        .iter()
        .map(|(_, c, r)| (c.to_string(), "deny".into(), r.to_string(), "policy".into()))
        .chain(escalated.iter().map(|(_, c, _)| {
            (
                c.to_string(),
                "deny".into(),
                "person".into(),
                "person".into(),
            )
        }))
        .collect();
    assert_eq!(d, want);
    assert!(!wt.join("pwned").exists());
}
