//! The App without a terminal: keys in, actions and messages out; frames drawn into
//! ratatui's `TestBackend`.

use chrono::{Duration, TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::super::snapshot::{SessionRow, Snapshot, TaskRow};
use super::super::{buffer_text, render_text};
use super::{Action, App, Panel, READ_ONLY};

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
}

fn session(name: &str, state: &str, task: Option<&str>, secs_ago: i64) -> SessionRow {
    SessionRow {
        name: name.into(),
        node: "alpha".into(),
        state: state.into(),
        task: task.map(str::to_string),
        since: now() - Duration::seconds(secs_ago),
        approval: None,
        preview: None,
    }
}

fn task(id: &str, state: &str, session: Option<&str>, secs_ago: i64) -> TaskRow {
    TaskRow {
        id: id.into(),
        state: state.into(),
        session: session.map(str::to_string),
        received_at: now() - Duration::seconds(secs_ago),
        prompt: format!("prompt of {id}"),
        error: (state == "failed").then(|| "exit status 2".to_string()),
    }
}

/// Three sessions (beta waits on question q-7), four tasks, a running daemon.
fn snapshot() -> Snapshot {
    let mut beta = session("beta", "waiting_input", Some("t-run"), 30);
    beta.approval = Some(
        serde_json::from_value(serde_json::json!({
            "id": "q-7", "permission": "Run this command?", "kind": "command",
            "action": "touch notes.txt", "rule": "ask-unknown", "reason": "not listed",
            "since": "2026-12-02T09:59:30Z"
        }))
        .unwrap(),
    );
    let mut alpha = session("alpha", "idle", None, 4000);
    alpha.preview = Some("$ cargo test -- ok".into());
    Snapshot {
        taken_at: now(),
        node: "alpha".into(),
        daemon: Some("4242 alpha".into()),
        sessions: vec![alpha, beta, session("gamma", "busy", Some("t-other"), 90)],
        queue: vec![
            ("inbox".into(), 0),
            ("pending".into(), 1),
            ("waiting_lock".into(), 0),
            ("active".into(), 2),
            ("done".into(), 17),
            ("failed".into(), 1),
            ("cancelled".into(), 0),
            ("rejected".into(), 3),
        ],
        tasks: vec![
            task("t-run", "active", Some("beta"), 40),
            task("t-other", "active", Some("gamma"), 100),
            task("t-wait", "pending", None, 5),
            task("t-bad", "failed", Some("gamma"), 500),
            task("t-ok", "done", Some("alpha"), 900),
        ],
        done_last_minute: 4,
        done_last_hour: 12,
        spend_today_usd: 1.2345,
        nodes: Vec::new(),
        problems: Vec::new(),
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &str) -> Option<Action> {
    let mut last = None;
    for c in keys.chars() {
        last = app.handle_key(key(KeyCode::Char(c)));
    }
    last
}

#[test]
fn a_frame_shows_sessions_states_counts_throughput_spend_and_approvals() {
    let app = App::new(snapshot(), false);
    let text = render_text(&app, 140);
    for want in [
        "daemon running (pid 4242)",
        "alpha",
        "idle",
        "beta",
        "waiting_input q-7",
        "gamma",
        "busy",
        "t-other",
        "1m30s", // gamma busy for 90 s
        "$ cargo test -- ok",
        "pending 1",
        "active 2",
        "done 17",
        "rejected 3",
        "4 done in the last minute · 12 in the last hour",
        "spend today $1.2345",
        "approvals   1 waiting: beta q-7 approve? touch notes.txt",
        "t-bad",
        "prompt of t-bad — exit status 2",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("read-only"), "{text}");
}

#[test]
fn with_the_daemon_down_the_header_says_read_only() {
    let mut s = snapshot();
    s.daemon = None;
    let text = render_text(&App::new(s, false), 120);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("daemon down: read-only"),
        "{text}"
    );
}

