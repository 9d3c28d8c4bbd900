//! `soniq worker`: the handlers of this binary plus the command handlers of the jobs modules.

use super::output::Output;
use super::{CliResult, Failure, ModulesArg};
use crate::command_handlers::load_modules;
use crate::{Soniq, WorkerOptions};
use clap::Args;

#[derive(Args)]
pub struct WorkerArgs {
    /// Jobs run at once (overrides SONIQ_CONCURRENCY).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Comma-separated queues to serve (default: all).
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Run what is due, then exit.
    #[arg(long)]
    pub run_once: bool,
    #[command(flatten)]
    pub modules: ModulesArg,
}

pub async fn run(app: &mut Soniq, args: WorkerArgs, out: &Output) -> CliResult {
    load_modules(app, &args.modules.paths())?;
    if app.handlers.registry.tasks.is_empty() {
        return Err(Failure::usage(
            "no handlers: set SONIQ_JOBS_MODULES or pass --jobs-modules (TOML modules of command handlers)",
        ));
    }
    let options = WorkerOptions {
        concurrency: None, // --concurrency is in the settings (it also sizes the pool)
        queues: (!args.queues.is_empty()).then_some(args.queues),
        run_once: args.run_once,
        max_jobs: None,
    };
    let report = app.run_worker(options).await?;
    if out.json {
        out.print_json(
            &serde_json::json!({"jobs_run": report.jobs_run, "handed_back": report.handed_back}),
        );
    } else {
        println!(
            "worker stopped: {} jobs run, {} handed back",
            report.jobs_run, report.handed_back
        );
    }
    Ok(())
}
