//! Delivery on shell sessions, through the real binary and real bash: a task ends only at
//! its own command-finished mark (OSC 133, from the session's shell integration), with
//! that mark's exit status; quiet commands, fake prompts and forged marks change nothing;
//! locks and worktree branches are held until the command really ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use architect::log::event::PromptAccepted;
use architect::spool::task::{AttemptOutcome, TaskState};

use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(60);

const TWO_SHELLS: &str = "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\n\
[[session]]\nname = \"sh-2\"\nprofile = \"shell\"\n";

/// Seconds since the epoch, as the witness files write them (`date +%s.%N`).
fn read_witness(path: &Path) -> Vec<(String, f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut starts = std::collections::HashMap::new();
    let mut spans = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() != 3 {
            continue;
        }
        let t: f64 = parts[2].parse().unwrap();
        match parts[1] {
            "start" => {
                starts.insert(parts[0].to_string(), t);
            }
            "end" => {
                let s = starts.remove(parts[0]).expect("start before end");
                spans.push((parts[0].to_string(), s, t));
            }
            _ => {}
        }
    }
    spans
}

#[test]
fn a_quiet_failing_command_fails_with_its_status_after_it_really_ended() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let started = Instant::now();
    env.drop_task("q.json", r#"{"id": "q", "prompt": "sleep 3; false"}"#);
    let (state, rec) = env.wait_final("q", T);
    let took = started.elapsed();
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    assert!(took >= Duration::from_secs(3), "ended after {took:?}");
    let result = rec.result.unwrap();
    assert_eq!(result.exit_status, Some(1));
    assert_eq!(rec.error.as_deref(), Some("exit status 1"));
    // The next task gets its own status and output, not the previous one's.
    env.drop_task(
        "n.json",
        r#"{"id": "n", "prompt": "sleep 3; echo late-output"}"#,
    );
    let (state, rec) = env.wait_final("n", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let r = rec.result.unwrap();
    assert_eq!((r.output.as_str(), r.exit_status), ("late-output", Some(0)));
    let accepted = env.events_of::<PromptAccepted>();
    assert!(
        accepted
            .iter()
            .all(|e| e.data.evidence == "mark:command_start"),
        "{accepted:?}"
    );
}

#[test]
fn exit_in_a_task_reports_its_own_status_and_the_shell_comes_back() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "x.json",
        r#"{"id": "x", "prompt": "sleep 6; exit 3", "max_retries": 0}"#,
    );
    let (state, rec) = env.wait_final("x", T);
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    assert_eq!(rec.result.unwrap().exit_status, Some(3));
    assert_eq!(rec.attempts[0].outcome, AttemptOutcome::Failed);
    env.drop_task("after.json", r#"{"id": "after", "prompt": "echo back"}"#);
    assert_eq!(env.wait_final("after", T).0, TaskState::Done);
}

#[test]
fn fake_prompts_and_forged_marks_in_the_output_do_not_end_a_task() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    let prompt = r"printf '[0] architect$ \n'; printf '\033]133;D;0\007\033]133;A\007\033]133;D;0;architect=0000\007'; sleep 2; echo real-end; false";
    let body = serde_json::json!({"id": "f", "prompt": prompt}).to_string();
    env.drop_task("f.json", &body);
    let (state, rec) = env.wait_final("f", T);
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    let r = rec.result.unwrap();
    assert_eq!(r.exit_status, Some(1));
    assert!(r.output.ends_with("real-end"), "{:?}", r.output);
    assert!(r.output.starts_with("[0] architect$"), "{:?}", r.output);
}

#[test]
fn a_silent_command_keeps_its_lock_until_it_ends_as_witness_files_show() {
    let env = Env::new(TWO_SHELLS);
    let _d = env.daemon();
    let witness = env.path("witness.log");
    let w = witness.display();
    for (id, secs) in [("long", 4), ("short", 1), ("third", 1)] {
        let prompt = format!(
            "echo {id} start $(date +%s.%N) >> {w}; sleep {secs}; echo {id} end $(date +%s.%N) >> {w}"
        );
        let body =
            serde_json::json!({"id": id, "prompt": prompt, "locks": {"paths": ["src/db.rs"]}})
                .to_string();
        env.drop_task(&format!("{id}.json"), &body);
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in ["long", "short", "third"] {
        assert_eq!(env.wait_final(id, T).0, TaskState::Done, "{id}");
    }
    let mut spans = read_witness(&witness);
    assert_eq!(spans.len(), 3, "{spans:?}");
    spans.sort_by(|a, b| a.1.total_cmp(&b.1));
    for pair in spans.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "{} started at {} before {} ended at {}",
            pair[1].0,
            pair[1].1,
            pair[0].0,
            pair[0].2
        );
    }
}

