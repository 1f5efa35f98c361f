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

/// One row of `architect nodes --json`.
#[derive(Debug, Serialize)]
struct Row {
    node: String,
    /// This node.
    this: bool,
    /// `alive`, `dead` (no heartbeat change for the lease, as this node's daemon saw),
    /// `unknown` (no heartbeat seen), or `no view` (this node's daemon is not running).
    status: String,
    /// Since this node's daemon saw the heartbeat change, ms.
    silent_ms: Option<u64>,
    weight: u32,
    labels: Vec<String>,
    heartbeat: Option<Heartbeat>,
}

/// Prints the fleet. With no `nodes.toml` (or one node), says the spool is single-node.
///
/// # Errors
/// The config cannot be loaded.
pub fn run(spool: &Spool, config_dir: &Path, json: bool) -> Result<ExitCode> {
    let config = Config::load(config_dir).context("loading the config")?;
    let daemon = architect::daemon::DaemonLock::is_held(spool).is_some();
    let view: Option<View> = if daemon {
        std::fs::read(spool.node_dir(&config.node).join("view.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    } else {
        None
    };
    let rows: Vec<Row> = config
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
            Row {
                node: n.name.clone(),
                this: n.name == config.node,
                status: status.to_string(),
                silent_ms: seen.map(|s| s.silent_ms),
                weight: n.weight,
                labels: n.labels.clone(),
                heartbeat,
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "one node ({}): no config/nodes.toml, so the spool is not shared (docs/multi-node.md)",
            config.node
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "node", "status", "silent", "epoch", "running", "free", "draining", "version", "weight",
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

/// The patterns a synced spool's `.stignore` must hold: what each node keeps to itself
/// (the inbox and control requests it takes, its kernel locks) and temp files.
pub const STIGNORE_NEEDED: &[&str] = &["/inbox", "/control", "/locks", ".*.tmp"];

/// One finding of `architect doctor`.
#[derive(Debug, Serialize)]
struct Finding {
    /// `conflict_copy`, `dead_node`, `unknown_node`, `stignore`.
    kind: &'static str,
    /// What is wrong, and where.
    detail: String,
}

/// `architect doctor`: what is wrong with a (synced) spool — Syncthing conflict copies
/// anywhere in it; with several nodes, nodes this node's daemon presumes dead,
/// directories under `nodes/` of nodes `nodes.toml` does not list, and `.stignore`
/// patterns missing. Exit status 1 when anything is found.
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
