//! Sessions in the scheduler: starting them from config, applying config edits live,
//! restarting dead ones with backoff, and publishing `sessions/<name>.json`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Daemon;
use crate::config::{Config, ResolvedSession};
use crate::durable;
use crate::log::event;
use crate::session::runner::{self, Command, SessionEvent, SessionHandle, SessionMessage};
use crate::session::{SessionFile, SessionState};

/// A session has to stay up this long for its restart backoff to reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Longest delay between a session's state change and its `sessions/<name>.json`.
pub(crate) const SESSION_FILE_DELAY: Duration = Duration::from_millis(50);

/// What the scheduler knows about one configured session.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    pub resolved: ResolvedSession,
    pub handle: Option<SessionHandle>,
    pub generation: u64,
    pub state: SessionState,
    pub since: DateTime<Utc>,
    pub task: Option<String>,
    pub pid: Option<u32>,
    pub started_at: Option<Instant>,
    pub restarts: u32,
    pub consecutive_deaths: u32,
    pub restart_at: Option<Instant>,
    pub last_exit: Option<String>,
    /// New config to apply once the program is stopped.
    pub replace_with: Option<ResolvedSession>,
    /// Removed from config: delete once stopped.
    pub removed: bool,
    /// A permission question waiting for `architect approve|deny`.
    pub approval: Option<crate::session::PendingApproval>,
    /// Parked by a usage limit until then.
    pub limited_until: Option<DateTime<Utc>>,
    /// The conversation the program had (profiles with `[resume]`).
    pub conversation: Option<String>,
    /// The running program was started to resume `conversation`.
    pub resuming: bool,
    /// The attach and watch clients of the running program: while a person is attached
    /// the session shows as `attached` and takes no new task.
    pub presence: crate::session::presence::Presence,
}

impl SessionSlot {
    fn new(resolved: ResolvedSession) -> Self {
        Self {
            resolved,
            handle: None,
            generation: 0,
            state: SessionState::Dead,
            since: Utc::now(),
            task: None,
            pid: None,
            started_at: None,
            restarts: 0,
            consecutive_deaths: 0,
            restart_at: None,
            last_exit: None,
            replace_with: None,
            removed: false,
            approval: None,
            limited_until: None,
            conversation: None,
            resuming: false,
            presence: crate::session::presence::Presence::default(),
        }
    }

    /// Idle with no task, not held by a person (`architect attach`) and not being
    /// replaced: may take a task.
    pub fn is_free(&self) -> bool {
        self.state == SessionState::Idle
            && !self.presence.held()
            && self.task.is_none()
            && self.handle.is_some()
            && self.replace_with.is_none()
            && !self.removed
    }

    /// Asks the program to stop (its thread reports `Exited`).
    pub fn stop(&mut self) {
        if let Some(h) = &self.handle {
            h.send(Command::Stop);
        }
        self.restart_at = None;
    }
}

/// The conversation a session's next program starts with, and the slot updated for it:
/// after a death, the one it had (unless resuming it already failed: the program died
/// before it was ready); else a new one when architect picks the id.
fn conversation_for(slot: &mut SessionSlot, after_death: bool) -> Option<runner::Conversation> {
    let spec = slot.resolved.profile.spec.resume.clone()?;
    if after_death {
        if let Some(id) = slot.conversation.clone() {
            slot.resuming = true;
            return Some(runner::Conversation { id, resume: true });
        }
    }
    slot.resuming = false;
    match spec.id {
        crate::profile::ResumeId::Start => {
            let id = crate::session::marks::new_uuid();
            slot.conversation = Some(id.clone());
            Some(runner::Conversation { id, resume: false })
        }
        crate::profile::ResumeId::Hook => {
            slot.conversation = None;
            None
        }
    }
}

