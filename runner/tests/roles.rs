//! The runner under the extension's roles: an application logged in as a member of
//! soniq_producer enqueues but cannot run a worker; one in soniq_worker runs the jobs.
#![cfg(feature = "e2e")]

mod common;

use common::*;
use serde_json::{json, Value};
use soniq_runner::{JobContext, Outcome, Soniq};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The test database's URL with another user (the test cluster trusts local logins).
fn url_as(user: &str) -> String {
    let url = database_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_login_enqueues_and_a_worker_login_runs_the_jobs() {
    let admin = sql().await;
    let producer = unique("producer");
    let worker = unique("worker");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {producer} LOGIN IN ROLE soniq_producer;
             CREATE ROLE {worker} LOGIN IN ROLE soniq_worker;"
        ))
        .await
        .unwrap();
    let queue = unique("roles");
    let task_name = format!("{queue}.work");
    let runs = Arc::new(AtomicUsize::new(0));
    let app = |user: &str| {
        let settings = settings(4)
            .to_builder()
            .database_url(url_as(user))
            .build()
            .unwrap();
        let mut soniq = Soniq::with_settings(settings).unwrap();
        let runs = Arc::clone(&runs);
        let task = soniq
            .job(&task_name)
            .queue(&queue)
            .handler(move |_args: Value, _ctx: JobContext| {
                let runs = Arc::clone(&runs);
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(Outcome::done())
                }
            })
            .unwrap();
        (soniq, task)
    };

    let (as_producer, task) = app(&producer);
    for n in 0..5 {
        as_producer.enqueue(&task, json!({ "n": n })).await.unwrap();
    }
    let refused = as_producer
        .run_worker(run_once(&queue))
        .await
        .expect_err("a producer ran a worker");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let (as_worker, _) = app(&worker);
    let report = as_worker.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 5);
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    let done: i64 = admin
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, 5);
    admin
        .batch_execute(&format!("DROP ROLE {producer}; DROP ROLE {worker};"))
        .await
        .unwrap();
}
