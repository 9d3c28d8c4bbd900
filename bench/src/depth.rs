//! depth: does claiming slow down as the backlog and the history grow? The time of one
//! `soniq.claim` of one job (each followed by its `soniq.complete`, untimed) with 1k, 100k
//! and 1M jobs queued, then with 1M queued plus 1M finished rows kept in history. The claim
//! reads a partial index of queued rows in claim order, so it should not care.

use super::db::{self, connect};
use super::report::{Figure, Target};
use super::Bench;
use soniq_runner::Result;
use std::time::Instant;
use uuid::Uuid;

const SCENARIO: &str = "depth";
const TASK: &str = "bench.depth";
const QUEUE: &str = "bench.depth";
/// Untimed claims before each level's samples (plans cached, pages warm).
const WARM_UP: usize = 20;

fn count_label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// `samples` timed claims (ms, sorted), each followed by the job's completion.
async fn claims(bench: &Bench, samples: usize) -> Result<Vec<f64>> {
    // A fresh connection: no plan cached while the table was smaller.
    let client = connect(&bench.url).await?;
    let worker = db::register_worker(bench, &client, QUEUE).await?;
    let claim = client
        .prepare(&format!(
            "SELECT id, attempt FROM soniq.claim($1, ARRAY['{QUEUE}'], 1, ARRAY['{TASK}'])"
        ))
        .await?;
    let complete = client.prepare("SELECT soniq.complete($1, $2, $3)").await?;
    let mut times = Vec::with_capacity(samples);
    for i in 0..WARM_UP + samples {
        let started = Instant::now();
        let row = client.query_one(&claim, &[&worker.id]).await?;
        let took = started.elapsed();
        let (id, attempt): (Uuid, i32) = (row.get(0), row.get(1));
        client
            .execute(&complete, &[&id, &worker.id, &attempt])
            .await?;
        if i >= WARM_UP {
            times.push(took.as_secs_f64() * 1000.0);
        }
    }
    worker.deregister(&client).await?;
    times.sort_by(f64::total_cmp);
    Ok(times)
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, QUEUE).await?;
    let samples = bench.plan.depth_samples;
    let mut history = 0;
    let mut first_median: Option<(String, f64)> = None;
    let levels = bench.plan.depth_levels.clone();
    for (level, (queued, finished)) in levels.iter().copied().enumerate() {
        // Top up to the level plus what the claims will use up, so the queue never drops
        // below the level while measuring.
        let wanted = queued + WARM_UP + samples;
        let missing = wanted.saturating_sub(db::queued(&admin, QUEUE).await? as usize);
        db::fill(&admin, TASK, QUEUE, missing).await?;
        if finished > history {
            db::add_history(&admin, TASK, QUEUE, finished - history).await?;
            history = finished;
        }
        db::settle(&admin, "soniq.jobs").await?;
        let label = if finished > 0 {
            format!(
                "{} queued + {} finished",
                count_label(queued),
                count_label(finished)
            )
        } else {
            format!("{} queued", count_label(queued))
        };
        let times = claims(bench, samples).await?;
        let median = db::quantile(&times, 0.5);
        let mut figure = Figure::new(
            SCENARIO,
            format!("median_{queued}_{finished}"),
            format!("claim of 1 job, median, {label}"),
            median,
            "ms",
        );
        if level > 0 {
            figure = figure.against(first_median.clone());
        }
        if level + 1 == levels.len() && level > 0 {
            figure = figure.target(Target::ratio_at_most(1.5));
        }
        bench.report.add(figure);
        bench.report.add(Figure::new(
            SCENARIO,
            format!("p99_{queued}_{finished}"),
            format!("claim of 1 job, p99, {label}"),
            db::quantile(&times, 0.99),
            "ms",
        ));
        if level == 0 {
            first_median = bench
                .report
                .yardstick(SCENARIO, &format!("median_{queued}_{finished}"));
        }
    }
    // The bench settles the table (vacuum, index rebuild) after every scenario.
    db::clean_queue(&admin, QUEUE).await?;
    Ok(())
}
