//! dashboard: what `soniq dashboard` costs at scale. With a backlog of 1,000,000 queued,
//! 1,000,000 done and 100,000 dead jobs (quick: 10,000, 10,000, 1,000) in a queue of its own:
//! * each page's time, server side (the median of five fetches over loopback, after one that
//!   warms it), against 100 ms: the overview, the jobs (also filtered by a status whose rows lie
//!   behind a million others, the keyset's worst case), a job, the dead letter (also filtered
//!   by a tag no row has: the scan bound's worst case), the schedules, the workers, /metrics;
//! * the drain beside a dashboard serving the same database (counting as often as it lets
//!   itself: `--count-interval 1`; the overview and /metrics fetched every 2 s), against the
//!   same drain without it, interleaved, against 0.95.

use super::db::{self, connect};
use super::drain;
use super::report::{Figure, Target};
use super::Bench;
use soniq_runner::dashboard::{self, DashboardOptions};
use soniq_runner::{Error, Result, Soniq};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SCENARIO: &str = "dashboard";
const TASK: &str = "bench.dashboard";
const QUEUE: &str = "bench.dashboard";
const FETCHES: usize = 5;
/// Drains with and without the dashboard, each.
const ROUNDS: usize = 2;
const DRAIN_CONCURRENCY: usize = 64;

/// The backlog, written directly (through the API a million jobs would take longer than the
/// rest of the scenario): done rows kept for a day, made first so that the newest million
/// are the queued ones; dead rows dying 1 ms apart.
async fn fill(admin: &tokio_postgres::Client, rows: usize) -> Result<()> {
    db::add_history(admin, TASK, QUEUE, rows).await?;
    db::fill(admin, TASK, QUEUE, rows).await?;
    let rows = rows as i32;
    admin
        .execute(
            &format!(
                "INSERT INTO soniq.dead_letter_jobs (id, task_name, args, queue, priority, attempts,
                        max_attempts, result_ttl, last_error, dead_letter_reason, original_created_at,
                        moved_to_dead_letter_at)
                 SELECT soniq.uuid_v7(), '{TASK}', jsonb_build_object('n', g), '{QUEUE}', 100, 4, 4,
                        interval '300 s', 'bench', 'max_retries_exceeded', now(),
                        now() - g * interval '1 ms'
                   FROM generate_series(1, $1::int / 10) g"
            ),
            &[&rows],
        )
        .await?;
    db::settle(admin, "soniq.jobs").await?;
    db::settle(admin, "soniq.dead_letter_jobs").await
}

/// A dashboard on loopback, counting every second (as often as it lets itself); stopped when
/// dropped.
struct Served {
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(bench: &Bench) -> Result<Served> {
        let app = Arc::new(Soniq::with_settings(bench.settings.clone())?);
        let routes = dashboard::routes(
            app,
            DashboardOptions {
                base_path: String::new(),
                count_interval: Duration::from_secs(1),
                actions: None,
            },
        );
        let failed = |e: std::io::Error| Error::Invalid(format!("dashboard: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(failed)?;
        let address = listener.local_addr().map_err(failed)?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, routes).await;
        });
        Ok(Served { address, server })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// GET `path` from the dashboard at `address`: its status and how long it took.
async fn get(address: SocketAddr, path: &str) -> Result<(u16, Duration)> {
    let failed = |e: std::io::Error| Error::Invalid(format!("dashboard {path}: {e}"));
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.map_err(failed)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(failed)?;
    let took = started.elapsed();
    let status = String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, took))
}

/// The median time of `path`, in ms, after one untimed fetch.
async fn page_ms(address: SocketAddr, path: &str) -> Result<f64> {
    let mut times = Vec::with_capacity(FETCHES);
    for i in 0..=FETCHES {
        let (status, took) = get(address, path).await?;
        if status != 200 {
            return Err(Error::Invalid(format!("dashboard {path}: status {status}")));
        }
        if i > 0 {
            times.push(took.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(db::quantile(&times, 0.5))
}

/// A viewer of the overview and a scraper of /metrics, every 2 s, until aborted.
fn keep_looking(address: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = get(address, "/").await;
            let _ = get(address, "/metrics").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let admin = connect(&bench.url).await?;
    db::clean_queue(&admin, QUEUE).await?;
    let rows = bench.plan.dashboard_rows;
    fill(&admin, rows).await?;
    let measured = measure(bench, &admin, rows).await;
    db::clean_queue(&admin, QUEUE).await?;
    measured
}

async fn measure(bench: &mut Bench, admin: &tokio_postgres::Client, rows: usize) -> Result<()> {
    let served = Served::start(bench).await?;
    // The first count has to land before the pages show what they will.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job: uuid::Uuid = admin
        .query_one(
            "SELECT id FROM soniq.jobs WHERE queue = $1 ORDER BY id LIMIT 1",
            &[&QUEUE],
        )
        .await?
        .get(0);
    let pages = [
        ("overview", "the overview".to_string(), "/".to_string()),
        ("jobs", "the jobs".into(), "/jobs".into()),
        (
            "jobs_done",
            "the jobs, status done (behind the queued ones)".into(),
            "/jobs?status=done".into(),
        ),
        ("job", "a job".into(), format!("/jobs/{job}")),
        (
            "dead_letter",
            "the dead letter".into(),
            "/dead-letter".into(),
        ),
        (
            "dead_letter_tag",
            "the dead letter, a tag no job has".into(),
            "/dead-letter?tag=none".into(),
        ),
        ("schedules", "the schedules".into(), "/schedules".into()),
        ("workers", "the workers".into(), "/workers".into()),
        ("metrics", "/metrics".into(), "/metrics".into()),
    ];
    let scale = format!("{rows} queued + {rows} done + {} dead", rows / 10);
    for (key, what, path) in pages {
        let ms = page_ms(served.address, &path).await?;
        bench.report.add(
            Figure::new(SCENARIO, key, format!("{what}, median, {scale}"), ms, "ms")
                .target(Target::value_at_most(100.0)),
        );
    }
    drop(served);

    let jobs = bench.plan.jobs;
    let (mut without, mut beside) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        without += drain::measure(bench, DRAIN_CONCURRENCY, jobs, None)
            .await?
            .rate;
        let served = Served::start(bench).await?;
        let looking = keep_looking(served.address);
        let drained = drain::measure(bench, DRAIN_CONCURRENCY, jobs, None).await;
        looking.abort();
        drop(served);
        beside += drained?.rate;
    }
    let (without, beside) = (without / ROUNDS as f64, beside / ROUNDS as f64);
    bench.report.add(Figure::new(
        SCENARIO,
        "drain_alone",
        format!("drain, concurrency {DRAIN_CONCURRENCY}, {jobs} jobs, beside the backlog, mean of {ROUNDS}"),
        without,
        "jobs/s",
    ));
    bench.report.add(
        Figure::new(
            SCENARIO,
            "drain_dashboard",
            format!("the same drain with a dashboard serving the database, mean of {ROUNDS}"),
            beside,
            "jobs/s",
        )
        .against(bench.report.yardstick(SCENARIO, "drain_alone"))
        .target(Target::ratio_at_least(0.95)),
    );
    Ok(())
}