impl Daemon {
    /// Applies `self.config.sessions`: starts new sessions, stops removed ones, restarts
    /// changed ones (after their current task). `initial` also clears stale
    /// `sessions/*.json` files of sessions no longer configured.
    pub(super) fn apply_sessions(&mut self, initial: bool) {
        // In a fleet, each node runs the sessions that name it.
        let wanted: Vec<ResolvedSession> = self
            .config
            .sessions
            .iter()
            .filter(|s| self.config.runs_here(s))
            .cloned()
            .collect();
        if initial {
            let mut warned = std::collections::HashSet::new();
            for r in &wanted {
                if let Some(missing) = r.profile.missing_signals() {
                    if warned.insert(r.profile.name.clone()) {
                        tracing::warn!(
                            "profile {0} (config/profiles/{0}.toml) lacks what the built-in one has: {missing}; \
                             `architect init --force` rewrites the built-in profiles",
                            r.profile.name
                        );
                    }
                }
            }
        }
        let names: std::collections::HashSet<String> =
            wanted.iter().map(|s| s.spec.name.clone()).collect();
        for (name, slot) in &mut self.sessions {
            if !names.contains(name) && !slot.removed {
                tracing::info!(session = %name, "removed from config: stopping");
                slot.removed = true;
                if slot.handle.is_some() {
                    if slot.task.is_none() {
                        slot.stop();
                    }
                } else {
                    slot.restart_at = None;
                }
            }
        }
        let gone: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.removed && s.handle.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.forget_session(&name);
        }
        for r in wanted {
            let name = r.spec.name.clone();
            match self.sessions.get_mut(&name) {
                None => {
                    self.sessions.insert(name.clone(), SessionSlot::new(r));
                    self.start_session(&name, false);
                }
                Some(slot) => {
                    slot.removed = false;
                    if slot.resolved.needs_restart(&r) {
                        tracing::info!(session = %name, "config changed: restarting");
                        if slot.handle.is_none() {
                            slot.resolved = r;
                            slot.replace_with = None;
                            slot.consecutive_deaths = 0;
                            self.start_session(&name, false);
                        } else {
                            slot.replace_with = Some(r);
                            if slot.task.is_none() {
                                slot.stop();
                            }
                        }
                    } else {
                        slot.resolved = r;
                        self.publish_session(&name);
                    }
                }
            }
        }
        if initial {
            let dir = self.spool.dir("sessions");
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.filter_map(std::result::Result::ok) {
                    let fname = e.file_name().to_string_lossy().into_owned();
                    if let Some(n) = fname.strip_suffix(".json") {
                        if !names.contains(n) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
            }
        }
    }

    fn forget_session(&mut self, name: &str) {
        self.sessions.remove(name);
        self.dirty_sessions.remove(name);
        let _ = std::fs::remove_file(self.spool.dir("sessions").join(format!("{name}.json")));
        self.log.record(
            None,
            Some(name),
            event::SessionState {
                state: "removed".into(),
                previous: None,
                reason: Some("no longer in config/sessions.toml".into()),
            },
        );
    }

    /// Reloads config after an edit. An invalid config is reported and the running one
    /// kept.
    pub(super) fn reload_config(&mut self) {
        match Config::load(&self.config.dir) {
            Ok(new) => {
                if new.node != self.config.node {
                    tracing::warn!("node.name changes take effect at the next daemon start");
                }
                let node = self.config.node.clone();
                let nodes_changed = new.nodes != self.config.nodes;
                self.config = Config { node, ..new };
                if nodes_changed {
                    // Liveness is judged afresh: a node is unknown until its next beat.
                    if self.config.nodes.is_fleet()
                        != (self.spool.member_node().as_deref() == Some(self.config.node.as_str()))
                    {
                        tracing::warn!(
                            "nodes.toml changed whether this spool is shared: the fleet's \
                             layout (nodes/<node>/) takes effect at the next daemon start"
                        );
                    }
                    self.fleet = super::fleet::FleetShell::for_config(&self.config, &self.spool);
                }
                self.reload_policy();
                self.recorder.apply(self.config.recording);
                self.reload_notify();
                self.log.record(
                    None,
                    None,
                    event::ConfigApplied {
                        sessions: Some(
                            self.config
                                .sessions
                                .iter()
                                .map(|s| s.spec.name.clone())
                                .collect(),
                        ),
                        applied: true,
                        error: None,
                        file: None,
                    },
                );
                self.apply_sessions(false);
            }
            Err(e) => self.config_not_applied(None, &e.to_string()),
        }
    }

    /// Reloads `config/policy.toml` (kept as it was when the new file is invalid) and
    /// hands it to every session.
    fn reload_policy(&mut self) {
        match crate::policy::Policy::load(&self.config.dir) {
            Ok(policy) => {
                self.approvals = crate::session::approval::Approvals {
                    policy: std::sync::Arc::new(policy),
                    protected_branches: self.config.git.protected_branches.clone(),
                };
                for slot in self.sessions.values() {
                    if let Some(h) = &slot.handle {
                        h.send(Command::SetApprovals(self.approvals.clone()));
                    }
                }
            }
            Err(e) => self.config_not_applied(Some("policy.toml"), &e.to_string()),
        }
    }

