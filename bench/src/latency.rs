//! latency: how soon an idle worker starts a job after its enqueue committed. A producer
//! enqueues one job at a time (a trickle: the next once the handler started, or after
//! 20 ms); the time runs from the moment the enqueue call returned to the moment the
//! handler started. What it measures is the wake-up path: NOTIFY, the worker's listener,
//! its claim, the spawn of the handler.

use super::db::{self, connect};
use super::report::{Figure, Target};
use super::Bench;
use serde::{Deserialize, Serialize};
use soniq_runner::{Error, Result};
use soniq_runner::{JobResult, Outcome, Soniq, WorkerOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const SCENARIO: &str = "latency";
const TASK: &str = "bench.latency";
const QUEUE: &str = "bench.latency";
const CONCURRENCY: usize = 4;
/// Jobs enqueued before measuring: the worker's listener may not be listening yet.
const WARM_UP: usize = 10;
/// How long the producer waits for a handler before it enqueues the next job anyway.
const PATIENCE: Duration = Duration::from_millis(20);

#[derive(Serialize, Deserialize)]
struct Args {
    n: usize,
}

/// Enqueue `total` jobs one at a time; returns the latency of each that started, in ms,
/// skipping the warm-up.
async fn produce(
    bench: &Bench,
    total: usize,
    started: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
) -> Result<Vec<f64>> {
    let producer = connect(&bench.url).await?;
    let enqueue = producer
        .prepare(&format!(
            "SELECT soniq.enqueue('{TASK}', jsonb_build_object('n', $1::int), queue => '{QUEUE}')"
        ))
        .await?;
    let mut committed = HashMap::new();
    let mut began = HashMap::new();
    for n in 0..total {
        producer.execute(&enqueue, &[&(n as i32)]).await?;
        committed.insert(n, Instant::now());
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !began.contains_key(&n) {
            match tokio::time::timeout_at(deadline, started.recv()).await {
                Ok(Some((m, at))) => {
                    began.insert(m, at);
                }
                _ => break,
            }
        }
    }
    // Stragglers (a missed wake-up waits for the worker's poll).
    let deadline =
        tokio::time::Instant::now() + bench.settings.poll_interval() + Duration::from_secs(1);
    while began.len() < total {
        match tokio::time::timeout_at(deadline, started.recv()).await {
            Ok(Some((m, at))) => {
                began.insert(m, at);
            }
            _ => break,
        }
    }
    if began.len() < total {
        return Err(Error::Invalid(format!(
            "{} of {total} jobs never started",
            total - began.len()
        )));
    }
    Ok((WARM_UP.min(total)..total)
        .map(|n| {
            began[&n]
                .saturating_duration_since(committed[&n])
                .as_secs_f64()
                * 1000.0
        })
        .collect())
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, QUEUE).await?;
    let (tx, mut started) = mpsc::unbounded_channel();
    let mut app = Soniq::with_settings(db::worker_settings(&bench.settings, CONCURRENCY)?)?;
    app.job(TASK).queue(QUEUE).handler(move |args: Args, _| {
        let at = Instant::now();
        let tx = tx.clone();
        async move {
            let _ = tx.send((args.n, at));
            JobResult::Ok(Outcome::done())
        }
    })?;
    let options = WorkerOptions {
        concurrency: Some(CONCURRENCY),
        queues: Some(vec![QUEUE.into()]),
        run_once: false,
        max_jobs: None,
        monitor: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let total = WARM_UP + bench.plan.latency_jobs;
    let (worker, samples) = tokio::join!(
        app.run_worker_until(options, async {
            let _ = stopped.await;
        }),
        async {
            // Give the worker a moment to register and listen before the first job.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let samples = produce(bench, total, &mut started).await;
            let _ = stop.send(());
            samples
        }
    );
    worker?;
    let mut samples = samples?;
    db::clean_queue(&admin, QUEUE).await?;
    samples.sort_by(f64::total_cmp);
    let jobs = samples.len();
    let figures = [
        ("p50", 0.50, Some(0.5)),
        ("p99", 0.99, Some(2.0)),
        ("max", 1.0, None),
    ];
    for (name, q, target) in figures {
        let figure = Figure::new(
            SCENARIO,
            name,
            format!("enqueue committed to handler started, {name} of {jobs} jobs"),
            db::quantile(&samples, q),
            "ms",
        );
        bench.report.add(match target {
            Some(bound) => figure.target(Target::value_at_most(bound)),
            None => figure,
        });
    }
    Ok(())
}