#[test]
fn render_draws_into_a_test_backend_of_any_size() {
    let app = App::new(snapshot(), false);
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 20)).unwrap();
    terminal.draw(|f| app.render(f)).unwrap();
    let text = buffer_text(terminal.backend().buffer());
    assert_eq!(text.lines().count(), 20);
    assert!(text.contains("sessions (3)"), "{text}");
}

#[test]
fn arrows_and_j_k_move_the_selection_within_the_list() {
    let mut app = App::new(snapshot(), false);
    assert_eq!(app.selected_session.as_deref(), Some("alpha"));
    press(&mut app, "j");
    assert_eq!(app.selected_session.as_deref(), Some("beta"));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Down)); // stays on the last
    assert_eq!(app.selected_session.as_deref(), Some("gamma"));
    press(&mut app, "kk");
    app.handle_key(key(KeyCode::Up)); // stays on the first
    assert_eq!(app.selected_session.as_deref(), Some("alpha"));
}

#[test]
fn tab_switches_panel_and_moves_the_task_selection_there() {
    let mut app = App::new(snapshot(), false);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.panel, Panel::Tasks);
    press(&mut app, "jj");
    assert_eq!(app.selected_task.as_deref(), Some("t-wait"));
    assert_eq!(app.selected_session.as_deref(), Some("alpha"));
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.panel, Panel::Sessions);
}

#[test]
fn a_and_d_answer_the_question_shown_on_the_selected_session() {
    let mut app = App::new(snapshot(), false);
    press(&mut app, "j");
    assert_eq!(
        press(&mut app, "a"),
        Some(Action::Approve {
            session: "beta".into(),
            question: "q-7".into()
        })
    );
    assert_eq!(
        press(&mut app, "d"),
        Some(Action::Deny {
            session: "beta".into(),
            question: "q-7".into()
        })
    );
}

#[test]
fn approving_a_session_that_asks_nothing_says_so() {
    let mut app = App::new(snapshot(), false);
    assert_eq!(press(&mut app, "a"), None);
    assert_eq!(
        app.message.as_deref(),
        Some("alpha is not waiting for an approval (state idle)")
    );
    assert!(render_text(&app, 120).contains("alpha is not waiting for an approval"));
}

#[test]
fn write_keys_do_nothing_and_say_why_while_the_daemon_is_down() {
    let mut s = snapshot();
    s.daemon = None;
    let mut app = App::new(s, true);
    press(&mut app, "j");
    for k in ["a", "d", "c"] {
        assert_eq!(press(&mut app, k), None, "{k}");
        assert_eq!(app.message.as_deref(), Some(READ_ONLY), "{k}");
    }
    app.handle_key(key(KeyCode::Tab));
    press(&mut app, "jjj"); // t-bad, failed
    assert_eq!(press(&mut app, "r"), None);
    assert_eq!(app.message.as_deref(), Some(READ_ONLY));
    assert!(render_text(&app, 160).contains("daemon down: read-only — approve, deny"));
}

#[test]
fn c_cancels_the_selected_task_or_the_selected_sessions_task() {
    let mut app = App::new(snapshot(), false);
    press(&mut app, "jj"); // gamma, running t-other
    assert_eq!(
        press(&mut app, "c"),
        Some(Action::Cancel {
            task: "t-other".into()
        })
    );
    press(&mut app, "kk"); // alpha, idle
    assert_eq!(press(&mut app, "c"), None);
    assert_eq!(app.message.as_deref(), Some("alpha runs no task"));
    app.handle_key(key(KeyCode::Tab));
    press(&mut app, "jj"); // t-wait, pending
    assert_eq!(
        press(&mut app, "c"),
        Some(Action::Cancel {
            task: "t-wait".into()
        })
    );
    press(&mut app, "jj"); // t-ok, done
    assert_eq!(press(&mut app, "c"), None);
    assert!(app.message.as_deref().unwrap().contains("t-ok is done"));
}

