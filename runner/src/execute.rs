//! Running one attempt: hooks, metrics, middleware, the handler with its timeout, a
//! panic caught, and a custom retry policy. Shared by the worker and the in-memory queue.

use crate::hooks::{AfterJob, BeforeJob, Hooks, OnError};
use crate::job::{
    JobContext, Outcome, RetryDecision, RetryPolicy, MAX_ERROR_BYTES, MAX_RESULT_BYTES, MAX_SNOOZE,
};
use crate::metrics::{AttemptEnd, MetricsSink};
use crate::middleware::{self, Middleware};
use crate::registry::{Registered, Registry};
use crate::store::FailReason;
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
        reason: Option<FailReason>,
    },
    Snooze {
        delay: Duration,
        reason: Option<String>,
    },
    Abort(String),
}

impl ReportKind {
    /// An ordinary failed attempt: retried per the job's policy while attempts remain.
    pub fn failure(error: impl Into<String>) -> Self {
        ReportKind::Fail {
            error: error.into(),
            retry_in: None,
            reason: None,
        }
    }

    /// The outcome as the database takes it: texts storable ([`storable_text`]), a snooze
    /// shortened to [`MAX_SNOOZE`], and a result over [`MAX_RESULT_BYTES`] a failed attempt
    /// (the database would refuse the whole statement it travels in).
    pub fn within_limits(mut self, ctx: &JobContext) -> Self {
        if let ReportKind::Done(Some(result)) = &self {
            let size = json_len(result);
            if size > MAX_RESULT_BYTES {
                return ReportKind::failure(format!(
                    "the result is {size} bytes of JSON, more than the {MAX_RESULT_BYTES} a result may take: \
                     store it elsewhere and return a reference"
                ));
            }
        }
        if let ReportKind::Snooze { delay, .. } = &mut self {
            if *delay > MAX_SNOOZE {
                tracing::warn!(
                    job_id = %ctx.job_id,
                    task_name = %ctx.task_name,
                    "a snooze of {} s is longer than the 30 days the database takes: shortened to 30 days",
                    delay.as_secs_f64()
                );
                *delay = MAX_SNOOZE;
            }
        }
        match &mut self {
            ReportKind::Fail { error: text, .. }
            | ReportKind::Abort(text)
            | ReportKind::Snooze {
                reason: Some(text), ..
            } => storable_text(text),
            _ => {}
        }
        self
    }

    fn attempt_end(&self) -> AttemptEnd {
        match self {
            ReportKind::Done(_) => AttemptEnd::Done,
            ReportKind::Fail {
                reason: Some(FailReason::Timeout),
                ..
            } => AttemptEnd::TimedOut,
            ReportKind::Fail {
                reason: Some(_), ..
            } => AttemptEnd::Discarded,
            ReportKind::Fail { reason: None, .. } => AttemptEnd::Failed,
            ReportKind::Snooze { .. } => AttemptEnd::Snoozed,
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
            Outcome::Snooze { delay, reason } => ReportKind::Snooze { delay, reason },
            Outcome::Cancel(reason) => ReportKind::Abort(reason),
            Outcome::Discard(reason) => ReportKind::Fail {
                error: reason,
                retry_in: None,
                reason: Some(FailReason::PermanentFailure),
            },
        }
    }
}

/// The length of `value` as JSON text, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a JSON value to a counter cannot fail; if it ever did, the result counts as too big.
    serde_json::to_writer(&mut counter, value).map_or(usize::MAX, |()| counter.0)
}

