//! Budgets: spend so far (from the log's `llm_call` events) plus the calls in flight,
//! against the limits in `config/providers.toml`, per UTC day and month.
//!
//! Every process that calls a provider — the daemon's provider sessions and each
//! `architect ask` — takes part in one ledger per spool, `spool/providers/
//! budget.ledger.json`: an exclusive `flock(2)` on it is held for the few microseconds of
//! a check (never across an HTTP call), and its content is the reservations in flight,
//! one entry per process (pid, process start time, the USD it holds per provider, and a
//! backstop expiry). It is rewritten in place, so the locked file is always the file.
//!
//! Before a call, under the lock: the log is read up to its end (only what was appended
//! since this process last looked), entries of processes that are gone (their pid no
//! longer runs with the same start time) or past their expiry are dropped, and the
//! call's worst-case cost ([`estimate`]) is reserved if spent + reserved + estimate
//! stays within every budget; otherwise the call is not made. After the call, under the
//! lock again, its `llm_call` event (the actual cost) is appended and the reservation is
//! released, so at every instant a check sees each call either reserved or in the log.
//! Spend is never a counter that can drift: it is derived from the log.
//!
//! The day and the month are those of the date: a check at time `t` counts the events
//! of `t`'s UTC day and month (each event by its own timestamp), and every reservation in
//! flight (it will be spent now, whatever day it was made).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{Budget, ProviderConfig, ProvidersFile, Usage};

/// USD spent per UTC day and provider, from the `llm_call` events of the log files of
/// one month. Kept up to date by [`Spend::refresh`], which reads only what was appended
/// to the files since the last read.
#[derive(Debug, Clone, Default)]
pub struct Spend {
    /// `(year, month)` the files and sums are for.
    month: (i32, u32),
    /// This month's log files, and the log directory's mtime when they were listed
    /// (listed again when it changes: a new file).
    files: Vec<PathBuf>,
    listed_at: Option<std::time::SystemTime>,
    /// Per log file: bytes read so far (always the end of a complete line).
    read: HashMap<PathBuf, u64>,
    /// Per UTC day: USD per provider.
    days: BTreeMap<NaiveDate, HashMap<String, f64>>,
}

impl Spend {
    /// Sums the `cost_usd` of the `llm_call` events in `log_dir` for `now`'s month
    /// (reading only that month's log files).
    #[must_use]
    pub fn from_log(log_dir: &Path, now: DateTime<Utc>) -> Self {
        let mut s = Self::default();
        s.refresh(log_dir, now);
        s
    }

