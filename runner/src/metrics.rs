//! Metrics: a sink the worker reports every attempt to, and a Prometheus implementation.

use crate::job::JobContext;
use std::time::Duration;

/// How an attempt ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Done,
    /// An error or a panic (retried or dead-lettered by the job's policy).
    Failed,
    TimedOut,
    Snoozed,
    Cancelled,
    Discarded,
}

impl AttemptEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptEnd::Done => "done",
            AttemptEnd::Failed => "failed",
            AttemptEnd::TimedOut => "timed_out",
            AttemptEnd::Snoozed => "snoozed",
            AttemptEnd::Cancelled => "cancelled",
            AttemptEnd::Discarded => "discarded",
        }
    }
}

/// Where the worker reports attempts. Both methods default to doing nothing.
pub trait MetricsSink: Send + Sync {
    fn attempt_started(&self, _job: &JobContext) {}
    fn attempt_ended(&self, _job: &JobContext, _end: AttemptEnd, _duration: Duration) {}
}

#[cfg(feature = "prometheus")]
pub use prometheus_sink::PrometheusMetrics;

#[cfg(feature = "prometheus")]
mod prometheus_sink {
    use super::{AttemptEnd, MetricsSink};
    use crate::job::JobContext;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
    use std::time::Duration;

    /// `soniq_jobs_started_total`, `soniq_jobs_ended_total{status}`,
    /// `soniq_job_duration_seconds{status}` and `soniq_jobs_in_progress`, labelled by queue
    /// and job name, in the registry you expose.
    pub struct PrometheusMetrics {
        started: IntCounterVec,
        ended: IntCounterVec,
        duration: HistogramVec,
        in_progress: IntGaugeVec,
    }

    impl PrometheusMetrics {
        pub fn new(registry: &Registry) -> prometheus::Result<Self> {
            let labels = ["queue", "task_name"];
            let with_status = ["queue", "task_name", "status"];
            let metrics = PrometheusMetrics {
                started: IntCounterVec::new(
                    Opts::new("soniq_jobs_started_total", "Attempts started"),
                    &labels,
                )?,
                ended: IntCounterVec::new(
                    Opts::new("soniq_jobs_ended_total", "Attempts ended"),
                    &with_status,
                )?,
                duration: HistogramVec::new(
                    HistogramOpts::new("soniq_job_duration_seconds", "Attempt duration").buckets(
                        vec![
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                            60.0, 300.0, 600.0,
                        ],
                    ),
                    &with_status,
                )?,
                in_progress: IntGaugeVec::new(
                    Opts::new("soniq_jobs_in_progress", "Attempts running"),
                    &labels,
                )?,
            };
            registry.register(Box::new(metrics.started.clone()))?;
            registry.register(Box::new(metrics.ended.clone()))?;
            registry.register(Box::new(metrics.duration.clone()))?;
            registry.register(Box::new(metrics.in_progress.clone()))?;
            Ok(metrics)
        }
    }

    impl MetricsSink for PrometheusMetrics {
        fn attempt_started(&self, job: &JobContext) {
            let labels = [job.queue.as_str(), job.task_name.as_str()];
            self.started.with_label_values(&labels).inc();
            self.in_progress.with_label_values(&labels).inc();
        }

        fn attempt_ended(&self, job: &JobContext, end: AttemptEnd, duration: Duration) {
            let labels = [job.queue.as_str(), job.task_name.as_str()];
            let with_status = [job.queue.as_str(), job.task_name.as_str(), end.as_str()];
            self.in_progress.with_label_values(&labels).dec();
            self.ended.with_label_values(&with_status).inc();
            self.duration
                .with_label_values(&with_status)
                .observe(duration.as_secs_f64());
        }
    }
}
