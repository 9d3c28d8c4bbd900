//! OpenTelemetry traces, captured by an OTLP/HTTP collector in this process: the producer's
//! span → its job's attempt span link, for a job enqueued by the runner in a request's span,
//! by plain SQL with a `traceparent` argument, and by the `soniq` command (whose worker and
//! enqueue export through the environment's OTEL_EXPORTER_OTLP_ENDPOINT).
#![cfg(all(feature = "e2e", feature = "otel", feature = "cli"))]

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use soniq_runner::{JobContext, JobError, Outcome};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The spans a collector received, as OTLP sent them.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    /// Serve OTLP/HTTP (protobuf) on a loopback port; returns the traces URL.
    async fn start(&self) -> String {
        let spans = Arc::clone(&self.spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let spans = Arc::clone(&spans);
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
                    let received = request
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans);
                    spans.lock().unwrap().extend(received);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/v1/traces")
    }

    /// The spans received so far named `name` whose attribute `soniq.job_id` is `job`.
    fn of_job(&self, name: &str, job: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name && attribute(s, "soniq.job_id").as_deref() == Some(job))
            .cloned()
            .collect()
    }

    fn named(&self, name: &str) -> Vec<Span> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }
}

/// A span's attribute as text (strings as they are, numbers in decimal).
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The (trace id, span id) pairs an attempt span links to.
fn links(span: &Span) -> Vec<(String, String)> {
    span.links
        .iter()
        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
        .collect()
}

