//! The in-memory queue: handlers tested without PostgreSQL (no database needed here).

use serde::{Deserialize, Serialize};
use soniq_runner::{
    wait_until, JobContext, JobError, JobResult, JobStatus, Outcome, Soniq, WorkerOptions,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Email {
    to: String,
}

fn email(to: &str) -> Email {
    Email { to: to.into() }
}

#[tokio::test]
async fn drain_runs_enqueued_jobs_inline_with_options_resolved() {
    let mut soniq = Soniq::in_memory();
    let welcome = soniq
        .job("users.send_welcome")
        .queue("emails")
        .priority(5)
        .handler(|args: Email, ctx: JobContext| async move {
            assert_eq!(ctx.queue, "emails");
            Outcome::done_with(format!("sent to {}", args.to))
        })
        .unwrap();
    let a = soniq
        .enqueue(&welcome, email("a@example.com"))
        .await
        .unwrap();
    let b = soniq
        .enqueue(&welcome, email("b@example.com"))
        .priority(1)
        .await
        .unwrap();
    soniq.assert_enqueued(&welcome, &email("a@example.com"));

    let ran = soniq.drain().await;
    assert_eq!(
        ran.iter().map(|ctx| ctx.job_id).collect::<Vec<_>>(),
        vec![b, a],
        "priority 1 runs first"
    );
    let job = soniq.get_job(a).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.priority, job.max_attempts),
        (JobStatus::Done, 5, 4)
    );
    assert_eq!(
        soniq.get_result::<String>(a).await.unwrap().as_deref(),
        Some("sent to a@example.com")
    );
    assert!(soniq.drain().await.is_empty(), "nothing left");
}

#[tokio::test]
async fn failures_retry_in_the_same_drain_until_the_dead_letter() {
    let mut soniq = Soniq::in_memory();
    let flaky = soniq
        .job("users.flaky")
        .max_retries(2)
        .handler(|_: Email, ctx: JobContext| async move {
            Err::<Outcome, _>(JobError::new(format!("attempt {} failed", ctx.attempt)))
        })
        .unwrap();
    let id = soniq.enqueue(&flaky, email("x")).await.unwrap();
    let attempts: Vec<i32> = soniq.drain().await.iter().map(|ctx| ctx.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let job = soniq.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(
        job.dead_letter_reason.map(|r| r.as_str()),
        Some("max_retries_exceeded")
    );
    assert_eq!(job.last_error.as_deref(), Some("attempt 3 failed"));
}

#[tokio::test]
async fn delayed_retries_snoozes_and_future_jobs_wait() {
    let mut soniq = Soniq::in_memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let slow = soniq
        .job("users.later")
        .retry_delay([Duration::from_secs(60)])
        .handler(move |args: Email, _ctx: JobContext| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                JobResult::Ok(match args.to.as_str() {
                    "snooze" => Outcome::snooze(Duration::from_secs(60)),
                    _ => Outcome::retry("not yet"),
                })
            }
        })
        .unwrap();
    let retried = soniq.enqueue(&slow, email("retry")).await.unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let scheduled = soniq
        .enqueue_at(&slow, email("scheduled"), later)
        .await
        .unwrap();
    let snoozed = soniq.enqueue(&slow, email("snooze")).await.unwrap();
    soniq
        .enqueue(&slow, email("future"))
        .run_in(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        soniq.drain().await.len(),
        2,
        "the scheduled and the future job wait"
    );
    assert_eq!(
        soniq
            .get_job(scheduled)
            .await
            .unwrap()
            .unwrap()
            .scheduled_at,
        Some(later)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let retried = soniq.get_job(retried).await.unwrap().unwrap();
    assert_eq!((retried.status, retried.attempts), (JobStatus::Queued, 1));
    assert!(retried.scheduled_at.is_some());
    let snoozed = soniq.get_job(snoozed).await.unwrap().unwrap();
    assert_eq!(
        (snoozed.status, snoozed.attempts),
        (JobStatus::Queued, 0),
        "a snooze uses no attempt"
    );
}

