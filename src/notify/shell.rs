//! The doing: a worker task that runs commands and POSTs webhooks, fed through a bounded
//! channel by the log's observer, so the daemon never waits on a notification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use super::decide::{Notification, Notifier};
use super::rules::{Action, Rules};
use crate::log::event::NotifyFailed;
use crate::log::{Event, EventLog};

/// How many notifications may wait for the worker; more are dropped (each drop is a
/// `notify_failed` event with `error = "queue full …"`).
pub const QUEUE_CAPACITY: usize = 64;
/// How many commands and requests run at once.
pub const CONCURRENT_SENDS: usize = 4;
/// How much of a failing command's stderr is kept for the `notify_failed` event (its
/// end), bytes.
pub const STDERR_TAIL_BYTES: usize = 1024;

/// One notification, ready to go: what to do, with what body.
#[derive(Debug)]
struct Job {
    rule: String,
    trigger: &'static str,
    action: Action,
    timeout: Duration,
    /// The JSON to send.
    body: Vec<u8>,
    task_id: Option<String>,
    session: Option<String>,
}

impl Job {
    fn of(n: &Notification) -> Self {
        Self {
            rule: n.rule.name.clone(),
            trigger: n.trigger.as_str(),
            action: n.rule.action.clone(),
            timeout: n.rule.timeout,
            body: serde_json::to_vec(&n.payload()).unwrap_or_default(),
            task_id: n.event.task_id.clone(),
            session: n.event.session.clone(),
        }
    }

    fn failed(&self, error: String) -> NotifyFailed {
        NotifyFailed {
            rule: self.rule.clone(),
            event: self.trigger.to_string(),
            action: self.action.to_string(),
            error,
        }
    }
}

/// The daemon's notifications: the [`Notifier`] (decisions) behind a mutex, and the
/// channel to the worker that carries them out.
///
/// [`Notifications::start`] makes it the event log's observer: every event the daemon
/// logs is decided on the thread that logged it (a lock and a few map look-ups), and each
/// notification to send is handed to the worker with `try_send` — never waited for. The
/// worker runs up to [`CONCURRENT_SENDS`] at once, each bounded by its rule's timeout.
/// A failure (a command's non-zero exit or timeout, an HTTP error status, a request
/// error or timeout, a full queue) becomes a `notify_failed` event and a tracing
/// warning; nothing stops the daemon.
#[derive(Debug)]
pub struct Notifications {
    notifier: Mutex<Notifier>,
    tx: mpsc::Sender<Job>,
    log: Weak<EventLog>,
    dropped: AtomicU64,
    /// Notifications queued or being sent.
    pending: Arc<AtomicU64>,
}

impl Notifications {
    /// Starts the worker on the current tokio runtime and makes the result `log`'s
    /// observer ([`EventLog::set_observer`]), with `rules` and `profiles` (session name →
    /// profile name, for rules' `profiles` filters).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use]
    pub fn start(
        log: &Arc<EventLog>,
        rules: Rules,
        profiles: HashMap<String, String>,
    ) -> Arc<Self> {
        Self::start_with(log, rules, profiles, QUEUE_CAPACITY)
    }

    /// [`Notifications::start`] with a queue of `capacity` (tests use a tiny one).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use]
    pub fn start_with(
        log: &Arc<EventLog>,
        rules: Rules,
        profiles: HashMap<String, String>,
        capacity: usize,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let pending = Arc::new(AtomicU64::new(0));
        let this = Arc::new(Self {
            notifier: Mutex::new(Notifier::new(rules, profiles)),
            tx,
            log: Arc::downgrade(log),
            dropped: AtomicU64::new(0),
            pending: pending.clone(),
        });
        tokio::spawn(worker(rx, Arc::downgrade(log), pending));
        let observer = Arc::downgrade(&this);
        let set = log.set_observer(Box::new(move |event| {
            if let Some(n) = observer.upgrade() {
                n.on_event(event);
            }
        }));
        if set.is_err() {
            tracing::error!(
                "notifications: the event log has an observer already; none will be sent"
            );
        }
        this
    }

    /// Replaces the rules (a reloaded `notify.toml`; see [`Notifier::set_rules`]).
    pub fn set_rules(&self, rules: Rules, profiles: HashMap<String, String>) {
        self.notifier().set_rules(rules, profiles);
    }

