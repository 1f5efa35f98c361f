//! Sessions with `worktree = true` through the real daemon: each runs in a git worktree of
//! its own, on the task's branch while a task runs (work left uncommitted is committed
//! there when it switches back), never on a protected branch, and worktrees of removed
//! sessions are cleaned up at start-up.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use architect::log::event::WorktreesReconciled;
use architect::spool::task::TaskState;
use architect::worktree::Prepared;

use crate::helper::{wait_for, Env};

const T: Duration = Duration::from_secs(30);

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sessions(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "[[session]]\nname = \"{n}\"\nprofile = \"shell\"\nworktree = true\nrepo = \"proj\"\nenv = {{ GIT_CONFIG_GLOBAL = \"/dev/null\", GIT_AUTHOR_NAME = \"t\", GIT_AUTHOR_EMAIL = \"t@t\", GIT_COMMITTER_NAME = \"t\", GIT_COMMITTER_EMAIL = \"t@t\" }}\n"
            )
        })
        .collect()
}

#[test]
fn worktree_sessions_work_on_task_branches_and_are_reconciled() {
    let env = Env::new(&sessions(&["wt-1", "wt-2"]));
    let proj = env.path("proj");
    std::fs::create_dir_all(&proj).unwrap();
    git(&proj, &["init", "-q", "-b", "main"]);
    std::fs::write(proj.join("README"), "hello\n").unwrap();
    git(&proj, &["add", "README"]);
    git(&proj, &["commit", "-q", "-m", "initial"]);

    let d = env.daemon();
    env.wait_idle("wt-1", T);
    env.wait_idle("wt-2", T);
    // Each session runs in its own worktree, on its own branch.
    env.drop_task(
        "a.json",
        r#"{"id": "a", "session": "wt-1", "prompt": "git rev-parse --abbrev-ref HEAD; pwd"}"#,
    );
    let (state, rec) = env.wait_final("a", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let out = rec.result.unwrap().output;
    let wt1 = proj
        .join(".architect/worktrees/wt-1")
        .canonicalize()
        .unwrap();
    assert_eq!(out, format!("architect/wt-1\n{}", wt1.display()));

    // A task with a branch runs on it; what it leaves uncommitted is saved on that branch.
    env.drop_task(
        "b.json",
        r#"{"id": "b", "session": "wt-2", "prompt": "git rev-parse --abbrev-ref HEAD; echo work > made.txt", "locks": {"branch": "feature/x"}}"#,
    );
    let (state, rec) = env.wait_final("b", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.result.unwrap().output, "feature/x");
    let wt2 = proj.join(".architect/worktrees/wt-2");
    assert_eq!(
        git(&wt2, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "architect/wt-2"
    );
    assert_eq!(git(&proj, &["show", "feature/x:made.txt"]), "work");
    let prepared = env.events_of::<Prepared>();
    assert!(
        prepared.iter().any(|e| e
            .data
            .saved
            .as_ref()
            .is_some_and(|s| s.branch == "feature/x")),
        "{prepared:?}"
    );
    // The same branch, now free, can go to the other session.
    env.drop_task(
        "c.json",
        r#"{"id": "c", "session": "wt-1", "prompt": "cat made.txt", "locks": {"branch": "feature/x"}}"#,
    );
    let (state, rec) = env.wait_final("c", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert_eq!(rec.result.unwrap().output, "work");
    // A protected branch is refused at intake.
    env.drop_task("p.json", r#"{"prompt": "x", "locks": {"branch": "main"}}"#);
    let report = env.spool.join("rejected/p.json.error.json");
    wait_for("the protected branch to be rejected", T, || report.exists());

    // wt-2 is removed from the config while the daemon is down: its worktree goes at the
    // next start (clean, so nothing to save), and its empty branch with it.
    drop(d);
    env.write_config("sessions.toml", &sessions(&["wt-1"]));
    let _d = env.daemon();
    env.wait_idle("wt-1", T);
    wait_for("the reconcile event", T, || {
        !env.events_of::<WorktreesReconciled>().is_empty()
    });
    assert!(!wt2.exists(), "the removed session's worktree is gone");
    let branches = git(&proj, &["branch", "--format=%(refname:short)"]);
    assert!(
        !branches.lines().any(|b| b == "architect/wt-2"),
        "{branches}"
    );
    assert!(branches.lines().any(|b| b == "feature/x"), "{branches}");
}
