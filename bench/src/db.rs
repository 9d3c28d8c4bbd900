//! Connections, fixtures and cleanup shared by the scenarios.
//!
//! Fixtures and cleanup write the tables directly (DELETE, INSERT .. SELECT) for speed; the
//! runner itself never does. Everything the bench creates is named `bench.*` (queues, task
//! names, schedules) or lives in the scratch schema `soniq_bench`, and only that is deleted.

use serde_json::{json, Value};
use soniq_runner::Result;
use soniq_runner::{Settings, Soniq};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;
use uuid::Uuid;

/// The scratch schema of the hand-written yardsticks.
pub const SCRATCH: &str = "soniq_bench";

pub use soniq_runner::cli::connect;

/// Delete one scenario's rows: its jobs, dead jobs, published task options.
pub async fn clean_queue(client: &Client, queue: &str) -> Result<()> {
    debug_assert!(queue.starts_with("bench."));
    client
        .execute(
            "DELETE FROM soniq.jobs WHERE queue = $1 AND task_name LIKE 'bench.%'",
            &[&queue],
        )
        .await?;
    client
        .execute(
            "DELETE FROM soniq.dead_letter_jobs WHERE queue = $1 AND task_name LIKE 'bench.%'",
            &[&queue],
        )
        .await?;
    Ok(())
}

/// Everything a run (or an interrupted earlier run) may have left: `bench.*` jobs, dead
/// jobs, tasks, schedules and queue states, this process's workers, the scratch schema.
pub async fn clean_all(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "DELETE FROM soniq.jobs WHERE queue LIKE 'bench.%' AND task_name LIKE 'bench.%';
             DELETE FROM soniq.dead_letter_jobs WHERE queue LIKE 'bench.%' AND task_name LIKE 'bench.%';
             DELETE FROM soniq.schedules WHERE name LIKE 'bench.%';
             DELETE FROM soniq.tasks WHERE task_name LIKE 'bench.%';
             DELETE FROM soniq.queues WHERE name LIKE 'bench.%';
             DROP SCHEMA IF EXISTS {SCRATCH} CASCADE;"
        ))
        .await?;
    // A worker of this process left registered by an interrupted scenario leaves through the
    // API (its leases, if any, are taken back).
    client
        .execute(
            "SELECT soniq.deregister_worker(w.id) FROM soniq.workers w
              WHERE w.pid = $1 AND w.hostname IS NOT DISTINCT FROM $2",
            &[&(std::process::id() as i32), &soniq_runner::hostname()],
        )
        .await?;
    Ok(())
}

/// A scratch table shaped like soniq.jobs (`LIKE .. INCLUDING ...`), with its storage
/// options (fillfactor, per-table autovacuum) too, so a yardstick pays what soniq.jobs pays.
pub async fn scratch_table(client: &Client, name: &str, including: &str) -> Result<String> {
    let table = format!("{SCRATCH}.{name}");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {SCRATCH};
             DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (LIKE soniq.jobs {including});"
        ))
        .await?;
    let options: Option<String> = client
        .query_one(
            "SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE oid = 'soniq.jobs'::regclass",
            &[],
        )
        .await?
        .get(0);
    if let Some(options) = options.filter(|o| !o.is_empty()) {
        client
            .batch_execute(&format!("ALTER TABLE {table} SET ({options})"))
            .await?;
    }
    Ok(table)
}

/// Settle a table after a fill, as autovacuum would soon (soniq.jobs' insert threshold is
/// 2,000 rows), so a measurement does not race an autovacuum of its own fixture, then
/// checkpoint.
pub async fn settle(client: &Client, table: &str) -> Result<()> {
    client
        .batch_execute(&format!("VACUUM (ANALYZE) {table}"))
        .await?;
    // A checkpoint in the middle of a measure makes it pay for the fixture's dirty pages and
    // write full-page images: start every measure checkpointed. Needs superuser or
    // pg_checkpoint; without it the figures are only noisier.
    let _ = client.batch_execute("CHECKPOINT").await;
    Ok(())
}

/// soniq.jobs holding more rows than this (other applications' jobs) is not rebuilt.
const REBUILD_LIMIT: f32 = 100_000.0;

/// Put soniq.jobs back in shape after a scenario, so the next one (and the next run) does
/// not inherit its fixture's bloat: dead rows reclaimed, and the indexes rebuilt (a btree
/// never shrinks; depth's fixture would leave them hundreds of MB larger). `REINDEX ..
/// CONCURRENTLY` blocks no reader or writer, but it rewrites every index: it is skipped
/// when the table holds many rows of other applications. Returns whether it rebuilt them.
pub async fn restore_jobs_table(client: &Client) -> Result<bool> {
    settle(client, "soniq.jobs").await?;
    let rows: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'soniq.jobs'::regclass",
            &[],
        )
        .await?
        .get(0);
    if rows > REBUILD_LIMIT {
        return Ok(false);
    }
    client
        .batch_execute("REINDEX TABLE CONCURRENTLY soniq.jobs")
        .await?;
    Ok(true)
}

/// Settings of the bench's in-process workers: the command's settings with this
/// concurrency. Their maintenance rounds never run (they would prune and rescue other
/// applications' jobs); the control plane, where it serves, does that.
pub fn worker_settings(base: &Settings, concurrency: usize) -> soniq_runner::Result<Settings> {
    base.to_builder()
        .concurrency(concurrency)
        .cleanup_interval(Duration::from_secs(3600))
        .shutdown_timeout(Duration::from_secs(10))
        .build()
}

/// Jobs enqueued per `enqueue_many` call when filling a queue.
const FILL_BATCH: usize = 10_000;

