//! A worker's HTTP endpoints, for Prometheus and for a process supervisor or Kubernetes:
//! * `/metrics`: the registry's metrics in Prometheus text, with the worker's gauges read at
//!   the scrape (`soniq_worker_slots{state="busy"|"free"}`, `soniq_worker_jobs_claimed_ahead`,
//!   `soniq_worker_outcome_backlog`, `soniq_worker_ready`);
//! * `/healthz`: 200 while the worker runs (draining included), 503 once it stopped;
//! * `/readyz`: 200 once registered and while its claims reach the database; 503 before,
//!   while disconnected, and from the moment shutdown begins.
//!
//! `soniq worker --metrics-listen ADDR` serves them; an application running a worker can
//! mount [`worker_routes`] in its own server instead.

use crate::worker::{WorkerMonitor, WorkerSnapshot, WorkerState};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;

/// The worker's gauges, set from its monitor at each scrape.
struct WorkerGauges {
    slots: IntGaugeVec,
    claimed_ahead: IntGauge,
    outcome_backlog: IntGauge,
    ready: IntGauge,
}

impl WorkerGauges {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let gauges = WorkerGauges {
            slots: IntGaugeVec::new(
                Opts::new(
                    "soniq_worker_slots",
                    "Job slots, busy (a handler runs) or free",
                ),
                &["state"],
            )?,
            claimed_ahead: IntGauge::new(
                "soniq_worker_jobs_claimed_ahead",
                "Jobs claimed ahead, waiting for a job slot",
            )?,
            outcome_backlog: IntGauge::new(
                "soniq_worker_outcome_backlog",
                "Finished attempts whose outcomes are not recorded yet",
            )?,
            ready: IntGauge::new(
                "soniq_worker_ready",
                "1 while the worker is registered, connected and not draining",
            )?,
        };
        registry.register(Box::new(gauges.slots.clone()))?;
        registry.register(Box::new(gauges.claimed_ahead.clone()))?;
        registry.register(Box::new(gauges.outcome_backlog.clone()))?;
        registry.register(Box::new(gauges.ready.clone()))?;
        Ok(gauges)
    }

    fn set(&self, now: &WorkerSnapshot) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.slots
            .with_label_values(&["busy"])
            .set(gauge(now.running));
        self.slots
            .with_label_values(&["free"])
            .set(gauge(now.concurrency.saturating_sub(now.running)));
        self.claimed_ahead.set(gauge(now.claimed_ahead));
        self.outcome_backlog.set(gauge(now.outcome_backlog));
        self.ready.set(i64::from(now.state == WorkerState::Ready));
    }
}

struct Served {
    registry: Registry,
    gauges: WorkerGauges,
    monitor: WorkerMonitor,
}

/// `/metrics`, `/healthz` and `/readyz` for the worker `monitor` watches, with the metrics of
/// `registry` (where a [`crate::PrometheusMetrics`] sink records); fails if the registry
/// already holds the worker gauges.
pub fn worker_routes(registry: Registry, monitor: WorkerMonitor) -> prometheus::Result<Router> {
    let served = Arc::new(Served {
        gauges: WorkerGauges::register(&registry)?,
        registry,
        monitor,
    });
    Ok(Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(served))
}

async fn metrics(State(served): State<Arc<Served>>) -> Response {
    served.gauges.set(&served.monitor.snapshot());
    match TextEncoder::new().encode_to_string(&served.registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz(State(served): State<Arc<Served>>) -> (StatusCode, &'static str) {
    match served.monitor.state() {
        WorkerState::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopped\n"),
        _ => (StatusCode::OK, "ok\n"),
    }
}

async fn readyz(State(served): State<Arc<Served>>) -> (StatusCode, &'static str) {
    let unready = match served.monitor.state() {
        WorkerState::Ready => return (StatusCode::OK, "ready\n"),
        WorkerState::Starting => "starting: the worker is not registered yet\n",
        WorkerState::Disconnected => "disconnected: the last claim did not reach the database\n",
        WorkerState::Draining => "draining: shutting down, claiming no more jobs\n",
        WorkerState::Stopped => "stopped\n",
    };
    (StatusCode::SERVICE_UNAVAILABLE, unready)
}
