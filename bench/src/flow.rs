//! flow: what flow control costs. The drain of a queue with a queue-wide `max_running` of 64,
//! and with a per-key limit over 1,000 keys, each against the same drain without limits in
//! this run (two runners at concurrency 64, so the limits hold across processes); then the
//! claim of 64 jobs from a queue of 1,000,000 across 10,000 keys with a per-key limit (fair
//! share walks the keys) against the same claim without limits.

use super::db::{self, connect};
use super::drain::{self, Drain};
use super::report::{Figure, Target};
use super::Bench;
use serde_json::{json, Value};
use soniq_runner::Result;
use std::time::Instant;

pub const SCENARIO: &str = "flow";
const TASK: &str = "bench.drain"; // the drain's task and no-op handler
const QUEUE: &str = "bench.flow";
const RUNNERS: usize = 2;
const CONCURRENCY: usize = 64;
const CLAIM_BATCH: i32 = 64;
/// Untimed claims before the timed ones (plans cached, pages warm).
const WARM_UP: usize = 20;

/// The queue's flow control from scratch: `settings` only.
async fn configure(admin: &tokio_postgres::Client, settings: Value) -> Result<()> {
    admin
        .execute("DELETE FROM soniq.queues WHERE name = $1", &[&QUEUE])
        .await?;
    if settings != json!({}) {
        admin
            .execute("SELECT soniq.queue_configure($1, $2)", &[&QUEUE, &settings])
            .await?;
    }
    Ok(())
}

async fn drain_with(bench: &Bench, settings: Value, keys: Option<usize>) -> Result<f64> {
    let admin = connect(&bench.url).await?;
    configure(&admin, settings).await?;
    let drain = Drain {
        runners: RUNNERS,
        concurrency: CONCURRENCY,
        count: bench.plan.jobs,
        queue: QUEUE,
        keys,
        ..Drain::default()
    };
    Ok(drain::measure_runners(bench, &drain).await?.rate)
}

/// Median milliseconds of `samples` claims of `CLAIM_BATCH` from the queue as it stands,
/// each rolled back (so every claim sees the same backlog).
async fn claim_median(bench: &Bench, samples: usize) -> Result<f64> {
    let client = connect(&bench.url).await?;
    let worker = db::register_worker(bench, &client, QUEUE).await?;
    let claim = client
        .prepare(&format!(
            "SELECT count(*) FROM soniq.claim($1, ARRAY['{QUEUE}'], {CLAIM_BATCH})"
        ))
        .await?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..WARM_UP + samples {
        client.batch_execute("BEGIN").await?;
        let started = Instant::now();
        let claimed: i64 = client.query_one(&claim, &[&worker.id]).await?.get(0);
        let took = started.elapsed();
        client.batch_execute("ROLLBACK").await?;
        if claimed != i64::from(CLAIM_BATCH) {
            return Err(soniq_runner::Error::Invalid(format!(
                "a claim of {CLAIM_BATCH} took {claimed}"
            )));
        }
        if i >= WARM_UP {
            times.push(took.as_secs_f64() * 1000.0);
        }
    }
    worker.deregister(&client).await?;
    times.sort_by(f64::total_cmp);
    Ok(db::quantile(&times, 0.5))
}

async fn claim_latency(bench: &mut Bench) -> Result<()> {
    let (jobs, keys) = if bench.plan.quick {
        (20_000, 1_000)
    } else {
        (1_000_000, 10_000)
    };
    let samples = bench.plan.depth_samples.min(200);
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, QUEUE).await?;
    admin
        .execute(
            "SELECT soniq.register_task($1, '{\"concurrency_key\": \"tenant\"}')",
            &[&TASK],
        )
        .await?;
    db::fill_keyed(&admin, TASK, QUEUE, jobs, Some(keys)).await?;
    db::settle(&admin, "soniq.jobs").await?;
    let label = format!("claim of {CLAIM_BATCH}, {jobs} queued across {keys} keys");

    configure(&admin, json!({})).await?;
    let unlimited = claim_median(bench, samples).await?;
    bench.report.add(Figure::new(
        SCENARIO,
        "claim_unlimited",
        format!("{label}, no limits (median)"),
        unlimited,
        "ms",
    ));
    configure(&admin, json!({"max_running_per_key": 10})).await?;
    let per_key = claim_median(bench, samples).await?;
    bench.report.add(
        Figure::new(
            SCENARIO,
            "claim_per_key",
            format!("{label}, max_running_per_key 10: fair share walks the keys (median)"),
            per_key,
            "ms",
        )
        .against(bench.report.yardstick(SCENARIO, "claim_unlimited"))
        .target(Target::ratio_at_most(1.5)),
    );
    configure(&admin, json!({})).await?;
    db::clean_queue(&admin, QUEUE).await?;
    Ok(())
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let jobs = bench.plan.jobs;
    let setup = format!("{RUNNERS} runners at concurrency {CONCURRENCY}, {jobs} jobs");
    let unlimited = drain_with(bench, json!({}), None).await?;
    bench.report.add(Figure::new(
        SCENARIO,
        "drain_unlimited",
        format!("{setup}, no limits"),
        unlimited,
        "jobs/s",
    ));
    let yardstick = bench.report.yardstick(SCENARIO, "drain_unlimited");
    let limited = drain_with(bench, json!({"max_running": 64}), None).await?;
    bench.report.add(
        Figure::new(
            SCENARIO,
            "drain_max_running_64",
            format!("{setup}, max_running 64"),
            limited,
            "jobs/s",
        )
        .against(yardstick.clone())
        .target(Target::ratio_at_least(0.90)),
    );
    let per_key = drain_with(bench, json!({"max_running_per_key": 2}), Some(1_000)).await?;
    bench.report.add(
        Figure::new(
            SCENARIO,
            "drain_per_key",
            format!("{setup}, max_running_per_key 2 over 1,000 keys"),
            per_key,
            "jobs/s",
        )
        .against(yardstick)
        .target(Target::ratio_at_least(0.80)),
    );
    claim_latency(bench).await?;
    let admin = connect(&bench.url).await?;
    configure(&admin, json!({})).await?;
    Ok(())
}
