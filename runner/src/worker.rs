//! The worker: claims jobs in batches up to its free capacity, runs their handlers with
//! their timeouts, reports outcomes in batches, heartbeats, listens for new jobs, and on
//! shutdown hands unfinished jobs back without using up an attempt.
//!
//! Tasks inside one worker:
//! * the claim loop (`claim_loop`): one claimer per process, woken by the listener, so
//!   a notification never sends every job slot racing to the database;
//! * one task per running job;
//! * the reporter: drains outcomes and records them, many completions (and failures) per
//!   statement;
//! * the heartbeat: keeps the leases alive, learns of cancellation requests, and names the
//!   jobs it holds so the database can take back any it lost track of;
//! * maintenance (when configured): rescue and pruning rounds;
//! * the listener: `LISTEN soniq_new_job` on a connection of its own, reconnecting.

use crate::attempt_log::AttemptLog;
use crate::error::{Error, Result};
use crate::execute::{execute, Handlers, ReportKind};
use crate::job::JobContext;
use crate::registry::Registry;
use crate::scheduler::{self, ScheduleSpec};
use crate::time::duration_from_db;
use crate::Soniq;
use deadpool_postgres::{Client, Pool};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

/// Jobs claimed per round trip at most.
const MAX_CLAIM_BATCH: usize = 100;
/// Outcomes recorded per round trip at most.
const MAX_REPORT_BATCH: usize = 500;
/// After a notification, look again this soon even if none follows: a producer whose wake-up
/// was skipped because another's was committing (the extension's src/wake.rs) commits a moment
/// after the notified claim ran.
const FOLLOW_UP: Duration = Duration::from_millis(20);
/// How many times the reporter yields, while jobs are still running, to gather their
/// outcomes into the batch it records.
const REPORT_YIELDS: usize = 4;
/// How long outcomes are retried through a database outage.
const RECORDING_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Jobs run at once; default `SONIQ_CONCURRENCY`.
    pub concurrency: Option<usize>,
    /// Queues to serve; `None` serves all.
    pub queues: Option<Vec<String>>,
    /// Run what is due, wait for it to finish, and return when nothing is left.
    pub run_once: bool,
    /// Stop claiming once this many jobs were started (with or without `run_once`), then
    /// finish them and return.
    pub max_jobs: Option<usize>,
}

/// What a worker did before it returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Attempts started.
    pub jobs_run: usize,
    /// Attempts handed back unfinished at shutdown (they will run again, no attempt used).
    pub handed_back: usize,
}

struct ClaimedJob {
    context: JobContext,
    args: Value,
    /// Why this attempt cannot run (its row holds a value the runner cannot use): it fails
    /// at once instead of taking down the worker.
    unrunnable: Option<String>,
}

/// A claimed job's time limit, from the seconds its row holds. Zero is no limit (as
/// `soniq.enqueue` stores it). A value no `Duration` holds — negative, NaN, too large: a row
/// written by an older version — is an error, and the attempt fails with it.
fn job_timeout(seconds: Option<f64>) -> Result<Option<Duration>, String> {
    match seconds {
        None | Some(0.0) => Ok(None),
        Some(s) => duration_from_db(s, "the job's timeout").map(Some),
    }
}

/// An attempt's outcome, on its way to the database. It carries the attempt's job slot,
/// freed once the outcome is recorded: a worker's free capacity (and `run_once`'s "all
/// done") counts only attempts whose outcome is in the database.
struct Report {
    job_id: Uuid,
    attempt: i32,
    worker_id: Uuid,
    kind: ReportKind,
    _slot: Option<OwnedSemaphorePermit>,
}

struct RunningJob {
    abort: AbortHandle,
    attempt: i32,
    worker_id: Uuid,
    log: AttemptLog,
}

struct Shared {
    pool: Pool,
    handlers: Handlers,
    worker_id: Mutex<Uuid>,
    /// Jobs run at once at most (the job slots).
    concurrency: usize,
    running: Mutex<HashMap<Uuid, RunningJob>>,
    /// Finished jobs whose outcomes the reporter has not recorded yet.
    recording: Mutex<HashSet<Uuid>>,
    reports: mpsc::UnboundedSender<Report>,
    wake: Notify,
    error_retry_delay: Duration,
}