/// An error or reason as the database stores it: cut to [`MAX_ERROR_BYTES`] at a character
/// boundary, and without NUL characters (PostgreSQL text cannot hold them: the statement
/// would be refused).
fn storable_text(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{fffd}");
    }
    if text.len() > MAX_ERROR_BYTES {
        let end = (0..=MAX_ERROR_BYTES)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
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
    let Some(registered) = handlers.registry.tasks.get(&ctx.task_name) else {
        return ReportKind::Fail {
            error: format!("task {} has no handler in this worker", ctx.task_name),
            retry_in: None,
            reason: Some(FailReason::JobNotFound),
        };
    };
    let (task_name, job_id, attempt) = (ctx.task_name.clone(), ctx.job_id, ctx.attempt);
    let hooks = &handlers.hooks;
    hooks
        .before_job
        .run(
            "before_job",
            &BeforeJob {
                task_name: task_name.clone(),
                job_id,
                attempt,
            },
        )
        .await;
    let started = Instant::now();
    if let Some(metrics) = &handlers.metrics {
        metrics.attempt_started(&ctx);
    }
    // Limits first: hooks, metrics and the database all see the outcome that is recorded.
    let mut kind = run_handler(registered, &handlers.middlewares, args, ctx.clone())
        .await
        .within_limits(&ctx);
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
                        task_name,
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
        } if reason.is_none() || *reason == Some(FailReason::Timeout) => {
            let event = OnError {
                task_name,
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
                        RetryDecision::GiveUp => *reason = Some(FailReason::PermanentFailure),
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
                reason: Some(FailReason::InvalidArguments),
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
                    reason: Some(FailReason::Timeout),
                }
            }
        },
        None => guarded.await,
    };
    match result {
        Ok(Ok(outcome)) => outcome.into(),
        Ok(Err(error)) => ReportKind::failure(error.to_string()),
        Err(panic) => ReportKind::failure(format!(
            "handler panicked: {}",
            panic_message(panic.as_ref())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::SystemTime;
    use uuid::Uuid;

    fn ctx() -> JobContext {
        JobContext {
            job_id: Uuid::nil(),
            task_name: "tests.limits".into(),
            attempt: 1,
            max_attempts: 1,
            queue: "default".into(),
            worker_id: Uuid::nil(),
            scheduled_at: None,
            created_at: SystemTime::now(),
            timeout: None,
            store: Default::default(),
        }
    }

    fn error_of(kind: &ReportKind) -> &str {
        match kind {
            ReportKind::Fail { error, .. } => error,
            _ => panic!("not a failure"),
        }
    }

    #[test]
    fn errors_are_cut_to_8192_bytes_at_a_character_boundary_and_lose_nuls() {
        // 'é' is two bytes: 8192 bytes would end inside the 4097th.
        let long = format!("x{}", "é".repeat(10_000));
        let kind = ReportKind::failure(long).within_limits(&ctx());
        let error = error_of(&kind);
        assert_eq!(error.len(), 8191);
        assert!(error.starts_with("xé"));
        let kind = ReportKind::Abort("a".repeat(100_000)).within_limits(&ctx());
        assert!(matches!(&kind, ReportKind::Abort(reason) if reason.len() == MAX_ERROR_BYTES));
        let short = ReportKind::failure("short").within_limits(&ctx());
        assert_eq!(error_of(&short), "short");
        let nul = ReportKind::failure("a\0b").within_limits(&ctx());
        assert_eq!(error_of(&nul), "a\u{fffd}b");
    }

    #[test]
    fn a_result_over_1_mib_of_json_fails_the_attempt() {
        // A string of n bytes is n + 2 bytes of JSON (its quotes).
        let fits = json!("x".repeat(MAX_RESULT_BYTES - 2));
        let kind = ReportKind::Done(Some(fits)).within_limits(&ctx());
        assert!(matches!(kind, ReportKind::Done(Some(_))));
        let too_big = json!("x".repeat(MAX_RESULT_BYTES - 1));
        let kind = ReportKind::Done(Some(too_big)).within_limits(&ctx());
        assert!(
            error_of(&kind)
                .starts_with("the result is 1048577 bytes of JSON, more than the 1048576"),
            "{}",
            error_of(&kind)
        );
        assert_eq!(json_len(&json!({"a": [1, "b"]})), r#"{"a":[1,"b"]}"#.len());
    }

    #[test]
    fn a_snooze_over_30_days_is_shortened_to_30_days() {
        let long = ReportKind::Snooze {
            delay: MAX_SNOOZE * 2,
            reason: Some("é".repeat(5000)),
        };
        match long.within_limits(&ctx()) {
            ReportKind::Snooze {
                delay,
                reason: Some(reason),
            } => {
                assert_eq!(delay, Duration::from_secs(2_592_000));
                assert_eq!(reason.len(), MAX_ERROR_BYTES);
            }
            _ => panic!("still a snooze"),
        }
        let short = ReportKind::Snooze {
            delay: Duration::from_secs(60),
            reason: None,
        };
        assert!(matches!(
            short.within_limits(&ctx()),
            ReportKind::Snooze { delay, reason: None } if delay == Duration::from_secs(60)
        ));
    }
}
