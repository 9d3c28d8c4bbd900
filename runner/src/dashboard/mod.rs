//! `soniq dashboard`: a read-only web view of the queues, server-rendered, and `/metrics`
//! with the queues' gauges, so one scrape target shows the queues whoever runs the workers.
//! * [`counts`]: every queue's jobs by state, counted once per interval in the background;
//! * [`pages`]: the HTML (maud, no script);
//! * [`gauges`]: the Prometheus page.
//!
//! It reads through the operator's views (`queue_overview`, `health`, `worker_overview`), so a
//! `soniq_viewer` login is enough.

mod counts;
mod gauges;
mod pages;

use crate::store::postgres::admin;
use crate::Soniq;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use counts::Counts;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The shortest and longest interval between two counts.
pub const COUNT_INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;

pub struct DashboardOptions {
    /// Where the dashboard is mounted: "" (the root) or a path such as `/soniq`, for a reverse
    /// proxy that forwards that prefix.
    pub base_path: String,
    /// How often the queues are counted.
    pub count_interval: Duration,
}

/// A `--base-path` as the routes take it: "" for the root, else `/` and segments of letters,
/// digits and `-._~`, without a trailing slash.
pub fn base_path(text: &str) -> Result<String, String> {
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let well_formed = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
        });
    if !well_formed {
        return Err(format!(
            "'{text}' is not a base path: it starts with / and its segments are letters, digits and -._~ (e.g. /soniq)"
        ));
    }
    Ok(trimmed.to_string())
}

struct Dashboard {
    app: Arc<Soniq>,
    options: DashboardOptions,
    counts: watch::Receiver<Counts>,
}

/// The dashboard's routes under `options.base_path`; counting starts at once, in a task that
/// ends with the routes.
pub fn routes(app: Arc<Soniq>, options: DashboardOptions) -> Router {
    let counts = counts::keep_counting(Arc::clone(&app), options.count_interval);
    let base = options.base_path.clone();
    let mut router = Router::new()
        .route(&format!("{base}/"), get(overview))
        .route(&format!("{base}/metrics"), get(metrics))
        .route(&format!("{base}/healthz"), get(healthz));
    if !base.is_empty() {
        router = router.route(&base, get(overview));
    }
    router.with_state(Arc::new(Dashboard {
        app,
        options,
        counts,
    }))
}

/// What every page shows beside the counts: the control plane's rounds and the workers.
struct Liveness {
    health: Vec<admin::RoundHealth>,
    workers_alive: i64,
    workers_stale: i64,
}

impl Dashboard {
    async fn liveness(&self) -> crate::Result<Liveness> {
        let client = self.app.connection().await?;
        let (workers_alive, workers_stale) =
            admin::worker_counts(&**client, self.app.settings.heartbeat_timeout()).await?;
        Ok(Liveness {
            health: admin::health(&**client).await?,
            workers_alive,
            workers_stale,
        })
    }
}

fn unavailable(e: crate::Error) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::unavailable(&e.to_string()).into_string()),
    )
        .into_response()
}

async fn overview(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let liveness = match dashboard.liveness().await {
        Ok(liveness) => liveness,
        Err(e) => return unavailable(e),
    };
    let counts = dashboard.counts.borrow().clone();
    Html(pages::overview(&dashboard.options, &counts, &liveness).into_string()).into_response()
}

async fn metrics(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let liveness = match dashboard.liveness().await {
        Ok(liveness) => liveness,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    let counts = dashboard.counts.borrow().clone();
    match gauges::page(&counts, &liveness) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// 200 while the database answers.
async fn healthz(State(dashboard): State<Arc<Dashboard>>) -> (StatusCode, String) {
    let answered = async {
        let client = dashboard.app.connection().await?;
        client.simple_query("SELECT 1").await?;
        Ok::<_, crate::Error>(())
    };
    match answered.await {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database does not answer: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::base_path;

    #[test]
    fn a_base_path_is_normalized_or_refused_with_the_reason() {
        assert_eq!(base_path("").unwrap(), "");
        assert_eq!(base_path("/").unwrap(), "");
        assert_eq!(base_path("/soniq/").unwrap(), "/soniq");
        assert_eq!(base_path("/ops/soniq-1.x").unwrap(), "/ops/soniq-1.x");
        for bad in ["soniq", "/a//b", "/a b", "/<script>", "/a?b"] {
            let refused = base_path(bad).unwrap_err();
            assert!(refused.contains("is not a base path"), "{refused}");
        }
    }
}
