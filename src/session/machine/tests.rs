//! The session machine, driven with scripted inputs: shell marks, captured screens, hook
//! signals and instants. Each test is one behaviour.

use std::sync::Arc;

use super::*;
use crate::policy::Policy;
use crate::profile::ActionKind;

const T0_MS: u64 = 0;

struct Rig {
    m: Machine,
    t0: Instant,
    now: Instant,
    effects: Vec<Effect>,
}

fn setup(profile: &str, marks: bool, hooks: bool) -> Setup {
    Setup {
        name: "s1".into(),
        profile: Profile::builtin(profile).unwrap(),
        approvals: Approvals {
            policy: Arc::new(Policy::builtin()),
            protected_branches: vec!["main".into()],
        },
        cwd: PathBuf::from("/nonexistent/architect-tests/work"),
        home: PathBuf::from("/nonexistent/architect-tests/home"),
        marks,
        hooks,
    }
}

impl Rig {
    fn new(setup: Setup) -> Self {
        let t0 = Instant::now();
        let m = Machine::new(setup, t0);
        let mut r = Self {
            m,
            t0,
            now: t0,
            effects: Vec::new(),
        };
        r.step(Input::Started);
        r
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.now = self.t0 + Duration::from_millis(T0_MS + ms);
        self
    }

    fn step(&mut self, input: Input) -> &mut Self {
        let out = self.m.step(self.now, input);
        self.effects.extend(out);
        self
    }

    fn tick(&mut self, ms: u64) -> &mut Self {
        self.at(ms).step(Input::Tick)
    }

    fn screen(&mut self, ms: u64, text: &str) -> &mut Self {
        self.at(ms).step(Input::Screen {
            visible: text.to_string(),
            scrollback: None,
        })
    }

    fn mark(&mut self, ms: u64, mark: Mark) -> &mut Self {
        self.at(ms).step(Input::Mark(mark))
    }

    fn output(&mut self, ms: u64, bytes: &[u8]) -> &mut Self {
        self.at(ms).step(Input::Output(bytes.to_vec()))
    }

    fn hook(&mut self, ms: u64, event: &str, signal: Signal) -> &mut Self {
        self.at(ms).step(Input::Hook {
            conn: 7,
            event: event.into(),
            signal,
        })
    }

    fn run(&mut self, ms: u64, prompt: &str, timeout_s: u64) -> &mut Self {
        self.at(ms).step(Input::Command(Command::Run(Assignment {
            task_id: "t1".into(),
            attempt: 1,
            branch: None,
            provider: None,
            model: None,
            complexity: None,
            role: None,
            prompt: prompt.into(),
            timeout: Duration::from_secs(timeout_s),
        })))
    }

    fn writes(&self) -> Vec<Vec<u8>> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Write(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    fn enters(&self) -> usize {
        self.writes()
            .iter()
            .filter(|w| w.as_slice() == b"\r")
            .count()
    }

    fn finished(&self) -> Vec<AttemptEnd> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Finish { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    }

    fn accepted(&self) -> Vec<String> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Emit(SessionEvent::PromptAccepted { evidence, .. }) => {
                    Some(evidence.clone())
                }
                _ => None,
            })
            .collect()
    }

    fn answers(&self) -> Vec<HookAnswer> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Answer { answer, .. } => Some(answer.clone()),
                _ => None,
            })
            .collect()
    }
}

fn result_of(o: &AttemptEnd) -> &TaskResult {
    match o {
        AttemptEnd::Completed(r) | AttemptEnd::Failed(r, _) => r,
        other => panic!("no result in {other:?}"),
    }
}

// ---- shell with marks -------------------------------------------------------------

/// A bash session at its first prompt.
fn shell() -> Rig {
    let mut r = Rig::new(setup("shell", true, false));
    r.mark(5, Mark::Prompt).screen(6, "[0] architect$");
    assert_eq!(r.m.state(), SessionState::Idle);
    r
}

#[test]
fn a_quiet_command_ends_at_its_finished_mark_with_its_status() {
    let mut r = shell();
    r.run(10, "sleep 3; false", 60).tick(20);
    assert_eq!(r.enters(), 1);
    r.mark(25, Mark::CommandStart);
    // Seconds of silence, the old prompt still on screen: nothing ends the task.
    r.screen(30, "[0] architect$ sleep 3; false");
    for ms in (100..3000).step_by(100) {
        r.tick(ms);
    }
    assert!(r.finished().is_empty(), "{:?}", r.finished());
    assert_eq!(r.enters(), 1, "Enter is never pressed twice");
    r.mark(3030, Mark::CommandFinished(Some(1)));
    let done = r.finished();
    assert_eq!(done.len(), 1);
    assert!(
        matches!(&done[0], AttemptEnd::Failed(res, e) if e == "exit status 1" && res.exit_status == Some(1)),
        "{done:?}"
    );
    assert_ne!(
        r.m.state(),
        SessionState::Idle,
        "idle only at the next prompt"
    );
    r.mark(3031, Mark::Prompt);
    assert_eq!(r.m.state(), SessionState::Idle);
    assert_eq!(r.accepted(), ["mark:command_start"]);
}