impl Shared {
    fn worker_id(&self) -> Uuid {
        *self.worker_id.lock().unwrap()
    }

    /// Move a job from running to recording, under the caller's lock on `running`, so a
    /// heartbeat never finds it in neither; `None` if it was not running.
    fn finish(&self, running: &mut HashMap<Uuid, RunningJob>, job_id: Uuid) -> Option<RunningJob> {
        let job = running.remove(&job_id)?;
        self.recording.lock().unwrap().insert(job_id);
        Some(job)
    }

    /// The jobs this worker holds: running, or finished with their outcomes being recorded.
    fn held(&self) -> Vec<Uuid> {
        let running = self.running.lock().unwrap();
        let recording = self.recording.lock().unwrap();
        running.keys().chain(recording.iter()).copied().collect()
    }
}

/// Register this process as a worker, with the tasks it has handlers for (so the control
/// plane can tell which queued jobs no worker serves).
async fn register(
    pool: &Pool,
    options: &WorkerOptions,
    concurrency: usize,
    task_names: &[String],
) -> Result<Uuid> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT soniq.register_worker($1, $2, $3, $4, $5, task_names => $6)",
            &[
                &crate::settings::hostname(),
                &(std::process::id() as i32),
                &options.queues,
                &(concurrency as i32),
                &env!("CARGO_PKG_VERSION"),
                &task_names,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Publish every handler's options, so plain-SQL producers get them, and the schedules of
/// periodic tasks (an unchanged schedule keeps its next fire time).
pub(crate) async fn publish_tasks(pool: &Pool, registry: &Registry) -> Result<()> {
    let client = pool.get().await?;
    for name in registry.names() {
        let options = &registry.tasks[&name].options;
        client
            .execute(
                "SELECT soniq.register_task($1, $2)",
                &[&name, &options.to_defaults()],
            )
            .await?;
        if let Some(schedule) = &options.periodic {
            scheduler::add(&client, &ScheduleSpec::new(name.clone(), schedule.clone())).await?;
        }
    }
    Ok(())
}

async fn claim(
    shared: &Shared,
    queues: &Option<Vec<String>>,
    count: usize,
    task_names: &[String],
) -> Result<Vec<ClaimedJob>> {
    let worker_id = shared.worker_id();
    let client = shared.pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT id, task_name, args, attempt, max_attempts, queue, extract(epoch FROM timeout)::float8,
                    scheduled_at, created_at
               FROM soniq.claim($1, $2, $3, $4)",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[&worker_id, queues, &(count as i32), &task_names],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (timeout, unrunnable) = match job_timeout(row.get(6)) {
                Ok(timeout) => (timeout, None),
                Err(error) => (None, Some(error)),
            };
            ClaimedJob {
                context: JobContext {
                    job_id: row.get(0),
                    job_name: row.get(1),
                    attempt: row.get(3),
                    max_attempts: row.get(4),
                    queue: row.get(5),
                    worker_id,
                    timeout,
                    scheduled_at: row.get(7),
                    created_at: row.get(8),
                },
                args: row.get(2),
                unrunnable,
            }
        })
        .collect())
}

fn spawn_job(shared: &Arc<Shared>, job: ClaimedJob, permit: OwnedSemaphorePermit) {
    let job_id = job.context.job_id;
    let attempt = job.context.attempt;
    let worker_id = job.context.worker_id;
    let mut running = shared.running.lock().unwrap();
    let task_shared = Arc::clone(shared);
    let log = AttemptLog::start(&job.context);
    let handle = tokio::spawn(async move {
        let kind = match job.unrunnable {
            Some(error) => ReportKind::failure(error),
            None => execute(&task_shared.handlers, job.context, job.args).await,
        };
        // Only a job still in the map reports: one the heartbeat aborted has reported already.
        let finished = task_shared.finish(&mut task_shared.running.lock().unwrap(), job_id);
        if let Some(finished) = finished {
            finished.log.ended(&kind);
            let _ = task_shared.reports.send(Report {
                job_id,
                attempt,
                worker_id,
                kind,
                _slot: Some(permit),
            });
        }
    });
    running.insert(
        job_id,
        RunningJob {
            abort: handle.abort_handle(),
            attempt,
            worker_id,
            log,
        },
    );
}