#[tokio::test]
async fn unique_and_dedup_key_return_the_queued_job() {
    let mut soniq = Soniq::in_memory();
    let task = soniq
        .job("users.unique")
        .unique(true)
        .handler(|_: Email, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let first = soniq.enqueue(&task, email("a")).await.unwrap();
    assert_eq!(soniq.enqueue(&task, email("a")).await.unwrap(), first);
    assert_ne!(soniq.enqueue(&task, email("b")).await.unwrap(), first);
    let keyed = soniq
        .enqueue(&task, email("c"))
        .dedup_key("k")
        .await
        .unwrap();
    assert_eq!(
        soniq
            .enqueue(&task, email("d"))
            .dedup_key("k")
            .await
            .unwrap(),
        keyed
    );
    assert_eq!(soniq.enqueued("users.unique").len(), 3);
}

#[tokio::test]
#[should_panic(
    expected = "no job of users.assert was enqueued with {\"to\":\"z\"}; enqueued: [{\"to\":\"y\"}]"
)]
async fn assert_enqueued_says_what_was_enqueued_instead() {
    let mut soniq = Soniq::in_memory();
    let task = soniq
        .job("users.assert")
        .handler(|_: Email, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    soniq.enqueue(&task, email("y")).await.unwrap();
    soniq.assert_enqueued(&task, &email("z"));
}

#[tokio::test]
async fn wait_until_and_what_needs_a_database() {
    let flag = Arc::new(AtomicUsize::new(0));
    let setter = Arc::clone(&flag);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        setter.store(1, Ordering::SeqCst);
    });
    wait_until(Duration::from_secs(2), || flag.load(Ordering::SeqCst) == 1)
        .await
        .unwrap();
    assert!(wait_until(Duration::from_millis(30), || false)
        .await
        .is_err());

    // The worker runs over the in-memory queue as over the database; schedules and the
    // dead-letter service need a database.
    let mut soniq = Soniq::in_memory();
    let any = soniq
        .job("users.any")
        .handler(|_: Email, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let id = soniq.enqueue(&any, email("x")).await.unwrap();
    let report = soniq
        .run_worker(WorkerOptions {
            run_once: true,
            ..WorkerOptions::default()
        })
        .await
        .unwrap();
    assert_eq!((report.jobs_run, report.handed_back), (1, 0));
    assert_eq!(
        soniq.get_job(id).await.unwrap().unwrap().status,
        JobStatus::Done
    );
    assert_eq!(soniq.queue_stats(None).await.unwrap().done, 1);
    let err = soniq.scheduler().list(None).await.unwrap_err().to_string();
    assert!(err.contains("needs a database"), "{err}");
    assert!(soniq.dead_letter().stats(None).await.is_err());
}