    /// Reads what was appended to `now`'s month's log files since the last call (a new
    /// month starts afresh; a file that shrank is read again from its start). Costs a
    /// `stat` of the directory and of each of the month's files, and a read of what
    /// grew.
    pub fn refresh(&mut self, log_dir: &Path, now: DateTime<Utc>) {
        let month = (now.year(), now.month());
        if month != self.month {
            *self = Self {
                month,
                ..Self::default()
            };
        }
        let mtime = std::fs::metadata(log_dir).and_then(|m| m.modified()).ok();
        // A directory changed within the last seconds is listed again whatever its
        // mtime says: a file created in the same clock tick as the last listing leaves
        // the mtime as it was.
        let recent = mtime.is_none_or(|m| {
            std::time::SystemTime::now()
                .duration_since(m)
                .map_or(true, |d| d < std::time::Duration::from_secs(2))
        });
        if recent || mtime != self.listed_at {
            // Only this month's files (the date is in the name): start-up and every
            // `architect ask` read one month of log, not all of it.
            let prefix = format!("{:04}{:02}", month.0, month.1);
            self.files = crate::log::log_files(log_dir)
                .unwrap_or_default()
                .into_iter()
                .filter(|path| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".jsonl"))
                        .and_then(|n| n.rsplit('-').next())
                        .is_some_and(|date| date.starts_with(&prefix))
                })
                .collect();
            self.listed_at = mtime;
        }
        for i in 0..self.files.len() {
            let path = self.files[i].clone();
            if !self.read_file(&path) {
                // Shrunk or replaced: start over.
                *self = Self {
                    month,
                    ..Self::default()
                };
                self.refresh(log_dir, now);
                return;
            }
        }
    }

    /// Reads the new complete lines of one file; false when the file is shorter than
    /// what was read before.
    fn read_file(&mut self, path: &Path) -> bool {
        let done = self.read.get(path).copied().unwrap_or(0);
        let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
            return true;
        };
        if len < done {
            return false;
        }
        if len == done {
            return true;
        }
        let Ok(mut f) = File::open(path) else {
            return true;
        };
        if f.seek(SeekFrom::Start(done)).is_err() {
            return true;
        }
        let mut buf = Vec::with_capacity(usize::try_from(len - done).unwrap_or(0));
        if f.read_to_end(&mut buf).is_err() {
            return true;
        }
        // Only complete lines: a line being written is read next time.
        let Some(end) = buf.iter().rposition(|b| *b == b'\n').map(|i| i + 1) else {
            return true;
        };
        for line in buf[..end].split(|b| *b == b'\n') {
            // Cheap test first: most lines are other events.
            if !line.windows(18).any(|w| w == b"\"type\":\"llm_call\",") {
                continue;
            }
            let Ok(e) = serde_json::from_slice::<crate::log::Event>(line) else {
                continue;
            };
            if let Some(call) = e.payload::<crate::log::event::LlmCall>() {
                self.add(e.ts, &call.provider, call.cost_usd);
            }
        }
        self.read.insert(path.to_path_buf(), done + end as u64);
        true
    }

    /// Counts `usd` spent on `provider` at `ts` (ignored unless `ts` is in the month the
    /// sums are for).
    pub fn add(&mut self, ts: DateTime<Utc>, provider: &str, usd: f64) {
        if (ts.year(), ts.month()) != self.month && self.month != (0, 0) {
            return;
        }
        *self
            .days
            .entry(ts.date_naive())
            .or_default()
            .entry(provider.to_string())
            .or_default() += usd;
    }

    /// USD spent on `at`'s UTC day, on `provider` or (`None`) on all of them.
    #[must_use]
    pub fn day(&self, at: DateTime<Utc>, provider: Option<&str>) -> f64 {
        self.days
            .get(&at.date_naive())
            .map_or(0.0, |m| sum(m, provider))
    }

    /// USD spent in `at`'s UTC month, on `provider` or (`None`) on all of them.
    #[must_use]
    pub fn month(&self, at: DateTime<Utc>, provider: Option<&str>) -> f64 {
        self.days
            .iter()
            .filter(|(d, _)| (d.year(), d.month()) == (at.year(), at.month()))
            .map(|(_, m)| sum(m, provider))
            .sum()
    }
}

fn sum(m: &HashMap<String, f64>, provider: Option<&str>) -> f64 {
    match provider {
        Some(p) => m.get(p).copied().unwrap_or(0.0),
        None => m.values().sum(),
    }
}

/// Worst-case cost of sending `prompt` to `p`, in USD.
#[must_use]
pub fn estimate(p: &ProviderConfig, prompt: &str) -> f64 {
    let u = Usage {
        input: u64::try_from(prompt.chars().count() / 4 + 1).unwrap_or(u64::MAX),
        output: u64::from(p.max_tokens),
        ..Usage::default()
    };
    p.price.cost(&u)
}

/// Why a call may not be made.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// It could break a budget.
    Over {
        /// `provider daily`, `provider monthly`, `total daily`, `total monthly`.
        which: &'static str,
        /// The limit, USD.
        limit: f64,
        /// Spent in the period (from the log).
        spent: f64,
        /// Reserved by calls in flight (this node, every process).
        reserved: f64,
        /// This call's worst case.
        estimate: f64,
    },
    /// The ledger could not be read or written: no call is made (fail closed).
    Ledger(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Over {
                which,
                limit,
                spent,
                reserved,
                estimate,
            } => write!(
                f,
                "{which} budget: ${spent:.4} spent and ${reserved:.4} reserved by calls in flight of ${limit:.4}, this call could cost ${estimate:.4}"
            ),
            Self::Ledger(e) => write!(f, "budget ledger: {e}"),
        }
    }
}

