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
