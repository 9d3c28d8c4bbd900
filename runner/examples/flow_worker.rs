//! The runner process of the flow-control tests (runner/tests/flow.rs): it runs `flow.hold`
//! jobs of one queue, each attempt recording when its handler began and ended in `soniq_flow.runs`
//! and holding for `hold_ms` of its args in between, so a test can count how many ran at once
//! across processes. Its task's concurrency key is the args' `tenant`.
//!
//!   SONIQ_DATABASE_URL=... SONIQ_CONCURRENCY=32 cargo run -p soniq-runner --example flow_worker -- QUEUE
//!
//! The table is the test's (it creates it).

use serde::Deserialize;
use soniq_runner::{ConnectionConfig, JobContext, JobError, Outcome, Soniq, WorkerOptions};
use std::time::Duration;
use tokio_postgres::types::Type;

#[derive(Deserialize, serde::Serialize)]
struct Hold {
    hold_ms: u64,
}

async fn record(
    records: &deadpool_postgres::Pool,
    ctx: &JobContext,
    statement: &str,
) -> Result<(), JobError> {
    let client = records
        .get()
        .await
        .map_err(|e| JobError::new(e.to_string()))?;
    client
        .query_typed(
            statement,
            &[(&ctx.job_id, Type::UUID), (&ctx.attempt, Type::INT4)],
        )
        .await
        .map_err(|e| JobError::new(e.to_string()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let queue = std::env::args().nth(1).ok_or("usage: flow_worker QUEUE")?;
    let mut soniq = Soniq::from_env()?;
    // 4 runners x 32 handlers share 4 x 8 connections for their records.
    let records = ConnectionConfig::parse(soniq.settings().database_url())?.pool(8)?;

    soniq
        .job("flow.hold")
        .queue(&queue)
        .concurrency_key("tenant")
        .result_ttl(Duration::from_secs(86_400)) // kept for the test's count
        .handler(move |hold: Hold, ctx: JobContext| {
            let records = records.clone();
            async move {
                // Begun once the lease is held, ended before the outcome is sent: each run's
                // span lies inside the time its job was processing. No connection is held
                // while the handler holds.
                record(&records, &ctx, "INSERT INTO soniq_flow.runs (job_id, attempt, began) VALUES ($1, $2, clock_timestamp())").await?;
                tokio::time::sleep(Duration::from_millis(hold.hold_ms)).await;
                record(&records, &ctx, "UPDATE soniq_flow.runs SET ended = clock_timestamp() WHERE job_id = $1 AND attempt = $2").await?;
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
