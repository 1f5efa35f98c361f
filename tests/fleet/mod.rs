//! Several nodes on one spool (issue 11; `docs/multi-node.md`). So far: the heartbeat a
//! node's daemon writes, and `architect nodes`, which shows each listed node as this
//! node's daemon sees it — alive while its heartbeat's `seq` changes, dead once it has not
//! changed for the lease, judged on this machine's clock.

mod bench;
mod sync;
mod two_nodes;

use std::time::Duration;

use crate::helper::{wait_for, Env};

const T: Duration = Duration::from_secs(20);

/// One shell session, `sh-1`, run by node `test` (in a fleet every session names its node).
const SHELL_ON_TEST: &str =
    "[[session]]\nname = \"sh-1\"\nprofile = \"shell\"\nrole = \"shell\"\nnode = \"test\"\n";

/// The node `other`'s heartbeat, as its daemon would write it (through a syncer).
fn write_heartbeat(env: &Env, node: &str, seq: u64) {
    let dir = env.path(&format!("spool/nodes/{node}"));
    std::fs::create_dir_all(&dir).unwrap();
    let hb = serde_json::json!({
        "seq": seq, "version": "0.1.0", "epoch": 1, "running": 0,
        "free": {"": 1}, "draining": false
    });
    let tmp = dir.join(".heartbeat.json.tmp");
    std::fs::write(&tmp, hb.to_string()).unwrap();
    std::fs::rename(tmp, dir.join("heartbeat.json")).unwrap();
}

fn nodes(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str(&env.ok(&["nodes", "--json"])).unwrap()
}

