//! Jobs that depend on jobs, end to end: a handler reads its parents' results; a graph of a
//! thousand jobs runs in dependency order across runner processes, one of them killed; parents
//! completing while their dependents are enqueued lose no dependent. Counted, not timed.
//!
//! The graph runs on examples/flow_worker, whose attempts record when their handler began and
//! ended in soniq_flow.runs. Needs SONIQ_TEST_DATABASE_URL (a database the control plane
//! serves: scripts/test sets it) and the built example.
#![cfg(feature = "e2e")]

mod common;

use common::{app, count, run_once, start_example, stop_runner, unique};
use serde_json::{json, Value};
use soniq_runner::{JobContext, JobResult, JobStatus, OnDependencyFailure, Outcome};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(serde::Serialize, serde::Deserialize)]
struct Part {
    n: i64,
}

#[tokio::test]
async fn a_handler_reads_the_results_of_the_jobs_it_depends_on() {
    let queue = unique("deps_results");
    let mut soniq = app();
    let part = soniq
        .job("deps.part")
        .queue(&queue)
        .handler(|part: Part, _ctx: JobContext| async move {
            Outcome::done_with(json!({ "n": part.n }))
        })
        .unwrap();
    let sum = soniq
        .job("deps.sum")
        .queue(&queue)
        .handler(|_: Value, ctx: JobContext| async move {
            let parents = ctx.dependency_results().await?;
            let total: i64 = parents
                .iter()
                .map(|p| p.result.as_ref().and_then(|r| r["n"].as_i64()).unwrap_or(0))
                .sum();
            let done = parents.iter().all(|p| p.status == Some(JobStatus::Done));
            Outcome::done_with(json!({ "total": total, "all_done": done }))
        })
        .unwrap();
    let mut parts = Vec::new();
    for n in [2, 3, 5] {
        parts.push(soniq.enqueue(&part, Part { n }).await.unwrap());
    }
    let total = soniq
        .enqueue(&sum, json!({}))
        .depends_on(parts.clone())
        .await
        .unwrap();
    let waiting = soniq.get_job(total).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Waiting);
    assert_eq!(waiting.depends_on, parts);
    assert_eq!(soniq.queue_stats(Some(&queue)).await.unwrap().waiting, 1);

    // One run-once worker: the parts, then the sum their completions queued.
    soniq.run_worker(run_once(&queue)).await.unwrap();
    let finished = soniq.get_job(total).await.unwrap().unwrap();
    assert_eq!(finished.status, JobStatus::Done);
    assert_eq!(
        finished.result,
        Some(json!({ "total": 10, "all_done": true }))
    );
}

#[tokio::test]
async fn a_dependent_of_a_dead_job_is_cancelled_or_runs_anyway() {
    let queue = unique("deps_failure");
    let mut soniq = app();
    let doomed = soniq
        .job("deps.doomed")
        .queue(&queue)
        .handler(|_: Value, _ctx: JobContext| async move { JobResult::Ok(Outcome::discard("no")) })
        .unwrap();
    let after = soniq
        .job("deps.after")
        .queue(&queue)
        .handler(|_: Value, ctx: JobContext| async move {
            let parents = ctx.dependency_results().await?;
            Outcome::done_with(json!({ "parent_status": parents[0].status.map(|s| s.as_str()) }))
        })
        .unwrap();
    let parent = soniq.enqueue(&doomed, json!({})).await.unwrap();
    let cancelled = soniq
        .enqueue(&after, json!({}))
        .depends_on([parent])
        .await
        .unwrap();
    let anyway = soniq
        .enqueue(&after, json!({}))
        .depends_on([parent])
        .on_dependency_failure(OnDependencyFailure::Run)
        .await
        .unwrap();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    let cancelled = soniq.get_job(cancelled).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(
        cancelled
            .last_error
            .as_deref()
            .unwrap()
            .contains("ended in the dead letter (permanent_failure)"),
        "{:?}",
        cancelled.last_error
    );
    let anyway = soniq.get_job(anyway).await.unwrap().unwrap();
    assert_eq!(anyway.status, JobStatus::Done);
    assert_eq!(anyway.result, Some(json!({ "parent_status": "dead" })));
}

