//! A worker keeps going across a PostgreSQL restart. A binary of its own: the restart
//! would disturb other tests. Needs SONIQ_TEST_PGDATA (the test cluster's data folder,
//! set by scripts/test) and permission to run pg_ctl as `postgres`.
#![cfg(feature = "e2e")]

use serde::{Deserialize, Serialize};
use soniq_runner::{JobContext, JobResult, Outcome, Settings, Soniq, WorkerOptions};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize)]
struct Item {
    n: u32,
}

fn restart_postgres() {
    let data = std::env::var("SONIQ_TEST_PGDATA")
        .expect("SONIQ_TEST_PGDATA names the test cluster's data folder");
    let status = Command::new("sudo")
        .args([
            "-u",
            "postgres",
            "/usr/lib/postgresql/15/bin/pg_ctl",
            "-D",
            &data,
            "-w",
            "-m",
            "fast",
            "restart",
        ])
        .args(["-l", &format!("{data}/../postgres.log")])
        .status()
        .expect("run pg_ctl");
    assert!(status.success(), "pg_ctl restart failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_keeps_going_across_a_postgres_restart() {
    let url = std::env::var("SONIQ_TEST_DATABASE_URL")
        .expect("SONIQ_TEST_DATABASE_URL; run scripts/test");
    let queue = format!("restart_{}", std::process::id());
    let mut settings = Settings::new(url);
    settings.concurrency = 4;
    settings.poll_interval = Duration::from_millis(200);
    settings.heartbeat_interval = Duration::from_millis(300);
    settings.error_retry_delay = Duration::from_millis(250);
    let mut soniq = Soniq::with_settings(settings).unwrap();
    let runs: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let task = soniq
        .job(format!("{queue}.work"))
        .queue(&queue)
        .handler(move |item: Item, _ctx: JobContext| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                *seen.lock().unwrap().entry(item.n).or_default() += 1;
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    let jobs = soniq
        .enqueue_many(&task, (0..60).map(|n| Item { n }))
        .await
        .unwrap();

    let watched = Arc::clone(&runs);
    let stop = async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut restarted = false;
        while Instant::now() < deadline {
            let done = watched.lock().unwrap().len();
            if !restarted && done >= 10 {
                tokio::task::spawn_blocking(restart_postgres).await.unwrap();
                restarted = true;
            }
            if done == 60 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(restarted, "the restart happened mid-drain");
    };
    let options = WorkerOptions {
        queues: Some(vec![queue.clone()]),
        ..WorkerOptions::default()
    };
    soniq.run_worker_until(options, stop).await.unwrap();

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 60, "every job ran despite the restart");
    let stats = soniq.queue_stats(Some(&queue)).await.unwrap();
    assert_eq!(stats.done, 60, "and every outcome was recorded: {stats:?}");
    assert_eq!(jobs.len(), 60);
}
