//! Awaiting a job's end: a handle enqueued awaitable resolves with the result, the dead
//! letter's error or the cancellation, times out cleanly, and `soniq enqueue --wait` exits by
//! the outcome. Needs SONIQ_TEST_DATABASE_URL (scripts/test sets it).
#![cfg(feature = "e2e")]

mod common;

use common::{app, database_url, serve, unique};
use serde::{Deserialize, Serialize};
use serde_json::json;
use soniq_runner::{JobContext, JobResult, JobStatus, Outcome};
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize)]
struct Question {
    n: i64,
}

/// `soniq enqueue ARGS --wait` (its exit code, stdout, stderr), run off the async runtime.
async fn soniq_wait(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run_soniq(&database_url(), &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaited_job_resolves_with_its_outcome() {
    let queue = unique("awaiting");
    let nobody = unique("awaiting_nobody"); // a queue no worker serves
    let mut soniq = app();
    let answer = soniq
        .job("aw.answer")
        .queue(&queue)
        .handler(|q: Question, _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Outcome::done_with(json!({ "answer": q.n * 2 }))
        })
        .unwrap();
    let doomed = soniq
        .job("aw.doomed")
        .queue(&queue)
        .handler(|_: Question, _ctx: JobContext| async move {
            JobResult::Ok(Outcome::discard("the answer is not 42"))
        })
        .unwrap();
    let idle = soniq
        .task_ref::<Question>("aw.idle")
        .unwrap()
        .queue(&nobody);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = soniq.run_worker_until(serve(&queue), async {
        let _ = stopped.await;
    });
    let checks = async {
        let handle = soniq
            .enqueue(&answer, Question { n: 21 })
            .send_awaitable()
            .await
            .unwrap();
        let outcome = handle.wait(Duration::from_secs(20)).await.unwrap().unwrap();
        assert_eq!(outcome.status, JobStatus::Done);
        assert_eq!(outcome.result, Some(json!({ "answer": 42 })));

        let dead = soniq
            .enqueue(&doomed, Question { n: 1 })
            .send_awaitable()
            .await
            .unwrap();
        let outcome = dead.wait(Duration::from_secs(20)).await.unwrap().unwrap();
        assert_eq!(outcome.status, JobStatus::Dead);
        assert_eq!(outcome.last_error.as_deref(), Some("the answer is not 42"));

        // Nobody runs it: the wait times out with the job queued, then sees it cancelled.
        let waiting = soniq
            .enqueue(&idle, Question { n: 1 })
            .send_awaitable()
            .await
            .unwrap();
        let started = Instant::now();
        assert_eq!(
            waiting.wait(Duration::from_millis(300)).await.unwrap(),
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        let (cancelled, outcome) = tokio::join!(
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                soniq.cancel_job(waiting.id()).await.unwrap()
            },
            waiting.wait(Duration::from_secs(20))
        );
        assert!(cancelled);
        assert_eq!(outcome.unwrap().unwrap().status, JobStatus::Cancelled);

        let unknown = soniq
            .wait_for_job(uuid::Uuid::nil(), Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(
            unknown.sqlstate(),
            Some(tokio_postgres::error::SqlState::NO_DATA_FOUND)
        );

        // The command: the result and exit 0; a timeout exits 1 and says the job goes on.
        let (code, stdout, stderr) = soniq_wait(
            [
                "enqueue",
                "aw.answer",
                "--queue",
                &queue,
                "--args",
                r#"{"n": 4}"#,
                "--wait",
                "--timeout",
                "20",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!((code, stdout.trim()), (0, r#"{"answer":8}"#), "{stderr}");
        let (code, _, stderr) = soniq_wait(
            [
                "enqueue",
                "aw.idle",
                "--queue",
                &nobody,
                "--wait",
                "--timeout",
                "0",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(code, 1);
        assert!(stderr.contains("had not ended after 0 s"), "{stderr}");
        let (code, _, stderr) = soniq_wait(
            [
                "enqueue",
                "aw.doomed",
                "--queue",
                &queue,
                "--args",
                r#"{"n": 1}"#,
                "--wait",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        assert_eq!(code, 1);
        assert!(stderr.contains("is dead: the answer is not 42"), "{stderr}");
        let _ = stop.send(());
    };
    let (report, ()) = tokio::join!(worker, checks);
    report.unwrap();
}
