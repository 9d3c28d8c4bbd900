//! The Prometheus metrics sink, fed by a real worker.
#![cfg(all(feature = "e2e", feature = "prometheus"))]

use serde::{Deserialize, Serialize};
use soniq_runner::{
    JobContext, JobError, JobResult, Outcome, PrometheusMetrics, Settings, Soniq, WorkerOptions,
};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Step {
    fail: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_counted_and_timed_by_status() {
    let url = std::env::var("SONIQ_TEST_DATABASE_URL")
        .expect("SONIQ_TEST_DATABASE_URL; run scripts/test");
    let queue = format!("metrics_{}", std::process::id());
    let settings = Settings::builder(url)
        .poll_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut soniq = Soniq::with_settings(settings).unwrap();
    let registry = prometheus::Registry::new();
    soniq.metrics_sink(PrometheusMetrics::new(&registry).unwrap());
    let task_name = format!("{queue}.step");
    let task = soniq
        .job(&task_name)
        .queue(&queue)
        .retries(0)
        .handler(|step: Step, _ctx: JobContext| async move {
            if step.fail {
                return Err(JobError::new("no"));
            }
            JobResult::Ok(Outcome::done())
        })
        .unwrap();
    for fail in [false, false, true] {
        soniq.enqueue(&task, Step { fail }).await.unwrap();
    }
    let options = WorkerOptions {
        queues: Some(vec![queue.clone()]),
        run_once: true,
        ..WorkerOptions::default()
    };
    soniq.run_worker(options).await.unwrap();

    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let line = |metric: &str, status: Option<&str>| {
        let status = status
            .map(|s| format!(",status=\"{s}\""))
            .unwrap_or_default();
        // Labels in the order the encoder writes them (by name).
        format!("{metric}{{queue=\"{queue}\"{status},task_name=\"{task_name}\"}}")
    };
    assert!(
        text.contains(&format!("{} 3", line("soniq_jobs_started_total", None))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} 2",
            line("soniq_jobs_ended_total", Some("done"))
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} 1",
            line("soniq_jobs_ended_total", Some("failed"))
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} 0", line("soniq_jobs_in_progress", None))),
        "{text}"
    );
    assert!(text.contains("soniq_job_duration_seconds_count"), "{text}");
}
