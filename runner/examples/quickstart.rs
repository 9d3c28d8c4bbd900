//! The quickstart: a `send_welcome` job, enqueued from one process and run by a worker.
//!
//! ```sh
//! export SONIQ_DATABASE_URL=postgres://postgres@localhost:5488/soniq   # scripts/dev-cluster up
//! cargo run -p soniq-runner --example quickstart -- enqueue dev@example.com
//! cargo run -p soniq-runner --example quickstart -- worker            # Ctrl-C to stop
//! ```
//!
//! `enqueue-slow SECONDS` enqueues a job that takes that long (the signal tests use it);
//! `worker --run-once` runs what is due and exits.

use serde::{Deserialize, Serialize};
use soniq_runner::{JobContext, JobResult, Outcome, Soniq, Task, WorkerOptions};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Welcome {
    to: String,
}

#[derive(Serialize, Deserialize)]
struct Slow {
    seconds: u64,
}

fn app() -> soniq_runner::Result<(Soniq, Task<Welcome>, Task<Slow>)> {
    let mut app = Soniq::from_env()?;
    let send_welcome = app
        .job("quickstart.send_welcome")
        .queue("quickstart")
        .handler(|args: Welcome, ctx: JobContext| async move {
            println!(
                "Sending welcome email to {} (attempt {})",
                args.to, ctx.attempt
            );
            JobResult::Ok(Outcome::done())
        })?;
    let slow = app
        .job("quickstart.slow")
        .queue("quickstart")
        .retries(1)
        .handler(|args: Slow, _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            JobResult::Ok(Outcome::done())
        })?;
    Ok((app, send_welcome, slow))
}

#[tokio::main]
async fn main() -> soniq_runner::Result<()> {
    let (app, send_welcome, slow) = app()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["enqueue", to] => {
            let id = app
                .enqueue(&send_welcome, Welcome { to: to.to_string() })
                .await?;
            println!("{id}");
        }
        ["enqueue-slow", seconds] => {
            let seconds = seconds.parse().expect("SECONDS is a whole number");
            println!("{}", app.enqueue(&slow, Slow { seconds }).await?);
        }
        ["worker", rest @ ..] => {
            let run_once = rest.contains(&"--run-once");
            let options = WorkerOptions {
                queues: Some(vec!["quickstart".into()]),
                run_once,
                ..WorkerOptions::default()
            };
            let report = app.run_worker(options).await?;
            println!(
                "worker stopped: {} jobs run, {} handed back",
                report.jobs_run, report.handed_back
            );
        }
        _ => {
            eprintln!(
                "usage: quickstart enqueue ADDRESS | enqueue-slow SECONDS | worker [--run-once]"
            );
            std::process::exit(2);
        }
    }
    Ok(())
}
