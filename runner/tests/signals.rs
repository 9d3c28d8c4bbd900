//! A real worker process (the quickstart example) and real signals: SIGTERM during work
//! loses nothing and burns no attempt; a second signal exits at once. `cargo test` builds
//! the example next to this test.
#![cfg(feature = "e2e")]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn url() -> String {
    std::env::var("SONIQ_TEST_DATABASE_URL").expect("SONIQ_TEST_DATABASE_URL; run scripts/test")
}

fn run(args: &[&str]) -> String {
    let output = Command::new(common::example("quickstart"))
        .args(args)
        .env("SONIQ_DATABASE_URL", url())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn worker(shutdown_timeout: &str) -> Child {
    Command::new(common::example("quickstart"))
        .arg("worker")
        .env("SONIQ_DATABASE_URL", url())
        .env("SONIQ_SHUTDOWN_TIMEOUT", shutdown_timeout)
        .env("SONIQ_POLL_INTERVAL", "0.2")
        .env("SONIQ_HEARTBEAT_INTERVAL", "0.5")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn job_state(client: &mut postgres_client::Client, id: &str) -> (String, i32) {
    let row = client
        .query_one(
            "SELECT status, attempts FROM soniq.jobs WHERE id = $1::text::uuid",
            &[&id],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn wait_processing(client: &mut postgres_client::Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while job_state(client, id).0 != "processing" {
        assert!(
            Instant::now() < deadline,
            "the worker never started the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the worker did not exit in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

mod postgres_client {
    pub use tokio_postgres::Error;
    pub struct Client(tokio::runtime::Runtime, tokio_postgres::Client);

    impl Client {
        pub fn connect(url: &str) -> Client {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = runtime.block_on(async { soniq_runner::cli::connect(url).await.unwrap() });
            Client(runtime, client)
        }

        pub fn query_one(
            &mut self,
            sql: &str,
            params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        ) -> Result<tokio_postgres::Row, Error> {
            self.0.block_on(self.1.query_one(sql, params))
        }
    }
}

/// One test, two phases: both workers serve the quickstart queue, so they must not overlap.
#[test]
fn sigterm_hands_jobs_back_and_a_second_signal_exits_at_once() {
    let mut client = postgres_client::Client::connect(&url());

    // SIGTERM during work: the job goes back to the queue with its attempt unused.
    let job = run(&["enqueue-slow", "30"]);
    let mut child = worker("0.5");
    wait_processing(&mut client, &job);
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "a graceful shutdown exits 0: {status}");
    assert_eq!(
        job_state(&mut client, &job),
        ("queued".to_string(), 0),
        "back in the queue, attempt unused"
    );

    // A second signal does not wait for the 60 s shutdown timeout.
    let mut child = worker("60");
    wait_processing(&mut client, &job);
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    signal(&child, "INT");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it did not wait for the shutdown timeout"
    );
    assert_eq!(status.code(), Some(130));
    // The job stays leased to the dead worker until the control plane takes it back (its
    // second and last attempt remains, so it is queued again rather than dead-lettered).
    let deadline = Instant::now() + Duration::from_secs(20);
    while job_state(&mut client, &job).0 != "queued" {
        assert!(
            Instant::now() < deadline,
            "the control plane never took the job back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    client
        .query_one("SELECT soniq.cancel_job($1::text::uuid)", &[&job])
        .unwrap();
}
