//! `soniq dashboard`: a read-only web view of the queues, server-rendered, and `/metrics`
//! with the queues' gauges, so one scrape target shows the queues whoever runs the workers.
//! * [`counts`]: every queue's jobs by state, counted once per interval in the background;
//! * the pages, one module each: [`overview`], [`jobs`] (the list and a job's page),
//!   [`dead_letter`], [`schedules`], [`workers`]; [`html`] is what they share (maud, no
//!   script) and [`params`] checks their query strings;
//! * [`gauges`]: the Prometheus page.
//!
//! It reads the operator's views and the tables (`crate::store::postgres::browse`), so a
//! `soniq_viewer` login is enough.

mod actions;
mod assets;
mod chart;
mod counts;
mod dead_letter;
mod gauges;
mod html;
mod jobs;
mod overview;
mod params;
mod schedules;
mod session;
mod workers;

pub use session::{Guard, MIN_PASSWORD_LEN};

use crate::store::postgres::admin;
use crate::Soniq;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
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
    /// Actions (pause, replay, ...) for whoever gives this guard's password; `None`: the
    /// dashboard only reads.
    pub actions: Option<Guard>,
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
        .route(&format!("{base}/"), get(overview::page))
        .route(&format!("{base}/jobs"), get(jobs::list))
        .route(&format!("{base}/jobs/{{id}}"), get(jobs::show))
        .route(&format!("{base}/dead-letter"), get(dead_letter::list))
        .route(&format!("{base}/schedules"), get(schedules::list))
        .route(&format!("{base}/workers"), get(workers::list))
        .route(&format!("{base}/events"), get(overview::events))
        .route(&format!("{base}/assets/{{name}}"), get(assets::serve))
        .route(&format!("{base}/metrics"), get(metrics))
        .route(&format!("{base}/healthz"), get(healthz));
    if !base.is_empty() {
        router = router.route(&base, get(overview::page));
    }
    router = actions::routes(router, &base);
    router
        .fallback(|| async { PageError::NotFound("There is no such page.".into()) })
        .layer(middleware::map_response_with_state(
            Arc::<str>::from(base),
            render_error_page,
        ))
        .with_state(Arc::new(Dashboard {
            app,
            options,
            counts,
        }))
}

/// Why a page is not shown, as the page that says so.
#[derive(Debug)]
pub enum PageError {
    /// A parameter is malformed or unknown: the message says which and why.
    BadRequest(String),
    NotFound(String),
    /// An action refused: actions off, no session, a missing or wrong CSRF token, a login
    /// without the rights.
    Forbidden(String),
    /// An action's premise changed (the set to replay is no longer the one confirmed).
    Conflict(String),
    /// The database could not be read.
    Unavailable(crate::Error),
}

impl From<crate::Error> for PageError {
    /// The database's refusals keep their meaning: no rights (42501) is a 403, bad input a
    /// 400, a name or id it does not know a 404.
    fn from(e: crate::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.sqlstate() {
            Some(SqlState::INSUFFICIENT_PRIVILEGE) => PageError::Forbidden(format!(
                "The dashboard's database login may not do this ({e}): actions need a login with soniq_admin."
            )),
            Some(
                SqlState::INVALID_PARAMETER_VALUE
                | SqlState::NULL_VALUE_NOT_ALLOWED
                | SqlState::PROGRAM_LIMIT_EXCEEDED,
            ) => {
                PageError::BadRequest(e.to_string())
            }
            Some(SqlState::NO_DATA_FOUND) => PageError::NotFound(e.to_string()),
            _ => PageError::Unavailable(e),
        }
    }
}

/// An error page still to be drawn: the handler that fails does not know the base path the
/// navigation links need, the layer that draws it does.
#[derive(Clone)]
struct ErrorPage {
    title: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::BadRequest(message) => (StatusCode::BAD_REQUEST, "Bad request", message),
            PageError::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message),
            PageError::Forbidden(message) => (StatusCode::FORBIDDEN, "Not allowed", message),
            PageError::Conflict(message) => (StatusCode::CONFLICT, "Changed meanwhile", message),
            PageError::Unavailable(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                format!("The database cannot be read: {e}"),
            ),
        };
        (status, Extension(ErrorPage { title, message })).into_response()
    }
}

async fn render_error_page(State(base): State<Arc<str>>, mut response: Response) -> Response {
    match response.extensions_mut().remove::<ErrorPage>() {
        Some(page) => (
            response.status(),
            Html(html::error_page(&base, page.title, &page.message).into_string()),
        )
            .into_response(),
        None => response,
    }
}

/// What every page shows beside the counts: the control plane's rounds and the workers.
struct Liveness {
    health: Vec<admin::RoundHealth>,
    workers_alive: i64,
    workers_stale: i64,
}

impl Dashboard {
    /// The viewer of a request: signed in or not, by its session cookie.
    fn viewer(&self, headers: &HeaderMap) -> html::Viewer {
        let actions = match &self.options.actions {
            None => html::Actions::Off,
            Some(guard) => match guard.session(cookie_header(headers)) {
                Some(session) => html::Actions::LoggedIn {
                    csrf: guard.csrf_token(&session),
                },
                None => html::Actions::LoggedOut,
            },
        };
        html::Viewer {
            base: self.options.base_path.clone(),
            actions,
        }
    }

    async fn liveness(
        &self,
        client: &impl tokio_postgres::GenericClient,
    ) -> crate::Result<Liveness> {
        let (workers_alive, workers_stale) =
            admin::worker_counts(client, self.app.settings.heartbeat_timeout()).await?;
        Ok(Liveness {
            health: admin::health(client).await?,
            workers_alive,
            workers_stale,
        })
    }
}

/// A read-only REPEATABLE READ transaction, so that the reads of one page (a keyset page and
/// where its scan ended) see the same rows.
async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> crate::Result<deadpool_postgres::Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

fn cookie_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
}

async fn metrics(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let liveness = async {
        let client = dashboard.app.connection().await?;
        dashboard.liveness(&**client).await
    };
    let liveness = match liveness.await {
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
