//! drain: pre-enqueued no-op jobs drained by one in-process runner (claim in batches up to
//! its free slots, run, record outcomes many per statement), at concurrency 1, 16 and 64.
//! Concurrency 1 is one job per transaction: it compares with limit's one-at-a-time figure;
//! the best batched figure with limit's batched figure of the same batch size.
//!
//! The handler keeps the task's default options: a completed job stays as a done row for
//! its result TTL (300 s), as users get it, where limit deletes the row. One more figure,
//! the best concurrency again with a result TTL of 0 (the row deleted on completion, as
//! limit does), shows what keeping the row costs. And once more beside a backlog as large in a
//! queue no worker serves: a claim must not read other queues' jobs.

use super::db::{self, connect};
use super::limit;
use super::report::{Figure, Target};
use super::Bench;
use soniq_runner::WorkerOptions;
use soniq_runner::{Error, Result};
use std::time::{Duration, Instant};

pub const SCENARIO: &str = "drain";
const TASK: &str = "bench.drain";
const QUEUE: &str = "bench.drain";

/// What one drain did.
pub struct Drained {
    /// Jobs per second, from the worker's start to its return.
    pub rate: f64,
    /// Transactions in the database per job while it ran (see `db::commits`): how well
    /// the runner batched, and how many round trips a statement took.
    pub transactions_per_job: f64,
}

/// Drain `count` jobs at `concurrency` with a fresh runner, timed from the worker's start
/// to its return (run-once: it returns when nothing is left). `ttl`: the task's result
/// TTL; `None` leaves the default.
pub async fn measure(
    bench: &Bench,
    concurrency: usize,
    count: usize,
    ttl: Option<Duration>,
) -> Result<Drained> {
    measure_runners(
        bench,
        &Drain {
            concurrency,
            count,
            ttl,
            ..Drain::default()
        },
    )
    .await
}

/// A drain to measure: `runners` runners at once, each with its own pool and `concurrency`,
/// over `count` jobs of `queue` (whose flow control the caller sets), of `keys` tenants when
/// given (the task's concurrency key).
pub struct Drain<'a> {
    pub runners: usize,
    pub concurrency: usize,
    pub count: usize,
    pub ttl: Option<Duration>,
    pub queue: &'a str,
    pub keys: Option<usize>,
}

impl Default for Drain<'_> {
    fn default() -> Self {
        Drain {
            runners: 1,
            concurrency: 1,
            count: 0,
            ttl: None,
            queue: QUEUE,
            keys: None,
        }
    }
}