    /// Notifications dropped since start (the queue was full, or the worker gone).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every queued notification has been sent (or has failed), for at most
    /// `max`: the daemon's stop gives the last ones a chance. True when none is left.
    pub async fn drain(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    fn notifier(&self) -> std::sync::MutexGuard<'_, Notifier> {
        self.notifier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides on `event` now and queues what it sends.
    fn on_event(&self, event: &Event) {
        let sends = {
            let mut n = self.notifier();
            if n.is_empty() {
                return;
            }
            n.decide(event, Instant::now())
        };
        for n in &sends {
            let job = Job::of(n);
            self.pending.fetch_add(1, Ordering::SeqCst);
            let refused = match self.tx.try_send(job) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(job)) => {
                    let error = format!(
                        "queue full: {} notifications wait for slow or unreachable receivers; \
                         this one was dropped",
                        self.tx.max_capacity()
                    );
                    Some((job, error))
                }
                Err(mpsc::error::TrySendError::Closed(job)) => Some((
                    job,
                    "the sender has stopped: this one was dropped".to_string(),
                )),
            };
            if let Some((job, error)) = refused {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %job.rule, "notification dropped: {error}");
                if let Some(log) = self.log.upgrade() {
                    log.record(
                        job.task_id.as_deref(),
                        job.session.as_deref(),
                        job.failed(error),
                    );
                }
            }
        }
    }
}

