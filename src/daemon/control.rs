//! Requests from the CLI, read from `control/` (cancel, retry, send, approve/deny). Each
//! file is claimed before it is applied, so it is applied at most once however often it
//! is seen; a file that cannot be claimed is not applied, and said once; a bad file is
//! logged and removed.
//!
//! Text for a session (send, approve, deny) is claimed by removing its file: it is never
//! typed twice. A cancel or a retry is claimed by renaming its file to a hidden name
//! (`.claimed.<name>`), removed with the group commit once what it changed is durable. A
//! crash before that would otherwise lose the request while the log says it was applied;
//! at start-up a claimed file goes back to `control/` and is applied again — to a task
//! that is where the request found it, since what it changed never reached the disk.

use super::Daemon;
use crate::durable;
use crate::log::event;
use crate::session::runner::Command;
use crate::spool::task::TaskState;
use crate::spool::ControlRequest;

/// The prefix of a claimed cancel or retry file, removed once what it changed is durable.
const CLAIMED: &str = ".claimed.";

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
        self.control_waiting = false;
        for name in names {
            let path = dir.join(&name);
            let parsed = durable::read_regular(&path, 1024 * 1024)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<ControlRequest>(&b).map_err(|e| e.to_string())
                });
            if let Ok(ControlRequest::Retry { task_id }) = &parsed {
                if self.batch_holds_task(task_id) {
                    // The disk does not show where the task is yet (the batch keeps its
                    // moves while the disk refuses them): a retry read from it could move
                    // the task from where it no longer is. It waits for the batch.
                    self.control_waiting = true;
                    continue;
                }
            }
            let durable = matches!(
                parsed,
                Ok(ControlRequest::Cancel { .. } | ControlRequest::Retry { .. })
            );
            let claimed = dir.join(format!("{CLAIMED}{name}"));
            // Claim first, then apply: a request is applied only by the listing that
            // claimed its file, so it is applied once at most, however often it is seen.
            let claim = if durable {
                std::fs::rename(&path, &claimed)
            } else {
                std::fs::remove_file(&path)
            };
            match claim {
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
            if durable {
                self.batch.remove_after(&claimed);
            }
        }
    }

    /// At start-up: requests claimed by a daemon that stopped before what they changed
    /// was durable go back to `control/`, to be applied again.
    pub(super) fn unclaim_control(&mut self) {
        let dir = self.spool.dir("control");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.filter_map(std::result::Result::ok) {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Some(original) = name.strip_prefix(CLAIMED) else {
                continue;
            };
            if let Err(err) = std::fs::rename(e.path(), dir.join(original)) {
                tracing::error!("control request {original}, claimed before a stop: {err}");
            } else {
                tracing::warn!("control request {original} applied again: the daemon stopped before what it changed was on disk");
            }
        }
    }

    /// Whether the batch keeps a write or rename of task `id`'s file.
    fn batch_holds_task(&self, id: &str) -> bool {
        TaskState::ALL
            .into_iter()
            .any(|s| self.batch.holds(&self.spool.task_path(s, id)))
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
