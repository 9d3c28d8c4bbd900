//! A log line for every attempt that did not simply succeed — failed, timed out, given up,
//! snoozed, cancelled, handed back — with its task, job id, attempt of max, duration and the
//! first line of its error. A success is a debug line: a busy worker writes nothing per job
//! at the default level. Each attempt is also a span (`crate::telemetry`), which ends with it.

use crate::execute::ReportKind;
use crate::job::JobContext;
use crate::store::FailReason;
use crate::telemetry;
use std::time::Instant;
use tracing::Span;
use uuid::Uuid;

/// What the log and the trace say of one attempt, taken when it starts.
pub(crate) struct AttemptLog {
    task: String,
    job_id: Uuid,
    attempt: i32,
    max_attempts: i32,
    started: Instant,
    span: Span,
}

impl AttemptLog {
    /// `traceparent`: the producer's trace context, which the attempt's span links to.
    pub fn start(ctx: &JobContext, traceparent: Option<&str>) -> Self {
        AttemptLog {
            task: ctx.task_name.clone(),
            job_id: ctx.job_id,
            attempt: ctx.attempt,
            max_attempts: ctx.max_attempts,
            started: Instant::now(),
            span: telemetry::attempt_span(ctx, traceparent),
        }
    }

    /// The attempt's span, for its handler to run in.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Log how the attempt ended. The fields are formatted only when the event is enabled: a
    /// completed attempt (a debug event) costs no formatting at the default level.
    pub fn ended(&self, kind: &ReportKind) {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        telemetry::record_outcome(&self.span, kind, self.attempt >= self.max_attempts);
        // The fields every attempt event carries, then the event's own.
        macro_rules! attempt_event {
            ($level:ident, $($rest:tt)*) => {
                tracing::$level!(
                    task = %self.task,
                    job_id = %self.job_id,
                    attempt = self.attempt,
                    max_attempts = self.max_attempts,
                    duration_ms,
                    $($rest)*
                )
            };
        }
        match kind {
            ReportKind::Done(_) => attempt_event!(debug, "attempt done"),
            ReportKind::Fail { error, reason, .. } => {
                let last = self.attempt >= self.max_attempts;
                let message = match (*reason, last) {
                    (Some(FailReason::Timeout), false) => {
                        "attempt timed out; it will be retried".to_string()
                    }
                    (Some(FailReason::Timeout), true) => {
                        "attempt timed out, the last one; the job goes to the dead letter".into()
                    }
                    (Some(given_up), _) => {
                        format!(
                            "attempt failed ({}); the job goes to the dead letter",
                            given_up.as_str()
                        )
                    }
                    (None, false) => "attempt failed; it will be retried".into(),
                    (None, true) => {
                        "attempt failed, the last one; the job goes to the dead letter".into()
                    }
                };
                attempt_event!(warn, error = first_line(error), "{message}");
            }
            ReportKind::Snooze { delay, reason } => attempt_event!(
                info,
                delay_s = delay.as_secs_f64(),
                reason = reason.as_deref().unwrap_or(""),
                "attempt snoozed (no attempt used)"
            ),
            ReportKind::Abort(reason) => {
                attempt_event!(info, reason = first_line(reason), "job cancelled")
            }
        }
    }
}

/// The first line of a message (errors can carry whole stack traces).
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn the_first_line_of_an_error() {
        assert_eq!(first_line("boom\n  at line 3"), "boom");
        assert_eq!(first_line(""), "");
    }
}
