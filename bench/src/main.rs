//! `soniq-bench`: measure Soniq against hand-written yardsticks on the same database, in one
//! run, so every ratio compares figures taken minutes apart on the same machine. A program of
//! its own: its fixtures write tables, which the product's `soniq` command never does.
//!
//! One module per scenario; `report` holds the figures and prints them, `db` the shared
//! fixtures and cleanup, `header` what the figures were measured on. docs/benchmarks.md
//! says what each scenario measures and why.

mod awaiting;
mod churn;
mod dashboard;
mod db;
mod dependencies;
mod depth;
mod drain;
mod enqueue;
mod flow;
mod header;
mod latency;
mod limit;
mod report;
mod schedules;

use clap::{Args, Parser, ValueEnum};
use report::Report;
use soniq_runner::cli::mask_url;
use soniq_runner::cli::output::Output;
use soniq_runner::Settings;
use std::process::ExitCode;
use std::time::Instant;

/// The development cluster (`scripts/dev-cluster url`), used when no URL is given.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5488/soniq";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    Limit,
    Enqueue,
    Drain,
    Latency,
    Churn,
    Schedules,
    Dependencies,
    Awaiting,
    Depth,
    Flow,
    Dashboard,
}

#[derive(Parser)]
#[command(
    name = "soniq-bench",
    version,
    about = "Measure throughput and latency against hand-written yardsticks (default: the development cluster); leaves the database as it was"
)]
struct Cli {
    /// Database URL; overrides SONIQ_DATABASE_URL (default: the development cluster).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bench: BenchArgs,
}

/// Why a run stopped: said on stderr, exit status 1.
#[derive(Debug)]
pub struct Stopped(String);

impl From<soniq_runner::Error> for Stopped {
    fn from(e: soniq_runner::Error) -> Self {
        Stopped(e.to_string())
    }
}

type RunResult = Result<(), Stopped>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("start the async runtime");
    match runtime.block_on(start(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stopped(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The settings of the in-process workers: the `SONIQ_*` variables, with the database the flag
/// or SONIQ_DATABASE_URL names, else the development cluster.
async fn start(cli: Cli) -> RunResult {
    let url = cli
        .database_url
        .or_else(|| std::env::var("SONIQ_DATABASE_URL").ok())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    let settings = Settings::from_env()?
        .to_builder()
        .database_url(url)
        .build()?;
    run(settings, cli.bench, &Output::new(cli.json)).await
}

#[derive(Args)]
pub struct BenchArgs {
    /// Small counts: the whole run takes under a minute (CI runs it so the harness cannot rot).
    #[arg(long)]
    quick: bool,
    /// Run only this scenario (repeat for several; default all).
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    scenarios: Vec<Scenario>,
    /// Jobs per drain (default 100,000; --quick 2,000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(10..=10_000_000))]
    jobs: Option<u64>,
    /// Seconds of steady enqueue and drain in churn (default 120; --quick 10).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(3..=86_400))]
    duration: Option<u64>,
    /// Producer connections for enqueue (default 8; one is always measured too).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    clients: Option<u64>,
    /// Run the scenarios this many times, one round after the other, and report each figure's
    /// median round (by its ratio, which stays within one round; by value without a yardstick).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=9))]
    rounds: u64,
}

/// The counts and durations of a run.
pub struct Plan {
    pub quick: bool,
    /// Jobs per drain (batched modes).
    pub jobs: usize,
    /// Jobs per one-job-per-transaction drain (limit (a), drain at concurrency 1): a tenth
    /// of `jobs` but at least 1,000 (or all), since a durable commit per step makes them
    /// slow; the rate is what counts.
    pub single_jobs: usize,
    pub enqueue_seconds: f64,
    pub clients: usize,
    pub churn_seconds: f64,
    pub latency_jobs: usize,
    /// (queued, finished) jobs of each depth level.
    pub depth_levels: Vec<(usize, usize)>,
    pub depth_samples: usize,
    pub schedules: usize,
    /// Queued and done jobs of dashboard's backlog (a tenth as many dead).
    pub dashboard_rows: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let quick = args.quick;
        let jobs = args
            .jobs
            .map_or(if quick { 2_000 } else { 100_000 }, |n| n as usize);
        Plan {
            quick,
            jobs,
            single_jobs: (jobs / 10).max(jobs.min(1_000)),
            enqueue_seconds: if quick { 1.5 } else { 10.0 },
            clients: args.clients.unwrap_or(8) as usize,
            churn_seconds: args
                .duration
                .map_or(if quick { 10.0 } else { 120.0 }, |s| s as f64),
            latency_jobs: if quick { 100 } else { 500 },
            depth_levels: if quick {
                vec![(1_000, 0), (10_000, 0), (10_000, 10_000)]
            } else {
                vec![
                    (1_000, 0),
                    (100_000, 0),
                    (1_000_000, 0),
                    (1_000_000, 1_000_000),
                ]
            },
            depth_samples: if quick { 200 } else { 1_000 },
            schedules: if quick { 1_000 } else { 10_000 },
            dashboard_rows: if quick { 10_000 } else { 1_000_000 },
        }
    }
}

/// What every scenario gets: where to connect, the settings of in-process workers, the
/// plan, and the report it adds its figures to (and reads its yardsticks from).
pub struct Bench {
    pub url: String,
    pub settings: Settings,
    pub plan: Plan,
    pub control_plane: bool,
    pub report: Report,
    /// drain's best batched (concurrency, jobs/s), for churn.
    pub best_drain: Option<(usize, f64)>,
}

async fn run(settings: Settings, args: BenchArgs, out: &Output) -> RunResult {
    let plan = Plan::new(&args);
    let mut scenarios = if args.scenarios.is_empty() {
        Scenario::value_variants().to_vec()
    } else {
        args.scenarios.clone()
    };
    // The order of the enum: yardsticks before what is compared with them, and depth (the
    // biggest fixture) last so the table it bloats does not weigh on the others.
    scenarios.sort();
    scenarios.dedup();

    let url = settings.database_url().to_string();
    let admin = db::connect(&url)
        .await
        .map_err(|e| Stopped(format!("cannot connect to {}: {e}", mask_url(&url))))?;
    let control_plane = header::control_plane_serves(&admin).await?;
    let mut bench = Bench {
        url: url.clone(),
        settings,
        control_plane,
        report: Report::default(),
        best_drain: None,
        plan,
    };
    bench.report.header = header::header(&admin, &url, &bench.plan, control_plane).await?;
    let rounds = args.rounds as usize;
    if rounds > 1 {
        bench
            .report
            .header
            .push(("rounds".into(), serde_json::json!(rounds)));
    }
    let started = Instant::now();
    db::clean_all(&admin).await?;

    let outcome = tokio::select! {
        outcome = run_rounds(&mut bench, &scenarios, rounds) => outcome,
        _ = tokio::signal::ctrl_c() => {
            // A statement sent just before the interruption still commits on the server:
            // let it land before cleaning up after it.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            Err(Stopped("interrupted".into()))
        }
    };
    // Whatever happened, leave the database as it was.
    let cleaned = clean_up(&url).await;
    if let Err(e) = cleaned {
        eprintln!("bench: could not clean up ({e}); the next run of soniq-bench cleans first");
    }
    outcome?;
    bench.report.header.push((
        "load_average_at_end".into(),
        serde_json::json!(header::load_average()),
    ));
    bench.report.header.push((
        "elapsed_seconds".into(),
        serde_json::json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    ));
    bench.report.print(out);
    Ok(())
}

/// Delete everything the bench made, on a new connection (a restart of the server may have
/// ended the others and be under way: retried for a while).
async fn clean_up(url: &str) -> soniq_runner::Result<()> {
    let give_up = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let attempt = async { db::clean_all(&db::connect(url).await?).await }.await;
        match attempt {
            Err(_) if Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await
            }
            other => return other,
        }
    }
}

