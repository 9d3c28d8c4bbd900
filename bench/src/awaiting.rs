//! awaiting: how soon a waiting producer hears that its job ended. Each sample enqueues an
//! awaitable job, starts `Soniq::wait_for_job` on it (LISTEN), then claims and completes the
//! job from another connection; the figure is the time from that completion's commit returning
//! to the wait returning (a notification at commit, a look at the job). p50 and p99.

use super::db::{self, connect};
use super::report::{Figure, Target};
use super::Bench;
use soniq_runner::{Error, Result, Soniq};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const SCENARIO: &str = "awaiting";
const TASK: &str = "bench.awaited";
const QUEUE: &str = "bench.awaiting";

pub async fn run(bench: &mut Bench) -> Result<()> {
    let client = connect(&bench.url).await?;
    db::clean_queue(&client, QUEUE).await?;
    let worker = db::register_worker(bench, &client, QUEUE).await?;
    let producer = Soniq::with_settings(bench.settings.clone())?;
    let samples = if bench.plan.quick { 30 } else { 300 };
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let job: Uuid = client
            .query_one(
                "SELECT soniq.enqueue($1, queue => $2, awaitable => true)",
                &[&TASK, &QUEUE],
            )
            .await?
            .get(0);
        let (wait, complete) = tokio::join!(
            async {
                let outcome = producer.wait_for_job(job, Duration::from_secs(10)).await;
                (outcome, Instant::now())
            },
            async {
                // The wait is listening well before the job ends.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let attempt: i32 = client
                    .query_one(
                        "SELECT attempt FROM soniq.claim($1, ARRAY[$2], 1, ARRAY[$3])",
                        &[&worker.id, &QUEUE, &TASK],
                    )
                    .await?
                    .get(0);
                client
                    .execute(
                        "SELECT soniq.complete($1, $2, $3)",
                        &[&job, &worker.id, &attempt],
                    )
                    .await?;
                Ok::<_, Error>(Instant::now())
            }
        );
        let (outcome, heard) = wait;
        let completed = complete?;
        if outcome?.is_none() {
            return Err(Error::Invalid(format!("the wait for job {job} timed out")));
        }
        latencies.push(heard.saturating_duration_since(completed).as_secs_f64() * 1000.0);
    }
    worker.deregister(&client).await?;
    db::clean_queue(&client, QUEUE).await?;
    latencies.sort_by(f64::total_cmp);
    bench.report.add(Figure::new(
        SCENARIO,
        "wait_p50",
        format!("completion's commit to the wait returning, p50 of {samples}"),
        db::quantile(&latencies, 0.5),
        "ms",
    ));
    bench.report.add(
        Figure::new(
            SCENARIO,
            "wait_p99",
            format!("completion's commit to the wait returning, p99 of {samples}"),
            db::quantile(&latencies, 0.99),
            "ms",
        )
        .target(Target::value_at_most(50.0)),
    );
    Ok(())
}
