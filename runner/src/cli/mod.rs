//! The `soniq` command. The stock binary runs command handlers declared in TOML modules; a
//! Rust application gets every command with its own handlers from one call:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     soniq_runner::cli::main_with(|settings| {
//!         let mut app = soniq_runner::Soniq::with_settings(settings)?;
//!         // app.job("...").handler(...)?;
//!         Ok(app)
//!     })
//! }
//! ```
//!
//! Exit status: 0 success, 1 failure, 2 usage (a bad flag, environment variable or module).

mod admin;
mod batch;
mod dashboard;
mod dead_letter;
mod enqueue_file;
mod logs;
pub mod output;
mod queue;
mod schedule;
mod worker;

use crate::error::Error;
use crate::settings::{check_concurrency, RawSettings};
use crate::{Settings, Soniq};
use clap::{Args, Parser, Subcommand};
use output::Output;
use std::process::ExitCode;
use uuid::Uuid;

pub use output::mask_url;

#[derive(Parser)]
#[command(
    name = "soniq",
    version,
    about = "Soniq: a background job queue inside PostgreSQL"
)]
struct Cli {
    /// Database URL; overrides SONIQ_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Print JSON instead of tables (read commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database if missing, install or update the extension, check the control
    /// plane, and publish the task options of the jobs modules.
    Setup(ModulesArg),
    /// Run a worker: the handlers of this binary and of the jobs modules.
    Worker(worker::WorkerArgs),
    /// Serve a read-only web view of the queues and their Prometheus metrics.
    Dashboard(dashboard::DashboardArgs),
    /// Look at and act on dead jobs.
    #[command(subcommand)]
    DeadLetter(dead_letter::DeadLetterCommand),
    /// Periodic jobs.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Queues: flow control (limits, fair share), pause and resume.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Batches of jobs with a callback: open, close, status.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Queue counts, workers alive and stale, the control plane's health.
    Status,
    /// One job, also a dead one.
    Inspect { id: Uuid },
    /// Enqueue a job by task name.
    Enqueue(admin::EnqueueArgs),
    /// Cancel a job (a running one is stopped by its worker at its next heartbeat).
    Cancel { id: Uuid },
    /// Jobs by queue and state.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Newest first.
    List(admin::JobsListArgs),
}

/// `--jobs-modules`: TOML modules of command handlers, added to SONIQ_JOBS_MODULES.
#[derive(Args, Default)]
pub struct ModulesArg {
    /// Comma-separated TOML jobs modules, added to SONIQ_JOBS_MODULES.
    #[arg(long, value_delimiter = ',')]
    pub jobs_modules: Vec<String>,
}

impl ModulesArg {
    /// The modules named by SONIQ_JOBS_MODULES (put first by `settings_for`), then by the flag.
    fn paths(&self) -> Vec<String> {
        self.jobs_modules.clone()
    }

    /// Load the modules' handlers into `app` and publish their options (a deploy can do this
    /// before the first enqueue; jobs enqueued earlier follow the options all the same).
    async fn publish(&self, app: &mut Soniq) -> Result<usize, Failure> {
        let modules = self.paths();
        crate::command_handlers::load_modules(app, &modules)?;
        app.publish_tasks().await?;
        Ok(app.handlers.registry.tasks.len())
    }
}

/// The `--args` flag: a JSON object (a usage error otherwise).
fn args_object(text: &str) -> Result<serde_json::Value, Failure> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(value) => Err(Failure::usage(format!(
            "--args must be a JSON object, got {value}"
        ))),
        Err(e) => Err(Failure::usage(format!("--args must be a JSON object: {e}"))),
    }
}

/// One connection of its own, driven in the background.
pub async fn connect(url: &str) -> crate::Result<tokio_postgres::Client> {
    Ok(crate::ConnectionConfig::parse(url)?.connect().await?)
}

/// Filters shared by the dead-letter commands.
#[derive(Args, Clone, Default)]
struct DeadFilter {
    /// Only this task name.
    #[arg(long = "task")]
    task: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    /// max_retries_exceeded, permanent_failure, job_not_found, invalid_arguments, timeout or manual_move.
    #[arg(long)]
    reason: Option<String>,
    /// Only jobs that died within this many hours.
    #[arg(long, value_name = "HOURS")]
    since_hours: Option<f64>,
    /// Only jobs carrying this tag (repeat for several).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only jobs replayed at least once.
    #[arg(long, conflicts_with = "not_replayed")]
    replayed: bool,
    /// Only jobs never replayed.
    #[arg(long)]
    not_replayed: bool,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: i32,
}