#[test]
fn output_that_looks_like_a_prompt_does_not_end_the_task() {
    let mut r = shell();
    r.run(10, "printf '[0] architect$ '; sleep 5", 60).tick(20);
    r.mark(25, Mark::CommandStart)
        .output(26, b"[0] architect$ ")
        .screen(27, "[0] architect$ printf ...\n[0] architect$");
    for ms in (100..2000).step_by(50) {
        r.tick(ms);
    }
    assert!(r.finished().is_empty());
    r.mark(5030, Mark::CommandFinished(Some(0)));
    let res = result_of(&r.finished()[0]).clone();
    assert_eq!(res.output, "[0] architect$");
    assert_eq!(res.exit_status, Some(0));
}

#[test]
fn the_output_is_what_the_command_printed_between_its_marks() {
    let mut r = shell();
    r.run(10, "echo hi", 60).tick(20);
    // The echo of the command line comes before the start mark.
    r.output(21, b"echo hi\r\n")
        .mark(22, Mark::CommandStart)
        .output(23, b"a\tb\r\nprogress 10%\rprogress 100%\r\n")
        .mark(24, Mark::CommandFinished(Some(0)));
    let res = result_of(&r.finished()[0]).clone();
    assert_eq!(res.output, "a\tb\nprogress 100%");
}

#[test]
fn a_multi_line_prompt_runs_as_written_and_ends_with_its_last_status() {
    let mut r = shell();
    r.run(10, "# step 1\ntouch marker\nfalse", 60).tick(20);
    let pasted = r.writes()[0].clone();
    assert_eq!(pasted, b"\x1b[200~# step 1\ntouch marker\nfalse\x1b[201~");
    r.mark(30, Mark::CommandStart)
        .mark(31, Mark::CommandStart)
        .mark(32, Mark::CommandFinished(Some(1)));
    assert!(matches!(&r.finished()[0], AttemptEnd::Failed(_, e) if e == "exit status 1"));
}

#[test]
fn a_prompt_with_no_command_fails_as_nothing_ran() {
    let mut r = shell();
    r.run(10, "# only a comment", 60)
        .tick(20)
        .mark(30, Mark::Prompt);
    let done = r.finished();
    assert!(
        matches!(&done[0], AttemptEnd::Failed(_, e) if e.starts_with("nothing ran")),
        "{done:?}"
    );
}

#[test]
fn an_incomplete_command_is_interrupted_and_rejected_with_the_reason() {
    let mut r = shell();
    r.run(10, "if true", 60)
        .tick(20)
        .mark(30, Mark::Continuation);
    assert_eq!(
        r.writes().last().unwrap(),
        b"\x03",
        "Ctrl-C ends the continuation"
    );
    assert!(r.finished().is_empty());
    r.mark(40, Mark::Prompt);
    assert!(matches!(&r.finished()[0], AttemptEnd::Failed(_, e) if e.contains("incomplete")));
}

#[test]
fn a_timeout_interrupts_and_ends_at_the_finished_mark() {
    let mut r = shell();
    r.run(10, "sleep 60", 5)
        .tick(20)
        .mark(25, Mark::CommandStart);
    r.tick(5000);
    assert!(r.finished().is_empty());
    r.tick(5011);
    assert_eq!(r.writes().last().unwrap(), b"\x03");
    r.mark(5020, Mark::CommandFinished(Some(130)));
    assert!(matches!(r.finished()[0], AttemptEnd::TimedOut));
    r.mark(5021, Mark::Prompt);
    assert_eq!(r.m.state(), SessionState::Idle);
}

#[test]
fn a_command_ignoring_the_interrupt_gets_the_session_killed() {
    let mut r = shell();
    r.run(10, "trap '' INT; sleep 60", 5)
        .tick(20)
        .mark(25, Mark::CommandStart)
        .tick(5011);
    r.tick(7012);
    assert!(matches!(r.finished()[0], AttemptEnd::TimedOut));
    assert!(r.effects.iter().any(|e| matches!(e, Effect::Kill(_))));
}

