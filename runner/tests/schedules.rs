//! Periodic tasks and the scheduler API, fired by the extension's background worker.
#![cfg(feature = "e2e")]

mod common;

use common::*;

use serde::{Deserialize, Serialize};
use soniq_runner::dsl::{daily, every};
use soniq_runner::{JobContext, JobResult, Outcome, ScheduleSpec, WorkerOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize)]
struct Nothing {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_task_is_published_fired_and_run() {
    let queue = unique("periodic");
    let runs = Arc::new(AtomicUsize::new(0));
    let mut soniq = app();
    let counter = Arc::clone(&runs);
    let task_name = format!("{queue}.tick");
    soniq
        .job(&task_name)
        .queue(&queue)
        .periodic(every(1).seconds().unwrap())
        .handler(move |_: Nothing, ctx: JobContext| {
            let counter = Arc::clone(&counter);
            async move {
                assert!(
                    ctx.scheduled_at.is_some(),
                    "a fired job carries its fire time"
                );
                counter.fetch_add(1, Ordering::SeqCst);
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    let watched = Arc::clone(&runs);
    let deadline = Instant::now() + Duration::from_secs(20);
    let stop = async move {
        while watched.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let options = WorkerOptions {
        queues: Some(vec![queue.clone()]),
        ..WorkerOptions::default()
    };
    soniq.run_worker_until(options, stop).await.unwrap();
    assert!(
        runs.load(Ordering::SeqCst) >= 2,
        "the schedule fired and the worker ran its jobs"
    );
    let schedule = soniq.scheduler().get(&task_name).await.unwrap().unwrap();
    assert_eq!(schedule.every, Some(Duration::from_secs(1)));
    assert!(schedule.fire_count >= 2);
    soniq.scheduler().remove(&task_name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_api_adds_pauses_resumes_lists_and_removes() {
    let soniq = app();
    let scheduler = soniq.scheduler();
    let name = unique("report");
    let spec = ScheduleSpec::new("reports.build", daily().at("09:00").unwrap())
        .name(&name)
        .time_zone("Europe/Berlin")
        .args(serde_json::json!({"region": "eu"}))
        .queue("reports")
        .priority(5);
    let added = scheduler.add(&spec).await.unwrap();
    assert_eq!(added.cron.as_deref(), Some("0 9 * * *"));
    assert_eq!(added.time_zone, "Europe/Berlin");
    assert!(added.enabled);
    let next = added.next_fire_at.unwrap();
    // Re-adding the same schedule (a redeploy) keeps its next fire time.
    let again = scheduler.add(&spec).await.unwrap();
    assert_eq!(again.next_fire_at, Some(next));

    assert!(scheduler.pause(&name).await.unwrap());
    assert!(!scheduler.pause(&name).await.unwrap());
    let paused = scheduler.get(&name).await.unwrap().unwrap();
    assert!(!paused.enabled && paused.next_fire_at.is_none());
    assert!(scheduler
        .list(Some(false))
        .await
        .unwrap()
        .iter()
        .any(|s| s.name == name));
    assert!(scheduler.resume(&name).await.unwrap());
    assert!(scheduler
        .get(&name)
        .await
        .unwrap()
        .unwrap()
        .next_fire_at
        .is_some());
    scheduler.remove(&name).await.unwrap();
    assert!(scheduler.get(&name).await.unwrap().is_none());
    assert!(
        scheduler.remove(&name).await.is_err(),
        "removing an unknown schedule is an error"
    );
    let bad =
        ScheduleSpec::new("reports.build", every(5).minutes().unwrap()).time_zone("Mars/Olympus");
    let err = scheduler.add(&bad).await.unwrap_err();
    assert!(err.to_string().contains("unknown time zone"), "{err}");
}
