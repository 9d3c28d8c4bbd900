//! Failover to a streaming standby: a primary with soniq preloaded and a synchronous standby
//! (`pg_basebackup -R`), a runner given both hosts with `target_session_attrs=read-write`.
//! Mid-drain the primary crashes and the standby is promoted: the runner finds the new
//! primary by itself, the control plane starts there (never on the standby), and no job
//! whose commit the primary acknowledged is lost.
#![cfg(feature = "e2e")]

mod common;

use common::*;
use soniq_runner::{ConnectionConfig, JobContext, JobResult, Outcome, Soniq};
use soniq_testkit::cluster::Cluster;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

const PRIMARY: u16 = 5495;
const STANDBY: u16 = 5496;
const JOBS: i32 = 3000;

fn url(ports: &[u16], database: &str, options: &str) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("localhost:{p}")).collect();
    format!(
        "postgres://postgres@{}/{database}?{options}",
        hosts.join(",")
    )
}

/// A client of database `shop` on one server, trying again (for up to 30 s) while it starts
/// or is promoted.
async fn connect(port: u16) -> tokio_postgres::Client {
    connect_to(port, "shop").await
}

async fn connect_to(port: u16, database: &str) -> tokio_postgres::Client {
    let config = ConnectionConfig::parse(&url(&[port], database, "")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match config.connect().await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                let e = soniq_runner::Error::from(e);
                eprintln!("connect to {port}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "server on port {port} did not come up: {}",
                soniq_runner::Error::from(e)
            ),
        }
    }
}

