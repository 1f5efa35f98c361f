//! `architect top`'s state: a [`Snapshot`] plus what the person chose (panel, selection,
//! filter, sort). Keys go in ([`App::handle_key`]) and [`Action`]s come out; drawing is
//! [`App::render`]. It holds no terminal, file or process: the loop in `top/mod.rs` owns
//! those, so everything here is tested without a terminal.

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::snapshot::{SessionRow, Snapshot, TaskRow};

/// What a key asks the loop to do (the loop does it; the App only decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave `top`.
    Quit,
    /// Approve the question `question` that `session` waits on.
    Approve {
        /// Session name.
        session: String,
        /// The id of the question shown.
        question: String,
    },
    /// Deny the question `question` that `session` waits on.
    Deny {
        /// Session name.
        session: String,
        /// The id of the question shown.
        question: String,
    },
    /// Cancel a pending or running task.
    Cancel {
        /// Task id.
        task: String,
    },
    /// Queue a failed or cancelled task again.
    Retry {
        /// Task id.
        task: String,
    },
    /// Run `architect attach SESSION` with the terminal handed over.
    Attach {
        /// Session name.
        session: String,
    },
}

/// The panel that has the selection (Tab switches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The sessions table.
    Sessions,
    /// The tasks table.
    Tasks,
}

/// How the sessions (and tasks) are ordered (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Sessions by name; tasks newest first.
    Name,
    /// By state (waiting for a person first), then name.
    State,
    /// Longest in its state (sessions) or oldest (tasks) first.
    Elapsed,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Name => Sort::State,
            Sort::State => Sort::Elapsed,
            Sort::Elapsed => Sort::Name,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::State => "state",
            Sort::Elapsed => "elapsed",
        }
    }
}

/// The state of `architect top`: the data last read and the person's choices.
///
/// It does not hold the terminal, the spool or the clock: `snapshot.taken_at` is "now"
/// for every elapsed time shown, so a render is a function of the App alone.
#[derive(Debug, Clone)]
pub struct App {
    /// The data shown.
    pub snapshot: Snapshot,
    /// The panel with the selection.
    pub panel: Panel,
    /// The selected session's name.
    pub selected_session: Option<String>,
    /// The selected task's id.
    pub selected_task: Option<String>,
    /// Case-insensitive text a session or task must contain (name, state, task, prompt).
    pub filter: String,
    /// `/` was pressed: keys type into the filter until Enter or Esc.
    pub editing_filter: bool,
    /// The order.
    pub sort: Sort,
    /// A line for the person: what the last key did, or why it did nothing.
    pub message: Option<String>,
    /// Whether this build has `architect attach`.
    pub attach_available: bool,
}

/// Why write keys do nothing while the daemon is down.
pub const READ_ONLY: &str = "daemon down: read-only — approve, deny, cancel and retry are \
    requests the daemon carries out; start `architect daemon` first";

impl App {
    /// An App showing `snapshot`, the first session selected.
    #[must_use]
    pub fn new(snapshot: Snapshot, attach_available: bool) -> Self {
        let mut app = App {
            snapshot,
            panel: Panel::Sessions,
            selected_session: None,
            selected_task: None,
            filter: String::new(),
            editing_filter: false,
            sort: Sort::Name,
            message: None,
            attach_available,
        };
        app.keep_selection();
        app
    }

