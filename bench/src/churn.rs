//! churn: steady enqueue at half the maximum drain rate with an in-process worker draining,
//! for D seconds, sampling the size of soniq.jobs (table and indexes). Every job leaves dead
//! row versions and dead index entries behind; if vacuum keeps up, the size levels off once
//! warm. The figure is the size at the end over the size after the first third.
//!
//! Jobs keep their result for 1 s when a control plane serves the database (so its pruning
//! is part of the cycle and the steady state, rate × TTL rows, is reached at once); without
//! one nothing would prune them, so they are deleted on completion instead.

use super::db::{self, connect};
use super::drain;
use super::report::{Figure, SizeSample, Target};
use super::Bench;
use serde_json::{json, Value};
use soniq_runner::Result;
use soniq_runner::WorkerOptions;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

const SCENARIO: &str = "churn";
const TASK: &str = "bench.churn";
const QUEUE: &str = "bench.churn";
/// The worker's concurrency when drain did not run (drain's best otherwise).
const CONCURRENCY: usize = 64;
const PRODUCERS: usize = 2;
/// Producers enqueue a small batch this often, which paces them to the target rate.
const PRODUCER_TICK: Duration = Duration::from_millis(50);

/// Enqueue at `rate` jobs/s over `PRODUCERS` connections until `seconds` pass; returns how
/// many jobs were enqueued.
async fn produce(bench: &Bench, rate: f64, seconds: f64) -> Result<usize> {
    let per_tick = ((rate * PRODUCER_TICK.as_secs_f64() / PRODUCERS as f64).ceil() as usize).max(1);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..PRODUCERS {
        let client = connect(&bench.url).await?;
        let statement = client
            .prepare(&format!(
                "SELECT count(*) FROM soniq.enqueue_many('{TASK}', $1::jsonb[], queue => '{QUEUE}')"
            ))
            .await?;
        lanes.spawn(async move {
            let mut ticks = tokio::time::interval(PRODUCER_TICK);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut sent = 0usize;
            while Instant::now() < deadline {
                ticks.tick().await;
                let args: Vec<Value> = (0..per_tick)
                    .map(|i| json!({"lane": lane, "n": sent + i}))
                    .collect();
                client.execute(&statement, &[&args]).await?;
                sent += per_tick;
            }
            Ok::<_, soniq_runner::Error>(sent)
        });
    }
    Ok(db::join_lanes(lanes).await?.into_iter().sum())
}

async fn sample(client: &tokio_postgres::Client, seconds: f64) -> Result<SizeSample> {
    let row = client
        .query_one(
            "SELECT pg_total_relation_size('soniq.jobs'), pg_relation_size('soniq.jobs'),
                    pg_indexes_size('soniq.jobs'),
                    (SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'queued')",
            &[&QUEUE],
        )
        .await?;
    Ok(SizeSample {
        seconds,
        total_bytes: row.get(0),
        table_bytes: row.get(1),
        index_bytes: row.get(2),
        queued: row.get(3),
    })
}

