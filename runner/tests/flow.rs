//! Flow control across runner processes: limits hold however many workers claim, fair share
//! gives a small tenant its turn, and a killed worker's slots come back. Counted, not timed.
//!
//! Runner processes (examples/flow_worker) run jobs that record when their handler began and
//! ended in soniq_flow.runs; the most that overlapped is counted from those spans, and the
//! starts in any rate window from the jobs' `started_at`. Needs SONIQ_TEST_DATABASE_URL (a
//! database the control plane serves: scripts/test sets it) and the built example.
#![cfg(feature = "e2e")]

mod common;

use common::{start_example, stop_runner, unique, Runner};
use soniq_runner::{QueueSettings, Soniq};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Scenarios share the table of runs and start many runners: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn runners(queue: &str, count: usize, concurrency: usize) -> Vec<Runner> {
    (0..count)
        .map(|_| start_example("flow_worker", queue, concurrency, &[]))
        .collect()
}

/// Enqueue `jobs` jobs holding `hold_ms` each, of `tenants` tenants in turn.
async fn enqueue(client: &Client, queue: &str, jobs: i32, tenants: i32, hold_ms: i32) {
    client
        .execute(
            "SELECT count(*) FROM soniq.enqueue_many('flow.hold',
                 ARRAY(SELECT jsonb_build_object('tenant', 't' || (g % $3), 'hold_ms', $4::int)
                         FROM generate_series(1, $2::int) g), queue => $1)",
            &[&queue, &jobs, &tenants, &hold_ms],
        )
        .await
        .unwrap();
}

async fn until_all_done(client: &Client, queue: &str, jobs: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let done: i64 = client
            .query_one(
                "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'",
                &[&queue],
            )
            .await
            .unwrap()
            .get(0);
        if done == jobs {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {jobs} jobs done in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job of the queue ran exactly once (one run, begun and ended).
async fn each_ran_once(client: &Client, queue: &str, jobs: i64) {
    let row = client
        .query_one(
            "SELECT count(DISTINCT r.job_id), count(*), count(r.ended)
               FROM soniq_flow.runs r JOIN soniq.jobs j ON j.id = r.job_id WHERE j.queue = $1",
            &[&queue],
        )
        .await
        .unwrap();
    let (distinct, runs, ended): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (distinct, runs, ended),
        (jobs, jobs, jobs),
        "each job ran once"
    );
}

/// The most runs of the queue that overlapped, per concurrency key when `by_key` (the largest
/// over keys): a running sum over begin (+1) and end (-1) events, ends first at a tie. Runs
/// that never ended (their runner was killed) are left out.
async fn most_at_once(client: &Client, queue: &str, by_key: bool) -> i64 {
    client
        .query_one(
            "WITH events AS (
                 SELECT CASE WHEN $2 THEN j.concurrency_key ELSE '' END AS key, r.began AS at, 1 AS step
                   FROM soniq_flow.runs r JOIN soniq.jobs j ON j.id = r.job_id
                  WHERE j.queue = $1 AND r.ended IS NOT NULL
                 UNION ALL
                 SELECT CASE WHEN $2 THEN j.concurrency_key ELSE '' END, r.ended, -1
                   FROM soniq_flow.runs r JOIN soniq.jobs j ON j.id = r.job_id
                  WHERE j.queue = $1 AND r.ended IS NOT NULL
             )
             SELECT max(running)::bigint FROM (
                 SELECT sum(step) OVER (PARTITION BY key ORDER BY at, step ROWS UNBOUNDED PRECEDING) AS running
                   FROM events) s",
            &[&queue, &by_key],
        )
        .await
        .unwrap()
        .get(0)
}

