//! The dead-letter service against the real extension.
#![cfg(feature = "e2e")]

mod common;

use common::*;

use serde::{Deserialize, Serialize};
use soniq_runner::{
    DeadLetterFilter, ExportFormat, JobContext, JobError, JobResult, JobStatus, Outcome,
    ReplayOptions, WorkerOptions,
};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Order {
    id: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tag_replay_stats_export_delete_and_cleanup() {
    let mut soniq = app();
    let queue = unique("dlq");
    let task_name = format!("{queue}.charge");
    let charge = soniq
        .job(&task_name)
        .queue(&queue)
        .retries(0)
        .handler(|order: Order, _ctx: JobContext| async move {
            if order.id < 100 {
                return Err(JobError::new(format!(
                    "card declined, \"order\" {}",
                    order.id
                )));
            }
            JobResult::Ok(Outcome::done())
        })
        .unwrap();
    let ids = soniq
        .enqueue_many(&charge, (1..=3).map(|id| Order { id }))
        .await
        .unwrap();
    let options = WorkerOptions {
        queues: Some(vec![queue.clone()]),
        run_once: true,
        ..WorkerOptions::default()
    };
    soniq.run_worker(options.clone()).await.unwrap();

    let dlq = soniq.dead_letter();
    let mine = DeadLetterFilter {
        task_name: Some(task_name.clone()),
        ..DeadLetterFilter::default()
    };
    let dead = dlq.list(&mine).await.unwrap();
    assert_eq!(dead.len(), 3);
    assert!(dead
        .iter()
        .all(|d| d.reason.as_str() == "max_retries_exceeded" && d.attempts == 1));
    let first = dlq.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        first.last_error.as_deref(),
        Some("card declined, \"order\" 1")
    );

    assert_eq!(
        dlq.tag(ids[0], &["vip", "billing"]).await.unwrap(),
        vec!["billing", "vip"]
    );
    let vip = DeadLetterFilter {
        tags: Some(vec!["vip".into()]),
        ..mine.clone()
    };
    assert_eq!(dlq.list(&vip).await.unwrap().len(), 1);

    let replayed = dlq
        .replay(
            ids[0],
            &ReplayOptions {
                priority: Some(1),
                ..ReplayOptions::default()
            },
        )
        .await
        .unwrap();
    let job = soniq.get_job(replayed).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.priority, job.attempts),
        (JobStatus::Queued, 1, 0)
    );
    let pairs = dlq
        .replay_many(&ids[1..], &ReplayOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pairs.iter().map(|(dead, _)| *dead).collect::<Vec<_>>(),
        ids[1..].to_vec()
    );
    let replayed_once = DeadLetterFilter {
        replayed: Some(true),
        ..mine.clone()
    };
    assert_eq!(dlq.list(&replayed_once).await.unwrap().len(), 3);

    let stats = dlq.stats(Some(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(stats.by_task.get(&task_name), Some(&3));
    assert!(
        stats
            .by_reason
            .get("max_retries_exceeded")
            .copied()
            .unwrap_or(0)
            >= 3
    );

    let csv = dlq.export(&mine, ExportFormat::Csv).await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows:\n{csv}");
    assert!(lines[0].starts_with("id,task_name,queue,reason"));
    assert!(
        csv.contains("\"card declined, \"\"order\"\" 1\""),
        "quotes and commas are escaped:\n{csv}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&dlq.export(&mine, ExportFormat::Json).await.unwrap()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    dlq.delete(ids[2]).await.unwrap();
    assert!(dlq.get(ids[2]).await.unwrap().is_none());
    assert!(
        dlq.delete(ids[2]).await.is_err(),
        "deleting an unknown dead job is an error"
    );
    assert_eq!(
        dlq.purge(Duration::from_secs(3600)).await.unwrap(),
        0,
        "nothing is that old"
    );
}
