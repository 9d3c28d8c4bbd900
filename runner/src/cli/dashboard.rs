//! `soniq dashboard`: serve the read-only dashboard and the queues' metrics.

use super::{CliResult, Failure};
use crate::dashboard::{self, DashboardOptions, COUNT_INTERVAL_RANGE};
use crate::Soniq;
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct DashboardArgs {
    /// The address to serve on (loopback by default: put a proxy in front to reach it from
    /// elsewhere; port 0 takes any free port, logged at start).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The path the dashboard is mounted at behind a reverse proxy, e.g. /soniq.
    #[arg(long, default_value = "", value_parser = dashboard::base_path)]
    pub base_path: String,
    /// Seconds between two counts of the queues (each reads the jobs table once).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(*COUNT_INTERVAL_RANGE.start()..=*COUNT_INTERVAL_RANGE.end()))]
    pub count_interval: u64,
}

pub async fn run(app: Soniq, args: DashboardArgs) -> CliResult {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::new(format!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(format!("cannot listen on {}: {e}", args.listen)))?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            address = %bound,
            "the dashboard is served beyond this machine: whoever reaches it reads every job's \
             arguments and results (put it behind a proxy with authentication)"
        );
    }
    let options = DashboardOptions {
        base_path: args.base_path,
        count_interval: Duration::from_secs(args.count_interval),
    };
    tracing::info!(
        address = %bound,
        base_path = %options.base_path,
        count_interval_s = args.count_interval,
        "serving the dashboard"
    );
    let routes = dashboard::routes(Arc::new(app), options);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, routes)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| Failure::new(format!("the dashboard stopped: {e}")))
}
