//! `architect init`: the spool directories and a config skeleton with working shell
//! sessions.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use architect::config::{DEFAULT_ARCHITECT, DEFAULT_SESSIONS};
use architect::durable;
use architect::policy::DEFAULT_POLICY;
use architect::profile::BUILTIN;
use architect::spool::Spool;

/// The `config/nodes.toml` that `architect init --node NAME` writes: this node only (a
/// spool is shared once a second node is listed).
fn nodes_toml(node: &str) -> String {
    format!(
        "# The nodes that share this spool through Syncthing or rsync (docs/multi-node.md).\n\
         # Every node lists every node: keep this file the same on all of them (in git).\n\
         lease_s = 30         # a node whose heartbeat has not changed this long is presumed dead\n\
         heartbeat_ms = 2000\n\n\
         [[node]]\nname = \"{node}\"\n# weight = 1\n# labels = []\n\n\
         # [[node]]\n# name = \"other-machine\"\n"
    )
}

/// Adds the patterns a synced spool needs to its `.stignore` (Syncthing's ignore file,
/// also a list for rsync's `--exclude-from`), keeping what is there.
fn write_stignore(spool: &Spool) -> Result<()> {
    let path = spool.root().join(".stignore");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let have: std::collections::BTreeSet<&str> = old.lines().map(str::trim).collect();
    let missing: Vec<&str> = super::nodes::STIGNORE_NEEDED
        .iter()
        .copied()
        .filter(|p| !have.contains(p))
        .collect();
    if missing.is_empty() {
        println!(
            "kept    {} (has every pattern a synced spool needs)",
            path.display()
        );
        return Ok(());
    }
    let mut text = old;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("// architect: what each node keeps to itself, and temp files\n");
    for p in &missing {
        text.push_str(p);
        text.push('\n');
    }
    durable::write_atomic(&path, text.as_bytes())?;
    println!("wrote   {} ({})", path.display(), missing.join(" "));
    Ok(())
}

pub fn run(spool: &Spool, config: &Path, force: bool, node: Option<&str>) -> Result<ExitCode> {
    if let Some(n) = node {
        if !architect::types::valid_id(n) {
            anyhow::bail!("--node {n:?}: a node name is 1–64 letters, digits, `_` or `-`");
        }
    }
    spool.init().context("creating the spool")?;
    println!(
        "spool   {}/ (inbox, pending, active, done, failed, cancelled, rejected, sessions, log)",
        spool.root().display()
    );
    let (_, token_path, created) = super::serve::ensure_token(spool)?;
    println!(
        "{} {} (the dashboard's token, 0600, this node only: `architect serve`)",
        if created { "wrote  " } else { "kept   " },
        token_path.display()
    );
    durable::create_dir(&config.join("profiles"))?;
    let architect_toml = match node {
        Some(n) => {
            let line =
                "# name = \"my-laptop\"          # default: the hostname; stamped on every event";
            assert!(
                DEFAULT_ARCHITECT.contains(line),
                "config/architect.toml's node line"
            );
            DEFAULT_ARCHITECT.replace(
                line,
                &format!(
                    "name = \"{n}\"                 # this node, as config/nodes.toml lists it"
                ),
            )
        }
        None => DEFAULT_ARCHITECT.to_string(),
    };
    let nodes = node.map(nodes_toml);
    // In a fleet every session names the node that runs it: this one's sessions run here.
    let sessions = node.map_or_else(
        || DEFAULT_SESSIONS.to_string(),
        |n| {
            DEFAULT_SESSIONS.replace(
                "\n[[session]]\n",
                &format!("\n[[session]]\nnode = \"{n}\"\n"),
            )
        },
    );
    let mut files: Vec<(std::path::PathBuf, &str)> = vec![
        (config.join("sessions.toml"), &sessions),
        (config.join("architect.toml"), &architect_toml),
        (config.join("policy.toml"), DEFAULT_POLICY),
        (
            config.join("prices.toml"),
            architect::config::prices::DEFAULT_PRICES,
        ),
        (
            config.join("notify.toml"),
            architect::notify::DEFAULT_NOTIFY,
        ),
    ];
    if let Some(text) = &nodes {
        files.push((config.join("nodes.toml"), text));
    }
    for (name, text) in BUILTIN {
        files.push((config.join("profiles").join(format!("{name}.toml")), text));
    }
    for (path, text) in files {
        if path.exists() && !force {
            println!("kept    {} (exists; --force overwrites)", path.display());
            continue;
        }
        durable::write_atomic(&path, text.as_bytes())?;
        println!("wrote   {}", path.display());
    }
    if let Some(n) = node {
        write_stignore(spool)?;
        if let Ok(c) = architect::config::Config::load(config) {
            if c.node != n {
                println!(
                    "note    {}'s [node] name is {:?}, not {n:?}: make them the same",
                    config.join("architect.toml").display(),
                    c.node
                );
            }
        }
        println!(
            "\nThis node is {n:?}. List every node in config/nodes.toml on each of them, and sync \
             {} between them (docs/multi-node.md). Each session says which node runs it \
             (node = … in sessions.toml); the sessions written here are this node's.",
            spool.root().display()
        );
    }
    println!("\nNext: architect daemon -v   (then drop a task: echo '{{\"prompt\": \"echo hello\"}}' > {}/inbox/hello.json)", spool.root().display());
    Ok(ExitCode::SUCCESS)
}
