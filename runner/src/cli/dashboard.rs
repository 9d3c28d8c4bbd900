//! `soniq dashboard`: serve the dashboard and the queues' metrics; with `--actions`, the
//! operator who gives `SONIQ_DASHBOARD_PASSWORD` may act.

use super::{CliResult, Failure};
use crate::dashboard::{self, DashboardOptions, Guard, COUNT_INTERVAL_RANGE};
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
    /// Let an operator who logs in with the password in SONIQ_DASHBOARD_PASSWORD pause and
    /// resume queues and schedules and replay, delete and tag dead jobs (the database login
    /// needs soniq_admin for them).
    #[arg(long)]
    pub actions: bool,
}

/// The variable that holds the password of `--actions` (never a flag: a command line is
/// visible to every user of the machine).
const PASSWORD_VARIABLE: &str = "SONIQ_DASHBOARD_PASSWORD";

pub async fn run(app: Soniq, args: DashboardArgs) -> CliResult {
    let actions = if args.actions {
        let password = std::env::var(PASSWORD_VARIABLE).map_err(|_| {
            Failure::usage(format!(
                "--actions needs the password in {PASSWORD_VARIABLE}"
            ))
        })?;
        Some(
            Guard::new(&password)
                .map_err(|e| Failure::usage(format!("{PASSWORD_VARIABLE}: {e}")))?,
        )
    } else {
        None
    };
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
        actions,
    };
    tracing::info!(
        address = %bound,
        base_path = %options.base_path,
        count_interval_s = args.count_interval,
        actions = args.actions,
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