    /// An edit of `file` (`None`: the config as a whole) that could not be applied:
    /// the running one is kept, and the log says why (`config_applied`, `applied: false`).
    fn config_not_applied(&mut self, file: Option<&str>, error: &str) {
        let what = file.unwrap_or("config");
        tracing::error!("{what} not applied, keeping the running one: {error}");
        self.log.record(
            None,
            None,
            event::ConfigApplied {
                sessions: None,
                applied: false,
                error: Some(error.to_string()),
                file: file.map(str::to_string),
            },
        );
    }

    /// Reloads `config/notify.toml` (kept as it was when the new file is invalid), with
    /// the sessions' profiles as configured now.
    fn reload_notify(&mut self) {
        match crate::notify::Rules::load(&self.config.dir) {
            Ok(rules) => {
                tracing::info!("notifications: {} rule(s)", rules.0.len());
                self.notify
                    .set_rules(rules, super::session_profiles(&self.config));
            }
            Err(e) => self.config_not_applied(Some("notify.toml"), &e.to_string()),
        }
    }

    /// Starts a session's program. `after_death`: it died and is being restarted, so a
    /// profile with `[resume]` continues its conversation.
    fn start_session(&mut self, name: &str, after_death: bool) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let tx = self.session_tx.clone();
        let Some(slot) = self.sessions.get_mut(name) else {
            return;
        };
        slot.restart_at = None;
        slot.generation = generation;
        let conversation = conversation_for(slot, after_death);
        if let Some(c) = &conversation {
            tracing::info!(session = %name, conversation = %c.id, resume = c.resume, "conversation");
        }
        match runner::start(
            slot.resolved.clone(),
            generation,
            tx,
            self.approvals.clone(),
            self.llm.clone(),
            conversation,
            &self.recorder,
        ) {
            Ok(h) => {
                slot.handle = Some(h);
                slot.started_at = Some(Instant::now());
                slot.state = SessionState::Starting;
                slot.since = Utc::now();
            }
            Err(e) => {
                tracing::error!(session = %name, "cannot start session thread: {e}");
                slot.last_exit = Some(e.to_string());
                self.schedule_restart(name);
            }
        }
        self.publish_session(name);
    }

    fn schedule_restart(&mut self, name: &str) {
        let base = self.config.daemon.restart_backoff_ms;
        let max = self.config.daemon.restart_backoff_max_ms;
        let Some(slot) = self.sessions.get_mut(name) else {
            return;
        };
        let delay = crate::backoff::backoff_ms(base, slot.consecutive_deaths, max);
        slot.consecutive_deaths += 1;
        slot.restart_at = Some(Instant::now() + Duration::from_millis(delay));
        tracing::info!(session = %name, "restarting in {delay} ms");
    }

    pub(super) fn restart_due_sessions(&mut self, now: Instant) {
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.restart_at.is_some_and(|at| at <= now) && s.handle.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            if let Some(slot) = self.sessions.get_mut(&name) {
                slot.restarts += 1;
            }
            self.start_session(&name, true);
        }
    }

    /// Handles one message from a session thread.
    pub(super) fn on_session_message(&mut self, msg: SessionMessage) {
        let SessionMessage {
            session,
            generation,
            event,
        } = msg;
        let Some(slot) = self.sessions.get_mut(&session) else {
            return;
        };
        if slot.generation != generation {
            return; // from a program that has since been replaced
        }
        match event {
            SessionEvent::Started { pid } => {
                slot.pid = Some(pid);
                let (cmd, profile) = (
                    slot.resolved.command.clone(),
                    slot.resolved.spec.profile.clone(),
                );
                self.log.record(
                    None,
                    Some(&session),
                    event::SessionStarted {
                        pid,
                        command: cmd,
                        profile,
                        generation,
                    },
                );
            }
            SessionEvent::State(state) => self.set_session_state(&session, state),
            SessionEvent::PromptSent {
                task_id,
                written_at,
            } => {
                let latency = self.assigned_at(&task_id).map(|t| {
                    #[allow(clippy::cast_precision_loss)]
                    let us = (Utc::now() - t).num_microseconds().unwrap_or(i64::MAX) as f64;
                    us / 1000.0
                });
                self.log.record(
                    Some(&task_id),
                    Some(&session),
                    event::PromptSent {
                        since_assigned_ms: latency,
                        written_at,
                    },
                );
            }
            SessionEvent::Finished { task_id, outcome } => {
                if slot.task.as_deref() == Some(task_id.as_str()) {
                    slot.task = None;
                }
                if slot.started_at.is_some_and(|t| t.elapsed() > HEALTHY_AFTER) {
                    slot.consecutive_deaths = 0;
                }
                self.on_task_finished(&session, &task_id, outcome);
                self.after_task(&session);
            }
            SessionEvent::Attached { client, mode } => {
                self.on_viewer_attached(&session, client, mode);
            }
            SessionEvent::Detached {
                client,
                mode,
                reason,
            } => self.on_viewer_detached(&session, client, mode, &reason),
            SessionEvent::Exited {
                status,
                requested,
                delivery,
            } => {
                slot.approval = None;
                self.clear_viewers(&session, &status);
                self.on_exited(&session, &status, requested, delivery);
            }
            SessionEvent::Conversation { id } => {
                if slot.conversation.as_deref() != Some(id.as_str()) {
                    tracing::info!(session = %session, conversation = %id, "conversation reported");
                    slot.conversation = Some(id);
                }
            }
            SessionEvent::Permission {
                task_id,
                question,
                decision,
                rule,
                reason,
                by,
            } => {
                slot.approval = None;
                tracing::info!(session = %session, "{decision} {:?} ({rule})", question.action);
                self.log.record(
                    task_id.as_deref(),
                    Some(&session),
                    event::PermissionDecided {
                        permission: question.permission,
                        kind: question.kind,
                        action: question.action,
                        tool: question.tool,
                        decision,
                        rule,
                        reason,
                        by,
                    },
                );
                self.publish_session(&session);
            }
            SessionEvent::ApprovalNeeded {
                id,
                task_id,
                question,
                verdict,
            } => {
                tracing::warn!(
                    session = %session,
                    "approval needed for {:?} ({}): architect approve|deny {session}",
                    question.action,
                    verdict.rule
                );
                let data = event::ApprovalNeeded {
                    question: id.clone(),
                    permission: question.permission.clone(),
                    kind: question.kind,
                    action: question.action.clone(),
                    tool: question.tool.clone(),
                    rule: verdict.rule.clone(),
                    reason: verdict.reason.clone(),
                };
                slot.approval = Some(crate::session::PendingApproval {
                    id,
                    question,
                    rule: verdict.rule,
                    reason: verdict.reason,
                    since: Utc::now(),
                });
                self.log.record(task_id.as_deref(), Some(&session), data);
                self.publish_session(&session);
            }
            SessionEvent::Worktree(prepared) => {
                let task = slot.task.clone();
                self.log.record(task.as_deref(), Some(&session), prepared);
            }
            SessionEvent::AnswerRefused { reason } => {
                tracing::warn!(session = %session, "approve/deny not applied: {reason}");
            }
            SessionEvent::PromptAccepted {
                task_id,
                evidence,
                after_enter_ms,
            } => {
                self.log.record(
                    Some(&task_id),
                    Some(&session),
                    event::PromptAccepted {
                        evidence,
                        after_enter_ms,
                    },
                );
            }
            SessionEvent::Limited { message, reset_in } => {
                let until = Utc::now()
                    + chrono::Duration::from_std(reset_in).unwrap_or(chrono::Duration::MAX);
                slot.limited_until = Some(until);
                let task = slot.task.clone();
                tracing::warn!(session = %session, "usage limit: {message}; parked until {until}");
                self.log.record(
                    task.as_deref(),
                    Some(&session),
                    event::SessionLimited {
                        message,
                        reset_in_s: reset_in.as_secs(),
                        until,
                    },
                );
                self.publish_session(&session);
            }
            SessionEvent::Usage { task_id, usage } => {
                self.log_agent_usage(&task_id, &session, &usage);
            }
            SessionEvent::Hook {
                task_id,
                event,
                signal,
                source,
            } => {
                self.log.record(
                    task_id.as_deref(),
                    Some(&session),
                    event::HookReceived {
                        event,
                        signal,
                        source,
                    },
                );
            }
        }
    }

    /// Applies a pending config change or removal once a session is between tasks.
    fn after_task(&mut self, name: &str) {
        if let Some(slot) = self.sessions.get_mut(name) {
            if slot.task.is_none() && (slot.replace_with.is_some() || slot.removed) {
                slot.stop();
            }
        }
        self.publish_session(name);
    }

    fn on_exited(
        &mut self,
        name: &str,
        status: &str,
        requested: bool,
        delivery: Option<crate::session::machine::Delivery>,
    ) {
        let Some(slot) = self.sessions.get_mut(name) else {
            return;
        };
        if slot.resuming && slot.state == SessionState::Starting {
            // Resuming failed (the program died before it was ready): start afresh.
            tracing::warn!(session = %name, "could not resume the conversation; the next start is a new one");
            slot.conversation = None;
            slot.resuming = false;
        }
        slot.handle = None;
        slot.pid = None;
        slot.last_exit = Some(status.to_string());
        let task = slot.task.take();
        let uptime_ms = slot
            .started_at
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.log.record(
            task.as_deref(),
            Some(name),
            event::SessionExited {
                status: status.to_string(),
                requested,
                uptime_ms,
            },
        );
        self.set_session_state(name, SessionState::Dead);
        if let Some(id) = task {
            self.on_task_session_exited(name, &id, status, delivery);
        }
        if self.shutting_down {
            return;
        }
        let Some(slot) = self.sessions.get_mut(name) else {
            return;
        };
        if slot.removed {
            self.forget_session(name);
        } else if let Some(new) = slot.replace_with.take() {
            slot.resolved = new;
            slot.consecutive_deaths = 0;
            self.start_session(name, false);
        } else {
            if slot.started_at.is_some_and(|t| t.elapsed() > HEALTHY_AFTER) {
                slot.consecutive_deaths = 0;
            }
            self.schedule_restart(name);
        }
    }

    fn set_session_state(&mut self, name: &str, state: SessionState) {
        let Some(slot) = self.sessions.get_mut(name) else {
            return;
        };
        if slot.state == state {
            return;
        }
        let previous = slot.state;
        slot.state = state;
        slot.since = Utc::now();
        if state != SessionState::WaitingInput {
            slot.approval = None;
        }
        if state != SessionState::Limited {
            slot.limited_until = None;
        }
        let task = slot.task.clone();
        self.log.record(
            task.as_deref(),
            Some(name),
            event::SessionState {
                state: state.as_str().to_string(),
                previous: Some(previous.as_str().to_string()),
                reason: None,
            },
        );
        self.publish_session(name);
    }

    /// Marks `sessions/<name>.json` for rewriting. Writes are coalesced: at most one per
    /// session every [`SESSION_FILE_DELAY`], so a session flipping busy/idle many times a
    /// second costs one file write, not one per flip (each write is a new inode).
    pub(super) fn publish_session(&mut self, name: &str) {
        self.dirty_sessions.insert(name.to_string());
        if self.sessions_flush_at.is_none() {
            self.sessions_flush_at = Some(Instant::now() + SESSION_FILE_DELAY);
        }
    }

    /// Writes every session file marked by [`Daemon::publish_session`].
    pub(super) fn flush_session_files(&mut self) {
        self.sessions_flush_at = None;
        for name in std::mem::take(&mut self.dirty_sessions) {
            self.write_session_file(&name);
        }
    }

    /// Writes `sessions/<name>.json` (atomic, not fsynced: derived state).
    fn write_session_file(&self, name: &str) {
        let Some(slot) = self.sessions.get(name) else {
            return;
        };
        let file = SessionFile {
            name: name.to_string(),
            node: self.node().to_string(),
            profile: slot.resolved.spec.profile.clone(),
            role: slot.resolved.spec.role.clone(),
            state: slot.presence.shown(slot.state),
            task_id: slot.task.clone(),
            pid: slot.pid,
            since: slot.since,
            restarts: slot.restarts,
            last_exit: slot.last_exit.clone(),
            limited_until: slot.limited_until,
            approval: slot.approval.clone(),
            attached: slot.presence.info(slot.state),
        };
        let path = self.spool.dir("sessions").join(format!("{name}.json"));
        match serde_json::to_vec_pretty(&file) {
            Ok(bytes) => {
                if let Err(e) = durable::write_atomic_volatile(&path, &bytes) {
                    tracing::error!("{e}");
                }
            }
            Err(e) => tracing::error!("session file: {e}"),
        }
    }
}