/// `measure` for any `Drain`, timed until the last runner returns.
pub async fn measure_runners(bench: &Bench, drain: &Drain<'_>) -> Result<Drained> {
    let &Drain {
        runners,
        concurrency,
        count,
        ttl,
        queue,
        keys,
    } = drain;
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, queue).await?;
    // The jobs take the task's published options when they are enqueued.
    admin
        .execute("DELETE FROM soniq.tasks WHERE task_name = $1", &[&TASK])
        .await?;
    if let Some(ttl) = ttl {
        db::publish_task(&admin, TASK, queue, ttl).await?;
    }
    if keys.is_some() {
        admin
            .execute(
                "SELECT soniq.register_task($1, '{\"concurrency_key\": \"tenant\"}')",
                &[&TASK],
            )
            .await?;
    }
    db::fill_keyed(&admin, TASK, queue, count, keys).await?;
    db::settle(&admin, "soniq.jobs").await?;
    // A new connection for what follows: the fixture's closes and reports its transactions
    // before the count starts.
    drop(admin);
    let admin = connect(&bench.url).await?;
    let apps = (0..runners)
        .map(|_| {
            db::noop_app(
                db::worker_settings(&bench.settings, concurrency)?,
                TASK,
                queue,
                ttl,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let options = WorkerOptions {
        concurrency: Some(concurrency),
        queues: Some(vec![queue.into()]),
        run_once: true,
        max_jobs: None,
        monitor: None,
    };
    let commits_before = db::commits(&admin).await?;
    let started = Instant::now();
    let reports = futures_util::future::join_all(
        apps.iter()
            .map(|app| app.run_worker_until(options.clone(), std::future::pending())),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let jobs_run = reports
        .into_iter()
        .try_fold(0, |sum, report| Ok::<_, Error>(sum + report?.jobs_run))?;
    drop(apps); // their connections close and report
    let committed = db::commits(&admin).await? - commits_before;
    let left = db::queued(&admin, queue).await?;
    db::clean_queue(&admin, queue).await?;
    if jobs_run != count || left != 0 {
        return Err(Error::Invalid(format!(
            "the workers ran {jobs_run} of {count} jobs and left {left} queued"
        )));
    }
    Ok(Drained {
        rate: count as f64 / elapsed,
        transactions_per_job: committed as f64 / count as f64,
    })
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let mut best: Option<(usize, f64)> = None;
    // One at a time, then the concurrencies the limit's batch sizes match.
    for concurrency in std::iter::once(1).chain(limit::BATCHES) {
        let count = if concurrency == 1 {
            bench.plan.single_jobs
        } else {
            bench.plan.jobs
        };
        let drained = measure(bench, concurrency, count, None).await?;
        let rate = drained.rate;
        let measure = format!("concurrency {concurrency}, {count} jobs");
        let figure = if concurrency == 1 {
            Figure::new(SCENARIO, "concurrency_1", measure, rate, "jobs/s")
                .against(
                    bench
                        .report
                        .yardstick(limit::SCENARIO, limit::ONE_PER_TRANSACTION),
                )
                .target(Target::ratio_at_least(0.50))
        } else {
            if best.is_none_or(|(_, r)| rate > r) {
                best = Some((concurrency, rate));
            }
            Figure::new(
                SCENARIO,
                format!("concurrency_{concurrency}"),
                measure,
                rate,
                "jobs/s",
            )
            .against(
                bench
                    .report
                    .yardstick(limit::SCENARIO, &limit::batched_key(concurrency)),
            )
        };
        bench.report.add(figure);
        bench.report.add(
            Figure::new(
                SCENARIO,
                limit::transactions_key(concurrency),
                format!("transactions per job, concurrency {concurrency}"),
                drained.transactions_per_job,
                "xacts/job",
            )
            .against(
                bench
                    .report
                    .yardstick(limit::SCENARIO, &limit::transactions_key(concurrency)),
            ),
        );
    }
    bench.best_drain = best;
    if let Some((concurrency, rate)) = best {
        best_batched(bench, concurrency, rate).await?;
        scale(bench, concurrency).await?;
        beside_a_backlog(bench, concurrency).await?;
    }
    Ok(())
}

/// Runners at once on one database, each at the best concurrency, against one runner's rate:
/// claims that contended would drain slower with more runners.
const SCALE_RUNNERS: usize = 4;

async fn scale(bench: &mut Bench, concurrency: usize) -> Result<()> {
    let jobs = bench.plan.jobs;
    let drained = measure_runners(
        bench,
        &Drain {
            runners: SCALE_RUNNERS,
            concurrency,
            count: jobs,
            ..Drain::default()
        },
    )
    .await?;
    let key = format!("concurrency_{concurrency}");
    bench.report.add(
        Figure::new(
            SCENARIO,
            "scale",
            format!("{SCALE_RUNNERS} runners at concurrency {concurrency} each, {jobs} jobs"),
            drained.rate,
            "jobs/s",
        )
        .against(bench.report.yardstick(SCENARIO, &key))
        .target(Target::ratio_at_least(1.0)),
    );
    bench.report.add(Figure::new(
        SCENARIO,
        "scale_transactions_per_job",
        format!("transactions per job, {SCALE_RUNNERS} runners"),
        drained.transactions_per_job,
        "xacts/job",
    ));
    Ok(())
}

/// A queue nobody serves, whose backlog the drain beside it must not walk past.
const BACKLOG_QUEUE: &str = "bench.backlog";

/// The best concurrency's drain again, with as many jobs queued before in another queue that
/// no worker serves: a claim from one queue must not read the others' jobs (within 10 %).
async fn beside_a_backlog(bench: &mut Bench, concurrency: usize) -> Result<()> {
    let jobs = bench.plan.jobs;
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, BACKLOG_QUEUE).await?;
    db::fill(&admin, BACKLOG_QUEUE, BACKLOG_QUEUE, jobs).await?;
    let drained = measure(bench, concurrency, jobs, None).await;
    db::clean_queue(&admin, BACKLOG_QUEUE).await?;
    let key = format!("concurrency_{concurrency}");
    bench.report.add(
        Figure::new(
            SCENARIO,
            "beside_backlog",
            format!("concurrency {concurrency}, {jobs} jobs, {jobs} more queued in a queue nobody serves"),
            drained?.rate,
            "jobs/s",
        )
        .against(bench.report.yardstick(SCENARIO, &key))
        .target(Target::ratio_at_least(0.90)),
    );
    Ok(())
}

/// The best batched drain against the limit at its batch size, and the same drain deleting
/// its rows as the limit does (result TTL 0).
async fn best_batched(bench: &mut Bench, concurrency: usize, rate: f64) -> Result<()> {
    let yardstick = bench
        .report
        .yardstick(limit::SCENARIO, &limit::batched_key(concurrency));
    bench.report.add(
        Figure::new(
            SCENARIO,
            "best_batched",
            format!("best of 16/64 (concurrency {concurrency})"),
            rate,
            "jobs/s",
        )
        .against(yardstick.clone())
        .target(Target::ratio_at_least(0.70)),
    );
    let jobs = bench.plan.jobs;
    let deleting = measure(bench, concurrency, jobs, Some(Duration::ZERO))
        .await?
        .rate;
    bench.report.add(
        Figure::new(
            SCENARIO,
            "best_deleting",
            format!(
                "concurrency {concurrency}, result TTL 0 (rows deleted as limit does), {jobs} jobs"
            ),
            deleting,
            "jobs/s",
        )
        .against(yardstick),
    );
    Ok(())
}