#[tokio::test]
async fn a_task_ref_or_handles_options_apply_unless_the_call_overrides_them() {
    let mut soniq = Soniq::in_memory();
    let registered = soniq
        .job("users.welcome")
        .queue("registered")
        .priority(50)
        .handler(|_: Email, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let routed = registered.clone().queue("emails").retries(0);
    soniq.enqueue(&registered, email("a")).await.unwrap();
    soniq.enqueue(&routed, email("b")).await.unwrap();
    soniq
        .enqueue(&routed, email("c"))
        .queue("urgent")
        .retries(2)
        .await
        .unwrap();
    let remote = soniq
        .task_ref::<Email>("billing.charge")
        .unwrap()
        .queue("billing")
        .priority(5);
    soniq.enqueue(&remote, email("d")).await.unwrap();
    let seen = |name: &str| -> Vec<(String, i32, i32)> {
        soniq
            .enqueued(name)
            .into_iter()
            .map(|job| (job.queue, job.priority, job.max_attempts))
            .collect()
    };
    assert_eq!(
        seen("users.welcome"),
        vec![
            ("registered".into(), 50, 4),
            ("emails".into(), 50, 1),
            ("urgent".into(), 50, 3)
        ]
    );
    assert_eq!(seen("billing.charge"), vec![("billing".into(), 5, 4)]);
}

#[tokio::test]
async fn outcomes_are_kept_within_what_the_database_takes() {
    let mut soniq = Soniq::in_memory();
    let task = soniq
        .job("users.outsized")
        .retries(0)
        .handler(|args: Email, _ctx: JobContext| async move {
            match args.to.as_str() {
                "error" => Err(JobError::new("é".repeat(10_000))),
                "result" => Outcome::done_with("x".repeat(2 << 20)), // 2 MiB
                _ => Ok(Outcome::snooze_because(
                    Duration::from_secs(3600),
                    "rate limited",
                )),
            }
        })
        .unwrap();
    for to in ["error", "result", "snooze"] {
        soniq.enqueue(&task, email(to)).await.unwrap();
    }
    soniq.drain().await;
    let [failed, too_big, snoozed] = <[_; 3]>::try_from(soniq.enqueued("users.outsized")).unwrap();
    assert_eq!(failed.status, JobStatus::Dead);
    assert_eq!(
        failed.last_error.unwrap().len(),
        soniq_runner::MAX_ERROR_BYTES,
        "the error was cut to 8192 bytes, at a character boundary"
    );
    assert_eq!(too_big.status, JobStatus::Dead);
    let error = too_big.last_error.unwrap();
    assert!(
        error.starts_with("the result is 2097154 bytes of JSON, more than the 1048576"),
        "{error}"
    );
    assert_eq!(
        (snoozed.status, snoozed.last_error.as_deref()),
        (JobStatus::Queued, Some("snoozed: rate limited"))
    );
}

#[tokio::test]
async fn a_worker_with_max_jobs_starts_that_many_then_returns() {
    let mut soniq = Soniq::in_memory();
    let welcome = soniq
        .job("users.welcome")
        .handler(|_: Email, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    for n in 0..5 {
        soniq
            .enqueue(&welcome, email(&format!("{n}@example.com")))
            .await
            .unwrap();
    }
    // Not run_once: the worker stops because it started its two jobs, not because the queue
    // ran dry.
    let report = soniq
        .run_worker(WorkerOptions {
            concurrency: Some(4),
            max_jobs: Some(2),
            ..WorkerOptions::default()
        })
        .await
        .unwrap();
    assert_eq!((report.jobs_run, report.handed_back), (2, 0));
    let stats = soniq.queue_stats(None).await.unwrap();
    assert_eq!((stats.done, stats.queued), (2, 3), "the other three wait");
}

#[tokio::test]
async fn jobs_that_depend_on_jobs_are_refused_with_the_reason() {
    let mut soniq = Soniq::in_memory();
    let welcome = soniq
        .job("users.send_welcome")
        .handler(|_: Email, _ctx: JobContext| async move { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let first = soniq
        .enqueue(&welcome, email("a@example.com"))
        .await
        .unwrap();
    let err = soniq
        .enqueue(&welcome, email("b@example.com"))
        .depends_on([first])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("need the database"), "{err}");
    assert_eq!(
        soniq.queue_stats(None).await.unwrap().total,
        1,
        "nothing written"
    );
}

#[tokio::test]
async fn a_retried_attempt_reads_the_checkpoint_the_failed_one_saved() {
    let mut soniq = Soniq::in_memory();
    let import = soniq
        .job("rows.import")
        .retries(1)
        .handler(|_: Email, ctx: JobContext| async move {
            let from: u64 = ctx.checkpoint().await?.unwrap_or(0);
            if ctx.attempt == 1 {
                ctx.save_checkpoint(500u64).await?;
                assert!(
                    ctx.report_progress(serde_json::json!({"rows": 500}))
                        .await?
                );
                assert!(
                    !ctx.report_progress(serde_json::json!({"rows": 501}))
                        .await?,
                    "within the second"
                );
                return Err(JobError::new("connection reset"));
            }
            Outcome::done_with(from)
        })
        .unwrap();
    let id = soniq
        .enqueue(&import, email("a@example.com"))
        .await
        .unwrap();
    assert_eq!(soniq.drain().await.len(), 2);
    let job = soniq.get_job(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(
        job.result,
        Some(serde_json::json!(500)),
        "resumed from the checkpoint"
    );
    assert_eq!(job.progress, Some(serde_json::json!({"rows": 500})));
}