#[test]
fn two_hundred_quiet_and_chatty_tasks_each_get_their_own_output_and_status() {
    let env = Env::new(TWO_SHELLS);
    let _d = env.daemon();
    let n = 200;
    for i in 0..n {
        let prompt = if i % 2 == 0 {
            format!("sleep 0.2; echo quiet-{i}; (exit {})", i % 5)
        } else {
            format!(
                "for j in $(seq 1 40); do echo chatty-{i}-$j; done; (exit {})",
                i % 5
            )
        };
        let body = serde_json::json!({"id": format!("t{i:03}"), "prompt": prompt}).to_string();
        env.drop_task(&format!("t{i:03}.json"), &body);
    }
    for i in 0..n {
        let id = format!("t{i:03}");
        let (state, rec) = env.wait_final(&id, Duration::from_secs(180));
        let want = i % 5;
        let r = rec
            .result
            .clone()
            .unwrap_or_else(|| panic!("{id}: {rec:?}"));
        assert_eq!(r.exit_status, Some(want), "{id}: {rec:?}");
        assert_eq!(
            state,
            if want == 0 {
                TaskState::Done
            } else {
                TaskState::Failed
            },
            "{id}"
        );
        if i % 2 == 0 {
            assert_eq!(r.output, format!("quiet-{i}"), "{id}");
        } else {
            let lines: Vec<&str> = r.output.lines().collect();
            assert_eq!(lines.len(), 40, "{id}: {:?}", r.output);
            assert_eq!(lines[0], format!("chatty-{i}-1"));
            assert_eq!(lines[39], format!("chatty-{i}-40"));
        }
        assert_eq!(rec.attempts.len(), 1, "{id}: each ran once");
    }
}

fn processes_running(cmdline: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmdline)
        })
        .count()
}

#[test]
fn a_hang_past_its_timeout_is_interrupted_retried_and_its_process_is_gone() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    env.drop_task(
        "h.json",
        r#"{"id": "h", "prompt": "sleep 4321", "timeout_s": 5, "max_retries": 1}"#,
    );
    let (state, rec) = env.wait_final("h", T);
    assert_eq!(state, TaskState::Failed, "{rec:?}");
    assert_eq!(rec.attempts.len(), 2);
    assert!(rec
        .attempts
        .iter()
        .all(|a| a.outcome == AttemptOutcome::TimedOut));
    for a in &rec.attempts {
        let ran = a.finished_at - a.started_at;
        assert!(ran >= chrono::Duration::seconds(5), "{a:?}");
    }
    wait_for("the sleep to be gone", T, || {
        processes_running("sleep 4321") == 0
    });
    // The next task runs for real, with its own output.
    env.drop_task(
        "after.json",
        r#"{"id": "after", "prompt": "echo after-hang"}"#,
    );
    let (state, rec) = env.wait_final("after", T);
    assert_eq!(state, TaskState::Done);
    assert_eq!(rec.result.unwrap().output, "after-hang");
}

#[test]
fn a_multi_line_prompt_runs_as_written_and_tabs_survive() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    let marker = env.path("marker");
    let prompt = format!(
        "# step 1\ntouch {}\nprintf 'a\\tb\\n'\nprintf 'col1\\tcol2\\n'",
        marker.display()
    );
    let body = serde_json::json!({"id": "m", "prompt": prompt}).to_string();
    env.drop_task("m.json", &body);
    let (state, rec) = env.wait_final("m", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    assert!(marker.exists(), "the second line ran");
    assert_eq!(rec.result.unwrap().output, "a\tb\ncol1\tcol2");
    // A prompt that is only a comment runs nothing and says so.
    env.drop_task(
        "c.json",
        r##"{"id": "c", "prompt": "# nothing here", "max_retries": 0}"##,
    );
    let (state, rec) = env.wait_final("c", T);
    assert_eq!(state, TaskState::Failed);
    assert!(rec.error.unwrap().contains("nothing ran"));
    // An incomplete one is interrupted and rejected with the reason.
    env.drop_task(
        "i.json",
        r#"{"id": "i", "prompt": "if true", "max_retries": 0}"#,
    );
    let (state, rec) = env.wait_final("i", T);
    assert_eq!(state, TaskState::Failed);
    assert!(rec.error.unwrap().contains("incomplete"));
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
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

#[test]
fn a_worktree_task_with_a_quiet_middle_leaves_all_its_work_on_its_branch() {
    let env = Env::new(
        "[[session]]\nname = \"wt-1\"\nprofile = \"shell\"\nworktree = true\nrepo = \"proj\"\n\
         env = { GIT_CONFIG_GLOBAL = \"/dev/null\", GIT_AUTHOR_NAME = \"t\", GIT_AUTHOR_EMAIL = \"t@t\", GIT_COMMITTER_NAME = \"t\", GIT_COMMITTER_EMAIL = \"t@t\" }\n",
    );
    let proj = env.path("proj");
    std::fs::create_dir_all(&proj).unwrap();
    git(&proj, &["init", "-q", "-b", "main"]);
    std::fs::write(proj.join("README"), "hello\n").unwrap();
    git(&proj, &["add", "README"]);
    git(&proj, &["commit", "-q", "-m", "initial"]);
    let _d = env.daemon();
    env.drop_task(
        "w.json",
        r#"{"id": "w", "prompt": "echo one > a.txt; sleep 4; echo two > b.txt", "locks": {"branch": "feature/y"}}"#,
    );
    let (state, rec) = env.wait_final("w", T);
    assert_eq!(state, TaskState::Done, "{rec:?}");
    let on_branch = git(&proj, &["ls-tree", "--name-only", "feature/y"]);
    assert!(on_branch.lines().any(|l| l == "a.txt"), "{on_branch}");
    assert!(on_branch.lines().any(|l| l == "b.txt"), "{on_branch}");
    let own = git(&proj, &["ls-tree", "--name-only", "architect/wt-1"]);
    assert!(!own.lines().any(|l| l == "b.txt"), "b.txt leaked: {own}");
}