    /// Shows fresh data, keeping the selection on the same session and task when they
    /// are still shown.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
        self.keep_selection();
    }

    fn keep_selection(&mut self) {
        let sessions: Vec<String> = self.sessions().iter().map(|s| s.name.clone()).collect();
        if !self
            .selected_session
            .as_ref()
            .is_some_and(|n| sessions.contains(n))
        {
            self.selected_session = sessions.first().cloned();
        }
        let tasks: Vec<String> = self.tasks().iter().map(|t| t.id.clone()).collect();
        if !self
            .selected_task
            .as_ref()
            .is_some_and(|n| tasks.contains(n))
        {
            self.selected_task = tasks.first().cloned();
        }
    }

    /// The sessions shown: those matching the filter, in the sort order.
    #[must_use]
    pub fn sessions(&self) -> Vec<&SessionRow> {
        let f = self.filter.to_lowercase();
        let mut v: Vec<&SessionRow> = self
            .snapshot
            .sessions
            .iter()
            .filter(|s| {
                matches_filter(
                    &f,
                    [
                        Some(s.name.as_str()),
                        Some(s.state.as_str()),
                        Some(s.node.as_str()),
                        s.task.as_deref(),
                    ],
                )
            })
            .collect();
        match self.sort {
            Sort::Name => v.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::State => v.sort_by(|a, b| {
                state_rank(&a.state)
                    .cmp(&state_rank(&b.state))
                    .then_with(|| a.name.cmp(&b.name))
            }),
            Sort::Elapsed => v.sort_by(|a, b| a.since.cmp(&b.since).then(a.name.cmp(&b.name))),
        }
        v
    }

    /// The tasks shown: those matching the filter, in the sort order.
    #[must_use]
    pub fn tasks(&self) -> Vec<&TaskRow> {
        let f = self.filter.to_lowercase();
        let mut v: Vec<&TaskRow> = self
            .snapshot
            .tasks
            .iter()
            .filter(|t| {
                matches_filter(
                    &f,
                    [
                        Some(t.id.as_str()),
                        Some(t.state.as_str()),
                        Some(t.prompt.as_str()),
                        t.session.as_deref(),
                    ],
                )
            })
            .collect();
        match self.sort {
            // The snapshot's order: live first, newest first in each state.
            Sort::Name => {}
            Sort::State => v.sort_by(|a, b| {
                state_rank(&a.state)
                    .cmp(&state_rank(&b.state))
                    .then_with(|| b.received_at.cmp(&a.received_at))
            }),
            Sort::Elapsed => v.sort_by_key(|a| a.received_at),
        }
        v
    }

    fn selected_session_row(&self) -> Option<&SessionRow> {
        let name = self.selected_session.as_ref()?;
        self.snapshot.sessions.iter().find(|s| &s.name == name)
    }

    fn selected_task_row(&self) -> Option<&TaskRow> {
        let id = self.selected_task.as_ref()?;
        self.snapshot.tasks.iter().find(|t| &t.id == id)
    }

    /// What a key does. Returns the action for the loop to carry out, if any, and leaves
    /// a line in [`App::message`] when the key did nothing and why.
    ///
    /// Keys: `q`/Esc/Ctrl-C quit; ↑↓/`k` `j` select; Tab switches panel; `/` edits the
    /// filter (Enter keeps it, Esc clears it); `s` cycles the sort; `a`/`d` approve/deny the
    /// selected session's question; `c` cancels the selected task (on the sessions panel,
    /// the session's task); `r` retries the selected task; Enter attaches to the selected
    /// session (on the tasks panel, the task's).
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.keep_selection();
            return None;
        }
        self.message = None;
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Tab | KeyCode::BackTab => {
                self.panel = match self.panel {
                    Panel::Sessions => Panel::Tasks,
                    Panel::Tasks => Panel::Sessions,
                };
            }
            KeyCode::Char('/') => {
                self.editing_filter = true;
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.message = Some(format!("sorted by {}", self.sort.label()));
            }
            KeyCode::Char(c @ ('a' | 'd')) => return self.answer(c == 'a'),
            KeyCode::Char('c') => return self.cancel(),
            KeyCode::Char('r') => return self.retry(),
            KeyCode::Enter => return self.attach(),
            _ => {}
        }
        None
    }

    fn move_selection(&mut self, by: isize) {
        let ids: Vec<String> = match self.panel {
            Panel::Sessions => self.sessions().iter().map(|s| s.name.clone()).collect(),
            Panel::Tasks => self.tasks().iter().map(|t| t.id.clone()).collect(),
        };
        let selected = match self.panel {
            Panel::Sessions => &mut self.selected_session,
            Panel::Tasks => &mut self.selected_task,
        };
        if ids.is_empty() {
            return;
        }
        let at = selected
            .as_ref()
            .and_then(|s| ids.iter().position(|x| x == s))
            .unwrap_or(0);
        let to = at.saturating_add_signed(by).min(ids.len() - 1);
        *selected = Some(ids[to].clone());
    }

    /// `None` with the reason in `message` when the daemon is down.
    fn writable(&mut self) -> bool {
        if self.snapshot.daemon.is_none() {
            self.message = Some(READ_ONLY.to_string());
            return false;
        }
        true
    }

    fn answer(&mut self, approve: bool) -> Option<Action> {
        let verb = if approve { "approve" } else { "deny" };
        if self.panel != Panel::Sessions {
            self.message = Some(format!(
                "{verb} answers a session's question: Tab to the sessions panel"
            ));
            return None;
        }
        let Some(s) = self.selected_session_row() else {
            self.message = Some("no session selected".into());
            return None;
        };
        let Some(q) = &s.approval else {
            self.message = Some(format!(
                "{} is not waiting for an approval (state {})",
                s.name, s.state
            ));
            return None;
        };
        let (session, question) = (s.name.clone(), q.id.clone());
        if !self.writable() {
            return None;
        }
        Some(if approve {
            Action::Approve { session, question }
        } else {
            Action::Deny { session, question }
        })
    }

    fn cancel(&mut self) -> Option<Action> {
        let task = match self.panel {
            Panel::Sessions => {
                let Some(s) = self.selected_session_row() else {
                    self.message = Some("no session selected".into());
                    return None;
                };
                let Some(t) = s.task.clone() else {
                    self.message = Some(format!("{} runs no task", s.name));
                    return None;
                };
                t
            }
            Panel::Tasks => {
                let Some(t) = self.selected_task_row() else {
                    self.message = Some("no task selected".into());
                    return None;
                };
                if !matches!(t.state.as_str(), "pending" | "waiting_lock" | "active") {
                    self.message = Some(format!(
                        "task {} is {}: only pending or running tasks can be cancelled",
                        t.id, t.state
                    ));
                    return None;
                }
                t.id.clone()
            }
        };
        self.writable().then_some(Action::Cancel { task })
    }

    fn retry(&mut self) -> Option<Action> {
        if self.panel != Panel::Tasks {
            self.message =
                Some("retry works on a failed or cancelled task: Tab to the tasks panel".into());
            return None;
        }
        let Some(t) = self.selected_task_row() else {
            self.message = Some("no task selected".into());
            return None;
        };
        if !matches!(t.state.as_str(), "failed" | "cancelled") {
            self.message = Some(format!(
                "task {} is {}: only failed or cancelled tasks can be retried",
                t.id, t.state
            ));
            return None;
        }
        let task = t.id.clone();
        self.writable().then_some(Action::Retry { task })
    }

    fn attach(&mut self) -> Option<Action> {
        let session = match self.panel {
            Panel::Sessions => self.selected_session.clone(),
            Panel::Tasks => self
                .selected_task_row()
                .filter(|t| t.state == "active")
                .and_then(|t| t.session.clone()),
        };
        let Some(session) = session else {
            self.message = Some("select a session (or a running task) to attach to".into());
            return None;
        };
        if !self.attach_available {
            self.message = Some(format!(
                "this architect has no `attach` command, so it cannot attach to {session}; \
                 `architect send {session} TEXT` types into it"
            ));
            return None;
        }
        if !self.writable() {
            return None;
        }
        Some(Action::Attach { session })
    }

    /// The rows a full frame needs: header, summary, every session and task shown, the
    /// nodes of a fleet, and the footer. What `top --once` draws.
    #[must_use]
    pub fn full_height(&self) -> u16 {
        let sessions = (self.sessions().len() + 3).max(4);
        let tasks = self.tasks().len() + 3;
        let nodes = if self.snapshot.nodes.is_empty() {
            0
        } else {
            self.snapshot.nodes.len() + 3
        };
        u16::try_from(1 + SUMMARY_ROWS + sessions + tasks + nodes + 1).unwrap_or(u16::MAX)
    }

    /// Draws the whole screen into `frame`.
    pub fn render(&self, frame: &mut Frame) {
        let area = frame.area();
        let sessions = self.sessions();
        let tasks = self.tasks();
        let nodes_h = if self.snapshot.nodes.is_empty() {
            0
        } else {
            u16::try_from(self.snapshot.nodes.len() + 3).unwrap_or(u16::MAX)
        };
        let [header, summary, main, nodes, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(u16::try_from(SUMMARY_ROWS).unwrap_or(6)),
            Constraint::Min(6),
            Constraint::Length(nodes_h),
            Constraint::Length(1),
        ])
        .areas(area);
        let wanted = |n: usize| u16::try_from(n + 3).unwrap_or(u16::MAX);
        let [sessions_area, tasks_area] = Layout::vertical([
            Constraint::Max(wanted(sessions.len()).max(4)),
            Constraint::Fill(1),
        ])
        .areas(main);
        frame.render_widget(Paragraph::new(self.header_line()), header);
        frame.render_widget(self.summary(), summary);
        self.render_sessions(frame, sessions_area, &sessions);
        self.render_tasks(frame, tasks_area, &tasks);
        if nodes_h > 0 {
            self.render_nodes(frame, nodes);
        }
        frame.render_widget(Paragraph::new(self.footer_line()), footer);
    }

    fn header_line(&self) -> Line<'_> {
        let s = &self.snapshot;
        let daemon = match &s.daemon {
            Some(holder) => Span::styled(
                format!(
                    "daemon running (pid {})",
                    holder.split_whitespace().next().unwrap_or("?")
                ),
                Style::new().fg(Color::Green),
            ),
            None => Span::styled(
                "daemon down: read-only",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
        };
        let mut spans = vec![
            Span::styled("architect top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(" · node {} · ", s.node)),
            daemon,
            Span::raw(format!(
                " · {} UTC · sort {}",
                s.taken_at.format("%H:%M:%S"),
                self.sort.label()
            )),
        ];
        if !self.filter.is_empty() || self.editing_filter {
            spans.push(Span::raw(format!(
                " · filter /{}{}",
                self.filter,
                if self.editing_filter { "▏" } else { "" }
            )));
        }
        Line::from(spans)
    }

    fn summary(&self) -> Paragraph<'_> {
        let s = &self.snapshot;
        let q = |k: &str| s.count(k);
        let mut lines = vec![
            Line::from(format!(
                "queue       inbox {}  pending {}  waiting_lock {}  active {}  done {}  failed {}  cancelled {}  rejected {}",
                q("inbox"), q("pending"), q("waiting_lock"), q("active"), q("done"), q("failed"),
                q("cancelled"), q("rejected")
            )),
            Line::from(format!(
                "throughput  {} done in the last minute · {} in the last hour",
                s.done_last_minute, s.done_last_hour
            )),
            Line::from(format!("spend today ${:.4} (UTC day; LLM calls and agent CLIs)", s.spend_today_usd)),
        ];
        let waiting: Vec<&SessionRow> =
            s.sessions.iter().filter(|x| x.approval.is_some()).collect();
        if waiting.is_empty() {
            lines.push(Line::from("approvals   none waiting"));
        } else {
            let list = waiting
                .iter()
                .filter_map(|x| {
                    let a = x.approval.as_ref()?;
                    Some(format!(
                        "{} {} approve? {}",
                        x.name,
                        a.id,
                        a.question
                            .action
                            .as_deref()
                            .unwrap_or("(action unreadable)")
                    ))
                })
                .collect::<Vec<_>>()
                .join(" · ");
            lines.push(Line::styled(
                format!("approvals   {} waiting: {list}", waiting.len()),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ));
        }
        Paragraph::new(lines).block(Block::new().borders(Borders::TOP | Borders::BOTTOM))
    }

    fn block(&self, title: &str, panel: Panel) -> Block<'static> {
        let style = if self.panel == panel {
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        Block::new()
            .borders(Borders::ALL)
            .title(title.to_string())
            .border_style(style)
    }

    fn render_sessions(&self, frame: &mut Frame, area: Rect, sessions: &[&SessionRow]) {
        let now = self.snapshot.taken_at;
        let rows = sessions.iter().map(|s| {
            let state = match &s.approval {
                Some(a) => format!("{} {}", s.state, a.id),
                None => s.state.clone(),
            };
            Row::new([
                Cell::from(s.name.clone()),
                Cell::from(state).style(state_style(&s.state)),
                Cell::from(s.task.clone().unwrap_or_default()),
                Cell::from(elapsed(now, s.since)),
                Cell::from(s.preview.clone().unwrap_or_default()),
            ])
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(14),
                Constraint::Length(24),
                Constraint::Length(28),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(Row::new(["session", "state", "task", "elapsed", "screen"]).style(HEADER))
        .block(self.block(&format!("sessions ({})", sessions.len()), Panel::Sessions))
        .row_highlight_style(selected_style(self.panel == Panel::Sessions));
        let mut state = TableState::default().with_selected(
            self.selected_session
                .as_ref()
                .and_then(|n| sessions.iter().position(|s| &s.name == n)),
        );
        frame.render_stateful_widget(table, area, &mut state);
    }

    fn render_tasks(&self, frame: &mut Frame, area: Rect, tasks: &[&TaskRow]) {
        let now = self.snapshot.taken_at;
        let rows = tasks.iter().map(|t| {
            let text = match &t.error {
                Some(e) => format!("{} — {e}", t.prompt),
                None => t.prompt.clone(),
            };
            Row::new([
                Cell::from(t.id.clone()),
                Cell::from(t.state.clone()).style(state_style(&t.state)),
                Cell::from(t.session.clone().unwrap_or_default()),
                Cell::from(elapsed(now, t.received_at)),
                Cell::from(text),
            ])
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(28),
                Constraint::Length(12),
                Constraint::Length(14),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(Row::new(["task", "state", "session", "age", "prompt / error"]).style(HEADER))
        .block(self.block(&format!("tasks ({})", tasks.len()), Panel::Tasks))
        .row_highlight_style(selected_style(self.panel == Panel::Tasks));
        let mut state = TableState::default().with_selected(
            self.selected_task
                .as_ref()
                .and_then(|n| tasks.iter().position(|t| &t.id == n)),
        );
        frame.render_stateful_widget(table, area, &mut state);
    }

    fn render_nodes(&self, frame: &mut Frame, area: Rect) {
        let rows = self.snapshot.nodes.iter().map(|n| {
            let hb = n.heartbeat.as_ref();
            Row::new([
                if n.this {
                    format!("{} (this)", n.node)
                } else {
                    n.node.clone()
                },
                n.status.clone(),
                n.silent_ms
                    .map_or_else(String::new, |ms| format!("{:.1} s", ms as f64 / 1000.0)),
                hb.map_or_else(String::new, |h| h.running.to_string()),
                hb.map_or_else(String::new, |h| h.free.values().sum::<u32>().to_string()),
                n.owned.to_string(),
                hb.map_or_else(String::new, |h| if h.draining { "yes" } else { "" }.into()),
            ])
        });
        let table = Table::new(rows, [Constraint::Length(16); 7])
            .header(
                Row::new([
                    "node", "status", "silent", "running", "free", "owned", "draining",
                ])
                .style(HEADER),
            )
            .block(Block::new().borders(Borders::ALL).title("nodes"));
        frame.render_widget(table, area);
    }

    fn footer_line(&self) -> Line<'_> {
        if let Some(m) = &self.message {
            return Line::styled(m.clone(), Style::new().fg(Color::Yellow));
        }
        if self.editing_filter {
            return Line::from("type to filter · Enter keep · Esc clear");
        }
        if let Some(p) = self.snapshot.problems.first() {
            return Line::styled(format!("could not read {p}"), Style::new().fg(Color::Red));
        }
        Line::from(
            "q quit  ↑↓/jk select  Tab panel  / filter  s sort  a approve  d deny  \
             c cancel  r retry  Enter attach",
        )
    }
}

/// Rows of the summary box: borders and four lines.
const SUMMARY_ROWS: usize = 6;

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

fn selected_style(focused: bool) -> Style {
    if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().add_modifier(Modifier::UNDERLINED)
    }
}

/// Whether a row passes the filter `f` (already lower case): empty, or contained in one
/// of the row's `fields`, ignoring case.
fn matches_filter<'a>(f: &str, fields: impl IntoIterator<Item = Option<&'a str>>) -> bool {
    f.is_empty()
        || fields
            .into_iter()
            .flatten()
            .any(|x| x.to_lowercase().contains(f))
}

/// Sessions and tasks that need a person first, then the working ones, then the rest.
fn state_rank(state: &str) -> u8 {
    match state {
        "waiting_input" => 0,
        "failed" | "dead" | "limited" => 1,
        "busy" | "active" | "attached" => 2,
        "starting" | "pending" | "waiting_lock" => 3,
        "idle" => 4,
        _ => 5,
    }
}

fn state_style(state: &str) -> Style {
    match state {
        "waiting_input" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        "dead" | "failed" | "limited" => Style::new().fg(Color::Red),
        "busy" | "active" => Style::new().fg(Color::Green),
        "attached" => Style::new().fg(Color::Cyan),
        _ => Style::new(),
    }
}

/// `since` to `now` as `42s`, `7m05s`, `3h12m` or `2d04h`.
fn elapsed(now: DateTime<Utc>, since: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests;
