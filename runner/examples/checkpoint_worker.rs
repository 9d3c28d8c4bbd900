//! The runner process of the checkpoint test (runner/tests/progress.rs): it runs `resume.count`
//! jobs of one queue, which count from where the job's checkpoint says to `to` of their args, a
//! step every `step_ms`, saving a checkpoint and reporting progress at each step. The result
//! says where the attempt began, so a test that kills this process mid-job can see the next
//! attempt resume instead of restart.
//!
//!   SONIQ_DATABASE_URL=... cargo run -p soniq-runner --example checkpoint_worker -- QUEUE

use serde::{Deserialize, Serialize};
use serde_json::json;
use soniq_runner::{JobContext, Outcome, Soniq, WorkerOptions};
use std::time::Duration;

#[derive(Deserialize, Serialize)]
struct Count {
    to: u64,
    step_ms: u64,
}

#[derive(Deserialize, Serialize)]
struct Reached {
    at: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let queue = std::env::args()
        .nth(1)
        .ok_or("usage: checkpoint_worker QUEUE")?;
    let mut soniq = Soniq::from_env()?;
    soniq.job("resume.count").queue(&queue).handler(
        |count: Count, ctx: JobContext| async move {
            let began = ctx.checkpoint::<Reached>().await?.map_or(0, |r| r.at);
            for at in began + 1..=count.to {
                tokio::time::sleep(Duration::from_millis(count.step_ms)).await;
                ctx.save_checkpoint(Reached { at }).await?;
                ctx.report_progress(json!({ "at": at, "of": count.to }))
                    .await?;
            }
            Outcome::done_with(json!({ "began_at": began, "attempt": ctx.attempt }))
        },
    )?;
    soniq
        .run_worker(WorkerOptions {
            queues: Some(vec![queue]),
            ..WorkerOptions::default()
        })
        .await?;
    Ok(())
}
