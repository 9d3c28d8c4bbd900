//! `soniq worker --metrics-listen`: `/metrics` scraped and parsed against what the jobs did,
//! `/healthz` and `/readyz` through a worker's life (ready once registered, not ready from the
//! moment a graceful shutdown begins, while a job still finishes).
#![cfg(all(feature = "e2e", feature = "cli"))]

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

const CONCURRENCY: usize = 4;

/// The module of `queue`'s tasks; its `slow` job runs until the file `gate` exists.
fn jobs_module(queue: &str, gate: &std::path::Path) -> String {
    let module = std::env::temp_dir().join(format!("{queue}.toml"));
    let gate = gate.display();
    std::fs::write(
        &module,
        format!(
            "[tasks.\"{queue}.ok\"]\ncommand = [\"true\"]\nqueue = \"{queue}\"\n\n\
             [tasks.\"{queue}.flaky\"]\ncommand = [\"false\"]\nqueue = \"{queue}\"\nretries = 1\n\n\
             [tasks.\"{queue}.doomed\"]\ncommand = [\"sh\", \"-c\", \"exit 65\"]\nqueue = \"{queue}\"\n\n\
             [tasks.\"{queue}.slow\"]\ncommand = [\"sh\", \"-c\", \"until [ -e {gate} ]; do sleep 0.05; done\"]\n\
             queue = \"{queue}\"\n"
        ),
    )
    .unwrap();
    module.to_string_lossy().into_owned()
}

/// `soniq worker --metrics-listen 127.0.0.1:0` serving `queue`, and the address it logged.
fn start_worker(queue: &str, module: &str) -> (Runner, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    command
        .args([
            "worker",
            "--metrics-listen",
            "127.0.0.1:0",
            "--queues",
            queue,
        ])
        .args(["--jobs-modules", module])
        .env("SONIQ_DATABASE_URL", database_url())
        .env("SONIQ_CONCURRENCY", CONCURRENCY.to_string())
        .env("SONIQ_HEARTBEAT_INTERVAL", "0.5")
        .env("SONIQ_POLL_INTERVAL", "0.2")
        .env("SONIQ_SHUTDOWN_TIMEOUT", "30");
    start_serving(command, "serving /metrics")
}

