//! Periodic jobs: declared with the handler, fired by the extension's background worker
//! (no scheduler process), run by any worker.
//!
//! ```sh
//! SONIQ_DATABASE_URL=postgres://postgres@localhost:5488/soniq cargo run -p soniq-runner --example periodic
//! ```

use serde::{Deserialize, Serialize};
use soniq_runner::dsl::{daily, every};
use soniq_runner::{JobContext, JobResult, Outcome, ScheduleSpec, Soniq, WorkerOptions};

#[derive(Serialize, Deserialize)]
struct NoArgs {}

#[tokio::main]
async fn main() -> soniq_runner::Result<()> {
    let mut app = Soniq::from_env()?;
    app.job("periodic.flush_metrics")
        .periodic(every(10).seconds()?)
        .handler(|_: NoArgs, ctx: JobContext| async move {
            println!("flushing metrics (fire time {:?})", ctx.scheduled_at);
            JobResult::Ok(Outcome::done())
        })?;
    app.job("periodic.daily_report")
        .periodic(daily().at("09:00")?)
        .handler(|_: NoArgs, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })?;
    // Schedules computed at run time go through the scheduler API.
    app.scheduler()
        .add(
            &ScheduleSpec::new("periodic.daily_report", daily().at("18:00")?)
                .name("periodic.evening_report"),
        )
        .await?;
    for schedule in app.scheduler().list(None).await? {
        println!("{}: next at {:?}", schedule.name, schedule.next_fire_at);
    }
    app.run_worker(WorkerOptions::default()).await?;
    Ok(())
}
