//! Many claimers on one queue: every job is claimed and completed exactly once.
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use std::collections::HashSet;
use std::thread;

const JOBS: usize = 20_000;
const CLAIMERS: usize = 8;

/// One claimer: its own connection and worker row; claims in batches until the queue is
/// empty and completes each batch in one round trip. Returns the ids it completed.
fn drain(queue: &str, batch_size: i32) -> Vec<String> {
    let mut client = common::connect();
    let worker: String = client
        .query_one(
            "SELECT soniq.register_worker(pid => pg_backend_pid())::text",
            &[],
        )
        .unwrap()
        .get(0);
    let mut completed = Vec::new();
    loop {
        // A live worker heartbeats; the test cluster presumes a worker dead after 2 s.
        client
            .query("SELECT soniq.heartbeat($1::text::uuid)", &[&worker])
            .unwrap();
        let rows = client
            .query(
                "SELECT id::text, attempt FROM soniq.claim($1::text::uuid, ARRAY[$2], $3)",
                &[&worker, &queue, &batch_size],
            )
            .unwrap();
        if rows.is_empty() {
            break;
        }
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.get(1)).collect();
        let accepted: Vec<String> = client
            .query(
                "SELECT id::text FROM soniq.complete_many($1::text[]::uuid[], $2::text::uuid, $3) AS id",
                &[&ids, &worker, &attempts],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            accepted.len(),
            ids.len(),
            "a lease held by a live worker was refused"
        );
        completed.extend(accepted);
    }
    client
        .execute("SELECT soniq.deregister_worker($1::text::uuid)", &[&worker])
        .unwrap();
    completed
}

#[test]
fn eight_claimers_complete_every_job_exactly_once() {
    let queue = common::unique_name("conc");
    let mut client = common::connect();
    for chunk in 0..JOBS / 1000 {
        let args: Vec<String> = (0..1000)
            .map(|i| format!(r#"{{"n": {}}}"#, chunk * 1000 + i))
            .collect();
        client
            .query(
                "SELECT soniq.enqueue_many('conc.job', $1::text[]::jsonb[], queue => $2)",
                &[&args, &queue],
            )
            .unwrap();
    }

    // Mixed batch sizes: single-job claims race with large batches.
    let handles: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let queue = queue.clone();
            let batch_size = [1, 10, 50, 100][i % 4];
            thread::spawn(move || drain(&queue, batch_size))
        })
        .collect();
    let per_claimer: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let total: usize = per_claimer.iter().map(Vec::len).sum();
    let distinct: HashSet<&String> = per_claimer.iter().flatten().collect();
    assert_eq!(total, JOBS, "completions counted across claimers");
    assert_eq!(distinct.len(), JOBS, "no job was completed twice");
    assert!(
        per_claimer.iter().filter(|ids| !ids.is_empty()).count() > 1,
        "the work was shared between claimers"
    );

    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status <> 'done'),
                    count(*) FILTER (WHERE attempts <> 1), count(DISTINCT args->>'n')
               FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .unwrap();
    let (done, not_done, reclaimed, distinct_args): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(done, JOBS as i64, "every job is done");
    assert_eq!(not_done, 0, "no job left queued or processing");
    assert_eq!(reclaimed, 0, "no job was claimed twice");
    assert_eq!(distinct_args, JOBS as i64);
    println!("{CLAIMERS} claimers: {total} of {JOBS} jobs done exactly once");
}

#[test]
fn concurrent_duplicate_enqueues_yield_one_job() {
    let key = common::unique_name("dedup");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let key = key.clone();
            thread::spawn(move || {
                let mut client = common::connect();
                (0..50)
                    .map(|_| {
                        client
                            .query_one(
                                "SELECT soniq.enqueue('dedup.race', '{\"k\": 1}', dedup_key => $1)::text",
                                &[&key],
                            )
                            .unwrap()
                            .get::<_, String>(0)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: HashSet<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every caller got the same job back");
    let mut client = common::connect();
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE dedup_key = $1",
            &[&key],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one row for the key");
}