/// Stop the given running jobs and report them with `kind`; returns how many were stopped.
fn stop_jobs(shared: &Shared, ids: &[Uuid], kind: impl Fn() -> ReportKind) -> usize {
    let mut running = shared.running.lock().unwrap();
    let mut stopped = 0;
    for id in ids {
        if let Some(job) = shared.finish(&mut running, *id) {
            job.abort.abort();
            let kind = kind();
            job.log.ended(&kind);
            let _ = shared.reports.send(Report {
                job_id: *id,
                attempt: job.attempt,
                worker_id: job.worker_id,
                kind,
                _slot: None, // the aborted task held it and has dropped it
            });
            stopped += 1;
        }
    }
    stopped
}

fn lease_lost(e: &Error) -> bool {
    matches!(
        e.sqlstate(),
        Some(code) if code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE || code == SqlState::NO_DATA_FOUND
    )
}

/// Whether an error's SQLSTATE is a refusal that sending again cannot fix — bad data, a
/// constraint, a permission, a limit (classes 22, 23, 42, 54) — rather than an outage.
fn permanent_refusal(code: Option<SqlState>) -> bool {
    code.is_some_and(|code| matches!(code.code().get(..2), Some("22" | "23" | "42" | "54")))
}

/// How the database took one statement of outcomes.
enum Sent {
    /// Recorded; an outcome whose lease was taken back is refused, logged, and its job runs again.
    Recorded,
    /// Refused as a whole, for a reason sending it again cannot fix.
    Refused(Error),
}

/// Outcomes one statement records share this: a worker id and a kind.
fn statement_key(report: &Report) -> (Uuid, u8) {
    let kind = match report.kind {
        ReportKind::Done(_) => 0,
        ReportKind::Fail { .. } => 1,
        ReportKind::Snooze { .. } => 2,
        ReportKind::Abort(_) => 3,
    };
    (report.worker_id, kind)
}

/// How many outcomes at the head of `batch` (sorted by `statement_key`) one statement
/// records: the completions, or the failures, of one worker id; one snooze or abort.
fn group_len(batch: &[Report]) -> usize {
    let head = &batch[0];
    if !matches!(head.kind, ReportKind::Done(_) | ReportKind::Fail { .. }) {
        return 1;
    }
    batch
        .iter()
        .take_while(|r| statement_key(r) == statement_key(head))
        .count()
}

/// Record a batch of outcomes on one connection, a statement per group (`complete_many`,
/// `fail_many`, `snooze`, `abort`). Recorded outcomes leave `batch` (freeing their job
/// slots), so a retry after an outage sends only what is left. A group the database refuses
/// for its content is not retried: its outcomes are recorded one by one, so one bad outcome
/// does not hold back the others.
async fn record_batch(pool: &Pool, batch: &mut Vec<Report>) -> Result<()> {
    let client = pool.get().await?;
    batch.sort_by_key(statement_key);
    while !batch.is_empty() {
        let n = group_len(batch);
        if n > 1 {
            let group: Vec<&Report> = batch[..n].iter().collect();
            match send(&client, &group).await? {
                Sent::Recorded => {
                    batch.drain(..n);
                    continue;
                }
                Sent::Refused(refusal) => tracing::warn!(
                    outcomes = n,
                    "the database refused a statement of outcomes ({refusal}); recording them one by one"
                ),
            }
        }
        for _ in 0..n {
            record_alone(&client, &batch[0]).await?;
            batch.remove(0);
        }
    }
    Ok(())
}

/// Record one outcome in a statement of its own. An outcome the database refuses becomes a
/// failed attempt with the database's message; a refused failure is logged and left to the
/// lease's expiry (the job runs again).
async fn record_alone(client: &Client, report: &Report) -> Result<()> {
    let Sent::Refused(refusal) = send(client, &[report]).await? else {
        return Ok(());
    };
    if matches!(report.kind, ReportKind::Fail { .. }) {
        left_to_lease_expiry(report, &refusal);
        return Ok(());
    }
    let failed = Report {
        job_id: report.job_id,
        attempt: report.attempt,
        worker_id: report.worker_id,
        kind: ReportKind::failure(format!("the database refused the outcome: {refusal}")),
        _slot: None,
    };
    if let Sent::Refused(again) = send(client, &[&failed]).await? {
        left_to_lease_expiry(&failed, &again);
    }
    Ok(())
}

