//! enqueue: producers committing one job per transaction with `soniq.enqueue`, against a
//! bare INSERT into a table of the same shape (the yardstick), at 1 and K connections; and
//! bulk: `soniq.enqueue_many` with 1,000 jobs a call against one `INSERT .. SELECT unnest`.
//!
//! A connection LISTENs on the channel the extension notifies and drains its notifications
//! throughout, so each NOTIFY costs what it costs when workers are listening.

use super::db::{self, connect};
use super::report::{Figure, Target};
use super::Bench;
use serde_json::{json, Value};
use soniq_runner::{ConnectionConfig, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

const SCENARIO: &str = "enqueue";
const TASK: &str = "bench.enqueue";
const QUEUE: &str = "bench.enqueue";
/// Jobs per call in bulk.
const BULK: usize = 1_000;
/// The options of bulk's "with options" figures, as SQL arguments and as the columns a bare
/// INSERT stores for them (retries 2: 3 attempts).
const OPTIONS: &str =
    "priority => 5, retries => 2, timeout => '60 seconds', producer_id => 'bench'";
const OPTION_COLUMNS: &str = "priority, max_attempts, timeout, producer_id";
const OPTION_VALUES: &str = "5, 3, interval '60 seconds', 'bench'";

/// The specs of the dedup figures, built in the statement from its jsonb[] of args (the same
/// cost for soniq and its yardstick): a dedup key each.
fn dedup_specs() -> String {
    format!(
        "(SELECT jsonb_agg(jsonb_build_object('task_name', '{TASK}', 'queue', '{QUEUE}', \
           'args', a, 'dedup_key', a->>'n')) FROM unnest($1::jsonb[]) a)"
    )
}

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
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let (client, driver) = ConnectionConfig::parse(url)?
        .connect_notifying(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .await?;
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

/// Start each measurement from the same state: no bench rows (soniq.jobs vacuumed, as the
/// yardstick's table is truncated), WAL checkpointed.
async fn reset(admin: &tokio_postgres::Client, bare: &str) -> Result<()> {
    db::clean_queue(admin, QUEUE).await?;
    admin.batch_execute(&format!("TRUNCATE {bare}")).await?;
    db::settle(admin, "soniq.jobs").await
}

/// One bulk figure: `sql` (a 1,000-element jsonb[] parameter), compared with `yardstick`.
async fn bulk_figure(
    bench: &mut Bench,
    admin: &tokio_postgres::Client,
    bare: &str,
    (key, label, sql): (&str, String, String),
    yardstick: &str,
    target: f64,
) -> Result<()> {
    reset(admin, bare).await?;
    let rate = load(&bench.url, 1, bench.plan.enqueue_seconds, &sql, BULK).await?;
    bench.report.add(
        Figure::new(SCENARIO, key, label, rate, "jobs/s")
            .against(bench.report.yardstick(SCENARIO, yardstick))
            .target(Target::ratio_at_least(target)),
    );
    Ok(())
}

/// The runner's `Soniq::enqueue_many`, 1,000 jobs a call, for `seconds`: jobs per second.
async fn runner_bulk(bench: &Bench, seconds: f64) -> Result<f64> {
    let mut app = soniq_runner::Soniq::with_settings(bench.settings.clone())?;
    let task = app.job(TASK).queue(QUEUE).handler(|_: Value, _| async {
        soniq_runner::JobResult::Ok(soniq_runner::Outcome::done())
    })?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut jobs = 0usize;
    while Instant::now() < deadline {
        let args = (jobs..jobs + BULK).map(|i| json!({ "n": i }));
        jobs += app.enqueue_many(&task, args).await?.len();
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// Bulk: `enqueue_many` 1,000 jobs a call against `INSERT .. SELECT unnest` of the same rows —
/// plain, with options (against a bare INSERT storing the same option columns), unique and
/// with a dedup key each (against a bare INSERT of the same rows with the args hash or the key,
/// through ON CONFLICT DO NOTHING), and through the runner's `Soniq::enqueue_many`.
async fn bulk(bench: &mut Bench, admin: &tokio_postgres::Client, bare: &str) -> Result<()> {
    let seconds = bench.plan.enqueue_seconds;
    for (key, label, sql) in [
        (
            "bulk_bare_insert",
            format!("bare INSERT .. SELECT unnest, {BULK} a statement, 1 connection"),
            format!("INSERT INTO {bare} (task_name, args, queue) SELECT '{TASK}', a, '{QUEUE}' FROM unnest($1::jsonb[]) a"),
        ),
        (
            "bulk_bare_insert_unique",
            format!("bare INSERT .. SELECT unnest with the args hash, ON CONFLICT DO NOTHING, {BULK} a statement"),
            format!(
                "INSERT INTO {bare} (task_name, args, queue, args_hash) \
                 SELECT '{TASK}', a, '{QUEUE}', encode(sha256(convert_to(a::text, 'UTF8')), 'hex') \
                 FROM unnest($1::jsonb[]) a ON CONFLICT DO NOTHING"
            ),
        ),
        (
            "bulk_bare_insert_dedup",
            format!("bare INSERT of the same specs with a dedup_key each, ON CONFLICT DO NOTHING, {BULK} a statement"),
            format!(
                "INSERT INTO {bare} (task_name, args, queue, dedup_key) \
                 SELECT s->>'task_name', s->'args', s->>'queue', s->>'dedup_key' \
                 FROM jsonb_array_elements({}) s ON CONFLICT DO NOTHING",
                dedup_specs()
            ),
        ),
        (
            "bulk_bare_insert_options",
            format!("bare INSERT .. SELECT unnest with option columns, {BULK} a statement"),
            format!(
                "INSERT INTO {bare} (task_name, args, queue, {OPTION_COLUMNS}) \
                 SELECT '{TASK}', a, '{QUEUE}', {OPTION_VALUES} FROM unnest($1::jsonb[]) a"
            ),
        ),
    ] {
        reset(admin, bare).await?;
        let rate = load(&bench.url, 1, seconds, &sql, BULK).await?;
        bench.report.add(Figure::new(SCENARIO, key, label, rate, "jobs/s"));
    }
    let many = |extra: &str| {
        format!("SELECT count(*) FROM soniq.enqueue_many('{TASK}', $1::jsonb[], queue => '{QUEUE}'{extra})")
    };
    let figures = [
        (
            "bulk_enqueue_many",
            format!("soniq.enqueue_many, {BULK} a call, 1 connection"),
            many(""),
            "bulk_bare_insert",
            0.80,
        ),
        (
            "bulk_enqueue_many_options",
            format!(
                "soniq.enqueue_many with priority, retries, timeout, producer_id, {BULK} a call"
            ),
            many(&format!(", {OPTIONS}")),
            "bulk_bare_insert_options",
            0.80,
        ),
        (
            "bulk_enqueue_many_unique",
            format!("soniq.enqueue_many, unique_job (args hashed and deduplicated), {BULK} a call"),
            many(", unique_job => true"),
            "bulk_bare_insert_unique",
            0.50,
        ),
        (
            "bulk_enqueue_many_dedup",
            format!("soniq.enqueue_many(specs) with a dedup_key each, {BULK} a call"),
            format!("SELECT count(*) FROM soniq.enqueue_many({})", dedup_specs()),
            "bulk_bare_insert_dedup",
            0.50,
        ),
    ];
    for (key, label, sql, yardstick, target) in figures {
        bulk_figure(bench, admin, bare, (key, label, sql), yardstick, target).await?;
    }
    reset(admin, bare).await?;
    let rate = runner_bulk(bench, seconds).await?;
    bench.report.add(
        Figure::new(
            SCENARIO,
            "bulk_runner_enqueue_many",
            format!("the runner's Soniq::enqueue_many, {BULK} a call"),
            rate,
            "jobs/s",
        )
        .against(bench.report.yardstick(SCENARIO, "bulk_bare_insert"))
        .target(Target::ratio_at_least(0.80)),
    );
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

    bulk(bench, &admin, &bare).await?;

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
