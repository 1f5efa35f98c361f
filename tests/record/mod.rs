//! Recordings through the real binary: a task on a shell session is recorded in
//! asciicast v2, the file is checked against the format's spec (read here with plain
//! JSON, not with architect's reader) and by asciinema itself, and `architect replay`
//! plays it back; the cap and `enabled = false` hold; `replay` finds a recording that
//! another node of a fleet wrote.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use architect::spool::task::TaskState;

use crate::helper::{wait_for, Env, FAST, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

/// A task whose output is not its own command line: the shell computes 42 and prints
/// "é" from an octal escape, so the text appears only if the command ran.
const PROMPT: &str = r"printf 'recorded %s h\303\251llo\n' $((6*7))";
const PRINTED: &str = "recorded 42 héllo";

/// The events of an asciicast v2 file, checked against the spec
/// (<https://docs.asciinema.org/manual/asciicast/v2/>): a header object with `version`
/// 2, integer `width` and `height`, then `[time, code, data]` arrays with a number ≥ 0,
/// one of the codes `o`, `i`, `r`, `m`, and a string. Returns the header and the events.
fn read_spec(path: &Path) -> (serde_json::Value, Vec<(f64, String, String)>) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.ends_with('\n'),
        "a closed recording ends with a newline"
    );
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert!(header["width"].as_u64().is_some_and(|w| w > 0), "{header}");
    assert!(header["height"].as_u64().is_some_and(|h| h > 0), "{header}");
    assert!(header["timestamp"].as_i64().is_some(), "{header}");
    let events: Vec<(f64, String, String)> = lines
        .map(|l| {
            let e: (f64, String, String) =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            assert!(e.0 >= 0.0, "{l}");
            assert!(["o", "i", "r", "m"].contains(&e.1.as_str()), "{l}");
            e
        })
        .collect();
    (header, events)
}

fn output_of(events: &[(f64, String, String)]) -> String {
    events
        .iter()
        .filter(|e| e.1 == "o")
        .map(|e| e.2.as_str())
        .collect()
}

fn casts_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "cast"));
    v.sort();
    v
}

/// What `asciinema cat FILE` prints (asciinema 2.2, the Debian package: `.ci/run`
/// installs it).
fn asciinema_cat(env: &Env, file: &Path) -> String {
    let out = env.path("asciinema-cat.out");
    let shell = format!("asciinema cat '{}' > '{}'", file.display(), out.display());
    let run = Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux)");
    assert!(
        run.status.success(),
        "asciinema cat failed (is asciinema installed? apt-get install asciinema): {run:?}"
    );
    std::fs::read_to_string(out).unwrap()
}

fn run_task(env: &Env, id: &str, prompt: &str) {
    env.ok(&["submit", "--id", id, "--prompt", prompt]);
    let (state, _) = env.wait_final(id, T);
    assert_eq!(state, TaskState::Done);
}

#[test]
fn a_task_is_recorded_in_asciicast_v2_and_replays_its_output() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    run_task(&env, "rec-1", PROMPT);
    let file = env.spool.join("recordings").join("rec-1.cast");
    // Written by the recorder thread once the task ends (closed, so flushed).
    wait_for("the task's recording", T, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("recorded 42"))
    });
    let (header, events) = read_spec(&file);
    assert_eq!(header["title"], "sh-1: task rec-1");
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    assert!(!events.is_empty());
    assert!(
        events.windows(2).all(|w| w[0].0 <= w[1].0),
        "events in time order"
    );
    let output = output_of(&events);
    assert!(output.contains(PRINTED), "{output:?}");

    // Played back at once, and with its timing at 100x.
    let printed = env.ok(&["replay", "rec-1", "--print"]);
    assert_eq!(printed, output);
    let played = env.ok(&["replay", "rec-1", "--speed", "100", "--idle-cap", "0.5"]);
    assert!(played.contains(PRINTED), "{played:?}");

    // asciinema itself reads the file and prints the same output. Its `cat` puts
    // /dev/tty in raw mode, so it runs under `script` (a terminal of its own), its output
    // sent to a file.
    assert_eq!(asciinema_cat(&env, &file), output);

    run_task(&env, "rec-2", "echo second");
    // The second task has its own file, without the first one's output.
    let second = env.spool.join("recordings").join("rec-2.cast");
    wait_for("the second recording", T, || {
        std::fs::read_to_string(&second).is_ok_and(|t| t.contains("second"))
    });
    assert!(!output_of(&read_spec(&second).1).contains(PRINTED));
    // What the session printed between tasks is in its idle files (written before
    // rec-2's file, in one queue).
    let idle_dir = env.spool.join("recordings").join("sh-1");
    // The first (ULIDs sort by time) was closed when rec-1 started: the shell's first
    // prompt. The last may still be being written.
    let idle = casts_in(&idle_dir);
    assert!(idle.len() >= 2, "{idle:?}");
    assert!(idle.iter().all(|f| f
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("idle-")));
    let (header, events) = read_spec(&idle[0]);
    assert_eq!(header["title"], "sh-1: idle");
    assert!(!output_of(&events).is_empty());
}

