//! Provider sessions (`kind = "provider"`): a session that runs a task by calling an LLM
//! API through [`crate::llm::router`] instead of driving a terminal. It speaks the same
//! protocol as the PTY runner (commands in, [`SessionEvent`]s out), so the scheduler
//! treats it like any session: idle, busy, one task at a time, restarts, cancels.
//!
//! The task's result is the model's reply (`result.output` and `result.reply`); every HTTP
//! attempt is an `llm_call` event carrying the task id, so its cost is in the log.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use super::messages::{Command, EventSink, SessionEvent, SessionMessage, SessionState};
use crate::llm::router::{Request, Router};
use crate::llm::ProvidersFile;
use crate::log::EventLog;
use crate::types::{AttemptEnd, TaskResult};

/// What provider sessions share: the providers config, the event log, and where the
/// breakers live.
#[derive(Debug)]
pub struct LlmContext {
    /// `config/providers.toml`.
    pub providers: ProvidersFile,
    /// The daemon's event log.
    pub log: Arc<EventLog>,
    /// `spool/providers/`.
    pub breakers: PathBuf,
    /// The budget ledger (spend from the log; reservations shared with every process
    /// on the node).
    pub budget: crate::llm::budget::Ledger,
}

/// Runs a provider session until `Stop`; called on the session's own thread.
pub(crate) fn run(
    name: &str,
    generation: u64,
    events: &EventSink,
    commands: &mpsc::Receiver<Command>,
    llm: &LlmContext,
) {
    let emit = |event: SessionEvent| {
        let _ = events.send(SessionMessage {
            session: name.to_string(),
            generation,
            event,
        });
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            emit(SessionEvent::Exited {
                status: format!("did not start: async runtime: {e}"),
                requested: false,
                delivery: None,
            });
            return;
        }
    };
    let http = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            emit(SessionEvent::Exited {
                status: format!("did not start: HTTP client: {e}"),
                requested: false,
                delivery: None,
            });
            return;
        }
    };
    emit(SessionEvent::Started {
        pid: std::process::id(),
    });
    emit(SessionEvent::State(SessionState::Idle));
    while let Ok(cmd) = commands.recv() {
        match cmd {
            Command::Run(a) => {
                emit(SessionEvent::State(SessionState::Busy));
                emit(SessionEvent::PromptSent {
                    task_id: a.task_id.clone(),
                    written_at: chrono::Utc::now(),
                });
                let router = Router {
                    budget: &llm.budget,
                    config: &llm.providers,
                    breakers: llm.breakers.clone(),
                    log: &llm.log,
                    http: http.clone(),
                };
                let req = Request {
                    prompt: &a.prompt,
                    provider: a.provider.as_deref(),
                    model: a.model.as_deref(),
                    complexity: a.complexity,
                    role: a.role.as_deref(),
                    task_id: Some(&a.task_id),
                    deadline: Instant::now() + a.timeout,
                };
                let outcome = match rt.block_on(router.ask(&req)) {
                    Ok(answer) => AttemptEnd::Completed(TaskResult {
                        output: answer.reply.clone(),
                        reply: Some(answer.reply),
                        ..TaskResult::default()
                    }),
                    Err(e) => AttemptEnd::Failed(TaskResult::default(), e.to_string()),
                };
                emit(SessionEvent::Finished {
                    task_id: a.task_id,
                    outcome,
                });
                emit(SessionEvent::State(SessionState::Idle));
            }
            Command::Stop => break,
            // No terminal: nothing to interrupt mid-call, type into, or answer.
            Command::Interrupt(_)
            | Command::Send { .. }
            | Command::Answer { .. }
            | Command::SetApprovals(_) => {}
        }
    }
    emit(SessionEvent::Exited {
        status: "stopped".into(),
        requested: true,
        delivery: None,
    });
}
