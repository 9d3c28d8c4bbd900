//! The test kit the extension's end-to-end tests (`tests/`) and the runner's (`runner/tests/`)
//! share: the test cluster scripts/test names in the environment, names that keep tests
//! apart, waiting on a condition, a throwaway cluster of its own ([`cluster`]) and one of
//! every kind of row ([`sample`]).

pub mod cluster;
pub mod sample;

use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The test database (SONIQ_TEST_DATABASE_URL, set by scripts/test).
pub fn database_url() -> String {
    std::env::var("SONIQ_TEST_DATABASE_URL").expect(
        "SONIQ_TEST_DATABASE_URL must name a database with the soniq extension; run scripts/test",
    )
}

/// The programs' folder of the PostgreSQL version under test (SONIQ_PG_BINDIR, set by
/// scripts/test from that version's `pg_config --bindir`).
pub fn pg_bindir() -> String {
    std::env::var("SONIQ_PG_BINDIR")
        .expect("SONIQ_PG_BINDIR must name the PostgreSQL programs' folder; run scripts/test")
}

/// A program of the PostgreSQL version under test.
pub fn pg_program(name: &str) -> String {
    format!("{}/{name}", pg_bindir())
}

/// A blocking client of the test database.
pub fn connect() -> Client {
    connect_to(&database_url())
}

pub fn connect_to(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// A name no other test (or earlier run) uses, so tests sharing a database stay apart. Made
/// of lowercase letters, digits and `_` after the prefix: a task name, a queue name or a
/// database name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{nanos}_{n}", std::process::id())
}

/// Poll `probe` until it yields a value; panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(100));
    }
}

/// A cluster setting changed by ALTER SYSTEM and a reload while the guard lives; reset (and
/// reloaded) when it drops, whatever happened. Each change runs on a thread of its own with a
/// blocking client, so async tests can hold one too.
pub struct SystemSetting(&'static str);

impl SystemSetting {
    pub fn set(name: &'static str, value: &str) -> SystemSetting {
        alter_system(format!("ALTER SYSTEM SET {name} = '{value}'"))
            .unwrap_or_else(|e| panic!("set {name}: {e}"));
        SystemSetting(name)
    }
}

impl Drop for SystemSetting {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if let Err(e) = alter_system(format!("ALTER SYSTEM RESET {}", self.0)) {
            eprintln!("reset {}: {e}", self.0);
        }
    }
}

/// One ALTER SYSTEM statement (outside a transaction block, as it must be), then a reload.
fn alter_system(statement: String) -> Result<(), String> {
    std::thread::spawn(move || {
        let mut client = connect();
        client.batch_execute(&statement)?;
        client.batch_execute("SELECT pg_reload_conf()")
    })
    .join()
    .map_err(|_| "the client's thread panicked".to_string())?
    .map_err(|e| e.to_string())
}