#[test]
fn a_key_printed_in_two_pieces_is_redacted_in_the_file_on_disk() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    // Two writes a moment apart: the terminal is read in two pieces, neither of which
    // holds the whole key.
    run_task(
        &env,
        "key",
        "printf 'key=sk-ant-api03-SPLITSPLITSPLIT'; sleep 0.3; printf 'TAILTAILTAILTAIL ok\n'",
    );
    let file = env.spool.join("recordings").join("key.cast");
    wait_for("the task's recording", T, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains(" ok"))
    });
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("SPLITSPLIT"), "{text}");
    assert!(!text.contains("TAILTAIL"), "{text}");
    let output = output_of(&read_spec(&file).1);
    assert!(output.contains("key=[REDACTED] ok"), "{output:?}");
    assert!(env
        .ok(&["replay", "key", "--print"])
        .contains("key=[REDACTED] ok"));
}

#[test]
fn each_attempt_of_a_retried_task_has_its_own_recording() {
    let env = Env::new(ONE_SHELL);
    let _d = env.daemon();
    // Counts its runs in a file: attempt n prints "run-n", then fails.
    let prompt = "n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs; \
                  echo run-$n; false";
    env.ok(&["submit", "--id", "twice", "--prompt", prompt]);
    assert_eq!(env.wait_final("twice", T).0, TaskState::Failed);
    let first = env.spool.join("recordings").join("twice.cast");
    wait_for("the first attempt's recording", T, || {
        std::fs::read_to_string(&first).is_ok_and(|t| t.contains("run-1"))
    });
    env.ok(&["retry", "twice"]);
    wait_for("the second attempt's recording", T, || {
        let second = env.spool.join("recordings").join("twice.2.cast");
        std::fs::read_to_string(second).is_ok_and(|t| t.contains("run-2"))
    });
    // The last attempt by default, any by number.
    let last = env.ok(&["replay", "twice", "--print"]);
    assert!(
        last.contains("run-2") && !last.contains("run-1"),
        "{last:?}"
    );
    let one = env.ok(&["replay", "twice", "--print", "--attempt", "1"]);
    assert!(one.contains("run-1") && !one.contains("run-2"), "{one:?}");
    assert!(!output_of(&read_spec(&first).1).contains("run-2"));
}

#[test]
fn replay_says_where_it_looked_when_there_is_no_recording() {
    let env = Env::new(ONE_SHELL);
    let out = env.cli(&["replay", "nothing-here", "--print"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let dir = env.spool.join("recordings");
    assert!(err.contains("no recording of task nothing-here"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("no such task"), "{err}");
    let bad = env.cli(&["replay", "x", "--speed", "0"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--speed"));
}

#[test]
fn a_recording_past_its_cap_ends_with_a_truncated_marker_and_off_records_nothing() {
    let env = Env::new(ONE_SHELL);
    env.write_config(
        "architect.toml",
        &format!("{FAST}\n[recording]\nmax_bytes = 4096\n"),
    );
    let d = env.daemon();
    run_task(&env, "big", "head -c 20000 /dev/zero | tr '\\0' x; echo");
    let file = env.spool.join("recordings").join("big.cast");
    wait_for("the capped recording", T, || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("truncated"))
    });
    assert!(std::fs::metadata(&file).unwrap().len() <= 4096);
    let (_, events) = read_spec(&file);
    let last = events.last().unwrap();
    assert_eq!(last.1, "m");
    assert!(
        last.2.contains("truncated") && last.2.contains("4096"),
        "{last:?}"
    );
    let out = env.cli(&["replay", "big", "--print"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    drop(d);

    env.write_config(
        "architect.toml",
        &format!("{FAST}\n[recording]\nenabled = false\n"),
    );
    let _d = env.daemon();
    run_task(&env, "unrecorded", "echo not kept");
    // The daemon is still running its session; nothing records this task.
    assert!(!env
        .spool
        .join("recordings")
        .join("unrecorded.cast")
        .exists());
    let out = env.cli(&["replay", "unrecorded"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[recording] enabled = false"), "{err}");
}

#[test]
fn replay_finds_a_recording_another_node_wrote() {
    let env = Env::new(ONE_SHELL);
    let other = env.spool.join("nodes").join("beta").join("recordings");
    std::fs::create_dir_all(&other).unwrap();
    let cast = "{\"version\": 2, \"width\": 80, \"height\": 24}\n\
                [0.1, \"o\", \"ran on beta\\r\\n\"]\n[0.2, \"o\", \"second attempt\"]\n";
    std::fs::write(other.join("remote.2.cast"), cast).unwrap();
    let printed = env.ok(&["replay", "remote", "--print"]);
    assert_eq!(printed, "ran on beta\r\nsecond attempt");
    let out = env.cli(&["replay", "remote", "--attempt", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("recorded attempts: 2"),
        "{err}"
    );
}