/// The first budget a call to `p` estimated at `estimate` USD would break at `now`,
/// given what was spent (`spend`) and what calls in flight hold (`reserved`: per
/// provider).
#[must_use]
pub fn would_break(
    file: &ProvidersFile,
    p: &ProviderConfig,
    estimate: f64,
    spend: &Spend,
    reserved: &HashMap<String, f64>,
    now: DateTime<Utc>,
) -> Option<Refusal> {
    let check = |b: &Budget, who: Option<&str>, d: &'static str, m: &'static str| {
        let held = sum(reserved, who);
        let periods = [
            (b.daily_usd, spend.day(now, who), d),
            (b.monthly_usd, spend.month(now, who), m),
        ];
        periods.into_iter().find_map(|(limit, spent, which)| {
            limit
                .filter(|l| spent + held + estimate > *l)
                .map(|limit| Refusal::Over {
                    which,
                    limit,
                    spent,
                    reserved: held,
                    estimate,
                })
        })
    };
    check(
        &p.budget,
        Some(&p.name),
        "provider daily",
        "provider monthly",
    )
    .or_else(|| check(&file.budget, None, "total daily", "total monthly"))
}

/// The start time of process `pid` (clock ticks since boot, `/proc/<pid>/stat` field
/// 22): with the pid, it names one process for good (a pid can be reused, this pair
/// cannot). `None` when the process does not exist.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One process's reservations in `budget.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Holder {
    pid: u32,
    /// Process start time (see [`process_start`]).
    start: u64,
    /// Backstop: by then every call it reserved for has ended (the request's deadline
    /// plus the provider's HTTP timeout); an entry past it is dropped even if the pid
    /// still runs.
    until: DateTime<Utc>,
    /// USD held per provider.
    reserved: BTreeMap<String, f64>,
    /// Calls in flight.
    calls: usize,
}

/// `spool/providers/budget.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    holders: Vec<Holder>,
}

#[derive(Debug)]
struct Hold {
    provider: String,
    usd: f64,
    until: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct State {
    spend: Spend,
    /// This process's reservations in flight.
    mine: HashMap<u64, Hold>,
    next: u64,
}

/// The budget ledger of one spool, shared by every process on the node through
/// `spool/providers/budget.lock` (see the module docs). One per process.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    log_dir: PathBuf,
    pid: u32,
    /// This process's start time (0 where `/proc` cannot tell).
    start: u64,
    state: Mutex<State>,
}

/// The ledger file, in `spool/providers/`: `flock(2)`ed for each check, its content the
/// reservations in flight (a provider's breaker is `<name>.json`; no provider name holds
/// a `.`, so this name is free).
pub const LEDGER_FILE: &str = "budget.ledger.json";

fn any_limit(b: &Budget) -> bool {
    b.daily_usd.is_some() || b.monthly_usd.is_some()
}