/// Takes jobs off the queue and runs each in its own task, [`CONCURRENT_SENDS`] at a
/// time. Ends when the sending side is gone.
async fn worker(mut rx: mpsc::Receiver<Job>, log: Weak<EventLog>, pending: Arc<AtomicU64>) {
    let http = reqwest::Client::builder()
        .user_agent(concat!("architect/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    let permits = Arc::new(Semaphore::new(CONCURRENT_SENDS));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let http = http.clone();
        let log = log.clone();
        let pending = pending.clone();
        tokio::spawn(async move {
            let result = match &job.action {
                Action::Command(argv) => run_command(argv, &job.body, job.timeout).await,
                Action::Webhook { url, .. } => {
                    post(&http, url.secret().clone(), &job.body, job.timeout).await
                }
            };
            drop(permit);
            match result {
                Ok(()) => tracing::debug!(rule = %job.rule, "notification sent"),
                Err(error) => {
                    tracing::warn!(rule = %job.rule, action = %job.action, "notification failed: {error}");
                    if let Some(log) = log.upgrade() {
                        log.record(
                            job.task_id.as_deref(),
                            job.session.as_deref(),
                            job.failed(error),
                        );
                    }
                }
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Runs `argv` (no shell) in its own process group with `body` on stdin, stdout to
/// `/dev/null`; kills the group after `timeout`.
///
/// # Errors
/// What went wrong, in words: it could not start, it exited non-zero (with the last
/// line of its stderr) or by a signal, or it timed out.
async fn run_command(argv: &[String], body: &[u8], timeout: Duration) -> Result<(), String> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", argv[0]))?;
    let pgid = child.id();
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let run = async {
        if let Some(mut s) = stdin.take() {
            // A command that does not read its stdin is not a failure.
            let _ = s.write_all(body).await;
            let _ = s.write_all(b"\n").await;
        }
        let mut tail = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
        }
        (child.wait().await, tail)
    };
    let outcome = tokio::time::timeout(timeout, run).await;
    let Ok((status, tail)) = outcome else {
        if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: signalling the process group this function started.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = child.wait().await;
        return Err(format!(
            "timed out after {} s (its process group was killed)",
            timeout.as_secs()
        ));
    };
    let status = status.map_err(|e| format!("waiting for {}: {e}", argv[0]))?;
    if status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&tail);
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let how = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("killed by signal {}", status.signal().unwrap_or(0))
        }
    };
    Err(if last.is_empty() {
        how
    } else {
        format!("{how}: {}", last.trim())
    })
}

/// POSTs `body` (JSON) to `url` within `timeout`.
///
/// # Errors
/// `HTTP <status>` for a status other than 2xx; the request error otherwise (never with
/// the URL: it may hold a token).
async fn post(
    http: &reqwest::Client,
    url: url::Url,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let resp = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| describe(e, timeout))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// A request error in words, with its causes and without its URL.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} s", timeout.as_secs());
    }
    let e = e.without_url();
    let mut text = format!("request failed: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::log::{event, read_events};

    fn rules(text: &str) -> Rules {
        Rules::parse(text, Path::new("notify.toml"), |_| None).unwrap()
    }

    fn fail(log: &EventLog, task: &str) {
        log.record(
            Some(task),
            Some("sh-1"),
            event::TaskFailed::Finished {
                attempts: 1,
                duration_ms: None,
                error: Some("boom".into()),
            },
        );
    }

    fn failures(dir: &Path) -> Vec<(Option<String>, NotifyFailed)> {
        read_events(dir)
            .unwrap()
            .into_iter()
            .filter_map(|e| Some((e.task_id.clone(), e.payload::<NotifyFailed>()?.clone())))
            .collect()
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_command_gets_the_notification_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EventLog::new(dir.path(), "n1"));
        let out = dir.path().join("out.json");
        let text = format!(
            "[[notify]]\nname = \"c\"\nevents = [\"task_failed\"]\ncommand = [\"tee\", {:?}]\n",
            out.display().to_string()
        );
        let _n = Notifications::start(&log, rules(&text), HashMap::new());
        fail(&log, "t1");
        wait_for("the command's output", || {
            std::fs::read_to_string(&out).is_ok_and(|s| s.ends_with('\n'))
        })
        .await;
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(body["rule"], "c");
        assert_eq!(body["event"]["task_id"], "t1");
        assert_eq!(body["event"]["data"]["error"], "boom");
    }

    #[tokio::test]
    async fn a_failing_or_hanging_command_is_logged_as_notify_failed() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EventLog::new(dir.path(), "n1"));
        let pidfile = dir.path().join("pid");
        let text = format!(
            "[[notify]]\nname = \"bad\"\nevents = [\"task_failed\"]\n\
             command = [\"sh\", \"-c\", \"echo nope >&2; exit 3\"]\nmin_interval_s = 0\n\
             [[notify]]\nname = \"slow\"\nevents = [\"task_failed\"]\ntimeout_s = 1\n\
             command = [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 60\"]\n\
             [[notify]]\nname = \"missing\"\nevents = [\"task_failed\"]\n\
             command = [\"/nonexistent/notifier\"]\n",
            pidfile.display()
        );
        let _n = Notifications::start(&log, rules(&text), HashMap::new());
        fail(&log, "t1");
        wait_for("three notify_failed events", || {
            failures(dir.path()).len() == 3
        })
        .await;
        let mut got: Vec<(String, String)> = failures(dir.path())
            .into_iter()
            .map(|(task, f)| {
                assert_eq!(task.as_deref(), Some("t1"));
                assert_eq!(f.event, "task_failed");
                (f.rule, f.error)
            })
            .collect();
        got.sort();
        assert_eq!(got[0].0, "bad");
        assert_eq!(got[0].1, "exit status 3: nope");
        assert_eq!(got[1].0, "missing");
        assert!(
            got[1]
                .1
                .starts_with("could not start /nonexistent/notifier"),
            "{got:?}"
        );
        assert_eq!(got[2].0, "slow");
        assert_eq!(
            got[2].1,
            "timed out after 1 s (its process group was killed)"
        );
        // The hanging command was killed, not left behind.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_for("the slow command to be gone", || {
            // SAFETY: signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            !alive
        })
        .await;
    }

    #[tokio::test]
    async fn drain_waits_for_the_sends_in_flight_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EventLog::new(dir.path(), "n1"));
        let out = dir.path().join("late");
        let text = format!(
            "[[notify]]\nname = \"late\"\nevents = [\"task_failed\"]\nmin_interval_s = 0\n\
             command = [\"sh\", \"-c\", \"sleep 0.3; touch {}\"]\n\
             [[notify]]\nname = \"hang\"\nevents = [\"session_dead\"]\ntimeout_s = 60\n\
             command = [\"sleep\", \"60\"]\n",
            out.display()
        );
        let n = Notifications::start(&log, rules(&text), HashMap::new());
        assert!(n.drain(Duration::ZERO).await, "nothing queued");
        fail(&log, "t1");
        assert!(n.drain(Duration::from_secs(20)).await);
        assert!(out.exists(), "drained means done");
        log.record(
            None,
            Some("sh-1"),
            event::SessionExited {
                status: "signal 9".into(),
                requested: false,
                uptime_ms: None,
            },
        );
        assert!(
            !n.drain(Duration::from_millis(200)).await,
            "a hanging send is left"
        );
    }

    /// On a current-thread runtime the worker cannot run while the test logs, so the
    /// queue's fill is exact: one waits, the rest are dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EventLog::new(dir.path(), "n1"));
        let text = "[[notify]]\nname = \"q\"\nevents = [\"task_failed\"]\n\
                    command = [\"true\"]\nmin_interval_s = 0\n";
        let n = Notifications::start_with(&log, rules(text), HashMap::new(), 1);
        for t in ["a", "b", "c"] {
            fail(&log, t);
        }
        assert_eq!(n.dropped(), 2);
        let dropped = failures(dir.path());
        assert_eq!(dropped.len(), 2);
        assert_eq!(dropped[0].0.as_deref(), Some("b"));
        assert!(dropped[0].1.error.starts_with("queue full"), "{dropped:?}");
        assert_eq!(dropped[0].1.action, "command true");
    }

    #[tokio::test]
    async fn a_webhook_that_refuses_the_connection_is_logged_without_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EventLog::new(dir.path(), "n1"));
        // A port nobody listens on: bind, note, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "[[notify]]\nname = \"down\"\nevents = [\"task_failed\"]\n\
             webhook = \"http://127.0.0.1:{port}/services/T0/B0/s3cr3tt0ken\"\n"
        );
        let _n = Notifications::start(&log, rules(&text), HashMap::new());
        fail(&log, "t1");
        wait_for("notify_failed", || !failures(dir.path()).is_empty()).await;
        let (_, f) = failures(dir.path()).remove(0);
        assert_eq!(f.action, format!("webhook http://127.0.0.1:{port}"));
        assert!(f.error.starts_with("request failed"), "{f:?}");
        let all: String = crate::log::log_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert!(!all.contains("s3cr3tt0ken"), "{all}");
    }
}