/// Enqueue `count` jobs of a task (args `{"n": i}`) with `enqueue_many`, in big batches.
pub async fn fill(client: &Client, task: &str, queue: &str, count: usize) -> Result<()> {
    fill_keyed(client, task, queue, count, None).await
}

/// `count` done jobs of `task` in `queue`, written directly in one statement (enqueueing and
/// completing a million jobs through the API would take longer than everything else). They
/// finished just now and are kept for a day, so the control plane does not prune them
/// mid-measurement.
pub async fn add_history(client: &Client, task: &str, queue: &str, count: usize) -> Result<()> {
    client
        .execute(
            "INSERT INTO soniq.jobs (task_name, args, queue, status, attempts, max_attempts,
                                     result_ttl, started_at, finished_at, expires_at, producer_id)
             SELECT $1, jsonb_build_object('n', g), $2, 'done', 1, 4,
                    interval '1 day', now(), now(), now() + interval '1 day', 'bench'
               FROM generate_series(1, $3::int) g",
            &[&task, &queue, &(count as i32)],
        )
        .await?;
    Ok(())
}

/// `fill`, and with `keys` the args name one of that many tenants in turn
/// (`{"n": i, "tenant": "t<i % keys>"}`): the concurrency key of a task registered with it.
pub async fn fill_keyed(
    client: &Client,
    task: &str,
    queue: &str,
    count: usize,
    keys: Option<usize>,
) -> Result<()> {
    let statement = client
        .prepare(
            "SELECT count(*) FROM soniq.enqueue_many($1, $2::jsonb[], queue => $3, producer_id => 'bench')",
        )
        .await?;
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let n = FILL_BATCH.min(count - done);
        let args: Vec<Value> = (done..done + n)
            .map(|i| match keys {
                Some(keys) => json!({ "n": i, "tenant": format!("t{}", i % keys) }),
                None => json!({ "n": i }),
            })
            .collect();
        client
            .query_one(&statement, &[&task, &args, &queue])
            .await?;
        done += n;
        if count >= 100_000 && done % 100_000 == 0 {
            eprintln!(
                "bench:   {queue}: {done} of {count} jobs enqueued ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Queued jobs of a queue.
pub async fn queued(client: &Client, queue: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'queued'",
            &[&queue],
        )
        .await?
        .get(0))
}

/// Publish `task`'s queue and result TTL, as its handler would, before jobs are enqueued (so
/// every job takes the TTL).
pub async fn publish_task(admin: &Client, task: &str, queue: &str, ttl: Duration) -> Result<()> {
    admin
        .execute(
            "SELECT soniq.register_task($1, $2)",
            &[
                &task,
                &serde_json::json!({"queue": queue, "result_ttl": ttl.as_secs_f64()}),
            ],
        )
        .await?;
    Ok(())
}

/// An application with one no-op handler for `task`, whose jobs go to `queue`.
pub fn noop_app(
    settings: Settings,
    task: &str,
    queue: &str,
    ttl: Option<Duration>,
) -> Result<Soniq> {
    let mut app = Soniq::with_settings(settings)?;
    let mut job = app.job(task).queue(queue);
    if let Some(ttl) = ttl {
        job = job.result_ttl(ttl);
    }
    job.handler(|_: Value, _| async {
        soniq_runner::JobResult::Ok(soniq_runner::Outcome::done())
    })?;
    Ok(app)
}

/// Transactions committed in this database so far (`pg_stat_database.xact_commit`). Callers
/// close the connections whose work they count first: a backend reports at exit (others
/// within a second of going idle, hence a little noise). It counts every transaction of
/// the database — also the read-only one a statement prepared on the fly takes for its
/// Parse, and the control plane's rounds (a few a second) — so per job it shows how well
/// work was batched and prepared.
pub async fn commits(client: &Client) -> Result<i64> {
    tokio::time::sleep(Duration::from_millis(250)).await;
    client
        .execute("SELECT pg_stat_clear_snapshot()", &[])
        .await?;
    Ok(client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?
        .get(0))
}

/// Wait for every lane; the first error wins. Lanes live in a `JoinSet`, which aborts them
/// when dropped: an interrupted run stops its producers before it cleans up.
pub async fn join_lanes<T: 'static>(mut lanes: tokio::task::JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(lane) = lanes.join_next().await {
        out.push(lane.expect("a lane does not panic")?);
    }
    Ok(out)
}

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A worker registered for a scenario that claims by hand, heartbeated in the background
/// (a control plane with a short heartbeat timeout would otherwise presume it dead) until
/// `deregister`.
pub struct BenchWorker {
    pub id: Uuid,
    stop: watch::Sender<bool>,
}

/// Register a worker serving `queue` on `client`, heartbeated on a connection of its own.
pub async fn register_worker(
    bench: &super::Bench,
    client: &Client,
    queue: &str,
) -> Result<BenchWorker> {
    let id: Uuid = client
        .query_one(
            "SELECT soniq.register_worker(hostname => $1, pid => $2, queues => ARRAY[$3], version => 'bench')",
            &[&soniq_runner::hostname(), &(std::process::id() as i32), &queue],
        )
        .await?
        .get(0);
    let (stop, mut stopped) = watch::channel(false);
    let (url, every) = (bench.url.clone(), bench.settings.heartbeat_interval());
    tokio::spawn(async move {
        let Ok(client) = connect(&url).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
            let _ = client.execute("SELECT soniq.heartbeat($1)", &[&id]).await;
        }
    });
    Ok(BenchWorker { id, stop })
}

impl BenchWorker {
    pub async fn deregister(self, client: &Client) -> Result<()> {
        let _ = self.stop.send(true);
        client
            .execute("SELECT soniq.deregister_worker($1)", &[&self.id])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