#[test]
fn exit_in_a_task_reports_its_own_status() {
    let mut r = shell();
    r.run(10, "sleep 6; exit 3", 60)
        .tick(20)
        .mark(25, Mark::CommandStart)
        .mark(6025, Mark::CommandFinished(Some(3)));
    assert!(
        matches!(&r.finished()[0], AttemptEnd::Failed(res, e) if e == "exit status 3" && res.exit_status == Some(3))
    );
}

// ---- agent CLIs on the screen -----------------------------------------------------

fn fixture(agent: &str, name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/screens")
        .join(agent)
        .join(format!("{name}.txt"));
    crate::session::screen::normalize_text(&std::fs::read_to_string(p).unwrap())
}

const BOX_TOP: &str = "╭──────────────────────────────╮";
const BOX_BOTTOM: &str = "╰──────────────────────────────╯\n  ? for shortcuts";

/// A fake-agent screen: history lines, then the prompt box holding `typed`.
fn fake(history: &[&str], typed: &str) -> String {
    let mut s = history.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(&format!("{BOX_TOP}\n│ > {typed:<27}│\n{BOX_BOTTOM}"));
    s
}

fn fake_agent() -> Rig {
    let mut r = Rig::new(setup("fake-agent", false, false));
    r.screen(
        10,
        &fake(
            &["Fake Agent 1.0", "> older task", "● done: older reply"],
            "",
        ),
    )
    .tick(100);
    assert_eq!(r.m.state(), SessionState::Idle);
    r
}

#[test]
fn a_busy_screen_shorter_than_one_screen_read_is_not_a_swallowed_prompt() {
    let mut r = fake_agent();
    r.run(200, "quick one", 60).tick(210);
    r.screen(
        211,
        &fake(
            &["Fake Agent 1.0", "> older task", "● done: older reply"],
            "quick one",
        ),
    )
    .tick(220);
    // Never a busy screen: the next read already shows the turn over.
    r.screen(
        260,
        &fake(
            &[
                "Fake Agent 1.0",
                "> older task",
                "● done: older reply",
                "> quick one",
                "● done: quick one",
            ],
            "",
        ),
    );
    for ms in (270..40_000).step_by(500) {
        r.tick(ms);
    }
    assert_eq!(r.accepted(), ["prompt_in_transcript"]);
    assert_eq!(r.enters(), 1);
    let done = r.finished();
    assert_eq!(done.len(), 1, "{done:?}");
    let res = result_of(&done[0]);
    assert_eq!(res.reply.as_deref(), Some("done: quick one"));
}

#[test]
fn a_refused_turn_gets_no_older_reply() {
    let mut r = fake_agent();
    r.run(200, "run: rm -rf ~/important", 60).tick(210);
    let asked = fake(
        &[
            "Fake Agent 1.0",
            "> older task",
            "● done: older reply",
            "> run: rm -rf ~/important",
        ],
        "",
    )
    .replace(
        "  ? for shortcuts",
        "  ? for shortcuts\nAllow fake-agent to run \"rm -rf ~/important\"? (y/n)",
    );
    r.screen(300, &asked).tick(500);
    assert_eq!(r.writes().last().unwrap(), b"n", "the policy refuses");
    // The agent ends the turn without a reply line of its own.
    r.screen(
        600,
        &fake(
            &[
                "Fake Agent 1.0",
                "> older task",
                "● done: older reply",
                "> run: rm -rf ~/important",
                "✗ refused",
            ],
            "",
        ),
    )
    .tick(700);
    let res = result_of(&r.finished()[0]).clone();
    assert_eq!(res.reply, None, "never the older paragraph");
    assert_eq!(res.turn_end.as_deref(), Some("refused: rm -rf ~/important"));
}

#[test]
fn a_reply_taller_than_the_screen_is_read_from_the_rows_above_it() {
    let mut s = setup("fake-agent", false, false);
    s.profile.spec.terminal.scrollback = 100;
    let mut r = Rig::new(s);
    r.screen(10, &fake(&["> older task", "● done: older reply"], ""))
        .tick(100);
    r.run(200, "tall reply", 60).tick(210);
    r.screen(
        250,
        &fake(
            &[
                "> older task",
                "● done: older reply",
                "> tall reply",
                "⠋ Working… (esc to interrupt)",
            ],
            "",
        ),
    );
    assert!(r.m.wants_scrollback());
    // The prompt and the reply's first row scrolled off.
    r.at(400).step(Input::Screen {
        visible: fake(&["line 98", "line 99"], ""),
        scrollback: Some(
            "> older task\n● done: older reply\n> tall reply\n● done: tall reply".into(),
        ),
    });
    r.tick(500);
    let res = result_of(&r.finished()[0]).clone();
    assert_eq!(res.reply.as_deref(), Some("done: tall reply"));
}

