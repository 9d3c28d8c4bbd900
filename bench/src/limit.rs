//! limit: the yardstick for drain. The minimal job lifecycle done by hand on a plain table
//! shaped like soniq.jobs (same columns, indexes and storage options): claim with
//! `FOR UPDATE SKIP LOCKED` in claim order, then delete. No functions, no checks, no
//! leases: what PostgreSQL itself can do on this machine.

use super::db::{self, connect};
use super::report::Figure;
use super::Bench;
use soniq_runner::Result;
use std::time::Instant;
use uuid::Uuid;

pub const SCENARIO: &str = "limit";
/// The key of the one-job-per-transaction figure (drain at concurrency 1 compares with it).
pub const ONE_PER_TRANSACTION: &str = "one_per_transaction";
/// Batch sizes of the batched figures: the drain concurrencies they stand for.
pub const BATCHES: [usize; 2] = [16, 64];
/// Connections of the batched figures: the runner claims on one connection while its
/// reporter records outcomes on another.
pub const LANES: usize = 2;

pub fn batched_key(batch: usize) -> String {
    format!("batched_{batch}")
}

/// The key of the transactions-per-job figure of batch size `batch` (drain uses the same
/// keys, by concurrency, and compares with these).
pub fn transactions_key(batch: usize) -> String {
    format!("transactions_per_job_{batch}")
}

fn transactions(batch: usize, per_job: f64) -> Figure {
    Figure::new(
        SCENARIO,
        transactions_key(batch),
        format!("transactions per job, batch {batch}"),
        per_job,
        "xacts/job",
    )
}

/// Claim order and predicate of soniq.claim, on the scratch table; `$2` rows at most.
fn claim_sql(table: &str) -> String {
    format!(
        "WITH picked AS MATERIALIZED (
             SELECT id FROM {table}
              WHERE status = 'queued' AND (scheduled_at IS NULL OR scheduled_at <= now())
              ORDER BY priority, scheduled_at NULLS FIRST, created_at, id
              LIMIT $2
                FOR UPDATE SKIP LOCKED)
         UPDATE {table} j
            SET status = 'processing', attempts = j.attempts + 1, worker_id = $1,
                started_at = now(), updated_at = now()
           FROM picked p
          WHERE j.id = p.id
         RETURNING j.id"
    )
}

/// Fill the scratch table with `count` queued rows and settle it, on a connection of its
/// own, closed at the end so it reports its transactions before the drain counts them.
async fn fill(url: &str, table: &str, count: usize) -> Result<()> {
    let client = connect(url).await?;
    client.batch_execute(&format!("TRUNCATE {table}")).await?;
    client
        .execute(
            &format!(
                "INSERT INTO {table} (task_name, args, queue)
                 SELECT 'bench.limit', jsonb_build_object('n', g), 'bench.limit'
                   FROM generate_series(1, $1::int) g"
            ),
            &[&(count as i32)],
        )
        .await?;
    db::settle(&client, table).await
}

/// Claim and delete until the table is empty, `batch` rows per statement, on `lanes`
/// connections at once; each statement commits on its own. Returns jobs per second and
/// transactions per job.
async fn drain(bench: &Bench, table: &str, batch: usize, lanes: usize) -> Result<(f64, f64)> {
    let admin = connect(&bench.url).await?;
    let mut clients = Vec::new();
    for _ in 0..lanes {
        let client = connect(&bench.url).await?;
        let claim = client.prepare(&claim_sql(table)).await?;
        let delete = client
            .prepare(&format!("DELETE FROM {table} WHERE id = ANY($1)"))
            .await?;
        clients.push((client, claim, delete));
    }
    let commits_before = db::commits(&admin).await?;
    let started = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for (lane, (client, claim, delete)) in clients.into_iter().enumerate() {
        lanes.spawn(async move {
            // Any id: the scratch table has no workers to check a lease against.
            let worker = Uuid::from_u128(lane as u128 + 1);
            let mut done = 0usize;
            loop {
                let rows = client.query(&claim, &[&worker, &(batch as i64)]).await?;
                if rows.is_empty() {
                    return Ok::<_, soniq_runner::Error>(done);
                }
                let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
                client.execute(&delete, &[&ids]).await?;
                done += ids.len();
            }
        });
    }
    let done: usize = db::join_lanes(lanes).await?.into_iter().sum();
    let rate = done as f64 / started.elapsed().as_secs_f64();
    let committed = db::commits(&admin).await? - commits_before;
    Ok((rate, committed as f64 / done.max(1) as f64))
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let admin = connect(&bench.url).await?;
    let table = db::scratch_table(
        &admin,
        "limit_jobs",
        "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES",
    )
    .await?;

    let single = bench.plan.single_jobs;
    fill(&bench.url, &table, single).await?;
    let (rate, xacts) = drain(bench, &table, 1, 1).await?;
    bench.report.add(Figure::new(
        SCENARIO,
        ONE_PER_TRANSACTION,
        format!("one job per transaction (claim, then delete), 1 connection, {single} jobs"),
        rate,
        "jobs/s",
    ));
    bench.report.add(transactions(1, xacts));

    let jobs = bench.plan.jobs;
    for batch in BATCHES {
        fill(&bench.url, &table, jobs).await?;
        let (rate, xacts) = drain(bench, &table, batch, LANES).await?;
        bench.report.add(Figure::new(
            SCENARIO,
            batched_key(batch),
            format!("batched: claim {batch}, delete {batch}, {LANES} connections, {jobs} jobs"),
            rate,
            "jobs/s",
        ));
        bench.report.add(transactions(batch, xacts));
    }
    admin.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(())
}