fn left_to_lease_expiry(failure: &Report, refusal: &Error) {
    tracing::error!(
        job_id = %failure.job_id,
        attempt = failure.attempt,
        "the database refused to record a failed attempt ({refusal}); the job runs again when its lease expires"
    );
}

/// One statement: a group of one worker's completions or failures, or one snooze or abort.
/// `Err` is an outage (or anything else worth sending again).
async fn send(client: &Client, group: &[&Report]) -> Result<Sent> {
    let worker = group[0].worker_id;
    let sent = match &group[0].kind {
        ReportKind::Done(_) => record_completions(client, worker, group).await,
        ReportKind::Fail { .. } => record_failures(client, worker, group).await,
        _ => record_one(client, group[0]).await.map(|()| 0),
    };
    let lost = match sent {
        Ok(lost) => lost,
        // A snooze or abort whose lease was taken back raises (the `_many` statements leave
        // such outcomes out instead).
        Err(e) if group.len() == 1 && lease_lost(&e) => 1,
        // A group that raises it for one of its outcomes: recorded one by one, to tell which.
        Err(e) if lease_lost(&e) => return Ok(Sent::Refused(e)),
        Err(e) if permanent_refusal(e.sqlstate()) => return Ok(Sent::Refused(e)),
        Err(e) => return Err(e),
    };
    if lost > 0 {
        tracing::warn!(
            refused = lost,
            "outcomes refused: their leases were taken back, the jobs run again"
        );
    }
    Ok(Sent::Recorded)
}

/// `complete_many` for one worker's completions; returns how many were refused.
async fn record_completions(client: &Client, worker: Uuid, group: &[&Report]) -> Result<usize> {
    let ids: Vec<Uuid> = group.iter().map(|r| r.job_id).collect();
    let attempts: Vec<i32> = group.iter().map(|r| r.attempt).collect();
    let results: Vec<Option<&Value>> = group
        .iter()
        .map(|r| match &r.kind {
            ReportKind::Done(result) => result.as_ref(),
            _ => None,
        })
        .collect();
    let statement = client
        .prepare_cached("SELECT soniq.complete_many($1, $2, $3, $4)")
        .await?;
    let recorded = client
        .query(&statement, &[&ids, &worker, &attempts, &results])
        .await?;
    Ok(ids.len() - recorded.len())
}

/// `fail_many` for one worker's failures; returns how many were refused.
async fn record_failures(client: &Client, worker: Uuid, group: &[&Report]) -> Result<usize> {
    let mut ids = Vec::new();
    let mut attempts = Vec::new();
    let mut errors = Vec::new();
    let mut retry_in = Vec::new();
    let mut reasons = Vec::new();
    for report in group {
        if let ReportKind::Fail {
            error,
            retry_in: delay,
            reason,
        } = &report.kind
        {
            ids.push(report.job_id);
            attempts.push(report.attempt);
            errors.push(error.as_str());
            retry_in.push(delay.map(|d| d.as_secs_f64()));
            reasons.push(reason.as_deref());
        }
    }
    let statement = client
        .prepare_cached(
            "SELECT job_id FROM soniq.fail_many($1, $2, $3, $4,
                 (SELECT array_agg(make_interval(secs => d.s) ORDER BY d.n)
                    FROM unnest($5::float8[]) WITH ORDINALITY AS d(s, n)), $6)",
        )
        .await?;
    let recorded = client
        .query(
            &statement,
            &[&ids, &worker, &attempts, &errors, &retry_in, &reasons],
        )
        .await?;
    Ok(ids.len() - recorded.len())
}

