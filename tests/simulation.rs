//! A deterministic, seeded simulation of the daemon around the real
//! [`architect::scheduler::Scheduler`]: an in-memory spool with the daemon's group commit,
//! session programs, producers, a lock table, an event log, and faults — all driven by
//! one seed and a simulated clock, with the invariants checked after every step.
//!
//! ```text
//!   seed ──> Rng ──> world: producers (inbox files, watcher events: late, twice, lost,
//!                    overflow), session programs (finish, fail, hang, die), control
//!                    requests (cancel, retry), outside lock holders, disk faults
//!                    (ENOSPC, EIO, EACCES), crashes at any effect boundary (mid-flush
//!                    too), graceful stops, a second daemon
//!                      │ Input                         ▲ Effect
//!                      ▼                               │
//!                 architect::scheduler::Scheduler  (the real one, public API only)
//!                      │
//!   shell (world.rs) ──┴─> batch (disk.rs: WriteBatch's rules) ──flush──> durable disk
//! ```
//!
//! The shell mirrors the daemon (`src/daemon/`): intake skips a file the batch is
//! removing, recognises an inbox file taken in before (`state_of`, then the disk) and
//! never makes a second task of it, and rejects through the batch; a run starts only once
//! its claim is durable (else `ClaimFailed`) and only if its attempt is still the one
//! running; `Flushed` only after a flush with no error, and what it releases is
//! dispatched and flushed in the same pass; `Tick` when `next_deadline` is due; cancel
//! and retry requests are files in `control/`, claimed by a rename and removed once their
//! effect is durable (a retry waits while the batch holds its task), claimed files going
//! back at start-up; a stop flushes until the batch is empty (10 s at most); a restart
//! feeds a new scheduler `Recovered` from the durable disk only. A crash loses the batch, the programs, the
//! watcher's events and the daemon's locks; removals a flush made may come back (they
//! are never `fsync`ed).
//!
//! **Invariants, after every step**:
//! - the daemon lock has one holder, the running daemon; a second daemon is refused;
//! - no lock has two holders; a program executing a task holds all the task's locks;
//! - every accepted task is in at most one state directory, in exactly one once its file
//!   was durable, and while it never was, its inbox file is still there;
//! - intake never rejects the very file a task was taken in from;
//! - a task waits only for dependencies that can still finish (not for one final on disk
//!   that the scheduler does not know: it would wait forever);
//! - a second final event for a task needs a manual retry since the first, or a crash
//!   that voided the first (see below);
//! - a record in a final directory says that state, and the last final event of the log
//!   (void ones aside) names it;
//! - a cancel or retry request whose logged effect a crash voided still has its file, so
//!   it is applied again.
//!
//! **When a prompt is sent**: the scheduler runs that attempt on that session, no other
//! program executes the task, its claim is on disk, every dependency is in `done/` on
//! disk, it holds its locks, and its final record was never durable since the last
//! manual retry (a decided task is never run again by itself). **After a fault-free
//! drain**: every accepted task is final on disk and no lock is held.
//!
//! **The log is written before the disk.** The daemon appends an event when the
//! scheduler returns it; the task's files change with the pass's group commit after. A
//! crash in between leaves, say, `task_completed` in the log while the task is back in
//! `active/`, and recovery runs it again: a second final event follows with no manual
//! retry between, and until then the log's last final event names a state the disk
//! never had. So "no two final events without a manual retry" and "the last final event
//! names the disk's state" cannot hold as such; they are checked with the events a crash
//! voided left out. An event is void when the write of the task's record queued before it
//! was lost (each queued operation is numbered, and the disk records the last operation
//! of each file it carried out: the operations of one file are carried out in order).
//! `finals_undone_by_crash` counts them.
//!
//! Running it:
//!
//! - `cargo test --test simulation` runs 400 seeds (≥ 1,000,000 steps) on every core and
//!   prints seeds, steps, seconds and steps/s. `SIM_SEEDS=n` changes the number of seeds.
//! - A failing seed prints its replay command:
//!   `SIM_SEED=1234 cargo test --test simulation -- replay --nocapture`
//!   (`SIM_TRACE=1` prints every input, effect and flush).
//! - `SIM_SOAK_SECS=600 cargo test --test simulation -- soak --ignored --nocapture` runs
//!   fresh seeds for that long (`SIM_SOAK_FROM` picks the first seed).

#[path = "simulation/disk.rs"]
mod disk;
#[path = "simulation/fleet.rs"]
mod fleet;
#[path = "simulation/rng.rs"]
mod rng;
#[path = "simulation/world.rs"]
mod world;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use world::{Failure, Plan, Sim, Stats};

