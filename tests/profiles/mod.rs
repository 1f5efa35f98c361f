//! The built-in agent profiles against screens captured from the real programs.
//!
//! Every file `tests/fixtures/screens/<profile>/<state>__<desc>.txt` is one rendered
//! screen (rows with trailing spaces removed, trailing empty rows removed), captured in
//! tmux by `tools/capture-screens/capture.py` from the real CLI talking to a scripted mock
//! model server — except files named `…__handmade.txt`, written by hand where the real
//! program could not be run (ollama). `<state>` is what the screen must read as:
//! `idle`, `busy`, `waiting_input`, or `startup` (a first-run screen that one of the
//! profile's start-up rules must answer and that must not read as idle).
//!
//! For the profiles with `[[permission]]` rules, every `waiting_input__<desc>.txt` has a
//! `waiting_input__<desc>.action.json` next to it (written by `capture.py`): `kind` and
//! `requested`, what the model asked for (the command line, path or URL), and `read`,
//! what the profile must read off the screen (`null`: not read). `read` is either exactly
//! `requested` or — for a command that wraps or has several lines, which the screen
//! cannot give back faithfully — several rows joined with `\n`, which must be escalated
//! whole (not split into commands at the newlines); never a different one-line action.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use architect::profile::{ActionKind, Profile, ScreenState};

/// States each profile's fixtures were captured for; a profile folder missing one of
/// them (a deleted or renamed fixture) fails `every_profile_keeps_its_fixtures`.
const CAPTURED_STATES: &[(&str, &[&str])] = &[
    ("claude-code", &["startup", "idle", "busy", "waiting_input"]),
    ("codex", &["startup", "idle", "busy", "waiting_input"]),
    ("gemini", &["startup", "idle", "busy", "waiting_input"]),
    ("aider", &["startup", "idle", "busy", "waiting_input"]),
    // Hand-made (the ollama binary was not available); ollama never asks questions.
    ("ollama", &["idle", "busy"]),
];

/// Profiles whose `waiting_input__*` fixtures must each come with an `.action.json`.
const PERMISSION_PROFILES: &[&str] = &["claude-code", "codex", "gemini"];

/// Idle screens after a scripted reply, and the reply the mock model server sent.
const REPLIES: &[(&str, &str, &str)] = &[
    ("claude-code", "idle__after-permissions.txt", "All done."),
    ("codex", "idle__after-permissions.txt", "All done."),
    ("codex", "idle__after-reply-with-tip.txt", "All done."),
    ("gemini", "idle__after-permissions.txt", "All done."),
    ("claude-code", "idle__after-reply.txt", "Hello from the mock model."),
    ("claude-code", "idle__after-tool-reply.txt", "All done: created made-by-agent.txt"),
    ("codex", "idle__after-reply.txt", "Hello from the mock model."),
    ("codex", "idle__after-tool-reply.txt", "All done: created made-by-agent.txt"),
    ("gemini", "idle__after-reply.txt", "Hello from the mock model."),
    ("gemini", "idle__after-tool-reply.txt", "All done: created made-by-agent.txt"),
    ("aider", "idle__after-reply.txt", "Hello from the mock model."),
    ("ollama", "idle__after-reply__handmade.txt", "Hello from the mock model."),
    (
        "ollama",
        "idle__after-two-replies__handmade.txt",
        "I cannot run commands, but you can create it yourself with:\n\n    touch made-by-agent.txt\n\n\
         Then the file made-by-agent.txt will exist in the current directory.",
    ),
];

struct Fixture {
    profile: String,
    state: String,
    file: String,
    screen: String,
}