/// `snooze` or `abort`, one job.
async fn record_one(client: &Client, report: &Report) -> Result<()> {
    let (id, worker, attempt) = (&report.job_id, &report.worker_id, &report.attempt);
    match &report.kind {
        ReportKind::Snooze { delay, reason } => {
            let statement = client
                .prepare_cached(
                    "SELECT soniq.snooze($1, $2, $3, make_interval(secs => $4), reason => $5)",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[id, worker, attempt, &delay.as_secs_f64(), reason],
                )
                .await?
        }
        ReportKind::Abort(reason) => {
            let statement = client
                .prepare_cached("SELECT soniq.abort($1, $2, $3, $4)")
                .await?;
            client
                .execute(&statement, &[id, worker, attempt, reason])
                .await?
        }
        ReportKind::Done(_) | ReportKind::Fail { .. } => {
            unreachable!("completions and failures are recorded in batches")
        }
    };
    Ok(())
}

/// The reporter: drains outcomes, records them in batches, retries through outages.
/// `shared` is weak: the reporter must not keep the channel's sender alive.
async fn report_outcomes(
    pool: Pool,
    shared: Weak<Shared>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    error_retry_delay: Duration,
) {
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        take_ready(&mut reports, &mut batch);
        // Jobs still running may finish in a moment: let them (yielding to the scheduler a
        // few times) so one statement, one commit, records many outcomes.
        for _ in 0..REPORT_YIELDS {
            let others_running = shared
                .upgrade()
                .is_some_and(|shared| !shared.running.lock().unwrap().is_empty());
            if !others_running || batch.len() >= MAX_REPORT_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            take_ready(&mut reports, &mut batch);
        }
        // Retried through an outage (a database restart): a lost outcome would leave the job
        // processing until its lease expires. After RECORDING_PATIENCE the lease expiry is
        // the fallback: the job runs again (at-least-once, never lost).
        let ids: Vec<Uuid> = batch.iter().map(|r| r.job_id).collect();
        let give_up_at = Instant::now() + RECORDING_PATIENCE;
        let mut try_number = 1;
        while let Err(e) = record_batch(&pool, &mut batch).await {
            if Instant::now() >= give_up_at {
                tracing::error!(
                    jobs = batch.len(),
                    "gave up recording outcomes ({e}); the jobs will run again"
                );
                break;
            }
            tracing::warn!(
                try_number,
                jobs = batch.len(),
                "could not record outcomes, retrying: {e}"
            );
            try_number += 1;
            tokio::time::sleep(error_retry_delay).await;
        }
        if let Some(shared) = shared.upgrade() {
            let mut recording = shared.recording.lock().unwrap();
            for id in &ids {
                recording.remove(id);
            }
        }
        drop(batch); // what is left (given up on) frees its job slots
    }
}

/// Move the outcomes already waiting into `batch`, up to a full batch.
fn take_ready(reports: &mut mpsc::UnboundedReceiver<Report>, batch: &mut Vec<Report>) {
    while batch.len() < MAX_REPORT_BATCH {
        match reports.try_recv() {
            Ok(report) => batch.push(report),
            Err(_) => break,
        }
    }
}

/// Run `round` every `period` until `stop` changes.
async fn periodically<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        round().await;
    }
}

/// One heartbeat: aborts the jobs whose cancellation was requested; registers again if the
/// worker was presumed dead (its old leases are gone, their outcomes will be refused).
async fn heartbeat(shared: &Shared, options: &WorkerOptions) {
    let result = async {
        let client = shared.pool.get().await?;
        // With the jobs it holds: the database takes back any other it thinks this worker
        // has (a claim whose answer was lost with its connection).
        let statement = client
            .prepare_cached("SELECT soniq.heartbeat($1, $2)")
            .await?;
        let rows = client
            .query(&statement, &[&shared.worker_id(), &shared.held()])
            .await?;
        Ok::<_, Error>(rows.iter().map(|r| r.get::<_, Uuid>(0)).collect::<Vec<_>>())
    }
    .await;
    match result {
        Ok(cancelled) => {
            stop_jobs(shared, &cancelled, || {
                ReportKind::Abort("cancelled on request".into())
            });
        }
        Err(e) if e.sqlstate() == Some(SqlState::NO_DATA_FOUND) => {
            tracing::warn!("this worker was presumed dead; registering again");
            let task_names = shared.handlers.registry.names();
            if let Ok(id) = register(&shared.pool, options, shared.concurrency, &task_names).await {
                *shared.worker_id.lock().unwrap() = id;
            }
        }
        Err(e) => tracing::warn!("heartbeat failed: {e}"),
    }
}

