//! Two spools kept in sync for fleet tests (`docs/multi-node.md`): by two real Syncthing
//! instances on loopback ([`SyncthingPair`]), or by `rsync -a` loops ([`RsyncLoop`]).
//!
//! ```ignore
//! let (a, b) = (Env::new(ONE_SHELL), Env::new(ONE_SHELL));
//! // Syncthing: the whole spool is one folder "spool"; `.stignore` keeps inbox/,
//! // control/, locks/ and dot `.tmp` files out.
//! let st = SyncthingPair::start(&a.spool, &b.spool); // returns once both are connected
//! /* node a writes a.spool/nodes/a/…, node b writes b.spool/nodes/b/… */
//! st.wait_in_sync(Duration::from_secs(30)); // rescans both, waits for both to agree
//! let (url, key) = st.rest_address(0); // "http://127.0.0.1:PORT", X-API-Key
//! // rsync: each node's own directory is copied one way, to the other spool, every 200 ms.
//! let rs = RsyncLoop::start(&a.spool, "a", &b.spool, "b");
//! rs.wait_in_sync(); // two full rounds after the call
//! ```
//!
//! Both stop on drop (Syncthing: SIGTERM, SIGKILL after 5 s; its children also die with
//! the thread that started them, `PR_SET_PDEATHSIG`, so a pair must not outlive that
//! thread — keep it in the test's own scope).
//!
//! Measured on the dev container (2 CPUs, Syncthing 1.19.2-ds1, December 2026): `start`
//! returns after about 3.2 s (b is started once a listens, see below); a small file written by
//! temp + rename shows up on the other side in about 1 s (the watcher's 1 s delay), a
//! delete in 0.5–1.5 s; `wait_in_sync` right after a write takes about 0.5 s. An rsync
//! round of two small trees takes a few ms, so the loop's period (200 ms) is its latency.
//! The Syncthing self-test takes about 7 s, the rsync one about 2.5 s.
//!
//! What Syncthing 1.19 does here that a test must expect:
//! - it creates a `.stfolder/` marker directory in each folder root, and never syncs
//!   `.stignore` itself;
//! - dot files other than `.*.tmp` (e.g. `.hidden`) do cross — the rsync loop skips every
//!   dot file;
//! - `serve` always forks a monitor process, `--no-restart` notwithstanding, and a
//!   monitor killed with SIGKILL leaves the real process running: `STMONITORED=yes` makes the
//!   process started the real one;
//! - started together, the two connected after 1.6 s most times but after 21 s one time
//!   in four: each dialled before the other listened, and the next dial came 20 s later;
//!   starting b once a's listener is up (`/rest/system/status`, `connectionServiceStatus`)
//!   connects at b's first dial;
//! - REST wants `X-API-Key` and a loopback `Host` header ("Host check error", 403,
//!   without one); `/rest/system/connections` lists this device too (never connected);
//!   `POST /rest/db/scan` returns once the scan is done (500 "no such folder" for a
//!   wrong id).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wait_for;

/// The `.stignore` patterns of a synced spool: a copy of `STIGNORE_NEEDED` in
/// `src/cli/nodes.rs` (what `architect doctor` checks for). Syncthing's own temp files
/// (`.syncthing.NAME.tmp`) need no pattern: it never syncs them.
pub const STIGNORE: &[&str] = &["/inbox", "/control", "/locks", ".*.tmp"];

/// The Syncthing folder id of the spool, the same on both sides.
pub const FOLDER: &str = "spool";

/// One Syncthing instance.
struct Side {
    home: PathBuf,
    folder: PathBuf,
    log: PathBuf,
    id: String,
    gui_port: u16,
    listen_port: u16,
    key: String,
    child: Option<Child>,
}

/// Two Syncthing instances on loopback sharing one folder, [`FOLDER`]; killed on drop.
pub struct SyncthingPair {
    sides: [Side; 2],
    /// The homes and logs (kept after a failure while the pair lives).
    dir: tempfile::TempDir,
}

