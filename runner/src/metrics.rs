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
    /// Whether the job is dead after an attempt that ended so, as its retry budget decides
    /// (`None`: the attempt did not fail).
    pub fn dead_after(self, job: &JobContext) -> Option<bool> {
        match self {
            AttemptEnd::Failed | AttemptEnd::TimedOut => Some(job.attempt >= job.max_attempts),
            AttemptEnd::Discarded => Some(true),
            AttemptEnd::Done | AttemptEnd::Snoozed | AttemptEnd::Cancelled => None,
        }
    }

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

/// Where the worker reports attempts and claims. Every method defaults to doing nothing.
pub trait MetricsSink: Send + Sync {
    fn attempt_started(&self, _job: &JobContext) {}
    fn attempt_ended(&self, _job: &JobContext, _end: AttemptEnd, _duration: Duration) {}
    /// A claim asked for `asked` jobs and came back with `got` after `duration` (a failed
    /// claim is not reported).
    fn claim_finished(&self, _asked: usize, _got: usize, _duration: Duration) {}
}

#[cfg(feature = "prometheus")]
pub use prometheus_sink::PrometheusMetrics;

#[cfg(feature = "prometheus")]
mod prometheus_sink {
    use super::{AttemptEnd, MetricsSink};
    use crate::job::JobContext;
    use prometheus::{
        Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
        Registry,
    };
    use std::time::Duration;

    /// `soniq_jobs_started_total`, `soniq_jobs_ended_total{status}`,
    /// `soniq_job_duration_seconds{status}`, `soniq_jobs_in_progress`, and of failed
    /// attempts `soniq_jobs_retried_total` and `soniq_jobs_dead_total`, labelled by queue and
    /// task name; `soniq_claim_duration_seconds` and `soniq_jobs_claimed_total`; all in the
    /// registry you expose.
    pub struct PrometheusMetrics {
        started: IntCounterVec,
        ended: IntCounterVec,
        duration: HistogramVec,
        in_progress: IntGaugeVec,
        retried: IntCounterVec,
        dead: IntCounterVec,
        claim_duration: Histogram,
        claimed: IntCounter,
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
                retried: IntCounterVec::new(
                    Opts::new(
                        "soniq_jobs_retried_total",
                        "Failed attempts with an attempt left",
                    ),
                    &labels,
                )?,
                dead: IntCounterVec::new(
                    Opts::new(
                        "soniq_jobs_dead_total",
                        "Failed attempts that sent their job to the dead letter",
                    ),
                    &labels,
                )?,
                claim_duration: Histogram::with_opts(
                    HistogramOpts::new(
                        "soniq_claim_duration_seconds",
                        "Claims, from the request to the jobs",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                )?,
                claimed: IntCounter::new("soniq_jobs_claimed_total", "Jobs claimed")?,
            };
            registry.register(Box::new(metrics.started.clone()))?;
            registry.register(Box::new(metrics.ended.clone()))?;
            registry.register(Box::new(metrics.duration.clone()))?;
            registry.register(Box::new(metrics.in_progress.clone()))?;
            registry.register(Box::new(metrics.retried.clone()))?;
            registry.register(Box::new(metrics.dead.clone()))?;
            registry.register(Box::new(metrics.claim_duration.clone()))?;
            registry.register(Box::new(metrics.claimed.clone()))?;
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
            match end.dead_after(job) {
                Some(true) => self.dead.with_label_values(&labels).inc(),
                Some(false) => self.retried.with_label_values(&labels).inc(),
                None => {}
            }
        }

        fn claim_finished(&self, _asked: usize, got: usize, duration: Duration) {
            self.claim_duration.observe(duration.as_secs_f64());
            self.claimed.inc_by(got as u64);
        }
    }
}