/// One maintenance round (every `SONIQ_CLEANUP_INTERVAL`): the control plane's rescue and
/// pruning, done from the worker too, so they happen where no control plane serves the
/// database (the rounds lock with SKIP LOCKED, so running both is harmless).
/// Finished jobs deleted per pruning transaction, and transactions per maintenance round.
const PRUNE_BATCH_SIZE: i32 = 1000;
const PRUNE_BATCHES_PER_ROUND: usize = 10;

async fn maintain(pool: &Pool, heartbeat_timeout: Duration) {
    let round = async {
        let client = pool.get().await?;
        let seconds = heartbeat_timeout.as_secs_f64();
        client
            .execute(
                "SELECT soniq.rescue_jobs(make_interval(secs => $1))",
                &[&seconds],
            )
            .await?;
        // As the control plane prunes: one batch a transaction, so a backlog of finished jobs
        // never becomes one long transaction, at most PRUNE_BATCHES_PER_ROUND a round.
        let batch = client
            .prepare("SELECT soniq.prune_jobs(batch_size => $1, max_batches => 1)")
            .await?;
        for _ in 0..PRUNE_BATCHES_PER_ROUND {
            let pruned: i64 = client.query_one(&batch, &[&PRUNE_BATCH_SIZE]).await?.get(0);
            if pruned < i64::from(PRUNE_BATCH_SIZE) {
                break;
            }
        }
        Ok::<_, Error>(())
    };
    if let Err(e) = round.await {
        tracing::warn!("maintenance round failed: {e}");
    }
}

/// `LISTEN soniq_new_job` on a connection of its own; wakes the claim loop. Reconnects.
async fn listen(shared: Arc<Shared>, database_url: String, mut stop: watch::Receiver<bool>) {
    loop {
        let session = async {
            let (client, mut connection) = tokio_postgres::connect(&database_url, NoTls).await?;
            let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
            let driver_shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => driver_shared.wake.notify_one(),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let _ = done_tx.send(());
            });
            client.batch_execute("LISTEN soniq_new_job").await?;
            // Jobs may have arrived while the listener was down.
            shared.wake.notify_one();
            let _ = (&mut done_rx).await;
            Ok::<_, tokio_postgres::Error>(())
        };
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!("listener: {e}; polling until it reconnects");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.error_retry_delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Resolves at SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

impl Soniq {
    /// Run a worker until SIGINT or SIGTERM (or, with `run_once`, until nothing is due).
    /// The first signal shuts down gracefully; a second one exits the process at once
    /// (status 130; jobs still running are taken back by the control plane once this
    /// worker's heartbeats stop).
    pub async fn run_worker(&self, options: WorkerOptions) -> Result<WorkerReport> {
        let first_signal = async {
            shutdown_signal().await;
            tracing::info!("shutting down: no new jobs; running jobs get SONIQ_SHUTDOWN_TIMEOUT");
            tokio::spawn(async {
                shutdown_signal().await;
                tracing::warn!("second signal: exiting at once");
                std::process::exit(130);
            });
        };
        self.run_worker_until(options, first_signal).await
    }

