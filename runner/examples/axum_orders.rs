//! An axum service that records an order and enqueues its invoice in one sqlx transaction,
//! with a worker running in the same process and stopping with the server.
//!
//! ```sh
//! SONIQ_DATABASE_URL=postgres://postgres@localhost:5488/soniq \
//!     cargo run -p soniq-runner --features sqlx --example axum_orders
//! curl -X POST localhost:3000/orders -H 'content-type: application/json' -d '{"total": 42}'
//! ```

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use soniq_runner::{JobContext, JobResult, Outcome, Soniq, Task, WorkerOptions};
use sqlx::postgres::PgPool;
use std::sync::Arc;

#[derive(Serialize, Deserialize)]
struct Invoice {
    order_id: i64,
}

#[derive(Deserialize)]
struct NewOrder {
    total: i64,
}

struct AppState {
    db: PgPool,
    soniq: Soniq,
    send_invoice: Task<Invoice>,
}

/// The order and its invoice job commit together, or neither exists.
async fn create_order(
    State(state): State<Arc<AppState>>,
    Json(order): Json<NewOrder>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let fail = |e: &dyn std::fmt::Display| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let mut tx = state.db.begin().await.map_err(|e| fail(&e))?;
    let order_id: i64 = sqlx::query_scalar("INSERT INTO orders (total) VALUES ($1) RETURNING id")
        .bind(order.total)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| fail(&e))?;
    let job_id = state
        .soniq
        .enqueue(&state.send_invoice, Invoice { order_id })
        .send_on_sqlx(&mut tx)
        .await
        .map_err(|e| fail(&e))?;
    tx.commit().await.map_err(|e| fail(&e))?;
    Ok(Json(
        serde_json::json!({"order_id": order_id, "invoice_job": job_id.to_string()}),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("SONIQ_DATABASE_URL")?;
    let db = PgPool::connect(&url).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, total bigint NOT NULL)",
    )
    .execute(&db)
    .await?;
    let mut soniq = Soniq::from_env()?;
    let send_invoice = soniq
        .job("orders.send_invoice")
        .queue("invoices")
        .retries(5)
        .handler(|invoice: Invoice, _ctx: JobContext| async move {
            println!("invoice for order {}", invoice.order_id);
            JobResult::Ok(Outcome::done())
        })?;
    let state = Arc::new(AppState {
        db,
        soniq,
        send_invoice,
    });

    // One shutdown signal for both: the server stops accepting, the worker drains.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let mut server_stopped = stopped.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = server_stopped.changed().await;
    });
    let mut worker_stopped = stopped;
    let worker_shutdown = async move {
        let _ = worker_stopped.changed().await;
    };
    let worker = state
        .soniq
        .run_worker_until(WorkerOptions::default(), worker_shutdown);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    let (served, worked) = tokio::join!(server, worker);
    served?;
    worked?;
    Ok(())
}
