//! Shared by the runner's end-to-end tests (each test binary uses some of these).
#![allow(dead_code)]

use soniq_runner::{Settings, Soniq, WorkerOptions};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// A login of its own (a unique name made from `prefix`) in role `group`; [`drop_login`]
/// removes it.
pub async fn create_login(admin: &tokio_postgres::Client, prefix: &str, group: &str) -> String {
    let name = unique(prefix);
    admin
        .batch_execute(&format!("CREATE ROLE {name} LOGIN IN ROLE {group}"))
        .await
        .unwrap();
    name
}

pub async fn drop_login(admin: &tokio_postgres::Client, name: &str) {
    admin
        .batch_execute(&format!("DROP ROLE {name}"))
        .await
        .unwrap();
}

/// `n` jobs of task `<queue>.work` in `queue`, moved to the dead letter in one transaction;
/// their ids in order.
pub async fn dead_jobs(admin: &tokio_postgres::Client, queue: &str, n: i32) -> Vec<uuid::Uuid> {
    admin
        .execute(
            "SELECT soniq.enqueue($1 || '.work', queue => $1) FROM generate_series(1, $2)",
            &[&queue, &n],
        )
        .await
        .unwrap();
    admin
        .execute(
            "SELECT soniq.dead_letter_move(id) FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .await
        .unwrap();
    admin
        .query(
            "SELECT id FROM soniq.dead_letter_jobs WHERE queue = $1 ORDER BY id",
            &[&queue],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
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
pub fn stop_runner(runner: Runner) {
    let pid = runner
        .0
        .as_ref()
        .expect("a running runner")
        .id()
        .to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    wait_for_exit(runner);
}

/// Wait for a runner to exit (after a signal, say), and check it exited cleanly.
pub fn wait_for_exit(mut runner: Runner) {
    let status = runner.0.take().expect("a running runner").wait().unwrap();
    assert!(status.success(), "the runner exited with {status}");
}

/// `GET path` over a fresh connection: the status and the body.
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_exchange(address, path);
    (status, body)
}

/// A GET's status, head (its status line and headers) and body.
pub fn http_exchange(address: SocketAddr, path: &str) -> (u16, String, String) {
    http_request(address, "GET", path, &[], "")
}

/// A request's status, head (its status line and headers) and body; `headers` are lines such
/// as `Cookie: a=b`. A body is sent as a form.
pub fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(&format!("{header}\r\n"));
    }
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The value of a response head's header `name` (case-insensitive), if it has one.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The samples of a Prometheus text page, by `name{labels}` as written (labels in name order).
pub fn prometheus_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            (key.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// Start a `soniq` command that serves HTTP and logs its address (`address=...`) on a line
/// containing `marker`; returns it with that address. Its stderr is read to the end, so it
/// never blocks on a full pipe.
pub fn start_serving(mut command: Command, marker: &str) -> (Runner, SocketAddr) {
    let mut child = command
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let runner = Runner(Some(child));
    let (lines, logged) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(|line| line.ok()) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = logged
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line with {marker:?} within 30 s"));
        if line.contains(marker) {
            let field = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("address="));
            let address = field.expect("the address in the log line").parse().unwrap();
            return (runner, address);
        }
    }
}

/// The sample `key` of a page `prometheus_samples` read; panics with the page if missing.
pub fn sample(all: &HashMap<String, f64>, key: &str) -> f64 {
    *all.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {all:#?}"))
}

/// Poll `condition` every 50 ms, for at most a minute.
pub async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The test database's URL with another user (the test cluster trusts local logins).
pub fn url_as(user: &str) -> String {
    let url = database_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

/// Run the `soniq` command with `args` against the database at `url`: its exit status, stdout
/// and stderr.
#[cfg(feature = "cli")]
pub fn run_soniq(url: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_soniq"))
        .args(args)
        .env("SONIQ_DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