/// A free loopback port (the listener is returned so that ports picked together differ).
fn free_port() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A minimal HTTP/1.0 request to `127.0.0.1:port` with the API key: (status, body).
fn http(port: u16, key: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Sets the text of the first `<name>…</name>` element.
fn set_element(xml: &str, name: &str, value: &str) -> String {
    let re = regex::Regex::new(&format!("<{name}>[^<]*</{name}>")).unwrap();
    assert!(re.is_match(xml), "no <{name}> in the generated config.xml");
    re.replacen(xml, 1, format!("<{name}>{value}</{name}>").as_str())
        .into_owned()
}

impl Side {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// GET (or POST) a REST endpoint, parsed as JSON; `None` on any failure.
    fn rest(&self, method: &str, path: &str) -> Option<serde_json::Value> {
        let (status, body) = http(self.gui_port, &self.key, method, path).ok()?;
        if status != 200 {
            return None;
        }
        if body.trim().is_empty() {
            return Some(serde_json::Value::Null);
        }
        serde_json::from_str(&body).ok()
    }

    /// Whether this side reports `peer` connected.
    fn connected_to(&self, peer: &str) -> bool {
        self.rest("GET", "/rest/system/connections")
            .is_some_and(|c| c["connections"][peer]["connected"] == true)
    }

    /// Idle with nothing to pull, and `peer` complete as far as this side knows.
    fn in_sync_with(&self, peer: &str) -> bool {
        let Some(st) = self.rest("GET", &format!("/rest/db/status?folder={FOLDER}")) else {
            return false;
        };
        let Some(done) = self.rest(
            "GET",
            &format!("/rest/db/completion?device={peer}&folder={FOLDER}"),
        ) else {
            return false;
        };
        st["state"] == "idle"
            && st["needTotalItems"] == 0
            && st["needFiles"] == 0
            && done["completion"].as_f64() == Some(100.0)
            && done["needItems"] == 0
    }

    /// SIGTERM, SIGKILL after 5 s; reaps the child. Idempotent.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Its own process group (whatever it forks goes too).
        let group = -i32::try_from(child.id()).unwrap();
        // SAFETY: signalling our own (not yet reaped) child's group.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the group id is not reused while the leader is unreaped.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = child.wait();
    }
}

