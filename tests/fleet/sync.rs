//! The sync harness itself (`tests/helper/sync.rs`): what each engine carries between two
//! spools, and what it must not — node-local directories and temp files.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helper::sync::{wait_for_bytes, write_atomic, RsyncLoop, SyncthingPair, STIGNORE};
use crate::helper::{wait_for, Env, ONE_SHELL};

const T: Duration = Duration::from_secs(30);

/// Files only `from`'s node has, that must never reach the other spool: its inbox,
/// control requests and locks, and a temp file left in its own directory.
fn write_local_only(from: &Path, node: &str) -> Vec<String> {
    let local = [
        "inbox/t-local.json".to_string(),
        "control/drain.json".to_string(),
        "locks/kernel.lock".to_string(),
        format!("nodes/{node}/.heartbeat.json.tmp"),
        format!("nodes/{node}/pending/.t9.json.tmp"),
    ];
    for rel in &local {
        let p = from.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "local only").unwrap();
    }
    local.to_vec()
}

fn assert_absent(spool: &Path, rels: &[String]) {
    for rel in rels {
        assert!(
            !spool.join(rel).exists(),
            "{rel} crossed to {}",
            spool.display()
        );
    }
}

#[test]
fn syncthing_carries_each_nodes_files_and_deletes_but_not_node_local_or_temp_files() {
    let (ea, eb) = (Env::new(ONE_SHELL), Env::new(ONE_SHELL));
    let (a, b) = (&ea.spool, &eb.spool);
    let t0 = Instant::now();
    let mut pair = SyncthingPair::start(a, b);
    eprintln!("syncthing: connected after {:?}", t0.elapsed());
    let stignore = std::fs::read_to_string(a.join(".stignore")).unwrap();
    assert_eq!(stignore.lines().collect::<Vec<_>>(), STIGNORE);

    // A's node writes a task record: it crosses with the same bytes.
    let body = br#"{"id":"t1","node":"a","state":"pending"}"#;
    write_atomic(&a.join("nodes/a/pending/t1.json"), body);
    let took = wait_for_bytes(&b.join("nodes/a/pending/t1.json"), body, T);
    eprintln!("syncthing: a new file crossed a -> b in {took:?}");
    // And B's node's heartbeat crosses the other way.
    write_atomic(&b.join("nodes/b/heartbeat.json"), br#"{"seq":1}"#);
    let took = wait_for_bytes(&a.join("nodes/b/heartbeat.json"), br#"{"seq":1}"#, T);
    eprintln!("syncthing: a new file crossed b -> a in {took:?}");
    // A rewrite of the same size crosses too.
    write_atomic(&b.join("nodes/b/heartbeat.json"), br#"{"seq":2}"#);
    wait_for_bytes(&a.join("nodes/b/heartbeat.json"), br#"{"seq":2}"#, T);

    // Node-local files and temp files stay where they were written, though the folder
    // is in sync (a file written after them crossed).
    let local = write_local_only(a, "a");
    write_atomic(&a.join("nodes/a/after.json"), b"after");
    let t0 = Instant::now();
    pair.wait_in_sync(T);
    eprintln!("syncthing: wait_in_sync took {:?}", t0.elapsed());
    assert_eq!(
        std::fs::read(b.join("nodes/a/after.json")).unwrap(),
        b"after"
    );
    assert_absent(b, &local);
    for rel in &local {
        assert!(a.join(rel).exists(), "{rel} removed on a");
    }
    // (B's own inbox is still its own: the one on A did not replace or empty it.)
    assert!(b.join("inbox").is_dir());

    // A delete on A arrives on B.
    let t0 = Instant::now();
    std::fs::remove_file(a.join("nodes/a/pending/t1.json")).unwrap();
    wait_for("the delete to reach b", T, || {
        !b.join("nodes/a/pending/t1.json").exists()
    });
    eprintln!("syncthing: a delete crossed in {:?}", t0.elapsed());
    pair.wait_in_sync(T);
    assert!(!b.join("nodes/a/pending/t1.json").exists());
    assert!(!b.join("nodes/a").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("sync-conflict")));

    // Killing the pair leaves no process behind.
    let pids = pair.pids();
    assert_eq!(pids.len(), 2);
    pair.kill();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "syncthing {pid} still running"
        );
    }
    assert!(pair.pids().is_empty());
}

#[test]
fn syncthing_pair_gives_its_rest_address_and_stops_on_drop() {
    let (ea, eb) = (Env::new(ONE_SHELL), Env::new(ONE_SHELL));
    let pair = SyncthingPair::start(&ea.spool, &eb.spool);
    let (url, key) = pair.rest_address(1);
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();
    let reply = crate::helper::mock_control(port, "GET", "/rest/system/status", "");
    assert!(reply.starts_with("HTTP/1.1 403"), "no key: {reply}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("GET /rest/system/status HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
    assert!(reply.contains(pair.device_id(1)), "{reply}");
    let pids = pair.pids();
    drop(pair);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{pid} left");
    }
}

#[test]
fn rsync_loop_copies_each_nodes_own_directory_one_way() {
    let (ea, eb) = (Env::new(ONE_SHELL), Env::new(ONE_SHELL));
    let (a, b) = (&ea.spool, &eb.spool);
    let sync = RsyncLoop::start(a, "a", b, "b");

    write_atomic(&a.join("nodes/a/pending/t1.json"), b"task one");
    let took = wait_for_bytes(&b.join("nodes/a/pending/t1.json"), b"task one", T);
    eprintln!("rsync: a new file crossed a -> b in {took:?}");
    write_atomic(&b.join("nodes/b/heartbeat.json"), br#"{"seq":1}"#);
    wait_for_bytes(&a.join("nodes/b/heartbeat.json"), br#"{"seq":1}"#, T);
    // A same-size rewrite within the same second crosses (nanosecond mtimes).
    write_atomic(&b.join("nodes/b/heartbeat.json"), br#"{"seq":2}"#);
    sync.wait_in_sync();
    assert_eq!(
        std::fs::read(a.join("nodes/b/heartbeat.json")).unwrap(),
        br#"{"seq":2}"#
    );

    // Node-local files, temp and other dot files, and files outside nodes/ stay put.
    let mut local = write_local_only(a, "a");
    std::fs::write(a.join("nodes/a/.hidden"), "dot").unwrap();
    local.push("nodes/a/.hidden".into());
    std::fs::write(a.join("pending/t2.json"), "not in nodes/").unwrap();
    local.push("pending/t2.json".into());
    // A node's directory only goes one way: what B writes in its copy of nodes/a is not
    // sent back, and the next round removes it (the receiver must never write there).
    std::fs::write(b.join("nodes/a/stray.json"), "written by b").unwrap();
    sync.wait_in_sync();
    assert_absent(b, &local);
    assert!(!a.join("nodes/a/stray.json").exists());
    assert!(!b.join("nodes/a/stray.json").exists());

    // A delete propagates.
    std::fs::remove_file(a.join("nodes/a/pending/t1.json")).unwrap();
    sync.wait_in_sync();
    assert!(!b.join("nodes/a/pending/t1.json").exists());
    assert!(b.join("nodes/a/pending").is_dir());
    // The receiver's own trees were never touched by the other direction.
    assert!(!b.join("nodes/b/pending").exists());
    assert_eq!(
        std::fs::read(b.join("nodes/b/heartbeat.json")).unwrap(),
        br#"{"seq":2}"#
    );

    drop(sync);
    // Stopped: nothing crosses any more.
    write_atomic(&a.join("nodes/a/late.json"), b"late");
    std::thread::sleep(Duration::from_millis(600));
    assert!(!b.join("nodes/a/late.json").exists());
}
