//! The runner process of the fault suite (runner/tests/faults.rs): it runs `fault.record`
//! jobs of one queue, each writing a row (job id, attempt, pid) to `soniq_faults.runs` before it
//! completes, so a test can count how often every job ran across kills and restarts.
//!
//!   SONIQ_DATABASE_URL=... SONIQ_CONCURRENCY=32 cargo run -p soniq-runner --example fault_worker -- QUEUE
//!
//! The table is the test's (it creates it); a failed write fails the attempt, which is retried.
//! The write goes out unnamed (`query_typed`), so it works behind PgBouncer in transaction
//! mode too.

use serde_json::Value;
use soniq_runner::{ConnectionConfig, JobContext, JobError, Outcome, Soniq, WorkerOptions};
use std::time::Duration;
use tokio_postgres::types::Type;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let queue = std::env::args().nth(1).ok_or("usage: fault_worker QUEUE")?;
    let mut soniq = Soniq::from_env()?;
    // Handlers wait their turn for one of 8 connections: 4 runners x 32 must not run the
    // server out of connections.
    let side_effects = ConnectionConfig::parse(soniq.settings().database_url())?.pool(8)?;
    let pid = i32::try_from(std::process::id())?;

    soniq
        .job("fault.record")
        .queue(&queue)
        .retries(50) // restarts fail attempts; none of them may run the job out of attempts
        .retry_delay([Duration::from_millis(200)])
        .result_ttl(Duration::from_secs(86_400)) // kept for the test's count, never pruned mid-run
        .handler(move |_args: Value, ctx: JobContext| {
            let side_effects = side_effects.clone();
            async move {
                let client = side_effects
                    .get()
                    .await
                    .map_err(|e| JobError::new(e.to_string()))?;
                client
                    .query_typed(
                        "INSERT INTO soniq_faults.runs (job_id, attempt, pid) VALUES ($1, $2, $3)",
                        &[
                            (&ctx.job_id, Type::UUID),
                            (&ctx.attempt, Type::INT4),
                            (&pid, Type::INT4),
                        ],
                    )
                    .await?;
                Ok(Outcome::done())
            }
        })?;
    soniq
        .run_worker(WorkerOptions {
            queues: Some(vec![queue]),
            ..WorkerOptions::default()
        })
        .await?;
    Ok(())
}
