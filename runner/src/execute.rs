//! Running one attempt: hooks, metrics, middleware, the handler with its timeout, a
//! panic caught, and a custom retry policy. Shared by the worker and the in-memory queue.

use crate::hooks::{AfterJob, BeforeJob, Hooks, OnError};
use crate::job::{JobContext, Outcome, RetryDecision, RetryPolicy};
use crate::metrics::{AttemptEnd, MetricsSink};
use crate::middleware::{self, Middleware};
use crate::registry::{Registered, Registry};
use futures_util::FutureExt;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything an application registered that runs around or as a job.
#[derive(Clone, Default)]
pub(crate) struct Handlers {
    pub registry: Registry,
    pub hooks: Hooks,
    pub middlewares: Vec<Middleware>,
    pub metrics: Option<Arc<dyn MetricsSink>>,
    pub retry_policy: Option<RetryPolicy>,
}

/// An attempt's outcome, as the database records it.
pub(crate) enum ReportKind {
    Done(Option<Value>),
    Fail {
        error: String,
        retry_in: Option<Duration>,
        reason: Option<&'static str>,
    },
    Snooze(Duration),
    Abort(String),
}

impl ReportKind {
    fn attempt_end(&self) -> AttemptEnd {
        match self {
            ReportKind::Done(_) => AttemptEnd::Done,
            ReportKind::Fail {
                reason: Some("timeout"),
                ..
            } => AttemptEnd::TimedOut,
            ReportKind::Fail {
                reason: Some(_), ..
            } => AttemptEnd::Discarded,
            ReportKind::Fail { reason: None, .. } => AttemptEnd::Failed,
            ReportKind::Snooze(_) => AttemptEnd::Snoozed,
            ReportKind::Abort(_) => AttemptEnd::Cancelled,
        }
    }
}

impl From<Outcome> for ReportKind {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done(result) => ReportKind::Done(result),
            Outcome::Retry { error, after } => ReportKind::Fail {
                error,
                retry_in: after,
                reason: None,
            },
            Outcome::Snooze(delay) => ReportKind::Snooze(delay),
            Outcome::Cancel(reason) => ReportKind::Abort(reason),
            Outcome::Discard(reason) => ReportKind::Fail {
                error: reason,
                retry_in: None,
                reason: Some("permanent_failure"),
            },
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".into())
}

/// Run one attempt to its outcome, with the hooks around it. A panic or a timeout is a
/// failed attempt; a custom retry policy may then set the delay or give up.
pub(crate) async fn execute(handlers: &Handlers, ctx: JobContext, args: Value) -> ReportKind {
    let Some(registered) = handlers.registry.tasks.get(&ctx.job_name) else {
        return ReportKind::Fail {
            error: format!("task {} has no handler in this worker", ctx.job_name),
            retry_in: None,
            reason: Some("job_not_found"),
        };
    };
    let (job_name, job_id, attempt) = (ctx.job_name.clone(), ctx.job_id, ctx.attempt);
    let hooks = &handlers.hooks;
    hooks
        .before_job
        .run(
            "before_job",
            &BeforeJob {
                job_name: job_name.clone(),
                job_id,
                attempt,
            },
        )
        .await;
    let started = Instant::now();
    if let Some(metrics) = &handlers.metrics {
        metrics.attempt_started(&ctx);
    }
    let mut kind = run_handler(registered, &handlers.middlewares, args, ctx.clone()).await;
    if let Some(metrics) = &handlers.metrics {
        metrics.attempt_ended(&ctx, kind.attempt_end(), started.elapsed());
    }
    match &mut kind {
        ReportKind::Done(_) => {
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            hooks
                .after_job
                .run(
                    "after_job",
                    &AfterJob {
                        job_name,
                        job_id,
                        duration_ms,
                    },
                )
                .await;
        }
        ReportKind::Fail {
            error,
            retry_in,
            reason,
        } if reason.is_none() || *reason == Some("timeout") => {
            let event = OnError {
                job_name,
                job_id,
                error: error.clone(),
                attempt,
            };
            hooks.on_error.run("on_error", &event).await;
            if reason.is_none() {
                if let Some(policy) = &handlers.retry_policy {
                    match policy(&ctx, error) {
                        RetryDecision::Default => {}
                        RetryDecision::After(delay) => *retry_in = Some(delay),
                        RetryDecision::GiveUp => *reason = Some("permanent_failure"),
                    }
                }
            }
        }
        _ => {}
    }
    kind
}

async fn run_handler(
    registered: &Registered,
    middlewares: &[Middleware],
    args: Value,
    ctx: JobContext,
) -> ReportKind {
    let timeout = ctx.timeout;
    let future = match (registered.handler)(args, ctx.clone()) {
        Ok(future) => middleware::chain(middlewares, &ctx, future),
        Err(e) => {
            return ReportKind::Fail {
                error: format!("arguments do not match the handler: {e}"),
                retry_in: None,
                reason: Some("invalid_arguments"),
            }
        }
    };
    let guarded = AssertUnwindSafe(future).catch_unwind();
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, guarded).await {
            Ok(result) => result,
            Err(_) => {
                return ReportKind::Fail {
                    error: format!("Job timed out after {}s", limit.as_secs_f64()),
                    retry_in: None,
                    reason: Some("timeout"),
                }
            }
        },
        None => guarded.await,
    };
    match result {
        Ok(Ok(outcome)) => outcome.into(),
        Ok(Err(error)) => ReportKind::Fail {
            error: error.to_string(),
            retry_in: None,
            reason: None,
        },
        Err(panic) => ReportKind::Fail {
            error: format!("handler panicked: {}", panic_message(panic.as_ref())),
            retry_in: None,
            reason: None,
        },
    }
}
