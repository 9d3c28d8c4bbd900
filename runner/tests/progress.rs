//! Progress and checkpoints from a handler: a job killed mid-run with its runner resumes from
//! its checkpoint in the next attempt; progress shows in the job. Needs SONIQ_TEST_DATABASE_URL
//! (a database the control plane serves: scripts/test sets it) and the built example.
#![cfg(feature = "e2e")]

mod common;

use common::{app, start_example, stop_runner, unique};
use serde_json::{json, Value};
use soniq_runner::JobStatus;
use std::time::{Duration, Instant};

/// Where the job's checkpoint says it got to (0: none yet).
async fn reached(client: &tokio_postgres::Client, job: uuid::Uuid) -> i64 {
    client
        .query_one(
            "SELECT coalesce((SELECT (checkpoint ->> 'at')::bigint FROM soniq.job_progress WHERE job_id = $1), 0)",
            &[&job],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_with_its_runner_resumes_from_its_checkpoint() {
    let queue = unique("resume");
    let soniq = app();
    let client = common::sql().await;
    let job: uuid::Uuid = client
        .query_one(
            "SELECT soniq.enqueue('resume.count', '{\"to\": 40, \"step_ms\": 50}', queue => $1)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let mut first = start_example("checkpoint_worker", &queue, 1, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while reached(&client, job).await < 10 {
        assert!(Instant::now() < deadline, "no checkpoint at 10 within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut killed = first.0.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let at_kill = reached(&client, job).await;
    let progress = soniq.get_job(job).await.unwrap().unwrap().progress.unwrap();
    assert_eq!(progress["of"], json!(40), "{progress}");

    // The control plane takes the job back from the dead worker; a new runner resumes it.
    let second = start_example("checkpoint_worker", &queue, 1, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let info = soniq.get_job(job).await.unwrap().unwrap();
        if info.status == JobStatus::Done {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "the job was not done in 60 s: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop_runner(second);
    let result: Value = finished.result.unwrap();
    assert_eq!(result["attempt"], json!(2), "{result}");
    // It began where the killed attempt's last checkpoint says, not from the start.
    assert_eq!(result["began_at"].as_i64(), Some(at_kill), "{result}");
    assert!(at_kill >= 10, "{result}");
    // Progress is kept at most once a second: the last kept report is of this job's count.
    assert_eq!(finished.progress.unwrap()["of"], json!(40));
}