#[test]
fn a_dialog_up_when_a_prompt_is_due_is_answered_before_the_turn_is_judged() {
    let mut r = fake_agent();
    r.run(200, "run: touch fake.txt", 60).tick(210);
    // The question is the first thing after Enter: no busy screen, no prompt row yet.
    let asked = fake(&["Fake Agent 1.0"], "").replace(
        "  ? for shortcuts",
        "  ? for shortcuts\nAllow fake-agent to run \"touch fake.txt\"? (y/n)",
    );
    r.screen(220, &asked).tick(400);
    assert_eq!(
        r.writes().last().unwrap(),
        b"y",
        "a safe command is allowed"
    );
    assert!(r.finished().is_empty());
}

#[test]
fn a_prompt_still_in_the_input_box_gets_enter_again_and_is_then_proven_not_taken() {
    let mut s = setup("fake-agent", false, false);
    s.profile.spec.submit.clear = Some("\u{15}".into());
    let mut r = Rig::new(s);
    r.screen(10, &fake(&["Fake Agent 1.0"], "")).tick(100);
    r.run(200, "ignored", 60).tick(210);
    let stuck = fake(&["Fake Agent 1.0"], "ignored");
    r.screen(211, &stuck);
    for ms in (300..10_000).step_by(100) {
        r.tick(ms);
    }
    assert_eq!(r.enters(), 3, "{:?}", r.writes());
    assert!(matches!(&r.finished()[0], AttemptEnd::NotTaken(_)));
    assert_eq!(r.writes().last().unwrap(), b"\x15", "the box is cleared");
}

#[test]
fn with_no_proof_either_way_the_task_is_not_retried_blindly() {
    let mut s = setup("claude-code", false, false);
    s.profile.spec.done.busy_timeout_ms = Some(2000);
    let mut r = Rig::new(s);
    let idle = fixture("claude-code", "idle__fresh-start");
    r.screen(10, &idle).tick(100);
    assert_eq!(r.m.state(), SessionState::Idle);
    r.run(200, "vanishing prompt", 60).tick(700);
    // The screen never changes: no busy, no prompt row, box empty all along.
    for ms in (800..10_000).step_by(100) {
        r.tick(ms);
    }
    assert_eq!(r.enters(), 1);
    let done = r.finished();
    assert!(
        matches!(&done[0], AttemptEnd::DeliveryUncertain(w) if w.starts_with("delivery_uncertain")),
        "{done:?}"
    );
}

// ---- hooks ------------------------------------------------------------------------

fn claude_with_hooks() -> Rig {
    let mut r = Rig::new(setup("claude-code", false, true));
    r.hook(
        5,
        "SessionStart",
        Signal::SessionStart {
            source: None,
            conversation: Some("c-1".into()),
        },
    );
    r.screen(10, &fixture("claude-code", "idle__fresh-start"))
        .tick(100);
    assert_eq!(r.m.state(), SessionState::Idle);
    r
}

