//! Batches end to end: the callback of a batch of 2,000 jobs drained by 4 runner processes, one
//! killed mid-way, is enqueued exactly once with the batch's counts; through the library, a
//! callback runs with the failures of its batch. Counted, not timed. Needs
//! SONIQ_TEST_DATABASE_URL (a database the control plane serves: scripts/test sets it) and the
//! built example (examples/flow_worker).
#![cfg(feature = "e2e")]

mod common;

use common::{app, count, run_once, start_example, stop_runner, unique};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use soniq_runner::{JobContext, JobResult, Outcome};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_drained_by_runners_one_killed_calls_back_once() {
    let client = common::flow_runs().await;
    let queue = unique("batch_drain");
    let callbacks = unique("batch_callbacks"); // nobody serves it: the callback stays to be counted
    let batch: Uuid = client
        .query_one(
            "SELECT soniq.batch_open('batch.report', '{\"report\": 1}', $1)",
            &[&callbacks],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "SELECT count(*) FROM soniq.enqueue_many(
                 (SELECT jsonb_agg(jsonb_build_object('task_name', 'flow.hold', 'queue', $1::text,
                                                      'args', jsonb_build_object('hold_ms', 2), 'batch_id', $2::uuid))
                    FROM generate_series(1, 2000)))",
            &[&queue, &batch],
        )
        .await
        .unwrap();
    client
        .execute("SELECT soniq.batch_close($1)", &[&batch])
        .await
        .unwrap();

    let mut runners: Vec<_> = (0..4)
        .map(|_| start_example("flow_worker", &queue, 32, &[]))
        .collect();
    let done_sql = "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&client, done_sql, &queue).await < 500 {
        assert!(Instant::now() < deadline, "500 jobs were not done in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut killed = runners.pop().unwrap().0.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&client, done_sql, &queue).await < 2_000 {
        assert!(Instant::now() < deadline, "the batch was not done in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runners.into_iter().for_each(stop_runner);

    let row = client
        .query_one(
            "SELECT jobs, pending, done, dead, cancelled, finished_at IS NOT NULL, callback_job_id
               FROM soniq.batch_status($1)",
            &[&batch],
        )
        .await
        .unwrap();
    let counts: (i32, i32, i32, i32, i32, bool) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    assert_eq!(counts, (2_000, 0, 2_000, 0, 0, true));
    let callback_job: Uuid = row.get(6);
    let rows = client
        .query(
            "SELECT id, args FROM soniq.jobs WHERE queue = $1 AND task_name = 'batch.report'",
            &[&callbacks],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one callback");
    let (id, args): (Uuid, Value) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(id, callback_job);
    assert_eq!(args["report"], json!(1));
    assert_eq!(args["batch"]["done"], json!(2_000));
    assert_eq!(args["batch"]["failed_ids"], json!([]));
}

#[derive(Serialize, Deserialize)]
struct Part {
    ok: bool,
}

#[tokio::test]
async fn a_callback_runs_with_its_batchs_failures() {
    let queue = unique("batch_api");
    let mut soniq = app();
    let part = soniq
        .job("batch.part")
        .queue(&queue)
        .handler(|part: Part, _ctx: JobContext| async move {
            JobResult::Ok(if part.ok {
                Outcome::done()
            } else {
                Outcome::discard("not ok")
            })
        })
        .unwrap();
    soniq
        .job("batch.summary")
        .queue(&queue)
        .handler(|args: Value, _ctx: JobContext| async move {
            Outcome::done_with(json!({
                "done": args["batch"]["done"],
                "failed": args["batch"]["failed_ids"].as_array().map_or(0, Vec::len),
            }))
        })
        .unwrap();
    let batch = soniq
        .open_batch("batch.summary", &json!({}), Some(&queue))
        .await
        .unwrap();
    let mut failing = Vec::new();
    for ok in [true, true, false] {
        let id = soniq
            .enqueue(&part, Part { ok })
            .batch(batch)
            .await
            .unwrap();
        if !ok {
            failing.push(id);
        }
    }
    assert!(soniq.close_batch(batch).await.unwrap());
    assert!(!soniq.close_batch(batch).await.unwrap(), "closed already");
    soniq.run_worker(run_once(&queue)).await.unwrap();
    let status = soniq.batch_status(batch).await.unwrap().unwrap();
    assert_eq!(
        (status.jobs, status.pending, status.done, status.dead),
        (3, 0, 2, 1)
    );
    assert_eq!(status.failed_ids, failing);
    let callback = soniq
        .get_job(status.callback_job_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(callback.result, Some(json!({ "done": 2, "failed": 1 })));
    let closed = soniq.enqueue(&part, Part { ok: true }).batch(batch).await;
    assert!(
        closed
            .unwrap_err()
            .to_string()
            .contains("does not exist or is closed"),
        "a closed batch takes no more jobs"
    );
}

/// Closing batches while their last jobs complete, from two connections at once: whichever
/// commits second enqueues the callback, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_racing_the_last_completion_calls_back_once() {
    let client = common::sql().await;
    let queue = unique("batch_race");
    let callbacks = unique("batch_race_callbacks");
    let mut batches = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..300 {
        let batch: Uuid = client
            .query_one(
                "SELECT soniq.batch_open('batch.raced', '{}', $1)",
                &[&callbacks],
            )
            .await
            .unwrap()
            .get(0);
        let job: Uuid = client
            .query_one(
                "SELECT soniq.enqueue('batch.member', queue => $1, batch_id => $2)",
                &[&queue, &batch],
            )
            .await
            .unwrap()
            .get(0);
        batches.push(batch);
        jobs.push(job);
    }
    // Registered only now, and heartbeating from its claim on: the test cluster takes back a
    // worker silent for 2 s, and making 600 rows can take longer on a busy machine.
    let worker: Uuid = client
        .query_one(
            "SELECT soniq.register_worker('race', 1, ARRAY[$1], 300)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let claimed = client
        .query(
            "SELECT id FROM soniq.claim($1, ARRAY[$2], 300)",
            &[&worker, &queue],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(claimed, 300);
    let heartbeat = tokio::spawn(async move {
        let client = common::sql().await;
        loop {
            client
                .execute("SELECT soniq.heartbeat($1)", &[&worker])
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let closing = tokio::spawn(async move {
        let client = common::sql().await;
        for batch in batches {
            client
                .execute("SELECT soniq.batch_close($1)", &[&batch])
                .await
                .unwrap();
        }
    });
    let completing = tokio::spawn(async move {
        let client = common::sql().await;
        for job in jobs {
            client
                .execute("SELECT soniq.complete($1, $2, 1)", &[&job, &worker])
                .await
                .unwrap();
        }
    });
    closing.await.unwrap();
    completing.await.unwrap();
    heartbeat.abort();
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (args -> 'batch' ->> 'id'))
               FROM soniq.jobs WHERE queue = $1 AND task_name = 'batch.raced'",
            &[&callbacks],
        )
        .await
        .unwrap();
    let (callbacks, batches_called): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (callbacks, batches_called),
        (300, 300),
        "one callback per batch"
    );
    client
        .execute("SELECT soniq.deregister_worker($1)", &[&worker])
        .await
        .unwrap();
}