impl Fixture {
    fn label(&self) -> String {
        format!("{}/{}", self.profile, self.file)
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/screens")
}

/// Every fixture, sorted by profile and file name.
fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let mut out = Vec::new();
    let mut profiles: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    profiles.sort();
    for pdir in profiles {
        let profile = pdir.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<_> = std::fs::read_dir(&pdir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pdir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for path in files {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let state = file
                .split_once("__")
                .map(|(s, _)| s.to_string())
                .unwrap_or_else(|| panic!("{profile}/{file}: name must be <state>__<desc>.txt"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            // The same normalisation the daemon's rendered screen gets.
            let screen = architect::session::screen::normalize_text(&text);
            out.push(Fixture {
                profile: profile.clone(),
                state,
                file,
                screen,
            });
        }
    }
    out
}

fn profiles() -> BTreeMap<String, Profile> {
    let mut map = BTreeMap::new();
    for f in fixtures() {
        if !map.contains_key(&f.profile) {
            let p = Profile::builtin(&f.profile).unwrap_or_else(|e| {
                panic!("fixture folder {}: no built-in profile: {e}", f.profile)
            });
            map.insert(f.profile.clone(), p);
        }
    }
    map
}

fn expected_state(state: &str) -> Option<ScreenState> {
    match state {
        "idle" => Some(ScreenState::Idle),
        "busy" => Some(ScreenState::Busy),
        "waiting_input" => Some(ScreenState::WaitingInput),
        _ => None,
    }
}

fn fail_if_any(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_fixture_reads_as_its_state() {
    let profiles = profiles();
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in fixtures() {
        let profile = &profiles[&f.profile];
        if f.state == "startup" || f.state == "limited" {
            continue;
        }
        let Some(want) = expected_state(&f.state) else {
            failures.push(format!(
                "{}: unknown state {:?} (idle, busy, waiting_input, startup)",
                f.label(),
                f.state
            ));
            continue;
        };
        checked += 1;
        let got = profile.classify(&f.screen);
        if got != Some(want) {
            failures.push(format!(
                "{}: reads as {got:?}, expected {want:?}; screen:\n{}",
                f.label(),
                f.screen
            ));
        }
    }
    assert!(
        checked > 0,
        "no fixtures found under {}",
        fixtures_dir().display()
    );
    fail_if_any(failures);
}

/// `limited__*` fixtures: a usage- or rate-limit message, captured from the real CLI
/// against the mock's limit faults. One of the profile's `[[limit]]` rules must see it,
/// and the reset time must be read where the screen names one.
#[test]
fn limit_screens_match_a_limit_rule_and_name_their_reset() {
    use chrono::TimeZone;
    let profiles = profiles();
    let mut failures = Vec::new();
    let mut checked = 0;
    // The captures ran on 2026-12-01 around 19:00 UTC.
    let then = chrono::Utc
        .with_ymd_and_hms(2026, 12, 1, 18, 50, 0)
        .unwrap();
    for f in fixtures().into_iter().filter(|f| f.state == "limited") {
        checked += 1;
        let profile = &profiles[&f.profile];
        let Some((message, _backoff)) = profile.limit_message(&f.screen) else {
            failures.push(format!(
                "{}: no [[limit]] rule matches; screen:\n{}",
                f.label(),
                f.screen
            ));
            continue;
        };
        let names_time =
            message.contains(" at ") || message.contains(" in ") || message.contains("resets ");
        let reset = architect::agents::limit::reset_in(&message, &then);
        if names_time && reset.is_none() {
            failures.push(format!(
                "{}: the reset time in {message:?} was not read",
                f.label()
            ));
        }
    }
    assert!(checked >= 5, "limited fixtures found: {checked}");
    fail_if_any(failures);
}

#[test]
fn startup_screens_match_a_rule_and_are_not_idle() {
    let profiles = profiles();
    let mut failures = Vec::new();
    for f in fixtures().into_iter().filter(|f| f.state == "startup") {
        let profile = &profiles[&f.profile];
        if !profile
            .startup_rules
            .iter()
            .any(|(re, _)| re.is_match(&f.screen))
        {
            failures.push(format!(
                "{}: no startup rule matches; screen:\n{}",
                f.label(),
                f.screen
            ));
        }
        if profile.classify(&f.screen) == Some(ScreenState::Idle) {
            failures.push(format!("{}: a first-run screen reads as idle", f.label()));
        }
    }
    fail_if_any(failures);
}

#[test]
fn replies_are_read_off_idle_screens() {
    let profiles = profiles();
    let all = fixtures();
    let mut failures = Vec::new();
    for (profile, file, want) in REPLIES {
        let Some(f) = all
            .iter()
            .find(|f| f.profile == *profile && f.file == *file)
        else {
            failures.push(format!("{profile}/{file}: fixture missing"));
            continue;
        };
        let got = profiles[*profile].reply(&f.screen);
        if got.as_deref() != Some(*want) {
            failures.push(format!(
                "{}: reply {got:?}, expected {want:?}; screen:\n{}",
                f.label(),
                f.screen
            ));
        }
    }
    fail_if_any(failures);
}

#[test]
fn every_profile_keeps_its_fixtures() {
    let all = fixtures();
    let mut failures = Vec::new();
    for (profile, states) in CAPTURED_STATES {
        let have: BTreeSet<&str> = all
            .iter()
            .filter(|f| f.profile == *profile)
            .map(|f| f.state.as_str())
            .collect();
        for state in *states {
            if !have.contains(state) {
                failures.push(format!("{profile}: no {state}__*.txt fixture"));
            }
        }
    }
    // And no fixture folder without an entry above (so its states are pinned too).
    let known: BTreeSet<&str> = CAPTURED_STATES.iter().map(|(p, _)| *p).collect();
    for f in &all {
        if !known.contains(f.profile.as_str()) {
            failures.push(format!(
                "{}: profile not listed in CAPTURED_STATES",
                f.label()
            ));
        }
    }
    fail_if_any(failures);
}

#[test]
fn hand_made_fixtures_are_only_where_the_program_was_not_run() {
    // Only ollama's screens are hand-made; the others must be real captures.
    for f in fixtures() {
        let handmade = f.file.ends_with("__handmade.txt");
        assert_eq!(
            handmade,
            f.profile == "ollama",
            "{}: hand-made fixtures are for programs that could not be run (ollama) only",
            f.label()
        );
    }
}

/// What a `waiting_input__<desc>.action.json` records.
struct Expected {
    kind: ActionKind,
    requested: String,
    read: Option<String>,
}

fn expected_action(profile: &str, file: &str) -> Result<Expected, String> {
    let name = format!("{}.action.json", file.trim_end_matches(".txt"));
    let path = fixtures_dir().join(profile).join(&name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{profile}/{name}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{profile}/{name}: {e}"))?;
    let kind = serde_json::from_value(v["kind"].clone())
        .map_err(|e| format!("{profile}/{name}: kind: {e}"))?;
    let requested = v["requested"]
        .as_str()
        .ok_or_else(|| format!("{profile}/{name}: no \"requested\""))?
        .to_string();
    let read = match &v["read"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => {
            return Err(format!(
                "{profile}/{name}: read must be a string or null, not {other}"
            ))
        }
    };
    Ok(Expected {
        kind,
        requested,
        read,
    })
}

#[test]
fn permission_questions_are_read_off_the_screen() {
    let profiles = profiles();
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in fixtures() {
        if f.state != "waiting_input" || !PERMISSION_PROFILES.contains(&f.profile.as_str()) {
            continue;
        }
        let want = match expected_action(&f.profile, &f.file) {
            Ok(w) => w,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        checked += 1;
        let profile = &profiles[&f.profile];
        let Some(got) = profile.permission_request(&f.screen) else {
            failures.push(format!(
                "{}: no [[permission]] rule sees the question; screen:\n{}",
                f.label(),
                f.screen
            ));
            continue;
        };
        if got.kind != want.kind || got.action != want.read {
            failures.push(format!(
                "{}: read as rule {:?}, {:?} {:?}; expected {:?} {:?}",
                f.label(),
                got.name,
                got.kind,
                got.action,
                want.kind,
                want.read
            ));
        }
        // The safety property, whatever the expectation file says: an action read is
        // the one asked for, or has several rows (to be escalated whole).
        if let Some(read) = &got.action {
            if *read != want.requested && !read.contains('\n') {
                failures.push(format!(
                    "{}: UNSAFE: reads the one-line action {read:?} for {:?}",
                    f.label(),
                    want.requested
                ));
            }
        }
    }
    assert!(checked > 0, "no permission fixtures found");
    fail_if_any(failures);
}

#[test]
fn permission_rules_answer_with_single_keys() {
    // The daemon types `yes`/`no` as one write. Claude Code mis-took a multi-key write
    // (Down, Down, Tab, text, Enter) for "1. Yes" and ran the command: keep them one key.
    for name in PERMISSION_PROFILES {
        let p = Profile::builtin(name).unwrap();
        assert!(
            !p.spec.permission.is_empty(),
            "{name}: no [[permission]] rules"
        );
        for rule in &p.spec.permission {
            for keys in [&rule.yes, &rule.no] {
                assert_eq!(
                    keys.chars().count(),
                    1,
                    "{name}/{}: {keys:?} is not a single key",
                    rule.name
                );
            }
        }
    }
}

/// The label of the option a digit picks in the dialog at the bottom of `screen`: the
/// last row (a dialog is drawn below the history) reading `<digit>. <label>` after an
/// optional box border and selection mark.
fn option_label(screen: &str, digit: char) -> Option<String> {
    let re = regex::Regex::new(&format!(r"(?m)^[│ ]*[❯›●]? *{digit}\. ([^\n│]*)")).unwrap();
    re.captures_iter(screen)
        .last()
        .map(|c| c[1].trim().to_string())
}

#[test]
fn permission_keys_pick_the_option_they_mean() {
    // The number of options varies: Gemini CLI leaves "Allow for this session" out in a
    // folder it does not trust (fixture waiting_input__shell-untrusted-folder, seen when
    // the daemon answered its trust dialog at once: it did not restart) and adds "Allow
    // this command for all future sessions" where permanent approval is enabled. So a
    // digit as the `no` key may pick nothing — or an approval. Every digit key must name
    // the option it means on every captured question its rule reads; an Esc key needs a
    // dialog that offers Esc. (Letter keys, Codex's y/n, are not always shown: checked
    // by hand, see config/profiles/codex.toml.)
    let profiles = profiles();
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in fixtures() {
        if f.state != "waiting_input" || !PERMISSION_PROFILES.contains(&f.profile.as_str()) {
            continue;
        }
        let p = &profiles[&f.profile];
        let Some(req) = p.permission_request(&f.screen) else {
            continue;
        };
        let rule = &p.spec.permission[req.index];
        for (answer, key) in [("yes", &rule.yes), ("no", &rule.no)] {
            let Some(c) = key.chars().next().filter(|_| key.chars().count() == 1) else {
                continue;
            };
            checked += 1;
            if c.is_ascii_digit() {
                let label = option_label(&f.screen, c);
                let ok = label.as_deref().is_some_and(|l| {
                    if answer == "yes" {
                        l.starts_with("Yes") || l.starts_with("Allow once")
                    } else {
                        l.starts_with("No")
                    }
                });
                if !ok {
                    failures.push(format!(
                        "{}: rule {}: {answer} key {key:?} picks {label:?}",
                        f.label(),
                        rule.name
                    ));
                }
            } else if c == '\u{1b}' {
                let lower = f.screen.to_lowercase();
                if !(lower.contains("(esc)") || lower.contains("esc to cancel")) {
                    failures.push(format!(
                        "{}: rule {}: {answer} key is Esc but the dialog offers no Esc",
                        f.label(),
                        rule.name
                    ));
                }
            }
        }
    }
    assert!(checked > 0, "no permission keys checked");
    fail_if_any(failures);
}

/// Screens the captures do not show, made from captured ones, for what must never be
/// read as a one-line command.
#[test]
fn claude_code_reads_a_bash_command_only_when_it_is_one_row() {
    let p = Profile::builtin("claude-code").unwrap();
    let dialog = "\
────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────
 Bash command

   touch a.txt
   first

 Do you want to proceed?
 ❯ 1. Yes
   2. Yes, and always allow access to work/ from this project
   3. No

 Esc to cancel · Tab to amend · ctrl+e to explain";
    let one_row =
        format!("❯ [script:par] go\n\n● Bash(touch a.txt)\n  ⎿ \u{a0}Waiting…\n\n{dialog}");
    assert_eq!(
        p.permission_request(&one_row).unwrap().action.as_deref(),
        Some("touch a.txt")
    );
    // A call of the same turn whose header takes two rows (parallel calls: the dialog
    // may be about either): the body is read whole, description included.
    let parallel = format!(
        "❯ [script:par] go\n\n● Bash(touch a.txt)\n  ⎿ \u{a0}Waiting…\n\n● Bash(printf 'x\\n' > b.txt\n      rm -rf c)\n  ⎿ \u{a0}Waiting…\n\n{dialog}"
    );
    assert_eq!(
        p.permission_request(&parallel).unwrap().action.as_deref(),
        Some("touch a.txt\nfirst")
    );
    // A header cut short ("…)"): the same.
    let cut =
        format!("❯ go on\n\n● Bash(touch a.txt && rm -rf /tmp/x…)\n  ⎿ \u{a0}Waiting…\n\n{dialog}");
    assert_eq!(
        p.permission_request(&cut).unwrap().action.as_deref(),
        Some("touch a.txt\nfirst")
    );
    // The person's prompt scrolled off: the same.
    let no_prompt = format!("● Bash(touch a.txt)\n  ⎿ \u{a0}Waiting…\n\n{dialog}");
    assert_eq!(
        p.permission_request(&no_prompt).unwrap().action.as_deref(),
        Some("touch a.txt\nfirst")
    );
}
