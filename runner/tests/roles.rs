//! The runner under the extension's roles: an application logged in as a member of
//! soniq_producer enqueues but cannot run a worker; one in soniq_worker runs the jobs.
#![cfg(feature = "e2e")]

mod common;

use common::*;
use serde_json::{json, Value};
use soniq_runner::{JobContext, Outcome, Soniq};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

/// `soniq` as the login `user`, with `args`: its exit status, stdout and stderr.
#[cfg(feature = "cli")]
fn soniq_as(user: &str, args: &[&str]) -> (i32, String, String) {
    run_soniq(&url_as(user), args)
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_login_reads_through_the_cli_and_is_refused_every_change() {
    let admin = sql().await;
    let viewer = unique("viewer");
    admin
        .batch_execute(&format!("CREATE ROLE {viewer} LOGIN IN ROLE soniq_viewer"))
        .await
        .unwrap();
    let queue = unique("viewed");
    let enqueue =
        format!("SELECT soniq.enqueue('{queue}.work', '{{\"n\": 1}}', queue => '{queue}')");
    let queued: uuid::Uuid = admin.query_one(&enqueue, &[]).await.unwrap().get(0);
    let doomed: uuid::Uuid = admin.query_one(&enqueue, &[]).await.unwrap().get(0);
    admin
        .execute("SELECT soniq.dead_letter_move($1)", &[&doomed])
        .await
        .unwrap();
    let (queued_id, doomed_id) = (queued.to_string(), doomed.to_string());

    let reads: [&[&str]; 5] = [
        &["status", "--json"],
        &["jobs", "list", "--queue", &queue, "--json"],
        &["inspect", &queued_id, "--json"],
        &["dead-letter", "list", "--queue", &queue, "--json"],
        &["schedule", "list", "--json"],
    ];
    for args in reads {
        let (code, stdout, stderr) = soniq_as(&viewer, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let _: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"));
    }
    let (_, listed, _) = soniq_as(&viewer, &["jobs", "list", "--queue", &queue, "--json"]);
    assert!(listed.contains(&queued_id), "{listed}");
    let (_, dead, _) = soniq_as(
        &viewer,
        &["dead-letter", "list", "--queue", &queue, "--json"],
    );
    assert!(dead.contains(&doomed_id), "{dead}");

    let changes: [&[&str]; 5] = [
        &["queue", "pause", &queue],
        &["cancel", &queued_id],
        &["dead-letter", "replay", &doomed_id],
        &["dead-letter", "delete", &doomed_id],
        &["enqueue", "viewed.work"],
    ];
    for args in changes {
        let (code, _, stderr) = soniq_as(&viewer, args);
        assert_eq!(code, 1, "{args:?} was not refused: {stderr}");
        assert!(stderr.contains("permission denied"), "{args:?}: {stderr}");
    }
    let unchanged = admin
        .query_one(
            "SELECT (SELECT status FROM soniq.jobs WHERE id = $1),
                    (SELECT resurrection_count = 0 FROM soniq.dead_letter_jobs WHERE id = $2),
                    (SELECT count(*) FROM soniq.jobs WHERE queue = $3 OR task_name = 'viewed.work'),
                    coalesce((SELECT paused FROM soniq.queues WHERE name = $3), false)",
            &[&queued, &doomed, &queue],
        )
        .await
        .unwrap();
    assert_eq!(unchanged.get::<_, String>(0), "queued");
    assert!(unchanged.get::<_, bool>(1), "the dead job was not replayed");
    assert_eq!(
        unchanged.get::<_, i64>(2),
        1,
        "nothing enqueued, nothing deleted"
    );
    assert!(!unchanged.get::<_, bool>(3), "the queue is not paused");
    admin
        .batch_execute(&format!("DROP ROLE {viewer}"))
        .await
        .unwrap();
}
