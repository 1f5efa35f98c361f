//! The bridge from `notify` to the scheduler. Watch events are hints, not the truth: the
//! scheduler lists the directories at start-up, every `reconcile_interval_ms`, and
//! whenever this bridge reports [`Hint::Rescan`] (a `Rescan` flag, a watcher error, an
//! event without paths, or a full channel). See `shared/RELIABILITY.md` rule 4.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Capacity of the watcher → scheduler channel. When it is full the event is dropped and
/// a rescan is requested instead (nothing is lost: the listing finds the file).
pub const CHANNEL_CAPACITY: usize = 4096;

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// An inbox file; `complete` when it was closed after writing or renamed in.
    Inbox {
        /// File name.
        name: String,
        /// Closed after writing (`IN_CLOSE_WRITE`) or moved in: safe to read now.
        complete: bool,
    },
    /// Something arrived in `control/`.
    Control,
    /// A file under the config directory changed.
    Config,
    /// Events may have been lost: list everything.
    Rescan,
}

/// The running watcher (dropping it stops watching).
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    /// Set when a hint had to be dropped; the scheduler rescans and clears it.
    pub overflowed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

/// Starts watching `inbox`, `control` and (recursively) `config`.
///
/// # Errors
/// [`Error::Watch`] when a watch cannot be added (for example inotify limits).
pub fn start(inbox: &Path, control: &Path, config: &Path, tx: mpsc::Sender<Hint>) -> Result<Watch> {
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    let (inbox_dir, control_dir, config_dir) =
        (canonical(inbox), canonical(control), canonical(config));
    let (inbox_w, control_w, config_w) =
        (inbox_dir.clone(), control_dir.clone(), config_dir.clone());
    let send = move |hint: Hint| {
        if tx.try_send(hint).is_err() {
            flag.store(true, Ordering::SeqCst);
            let _ = tx.try_send(Hint::Rescan);
        }
    };
    let handler = move |res: notify::Result<notify::Event>| {
        let event = match res {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!("watcher error, rescanning: {e}");
                send(Hint::Rescan);
                return;
            }
        };
        if event.need_rescan() || event.paths.is_empty() {
            send(Hint::Rescan);
            return;
        }
        let complete = matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        let relevant = complete
            || matches!(
                event.kind,
                EventKind::Create(CreateKind::File | CreateKind::Any)
                    | EventKind::Modify(ModifyKind::Name(_))
            );
        for path in &event.paths {
            let Some(dir) = path.parent() else { continue };
            if dir == inbox_dir {
                if relevant {
                    match path.file_name().map(|n| n.to_str()) {
                        Some(Some(name)) => send(Hint::Inbox {
                            name: name.to_string(),
                            complete,
                        }),
                        // A name that is not UTF-8: the listing rejects it.
                        Some(None) => send(Hint::Rescan),
                        None => {}
                    }
                }
            } else if dir == control_dir {
                if complete {
                    send(Hint::Control);
                }
            } else if path.starts_with(&config_dir)
                && !matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Open(_) | AccessKind::Read)
                )
            {
                send(Hint::Config);
            }
        }
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(|e| Error::Watch {
        path: inbox.to_path_buf(),
        source: e,
    })?;
    // Watch the canonical paths: event paths are the watched path joined with the name,
    // and the handler compares them with the canonical directories.
    for (dir, mode) in [
        (&inbox_w, RecursiveMode::NonRecursive),
        (&control_w, RecursiveMode::NonRecursive),
        (&config_w, RecursiveMode::Recursive),
    ] {
        watcher.watch(dir, mode).map_err(|e| Error::Watch {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    Ok(Watch {
        _watcher: watcher,
        overflowed,
    })
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
