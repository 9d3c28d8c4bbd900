//! Traces: every enqueue and every attempt is a `tracing` span, and the producer's trace
//! context travels with its job (a W3C `traceparent`, stored in `soniq.jobs.traceparent`),
//! so each attempt's span links to the span that enqueued the job — also when the job was
//! enqueued from plain SQL with a `traceparent` argument.
//!
//! The spans are plain `tracing` spans, at level INFO with the target [`TARGET`]; any
//! `tracing-opentelemetry` layer exports them. With the feature `otel`, an enqueue stores
//! the context of its span, an attempt adds the link, and [`otlp_layer`] makes the layer the
//! `soniq` command installs (OTLP over HTTP). Without it the spans still exist for other
//! subscribers, and a job keeps only a `traceparent` given explicitly
//! ([`crate::Enqueue::traceparent`]).
//!
//! The attributes: `soniq.task`, `soniq.queue`, `soniq.job_id` on both; `soniq.attempt` and
//! `soniq.outcome` (`done`, `retry`, `dead`, `snoozed`, `cancelled`) on an attempt, whose
//! status is an error when it failed.

use crate::execute::ReportKind;
use crate::job::JobContext;
use std::future::Future;
use tracing::{Instrument, Span};

/// The target of Soniq's spans, so a log filter can leave them out and a trace filter let
/// them in (the `soniq` command's log does not show them).
pub const TARGET: &str = "soniq::trace";

/// The span of one enqueue call; its job ids are recorded once known ([`record_jobs`]).
pub(crate) fn enqueue_span(task_name: &str, queue: Option<&str>) -> Span {
    tracing::info_span!(
        target: TARGET,
        "soniq.enqueue",
        otel.kind = "producer",
        soniq.task = task_name,
        soniq.queue = queue.unwrap_or(""),
        soniq.job_id = tracing::field::Empty,
        soniq.jobs = tracing::field::Empty,
    )
}

/// Run an enqueue in its span, which then records the ids of the jobs it wrote (`ids` finds
/// them in what the enqueue returns).
pub(crate) async fn traced<T>(
    span: Span,
    enqueue: impl Future<Output = crate::Result<T>>,
    ids: impl FnOnce(&T) -> &[uuid::Uuid],
) -> crate::Result<T> {
    let written = enqueue.instrument(span.clone()).await?;
    record_jobs(&span, ids(&written));
    Ok(written)
}

/// What an enqueue span says of the jobs it made.
fn record_jobs(span: &Span, ids: &[uuid::Uuid]) {
    match ids {
        [one] => span.record("soniq.job_id", tracing::field::display(one)),
        many => span.record("soniq.jobs", many.len()),
    };
}

/// The span of one attempt, linked to its producer's span when the job carries a trace
/// context.
pub(crate) fn attempt_span(job: &JobContext, traceparent: Option<&str>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "soniq.attempt",
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        soniq.task = %job.task_name,
        soniq.queue = %job.queue,
        soniq.job_id = %job.job_id,
        soniq.attempt = job.attempt,
        soniq.outcome = tracing::field::Empty,
    );
    if let Some(traceparent) = traceparent {
        otel::link(&span, traceparent);
    }
    span
}

/// Record how the attempt ended on its span: `last` tells a failure that ends the job.
pub(crate) fn record_outcome(span: &Span, kind: &ReportKind, last: bool) {
    let outcome = match kind {
        ReportKind::Done(_) => "done",
        ReportKind::Fail { reason, .. } if last || reason.is_some_and(|r| r.is_final()) => "dead",
        ReportKind::Fail { .. } => "retry",
        ReportKind::Snooze { .. } => "snoozed",
        ReportKind::Abort(_) => "cancelled",
    };
    span.record("soniq.outcome", outcome);
    if matches!(kind, ReportKind::Fail { .. }) {
        span.record("otel.status_code", "ERROR");
    }
}

/// Whether a `traceparent` is one `soniq.enqueue` takes: W3C version 00, lowercase hex,
/// neither id all zeros (the rule of `soniq._traceparent_ok`).
pub(crate) fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |part: &str| part.bytes().any(|b| b != b'0');
    matches!(parts[..], [version, trace, span, flags]
        if version == "00" && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && nonzero(trace) && nonzero(span))
}

/// The `traceparent` of a span: its OpenTelemetry context in W3C form (`None` without the
/// feature, or when no OpenTelemetry layer records the span).
pub(crate) fn traceparent_of(span: &Span) -> Option<String> {
    otel::traceparent_of(span)
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use std::collections::HashMap;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub fn traceparent_of(span: &Span) -> Option<String> {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        carrier.remove("traceparent")
    }

    pub fn link(span: &Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let producer = TraceContextPropagator::new().extract(&carrier);
        let producer = producer.span().span_context().clone();
        if producer.is_valid() {
            span.add_link(producer);
        }
    }
}

#[cfg(not(feature = "otel"))]
mod otel {
    use tracing::Span;

    pub fn traceparent_of(_: &Span) -> Option<String> {
        None
    }

    pub fn link(_: &Span, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::is_traceparent;

    #[test]
    fn the_traceparent_rule() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }
}

#[cfg(feature = "otel")]
pub use export::{otlp_layer, OtlpError};

#[cfg(feature = "otel")]
mod export {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::registry::LookupSpan;

    /// Why the OTLP exporter could not be made.
    pub type OtlpError = opentelemetry_otlp::ExporterBuildError;

    /// A `tracing` layer that exports spans over OTLP/HTTP (protobuf) in batches, and the
    /// provider behind it, whose `shutdown` sends what is left. `endpoint`: the collector's
    /// traces URL (such as `http://127.0.0.1:4318/v1/traces`); `None` reads
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT` (with
    /// `/v1/traces` appended), as the OpenTelemetry specification says. The service name is
    /// `OTEL_SERVICE_NAME`, or `service_name`.
    pub fn otlp_layer<S>(
        endpoint: Option<&str>,
        service_name: &str,
    ) -> Result<
        (
            tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
            SdkTracerProvider,
        ),
        OtlpError,
    >
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let mut exporter = SpanExporter::builder().with_http();
        if let Some(endpoint) = endpoint {
            exporter = exporter.with_endpoint(endpoint);
        }
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| service_name.to_string());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter.build()?)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("soniq"));
        Ok((layer, provider))
    }
}
