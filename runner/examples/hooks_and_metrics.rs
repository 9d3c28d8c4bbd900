//! Hooks feeding `tracing`, and Prometheus metrics (feature `prometheus`).
//!
//! ```sh
//! SONIQ_DATABASE_URL=postgres://postgres@localhost:5488/soniq \
//!     cargo run -p soniq-runner --features prometheus --example hooks_and_metrics
//! ```

use serde::{Deserialize, Serialize};
use soniq_runner::{
    JobContext, JobError, JobResult, Outcome, PrometheusMetrics, Soniq, WorkerOptions,
};

#[derive(Serialize, Deserialize)]
struct Work {
    n: u32,
}

#[tokio::main]
async fn main() -> soniq_runner::Result<()> {
    tracing_subscriber::fmt().init();
    let mut app = Soniq::from_env()?;
    app.before_job(
        |e| tracing::info!(job = %e.job_id, name = %e.task_name, attempt = e.attempt, "job started"),
    );
    app.after_job(|e| tracing::info!(job = %e.job_id, duration_ms = e.duration_ms, "job done"));
    app.on_error(
        |e| tracing::warn!(job = %e.job_id, error = %e.error, attempt = e.attempt, "job failed"),
    );
    let registry = prometheus::Registry::new();
    app.metrics_sink(PrometheusMetrics::new(&registry).expect("register the metrics"));
    let work = app
        .job("examples.work")
        .queue("examples")
        .retries(1)
        .handler(|work: Work, _ctx: JobContext| async move {
            if work.n.is_multiple_of(3) {
                return Err(JobError::new(format!("{} is a multiple of three", work.n)));
            }
            JobResult::Ok(Outcome::done())
        })?;
    app.enqueue_many(&work, (1..=6).map(|n| Work { n })).await?;
    let options = WorkerOptions {
        queues: Some(vec!["examples".into()]),
        run_once: true,
        ..WorkerOptions::default()
    };
    app.run_worker(options).await?;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    println!("{text}");
    Ok(())
}