/// Until `probe` (a query returning one boolean) holds on the server at `port`, or `limit`.
async fn until(port: u16, what: &str, limit: Duration, probe: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let holds = connect(port)
            .await
            .query_one(probe, &[])
            .await
            .map(|row| row.get::<_, bool>(0));
        if let Ok(true) = holds {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {holds:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const CONTROL_PLANE_RUNS: &str =
    "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'soniq control plane'";

/// The primary (soniq preloaded, serving `shop`) with a synchronous standby streaming from it.
async fn primary_and_standby() -> (Cluster, Cluster) {
    let primary = Cluster::init(&soniq_testkit::pg_bindir(), "primary", PRIMARY);
    primary.configure(&[
        "shared_preload_libraries = 'soniq'".into(),
        "soniq.database_name = 'shop'".into(),
        "soniq.tick_interval = 1s".into(),
        "soniq.heartbeat_timeout = 2s".into(),
        "soniq.lease_grace = 1s".into(),
        "wal_level = replica".into(),
    ]);
    primary.start(&[]);
    let admin = connect_to(PRIMARY, "postgres").await;
    admin.batch_execute("CREATE DATABASE shop").await.unwrap();
    connect(PRIMARY)
        .await
        .batch_execute("CREATE EXTENSION soniq")
        .await
        .unwrap();
    let standby = Cluster::standby_of(&primary, "standby", STANDBY);
    standby.start(&[]);
    // Commits wait until the standby has flushed them: an acknowledged job survives failover.
    admin
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        .await
        .unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    until(
        PRIMARY,
        "the standby to replicate synchronously",
        Duration::from_secs(30),
        "SELECT count(*) = 1 FROM pg_stat_replication WHERE sync_state = 'sync'",
    )
    .await;
    (primary, standby)
}

/// How many jobs of the test's task the server holds.
async fn failover_jobs(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE task_name = 'failover.job'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_follows_a_failover_to_the_promoted_standby_and_loses_nothing() {
    let (primary, standby) = primary_and_standby().await;
    let queue = unique("failover");
    let enqueued: i64 = connect(PRIMARY)
        .await
        .query_one(
            "SELECT count(*) FROM soniq.enqueue_many('failover.job',
                 array_fill('{}'::jsonb, ARRAY[$1::int]), queue => $2)",
            &[&JOBS, &queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(enqueued, i64::from(JOBS));
    until(
        PRIMARY,
        "the control plane on the primary",
        Duration::from_secs(30),
        CONTROL_PLANE_RUNS,
    )
    .await;

    // The standby: reads work, writes get PostgreSQL's read-only error, no control plane.
    let replica = connect(STANDBY).await;
    until(
        STANDBY,
        "the jobs on the standby",
        Duration::from_secs(30),
        &format!("SELECT count(*) = {JOBS} FROM soniq.jobs WHERE queue = '{queue}'"),
    )
    .await;
    let refused = replica
        .query_one("SELECT soniq.enqueue('failover.job', '{}')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{refused}"
    );
    let on_standby: i64 = replica
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'soniq control plane'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_standby, 0, "no control plane runs on a standby");
    drop(replica);

    // A runner given both hosts; the primary crashes a fifth of the way through the drain.
    let both = url(
        &[PRIMARY, STANDBY],
        "shop",
        "target_session_attrs=read-write",
    );
    let mut soniq = Soniq::with_settings(
        settings(4)
            .to_builder()
            .database_url(&both)
            .build()
            .unwrap(),
    )
    .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    soniq
        .job("failover.job")
        .queue(&queue)
        .retries(20)
        .handler(move |_: serde_json::Value, _ctx: JobContext| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
                JobResult::Ok(Outcome::done())
            }
        })
        .unwrap();
    // A producer through the same hosts, enqueueing throughout: each enqueue it saw
    // acknowledged must be on the new primary (synchronous replication), and then done.
    let producer = Soniq::with_settings(soniq.settings().clone()).unwrap();
    let task = producer
        .task_ref::<serde_json::Value>("failover.job")
        .unwrap()
        .queue(&queue);
    let (producing, stop_producing) = tokio::sync::watch::channel(false);
    let acknowledged = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        while !*stop_producing.borrow() {
            match producer.enqueue(&task, serde_json::json!({})).await {
                Ok(id) => acknowledged.push(id),
                // The primary is gone, or the standby not yet promoted.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        acknowledged
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        soniq
            .run_worker_until(serve(&queue), async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while runs.load(Ordering::Relaxed) < JOBS as usize / 5 {
        assert!(Instant::now() < deadline, "the drain did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let crashed = Arc::clone(&runs);
    let (clusters, ran_before) = tokio::task::spawn_blocking(move || {
        primary.stop_immediately();
        let ran_before = crashed.load(Ordering::Relaxed);
        standby.promote();
        ((primary, standby), ran_before)
    })
    .await
    .unwrap();
    assert!(ran_before < JOBS as usize, "the crash came after the drain");

    until(
        STANDBY,
        "the control plane on the promoted standby",
        Duration::from_secs(30),
        CONTROL_PLANE_RUNS,
    )
    .await;
    // Enqueues reach the new primary before the producer stops.
    let promoted_at = Instant::now();
    let new_primary = connect(STANDBY).await;
    let at_promotion = failover_jobs(&new_primary).await;
    while failover_jobs(&new_primary).await < at_promotion + 20 {
        assert!(
            promoted_at.elapsed() < Duration::from_secs(30),
            "no enqueue reached the new primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    producing.send(true).unwrap();
    let acknowledged = acknowledged.await.unwrap();
    until(
        STANDBY,
        "every job done on the new primary",
        Duration::from_secs(120),
        "SELECT count(*) FILTER (WHERE status <> 'done') = 0 FROM soniq.jobs \
          WHERE task_name = 'failover.job'",
    )
    .await;
    let done: i64 = new_primary
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE id = ANY($1) AND status = 'done'",
            &[&acknowledged],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        done as usize,
        acknowledged.len(),
        "an acknowledged enqueue was lost"
    );
    let total: i64 = failover_jobs(&new_primary).await;
    assert!(total as usize >= JOBS as usize + acknowledged.len());
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();
    let ran = runs.load(Ordering::Relaxed);
    eprintln!(
        "failover: {JOBS} jobs queued and {} enqueued during the drain (acknowledged), 0 lost; \
         {ran_before} had run when the primary crashed; {} ran again (caught by the crash)",
        acknowledged.len(),
        ran.saturating_sub(total as usize)
    );
    drop(clusters);
}