async fn configure(queue: &str, settings: QueueSettings) {
    let app = Soniq::with_settings(common::settings(1)).unwrap();
    app.configure_queue(queue, &settings).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_holds_across_four_runners_at_concurrency_32() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = common::flow_runs().await;
    let queue = unique("limit");
    configure(&queue, QueueSettings::new().max_running(10)).await;
    let jobs = 2_000;
    enqueue(&client, &queue, jobs, 1, 5).await;
    let runners = runners(&queue, 4, 32);
    until_all_done(&client, &queue, jobs.into(), Duration::from_secs(300)).await;
    runners.into_iter().for_each(stop_runner);
    each_ran_once(&client, &queue, jobs.into()).await;
    let most = most_at_once(&client, &queue, false).await;
    eprintln!("max_running 10, 4 x 32 slots: at most {most} ran at once");
    assert!(most <= 10, "{most} ran at once, over max_running 10");
    assert!(
        most > 1,
        "runs never overlapped: the limit did not let 10 run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_hold_over_a_thousand_keys() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = common::flow_runs().await;
    let queue = unique("per_key");
    configure(&queue, QueueSettings::new().max_running_per_key(2)).await;
    // Half the jobs in ten hot keys (every claim wants them), half spread over 1,000 keys.
    let jobs = 5_000;
    client
        .execute(
            "SELECT count(*) FROM soniq.enqueue_many('flow.hold',
                 ARRAY(SELECT jsonb_build_object('tenant', 't' || CASE WHEN g % 2 = 0 THEN g % 10 ELSE g % 1000 END,
                                                 'hold_ms', 5)
                         FROM generate_series(1, $2::int) g), queue => $1)",
            &[&queue, &jobs],
        )
        .await
        .unwrap();
    let runners = runners(&queue, 4, 32);
    until_all_done(&client, &queue, jobs.into(), Duration::from_secs(300)).await;
    runners.into_iter().for_each(stop_runner);
    each_ran_once(&client, &queue, jobs.into()).await;
    let per_key = most_at_once(&client, &queue, true).await;
    let overall = most_at_once(&client, &queue, false).await;
    eprintln!("max_running_per_key 2 over 1,000 keys: at most {per_key} of a key, {overall} in all at once");
    assert!(
        per_key <= 2,
        "{per_key} of one key ran at once, over its limit 2"
    );
    assert!(
        overall > 2,
        "only {overall} ran at once: the keys did not run side by side"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_in_every_window() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = common::flow_runs().await;
    let queue = unique("rate");
    configure(
        &queue,
        QueueSettings::new().rate_limit(40, Duration::from_secs(1)),
    )
    .await;
    let jobs = 200;
    enqueue(&client, &queue, jobs, 1, 1).await;
    let runners = runners(&queue, 4, 32);
    until_all_done(&client, &queue, jobs.into(), Duration::from_secs(120)).await;
    runners.into_iter().for_each(stop_runner);
    each_ran_once(&client, &queue, jobs.into()).await;
    // A start at t counts the starts in (t - 1 s, t]: the most in any window of the period.
    let row = client
        .query_one(
            "SELECT max((SELECT count(*) FROM soniq.jobs o
                          WHERE o.queue = j.queue AND o.started_at > j.started_at - interval '1 second'
                            AND o.started_at <= j.started_at))::bigint,
                    extract(epoch FROM max(started_at) - min(started_at))::float8
               FROM soniq.jobs j WHERE j.queue = $1",
            &[&queue],
        )
        .await
        .unwrap();
    let (most, spread): (i64, f64) = (row.get(0), row.get(1));
    eprintln!(
        "rate_limit 40/s: at most {most} starts in a window; 200 jobs started over {spread:.1} s"
    );
    assert!(
        most <= 40,
        "{most} jobs started in one window, over the rate limit 40"
    );
    // 200 starts at 40 a window need at least four full windows after the first burst.
    assert!(
        spread >= 4.0,
        "200 jobs started within {spread:.1} s: faster than 40 a second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_share_gives_a_small_tenant_its_turn_behind_a_huge_backlog() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = common::flow_runs().await;
    let queue = unique("fair");
    configure(&queue, QueueSettings::new().fair_share(true)).await;
    client
        .execute(
            "SELECT count(*) FROM soniq.enqueue_many('flow.hold',
                 ARRAY(SELECT jsonb_build_object('tenant', 'a', 'hold_ms', 0) FROM generate_series(1, 100000)),
                 queue => $1)",
            &[&queue],
        )
        .await
        .unwrap();
    enqueue(&client, &queue, 10, 1, 0).await; // tenant t0, after a's 100,000
    let worker: uuid::Uuid = client
        .query_one(
            "SELECT soniq.register_worker('fair-test', 1, ARRAY[$1], 64)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let mut small_tenant_started = Vec::new();
    for round in 1..=3 {
        let claimed: i64 = client
            .query_one(
                "SELECT count(*) FILTER (WHERE args ->> 'tenant' = 't0') FROM soniq.claim($1, ARRAY[$2], 10)",
                &[&worker, &queue],
            )
            .await
            .unwrap()
            .get(0);
        small_tenant_started.push((round, claimed));
    }
    eprintln!("tenant t0's jobs per claim of 10: {small_tenant_started:?}");
    // Two keys with jobs: each claim of ten takes five of each.
    let first_two: i64 = small_tenant_started.iter().take(2).map(|(_, n)| n).sum();
    assert_eq!(
        first_two, 10,
        "all of t0's ten jobs start within the first two claims of ten"
    );
    client
        .execute("SELECT soniq.deregister_worker($1)", &[&worker])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_slots_come_back_with_its_jobs() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = common::flow_runs().await;
    let queue = unique("killed");
    configure(&queue, QueueSettings::new().max_running(4)).await;
    enqueue(&client, &queue, 4, 1, 3_000).await; // held long enough to be killed mid-run
    enqueue(&client, &queue, 8, 1, 10).await;
    let mut first = runners(&queue, 1, 8);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one("SELECT count(*) FROM soniq_flow.runs r JOIN soniq.jobs j ON j.id = r.job_id WHERE j.queue = $1", &[&queue])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 4
    {
        assert!(Instant::now() < deadline, "the first runner never ran its four jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Killed while it holds all four slots; the short jobs wait behind the limit.
    let mut child = first.pop().unwrap().0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let processing: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'processing'",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        processing, 4,
        "the killed runner's four jobs hold the queue's slots"
    );
    // The control plane takes the dead worker's jobs back; the slots come back with them.
    let second = runners(&queue, 1, 8);
    until_all_done(&client, &queue, 12, Duration::from_secs(60)).await;
    second.into_iter().for_each(stop_runner);
    let most = most_at_once(&client, &queue, false).await;
    assert!(most <= 4, "{most} ran at once, over max_running 4");
}
