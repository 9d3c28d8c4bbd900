//! dependencies: what a job's dependents cost the outcome that frees them. A parent with 1,000
//! waiting dependents is completed: the time of that `complete` (one statement queues them
//! all), median of several rounds, against the `complete` of a parent with none in this run.

use super::db::{self, connect};
use super::report::Figure;
use super::Bench;
use soniq_runner::{Error, Result};
use std::time::Instant;
use tokio_postgres::Client;
use uuid::Uuid;

pub const SCENARIO: &str = "dependencies";
const PARENT: &str = "bench.parent";
const DEPENDENT: &str = "bench.dependent";
const QUEUE: &str = "bench.dependencies";
const DEPENDENTS: i32 = 1_000;

/// Milliseconds of the `complete` of a claimed parent with `dependents` waiting for it; checks
/// that they are all queued after it.
async fn complete_ms(client: &Client, worker: Uuid, dependents: i32) -> Result<f64> {
    let parent: Uuid = client
        .query_one("SELECT soniq.enqueue($1, queue => $2)", &[&PARENT, &QUEUE])
        .await?
        .get(0);
    client
        .execute(
            "SELECT count(*) FROM soniq.enqueue_many(
                 (SELECT coalesce(jsonb_agg(jsonb_build_object('task_name', $1::text, 'queue', $2::text,
                                                               'depends_on', jsonb_build_array($3::uuid))), '[]')
                    FROM generate_series(1, $4::int)))",
            &[&DEPENDENT, &QUEUE, &parent, &dependents],
        )
        .await?;
    let attempt: i32 = client
        .query_one(
            "SELECT attempt FROM soniq.claim($1, ARRAY[$2], 1, ARRAY[$3])",
            &[&worker, &QUEUE, &PARENT],
        )
        .await?
        .get(0);
    let started = Instant::now();
    client
        .execute(
            "SELECT soniq.complete($1, $2, $3)",
            &[&parent, &worker, &attempt],
        )
        .await?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let queued: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND task_name = $2 AND status = 'queued'",
            &[&QUEUE, &DEPENDENT],
        )
        .await?
        .get(0);
    if queued != i64::from(dependents) {
        return Err(Error::Invalid(format!(
            "the parent's completion queued {queued} of its {dependents} dependents"
        )));
    }
    db::clean_queue(client, QUEUE).await?;
    Ok(took)
}

async fn median_ms(client: &Client, worker: Uuid, dependents: i32, rounds: usize) -> Result<f64> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        times.push(complete_ms(client, worker, dependents).await?);
    }
    times.sort_by(f64::total_cmp);
    Ok(db::quantile(&times, 0.5))
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let client = connect(&bench.url).await?;
    db::clean_queue(&client, QUEUE).await?;
    let worker = db::register_worker(bench, &client, QUEUE).await?;
    let rounds = if bench.plan.quick { 3 } else { 9 };
    // One untimed round of each first: plans cached, pages warm.
    median_ms(&client, worker.id, 0, 1).await?;
    median_ms(&client, worker.id, DEPENDENTS, 1).await?;
    let alone = median_ms(&client, worker.id, 0, rounds).await?;
    let release = median_ms(&client, worker.id, DEPENDENTS, rounds).await?;
    worker.deregister(&client).await?;

    let key = "complete_alone";
    bench.report.add(Figure::new(
        SCENARIO,
        key,
        format!("complete of a job nothing depends on, median of {rounds}"),
        alone,
        "ms",
    ));
    bench.report.add(
        Figure::new(
            SCENARIO,
            "release_1000",
            format!("complete of a job {DEPENDENTS} jobs wait for (it queues them all), median of {rounds}"),
            release,
            "ms",
        )
        .against(bench.report.yardstick(SCENARIO, key)),
    );
    Ok(())
}