fn status_of(env: &Env, node: &str) -> String {
    nodes(env)
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| n["status"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn a_node_is_alive_while_its_heartbeat_changes_and_dead_after_the_lease() {
    let env = Env::new(SHELL_ON_TEST);
    env.write_config(
        "nodes.toml",
        "lease_s = 2\nheartbeat_ms = 200\n\
         [[node]]\nname = \"test\"\n[[node]]\nname = \"other\"\nweight = 2\n",
    );
    // Without a daemon, nothing judges liveness.
    assert_eq!(status_of(&env, "test"), "no view");
    let _d = env.daemon();
    wait_for("this node's own heartbeat", T, || {
        env.path("spool/nodes/test/heartbeat.json").exists()
    });
    let mine: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("spool/nodes/test/heartbeat.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(mine["version"], env!("CARGO_PKG_VERSION"));
    wait_for("this node alive in its own view", T, || {
        status_of(&env, "test") == "alive"
    });
    assert_eq!(status_of(&env, "other"), "unknown");
    // The other node beats for a while: alive.
    for seq in 1..=10 {
        write_heartbeat(&env, "other", seq);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(status_of(&env, "other"), "alive");
    let row = nodes(&env)
        .into_iter()
        .find(|n| n["node"] == "other")
        .unwrap();
    assert_eq!(row["weight"], 2);
    assert_eq!(row["heartbeat"]["seq"], 10);
    // It stops: dead once its seq has not changed for the lease (2 s), on this clock.
    wait_for("the silent node to be presumed dead", T, || {
        status_of(&env, "other") == "dead"
    });
    assert_eq!(status_of(&env, "test"), "alive");
    // It comes back with a fresh counter: alive again.
    write_heartbeat(&env, "other", 1);
    wait_for("the node back", T, || status_of(&env, "other") == "alive");
    let table = env.ok(&["nodes"]);
    assert!(
        table.contains("test (this)") && table.contains("other"),
        "{table}"
    );
}

#[test]
fn a_single_node_spool_says_so() {
    let env = Env::new(SHELL_ON_TEST);
    let out = env.ok(&["nodes"]);
    assert!(out.contains("one node (test)"), "{out}");
    assert!(!env.path("spool/nodes").exists());
}

#[test]
fn listing_nodes_while_the_daemon_runs_starts_its_heartbeat() {
    let env = Env::new(SHELL_ON_TEST);
    let _d = env.daemon();
    env.wait_idle("sh-1", T);
    let beat = env.path("spool/nodes/test/heartbeat.json");
    assert!(!beat.exists());
    env.write_config(
        "nodes.toml",
        "[[node]]\nname = \"test\"\n[[node]]\nname = \"other\"\n",
    );
    wait_for("the heartbeat after the edit", T, || beat.exists());
    let hb: serde_json::Value = serde_json::from_slice(&std::fs::read(&beat).unwrap()).unwrap();
    assert_eq!(hb["free"]["shell"], 1, "{hb}");
}

fn doctor(env: &Env) -> (i32, Vec<serde_json::Value>) {
    let out = env.cli(&["doctor", "--json"]);
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code().unwrap(), found)
}

fn kinds(found: &[serde_json::Value]) -> Vec<&str> {
    found.iter().map(|f| f["kind"].as_str().unwrap()).collect()
}

#[test]
fn doctor_finds_conflict_copies_dead_and_unknown_nodes_and_a_missing_stignore() {
    let env = Env::new(SHELL_ON_TEST);
    assert_eq!(doctor(&env), (0, Vec::new()));
    assert!(env.ok(&["doctor"]).contains("nothing wrong found"));
    // A conflict copy, as Syncthing names them.
    let copy = env.path("spool/done/t1.sync-conflict-20261202-010203-ABCDEF7.json");
    std::fs::write(&copy, "{}").unwrap();
    let (code, found) = doctor(&env);
    assert_eq!((code, kinds(&found)), (1, vec!["conflict_copy"]));
    assert!(found[0]["detail"]
        .as_str()
        .unwrap()
        .contains("t1.sync-conflict-"));
    std::fs::remove_file(&copy).unwrap();
    // A fleet: the .stignore must keep node-local and temp files out of the sync.
    env.write_config(
        "nodes.toml",
        "lease_s = 1\nheartbeat_ms = 200\n[[node]]\nname = \"test\"\n[[node]]\nname = \"other\"\n",
    );
    let (code, found) = doctor(&env);
    assert_eq!((code, kinds(&found)), (1, vec!["stignore"]));
    std::fs::write(
        env.path("spool/.stignore"),
        "/inbox\n/control\n/locks\n.*.tmp\n",
    )
    .unwrap();
    assert_eq!(doctor(&env), (0, Vec::new()));
    // A directory of a node nobody listed.
    std::fs::create_dir_all(env.path("spool/nodes/ghost")).unwrap();
    assert_eq!(kinds(&doctor(&env).1), ["unknown_node"]);
    std::fs::remove_dir(env.path("spool/nodes/ghost")).unwrap();
    // A node that beat once and went silent: dead, as this node's daemon sees it.
    let _d = env.daemon();
    write_heartbeat(&env, "other", 1);
    wait_for("the silent node in doctor's findings", T, || {
        let (code, found) = doctor(&env);
        code == 1
            && found.iter().any(|f| {
                f["kind"] == "dead_node" && f["detail"].as_str().unwrap().starts_with("other:")
            })
    });
    assert!(
        !doctor(&env)
            .1
            .iter()
            .any(|f| f["detail"].as_str().unwrap().starts_with("test:")),
        "this node beats"
    );
}

#[test]
fn init_with_a_node_name_prepares_a_spool_for_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::helper::BIN)
            .arg("--spool")
            .arg(dir.path().join("spool"))
            .arg("--config")
            .arg(dir.path().join("config"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["init", "--node", "alpha"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let architect = std::fs::read_to_string(dir.path().join("config/architect.toml")).unwrap();
    assert!(architect.contains("name = \"alpha\""), "{architect}");
    let stignore = std::fs::read_to_string(dir.path().join("spool/.stignore")).unwrap();
    for p in ["/inbox", "/control", "/locks", ".*.tmp"] {
        assert!(stignore.lines().any(|l| l == p), "{p} in {stignore}");
    }
    // A second node listed: a fleet, and doctor finds the spool ready for syncing.
    let nodes = dir.path().join("config/nodes.toml");
    let mut text = std::fs::read_to_string(&nodes).unwrap();
    text.push_str("\n[[node]]\nname = \"beta\"\n");
    std::fs::write(&nodes, text).unwrap();
    let out = run(&["doctor", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Again: what is there is kept, nothing is added twice.
    assert!(run(&["init", "--node", "alpha"]).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("spool/.stignore")).unwrap(),
        stignore
    );
    let out = run(&["init", "--node", "not a name"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("a node name is"));
}

#[test]
fn doctor_reads_sync_lag_from_syncthing_and_finds_files_written_by_the_wrong_node() {
    use crate::helper::sync::SyncthingPair;
    let (ea, eb) = (two_nodes::node_env("a"), two_nodes::node_env("b"));
    let pair = SyncthingPair::start(&ea.spool, &eb.spool);
    let (url, key) = pair.rest_address(0);
    let key_file = ea.dir.path().join("syncthing.key");
    std::fs::write(&key_file, &key).unwrap();
    let architect = std::fs::read_to_string(ea.config.join("architect.toml")).unwrap();
    let with_syncthing = |key_file: &std::path::Path| {
        format!(
            "{architect}\n[syncthing]\nurl = \"{url}\"\napi_key_file = \"{}\"\n",
            key_file.display()
        )
    };
    ea.write_config("architect.toml", &with_syncthing(&key_file));
    pair.wait_in_sync(Duration::from_secs(60));
    let (code, found) = doctor(&ea);
    assert_eq!(code, 0, "{found:?}");
    // A heartbeat rewritten every 250 ms waits up to six watcher delays (6 s) in
    // Syncthing: a 5 s lease would presume live nodes dead.
    let nodes = std::fs::read_to_string(ea.config.join("nodes.toml")).unwrap();
    ea.write_config(
        "nodes.toml",
        &nodes
            .replace("lease_s = 6", "lease_s = 5")
            .replace("heartbeat_ms = 1000", "heartbeat_ms = 250"),
    );
    let (code, found) = doctor(&ea);
    assert_eq!((code, kinds(&found)), (1, vec!["sync_timing"]), "{found:?}");
    assert!(found[0]["detail"]
        .as_str()
        .unwrap()
        .contains("lease_s to at least 12"));
    ea.write_config("nodes.toml", &nodes);
    // A file in b's directory that a wrote (here, by hand): found, from either side.
    let offer = serde_json::json!({
        "offer": {"task_id": "x", "from": "a", "to": "b", "epoch": 1},
        "record": null
    });
    std::fs::create_dir_all(ea.path("spool/nodes/b/offers")).unwrap();
    std::fs::write(ea.path("spool/nodes/b/offers/x.json"), offer.to_string()).unwrap();
    let (code, found) = doctor(&ea);
    assert_eq!(
        (code, kinds(&found)),
        (1, vec!["wrong_writer"]),
        "{found:?}"
    );
    assert!(found[0]["detail"]
        .as_str()
        .unwrap()
        .contains("nodes/b/offers/x.json"));
    std::fs::remove_file(ea.path("spool/nodes/b/offers/x.json")).unwrap();
    // A wrong key: Syncthing refuses, and doctor says so.
    let bad = ea.dir.path().join("bad.key");
    std::fs::write(&bad, "not-the-key").unwrap();
    ea.write_config("architect.toml", &with_syncthing(&bad));
    let (code, found) = doctor(&ea);
    assert_eq!((code, kinds(&found)), (1, vec!["syncthing"]), "{found:?}");
    assert!(
        found[0]["detail"].as_str().unwrap().contains("403"),
        "{found:?}"
    );
    // b's Syncthing stops and a changes something: a's reports b's device behind.
    ea.write_config("architect.toml", &with_syncthing(&key_file));
    let b_pid = i32::try_from(pair.pids()[1]).unwrap();
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(b_pid, libc::SIGTERM) };
    std::fs::create_dir_all(ea.path("spool/nodes/a/pending")).unwrap();
    std::fs::write(ea.path("spool/nodes/a/pending/y.json"), "{}").unwrap();
    wait_for("doctor to report b behind", Duration::from_secs(60), || {
        let (_, found) = doctor(&ea);
        kinds(&found).contains(&"sync_lag")
    });
    let (_, found) = doctor(&ea);
    let lag = found.iter().find(|f| f["kind"] == "sync_lag").unwrap();
    assert!(
        lag["detail"].as_str().unwrap().contains("not connected"),
        "{found:?}"
    );
    drop(pair);
}