async fn enqueue(client: &tokio_postgres::Client, task_name: &str) {
    client
        .execute("SELECT soniq.enqueue($1)", &[&task_name])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_jobs_did_and_readiness_follows_the_workers_life() {
    let queue = unique("endpoints");
    let gate = std::env::temp_dir().join(format!("{queue}.gate"));
    let module = jobs_module(&queue, &gate);
    let (runner, address) = start_worker(&queue, &module);
    assert_eq!(http_get(address, "/healthz"), (200, "ok\n".into()));
    wait_for("ready", async || http_get(address, "/readyz").0 == 200).await;
    assert_eq!(http_get(address, "/readyz").1, "ready\n");
    let (status, _) = http_get(address, "/nothing");
    assert_eq!(status, 404);

    let client = sql().await;
    for task in ["ok", "ok", "ok", "flaky", "doomed"] {
        enqueue(&client, &format!("{queue}.{task}")).await;
    }
    let finished = "SELECT (SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done')
                         + (SELECT count(*) FROM soniq.dead_letter_jobs WHERE queue = $1)";
    wait_for("five finished jobs", async || {
        count(&client, finished, &queue).await == 5
    })
    .await;

    let page = http_get(address, "/metrics");
    assert_eq!(page.0, 200);
    let all = prometheus_samples(&page.1);
    let of = |task: &str| format!("queue=\"{queue}\",task_name=\"{queue}.{task}\"");
    // Three done; flaky failed twice (retried once, then dead); doomed discarded (dead).
    assert_eq!(
        sample(&all, &format!("soniq_jobs_started_total{{{}}}", of("ok"))),
        3.0
    );
    assert_eq!(
        sample(
            &all,
            &format!("soniq_jobs_started_total{{{}}}", of("flaky"))
        ),
        2.0
    );
    // The encoder writes labels in name order: status comes between queue and task_name.
    let with_status = |task: &str, status: &str| {
        format!("queue=\"{queue}\",status=\"{status}\",task_name=\"{queue}.{task}\"")
    };
    let ended = |task: &str, status: &str| {
        format!("soniq_jobs_ended_total{{{}}}", with_status(task, status))
    };
    assert_eq!(sample(&all, &ended("ok", "done")), 3.0);
    assert_eq!(sample(&all, &ended("flaky", "failed")), 2.0);
    assert_eq!(sample(&all, &ended("doomed", "discarded")), 1.0);
    assert_eq!(
        sample(
            &all,
            &format!("soniq_jobs_retried_total{{{}}}", of("flaky"))
        ),
        1.0
    );
    assert_eq!(
        sample(&all, &format!("soniq_jobs_dead_total{{{}}}", of("flaky"))),
        1.0
    );
    assert_eq!(
        sample(&all, &format!("soniq_jobs_dead_total{{{}}}", of("doomed"))),
        1.0
    );
    assert!(!all.contains_key(&format!("soniq_jobs_retried_total{{{}}}", of("doomed"))));
    let durations = format!(
        "soniq_job_duration_seconds_count{{{}}}",
        with_status("ok", "done")
    );
    assert_eq!(sample(&all, &durations), 3.0);
    assert_eq!(sample(&all, "soniq_jobs_claimed_total"), 6.0);
    assert!(sample(&all, "soniq_claim_duration_seconds_count") >= 2.0);
    assert_eq!(sample(&all, "soniq_worker_ready"), 1.0);
    assert_eq!(sample(&all, "soniq_worker_slots{state=\"busy\"}"), 0.0);
    assert_eq!(
        sample(&all, "soniq_worker_slots{state=\"free\"}"),
        CONCURRENCY as f64
    );
    assert_eq!(sample(&all, "soniq_worker_outcome_backlog"), 0.0);

    // A slow job holds a slot; a graceful shutdown lets it finish (once its gate opens),
    // not ready meanwhile.
    enqueue(&client, &format!("{queue}.slow")).await;
    let processing = "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'processing'";
    wait_for("the slow job running", async || {
        count(&client, processing, &queue).await == 1
    })
    .await;
    let busy = prometheus_samples(&http_get(address, "/metrics").1);
    assert_eq!(sample(&busy, "soniq_worker_slots{state=\"busy\"}"), 1.0);
    let pid = runner.0.as_ref().unwrap().id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    wait_for("not ready", async || http_get(address, "/readyz").0 == 503).await;
    assert_eq!(
        http_get(address, "/readyz").1,
        "draining: shutting down, claiming no more jobs\n"
    );
    assert_eq!(http_get(address, "/healthz").0, 200, "alive while draining");
    assert_eq!(count(&client, processing, &queue).await, 1);
    std::fs::write(&gate, "").unwrap();
    wait_for_exit(runner);
    let done = "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'";
    assert_eq!(
        count(&client, done, &queue).await,
        4,
        "the slow job finished"
    );
}

#[test]
fn a_metrics_address_in_use_or_malformed_is_refused_before_the_worker_starts() {
    let queue = unique("endpoints_refused");
    let module = jobs_module(&queue, &std::env::temp_dir().join(format!("{queue}.gate")));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    for (flag, expected, status) in [
        (
            address.as_str(),
            format!("cannot listen on {address} (--metrics-listen)"),
            1,
        ),
        (
            "localhost:eighty",
            "invalid value 'localhost:eighty'".to_string(),
            2,
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_soniq"))
            .args(["worker", "--metrics-listen", flag, "--queues", &queue])
            .args(["--jobs-modules", &module])
            .env("SONIQ_DATABASE_URL", database_url())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(!stderr.contains("worker started"), "{stderr}");
    }
}
