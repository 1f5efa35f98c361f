//! `config/nodes.toml`: the nodes that share this spool through a file syncer (issue 11;
//! the design is `docs/multi-node.md`). Absent or empty: one node, today's layout.
//!
//! ```toml
//! lease_s = 30          # a node whose heartbeat has not changed for this long is presumed
//!                       # dead (on each reader's own clock); default 30
//! heartbeat_ms = 2000   # how often each node rewrites nodes/<node>/heartbeat.json; default 2000
//! lock_home = "big"     # the node where every task that takes a lock runs (default: chosen
//!                       # by rendezvous hashing among the live nodes)
//!
//! [[node]]
//! name = "big"          # the node's name, as `[node] name` in its architect.toml
//! labels = ["gpu"]      # free-form, for placement rules
//! weight = 4            # relative capacity (placement counts load per unit), default 1
//!
//! [[node]]
//! name = "laptop"
//! ```
//!
//! Loaded and checked with the rest of the config; the daemon does not act on it yet.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One `[[node]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Its name (letters, digits, `_` and `-`, at most 64).
    pub name: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Relative capacity, ≥ 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Draining (`architect node drain`): the node takes no new work, offers its queued
    /// tasks to the others, and finishes what it runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
}

fn one() -> u32 {
    1
}

fn default_lease_s() -> u64 {
    30
}

fn default_heartbeat_ms() -> u64 {
    2000
}

/// The parsed file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Lease, seconds.
    #[serde(default = "default_lease_s")]
    pub lease_s: u64,
    /// Heartbeat period, ms.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The node where locking tasks run, if fixed.
    #[serde(default)]
    pub lock_home: Option<String>,
    /// The nodes, in file order.
    #[serde(default)]
    pub node: Vec<NodeSpec>,
}

impl Default for Nodes {
    fn default() -> Self {
        Self {
            lease_s: default_lease_s(),
            heartbeat_ms: default_heartbeat_ms(),
            lock_home: None,
            node: Vec::new(),
        }
    }
}

impl Nodes {
    /// Loads `<config_dir>/nodes.toml` (absent: one node) and checks it against `this`,
    /// the node name this config runs as.
    ///
    /// # Errors
    /// [`Error::Config`] naming the rule broken: bad TOML or an unknown key; a node name
    /// that is not an id, or given twice; a weight of 0; a `lock_home` that is not listed;
    /// a lease not above two heartbeats; nodes listed without `this` among them.
    /// [`Error::Io`] when the file cannot be read.
    pub fn load(config_dir: &Path, this: &str) -> Result<Self> {
        let path = config_dir.join("nodes.toml");
        let nodes: Self = super::read_toml(&path)?;
        nodes.checked(&path, this)
    }

    /// `text` as the `nodes.toml` at `path` (which is not read), checked as [`Nodes::load`]
    /// checks it.
    ///
    /// # Errors
    /// As [`Nodes::load`].
    pub fn parse(text: &str, path: &Path, this: &str) -> Result<Self> {
        let nodes: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        nodes.checked(path, this)
    }

    fn checked(self, path: &Path, this: &str) -> Result<Self> {
        let nodes = self;
        let path = path.to_path_buf();
        let bad = |message: String| Error::Config {
            path: path.clone(),
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, n) in nodes.node.iter().enumerate() {
            if !crate::types::valid_id(&n.name) {
                return Err(bad(format!(
                    "node[{i}]: name must be 1–64 letters, digits, `_` or `-`"
                )));
            }
            if !seen.insert(n.name.as_str()) {
                return Err(bad(format!("node[{i}]: {:?} is listed twice", n.name)));
            }
            if n.weight == 0 {
                return Err(bad(format!("node {:?}: weight must be at least 1", n.name)));
            }
        }
        if let Some(home) = &nodes.lock_home {
            if !seen.contains(home.as_str()) {
                return Err(bad(format!(
                    "lock_home = {home:?} is not a listed [[node]]"
                )));
            }
        }
        if nodes.lease_s.saturating_mul(1000) <= nodes.heartbeat_ms.saturating_mul(2) {
            return Err(bad(format!(
                "lease_s = {} must be more than two heartbeats (heartbeat_ms = {}): a node \
                 would be presumed dead between two of its own heartbeats",
                nodes.lease_s, nodes.heartbeat_ms
            )));
        }
        if !nodes.node.is_empty() && !seen.contains(this) {
            return Err(bad(format!(
                "this node, {this:?} ([node] name in architect.toml), is not listed; add \
                 [[node]] name = {this:?}"
            )));
        }
        Ok(nodes)
    }

    /// Whether node `name` is draining.
    #[must_use]
    pub fn draining(&self, name: &str) -> bool {
        self.node.iter().any(|n| n.name == name && n.drain)
    }

    /// Whether several nodes share the spool.
    #[must_use]
    pub fn is_fleet(&self) -> bool {
        self.node.len() > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, this: &str) -> Result<Nodes> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodes.toml"), text).unwrap();
        Nodes::load(dir.path(), this)
    }

    fn error(text: &str, this: &str) -> String {
        load(text, this).unwrap_err().to_string()
    }

    #[test]
    fn no_file_is_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let n = Nodes::load(dir.path(), "a").unwrap();
        assert!(n.node.is_empty() && !n.is_fleet());
        assert_eq!((n.lease_s, n.heartbeat_ms), (30, 2000));
    }

    #[test]
    fn a_fleet_reads_with_its_defaults() {
        let n = load(
            "lock_home = \"big\"\n[[node]]\nname = \"big\"\nweight = 4\nlabels = [\"gpu\"]\n\
             [[node]]\nname = \"laptop\"\n",
            "laptop",
        )
        .unwrap();
        assert!(n.is_fleet());
        assert_eq!(n.node[0].weight, 4);
        assert_eq!(n.node[1].weight, 1);
        assert_eq!(n.node[0].labels, ["gpu"]);
        assert_eq!(n.lock_home.as_deref(), Some("big"));
    }

    #[test]
    fn each_broken_rule_is_named() {
        let two = "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n";
        assert!(error("[[node]]\nname = \"a b\"\n", "a").contains("name must be"));
        assert!(
            error("[[node]]\nname = \"a\"\n[[node]]\nname = \"a\"\n", "a").contains("listed twice")
        );
        assert!(error("[[node]]\nname = \"a\"\nweight = 0\n", "a").contains("at least 1"));
        assert!(error(&format!("lock_home = \"c\"\n{two}"), "a").contains("not a listed"));
        assert!(
            error(&format!("lease_s = 1\nheartbeat_ms = 600\n{two}"), "a")
                .contains("more than two heartbeats")
        );
        assert!(error(two, "c").contains("is not listed"));
        assert!(error("colour = \"red\"\n", "a").contains("unknown field"));
    }
}
