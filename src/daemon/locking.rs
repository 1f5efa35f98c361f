//! Task locks in the scheduler: resolving a task's `locks` into [`Resource`]s at intake,
//! taking them all or nothing right before the task is handed to a session, parking the
//! task (`waiting_lock`) when they are held elsewhere, and releasing them when an attempt
//! ends.
//!
//! A parked task leaves the ready queue, so the tasks behind it are dispatched. Parked
//! tasks go back into the queue the moment this daemon releases a lock, and every
//! [`LOCK_POLL`] while any are parked (a holder outside the daemon, such as
//! `architect lock acquire` or a process that died, frees its locks without telling us).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;

use super::Daemon;
use crate::locks::{Conflict, HolderKind, Requester, Resource};
use crate::log::EventType;
use crate::spool::task::{LockWait, TaskState};

/// How often parked tasks are tried again while any are waiting.
pub(super) const LOCK_POLL: Duration = Duration::from_millis(50);

/// What happened when a task's locks were tried.
pub(super) enum LockAttempt {
    /// The task needs no locks, or holds them all now.
    Held,
    /// Something else holds one: the task is parked.
    Parked,
    /// The locks cannot be taken at all (I/O error); the task failed.
    Failed,
}

impl Daemon {
    /// Takes task `id`'s locks for `session`, or parks the task. `contended` remembers the
    /// conflicts seen in this dispatch pass, so a resource found held is not tried again
    /// for every task queued behind it.
    pub(super) fn take_locks(
        &mut self,
        id: &str,
        session: &str,
        contended: &mut HashMap<Resource, Conflict>,
    ) -> LockAttempt {
        let Some(t) = self.live.get(id) else {
            return LockAttempt::Failed;
        };
        if t.resources.is_empty() {
            return LockAttempt::Held;
        }
        let resources = t.resources.clone();
        let known = resources.iter().find_map(|r| contended.get(r).cloned());
        let conflict = match known {
            Some(c) => c,
            None => {
                let who = Requester {
                    by: HolderKind::Daemon,
                    task: Some(id.to_string()),
                    session: Some(session.to_string()),
                    node: self.config.node.clone(),
                    note: None,
                };
                match self.lock_table.try_acquire(&resources, &who) {
                    Ok(Ok(held)) => {
                        let waited_ms = self.live.get_mut(id).and_then(|t| {
                            t.record
                                .waiting_lock
                                .take()
                                .map(|w| (Utc::now() - w.since).num_milliseconds().max(0))
                        });
                        if waited_ms.is_some() {
                            // The pending record said waiting_lock: rewrite it before it
                            // moves to active/ (the batch keeps this order).
                            if let Some(record) = self.live.get(id).map(|t| t.record.clone()) {
                                if let Err(e) = self.write_record(TaskState::Pending, &record) {
                                    tracing::error!("{e}");
                                }
                            }
                        }
                        self.log.record(
                            EventType::LockAcquired,
                            Some(id),
                            Some(session),
                            json!({"resources": held.resources(), "waited_ms": waited_ms.unwrap_or(0)}),
                        );
                        self.held_locks.insert(id.to_string(), held);
                        return LockAttempt::Held;
                    }
                    Ok(Err(c)) => {
                        contended.insert(c.resource.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::error!(task = id, "taking locks: {e}");
                        self.finish(
                            id,
                            TaskState::Failed,
                            None,
                            Some(format!("could not take its locks: {e}")),
                        );
                        return LockAttempt::Failed;
                    }
                }
            }
        };
        self.park(id, &resources, conflict);
        LockAttempt::Parked
    }

    /// Parks a task whose locks are held elsewhere; logs and records the first wait.
    fn park(&mut self, id: &str, resources: &[Resource], conflict: Conflict) {
        self.lock_waiters.push(id.to_string());
        if self.lock_poll_at.is_none() {
            self.lock_poll_at = Some(Instant::now() + LOCK_POLL);
        }
        let Some(t) = self.live.get_mut(id) else {
            return;
        };
        if t.record.waiting_lock.is_some() {
            return;
        }
        tracing::debug!(task = id, "waiting for locks: {conflict}");
        t.record.waiting_lock = Some(LockWait {
            since: Utc::now(),
            blocked_by: conflict.clone(),
        });
        let record = t.record.clone();
        if let Err(e) = self.write_record(TaskState::Pending, &record) {
            tracing::error!("{e}");
        }
        self.log.record(
            EventType::LockWaiting,
            Some(id),
            None,
            json!({"resources": resources, "blocked_by": conflict, "reason": conflict.to_string()}),
        );
    }

    /// Releases task `id`'s locks (any attempt end), and gives parked tasks another try.
    pub(super) fn release_locks(&mut self, id: &str) {
        let Some(held) = self.held_locks.remove(id) else {
            return;
        };
        let session = self
            .live
            .get(id)
            .and_then(|t| t.session.clone().or_else(|| t.record.session.clone()));
        self.log.record(
            EventType::LockReleased,
            Some(id),
            session.as_deref(),
            json!({"resources": held.resources(), "held_ms": held.held_ms()}),
        );
        held.release();
        self.requeue_lock_waiters();
    }

    /// Puts every parked task back into the ready queue (dispatch parks those still held).
    pub(super) fn requeue_lock_waiters(&mut self) {
        self.lock_poll_at = None;
        for id in std::mem::take(&mut self.lock_waiters) {
            self.make_ready(&id);
        }
    }
}
