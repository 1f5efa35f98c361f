//! `architect nodes`: the nodes of `config/nodes.toml`, with what their heartbeats say
//! and whether this node's daemon sees them alive (its `nodes/<node>/view.json`, judged on
//! its own clock: a timestamp written on another machine is never trusted).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use architect::config::Config;
use architect::fleet::{Heartbeat, View};
use architect::spool::Spool;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use serde::Serialize;

/// One row of `architect nodes --json` (and of `architect top`'s nodes panel).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) node: String,
    /// This node.
    pub(crate) this: bool,
    /// `alive`, `dead` (no heartbeat change for the lease, as this node's daemon saw),
    /// `unknown` (no heartbeat seen), or `no view` (this node's daemon is not running).
    pub(crate) status: String,
    /// Since this node's daemon saw the heartbeat change, ms.
    pub(crate) silent_ms: Option<u64>,
    pub(crate) weight: u32,
    pub(crate) labels: Vec<String>,
    /// Tasks in its `pending/` and `active/`, as synced here (it owns them).
    pub(crate) owned: usize,
    pub(crate) heartbeat: Option<Heartbeat>,
}

/// The rows of `architect nodes` (one per `[[node]]` of `config/nodes.toml`; none for a
/// single-node spool), whether this node's daemon runs, and this node's name.
///
/// # Errors
/// The config cannot be loaded.
pub(crate) fn rows(spool: &Spool, config_dir: &Path) -> Result<(Vec<Row>, bool, String)> {
    let config = Config::load(config_dir).context("loading the config")?;
    let daemon = architect::daemon::DaemonLock::is_held(spool).is_some();
    let rows = rows_for(spool, &config);
    Ok((rows, daemon, config.node))
}