#[test]
fn r_retries_only_a_failed_or_cancelled_task() {
    let mut app = App::new(snapshot(), false);
    assert_eq!(press(&mut app, "r"), None, "on the sessions panel");
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(press(&mut app, "r"), None, "t-run is active");
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("only failed or cancelled"));
    press(&mut app, "jjj");
    assert_eq!(
        press(&mut app, "r"),
        Some(Action::Retry {
            task: "t-bad".into()
        })
    );
}

#[test]
fn slash_filters_sessions_and_tasks_and_esc_clears_it() {
    let mut app = App::new(snapshot(), false);
    press(&mut app, "/gam");
    assert!(app.editing_filter);
    app.handle_key(key(KeyCode::Enter));
    assert!(!app.editing_filter);
    let names: Vec<&str> = app.sessions().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["gamma"]);
    assert_eq!(app.selected_session.as_deref(), Some("gamma"));
    let tasks: Vec<&str> = app.tasks().iter().map(|t| t.id.as_str()).collect();
    assert_eq!(tasks, ["t-other", "t-bad"]);
    let text = render_text(&app, 120);
    assert!(text.contains("filter /gam"), "{text}");
    let beta: Vec<&str> = text.lines().filter(|l| l.contains("beta")).collect();
    assert_eq!(beta.len(), 1, "only the approvals line names beta: {text}");
    assert!(beta[0].contains("approvals"), "{text}");
    // Typing q while filtering is text, not quit.
    press(&mut app, "/");
    assert_eq!(press(&mut app, "q"), None);
    assert_eq!(app.filter, "gamq");
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.filter, "");
    assert_eq!(app.sessions().len(), 3);
}

#[test]
fn s_cycles_the_sort_from_name_to_state_to_elapsed() {
    let mut app = App::new(snapshot(), false);
    let names =
        |app: &App| -> Vec<String> { app.sessions().iter().map(|s| s.name.clone()).collect() };
    assert_eq!(names(&app), ["alpha", "beta", "gamma"]);
    press(&mut app, "s");
    assert_eq!(
        names(&app),
        ["beta", "gamma", "alpha"],
        "waiting, busy, idle"
    );
    press(&mut app, "s");
    assert_eq!(
        names(&app),
        ["alpha", "gamma", "beta"],
        "longest in its state first"
    );
    press(&mut app, "s");
    assert_eq!(names(&app), ["alpha", "beta", "gamma"]);
}

#[test]
fn enter_attaches_when_this_build_has_attach_and_says_why_not_otherwise() {
    let mut app = App::new(snapshot(), false);
    assert_eq!(app.handle_key(key(KeyCode::Enter)), None);
    assert!(app
        .message
        .as_deref()
        .unwrap()
        .contains("no `attach` command"));
    let mut app = App::new(snapshot(), true);
    press(&mut app, "j");
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        Some(Action::Attach {
            session: "beta".into()
        })
    );
}

#[test]
fn q_esc_and_ctrl_c_quit() {
    let mut app = App::new(snapshot(), false);
    assert_eq!(press(&mut app, "q"), Some(Action::Quit));
    assert_eq!(app.handle_key(key(KeyCode::Esc)), Some(Action::Quit));
    assert_eq!(
        app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Action::Quit)
    );
}

#[test]
fn a_refresh_keeps_the_selection_on_the_same_session() {
    let mut app = App::new(snapshot(), false);
    press(&mut app, "jj");
    let mut s = snapshot();
    s.sessions.remove(0); // alpha gone: gamma moves up a row
    app.set_snapshot(s);
    assert_eq!(app.selected_session.as_deref(), Some("gamma"));
    let mut s = snapshot();
    s.sessions.retain(|x| x.name != "gamma");
    app.set_snapshot(s);
    assert_eq!(
        app.selected_session.as_deref(),
        Some("alpha"),
        "gone: back to the first"
    );
}