/// Whether process `pid` started at `start` still runs.
fn alive(pid: u32, start: u64) -> bool {
    if start != 0 {
        return process_start(pid) == Some(start);
    }
    // No start time (no /proc): the pid alone, then the entry's expiry.
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Ledger {
    /// The ledger in `providers_dir` (`spool/providers/`), with spend from the log files
    /// in `log_dir` (this month's are read now, without the lock; later checks read only
    /// what was appended since).
    #[must_use]
    pub fn new(providers_dir: PathBuf, log_dir: PathBuf) -> Self {
        let pid = std::process::id();
        Self {
            state: Mutex::new(State {
                spend: Spend::from_log(&log_dir, Utc::now()),
                ..State::default()
            }),
            start: process_start(pid).unwrap_or(0),
            pid,
            dir: providers_dir,
            log_dir,
        }
    }

    /// Reserves `estimate` USD for a call to `p` if spent + reserved + `estimate` stays
    /// within every budget that applies, at this instant, across every process on the
    /// node. `until`: when the call has surely ended (a backstop for a process that
    /// hangs; a dead process's reservations are dropped at once).
    ///
    /// `Ok(None)`: no budget applies (no limit configured, or a free call), nothing held.
    ///
    /// # Errors
    /// [`Refusal::Over`] naming the budget it would break, or [`Refusal::Ledger`] when
    /// the ledger cannot be read or written (no call is made then either).
    pub fn reserve(
        &self,
        file: &ProvidersFile,
        p: &ProviderConfig,
        estimate: f64,
        until: DateTime<Utc>,
    ) -> Result<Option<Reservation<'_>>, Refusal> {
        if estimate <= 0.0 || !(any_limit(&p.budget) || any_limit(&file.budget)) {
            return Ok(None);
        }
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (lock, mut ledger, now) = self.open(&mut st).map_err(Refusal::Ledger)?;
        let mut reserved: HashMap<String, f64> = HashMap::new();
        let holds = ledger
            .holders
            .iter()
            .flat_map(|h| h.reserved.iter().map(|(p, u)| (p.as_str(), *u)))
            .chain(st.mine.values().map(|h| (h.provider.as_str(), h.usd)));
        for (provider, usd) in holds {
            *reserved.entry(provider.to_string()).or_default() += usd;
        }
        if let Some(r) = would_break(file, p, estimate, &st.spend, &reserved, now) {
            // Still write: dead holders were dropped.
            let _ = self.store(&st, &lock, &mut ledger);
            return Err(r);
        }
        let id = st.next;
        st.next += 1;
        st.mine.insert(
            id,
            Hold {
                provider: p.name.clone(),
                usd: estimate,
                until,
            },
        );
        if let Err(e) = self.store(&st, &lock, &mut ledger) {
            st.mine.remove(&id);
            return Err(Refusal::Ledger(e));
        }
        drop(lock);
        Ok(Some(Reservation {
            ledger: self,
            id,
            usd: estimate,
            open: true,
        }))
    }

    /// Under the lock: runs `record` (which appends the call's `llm_call` event, with its
    /// actual cost) and then gives the reservation back, so no check ever sees the call
    /// neither reserved nor spent. Without the lock (the ledger cannot be opened),
    /// `record` still runs.
    fn finish(&self, id: u64, record: impl FnOnce()) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.open(&mut st) {
            Ok((lock, mut ledger, _)) => {
                record();
                st.mine.remove(&id);
                if let Err(e) = self.store(&st, &lock, &mut ledger) {
                    tracing::warn!("budget ledger: {e}");
                }
                drop(lock);
            }
            Err(e) => {
                tracing::warn!("budget ledger: {e}");
                record();
                st.mine.remove(&id);
            }
        }
    }

    /// Takes the lock, reads the log up to its end and the reservations, and drops the
    /// entries of this process (kept in memory) and of processes that are gone or past
    /// their expiry.
    fn open(&self, st: &mut State) -> Result<(File, LedgerFile, DateTime<Utc>), String> {
        use fs2::FileExt;
        let path = self.dir.join(LEDGER_FILE);
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
        };
        let mut file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::durable::create_dir(&self.dir).map_err(|e| e.to_string())?;
                open()
            }
            other => other,
        }
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
        FileExt::lock_exclusive(&file).map_err(|e| format!("locking {}: {e}", path.display()))?;
        let now = Utc::now();
        st.spend.refresh(&self.log_dir, now);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        // The first JSON value: a writer killed between its write and its truncate
        // leaves the tail of a longer older content behind it.
        let mut ledger: LedgerFile = serde_json::Deserializer::from_slice(&bytes)
            .into_iter()
            .next()
            .and_then(Result::ok)
            .unwrap_or_default();
        ledger.holders.retain(|h| {
            !(h.pid == self.pid && h.start == self.start) && h.until > now && alive(h.pid, h.start)
        });
        Ok((file, ledger, now))
    }

    /// Writes the reservations back in place (the file stays the one that is locked):
    /// the others' entries and this process's. No fsync: after a machine crash every
    /// holder is gone anyway.
    fn store(&self, st: &State, file: &File, ledger: &mut LedgerFile) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        if let Some(until) = st.mine.values().map(|h| h.until).max() {
            let mut reserved = BTreeMap::new();
            for h in st.mine.values() {
                *reserved.entry(h.provider.clone()).or_default() += h.usd;
            }
            ledger.holders.push(Holder {
                pid: self.pid,
                start: self.start,
                until,
                reserved,
                calls: st.mine.len(),
            });
        }
        let mut bytes = serde_json::to_vec_pretty(ledger).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let path = self.dir.join(LEDGER_FILE);
        file.write_all_at(&bytes, 0)
            .and_then(|()| file.set_len(bytes.len() as u64))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

