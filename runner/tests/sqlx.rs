//! Transactional enqueue on the caller's sqlx transaction.
#![cfg(all(feature = "e2e", feature = "sqlx"))]

use serde::{Deserialize, Serialize};
use soniq_runner::{JobContext, JobResult, Outcome, Soniq};
use sqlx::Connection;

#[derive(Serialize, Deserialize)]
struct Invoice {
    order: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_sqlx_transaction_leaves_no_job() {
    let url = std::env::var("SONIQ_TEST_DATABASE_URL")
        .expect("SONIQ_TEST_DATABASE_URL; run scripts/test");
    let queue = format!("sqlx_{}", std::process::id());
    let mut soniq = Soniq::new(&url).unwrap();
    let invoice = soniq
        .job(format!("{queue}.invoice"))
        .queue(&queue)
        .handler(|_: Invoice, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();

    let mut tx = connection.begin().await.unwrap();
    soniq
        .enqueue(&invoice, Invoice { order: 1 })
        .send_on_sqlx(&mut tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = connection.begin().await.unwrap();
    let kept = soniq
        .enqueue(&invoice, Invoice { order: 2 })
        .run_in(std::time::Duration::from_secs(60))
        .send_on_sqlx(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let jobs: Vec<(uuid::Uuid, bool)> =
        sqlx::query_as("SELECT id, scheduled_at > now() FROM soniq.jobs WHERE queue = $1")
            .bind(&queue)
            .fetch_all(&mut connection)
            .await
            .unwrap();
    assert_eq!(
        jobs,
        vec![(kept, true)],
        "only the committed job exists, scheduled in the future"
    );

    // The database's errors come back with their SQLSTATE.
    let mut tx = connection.begin().await.unwrap();
    let err = soniq
        .enqueue(&invoice, Invoice { order: 3 })
        .priority(5000)
        .send_on_sqlx(&mut tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.sqlstate(),
        Some(tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );
}

/// The in-memory queue would never see a job written through the caller's transaction:
/// refused before any SQL is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_soniq_refuses_to_enqueue_on_an_sqlx_transaction() {
    let url = std::env::var("SONIQ_TEST_DATABASE_URL")
        .expect("SONIQ_TEST_DATABASE_URL; run scripts/test");
    let queue = format!("sqlx_memory_{}", std::process::id());
    let mut soniq = Soniq::in_memory();
    let invoice = soniq
        .job(format!("{queue}.invoice"))
        .queue(&queue)
        .handler(|_: Invoice, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = connection.begin().await.unwrap();
    let err = soniq
        .enqueue(&invoice, Invoice { order: 1 })
        .send_on_sqlx(&mut tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("this Soniq is in memory"), "{err}");
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM soniq.jobs WHERE queue = $1")
        .bind(&queue)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, 0, "nothing was written through the transaction");
    assert!(soniq.enqueued(invoice.name()).is_empty());
}