/// Edges of a graph of `jobs` jobs: each job after the first few depends on one to three
/// earlier jobs (fan-out from the roots, fan-in, and diamonds where two paths meet again).
fn graph(jobs: usize) -> Vec<Vec<usize>> {
    let mut seed: u64 = 0x5eed;
    let mut next = move |below: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % below
    };
    (0..jobs)
        .map(|i| {
            if i < 4 {
                return Vec::new();
            }
            let mut parents: Vec<usize> = (0..1 + next(3)).map(|_| next(i)).collect();
            parents.sort_unstable();
            parents.dedup();
            parents
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_of_a_thousand_jobs_runs_in_dependency_order_with_a_runner_killed() {
    let client = common::flow_runs().await;
    let queue = unique("deps_graph");
    let edges = graph(1_000);
    let specs: Vec<Value> = edges
        .iter()
        .map(|parents| {
            let mut spec =
                json!({"task_name": "flow.hold", "queue": queue, "args": {"hold_ms": 20}});
            if !parents.is_empty() {
                spec["depends_on"] = json!(parents);
            }
            spec
        })
        .collect();
    let ids: Vec<Uuid> = client
        .query(
            "SELECT soniq.enqueue_many($1::jsonb)",
            &[&Value::Array(specs)],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids.len(), 1_000);
    let waiting = count(
        &client,
        "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'waiting'",
        &queue,
    )
    .await;
    assert_eq!(
        waiting as usize,
        edges.iter().filter(|p| !p.is_empty()).count()
    );

    let mut runners: Vec<_> = (0..4)
        .map(|_| start_example("flow_worker", &queue, 16, &[]))
        .collect();
    // One runner killed mid-way, with jobs running: the control plane takes them back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &client,
        "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'",
        &queue,
    )
    .await
        < 300
    {
        assert!(Instant::now() < deadline, "300 jobs were not done in 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut killed = runners.pop().unwrap().0.take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(
        &client,
        "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'",
        &queue,
    )
    .await
        < 1_000
    {
        let stuck = count(
            &client,
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status <> 'done'",
            &queue,
        )
        .await;
        assert!(
            Instant::now() < deadline,
            "{stuck} of 1000 jobs not done in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runners.into_iter().for_each(stop_runner);

    // Every job ran to its end, each attempt once; a job ran again only when the killed
    // runner held it (its run cut short, or ended with the outcome not yet recorded).
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE finished = 0), count(*) FILTER (WHERE attempts_run <> runs),
                    count(*) FILTER (WHERE runs > 1)
               FROM (SELECT count(r.ended) AS finished, count(*) AS runs, count(DISTINCT r.attempt) AS attempts_run
                       FROM soniq.jobs j LEFT JOIN soniq_flow.runs r ON r.job_id = j.id
                      WHERE j.queue = $1 GROUP BY j.id) per_job",
            &[&queue],
        )
        .await
        .unwrap();
    let (unfinished, attempt_twice, ran_again): (i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (unfinished, attempt_twice),
        (0, 0),
        "jobs never finished, attempts run twice"
    );
    // A runner holds at most 4 jobs per slot (running, or run with the outcome not yet
    // recorded): 64 at concurrency 16.
    assert!(
        ran_again <= 64,
        "{ran_again} jobs ran again; the killed runner held at most 64"
    );
    // Every run of a job began after the run of each job it depends on had ended.
    let early: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs c CROSS JOIN LATERAL unnest(c.depends_on) p
               JOIN soniq_flow.runs cr ON cr.job_id = c.id
              WHERE c.queue = $1 AND NOT EXISTS (
                        SELECT FROM soniq_flow.runs pr WHERE pr.job_id = p AND pr.ended < cr.began)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        early, 0,
        "runs that began before a job they depend on had finished"
    );
    let edges_checked: i64 = count(
        &client,
        "SELECT count(*) FROM soniq.jobs c CROSS JOIN LATERAL unnest(c.depends_on) p WHERE c.queue = $1",
        &queue,
    )
    .await;
    assert_eq!(
        edges_checked as usize,
        edges.iter().map(Vec::len).sum::<usize>()
    );
}

/// Parents completing while dependents naming them are enqueued, from many connections at
/// once: whichever commits first, no dependent is left waiting for a job that is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_completing_while_dependents_are_enqueued_lose_no_dependent() {
    let client = common::sql().await;
    let queue = unique("deps_race");
    let parents: Vec<Uuid> = client
        .query(
            "SELECT soniq.enqueue_many('deps.race', array_fill('{}'::jsonb, ARRAY[400]), queue => $1)",
            &[&queue],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Registered just before its claim: the test cluster takes back a worker silent for 2 s.
    let worker: Uuid = client
        .query_one(
            "SELECT soniq.register_worker('race', 1, ARRAY[$1], 400)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let claimed = client
        .query(
            "SELECT id FROM soniq.claim($1, ARRAY[$2], 400)",
            &[&worker, &queue],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(claimed, 400);
    // The worker's heartbeat, so the control plane (2 s timeout here) leaves its leases be.
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

    // Four connections complete the parents one by one; four enqueue three dependents of
    // each (the first takes the parent's row lock to mark it, the others find it marked).
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let mine: Vec<Uuid> = parents.iter().copied().skip(lane).step_by(4).collect();
        tasks.push(tokio::spawn(async move {
            let client = common::sql().await;
            for id in mine {
                client
                    .execute("SELECT soniq.complete($1, $2, 1)", &[&id, &worker])
                    .await
                    .unwrap();
            }
        }));
        let mine: Vec<Uuid> = parents
            .iter()
            .copied()
            .skip((lane + 2) % 4)
            .step_by(4)
            .collect();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let client = common::sql().await;
            for id in mine {
                for _ in 0..3 {
                    client
                        .execute(
                            "SELECT soniq.enqueue('deps.race_child', queue => $1, depends_on => ARRAY[$2::uuid])",
                            &[&queue, &id],
                        )
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    heartbeat.abort();
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'waiting')
               FROM soniq.jobs WHERE queue = $1 AND task_name = 'deps.race_child'",
            &[&queue],
        )
        .await
        .unwrap();
    let (children, queued, waiting): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(children, 1_200);
    assert_eq!(
        (queued, waiting),
        (1_200, 0),
        "every parent is done: no dependent may wait"
    );
    client
        .execute("SELECT soniq.deregister_worker($1)", &[&worker])
        .await
        .unwrap();
}