/// `command` dies with the thread that spawns it (`PR_SET_PDEATHSIG`), so a killed test
/// binary leaves no process behind.
fn die_with_parent(command: &mut Command) {
    let parent = i32::try_from(std::process::id()).unwrap();
    // SAFETY: prctl, getppid and _exit are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

impl SyncthingPair {
    /// Generates two identities, configures folder [`FOLDER`] on `a` and `b` (created if
    /// missing, each given the spool's `.stignore`), starts both and waits (≤ 60 s) until
    /// each sees the other connected.
    pub fn start(a: &Path, b: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(TcpListener, u16)> = (0..4).map(|_| free_port()).collect();
        let sides = [(0, a), (1, b)].map(|(i, folder)| {
            let name = ["a", "b"][i];
            let home = dir.path().join(format!("home-{name}"));
            let out = Command::new("syncthing")
                .arg("generate")
                .arg(format!("--home={}", home.display()))
                .args(["--no-default-folder", "--skip-port-probing"])
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run syncthing ({e}): the fleet sync tests need it on PATH \
                         (`apt-get install syncthing`)"
                    )
                });
            assert!(
                out.status.success(),
                "syncthing generate failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let xml = std::fs::read_to_string(home.join("config.xml")).unwrap();
            let id = regex::Regex::new(r#"<device id="([A-Z0-9-]+)""#)
                .unwrap()
                .captures(&xml)
                .expect("a device id in the generated config.xml")[1]
                .to_string();
            std::fs::create_dir_all(folder).unwrap();
            Side {
                log: dir.path().join(format!("syncthing-{name}.log")),
                home,
                folder: std::fs::canonicalize(folder).unwrap(),
                id,
                gui_port: ports[2 * i].1,
                listen_port: ports[2 * i + 1].1,
                key: format!("architect-test-key-{name}-{}", ports[2 * i].1),
                child: None,
            }
        });
        for i in 0..2 {
            let xml = Self::config(&sides[i], &sides[1 - i]);
            std::fs::write(sides[i].home.join("config.xml"), xml).unwrap();
            let mut stignore = STIGNORE.join("\n");
            stignore.push('\n');
            std::fs::write(sides[i].folder.join(".stignore"), stignore).unwrap();
        }
        drop(ports);
        // (A pair from here on: a panic stops what was started.)
        let mut pair = Self { sides, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        // One after the other: when both dial before the other listens, the next dial
        // comes 20 s later; so b starts once a's listener is up, and finds it at once.
        pair.spawn(0);
        loop {
            let a = &pair.sides[0];
            let status = a.rest("GET", "/rest/system/status");
            let listener = format!("tcp://127.0.0.1:{}", a.listen_port);
            if status.is_some_and(|s| {
                s["connectionServiceStatus"][&listener].is_object()
                    && s["connectionServiceStatus"][&listener]["error"].is_null()
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Syncthing a did not listen within 60 s\n{}",
                pair.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pair.spawn(1);
        loop {
            let [a, b] = &pair.sides;
            if a.connected_to(&b.id) && b.connected_to(&a.id) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the two Syncthing instances did not connect within 60 s\n{}",
                pair.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pair
    }

    /// Starts side `i`: `syncthing serve`, output to its log, in its own process group,
    /// dying with this thread.
    fn spawn(&mut self, i: usize) {
        let side = &mut self.sides[i];
        let log = std::fs::File::create(&side.log).unwrap();
        let mut cmd = Command::new("syncthing");
        cmd.arg("serve")
            .arg(format!("--home={}", side.home.display()))
            .args(["--no-browser", "--no-restart", "--no-upgrade"])
            .env("STNORESTART", "1")
            .env("STNOUPGRADE", "1")
            // 1.19 forks a monitor process whatever --no-restart says, and its child
            // outlives a monitor killed with SIGKILL; this makes the process we start the real one.
            .env("STMONITORED", "yes")
            .env("HOME", self.dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        die_with_parent(&mut cmd);
        side.child = Some(cmd.spawn().unwrap());
    }

    /// `me`'s generated config.xml, rewritten: GUI/REST on loopback with an API key and
    /// no TLS, one loopback listener, no discovery, relays, NAT, usage reports, upgrades
    /// or crash reports; both devices at their addresses; the shared folder.
    fn config(me: &Side, peer: &Side) -> String {
        let mut xml = std::fs::read_to_string(me.home.join("config.xml")).unwrap();
        let gui = format!(
            "<gui enabled=\"true\" tls=\"false\" debugging=\"false\">\n        \
             <address>127.0.0.1:{}</address>\n        <apikey>{}</apikey>\n        \
             <theme>default</theme>\n    </gui>",
            me.gui_port, me.key
        );
        xml = regex::Regex::new(r"(?s)<gui .*?</gui>")
            .unwrap()
            .replacen(&xml, 1, regex::NoExpand(&gui))
            .into_owned();
        xml = set_element(
            &xml,
            "listenAddress",
            &format!("tcp://127.0.0.1:{}", me.listen_port),
        );
        for (name, value) in [
            ("globalAnnounceEnabled", "false"),
            ("localAnnounceEnabled", "false"),
            ("relaysEnabled", "false"),
            ("natEnabled", "false"),
            ("startBrowser", "false"),
            ("urAccepted", "-1"),
            ("autoUpgradeIntervalH", "0"),
            ("crashReportingEnabled", "false"),
        ] {
            xml = set_element(&xml, name, value);
        }
        let device = |s: &Side, name: &str| {
            format!(
                "    <device id=\"{}\" name=\"{name}\" compression=\"metadata\" introducer=\"false\">\n        \
                 <address>tcp://127.0.0.1:{}</address>\n        <paused>false</paused>\n    </device>\n",
                s.id, s.listen_port
            )
        };
        let folder = format!(
            "<folder id=\"{FOLDER}\" label=\"{FOLDER}\" path=\"{}\" type=\"sendreceive\" \
             rescanIntervalS=\"10\" fsWatcherEnabled=\"true\" fsWatcherDelayS=\"1\">\n        \
             <device id=\"{}\"></device>\n        <device id=\"{}\"></device>\n    </folder>\n{}{}    ",
            me.folder.display(),
            me.id,
            peer.id,
            device(me, "me"),
            device(peer, "peer"),
        );
        // The first <device> is this instance's own (the ones under <defaults> come later).
        regex::Regex::new(r"(?s)<device id=.*?</device>\s*")
            .unwrap()
            .replacen(&xml, 1, regex::NoExpand(folder.trim_start()))
            .into_owned()
    }

    /// Rescans the folder on both sides, then waits until both are idle with nothing to
    /// pull and each reports the other complete (100 %), twice in a row.
    pub fn wait_in_sync(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for side in &self.sides {
            // (Returns once the scan is done; a scan of a busy folder can outlast the
            // request's 10 s read timeout: then ask again.)
            loop {
                let r = http(
                    side.gui_port,
                    &side.key,
                    "POST",
                    &format!("/rest/db/scan?folder={FOLDER}"),
                );
                let timed_out = r.as_ref().is_err_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                });
                if timed_out && Instant::now() < deadline {
                    continue;
                }
                assert!(
                    matches!(r, Ok((200, _))),
                    "rescan failed: {r:?}\n{}",
                    self.logs()
                );
                break;
            }
        }
        let [a, b] = &self.sides;
        let mut agreed = 0;
        while agreed < 2 {
            if a.in_sync_with(&b.id) && b.in_sync_with(&a.id) {
                agreed += 1;
            } else {
                agreed = 0;
            }
            assert!(
                Instant::now() < deadline,
                "Syncthing not in sync after {timeout:?}: a {:?}, b {:?}\n{}",
                a.rest("GET", &format!("/rest/db/status?folder={FOLDER}")),
                b.rest("GET", &format!("/rest/db/status?folder={FOLDER}")),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Side `side`'s (0: `a`, 1: `b`) REST base URL (`http://127.0.0.1:PORT`) and API key.
    pub fn rest_address(&self, side: usize) -> (String, String) {
        let s = &self.sides[side];
        (format!("http://127.0.0.1:{}", s.gui_port), s.key.clone())
    }

    /// Side `side`'s device id.
    pub fn device_id(&self, side: usize) -> &str {
        &self.sides[side].id
    }

    /// The process ids of the running instances.
    pub fn pids(&self) -> Vec<u32> {
        self.sides.iter().filter_map(Side::pid).collect()
    }

    /// The last lines of both logs, for failure messages.
    pub fn logs(&self) -> String {
        let [a, b] = &self.sides;
        format!(
            "--- syncthing a ({}):\n{}\n--- syncthing b ({}):\n{}",
            self.dir.path().display(),
            tail(&a.log, 30),
            self.dir.path().display(),
            tail(&b.log, 30)
        )
    }

    /// Stops both instances (SIGTERM, SIGKILL after 5 s). Idempotent; also on drop.
    pub fn kill(&mut self) {
        for side in &mut self.sides {
            side.stop();
        }
    }
}

impl Drop for SyncthingPair {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many rsync rounds have finished, and what went wrong in them.
#[derive(Default)]
struct Rounds {
    done: u64,
    errors: Vec<String>,
}

/// Two one-way `rsync -a` copies every 200 ms: `a/nodes/<node_a>/` onto `b`, and
/// `b/nodes/<node_b>/` onto `a`. Dot files and `*.tmp` are never copied. Stops on drop.
pub struct RsyncLoop {
    stop: Arc<AtomicBool>,
    rounds: Arc<(Mutex<Rounds>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// The period of the rsync loop.
pub const RSYNC_PERIOD: Duration = Duration::from_millis(200);

/// One direction: `from/nodes/<node>/` onto `to/nodes/<node>/`. Quick check with
/// nanosecond mtimes (`--modify-window=-1`): by default rsync compares whole seconds, and
/// would miss a heartbeat rewritten with the same size within a second.
fn rsync_once(from: &Path, to: &Path, node: &str) -> Result<(), String> {
    let src = from.join("nodes").join(node);
    if !src.is_dir() {
        return Ok(()); // that node has written nothing yet
    }
    let dst_parent = to.join("nodes");
    std::fs::create_dir_all(&dst_parent).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("rsync");
    cmd.args([
        "-a",
        "--delete",
        "--modify-window=-1",
        "--exclude=.*",
        "--exclude=*.tmp",
    ])
    .arg(format!("{}/", src.display()))
    .arg(format!("{}/", dst_parent.join(node).display()))
    .stdin(Stdio::null());
    die_with_parent(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run rsync ({e}): `apt-get install rsync`"))?;
    // 24: files vanished during the transfer (a writer renamed or deleted them): the next
    // round copies what is there then.
    match out.status.code() {
        Some(0 | 24) => Ok(()),
        _ => Err(format!(
            "rsync {} -> {}: {}: {}",
            src.display(),
            to.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

impl RsyncLoop {
    /// Starts the loop in a background thread.
    pub fn start(a: &Path, node_a: &str, b: &Path, node_b: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new((Mutex::new(Rounds::default()), Condvar::new()));
        let (a, b) = (a.to_path_buf(), b.to_path_buf());
        let (node_a, node_b) = (node_a.to_string(), node_b.to_string());
        let thread = {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut errors: Vec<String> =
                        [rsync_once(&a, &b, &node_a), rsync_once(&b, &a, &node_b)]
                            .into_iter()
                            .filter_map(Result::err)
                            .collect();
                    {
                        let (lock, cv) = &*rounds;
                        let mut r = lock.lock().unwrap();
                        r.done += 1;
                        r.errors.append(&mut errors);
                        cv.notify_all();
                    }
                    let next = Instant::now() + RSYNC_PERIOD;
                    while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        };
        Self {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits (≤ 30 s) for two full rounds after the call (so one started after it);
    /// panics if any rsync failed.
    pub fn wait_in_sync(&self) {
        let (lock, cv) = &*self.rounds;
        let mut r = lock.lock().unwrap();
        let target = r.done + 2;
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.done < target && r.errors.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the rsync loop made no progress in 30 s");
            r = cv.wait_timeout(r, left).unwrap().0;
        }
        assert!(
            r.errors.is_empty(),
            "rsync failed:\n{}",
            r.errors.join("\n")
        );
    }
}

impl Drop for RsyncLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `bytes` to `path` as the spool does: a dot `.tmp` file beside it, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits (≤ `timeout`) until `path` holds exactly `bytes`; returns how long that took.
pub fn wait_for_bytes(path: &Path, bytes: &[u8], timeout: Duration) -> Duration {
    let t0 = Instant::now();
    wait_for(&format!("{} to arrive", path.display()), timeout, || {
        std::fs::read(path).is_ok_and(|b| b == bytes)
    });
    t0.elapsed()
}