/// Sample sizes at the start and every `every` until `seconds` pass.
async fn sample_sizes(bench: &Bench, seconds: f64, every: f64) -> Result<Vec<SizeSample>> {
    let client = connect(&bench.url).await?;
    let started = Instant::now();
    let mut samples = vec![sample(&client, 0.0).await?];
    let mut next = every;
    while next <= seconds + 1e-9 {
        tokio::time::sleep_until((started + Duration::from_secs_f64(next)).into()).await;
        samples.push(sample(&client, started.elapsed().as_secs_f64()).await?);
        next += every;
    }
    Ok(samples)
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, QUEUE).await?;
    let (concurrency, max_rate, source) = match bench.best_drain {
        Some((concurrency, rate)) => (concurrency, rate, "drain's best".to_string()),
        None => {
            let count = (bench.plan.jobs / 5).max(1_000);
            let rate = drain::measure(bench, CONCURRENCY, count, None).await?.rate;
            (CONCURRENCY, rate, format!("a drain of {count} jobs"))
        }
    };
    let rate = max_rate / 2.0;
    let ttl = if bench.control_plane {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    db::publish_task(&admin, TASK, QUEUE, ttl).await?;
    let app = db::noop_app(
        db::worker_settings(&bench.settings, concurrency)?,
        TASK,
        QUEUE,
        Some(ttl),
    )?;
    let options = WorkerOptions {
        concurrency: Some(concurrency),
        queues: Some(vec![QUEUE.into()]),
        run_once: false,
        max_jobs: None,
        monitor: None,
    };
    let seconds = bench.plan.churn_seconds;
    let every = if seconds >= 60.0 { 5.0 } else { 1.0 };
    let (stop, stopped) = oneshot::channel::<()>();
    let started = Instant::now();
    let (worker, (produced, samples)) = tokio::join!(
        app.run_worker_until(options, async {
            let _ = stopped.await;
        }),
        async {
            let done = tokio::join!(
                produce(bench, rate, seconds),
                sample_sizes(bench, seconds, every)
            );
            let _ = stop.send(());
            done
        }
    );
    let elapsed = started.elapsed().as_secs_f64();
    let worker = worker?;
    let produced = produced?;
    let samples = samples?;
    db::clean_queue(&admin, QUEUE).await?;

    let run = Churn {
        source,
        max_rate,
        concurrency,
        seconds,
        ttl,
        produced,
        drained: worker.jobs_run,
        elapsed,
    };
    run.report(bench, &samples);
    bench.report.churn_samples = samples;
    Ok(())
}

/// What one churn run did, for its figures.
struct Churn {
    source: String,
    max_rate: f64,
    concurrency: usize,
    seconds: f64,
    ttl: Duration,
    produced: usize,
    drained: usize,
    elapsed: f64,
}

impl Churn {
    fn report(&self, bench: &mut Bench, samples: &[SizeSample]) {
        let (source, max_rate, concurrency) = (&self.source, self.max_rate, self.concurrency);
        let (seconds, rate) = (self.seconds, self.max_rate / 2.0);
        let third = samples
            .iter()
            .find(|s| s.seconds >= seconds / 3.0)
            .map_or(0, |s| s.total_bytes);
        let last = samples.last().map_or(0, |s| s.total_bytes);
        bench.report.add(Figure::new(
            SCENARIO,
            "enqueue_rate",
            format!("enqueued, paced to half of {source} ({max_rate:.0} jobs/s at concurrency {concurrency}), {seconds:.0} s"),
            self.produced as f64 / seconds,
            "jobs/s",
        ));
        bench.report.add(Figure::new(
            SCENARIO,
            "drain_rate",
            format!(
                "run by the worker, concurrency {concurrency}, result TTL {} s",
                self.ttl.as_secs()
            ),
            self.drained as f64 / self.elapsed,
            "jobs/s",
        ));
        bench.report.add(Figure::new(
            SCENARIO,
            "backlog",
            "queued at the end",
            samples.last().map_or(0, |s| s.queued) as f64,
            "jobs",
        ));
        bench.report.add(Figure::new(
            SCENARIO,
            "size_end",
            "soniq.jobs with indexes at the end",
            last as f64 / 1_048_576.0,
            "MB",
        ));
        let growth = Figure::new(
            SCENARIO,
            "growth",
            format!("size at the end / size after {:.0} s", seconds / 3.0),
            if third > 0 {
                last as f64 / third as f64
            } else {
                0.0
            },
            "x",
        );
        // A minute or more: autovacuum (naptime 10 s on the development cluster) has had its
        // rounds; a shorter run (--quick) only shows the warm-up.
        bench.report.add(if seconds >= 60.0 {
            growth.target(Target::value_at_most(1.2))
        } else {
            growth
        });
        let backlog = samples.last().map_or(0, |s| s.queued) as f64;
        if backlog > 2.0 * rate {
            bench.report.note(format!(
                "churn: the worker fell behind the producers ({backlog:.0} jobs queued at the end); the growth includes that backlog"
            ));
        }
    }
}
