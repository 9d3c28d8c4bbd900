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

/// Producers racing with overlapping batches (each batch repeats its keys, and every batch
/// shares them): one queued job per key, and every id a batch returned is its key's job.
#[test]
fn concurrent_overlapping_batches_yield_one_job_per_key() {
    const KEYS: i32 = 40;
    let prefix = common::unique_name("batch-dedup");
    let handles: Vec<_> = (0..8)
        .map(|producer| {
            let prefix = prefix.clone();
            thread::spawn(move || {
                let mut client = common::connect();
                let mut returned = Vec::new();
                for round in 0..20 {
                    // Every key twice, in an order of this producer's and round's own.
                    let keys: Vec<String> = (0..2 * KEYS)
                        .map(|i| format!("{prefix}-{}", (i * 7 + producer * 13 + round * 3) % KEYS))
                        .collect();
                    let specs: Vec<serde_json::Value> = keys
                        .iter()
                        .map(
                            |key| serde_json::json!({"task_name": "dedup.batch", "dedup_key": key}),
                        )
                        .collect();
                    let ids = client
                        .query(
                            "SELECT id::text FROM soniq.enqueue_many($1::text::jsonb) AS e(id)",
                            &[&serde_json::Value::from(specs).to_string()],
                        )
                        .unwrap();
                    assert_eq!(ids.len(), keys.len(), "one id per element");
                    returned.extend(
                        keys.into_iter()
                            .zip(ids.iter().map(|row| row.get::<_, String>(0))),
                    );
                }
                returned
            })
        })
        .collect();
    let returned: Vec<(String, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let mut client = common::connect();
    let rows = client
        .query(
            "SELECT dedup_key, id::text FROM soniq.jobs WHERE dedup_key LIKE $1 || '-%'",
            &[&prefix],
        )
        .unwrap();
    assert_eq!(rows.len(), KEYS as usize, "one row per key");
    let job_of_key: std::collections::HashMap<String, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for (key, id) in &returned {
        assert_eq!(
            &job_of_key[key], id,
            "a batch returned another job than its key's"
        );
    }
}
