//! Shared by the runner's end-to-end tests (each test binary uses some of these).
#![allow(dead_code)]

use soniq_runner::{Settings, Soniq, WorkerOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use soniq_testkit::{database_url, unique_name as unique};

/// Settings for tests: quick polls, heartbeats well inside the test cluster's 2 s timeout.
pub fn settings(concurrency: usize) -> Settings {
    Settings::builder(database_url())
        .concurrency(concurrency)
        .poll_interval(Duration::from_millis(200))
        .heartbeat_interval(Duration::from_millis(300))
        .shutdown_timeout(Duration::from_secs(5))
        .error_retry_delay(Duration::from_millis(200))
        .build()
        .unwrap()
}

pub fn app_with(concurrency: usize) -> Soniq {
    Soniq::with_settings(settings(concurrency)).unwrap()
}

pub fn app() -> Soniq {
    app_with(4)
}

/// A plain client for checking what the database holds.
pub async fn sql() -> tokio_postgres::Client {
    soniq_runner::cli::connect(&database_url()).await.unwrap()
}

/// A client on the test database with the table examples/flow_worker records its runs in
/// (`soniq_flow.runs`: job id, attempt, when its handler began and ended) and its task
/// published as it publishes it, so jobs enqueued before a runner starts have their keys.
pub async fn flow_runs() -> tokio_postgres::Client {
    let client = sql().await;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS soniq_flow;
             CREATE TABLE IF NOT EXISTS soniq_flow.runs (
                 job_id uuid NOT NULL, attempt int NOT NULL, began timestamptz NOT NULL, ended timestamptz);
             CREATE INDEX IF NOT EXISTS runs_job_idx ON soniq_flow.runs (job_id);
             SELECT soniq.register_task('flow.hold', '{\"concurrency_key\": \"tenant\", \"result_ttl\": 86400}');",
        )
        .await
        .unwrap();
    client
}

/// The one count a statement of one parameter (the queue) returns.
pub async fn count(client: &tokio_postgres::Client, sql: &str, queue: &str) -> i64 {
    client.query_one(sql, &[&queue]).await.unwrap().get(0)
}

/// A database of its own, with the extension and no control plane serving it: for a test
/// that changes what the shared test database must not see. `drop_database` removes it.
pub struct FreshDatabase {
    pub name: String,
    pub url: String,
    /// Connected to it.
    pub client: tokio_postgres::Client,
}

pub async fn fresh_database(prefix: &str) -> FreshDatabase {
    let name = unique(prefix);
    sql()
        .await
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    let url = format!("{}/{name}", database_url().rsplit_once('/').unwrap().0);
    let client = soniq_runner::cli::connect(&url).await.unwrap();
    client
        .batch_execute("CREATE EXTENSION soniq")
        .await
        .unwrap();
    FreshDatabase { name, url, client }
}

pub async fn drop_database(database: FreshDatabase) {
    drop(database.client);
    sql()
        .await
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", database.name))
        .await
        .unwrap();
}

/// Test settings for a worker on `database`.
pub fn settings_on(database: &FreshDatabase, concurrency: usize) -> Settings {
    settings(concurrency)
        .to_builder()
        .database_url(&database.url)
        .build()
        .unwrap()
}

pub fn serve(queue: &str) -> WorkerOptions {
    WorkerOptions {
        queues: Some(vec![queue.to_string()]),
        ..WorkerOptions::default()
    }
}

pub fn run_once(queue: &str) -> WorkerOptions {
    WorkerOptions {
        run_once: true,
        ..serve(queue)
    }
}

/// The built example `name` (`cargo test` builds the examples next to the test binaries).
pub fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds the examples",
        binary.display()
    );
    binary
}

/// A runner process (an example binary), killed if a failed test leaves it behind.
pub struct Runner(pub Option<Child>);

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The example runner `example` serving `queue` at `concurrency`, with test settings (quick
/// polls and heartbeats) and more (or other) from `env`.
pub fn start_example(
    example_name: &str,
    queue: &str,
    concurrency: usize,
    env: &[(&str, String)],
) -> Runner {
    Command::new(example(example_name))
        .arg(queue)
        .env("SONIQ_DATABASE_URL", database_url())
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env("SONIQ_CONCURRENCY", concurrency.to_string())
        .env("SONIQ_POLL_INTERVAL", "0.2")
        .env("SONIQ_HEARTBEAT_INTERVAL", "0.3")
        .env("SONIQ_ERROR_RETRY_DELAY", "0.2")
        .env("SONIQ_SHUTDOWN_TIMEOUT", "10")
        .stdout(Stdio::null())
        .spawn()
        .map(|child| Runner(Some(child)))
        .unwrap_or_else(|e| panic!("start {example_name}: {e}"))
}

/// Ask a runner to stop (SIGTERM) and wait for it.
pub fn stop_runner(mut runner: Runner) {
    let mut runner = runner.0.take().expect("a running runner");
    let pid = runner.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = runner.wait().unwrap();
    assert!(status.success(), "the runner exited with {status}");
}