/// Steps per seed: 2,500 with faults, then a fault-free drain (usually a few hundred).
const PLAN: Plan = Plan {
    chaos_steps: 2_500,
    drain_steps: 100_000,
};

/// Seeds of the default run: 400 × 2,500 chaos steps = 1,000,000 steps before drains.
const SEEDS: u64 = 400;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run_seed(seed: u64, trace: bool) -> Result<Stats, Failure> {
    let mut sim = Sim::new(seed, PLAN);
    sim.trace = trace;
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    match r {
        Ok(r) => r,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(Failure {
                seed,
                step: sim.step,
                message: format!("panicked: {message}"),
            })
        }
    }
}

fn replay_line(f: &Failure) -> String {
    format!(
        "seed {} failed at step {}: {}\n  replay: SIM_SEED={} SIM_TRACE=1 cargo test --test simulation -- replay --nocapture",
        f.seed, f.step, f.message, f.seed
    )
}

/// Runs seeds from `next` on every core until `more` says stop; returns the figures and
/// the first failure.
fn run_many(
    next: &AtomicU64,
    more: &(dyn Fn(u64) -> bool + Sync),
) -> (Stats, u64, Option<Failure>) {
    let total = Mutex::new(Stats::default());
    let seeds = AtomicU64::new(0);
    let failed: Mutex<Option<Failure>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if !more(seed) {
                    return;
                }
                match run_seed(seed, false) {
                    Ok(st) => {
                        total.lock().unwrap().add(&st);
                        seeds.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(f) => {
                        stop.store(true, Ordering::SeqCst);
                        let mut slot = failed.lock().unwrap();
                        if slot.as_ref().is_none_or(|g| f.seed < g.seed) {
                            *slot = Some(f);
                        }
                        return;
                    }
                }
            });
        }
    });
    (
        total.into_inner().unwrap(),
        seeds.into_inner(),
        failed.into_inner().unwrap(),
    )
}

/// Prints past the test harness's capture: the figures show without `--nocapture`.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn figures(st: &Stats, seeds: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!(
        "simulation: {seeds} seeds, {} steps in {secs:.1} s ({:.0} steps/s); {} tasks, {} runs, \
         {} crashes ({} mid-flush, {} power losses undoing {} published changes), {} graceful stops ({} with writes refused), {} flushes ({} with errors), \
         {} duplicate inbox files recognised, {} rejected, {} failed claims, \
         {} second daemons refused, {} final events undone by a crash, {} cancels, \
         {} retries, {} sessions killed, {} watcher overflows, {} lock waits",
        st.steps,
        st.steps as f64 / secs.max(1e-9),
        st.tasks,
        st.runs,
        st.crashes,
        st.crashes_in_flush,
        st.power_losses,
        st.changes_lost_to_power,
        st.stops,
        st.stops_with_refused_writes,
        st.flushes,
        st.flushes_with_errors,
        st.duplicates_recognised,
        st.rejected,
        st.claims_failed,
        st.second_daemons_refused,
        st.finals_undone_by_crash,
        st.cancels,
        st.retries,
        st.sessions_killed,
        st.overflows,
        st.lock_waits,
    )
}

/// The default run: `SEEDS` seeds, every invariant after every step.
#[test]
fn seeds() {
    let n = env_u64("SIM_SEEDS").unwrap_or(SEEDS);
    let start = Instant::now();
    let next = AtomicU64::new(0);
    let (st, done, failed) = run_many(&next, &|seed| seed < n);
    let elapsed = start.elapsed();
    say(&figures(&st, done, elapsed));
    if let Some(f) = failed {
        panic!("{}", replay_line(&f));
    }
    if n == SEEDS {
        assert!(st.steps >= 1_000_000, "only {} steps", st.steps);
    }
}

/// `SIM_SEED=n`: one seed, again (`SIM_TRACE=1` prints what happens).
#[test]
fn replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        println!("replay: set SIM_SEED to replay a seed");
        return;
    };
    let trace = std::env::var_os("SIM_TRACE").is_some();
    let start = Instant::now();
    match run_seed(seed, trace) {
        Ok(st) => say(&figures(&st, 1, start.elapsed())),
        Err(f) => panic!("{}", replay_line(&f)),
    }
}

/// The same seed gives the same run.
#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(7, false).map_err(|f| replay_line(&f)).unwrap();
    let b = run_seed(7, false).map_err(|f| replay_line(&f)).unwrap();
    assert_eq!((a.steps, a.log_digest), (b.steps, b.log_digest));
}

