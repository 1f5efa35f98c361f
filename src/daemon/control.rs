//! Requests from the CLI, read from `control/` (cancel, retry, send, approve/deny). Each
//! file is claimed (removed) before it is applied, so it is applied at most once; a file
//! that cannot be removed is not applied, and said once; a bad file is logged and removed.

use super::Daemon;
use crate::log::event;
use crate::session::runner::Command;
use crate::spool::fsio;
use crate::spool::task::TaskState;
use crate::spool::ControlRequest;

impl Daemon {
    /// Applies every request waiting in `control/`, oldest first (names are ULIDs).
    pub(super) fn process_control(&mut self) {
        // Requests read records from disk: publish this pass's moves first.
        self.sync_dirs();
        let dir = self.spool.dir("control");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(std::result::Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let parsed = fsio::read_regular(&path, 1024 * 1024)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<ControlRequest>(&b).map_err(|e| e.to_string())
                });
            // Claim first, then apply: a request is applied only by the listing that
            // removed its file, so it is applied once at most, however often it is seen.
            match std::fs::remove_file(&path) {
                Ok(()) => self.unremovable_control.remove(&name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    if self.unremovable_control.insert(name.clone()) {
                        tracing::error!(
                            "control request {name} cannot be removed ({e}): not applied, so \
                             that it is never applied twice; remove it by hand and ask again"
                        );
                    }
                    continue;
                }
            };
            match parsed {
                Ok(req) => self.apply_control(req),
                Err(e) => tracing::warn!("ignoring bad control request {name}: {e}"),
            }
        }
    }

    fn apply_control(&mut self, req: ControlRequest) {
        match req {
            ControlRequest::Cancel { task_id } => self.cancel(&task_id),
            ControlRequest::Retry { task_id } => self.manual_retry(&task_id),
            ControlRequest::Answer {
                session,
                approve,
                question,
            } => match self.sessions.get(&session).and_then(|s| s.handle.as_ref()) {
                Some(h) => h.send(Command::Answer { approve, question }),
                None => tracing::warn!("approve/deny: no running session {session:?}"),
            },
            ControlRequest::Send {
                session,
                text,
                enter,
            } => {
                let Some(slot) = self.sessions.get(&session) else {
                    tracing::warn!("send: no session {session:?}");
                    return;
                };
                if let Some(h) = &slot.handle {
                    h.send(Command::Send {
                        text: text.clone(),
                        enter,
                    });
                    self.log.record(
                        slot.task.as_deref(),
                        Some(&session),
                        event::TextSent {
                            bytes: text.len() as u64,
                            enter,
                        },
                    );
                }
            }
        }
    }

    fn cancel(&mut self, id: &str) {
        if self.sched.task(id).is_none() {
            tracing::warn!("cancel: task {id} is not pending or active here");
            return;
        }
        self.decide(crate::scheduler::Input::Cancel {
            task_id: id.to_string(),
        });
    }

    fn manual_retry(&mut self, id: &str) {
        let state = self.spool.locate(id);
        let Some(dir @ (TaskState::Failed | TaskState::Cancelled)) = state else {
            tracing::warn!("retry: task {id} is not in failed/ or cancelled/ ({state:?})");
            return;
        };
        let record = match self.spool.read_record(&self.spool.task_path(dir, id)) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("retry: {e}");
                return;
            }
        };
        let resources = self.resources(&record.task);
        let on_disk = self.deps_on_disk(&record.task.depends_on);
        self.decide(crate::scheduler::Input::Retry {
            dir,
            record,
            resources,
            on_disk,
        });
    }
}
