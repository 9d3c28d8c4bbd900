//! `soniq worker`: the handlers of this binary plus the command handlers of the jobs modules.

use super::output::Output;
use super::{CliResult, Failure, ModulesArg};
use crate::command_handlers::load_modules;
use crate::{PrometheusMetrics, Soniq, WorkerMonitor, WorkerOptions};
use clap::Args;
use std::net::SocketAddr;

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
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 127.0.0.1:9090
    /// (port 0: any free port, logged at start).
    #[arg(long, env = "SONIQ_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
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
    let monitor = WorkerMonitor::new();
    let endpoints = match args.metrics_listen {
        Some(address) => Some(serve_endpoints(app, address, &monitor).await?),
        None => None,
    };
    let options = WorkerOptions {
        concurrency: None, // --concurrency is in the settings (it also sizes the pool)
        queues: (!args.queues.is_empty()).then_some(args.queues),
        run_once: args.run_once,
        max_jobs: None,
        monitor: Some(monitor),
    };
    let report = app.run_worker(options).await;
    if let Some(endpoints) = endpoints {
        endpoints.abort();
    }
    let report = report?;
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

/// Listen on `address` and serve the worker's endpoints (`crate::endpoints`) from a task of
/// their own, recording attempts in a Prometheus registry.
async fn serve_endpoints(
    app: &mut Soniq,
    address: SocketAddr,
    monitor: &WorkerMonitor,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    if app.handlers.metrics.is_some() {
        return Err(Failure::usage(
            "this binary reports metrics to a sink of its own, which --metrics-listen would \
             replace: serve them from the application (soniq_runner::endpoints)",
        ));
    }
    let registry = prometheus::Registry::new();
    let sink =
        PrometheusMetrics::new(&registry).map_err(|e| Failure::new(format!("metrics: {e}")))?;
    let routes = crate::endpoints::worker_routes(registry, monitor.clone())
        .map_err(|e| Failure::new(format!("metrics: {e}")))?;
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        Failure::new(format!(
            "cannot listen on {address} (--metrics-listen): {e}"
        ))
    })?;
    let bound = listener.local_addr().map_err(|e| {
        Failure::new(format!(
            "cannot listen on {address} (--metrics-listen): {e}"
        ))
    })?;
    app.metrics_sink(sink);
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes).await {
            tracing::error!("the metrics endpoints stopped: {e}");
        }
    }))
}