/// The scenarios `rounds` times; each round's figures compare with that round's yardsticks,
/// and the report keeps each figure's median round.
async fn run_rounds(bench: &mut Bench, scenarios: &[Scenario], rounds: usize) -> RunResult {
    let mut figures = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        if rounds > 1 {
            eprintln!("bench: round {round} of {rounds}");
        }
        bench.report.churn_samples.clear(); // the churn samples shown are the last round's
        run_scenarios(bench, scenarios).await?;
        figures.push(std::mem::take(&mut bench.report.figures));
    }
    bench.report.figures = report::median_rounds(figures);
    Ok(())
}

async fn run_scenarios(bench: &mut Bench, scenarios: &[Scenario]) -> RunResult {
    for scenario in scenarios {
        let name = scenario
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        eprintln!("bench: {name} ...");
        let started = Instant::now();
        let result = match scenario {
            Scenario::Limit => limit::run(bench).await,
            Scenario::Enqueue => enqueue::run(bench).await,
            Scenario::Drain => drain::run(bench).await,
            Scenario::Latency => latency::run(bench).await,
            Scenario::Churn => churn::run(bench).await,
            Scenario::Schedules => schedules::run(bench).await,
            Scenario::Dependencies => dependencies::run(bench).await,
            Scenario::Awaiting => awaiting::run(bench).await,
            Scenario::Depth => depth::run(bench).await,
            Scenario::Flow => flow::run(bench).await,
            Scenario::Dashboard => dashboard::run(bench).await,
        };
        result.map_err(|e| Stopped(format!("bench {name}: {e}")))?;
        let admin = db::connect(&bench.url).await?;
        match db::restore_jobs_table(&admin).await {
            Ok(true) => {}
            Ok(false) => bench.report.note(
                "soniq.jobs holds many other rows: its indexes were not rebuilt between scenarios and keep the bench's bloat",
            ),
            Err(e) => bench.report.note(format!(
                "soniq.jobs could not be vacuumed and reindexed between scenarios ({e}); later figures inherit its bloat"
            )),
        }
        eprintln!(
            "bench: {name} done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
