//! enqueue: producers committing one job per transaction with `soniq.enqueue`, against a
//! bare INSERT into a table of the same shape (the yardstick), at 1 and K connections; and
//! bulk: `soniq.enqueue_many` with 1,000 jobs a call against one `INSERT .. SELECT unnest`.
//!
//! A connection LISTENs on the channel the extension notifies and drains its notifications
//! throughout, so each NOTIFY costs what it costs when workers are listening.

use super::db::{self, connect};
use super::report::{Figure, Target};
use super::Bench;
use futures_util::StreamExt;
use serde_json::{json, Value};
use soniq_runner::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;
use tokio_postgres::{AsyncMessage, NoTls};

const SCENARIO: &str = "enqueue";
const TASK: &str = "bench.enqueue";
const QUEUE: &str = "bench.enqueue";
/// Jobs per call in bulk.
const BULK: usize = 1_000;

/// A connection LISTENing on `soniq_new_job`, counting what arrives until it is dropped.
struct Listener {
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
    received: Arc<AtomicU64>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn listen(url: &str) -> Result<Listener> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(_) = message {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    client.batch_execute("LISTEN soniq_new_job").await?;
    Ok(Listener {
        _client: client,
        driver,
        received,
    })
}

/// Run `sql` (one parameter: a job's args, or an array of `batch` of them) in autocommit on
/// `clients` connections for `seconds`; returns jobs per second.
async fn load(url: &str, clients: usize, seconds: f64, sql: &str, batch: usize) -> Result<f64> {
    let start_line = Arc::new(Barrier::new(clients));
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..clients {
        let client = connect(url).await?;
        let statement = client.prepare(sql).await?;
        let start_line = Arc::clone(&start_line);
        lanes.spawn(async move {
            start_line.wait().await;
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(seconds);
            let mut jobs = 0usize;
            while Instant::now() < deadline {
                let n = lane * 1_000_000_000 + jobs;
                if batch == 1 {
                    client.execute(&statement, &[&json!({ "n": n })]).await?;
                } else {
                    let args: Vec<Value> = (n..n + batch).map(|i| json!({ "n": i })).collect();
                    client.execute(&statement, &[&args]).await?;
                }
                jobs += batch;
            }
            Ok::<_, soniq_runner::Error>((jobs, started.elapsed().as_secs_f64()))
        });
    }
    let (mut jobs, mut elapsed) = (0, 0f64);
    for (n, seconds) in db::join_lanes(lanes).await? {
        jobs += n;
        elapsed = elapsed.max(seconds);
    }
    Ok(jobs as f64 / elapsed)
}

fn connections(n: usize) -> String {
    if n == 1 {
        "1 connection".into()
    } else {
        format!("{n} connections")
    }
}

/// Start each measurement from the same state: no bench rows, WAL checkpointed.
async fn reset(admin: &tokio_postgres::Client, bare: &str) -> Result<()> {
    db::clean_queue(admin, QUEUE).await?;
    admin.batch_execute(&format!("TRUNCATE {bare}")).await?;
    // Needs superuser or pg_checkpoint; without it the figures are only noisier.
    let _ = admin.batch_execute("CHECKPOINT").await;
    Ok(())
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let admin = connect(&bench.url).await?;
    let bare = db::scratch_table(&admin, "bare_jobs", "INCLUDING ALL").await?;
    let listener = listen(&bench.url).await?;
    let seconds = bench.plan.enqueue_seconds;

    let enqueue_one = format!("SELECT soniq.enqueue('{TASK}', $1::jsonb, queue => '{QUEUE}')");
    let insert_one = format!(
        "INSERT INTO {bare} (task_name, args, queue) VALUES ('{TASK}', $1::jsonb, '{QUEUE}')"
    );
    let mut client_counts = vec![1, bench.plan.clients];
    client_counts.dedup();
    for clients in client_counts {
        reset(&admin, &bare).await?;
        let bare_rate = load(&bench.url, clients, seconds, &insert_one, 1).await?;
        let bare_key = format!("bare_insert_{clients}");
        bench.report.add(Figure::new(
            SCENARIO,
            bare_key.clone(),
            format!("bare INSERT, one per transaction, {}", connections(clients)),
            bare_rate,
            "jobs/s",
        ));
        reset(&admin, &bare).await?;
        let rate = load(&bench.url, clients, seconds, &enqueue_one, 1).await?;
        bench.report.add(
            Figure::new(
                SCENARIO,
                format!("enqueue_{clients}"),
                format!(
                    "soniq.enqueue, one per transaction, {}",
                    connections(clients)
                ),
                rate,
                "jobs/s",
            )
            .against(bench.report.yardstick(SCENARIO, &bare_key))
            .target(Target::ratio_at_least(0.80)),
        );
    }

    reset(&admin, &bare).await?;
    let insert_many = format!(
        "INSERT INTO {bare} (task_name, args, queue) SELECT '{TASK}', a, '{QUEUE}' FROM unnest($1::jsonb[]) a"
    );
    let bare_rate = load(&bench.url, 1, seconds, &insert_many, BULK).await?;
    bench.report.add(Figure::new(
        SCENARIO,
        "bulk_bare_insert",
        format!("bare INSERT .. SELECT unnest, {BULK} a statement, 1 connection"),
        bare_rate,
        "jobs/s",
    ));
    reset(&admin, &bare).await?;
    let enqueue_many = format!(
        "SELECT count(*) FROM soniq.enqueue_many('{TASK}', $1::jsonb[], queue => '{QUEUE}')"
    );
    let rate = load(&bench.url, 1, seconds, &enqueue_many, BULK).await?;
    bench.report.add(
        Figure::new(
            SCENARIO,
            "bulk_enqueue_many",
            format!("soniq.enqueue_many, {BULK} a call, 1 connection"),
            rate,
            "jobs/s",
        )
        .against(bench.report.yardstick(SCENARIO, "bulk_bare_insert")),
    );

    let heard = listener.received.load(Ordering::Relaxed);
    drop(listener);
    if heard == 0 {
        bench
            .report
            .note("enqueue: the listener heard no notification; NOTIFY was not exercised");
    }
    db::clean_queue(&admin, QUEUE).await?;
    admin.batch_execute(&format!("DROP TABLE {bare}")).await?;
    Ok(())
}