/// `SIM_SOAK_SECS=600`: fresh seeds for that long.
#[test]
#[ignore = "long: SIM_SOAK_SECS=600 cargo test --test simulation -- soak --ignored --nocapture"]
fn soak() {
    let secs = env_u64("SIM_SOAK_SECS").unwrap_or(60);
    let from = env_u64("SIM_SOAK_FROM").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1 << 20, |d| d.as_secs() << 16)
    });
    say(&format!("soak: {secs} s from seed {from}"));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let next = AtomicU64::new(from);
    let (st, done, failed) = run_many(&next, &|_| Instant::now() < deadline);
    say(&figures(&st, done, start.elapsed()));
    if let Some(f) = failed {
        panic!("{}", replay_line(&f));
    }
}

// ---- the fleet: N nodes over a fake syncer (simulation/fleet.rs) ----------------------

fn run_fleet_seed(seed: u64, trace: bool) -> Result<fleet::Stats, fleet::Failure> {
    // Odd seeds chaotic, even ones strict; `ARCHITECT_SIM_CHAOS=1`: three in four chaotic.
    let chaos = std::env::var_os("ARCHITECT_SIM_CHAOS").is_some() || seed % 2 == 1;
    let mut sim = fleet::Sim::new(seed, chaos);
    sim.trace = trace;
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| sim.run()));
    r.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(fleet::Failure {
            seed,
            step: sim.step,
            message: format!("panicked: {message}"),
        })
    })
}

fn fleet_figures(st: &fleet::Stats, seeds: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!(
        "fleet simulation: {seeds} seeds ({} strict), {} steps in {secs:.1} s ({:.0} steps/s); \
         {} tasks, {} runs, {} offers, {} taken back, {} adoptions, {} crashes, {} partitions, \
         {} deliveries, {} dropped, {} stale or resurrected, {} conflict copies, \
         {} completed twice, {} duplicate_run notes, {} steps with a branch held on two nodes \
         after a partition or a false suspicion",
        st.strict_seeds,
        st.steps,
        st.steps as f64 / secs.max(1e-9),
        st.tasks,
        st.runs,
        st.offers,
        st.take_backs,
        st.adoptions,
        st.crashes,
        st.partitions,
        st.deliveries,
        st.dropped,
        st.ghosts,
        st.conflict_copies,
        st.double_completions,
        st.duplicate_runs,
        st.home_moved,
    )
}

/// N nodes over a fake syncer: `fleet::SEEDS` seeds (`ARCHITECT_SIM_SEEDS=n` for more,
/// from `ARCHITECT_SIM_FROM`), every invariant after every step.
#[test]
fn fleet_seeds() {
    let n = env_u64("ARCHITECT_SIM_SEEDS").unwrap_or(fleet::SEEDS);
    let from = env_u64("ARCHITECT_SIM_FROM").unwrap_or(0);
    let start = Instant::now();
    let next = AtomicU64::new(from);
    let total = Mutex::new(fleet::Stats::default());
    let done = AtomicU64::new(0);
    let failed: Mutex<Option<fleet::Failure>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if stop.load(Ordering::SeqCst) || seed >= from + n {
                    return;
                }
                match run_fleet_seed(seed, false) {
                    Ok(st) => {
                        total.lock().unwrap().add(&st);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(f) => {
                        stop.store(true, Ordering::SeqCst);
                        let mut slot = failed.lock().unwrap();
                        if slot.as_ref().is_none_or(|g| f.seed < g.seed) {
                            *slot = Some(f);
                        }
                        return;
                    }
                }
            });
        }
    });
    let st = total.into_inner().unwrap();
    say(&fleet_figures(&st, done.into_inner(), start.elapsed()));
    if let Some(f) = failed.into_inner().unwrap() {
        panic!(
            "fleet seed {} failed at step {}: {}\n  replay: ARCHITECT_SIM_SEED={} ARCHITECT_SIM_TRACE=1 cargo test --test simulation -- fleet_replay --nocapture",
            f.seed, f.step, f.message, f.seed
        );
    }
    if n == fleet::SEEDS {
        assert!(st.steps >= 1_000_000, "only {} steps", st.steps);
    }
}

/// `ARCHITECT_SIM_SEED=n`: one fleet seed again (`ARCHITECT_SIM_TRACE=1`: its events).
#[test]
fn fleet_replay() {
    let Some(seed) = env_u64("ARCHITECT_SIM_SEED") else {
        println!("fleet_replay: set ARCHITECT_SIM_SEED to replay a seed");
        return;
    };
    let trace = std::env::var_os("ARCHITECT_SIM_TRACE").is_some();
    let start = Instant::now();
    match run_fleet_seed(seed, trace) {
        Ok(st) => say(&fleet_figures(&st, 1, start.elapsed())),
        Err(f) => panic!(
            "fleet seed {} failed at step {}: {}",
            f.seed, f.step, f.message
        ),
    }
}