async fn traceparent_of_job(client: &tokio_postgres::Client, id: uuid::Uuid) -> Option<String> {
    client
        .query_one("SELECT traceparent FROM soniq.jobs WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_links_to_the_span_that_enqueued_its_job() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let (layer, provider) =
        soniq_runner::telemetry::otlp_layer(Some(&endpoint), "soniq-otel-test").unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let queue = unique("otel");
    let mut soniq = app_with(2);
    let ok = soniq
        .job(format!("{queue}.ok"))
        .queue(&queue)
        .handler(|_: serde_json::Value, _: JobContext| async { Ok(Outcome::done()) })
        .unwrap();
    let flaky = soniq
        .job(format!("{queue}.flaky"))
        .queue(&queue)
        .retries(1)
        .handler(|_: serde_json::Value, ctx: JobContext| async move {
            match ctx.attempt {
                1 => Err(JobError::new("not yet")),
                _ => Ok(Outcome::done()),
            }
        })
        .unwrap();

    // A request's span, inside which the application enqueues.
    let request = tracing::info_span!("POST /orders");
    let (ok_id, flaky_id) = async {
        let ok_id = soniq.enqueue(&ok, serde_json::json!({})).await.unwrap();
        let flaky_id = soniq.enqueue(&flaky, serde_json::json!({})).await.unwrap();
        (ok_id, flaky_id)
    }
    .instrument(request)
    .await;
    // And plain SQL, with a producer's trace context of its own.
    let client = sql().await;
    let from_sql = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let sql_id: uuid::Uuid = client
        .query_one(
            "SELECT soniq.enqueue($1, traceparent => $2)",
            &[&format!("{queue}.ok"), &from_sql],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        traceparent_of_job(&client, sql_id).await.as_deref(),
        Some(from_sql)
    );
    let stored = traceparent_of_job(&client, ok_id)
        .await
        .expect("a stored context");

    soniq.run_worker(run_once(&queue)).await.unwrap();
    tokio::task::spawn_blocking(move || provider.force_flush().unwrap())
        .await
        .unwrap();

    // The enqueue span is the request's child, and its context is what the job stores.
    let request = collector.named("POST /orders");
    assert_eq!(request.len(), 1, "the request span");
    let enqueue = collector.of_job("soniq.enqueue", &ok_id.to_string());
    assert_eq!(enqueue.len(), 1, "one enqueue span for the job");
    let enqueue = &enqueue[0];
    assert_eq!(enqueue.trace_id, request[0].trace_id);
    assert_eq!(enqueue.parent_span_id, request[0].span_id);
    let (trace, span) = (hex(&enqueue.trace_id), hex(&enqueue.span_id));
    assert_eq!(stored, format!("00-{trace}-{span}-01"));
    assert_eq!(
        attribute(enqueue, "soniq.task"),
        Some(format!("{queue}.ok"))
    );
    assert_eq!(
        attribute(enqueue, "soniq.queue").as_deref(),
        Some(queue.as_str())
    );

    // Each attempt links to the enqueue span, and says how it ended.
    let attempts = collector.of_job("soniq.attempt", &ok_id.to_string());
    assert_eq!(attempts.len(), 1, "one attempt");
    assert_eq!(links(&attempts[0]), vec![(trace.clone(), span.clone())]);
    assert_eq!(
        attribute(&attempts[0], "soniq.outcome").as_deref(),
        Some("done")
    );
    assert_eq!(
        attribute(&attempts[0], "soniq.attempt").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(&attempts[0], "soniq.queue").as_deref(),
        Some(queue.as_str())
    );

    let flaky_enqueue = collector.of_job("soniq.enqueue", &flaky_id.to_string());
    let flaky_producer = (
        hex(&flaky_enqueue[0].trace_id),
        hex(&flaky_enqueue[0].span_id),
    );
    let mut flaky_attempts = collector.of_job("soniq.attempt", &flaky_id.to_string());
    flaky_attempts.sort_by_key(|s| attribute(s, "soniq.attempt"));
    let ended: Vec<_> = flaky_attempts
        .iter()
        .map(|s| {
            (
                attribute(s, "soniq.attempt").unwrap(),
                attribute(s, "soniq.outcome").unwrap(),
                s.status.as_ref().map_or(0, |st| st.code),
                links(s),
            )
        })
        .collect();
    assert_eq!(
        ended,
        vec![
            ("1".into(), "retry".into(), 2, vec![flaky_producer.clone()]),
            ("2".into(), "done".into(), 0, vec![flaky_producer]),
        ],
        "a failed attempt's status is an error (2), every attempt links to the producer"
    );

    // The job enqueued from SQL links to the context it was given.
    let sql_attempts = collector.of_job("soniq.attempt", &sql_id.to_string());
    assert_eq!(
        links(&sql_attempts[0]),
        vec![(
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into()
        )]
    );

    // A malformed context is refused and writes nothing.
    for bad in [
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "garbage",
    ] {
        let refused = client
            .query_one(
                "SELECT soniq.enqueue($1, traceparent => $2)",
                &[&format!("{queue}.ok"), &bad],
            )
            .await
            .unwrap_err();
        let db = refused.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023", "{bad:?}");
        assert!(db
            .message()
            .contains("traceparent must be a W3C trace context"));
    }
    let left = count(
        &client,
        "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status <> 'done'",
        &queue,
    )
    .await;
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soniq_command_exports_its_enqueue_and_attempt_spans() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let base = endpoint.trim_end_matches("/v1/traces").to_string();
    let queue = unique("otel_cli");
    let module = std::env::temp_dir().join(format!("{queue}.toml"));
    std::fs::write(
        &module,
        format!("[tasks.\"{queue}.ok\"]\ncommand = [\"true\"]\nqueue = \"{queue}\"\n"),
    )
    .unwrap();
    let soniq = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_soniq"))
            .args(args)
            .env("SONIQ_DATABASE_URL", database_url())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base)
            .env("OTEL_SERVICE_NAME", "soniq-cli-test")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "soniq {args:?}: {stderr}");
        (
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
            stderr,
        )
    };
    let (id, _) = soniq(&["enqueue", &format!("{queue}.ok"), "--queue", &queue]);
    let (_, log) = soniq(&[
        "worker",
        "--run-once",
        "--queues",
        &queue,
        "--jobs-modules",
        module.to_str().unwrap(),
    ]);
    assert!(
        !log.contains("soniq.attempt"),
        "the log shows no spans: {log}"
    );

    // Each process sent its spans before it exited.
    let enqueue = collector.of_job("soniq.enqueue", &id);
    assert_eq!(enqueue.len(), 1, "the enqueue span of {id}");
    let attempt = collector.of_job("soniq.attempt", &id);
    assert_eq!(attempt.len(), 1, "the attempt span of {id}");
    assert_eq!(
        links(&attempt[0]),
        vec![(hex(&enqueue[0].trace_id), hex(&enqueue[0].span_id))]
    );
    assert_eq!(
        attribute(&attempt[0], "soniq.outcome").as_deref(),
        Some("done")
    );

    // A protocol it cannot speak is refused before anything runs.
    let refused = Command::new(env!("CARGO_BIN_EXE_soniq"))
        .args(["enqueue", &format!("{queue}.ok"), "--queue", &queue])
        .env("SONIQ_DATABASE_URL", database_url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("must be http/protobuf"));
    let client = sql().await;
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1",
            &queue
        )
        .await,
        1
    );
}