/// A call's reservation, from [`Ledger::reserve`]. [`Reservation::settle`] it once the
/// call is logged; dropping it (the call failed, or the request was abandoned) gives it
/// back.
#[derive(Debug)]
#[must_use = "a reservation holds budget until it is settled or dropped"]
pub struct Reservation<'a> {
    ledger: &'a Ledger,
    id: u64,
    /// USD held.
    pub usd: f64,
    open: bool,
}

impl Reservation<'_> {
    /// Runs `record` — which appends the call's `llm_call` event with its actual cost —
    /// and gives the reservation back, both under the ledger's lock.
    pub fn settle(mut self, record: impl FnOnce()) {
        self.open = false;
        self.ledger.finish(self.id, record);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.open {
            self.ledger.finish(self.id, || {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: &str, provider: &str, usd: f64) -> String {
        format!(
            "{{\"ts\":\"{ts}\",\"node\":\"n\",\"type\":\"llm_call\",\"task_id\":null,\"session\":null,\"data\":{{\"provider\":\"{provider}\",\"cost_usd\":{usd}}}}}\n"
        )
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn providers(text: &str) -> ProvidersFile {
        ProvidersFile::parse(text, Path::new("providers.toml")).unwrap()
    }

    const ONE_DOLLAR_CALLS: &str = "[[provider]]\nname = 'p'\nkind = 'openai'\n\
        base_url = 'http://127.0.0.1:1/v1'\nmodel = 'm'\nmax_tokens = 10\n\
        [provider.price]\noutput = 100000.0\n[provider.budget]\ndaily_usd = 1.5\nmonthly_usd = 2.5\n";

    #[test]
    fn spend_reads_this_months_logs_then_only_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (oct, nov20, nov21) = (
            dir.path().join("events-n-20261031.jsonl"),
            dir.path().join("events-n-20261120.jsonl"),
            dir.path().join("events-n-20261121.jsonl"),
        );
        append(&oct, &line("2026-10-31T10:00:00.000000Z", "p", 5.0));
        append(&nov20, &line("2026-11-20T10:00:00.000000Z", "p", 0.25));
        append(&nov21, &line("2026-11-21T09:00:00.000000Z", "p", 0.5));
        let now = t("2026-11-21T10:00:00Z");
        let mut s = Spend::from_log(dir.path(), now);
        assert!((s.month(now, None) - 0.75).abs() < 1e-12, "{s:?}");
        assert!((s.day(now, Some("p")) - 0.5).abs() < 1e-12, "{s:?}");
        assert!(s.day(now, Some("other")).abs() < 1e-12);
        // Appended: a complete line and a torn one (still being written).
        let more = line("2026-11-21T10:00:01.000000Z", "q", 0.125);
        let (head, tail) = more.split_at(40);
        append(&nov21, &line("2026-11-21T10:00:00.000000Z", "p", 0.25));
        append(&nov21, head);
        s.refresh(dir.path(), now);
        assert!((s.day(now, None) - 0.75).abs() < 1e-12, "{s:?}");
        append(&nov21, tail);
        s.refresh(dir.path(), now);
        assert!((s.day(now, None) - 0.875).abs() < 1e-12, "{s:?}");
        assert!((s.month(now, None) - 1.125).abs() < 1e-12, "{s:?}");
        // A file that shrank (replaced) is read again from its start.
        std::fs::write(&nov21, line("2026-11-21T09:00:00.000000Z", "p", 0.5)).unwrap();
        s.refresh(dir.path(), now);
        assert!((s.day(now, None) - 0.5).abs() < 1e-12, "{s:?}");
    }

    #[test]
    fn the_day_and_month_are_the_calls_date_not_a_change_since_the_last_call() {
        let dir = tempfile::tempdir().unwrap();
        append(
            &dir.path().join("events-n-20261130.jsonl"),
            &line("2026-11-30T23:59:59.000000Z", "p", 1.0),
        );
        let f = providers(ONE_DOLLAR_CALLS);
        let p = &f.provider[0];
        let est = estimate(p, "hi");
        assert!((est - 1.0).abs() < 1e-12, "{est}");
        let none = HashMap::new();
        let mut s = Spend::default();
        let check = |s: &mut Spend, now: &str| {
            let now = t(now);
            s.refresh(dir.path(), now);
            would_break(&f, p, est, s, &none, now).map(|r| match r {
                Refusal::Over { which, .. } => which,
                Refusal::Ledger(e) => panic!("{e}"),
            })
        };
        // $1 spent on Nov 30: a $1 call that day would make $2 of a $1.50 day.
        assert_eq!(
            check(&mut s, "2026-11-30T23:59:59.500Z"),
            Some("provider daily")
        );
        // One second later it is December: a new day and a new month.
        assert_eq!(check(&mut s, "2026-12-01T00:00:00.500Z"), None);
        // The clock steps back across midnight: November's spend is still there.
        assert_eq!(
            check(&mut s, "2026-11-30T23:59:59.900Z"),
            Some("provider daily")
        );
        assert_eq!(check(&mut s, "2026-12-01T00:00:01Z"), None);
        // Days add up to the month: $1 on Nov 29 too makes $2 + $1 > $2.50 on any
        // November day, while Nov 28's own day is empty.
        append(
            &dir.path().join("events-n-20261129.jsonl"),
            &line("2026-11-29T12:00:00.000000Z", "p", 1.0),
        );
        assert_eq!(
            check(&mut s, "2026-11-28T12:00:00Z"),
            Some("provider monthly")
        );
        assert_eq!(check(&mut s, "2026-12-31T23:59:59Z"), None);
    }

    #[test]
    fn reservations_count_until_settled_or_dropped_and_dead_holders_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (prov, logs) = (dir.path().join("providers"), dir.path().join("log"));
        std::fs::create_dir_all(&logs).unwrap();
        let f = providers(ONE_DOLLAR_CALLS);
        let until = Utc::now() + chrono::Duration::seconds(60);
        let ledger = Ledger::new(prov.clone(), logs.clone());
        fn held<'l>(
            l: &'l Ledger,
            f: &ProvidersFile,
            until: DateTime<Utc>,
        ) -> Result<Reservation<'l>, String> {
            match l.reserve(f, &f.provider[0], 1.0, until) {
                Ok(Some(r)) => Ok(r),
                Ok(None) => panic!("a budget applies"),
                Err(e) => Err(e.to_string()),
            }
        }
        // One $1 call fits a $1.50 day; a second one in flight does not.
        let first = held(&ledger, &f, until).unwrap();
        let e = held(&ledger, &f, until).unwrap_err();
        assert!(
            e.contains("provider daily budget") && e.contains("$1.0000 reserved"),
            "{e}"
        );
        // Another process on the node (another ledger on the same spool, as `ask` is)
        // sees it too: the file names this process.
        let file: LedgerFile =
            serde_json::from_slice(&std::fs::read(prov.join(LEDGER_FILE)).unwrap()).unwrap();
        assert_eq!(file.holders.len(), 1);
        assert_eq!(file.holders[0].pid, std::process::id());
        // Dropped (the call failed): the budget is free again.
        drop(first);
        let second = held(&ledger, &f, until).unwrap();
        // Settled: the event written under the lock is what counts now.
        second.settle(|| {
            append(
                &logs.join(format!("events-n-{}.jsonl", Utc::now().format("%Y%m%d"))),
                &line(
                    &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "p",
                    1.0,
                ),
            );
        });
        let e = held(&ledger, &f, until).unwrap_err();
        assert!(e.contains("$1.0000 spent and $0.0000 reserved"), "{e}");
        let file: LedgerFile =
            serde_json::from_slice(&std::fs::read(prov.join(LEDGER_FILE)).unwrap()).unwrap();
        assert!(file.holders.is_empty(), "{file:?}");

        // Holders that are gone do not block: a pid that exited, a live pid with another
        // start time (reused), one past its expiry. A live one counts.
        let dir = tempfile::tempdir().unwrap();
        let prov = dir.path().join("providers");
        std::fs::create_dir_all(&prov).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let start = process_start(me).unwrap();
        let holder = |pid, start, until, usd| Holder {
            pid,
            start,
            until,
            reserved: [("p".to_string(), usd)].into(),
            calls: 1,
        };
        let past = Utc::now() - chrono::Duration::seconds(1);
        let write = |holders: Vec<Holder>| {
            std::fs::write(
                prov.join(LEDGER_FILE),
                serde_json::to_vec(&LedgerFile { holders }).unwrap(),
            )
            .unwrap();
        };
        write(vec![
            holder(dead, 12345, until, 1.0),
            holder(1, process_start(1).unwrap() + 1, until, 1.0),
            holder(1, process_start(1).unwrap(), past, 1.0),
        ]);
        // Our own pid with another start time stands for a process before us.
        let l = Ledger {
            pid: me,
            start: start + 7,
            ..Ledger::new(prov.clone(), dir.path().join("nolog"))
        };
        let r = held(&l, &f, until).unwrap();
        drop(r);
        write(vec![holder(1, process_start(1).unwrap(), until, 1.0)]);
        let e = held(
            &Ledger::new(prov.clone(), dir.path().join("nolog")),
            &f,
            until,
        )
        .unwrap_err();
        assert!(e.contains("$1.0000 reserved"), "{e}");
    }
}
#[cfg(test)]
mod bench {
    use super::*;
    #[test]
    #[ignore = "micro-benchmark"]
    fn reserve_and_settle_speed() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("log");
        std::fs::create_dir_all(&logs).unwrap();
        let f = ProvidersFile::parse(
            "[[provider]]\nname = 'p'\nkind = 'openai'\nbase_url = 'http://x/v1'\nmodel = 'm'\n[provider.price]\noutput = 1.0\n[provider.budget]\ndaily_usd = 1000.0\n",
            Path::new("p.toml"),
        )
        .unwrap();
        let log = crate::log::EventLog::new(logs.clone(), "n");
        let l = Ledger::new(dir.path().join("providers"), logs);
        let until = Utc::now() + chrono::Duration::seconds(60);
        let n = 1000;
        let (mut tr, mut ts) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = std::time::Instant::now();
            let r = l
                .reserve(&f, &f.provider[0], 0.001, until)
                .unwrap()
                .unwrap();
            tr.push(t.elapsed().as_micros());
            let t = std::time::Instant::now();
            r.settle(|| {
                log.record(
                    None,
                    None,
                    crate::log::event::LlmCall {
                        provider: "p".into(),
                        cost_usd: 0.0001,
                        ..Default::default()
                    },
                );
            });
            ts.push(t.elapsed().as_micros());
        }
        tr.sort_unstable();
        ts.sort_unstable();
        println!(
            "reserve p50 {} µs p99 {} µs; settle (with the event) p50 {} µs p99 {} µs",
            tr[n / 2],
            tr[n * 99 / 100],
            ts[n / 2],
            ts[n * 99 / 100]
        );
    }
}
