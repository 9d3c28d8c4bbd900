//! The runner's job API, hooks and retry policy against the real extension.
#![cfg(feature = "e2e")]

mod common;

use common::*;

use serde::{Deserialize, Serialize};
use soniq_runner::{
    JobContext, JobError, JobFilter, JobResult, JobStatus, Outcome, RetryDecision, Settings, Soniq,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Sum {
    a: i64,
    b: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_lookups_lists_stats_and_deletes() {
    let queue = unique("api");
    let mut soniq = app();
    let add = soniq
        .job(format!("{queue}.add"))
        .queue(&queue)
        .handler(|sum: Sum, _ctx: JobContext| async move { Outcome::done_with(sum.a + sum.b) })
        .unwrap();
    let ids = soniq
        .enqueue_many(&add, (0..3).map(|i| Sum { a: i, b: 10 }))
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    let queued = soniq.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.args.clone()),
        (JobStatus::Queued, serde_json::json!({"a": 0, "b": 10}))
    );
    assert_eq!(
        soniq.get_result::<i64>(ids[0]).await.unwrap(),
        None,
        "no result before it is done"
    );
    let stats = soniq.queue_stats(Some(&queue)).await.unwrap();
    assert_eq!((stats.total, stats.queued), (3, 3));

    soniq.run_worker(run_once(&queue)).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            soniq.get_result::<i64>(*id).await.unwrap(),
            Some(i as i64 + 10)
        );
    }
    let done = soniq
        .list_jobs(&JobFilter {
            queue: Some(queue.clone()),
            status: Some(JobStatus::Done),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    assert!(
        done.iter().all(|job| job.producer_id.is_some()),
        "the producer id is stamped"
    );
    soniq.delete_job(ids[0]).await.unwrap();
    assert!(soniq.get_job(ids[0]).await.unwrap().is_none());
    assert!(
        soniq.delete_job(ids[0]).await.is_err(),
        "deleting an unknown job is an error"
    );
    assert_eq!(soniq.queue_stats(Some(&queue)).await.unwrap().done, 2);
    assert!(soniq.get_job(uuid::Uuid::nil()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_and_a_failing_hook_changes_nothing() {
    let queue = unique("hooks");
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut soniq = app();
    let log = |events: &Arc<Mutex<Vec<String>>>, label: &'static str| {
        let events = Arc::clone(events);
        move |text: String| events.lock().unwrap().push(format!("{label}:{text}"))
    };
    let before = log(&events, "before");
    soniq.before_job(move |e| {
        before(format!(
            "{}#{}",
            e.task_name.rsplit('.').next().unwrap(),
            e.attempt
        ))
    });
    soniq.before_job(|_| panic!("a broken hook"));
    let after = log(&events, "after");
    soniq.after_job_async(move |e| {
        let after = after.clone();
        async move { after(e.task_name.rsplit('.').next().unwrap().to_string()) }
    });
    let on_error = log(&events, "error");
    soniq.on_error(move |e| on_error(format!("{}#{}", e.error, e.attempt)));
    let task = soniq
        .job(format!("{queue}.step"))
        .queue(&queue)
        .retries(1)
        .handler(|_: Sum, ctx: JobContext| async move {
            if ctx.attempt == 1 {
                return Err(JobError::new("first try fails"));
            }
            JobResult::Ok(Outcome::done())
        })
        .unwrap();
    let id = soniq.enqueue(&task, Sum { a: 1, b: 2 }).await.unwrap();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            "before:step#1",
            "error:first try fails#1",
            "before:step#2",
            "after:step"
        ]
    );
    assert_eq!(
        soniq.get_job(id).await.unwrap().unwrap().status,
        JobStatus::Done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_retry_policy_sets_the_delay_or_gives_up() {
    let queue = unique("policy");
    let mut soniq = app();
    soniq.retry_policy(|ctx, error| {
        if error.contains("fatal") {
            RetryDecision::GiveUp
        } else if ctx.attempt == 1 {
            RetryDecision::After(Duration::from_secs(600))
        } else {
            RetryDecision::Default
        }
    });
    let task = soniq
        .job(format!("{queue}.fails"))
        .queue(&queue)
        .retries(5)
        .handler(|sum: Sum, _ctx: JobContext| async move {
            Err::<Outcome, _>(JobError::new(if sum.a == 0 {
                "fatal: bad card"
            } else {
                "try later"
            }))
        })
        .unwrap();
    let fatal = soniq.enqueue(&task, Sum { a: 0, b: 0 }).await.unwrap();
    let later = soniq.enqueue(&task, Sum { a: 1, b: 0 }).await.unwrap();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    let dead = soniq.get_job(fatal).await.unwrap().unwrap();
    assert_eq!(
        (dead.status, dead.dead_letter_reason.map(|r| r.as_str())),
        (JobStatus::Dead, Some("permanent_failure"))
    );
    let waiting = soniq.get_job(later).await.unwrap().unwrap();
    assert_eq!((waiting.status, waiting.attempts), (JobStatus::Queued, 1));
    let delay = waiting
        .scheduled_at
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(delay > Duration::from_secs(590), "retry in {delay:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_wraps_handlers_outermost_first_and_can_change_the_result() {
    let queue = unique("middleware");
    let trail: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut soniq = app();
    for label in ["outer", "inner"] {
        let trail = Arc::clone(&trail);
        soniq.middleware(move |ctx: JobContext, next: soniq_runner::Next| {
            let trail = Arc::clone(&trail);
            async move {
                trail
                    .lock()
                    .unwrap()
                    .push(format!("{label} in #{}", ctx.attempt));
                let result = next.run().await;
                trail.lock().unwrap().push(format!("{label} out"));
                result
            }
        });
    }
    // A middleware that turns one task's failures into success (and records it).
    soniq.middleware(|ctx: JobContext, next: soniq_runner::Next| async move {
        match next.run().await {
            Err(e) if ctx.task_name.ends_with(".forgiven") => {
                Outcome::done_with(format!("forgiven: {e}"))
            }
            other => other,
        }
    });
    let trail_in_handler = Arc::clone(&trail);
    let task = soniq
        .job(format!("{queue}.forgiven"))
        .queue(&queue)
        .retries(0)
        .handler(move |_: Sum, _ctx: JobContext| {
            let trail = Arc::clone(&trail_in_handler);
            async move {
                trail.lock().unwrap().push("handler".into());
                Err::<Outcome, _>(JobError::new("it broke"))
            }
        })
        .unwrap();
    let id = soniq.enqueue(&task, Sum { a: 0, b: 0 }).await.unwrap();
    soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(
        *trail.lock().unwrap(),
        vec![
            "outer in #1",
            "inner in #1",
            "handler",
            "inner out",
            "outer out"
        ]
    );
    assert_eq!(
        soniq.get_result::<String>(id).await.unwrap().as_deref(),
        Some("forgiven: it broke")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_map_task_pattern_and_task_refs() {
    let url = std::env::var("SONIQ_TEST_DATABASE_URL").unwrap();
    let prefix = unique("routed");
    let settings_from = |vars: &[(&str, String)]| {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned()).unwrap()
    };
    let noop = |_: Sum, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) };

    let mut soniq = Soniq::with_settings(settings_from(&[
        ("SONIQ_DATABASE_URL", url.clone()),
        (
            "SONIQ_ROUTE_MAP",
            format!(r#"{{"{prefix}.": "{prefix}_q", "{prefix}.eu.": "{prefix}_eu"}}"#),
        ),
    ]))
    .unwrap();
    let general = soniq
        .job(format!("{prefix}.invoice"))
        .handler(noop)
        .unwrap();
    let european = soniq
        .job(format!("{prefix}.eu.invoice"))
        .handler(noop)
        .unwrap();
    let explicit = soniq
        .job(format!("{prefix}.other"))
        .queue("explicit")
        .handler(noop)
        .unwrap();
    let a = soniq.enqueue(&general, Sum { a: 1, b: 1 }).await.unwrap();
    let b = soniq.enqueue(&european, Sum { a: 1, b: 1 }).await.unwrap();
    let c = soniq.enqueue(&explicit, Sum { a: 1, b: 1 }).await.unwrap();
    assert_eq!(
        soniq.get_job(a).await.unwrap().unwrap().queue,
        format!("{prefix}_q")
    );
    assert_eq!(
        soniq.get_job(b).await.unwrap().unwrap().queue,
        format!("{prefix}_eu"),
        "the longest prefix wins"
    );
    assert_eq!(soniq.get_job(c).await.unwrap().unwrap().queue, "explicit");

    // A task another service runs: typed arguments, no handler here.
    let remote = soniq.task_ref::<Sum>("billing.remote_task").unwrap();
    let id = soniq
        .enqueue(&remote, Sum { a: 2, b: 3 })
        .queue(format!("{prefix}_remote"))
        .await
        .unwrap();
    assert_eq!(
        soniq.get_job(id).await.unwrap().unwrap().task_name,
        "billing.remote_task"
    );
    assert!(soniq.task_ref::<Sum>("Bad Name").is_err());

    // SONIQ_TASK_NAME_PATTERN narrows the names a project accepts (Rust-style paths here).
    let mut paths = Soniq::with_settings(settings_from(&[
        ("SONIQ_DATABASE_URL", url),
        (
            "SONIQ_TASK_NAME_PATTERN",
            r"[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*".to_string(),
        ),
    ]))
    .unwrap();
    let path_task = paths
        .job(format!("{prefix}::jobs::send"))
        .handler(noop)
        .unwrap();
    assert!(paths
        .job(format!("{prefix}.jobs.send"))
        .handler(noop)
        .is_err());
    let id = paths
        .enqueue(&path_task, Sum { a: 0, b: 0 })
        .queue(format!("{prefix}_paths"))
        .await
        .unwrap();
    assert_eq!(
        paths.get_job(id).await.unwrap().unwrap().task_name,
        format!("{prefix}::jobs::send")
    );
}

/// A producer's task reference carries its consumers' queue and options: a job enqueued
/// before any consumer published its task lands where they look, not in `default`. The
/// enqueue call still overrides them; `enqueue_many` uses them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ref_carries_its_queue_and_options_unless_the_call_overrides_them() {
    let queue = unique("billing");
    let soniq = app();
    let charge = soniq
        .task_ref::<Sum>(format!("{queue}.charge"))
        .unwrap()
        .queue(&queue)
        .priority(7)
        .retries(1)
        .timeout(Duration::from_secs(42));
    let plain = soniq.enqueue(&charge, Sum { a: 1, b: 2 }).await.unwrap();
    let overridden = soniq
        .enqueue(&charge, Sum { a: 3, b: 4 })
        .queue(format!("{queue}_other"))
        .priority(9)
        .retries(4)
        .timeout(Duration::ZERO)
        .await
        .unwrap();
    let many = soniq
        .enqueue_many(&charge, [Sum { a: 5, b: 6 }, Sum { a: 7, b: 8 }])
        .await
        .unwrap();
    let client = sql().await;
    let options = |id: uuid::Uuid| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT queue, priority, max_attempts, extract(epoch FROM timeout)::float8
                       FROM soniq.jobs WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                row.get::<_, String>(0),
                row.get::<_, i32>(1),
                row.get::<_, i32>(2),
                row.get::<_, Option<f64>>(3),
            )
        }
    };
    let declared = (queue.clone(), 7, 2, Some(42.0));
    assert_eq!(options(plain).await, declared);
    assert_eq!(
        options(overridden).await,
        (format!("{queue}_other"), 9, 5, None),
        "the call's options win; a zero timeout is none"
    );
    for id in many {
        assert_eq!(options(id).await, declared);
    }

    // A consumer serving only that queue runs the job.
    let mut consumer = app();
    consumer
        .job(format!("{queue}.charge"))
        .queue(&queue)
        .handler(|sum: Sum, _ctx: JobContext| async move { Outcome::done_with(sum.a + sum.b) })
        .unwrap();
    consumer.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(consumer.get_result::<i64>(plain).await.unwrap(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_tells_an_unreachable_database_from_a_refusal() {
    // A refusal: the server answered, and said no.
    let client = sql().await;
    let refused = client.query_one("SELECT 1 / 0", &[]).await.unwrap_err();
    assert!(!soniq_runner::Error::from(refused).unreachable());

    // A connection the server ended (57P01), then the same connection, closed.
    let ended = client
        .query_one("SELECT pg_terminate_backend(pg_backend_pid())", &[])
        .await
        .unwrap_err();
    assert!(soniq_runner::Error::from(ended).unreachable());
    let closed = client.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(soniq_runner::Error::from(closed).unreachable());

    // Nothing listening where the settings point.
    let nowhere = Settings::builder("postgres://postgres@127.0.0.1:1/soniq")
        .build()
        .unwrap();
    let unreachable = Soniq::with_settings(nowhere)
        .unwrap()
        .pause_queue("api.nowhere")
        .await
        .unwrap_err();
    assert!(unreachable.unreachable(), "{unreachable}");
}
