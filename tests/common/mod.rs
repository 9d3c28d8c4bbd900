//! Shared by the end-to-end tests: they talk to the development cluster named by
//! SONIQ_TEST_DATABASE_URL (scripts/test sets it) from committing clients, as an
//! application and a runner would.

use postgres::{Client, NoTls};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn database_url() -> String {
    std::env::var("SONIQ_TEST_DATABASE_URL").expect(
        "SONIQ_TEST_DATABASE_URL must name a database with the soniq extension; run scripts/test",
    )
}

pub fn connect() -> Client {
    Client::connect(&database_url(), NoTls).expect("connect to the test database")
}

/// A name no other test (or earlier run) uses, so tests sharing a database stay apart.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}