    /// Run a worker until `shutdown` resolves: embed one in an application with its own
    /// lifecycle. Shutdown stops claiming, gives running jobs `SONIQ_SHUTDOWN_TIMEOUT`,
    /// then hands the rest back without using up an attempt, and deregisters.
    pub async fn run_worker_until(
        &self,
        options: WorkerOptions,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport> {
        let concurrency = options
            .concurrency
            .unwrap_or(self.settings.concurrency)
            .max(1);
        let task_names = self.handlers.registry.names();
        if task_names.is_empty() {
            return Err(Error::Invalid(
                "a worker needs at least one registered handler".into(),
            ));
        }
        self.publish_tasks().await?;
        let pool = self.postgres()?;
        let worker_id = register(pool, &options, concurrency, &task_names).await?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            worker_id = %worker_id,
            queues = %options.queues.as_ref().map_or("all".into(), |q| q.join(",")),
            concurrency,
            tasks = %task_names.join(","),
            database = %crate::settings::mask_url(&self.settings.database_url),
            "worker started"
        );
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            handlers: self.handlers.clone(),
            worker_id: Mutex::new(worker_id),
            concurrency,
            running: Mutex::new(HashMap::new()),
            recording: Mutex::new(HashSet::new()),
            reports: reports_tx,
            wake: Notify::new(),
            error_retry_delay: self.settings.error_retry_delay,
        });
        // Two stops: claiming ends first; heartbeats and the listener only after the jobs,
        // so leases stay alive while running jobs finish.
        let (stop_claiming, claiming_stopped) = watch::channel(false);
        let (stop_background, background_stopped) = watch::channel(false);
        let reporter = tokio::spawn(report_outcomes(
            pool.clone(),
            Arc::downgrade(&shared),
            reports_rx,
            self.settings.error_retry_delay,
        ));
        let heartbeat = tokio::spawn({
            let (shared, options) = (Arc::clone(&shared), options.clone());
            periodically(
                self.settings.heartbeat_interval,
                background_stopped.clone(),
                move || {
                    let (shared, options) = (Arc::clone(&shared), options.clone());
                    async move { heartbeat(&shared, &options).await }
                },
            )
        });
        let maintenance = tokio::spawn({
            let (pool, timeout) = (pool.clone(), self.settings.heartbeat_timeout);
            periodically(
                self.settings.cleanup_interval,
                background_stopped.clone(),
                move || {
                    let pool = pool.clone();
                    async move { maintain(&pool, timeout).await }
                },
            )
        });
        let listener = tokio::spawn(listen(
            Arc::clone(&shared),
            self.settings.database_url.clone(),
            background_stopped,
        ));

        let slots = Arc::new(Semaphore::new(concurrency));
        let started = AtomicUsize::new(0);
        // The claim loop is never dropped mid-claim (jobs claimed but never run would lose
        // an attempt): it is told to stop and ends at its next wait.
        let claimed = {
            let claiming = self.claim_loop(
                &shared,
                &options,
                &task_names,
                &slots,
                &started,
                claiming_stopped,
            );
            tokio::pin!(claiming);
            tokio::pin!(shutdown);
            tokio::select! {
                result = &mut claiming => result,
                _ = &mut shutdown => {
                    let _ = stop_claiming.send(true);
                    claiming.await
                }
            }
        };

        let all_slots = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let running = slots.available_permits() < concurrency;
        if running {
            tracing::info!(
                "stopped claiming; waiting up to {} s for the running jobs",
                self.settings.shutdown_timeout.as_secs_f64()
            );
        }
        let finished = tokio::time::timeout(
            self.settings.shutdown_timeout,
            slots.acquire_many(all_slots),
        )
        .await;
        let handed_back = if finished.is_ok() {
            0
        } else {
            let unfinished: Vec<Uuid> = shared.running.lock().unwrap().keys().copied().collect();
            stop_jobs(&shared, &unfinished, || ReportKind::Snooze {
                delay: Duration::ZERO,
                reason: Some("handed back unfinished at shutdown".into()),
            })
        };
        let _ = stop_background.send(true);
        let _ = heartbeat.await;
        let _ = maintenance.await;
        let _ = listener.await;
        let last_worker_id = shared.worker_id();
        // The reporter ends once every sender is gone: ours here, the job tasks' as they end.
        drop(shared);
        let _ = reporter.await;
        let client = pool.get().await?;
        if let Err(e) = client
            .execute("SELECT soniq.deregister_worker($1)", &[&last_worker_id])
            .await
        {
            let e = Error::from(e);
            if !lease_lost(&e) {
                return Err(e);
            }
        }
        claimed?;
        tracing::info!(
            jobs_run = started.load(Ordering::Relaxed),
            handed_back,
            "worker stopped and deregistered"
        );
        Ok(WorkerReport {
            jobs_run: started.load(Ordering::Relaxed),
            handed_back,
        })
    }

    async fn claim_loop(
        &self,
        shared: &Arc<Shared>,
        options: &WorkerOptions,
        task_names: &[String],
        slots: &Arc<Semaphore>,
        started: &AtomicUsize,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let concurrency = shared.concurrency;
        let all_slots = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let mut follow_up = false;
        while !*stop.borrow() {
            let remaining = options
                .max_jobs
                .map(|max| max.saturating_sub(started.load(Ordering::Relaxed)))
                .unwrap_or(usize::MAX);
            if remaining == 0 {
                break;
            }
            // Wait for a free slot, then take every free slot (up to a batch).
            let first = tokio::select! {
                permit = Arc::clone(slots).acquire_owned() => permit.expect("slots are never closed"),
                _ = stop.changed() => break,
            };
            let mut permits = vec![first];
            while permits.len() < remaining.min(MAX_CLAIM_BATCH) {
                match Arc::clone(slots).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let asked = permits.len();
            // Nothing running while we claim: an empty claim then means nothing is left.
            let nothing_running = slots.available_permits() + asked == concurrency;
            // Armed before the claim, so a notification during the claim is not lost.
            let woken = shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let jobs = match claim(shared, &options.queues, asked, task_names).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!("claim failed: {e}");
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.error_retry_delay) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            let got = jobs.len();
            started.fetch_add(got, Ordering::Relaxed);
            for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                spawn_job(shared, job, permit);
            }
            drop(permits);
            if got == asked {
                continue; // a full batch: there may be more at once
            }
            if options.run_once {
                if got == 0 && nothing_running {
                    break;
                }
                // Jobs still running may leave immediate retries: wait for them, then look again.
                drop(
                    slots
                        .acquire_many(all_slots)
                        .await
                        .expect("slots are never closed"),
                );
                continue;
            }
            let idle = if follow_up {
                FOLLOW_UP
            } else {
                self.settings.poll_interval
            };
            follow_up = false;
            tokio::select! {
                _ = &mut woken => follow_up = true,
                _ = tokio::time::sleep(idle) => {}
                _ = stop.changed() => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_no_duration_holds_fails_the_attempt_instead_of_the_worker() {
        assert_eq!(job_timeout(None), Ok(None));
        assert_eq!(job_timeout(Some(0.0)), Ok(None), "zero is no limit");
        assert_eq!(
            job_timeout(Some(2.5)),
            Ok(Some(Duration::from_millis(2500)))
        );
        for bad in [-5.0, f64::NAN, 1e300] {
            assert_eq!(
                job_timeout(Some(bad)),
                Err(format!(
                    "the job's timeout of {bad} seconds is out of range"
                ))
            );
        }
    }

    #[test]
    fn refusals_of_data_constraints_permissions_and_limits_are_not_outages() {
        for code in [
            SqlState::INVALID_PARAMETER_VALUE,
            SqlState::UNIQUE_VIOLATION,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::UNDEFINED_FUNCTION,
            SqlState::PROGRAM_LIMIT_EXCEEDED,
        ] {
            assert!(permanent_refusal(Some(code.clone())), "{}", code.code());
        }
        for code in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CONNECTION_FAILURE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        ] {
            assert!(!permanent_refusal(Some(code.clone())), "{}", code.code());
        }
        assert!(
            !permanent_refusal(None),
            "no SQLSTATE: the connection failed"
        );
    }

    #[test]
    fn one_statement_records_one_workers_completions_or_failures_or_one_other_outcome() {
        let report = |worker: u128, kind: ReportKind| Report {
            job_id: Uuid::nil(),
            attempt: 1,
            worker_id: Uuid::from_u128(worker),
            kind,
            _slot: None,
        };
        let snooze = || ReportKind::Snooze {
            delay: Duration::ZERO,
            reason: None,
        };
        let mut batch = vec![
            report(2, ReportKind::Done(None)),
            report(1, ReportKind::failure("x")),
            report(1, snooze()),
            report(1, ReportKind::Done(None)),
            report(1, snooze()),
            report(1, ReportKind::Done(None)),
        ];
        batch.sort_by_key(statement_key);
        let mut groups = Vec::new();
        while !batch.is_empty() {
            let n = group_len(&batch);
            groups.push(n);
            batch.drain(..n);
        }
        // Worker 1: two completions, one failure, each snooze alone; worker 2: one completion.
        assert_eq!(groups, vec![2, 1, 1, 1, 1]);
    }
}
