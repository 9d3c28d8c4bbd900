//! The runner against the real extension (the test cluster of scripts/test).
#![cfg(feature = "e2e")]

mod common;

use common::*;

use serde::{Deserialize, Serialize};
use soniq_runner::{JobContext, JobError, JobResult, JobStatus, Outcome, Settings, Soniq};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Resolves once `probe` is true (checked every 100 ms), or after `limit`.
async fn until(limit: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !probe() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct Item {
    n: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_at_concurrency_16_each_run_once() {
    let queue = unique("thousand");
    let runs: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let mut soniq = app_with(16);
    let seen = Arc::clone(&runs);
    let task = soniq
        .job(format!("{queue}.item"))
        .queue(&queue)
        .handler(move |item: Item, _ctx: JobContext| {
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap().entry(item.n).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    for n in 0..1000 {
        soniq.enqueue(&task, Item { n }).await.unwrap();
    }
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 1000);
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1000, "every job ran");
    assert!(runs.values().all(|&count| count == 1), "no job ran twice");
    let row = sql()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1000, 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_twice_then_succeeds_sees_attempts_one_to_three() {
    let queue = unique("flaky");
    let attempts: Arc<Mutex<Vec<(i32, i32, Instant)>>> = Arc::default();
    let mut soniq = app_with(2);
    let seen = Arc::clone(&attempts);
    let task = soniq
        .job(format!("{queue}.flaky"))
        .queue(&queue)
        .retries(3)
        .retry_delay([Duration::from_millis(300), Duration::from_millis(600)])
        .handler(move |_: Item, ctx: JobContext| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap()
                    .push((ctx.attempt, ctx.max_attempts, Instant::now()));
                if ctx.attempt < 3 {
                    return Err(JobError::new(format!("attempt {} failed", ctx.attempt)));
                }
                Outcome::done_with(serde_json::json!({"attempt": ctx.attempt}))
            }
        })
        .unwrap();
    let job = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let watched = Arc::clone(&attempts);
    soniq
        .run_worker_until(
            serve(&queue),
            until(Duration::from_secs(20), move || {
                watched.lock().unwrap().len() >= 3
            }),
        )
        .await
        .unwrap();
    let attempts = attempts.lock().unwrap().clone();
    let numbers: Vec<(i32, i32)> = attempts.iter().map(|(a, m, _)| (*a, *m)).collect();
    assert_eq!(numbers, vec![(1, 4), (2, 4), (3, 4)]);
    assert!(
        attempts[1].2 - attempts[0].2 >= Duration::from_millis(300),
        "first retry waited its delay"
    );
    assert!(
        attempts[2].2 - attempts[1].2 >= Duration::from_millis(600),
        "second retry waited its delay"
    );
    let row = sql()
        .await
        .query_one(
            "SELECT status, result->>'attempt', last_error FROM soniq.jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "done");
    assert_eq!(row.get::<_, String>(1), "3");
    assert_eq!(row.get::<_, String>(2), "attempt 2 failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_is_retried_then_dead_lettered_with_reason_timeout() {
    let queue = unique("slow");
    let mut soniq = app_with(2);
    let task = soniq
        .job(format!("{queue}.slow"))
        .queue(&queue)
        .retries(1)
        .timeout(Duration::from_millis(300))
        .handler(|_: Item, _ctx: JobContext| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            JobResult::Ok(Outcome::done())
        })
        .unwrap();
    let job = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 2, "the first timeout was retried once");
    let row = sql()
        .await
        .query_one(
            "SELECT dead_letter_reason, attempts, last_error FROM soniq.dead_letter_jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "timeout");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, String>(2), "Job timed out after 0.3s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_goes_on() {
    let queue = unique("panic");
    let mut soniq = app_with(2);
    let task = soniq
        .job(format!("{queue}.maybe_panic"))
        .queue(&queue)
        .retries(0)
        .handler(|item: Item, _ctx: JobContext| async move {
            if item.n == 0 {
                panic!("boom in the handler");
            }
            JobResult::Ok(Outcome::done())
        })
        .unwrap();
    let panicking = soniq.enqueue(&task, Item { n: 0 }).await.unwrap();
    for n in 1..=5 {
        soniq.enqueue(&task, Item { n }).await.unwrap();
    }
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 6);
    let client = sql().await;
    let done: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, 5);
    let error: String = client
        .query_one(
            "SELECT last_error FROM soniq.dead_letter_jobs WHERE id = $1",
            &[&panicking],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(error, "handler panicked: boom in the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_claims_a_task_it_has_no_handler_for() {
    let queue = unique("foreign");
    let settings = Settings::builder(database_url())
        .enqueue_validation(soniq_runner::EnqueueValidation::None)
        .build()
        .unwrap();
    let producer = Soniq::with_settings(settings).unwrap();
    let foreign = producer
        .enqueue_by_name(format!("{queue}.elsewhere"), serde_json::json!({}))
        .queue(&queue)
        .await
        .unwrap();
    let mut soniq = app_with(2);
    let task = soniq
        .job(format!("{queue}.here"))
        .queue(&queue)
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 1);
    let status: String = sql()
        .await
        .query_one("SELECT status FROM soniq.jobs WHERE id = $1", &[&foreign])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        status, "queued",
        "the job without a handler here was left for another worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_unfinished_jobs_back_without_using_an_attempt() {
    let queue = unique("shutdown");
    let settings = Settings::builder(database_url())
        .shutdown_timeout(Duration::from_millis(200))
        .poll_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut soniq = Soniq::with_settings(settings).unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let task = soniq
        .job(format!("{queue}.long"))
        .queue(&queue)
        .retries(0)
        .handler(move |_: Item, _ctx: JobContext| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    let job = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let watched = Arc::clone(&started);
    let report = soniq
        .run_worker_until(
            serve(&queue),
            until(Duration::from_secs(10), move || {
                watched.load(Ordering::SeqCst) == 1
            }),
        )
        .await
        .unwrap();
    assert_eq!(report.handed_back, 1);
    let row = sql()
        .await
        .query_one(
            "SELECT status, attempts, worker_id IS NULL FROM soniq.jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "queued",
        "the job is back in the queue, not lost"
    );
    assert_eq!(row.get::<_, i32>(1), 0, "its only attempt was not used up");
    assert!(row.get::<_, bool>(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_reaches_the_running_handler_through_the_heartbeat() {
    let queue = unique("cancel");
    let mut soniq = app_with(2);
    let task = soniq
        .job(format!("{queue}.long"))
        .queue(&queue)
        .handler(|_: Item, _ctx: JobContext| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            JobResult::Ok(Outcome::done())
        })
        .unwrap();
    let job = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let canceller = app_with(1);
    let stop = async {
        let client = sql().await;
        loop {
            let status: String = client
                .query_one("SELECT status FROM soniq.jobs WHERE id = $1", &[&job])
                .await
                .unwrap()
                .get(0);
            match status.as_str() {
                "processing" => {
                    assert!(canceller.cancel_job(job).await.unwrap());
                }
                "cancelled" => break,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        soniq.run_worker_until(serve(&queue), stop),
    )
    .await
    .expect("the cancellation arrived")
    .unwrap();
    let status: String = sql()
        .await
        .query_one("SELECT status FROM soniq.jobs WHERE id = $1", &[&job])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_snooze_cancel_and_discard() {
    let queue = unique("outcomes");
    let mut soniq = app_with(2);
    let task = soniq
        .job(format!("{queue}.decide"))
        .queue(&queue)
        .retries(3)
        .handler(|item: Item, _ctx: JobContext| async move {
            JobResult::Ok(match item.n {
                1 => Outcome::snooze(Duration::from_secs(3600)),
                2 => Outcome::cancel("not needed any more"),
                _ => Outcome::discard("the card was declined"),
            })
        })
        .unwrap();
    let snoozed = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let cancelled = soniq.enqueue(&task, Item { n: 2 }).await.unwrap();
    let discarded = soniq.enqueue(&task, Item { n: 3 }).await.unwrap();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    let client = sql().await;
    let row = client
        .query_one(
            "SELECT status, attempts, scheduled_at > now() + interval '50 minutes' FROM soniq.jobs WHERE id = $1",
            &[&snoozed],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        ("queued".into(), 0, true)
    );
    let row = client
        .query_one(
            "SELECT status, last_error FROM soniq.jobs WHERE id = $1",
            &[&cancelled],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("cancelled".into(), "not needed any more".into())
    );
    let row = client
        .query_one(
            "SELECT dead_letter_reason, attempts FROM soniq.dead_letter_jobs WHERE id = $1",
            &[&discarded],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("permanent_failure".into(), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_enqueue_on_tokio_postgres_rolls_back_with_the_caller() {
    let queue = unique("tx");
    let mut soniq = app_with(1);
    let task = soniq
        .job(format!("{queue}.invoice"))
        .queue(&queue)
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let mut client = sql().await;
    let tx = client.transaction().await.unwrap();
    let rolled_back = soniq
        .enqueue(&task, Item { n: 1 })
        .send_on(&tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let committed = soniq
        .enqueue(&task, Item { n: 2 })
        .send_on(&tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows: Vec<uuid::Uuid> = client
        .query("SELECT id FROM soniq.jobs WHERE queue = $1", &[&queue])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![committed]);
    assert_ne!(rolled_back, committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_refuses_bad_input_before_the_database() {
    let queue = unique("refuse");
    let mut soniq = app_with(1);
    soniq
        .job(format!("{queue}.typed"))
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let err = soniq
        .enqueue_by_name(format!("{queue}.typo"), serde_json::json!({}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no handler in this process"), "{err}");
    let err = soniq
        .enqueue_by_name(format!("{queue}.typed"), serde_json::json!({"n": "one"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid arguments"), "{err}");
    let err = soniq
        .enqueue_by_name(format!("{queue}.typed"), serde_json::json!({"n": 1}))
        .priority(0)
        .await
        .unwrap_err();
    assert_eq!(
        err.sqlstate(),
        Some(tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
    assert!(soniq
        .job("Not A Name")
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .is_err());
}

/// In a database no control plane serves, a worker's own maintenance rounds take back the
/// jobs of dead workers (SONIQ_HEARTBEAT_TIMEOUT, every SONIQ_CLEANUP_INTERVAL) and prune
/// finished jobs: all of a backlog in one round, however many batches it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rescues_and_prunes_where_no_control_plane_runs() {
    let database = fresh_database("unserved").await;
    let client = &database.client;
    // A worker that claimed a job and died long ago.
    let job: uuid::Uuid = client
        .query_one(
            "WITH w AS (SELECT soniq.register_worker() AS id), j AS (SELECT soniq.enqueue('other.task') AS id)
             SELECT c.id FROM w, j, LATERAL soniq.claim(w.id) c",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute("UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour'")
        .await
        .unwrap();
    // Finished jobs past their result TTL, 25 pruning batches (test shortcut: rows written
    // directly).
    client
        .batch_execute(
            "INSERT INTO soniq.jobs (task_name, status, worker_id, finished_at, expires_at)
             SELECT 'old.done', 'done', soniq.uuid_v7(), now() - interval '2 hours', now() - interval '1 hour'
               FROM generate_series(1, 25000)",
        )
        .await
        .unwrap();

    let settings = settings_on(&database, 1)
        .to_builder()
        .heartbeat_timeout(Duration::from_secs(60))
        .cleanup_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut soniq = Soniq::with_settings(settings).unwrap();
    soniq
        .job("mine.task")
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let status = || async {
        let row = client
            .query_one("SELECT status FROM soniq.jobs WHERE id = $1", &[&job])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    let left = || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM soniq.jobs WHERE task_name = 'old.done'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    // The first round is due at 10 s, the second at 20: by 15 s only the first has run.
    let stop = async {
        let deadline = Instant::now() + Duration::from_secs(15);
        while (status().await != "queued" || left().await > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    soniq
        .run_worker_until(soniq_runner::WorkerOptions::default(), stop)
        .await
        .unwrap();
    assert_eq!(
        status().await,
        "queued",
        "the dead worker's job was taken back"
    );
    assert_eq!(
        left().await,
        0,
        "the first round pruned every expired job, a batch per transaction"
    );
    drop(soniq);
    drop_database(database).await;
}

/// A row an older version stored may hold a timeout no Duration holds (today's constraint
/// refuses a negative one; a database of its own drops it): that attempt fails with a clear
/// error, the worker lives on and runs the rest of its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_timeout_out_of_range_fails_its_attempt_not_the_worker() {
    let database = fresh_database("old_rows").await;
    database
        .client
        .batch_execute("ALTER TABLE soniq.jobs DROP CONSTRAINT IF EXISTS jobs_timeout_range")
        .await
        .unwrap();
    let mut soniq = Soniq::with_settings(settings_on(&database, 2)).unwrap();
    let task = soniq
        .job("old.rows")
        .retries(0)
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let bad = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let good = soniq.enqueue(&task, Item { n: 2 }).await.unwrap();
    database
        .client
        .execute(
            "UPDATE soniq.jobs SET timeout = interval '-5 seconds' WHERE id = $1",
            &[&bad],
        )
        .await
        .unwrap();
    let report = soniq
        .run_worker(soniq_runner::WorkerOptions {
            run_once: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(report.jobs_run, 2);
    let bad = soniq.get_job(bad).await.unwrap().unwrap();
    assert_eq!(
        (bad.status, bad.last_error.as_deref()),
        (
            JobStatus::Dead,
            Some("the job's timeout of -5 seconds is out of range")
        )
    );
    let good = soniq.get_job(good).await.unwrap().unwrap();
    assert_eq!(good.status, JobStatus::Done);
    drop(soniq);
    drop_database(database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snooze_keeps_its_reason_and_waits_at_most_30_days() {
    let queue = unique("snooze");
    let mut soniq = app_with(2);
    let task = soniq
        .job(format!("{queue}.later"))
        .queue(&queue)
        .handler(|item: Item, _ctx: JobContext| async move {
            JobResult::Ok(match item.n {
                // Longer than the database takes: shortened to 30 days, not refused.
                1 => Outcome::snooze_because(Duration::from_secs(40 * 86_400), "rate limited"),
                _ => Outcome::snooze(Duration::from_secs(60)),
            })
        })
        .unwrap();
    let because = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let plain = soniq.enqueue(&task, Item { n: 2 }).await.unwrap();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    let client = sql().await;
    let snoozed = |id| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT status, attempts, last_error,
                            extract(epoch FROM scheduled_at - now())::float8 / 86400
                       FROM soniq.jobs WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let days: f64 = row.get(3);
            (
                row.get::<_, String>(0),
                row.get::<_, i32>(1),
                row.get::<_, String>(2),
                days,
            )
        }
    };
    let (status, attempts, last_error, days) = snoozed(because).await;
    assert_eq!(
        (status.as_str(), attempts, last_error.as_str()),
        ("queued", 0, "snoozed: rate limited")
    );
    assert!((29.9..=30.0).contains(&days), "due in {days} days");
    let (status, attempts, last_error, days) = snoozed(plain).await;
    assert_eq!(
        (status.as_str(), attempts, last_error.as_str()),
        ("queued", 0, "snoozed")
    );
    assert!(days < 0.01, "due in {days} days");
}

/// The database refuses a result over 1 MiB as it stores it (a JSON array of 400,000 zeros is
/// 800 KB of text, several MB of jsonb), and with it the whole `complete_many` statement. The
/// runner does not retry that as an outage: the others of the statement are recorded, and
/// the refused one becomes a failed attempt with the database's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_database_refuses_fails_its_attempt_and_the_others_are_recorded() {
    let queue = unique("refused");
    let mut soniq = app_with(2);
    // Both finish at once, so their outcomes travel in one statement.
    let together = Arc::new(tokio::sync::Barrier::new(2));
    let task = soniq
        .job(format!("{queue}.result"))
        .queue(&queue)
        .retries(0)
        .handler(move |item: Item, _ctx: JobContext| {
            let together = Arc::clone(&together);
            async move {
                together.wait().await;
                match item.n {
                    1 => Outcome::done_with(vec![0; 400_000]),
                    _ => Outcome::done_with("small"),
                }
            }
        })
        .unwrap();
    let big = soniq.enqueue(&task, Item { n: 1 }).await.unwrap();
    let small = soniq.enqueue(&task, Item { n: 2 }).await.unwrap();
    let started = Instant::now();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal was not retried as an outage"
    );
    assert_eq!(
        soniq.get_result::<String>(small).await.unwrap().as_deref(),
        Some("small")
    );
    let big = soniq.get_job(big).await.unwrap().unwrap();
    let error = big.last_error.unwrap_or_default();
    assert_eq!(big.status, JobStatus::Dead, "{error}");
    assert!(
        error.starts_with("the database refused the outcome: ") && error.contains("54000"),
        "{error}"
    );
}

/// `Soniq::in_memory()` keeps its jobs in memory: a transactional enqueue would write a row
/// its queue never sees. It is refused before any SQL is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_soniq_refuses_to_enqueue_on_a_callers_transaction() {
    let queue = unique("memory_tx");
    let mut soniq = Soniq::in_memory();
    let task = soniq
        .job(format!("{queue}.invoice"))
        .queue(&queue)
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let mut client = sql().await;
    let tx = client.transaction().await.unwrap();
    let err = soniq
        .enqueue(&task, Item { n: 1 })
        .send_on(&tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("this Soniq is in memory"), "{err}");
    let written: i64 = tx
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_eq!(written, 0, "nothing was written through the transaction");
    assert!(soniq.enqueued(task.name()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_at_its_own_limit_is_not_claimed_so_no_job_waits_out_its_timeout() {
    // Five 300 ms jobs of a task limited to one at a time, each with a 1 s timeout, in a
    // worker with room for eight: had the worker claimed them all at once, the later ones would
    // have waited for the task's slot holding their leases and timed out without starting.
    let queue = unique("limited");
    let mut soniq = app_with(8);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (now, most) = (Arc::clone(&running), Arc::clone(&peak));
    let limited = soniq
        .job(format!("{queue}.convert"))
        .queue(&queue)
        .timeout(Duration::from_secs(1))
        .max_concurrent(1)
        .handler(move |_: Item, _ctx: JobContext| {
            let (now, most) = (Arc::clone(&now), Arc::clone(&most));
            async move {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    let free = soniq
        .job(format!("{queue}.mail"))
        .queue(&queue)
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    for n in 0..5 {
        soniq.enqueue(&limited, Item { n }).await.unwrap();
        soniq.enqueue(&free, Item { n }).await.unwrap();
    }
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 10, "each job started once");
    assert_eq!(peak.load(Ordering::SeqCst), 1, "one convert job at a time");
    let row = sql()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'done' AND attempts = 1), count(*) FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (10, 10),
        "every job done at its first attempt, none timed out"
    );

    let err = soniq
        .job(format!("{queue}.none"))
        .max_concurrent(0)
        .handler(|_: Item, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("max_concurrent must be from 1 to 1000, got 0"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claims_while_outcomes_are_recorded_but_never_runs_more_than_its_concurrency() {
    // Jobs finish faster than their outcomes are recorded: the worker claims the next batch
    // while the last ones are on their way to the database (it holds up to four slots' worth),
    // yet no more than `concurrency` handlers ever run at once, each job runs once, and
    // run_once returns only when every outcome is recorded.
    let queue = unique("held");
    let mut soniq = app_with(4);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (now, most) = (Arc::clone(&running), Arc::clone(&peak));
    let task = soniq
        .job(format!("{queue}.quick"))
        .queue(&queue)
        .handler(move |item: Item, _ctx: JobContext| {
            let (now, most) = (Arc::clone(&now), Arc::clone(&most));
            async move {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(item.n as u64 % 3)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    soniq
        .enqueue_many(&task, (0..400).map(|n| Item { n }))
        .await
        .unwrap();
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 400, "each job started once");
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&peak),
        "{peak} handlers ran at once with concurrency 4"
    );
    let row = sql()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'done' AND attempts = 1), count(*) FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (400, 400),
        "every outcome recorded, at the first attempt, before run_once returned"
    );
}