/// A failure to report: its message and exit status.
#[derive(Debug)]
struct Failure {
    message: String,
    status: u8,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = if matches!(e, Error::Config(_)) { 2 } else { 1 };
        Failure {
            message: e.to_string(),
            status,
        }
    }
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            status: 1,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            status: 2,
        }
    }
}

type CliResult = Result<(), Failure>;

/// Parse the command line and run the command with the application `build` makes from the
/// settings (`SONIQ_*` variables, overridden by flags).
pub fn main_with(build: impl FnOnce(Settings) -> crate::Result<Soniq>) -> ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropped, it sends the last traces.
    let _log = match logs::install() {
        Ok(installed) => installed,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            return ExitCode::from(failure.status);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    match runtime.block_on(run(cli, build)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

async fn run(mut cli: Cli, build: impl FnOnce(Settings) -> crate::Result<Soniq>) -> CliResult {
    let settings = settings_for(&mut cli, RawSettings::from_env())?;
    let named = mask_url(settings.database_url());
    // A failed connection says which server it tried (the driver's message does not).
    dispatch(cli, settings, build).await.map_err(|failure| {
        if failure.message.contains("error connecting to server")
            && !failure.message.contains(&named)
        {
            Failure {
                message: format!("{} (database {named})", failure.message),
                ..failure
            }
        } else {
            failure
        }
    })
}

/// This command's settings: the environment, read once, with the flags laid over it, then
/// validated as a whole (a bad value is a usage error, status 2). The modules of
/// SONIQ_JOBS_MODULES go before the command's `--jobs-modules`.
fn settings_for(cli: &mut Cli, mut raw: RawSettings) -> Result<Settings, Failure> {
    if let Some(url) = &cli.database_url {
        raw.database_url = Some(url.clone());
    }
    let from_env = raw.jobs_modules();
    let modules = match &mut cli.command {
        Command::Worker(args) => Some(&mut args.modules),
        Command::Setup(modules) => Some(modules),
        Command::Enqueue(args) => Some(&mut args.modules),
        _ => None,
    };
    if let Some(modules) = modules {
        modules.jobs_modules.splice(0..0, from_env);
    }
    match &cli.command {
        // A producer that knows task names, not handlers: by default it lets names through
        // that this process has no handler for (they still follow the pattern).
        Command::Enqueue(_) => {
            raw.enqueue_validation.get_or_insert_with(|| "none".into());
        }
        Command::Worker(args) => {
            if let Some(concurrency) = args.concurrency {
                check_concurrency("--concurrency", concurrency)
                    .map_err(|e| Failure::usage(e.to_string()))?;
                raw.concurrency = Some(concurrency.to_string());
            }
        }
        _ => {}
    }
    Ok(raw.validate()?)
}

async fn dispatch(
    cli: Cli,
    settings: Settings,
    build: impl FnOnce(Settings) -> crate::Result<Soniq>,
) -> CliResult {
    let out = Output::new(cli.json);
    if let Command::Setup(modules) = &cli.command {
        admin::setup(&settings, &out).await?;
        if !modules.paths().is_empty() {
            let published = modules.publish(&mut build(settings)?).await?;
            if !out.json {
                println!("published the options of {published} tasks");
            }
        }
        return Ok(());
    }
    let mut app = build(settings)?;
    if let Command::Enqueue(args) = &cli.command {
        args.modules.publish(&mut app).await?;
    }
    match cli.command {
        Command::Setup(_) => unreachable!("handled above"),
        Command::Worker(args) => worker::run(&mut app, args, &out).await,
        Command::Dashboard(args) => dashboard::run(app, args).await,
        Command::DeadLetter(command) => dead_letter::run(&app, command, &out).await,
        Command::Schedule(command) => schedule::run(&app, command, &out).await,
        Command::Queue(command) => queue::run(&app, command, &out).await,
        Command::Batch(command) => batch::run(&app, command, &out).await,
        Command::Status => admin::status(&app, &out).await,
        Command::Inspect { id } => admin::inspect(&app, id, &out).await,
        Command::Enqueue(args) => admin::enqueue(&app, args, &out).await,
        Command::Cancel { id } => admin::cancel(&app, id).await,
        Command::Jobs(JobsCommand::List(args)) => admin::jobs_list(&app, args, &out).await,
    }
}

/// Format a time for people (RFC 3339, seconds).
fn time(t: Option<std::time::SystemTime>) -> String {
    t.and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| {
            t.round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default()
        })
        .unwrap_or_else(|| "-".into())
}
