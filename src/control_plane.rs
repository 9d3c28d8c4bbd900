//! The control plane: one background worker per cluster, in the database named by
//! `soniq.database_name`, that fires due schedules, takes back the jobs of dead workers and
//! expired leases, and prunes finished jobs.
//!
//! The work itself is SQL (the rounds `soniq._round_*` and the functions they call in
//! `sql/rounds.sql`): each unit runs in its own subtransaction and records its
//! outcome in `soniq.control_plane`, so a bad row never stops the loop. This file only
//! decides when to run it, and keeps the process well-behaved (signals, standby, restarts).

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{
    register_xact_callback, GucContext, GucFlags, GucRegistry, GucSetting, PgXactCallbackEvent,
};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// The `backend_type` the worker shows in `pg_stat_activity`.
const WORKER_TYPE: &str = "soniq control plane";

/// Schedules fired per transaction (one statement, unless one of them fails).
const SCHEDULES_PER_TRANSACTION: i32 = 1000;
/// Scheduler transactions per round at most, so a round always ends.
const SCHEDULER_TRANSACTIONS_PER_ROUND: usize = 100;

static DATABASE_NAME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static TICK_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
static HEARTBEAT_TIMEOUT_S: GucSetting<i32> = GucSetting::<i32>::new(300);
static LEASE_GRACE_S: GucSetting<i32> = GucSetting::<i32>::new(60);
static RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 3600);
static UNSERVED_GRACE_S: GucSetting<i32> = GucSetting::<i32>::new(24 * 3600);
static PRUNE_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// A setting in seconds, changed by a reload (SIGHUP), within `(min, max)`.
fn seconds_guc(
    name: &'static std::ffi::CStr,
    short: &'static std::ffi::CStr,
    long: &'static std::ffi::CStr,
    setting: &'static GucSetting<i32>,
    (min, max): (i32, i32),
) {
    GucRegistry::define_int_guc(
        name,
        short,
        long,
        setting,
        min,
        max,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// Settings of the control plane. Called from `_PG_init`, so also when the library is
/// loaded into a backend without being preloaded; `soniq.database_name` only matters to the
/// background worker and can only be defined at server start, so it exists only when preloaded.
pub fn define_settings(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"soniq.database_name",
            c"Database the soniq control plane serves.",
            c"One background worker per cluster serves this one database; others get no schedules, rescue or pruning.",
            &DATABASE_NAME,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_bool_guc(
        c"soniq.enabled",
        c"Whether the soniq control plane does its work.",
        c"Off: the background worker stays connected but fires no schedules, rescues and prunes nothing.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"soniq.tick_interval",
        c"Time between two rounds of the soniq control plane.",
        c"Schedules fire on time regardless: the worker also wakes for the next due schedule and when one changes.",
        &TICK_INTERVAL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    seconds_guc(
        c"soniq.heartbeat_timeout",
        c"Silence after which a soniq worker is presumed dead and its jobs are taken back.",
        c"",
        &HEARTBEAT_TIMEOUT_S,
        (1, 7 * 24 * 3600),
    );
    seconds_guc(
        c"soniq.lease_grace",
        c"Time past a job's timeout after which its attempt is taken back from a live worker.",
        c"",
        &LEASE_GRACE_S,
        (0, 7 * 24 * 3600),
    );
    seconds_guc(
        c"soniq.unserved_grace",
        c"Time after which queued jobs of a task no live worker serves go to the dead letter (0: never).",
        c"They are listed in soniq.unserved from the first round that sees them; nothing is buried while no worker is alive.",
        &UNSERVED_GRACE_S,
        (0, 30 * 24 * 3600),
    );
    seconds_guc(
        c"soniq.retention",
        c"How long cancelled jobs are kept (done jobs are kept for their result TTL).",
        c"",
        &RETENTION_S,
        (0, i32::MAX),
    );
    GucRegistry::define_int_guc(
        c"soniq.prune_batch_size",
        c"Finished jobs deleted per transaction when pruning (as many transactions as a tick allows, while a backlog lasts).",
        c"",
        &PRUNE_BATCH_SIZE,
        1,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    unsafe { pg_sys::MarkGUCPrefixReserved(c"soniq".as_ptr()) };
}

pub fn register_worker() {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("soniq")
        .set_function("soniq_control_plane_main")
        .enable_spi_access()
        // Not on a hot standby: the worker starts once the server accepts writes.
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn tick_interval() -> Duration {
    Duration::from_millis(TICK_INTERVAL_MS.get().max(10) as u64)
}

/// The version of the extension in the served database; `None` before CREATE EXTENSION.
fn installed_version() -> Option<String> {
    Spi::get_one::<String>("SELECT extversion::text FROM pg_extension WHERE extname = 'soniq'")
        .ok()
        .flatten()
}

/// The extension version this library's rounds call (its SQL functions change between versions).
const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One round, `soniq._round_<name>(..)`, in a transaction of its own; returns how much work it
/// did. The round records its outcome (an error too) in `soniq.control_plane`, and never raises.
fn run(round: &str) -> i64 {
    let query = format!("SELECT soniq._round_{round}");
    BackgroundWorker::transaction(|| Spi::get_one::<i64>(&query))
        .ok()
        .flatten()
        .unwrap_or(0)
}

fn interval(seconds: i32) -> String {
    format!("make_interval(secs => {seconds})")
}

/// Fire every due schedule, a batch per transaction. A short batch ends the loop: nothing
/// more was due, or one schedule failed and the rest waits for the next round, which then
/// comes at once (a schedule is due).
fn fire_due_schedules() {
    for _ in 0..SCHEDULER_TRANSACTIONS_PER_ROUND {
        let fired = run(&format!("scheduler({SCHEDULES_PER_TRANSACTION})"));
        if fired < i64::from(SCHEDULES_PER_TRANSACTION) {
            break;
        }
    }
}

/// Prune a batch per transaction while batches come back full, for at most a tick, with a
/// look for due schedules between batches (one short transaction): pruning must not delay a
/// schedule, and must keep up with any rate jobs finish at (a fixed number of batches a round
/// caps it: ten pruned 10,000 jobs a second at most). Returns whether finished jobs are still
/// due.
fn prune() -> bool {
    let batch_size = PRUNE_BATCH_SIZE.get();
    let prune = format!("prune({}, {batch_size})", interval(RETENTION_S.get()));
    let started = Instant::now();
    while run(&prune) >= i64::from(batch_size) {
        fire_due_schedules();
        if started.elapsed() >= tick_interval() {
            return true;
        }
    }
    false
}

/// The longest silence `soniq._forget_stale_workers` takes.
const LONGEST_SILENCE_S: i32 = 30 * 24 * 3600;

/// The silence after which the rescue presumes a worker dead, `running_for` after this
/// control plane started. For one heartbeat timeout after a start (a server start or restart,
/// crash recovery) none counts as silent: no worker could heartbeat while the server was down,
/// and one that is back and claiming must not lose its new leases to a heartbeat from before
/// the outage. Meanwhile only a worker silent for the longest silence the rescue takes is
/// forgotten.
fn heartbeat_timeout(running_for: Duration) -> i32 {
    let timeout = HEARTBEAT_TIMEOUT_S.get();
    if running_for < Duration::from_secs(timeout.unsigned_abs().into()) {
        LONGEST_SILENCE_S
    } else {
        timeout
    }
}

/// One round, `running_for` after this control plane started; returns how long to sleep:
/// until the next due schedule, at most a tick, or not at all while pruning is behind.
fn round(running_for: Duration) -> Duration {
    fire_due_schedules();
    run(&format!(
        "rescue({}, {})",
        interval(heartbeat_timeout(running_for)),
        interval(LEASE_GRACE_S.get())
    ));
    run(&format!("unserved({})", interval(UNSERVED_GRACE_S.get())));
    let behind = prune();
    let next_due = BackgroundWorker::transaction(|| {
        Spi::get_one::<f64>("SELECT soniq._control_plane_round_done()")
    });
    match next_due {
        _ if behind => Duration::ZERO,
        Ok(Some(seconds)) => {
            Duration::from_secs_f64(seconds.clamp(0.005, 3600.0)).min(tick_interval())
        }
        _ => tick_interval(),
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn soniq_control_plane_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = DATABASE_NAME
        .get()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("{WORKER_TYPE}: serving database \"{database}\"");
    let started = Instant::now();

    let mut announced = false;
    // The older (or newer) extension version the control plane said it waits for.
    let mut waiting_for: Option<String> = None;
    let mut sleep = tick_interval();
    while BackgroundWorker::wait_latch(Some(sleep)) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        sleep = tick_interval();
        if !ENABLED.get() || unsafe { pg_sys::RecoveryInProgress() } {
            continue;
        }
        // Before CREATE EXTENSION (or after DROP EXTENSION) there is nothing to do: wait quietly.
        // A database still at another version (the library was upgraded, ALTER EXTENSION
        // UPDATE not yet run) would make every round fail: wait, saying so once.
        match BackgroundWorker::transaction(installed_version) {
            None => {
                announced = false;
                continue;
            }
            Some(version) if version != LIBRARY_VERSION => {
                if waiting_for.as_deref() != Some(version.as_str()) {
                    warning!(
                        "{WORKER_TYPE}: database \"{database}\" has extension soniq {version}, this library is {LIBRARY_VERSION}: \
                         waiting for ALTER EXTENSION soniq UPDATE there"
                    );
                    waiting_for = Some(version);
                }
                announced = false;
                continue;
            }
            Some(_) => waiting_for = None,
        }
        if !announced {
            BackgroundWorker::transaction(|| {
                Spi::run("SELECT soniq._control_plane_started(pg_backend_pid())")
            })
            .unwrap_or_else(|e| warning!("{WORKER_TYPE}: could not record its start: {e}"));
            announced = true;
        }
        sleep = round(started.elapsed());
    }
    // Exit code 1 asks the postmaster for a restart (after 5 s): an operator's
    // pg_terminate_backend or DROP DATABASE ... WITH (FORCE) must not end the control plane
    // for good. At server shutdown the postmaster restarts nothing.
    log!("{WORKER_TYPE}: stopping");
    unsafe { pg_sys::proc_exit(1) };
}

/// Wake the control plane when the calling transaction commits (a schedule changed), so a
/// new or resumed schedule's first fire time is honoured without waiting for a tick.
#[pg_extern(volatile, name = "_wake_control_plane_at_commit")]
pub fn wake_control_plane_at_commit(pid: i32) {
    register_xact_callback(PgXactCallbackEvent::Commit, move || unsafe {
        let process = pg_sys::BackendPidGetProc(pid);
        if !process.is_null() {
            pg_sys::SetLatch(&raw mut (*process).procLatch);
        }
    });
}