#[test]
fn a_hook_arriving_before_the_screen_changes_accepts_and_ends_the_turn() {
    let mut r = claude_with_hooks();
    r.run(200, "FIDELITY reply tok-abcd", 60).tick(600);
    r.hook(
        610,
        "UserPromptSubmit",
        Signal::PromptSubmitted {
            prompt: Some("FIDELITY reply tok-abcd".into()),
        },
    );
    assert_eq!(r.accepted(), ["hook:UserPromptSubmit"]);
    r.hook(
        650,
        "Stop",
        Signal::TurnEnd {
            reply: Some("all done tok-abcd".into()),
            error: None,
        },
    );
    let done = r.finished();
    assert_eq!(done.len(), 1);
    let res = result_of(&done[0]);
    assert_eq!(res.reply.as_deref(), Some("all done tok-abcd"));
    assert_eq!(res.ended_by.as_deref(), Some("hook:Stop"));
    // The transcript is read after the turn ended: its usage comes late, for this task.
    r.hook(
        800,
        "Stop",
        Signal::TurnUsage {
            usage: vec![crate::agents::signal::AgentUsage {
                model: Some("claude-x".into()),
                tokens: crate::llm::Usage {
                    input: 1000,
                    output: 20,
                    ..Default::default()
                },
            }],
        },
    );
    let usage: Vec<_> = r
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(SessionEvent::Usage { task_id, usage }) => {
                Some((task_id.clone(), usage.len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(usage, [("t1".to_string(), 1)]);
    assert_eq!(r.answers().len(), 4, "every hook gets an answer");
}

#[test]
fn a_hook_that_never_comes_falls_back_to_the_screen_after_the_grace() {
    let mut r = claude_with_hooks();
    r.run(200, "Please create the file made-by-agent.txt", 60)
        .tick(600);
    r.screen(700, &fixture("claude-code", "busy__thinking"));
    r.screen(2000, &fixture("claude-code", "idle__after-tool-reply"));
    r.tick(3600);
    assert!(r.finished().is_empty(), "waits for the Stop hook");
    r.tick(6600);
    let res = result_of(&r.finished()[0]).clone();
    assert_eq!(res.ended_by.as_deref(), Some("screen"));
    assert_eq!(
        res.reply.as_deref(),
        Some("All done: created made-by-agent.txt")
    );
}

#[test]
fn without_hooks_the_screen_ends_the_turn_after_the_debounce() {
    let mut r = Rig::new(setup("claude-code", false, false));
    r.screen(10, &fixture("claude-code", "idle__fresh-start"))
        .tick(100);
    r.run(200, "Please create the file made-by-agent.txt", 60)
        .tick(600);
    r.screen(700, &fixture("claude-code", "busy__thinking"));
    r.screen(2000, &fixture("claude-code", "idle__after-tool-reply"));
    r.tick(3501);
    let res = result_of(&r.finished()[0]).clone();
    assert_eq!(res.ended_by.as_deref(), Some("screen"));
}

#[test]
fn a_tool_request_is_decided_by_the_policy_on_its_exact_action() {
    let mut r = claude_with_hooks();
    r.run(200, "x", 60).tick(600);
    let ask = |action: &str| Signal::ToolRequest {
        tool: "Bash".into(),
        kind: ActionKind::Command,
        action: Some(action.into()),
        deny_only: false,
    };
    r.hook(700, "PreToolUse", ask("touch made-by-agent.txt"));
    r.hook(701, "PreToolUse", ask("rm -rf ~/important"));
    r.hook(702, "PreToolUse", ask("npm install left-pad"));
    // A multi-line command is exact from a hook: the policy parses it whole.
    r.hook(703, "PreToolUse", ask("echo one\necho two"));
    let a: Vec<HookAnswer> = r
        .answers()
        .into_iter()
        .filter(|a| *a != HookAnswer::Ok)
        .collect();
    assert!(matches!(a[0], HookAnswer::Allow { .. }), "{a:?}");
    assert!(matches!(a[1], HookAnswer::Deny { .. }), "{a:?}");
    assert!(matches!(a[2], HookAnswer::Ask { .. }), "{a:?}");
    assert!(matches!(a[3], HookAnswer::Allow { .. }), "{a:?}");
}

#[test]
fn a_usage_limit_hook_parks_the_session_and_it_comes_back_by_itself() {
    let mut r = claude_with_hooks();
    r.run(200, "x", 60).tick(600);
    r.hook(
        700,
        "StopFailure",
        Signal::Limited {
            message: "rate limited".into(),
            reset_in_s: Some(30),
        },
    );
    assert!(matches!(r.finished()[0], AttemptEnd::Limited { .. }));
    assert_eq!(r.m.state(), SessionState::Limited);
    r.tick(20_000);
    assert_eq!(r.m.state(), SessionState::Limited);
    r.tick(30_701);
    assert_eq!(r.m.state(), SessionState::Idle);
}

#[test]
fn a_usage_limit_screen_parks_the_session_until_the_time_it_names() {
    let mut s = setup("fake-agent", false, false);
    s.profile = Profile::parse(
        "fake-agent",
        &format!(
            "{}\n[[limit]]\nwhen = 'usage limit reached'\n",
            crate::profile::BUILTIN
                .iter()
                .find(|(n, _)| *n == "fake-agent")
                .unwrap()
                .1
        ),
    )
    .unwrap();
    let mut r = Rig::new(s);
    r.screen(10, &fake(&["Fake Agent 1.0"], "")).tick(100);
    r.run(200, "work", 60).tick(210);
    r.screen(
        300,
        &fake(
            &[
                "Fake Agent 1.0",
                "> work",
                "✗ usage limit reached, try again in 2m",
            ],
            "",
        ),
    )
    .tick(400);
    let done = r.finished();
    assert!(
        matches!(&done[0], AttemptEnd::Limited { reset_in, .. } if *reset_in == Duration::from_secs(120)),
        "{done:?}"
    );
    assert_eq!(r.m.state(), SessionState::Limited);
    r.tick(120_500);
    assert_eq!(r.m.state(), SessionState::Idle);
}