/// The rows of `architect nodes` for a loaded `config` (see [`rows`]).
pub(crate) fn rows_for(spool: &Spool, config: &Config) -> Vec<Row> {
    let daemon = architect::daemon::DaemonLock::is_held(spool).is_some();
    let view: Option<View> = if daemon {
        std::fs::read(spool.node_dir(&config.node).join("view.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    } else {
        None
    };
    config
        .nodes
        .node
        .iter()
        .map(|n| {
            let heartbeat = std::fs::read(spool.node_dir(&n.name).join("heartbeat.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Heartbeat>(&b).ok());
            let seen = view.as_ref().and_then(|v| v.nodes.get(&n.name));
            let status = match (&view, seen) {
                (None, _) => "no view",
                (Some(_), None) => "unknown",
                (Some(_), Some(s)) if s.alive => "alive",
                (Some(_), Some(_)) => "dead",
            };
            let member = Spool::for_node(spool.root(), &n.name);
            let owned = [
                architect::spool::task::TaskState::Pending,
                architect::spool::task::TaskState::Active,
            ]
            .iter()
            .map(|s| member.list_ids(*s).map_or(0, |ids| ids.len()))
            .sum();
            Row {
                node: n.name.clone(),
                this: n.name == config.node,
                owned,
                status: status.to_string(),
                silent_ms: seen.map(|s| s.silent_ms),
                weight: n.weight,
                labels: n.labels.clone(),
                heartbeat,
            }
        })
        .collect()
}

/// Prints the fleet. With no `nodes.toml` (or one node), says the spool is single-node.
///
/// # Errors
/// The config cannot be loaded.
pub fn run(spool: &Spool, config_dir: &Path, json: bool) -> Result<ExitCode> {
    let (rows, daemon, this_node) = rows(spool, config_dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "one node ({this_node}): no config/nodes.toml, so the spool is not shared (docs/multi-node.md)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "node", "status", "silent", "epoch", "owned", "running", "free", "draining", "version",
        "weight",
    ]);
    for r in &rows {
        let hb = r.heartbeat.as_ref();
        let free = hb.map(|h| {
            h.free
                .iter()
                .map(|(role, n)| {
                    if role.is_empty() {
                        format!("{n}")
                    } else {
                        format!("{role}:{n}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        });
        t.add_row([
            if r.this {
                format!("{} (this)", r.node)
            } else {
                r.node.clone()
            },
            r.status.clone(),
            r.silent_ms
                .map_or_else(String::new, |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            hb.map_or_else(String::new, |h| h.epoch.to_string()),
            r.owned.to_string(),
            hb.map_or_else(String::new, |h| h.running.to_string()),
            free.unwrap_or_default(),
            hb.map_or_else(String::new, |h| if h.draining { "yes" } else { "" }.into()),
            hb.map_or_else(String::new, |h| h.version.clone()),
            r.weight.to_string(),
        ]);
    }
    println!("{t}");
    if !daemon {
        println!("this node's daemon is not running: liveness is judged by a running daemon, on its own clock");
    }
    Ok(ExitCode::SUCCESS)
}

/// `architect node …`.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCmd {
    /// Stop giving NAME new work: its queued tasks go to the other nodes, what it runs
    /// finishes.
    Drain {
        /// The node.
        name: String,
    },
    /// Give NAME work again.
    Undrain {
        /// The node.
        name: String,
    },
}

/// Sets or clears `drain` on a node of `config/nodes.toml`, keeping the file's comments
/// and layout; the daemons apply it live.
///
/// # Errors
/// The file cannot be read, parsed or written; no such node; the result is not a valid
/// `nodes.toml`.
pub fn node(config_dir: &Path, cmd: &NodeCmd) -> Result<ExitCode> {
    let (name, drain) = match cmd {
        NodeCmd::Drain { name } => (name, true),
        NodeCmd::Undrain { name } => (name, false),
    };
    let path = config_dir.join("nodes.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (no fleet without it)", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let nodes = doc
        .get_mut("node")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
        .with_context(|| format!("{} lists no [[node]]", path.display()))?;
    let Some(table) = nodes
        .iter_mut()
        .find(|t| t.get("name").and_then(toml_edit::Item::as_str) == Some(name.as_str()))
    else {
        anyhow::bail!("no [[node]] named {name:?} in {}", path.display());
    };
    if drain {
        table["drain"] = toml_edit::value(true);
    } else {
        table.remove("drain");
    }
    let new = doc.to_string();
    // Checked as the daemon will read it before it is written.
    architect::config::nodes::Nodes::parse(&new, &path, name)
        .map_err(|e| anyhow::anyhow!("the new nodes.toml would be invalid: {e}"))?;
    architect::durable::write_atomic(&path, new.as_bytes())?;
    println!(
        "{name}: {} in {} (daemons apply it live; sync or commit the file so every node has it)",
        if drain { "draining" } else { "takes work" },
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The patterns a synced spool's `.stignore` must hold: what each node keeps to itself
/// (the inbox and control requests it takes, its kernel locks) and temp files.
pub const STIGNORE_NEEDED: &[&str] = &["/inbox", "/control", "/locks", ".*.tmp"];

/// One finding of `architect doctor`.
#[derive(Debug, Serialize)]
struct Finding {
    /// `conflict_copy`, `dead_node`, `unknown_node`, `wrong_writer`, `sync_lag`,
    /// `sync_timing`, `syncthing`, `stignore`.
    kind: &'static str,
    /// What is wrong, and where.
    detail: String,
}

/// `architect doctor`: what is wrong with a (synced) spool — Syncthing conflict copies
/// anywhere in it; with several nodes, nodes this node's daemon presumes dead,
/// directories under `nodes/` of nodes `nodes.toml` does not list, files under
/// `nodes/<n>/` that another node wrote, how far Syncthing is behind (`[syncthing]` in
/// `architect.toml`), and `.stignore` patterns missing. Exit status 1 when anything is
/// found.
///
/// # Errors
/// The config cannot be loaded.
pub fn doctor(spool: &Spool, config_dir: &Path, json: bool) -> Result<ExitCode> {
    let config = Config::load(config_dir).context("loading the config")?;
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(spool.root())
        .sort_by_file_name()
        .into_iter()
        .filter_map(std::result::Result::ok)
    {
        let name = entry.file_name().to_string_lossy();
        if name.contains(".sync-conflict-") {
            found.push(Finding {
                kind: "conflict_copy",
                detail: format!(
                    "{}: two nodes changed one file; resolve by hand and remove the copy",
                    entry.path().display()
                ),
            });
        }
    }
    if config.nodes.is_fleet() {
        let listed: std::collections::BTreeSet<&str> =
            config.nodes.node.iter().map(|n| n.name.as_str()).collect();
        if let Ok(dirs) = std::fs::read_dir(spool.dir("nodes")) {
            let mut names: Vec<String> = dirs
                .filter_map(std::result::Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            for n in names {
                if !listed.contains(n.as_str()) {
                    found.push(Finding {
                        kind: "unknown_node",
                        detail: format!("nodes/{n}/: no such node in config/nodes.toml"),
                    });
                }
            }
        }
        let view: Option<View> = std::fs::read(spool.node_dir(&config.node).join("view.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if architect::daemon::DaemonLock::is_held(spool).is_some() {
            for (name, v) in view.iter().flat_map(|v| v.nodes.iter()) {
                if !v.alive {
                    found.push(Finding {
                        kind: "dead_node",
                        detail: format!(
                            "{name}: heartbeat unchanged for {:.1} s (lease {:.1} s)",
                            v.silent_ms as f64 / 1000.0,
                            view.as_ref().map_or(0, |v| v.lease_ms) as f64 / 1000.0
                        ),
                    });
                }
            }
        }
        let stignore = std::fs::read_to_string(spool.root().join(".stignore")).unwrap_or_default();
        let lines: std::collections::BTreeSet<&str> = stignore.lines().map(str::trim).collect();
        let missing: Vec<&str> = STIGNORE_NEEDED
            .iter()
            .copied()
            .filter(|p| !lines.contains(p))
            .collect();
        wrong_writers(spool, &config, &mut found);
        if config.syncthing.url.is_some() {
            sync_lag(&config.syncthing, &config.nodes, &mut found);
        }
        if !missing.is_empty() {
            found.push(Finding {
                kind: "stignore",
                detail: format!(
                    "{}: missing {} (node-local and temp files must not be synced)",
                    spool.root().join(".stignore").display(),
                    missing.join(", ")
                ),
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        println!("nothing wrong found");
    } else {
        for f in &found {
            println!("{}: {}", f.kind, f.detail);
        }
    }
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Files under `nodes/<n>/` whose content names another writer: an offer `from`, an
/// adoption `by`, a task record whose last attempt ran on another node, a log file of
/// another node. Every file there has one writer, node `n` (`docs/multi-node.md`).
fn wrong_writers(spool: &Spool, config: &Config, found: &mut Vec<Finding>) {
    use architect::fleet::node::{Adoption, OfferFile};
    use architect::spool::task::TaskState;
    let read = |p: &Path| -> Option<serde_json::Value> {
        architect::durable::read_regular(p, architect::spool::MAX_TASK_BYTES * 2)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    let files = |dir: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(std::result::Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    !n.starts_with('.') && !n.contains(".sync-conflict-")
                })
            })
            .collect();
        v.sort();
        v
    };
    let mut wrong = |path: &Path, writer: &str| {
        found.push(Finding {
            kind: "wrong_writer",
            detail: format!(
                "{}: written by node {writer:?}, in another node's directory (each node \
                 writes only nodes/<itself>/)",
                path.display()
            ),
        });
    };
    for n in &config.nodes.node {
        let dir = spool.node_dir(&n.name);
        for p in files(&dir.join("offers")) {
            if let Some(o) = read(&p).and_then(|v| serde_json::from_value::<OfferFile>(v).ok()) {
                if o.offer.from != n.name {
                    wrong(&p, &o.offer.from);
                }
            }
        }
        for p in files(&dir.join("adopted")) {
            if let Some(a) = read(&p).and_then(|v| serde_json::from_value::<Adoption>(v).ok()) {
                if a.by != n.name {
                    wrong(&p, &a.by);
                }
            }
        }
        for state in [TaskState::Active, TaskState::Done, TaskState::Failed] {
            for p in files(&dir.join(state.dir())) {
                let last = read(&p).and_then(|v| {
                    v["attempts"]
                        .as_array()
                        .and_then(|a| a.last())
                        .and_then(|a| a["node"].as_str().map(str::to_string))
                });
                if let Some(node) = last.filter(|w| *w != n.name && !w.is_empty()) {
                    wrong(&p, &node);
                }
            }
        }
        for p in files(&dir.join("log")) {
            let name = p.file_name().map(|f| f.to_string_lossy().into_owned());
            let writer = name.as_deref().and_then(|f| {
                f.strip_prefix("events-")
                    .and_then(|rest| rest.rsplit_once('-'))
                    .map(|(node, _)| node.to_string())
            });
            if let Some(w) = writer.filter(|w| *w != n.name) {
                wrong(&p, &w);
            }
        }
    }
}

/// Asks this node's Syncthing how far the spool's folder is behind (files this node still
/// needs, and each connected device's completion of the folder), and whether its watcher
/// carries a heartbeat across well within the lease.
fn sync_lag(
    settings: &architect::config::SyncthingSettings,
    nodes: &architect::config::nodes::Nodes,
    found: &mut Vec<Finding>,
) {
    let Some(url) = settings.url.as_deref() else {
        return;
    };
    let folder = settings.folder.as_deref().unwrap_or("spool");
    let key = match &settings.api_key_file {
        Some(f) => std::fs::read_to_string(f)
            .map(|k| k.trim().to_string())
            .ok(),
        None => std::env::var("ARCHITECT_SYNCTHING_API_KEY").ok(),
    };
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        found.push(Finding {
            kind: "syncthing",
            detail: "[syncthing] url is set but no API key: set api_key_file, or \
                     ARCHITECT_SYNCTHING_API_KEY"
                .into(),
        });
        return;
    };
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(syncthing_lag(url, folder, &key, nodes)));
    match asked {
        Ok(lags) => found.extend(lags),
        Err(e) => found.push(Finding {
            kind: "syncthing",
            detail: format!("{url}: {e}"),
        }),
    }
}

/// How long a heartbeat rewritten every `heartbeat_ms` may take to leave a node, in ms,
/// given the folder's watcher settings. Syncthing sends a changed file once it has been
/// still for half the watcher delay; a file that changes more often than that waits up to
/// six delays (its watch aggregator); with the watcher off, the next rescan.
#[must_use]
fn heartbeat_crossing_ms(heartbeat_ms: u64, watcher: bool, delay_s: u64, rescan_s: u64) -> u64 {
    if !watcher {
        return rescan_s.saturating_mul(1000);
    }
    let delay_ms = delay_s.saturating_mul(1000);
    if heartbeat_ms >= delay_ms / 2 {
        delay_ms
    } else {
        delay_ms.saturating_mul(6)
    }
}

/// What Syncthing at `url` says about `folder`: lags, one finding each (none: in sync),
/// and a watcher too slow for the lease.
async fn syncthing_lag(
    url: &str,
    folder: &str,
    key: &str,
    nodes: &architect::config::nodes::Nodes,
) -> Result<Vec<Finding>, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{}{path}", url.trim_end_matches('/'));
        async move {
            let resp = client
                .get(&url)
                .header("X-API-Key", key)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("GET {url}: {status}: {}", body.trim()));
            }
            serde_json::from_str::<serde_json::Value>(&body).map_err(|e| format!("GET {url}: {e}"))
        }
    };
    let mut lags = Vec::new();
    let cfg = get(format!("/rest/config/folders/{folder}")).await?;
    let crossing = heartbeat_crossing_ms(
        nodes.heartbeat_ms,
        cfg["fsWatcherEnabled"].as_bool().unwrap_or(false),
        cfg["fsWatcherDelayS"].as_u64().unwrap_or(10),
        cfg["rescanIntervalS"].as_u64().unwrap_or(3600),
    );
    let lease_ms = nodes.lease_s.saturating_mul(1000);
    if lease_ms < crossing.saturating_mul(2) {
        lags.push(Finding {
            kind: "sync_timing",
            detail: format!(
                "folder {folder:?} (fsWatcherEnabled {}, fsWatcherDelayS {}, rescanIntervalS \
                 {}) carries a heartbeat rewritten every {} ms across in up to {:.1} s, and \
                 lease_s = {} is under twice that: live nodes would be presumed dead. Set \
                 fsWatcherDelayS = 1 on the folder, heartbeat_ms to at least half of it, or \
                 lease_s to at least {}",
                cfg["fsWatcherEnabled"],
                cfg["fsWatcherDelayS"],
                cfg["rescanIntervalS"],
                nodes.heartbeat_ms,
                crossing as f64 / 1000.0,
                nodes.lease_s,
                crossing.saturating_mul(2).div_ceil(1000)
            ),
        });
    }
    let status = get(format!("/rest/db/status?folder={folder}")).await?;
    let need = status["needTotalItems"]
        .as_u64()
        .or_else(|| status["needFiles"].as_u64())
        .unwrap_or(0);
    let lag = |detail: String| Finding {
        kind: "sync_lag",
        detail,
    };
    if need > 0 {
        lags.push(lag(format!(
            "this node still needs {need} item(s) ({} bytes) of folder {folder:?} from the \
             others (state {})",
            status["needBytes"].as_u64().unwrap_or(0),
            status["state"].as_str().unwrap_or("?")
        )));
    }
    let me = get("/rest/system/status".into()).await?["myID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let connections = get("/rest/system/connections".into()).await?;
    let devices: Vec<(String, bool)> = connections["connections"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, c)| (id.clone(), c["connected"].as_bool().unwrap_or(false)))
                .collect()
        })
        .unwrap_or_default();
    for (device, connected) in devices {
        let c = get(format!(
            "/rest/db/completion?folder={folder}&device={device}"
        ))
        .await?;
        let pct = c["completion"].as_f64().unwrap_or(0.0);
        let short: String = device.chars().take(7).collect();
        if pct < 100.0 || !connected {
            lags.push(lag(format!(
                "device {short}…{}: {pct:.1} % of folder {folder:?} synced, {} item(s) behind",
                if connected { "" } else { " (not connected)" },
                c["needItems"].as_u64().unwrap_or(0)
            )));
        }
    }
    Ok(lags)
}
