//! Workers and tasks: register, heartbeat, deregister, publish task options, and the
//! maintenance rounds a worker runs where no control plane serves the database.

use super::{run, Sql};
use crate::error::Result;
use crate::store::WorkerRegistration;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Statement};
use uuid::Uuid;

pub const HEARTBEAT: Sql = Sql {
    text: "SELECT soniq.heartbeat($1, $2)",
    types: &[Type::UUID, Type::UUID_ARRAY],
};

pub async fn register(client: &impl GenericClient, worker: &WorkerRegistration) -> Result<Uuid> {
    let row = client
        .query_typed_one(
            "SELECT soniq.register_worker($1, $2, $3, $4, $5, task_names => $6)",
            &[
                (&worker.host, Type::TEXT),
                (&worker.pid, Type::INT4),
                (&worker.queues, Type::TEXT_ARRAY),
                (&worker.concurrency, Type::INT4),
                (&worker.version, Type::TEXT),
                (&worker.task_names, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn heartbeat(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    worker_id: Uuid,
    held: &[Uuid],
) -> Result<Vec<Uuid>> {
    let rows = run(client, &HEARTBEAT, prepared, &[&worker_id, &held]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

pub async fn deregister(client: &impl GenericClient, worker_id: Uuid) -> Result<()> {
    client
        .query_typed(
            "SELECT soniq.deregister_worker($1)",
            &[(&worker_id, Type::UUID)],
        )
        .await?;
    Ok(())
}

pub async fn register_task(
    client: &impl GenericClient,
    name: &str,
    defaults: &Value,
) -> Result<()> {
    client
        .query_typed(
            "SELECT soniq.register_task($1, $2)",
            &[(&name, Type::TEXT), (defaults, Type::JSONB)],
        )
        .await?;
    Ok(())
}

pub async fn rescue(client: &impl GenericClient, heartbeat_timeout: Duration) -> Result<()> {
    client
        .query_typed(
            "SELECT soniq.rescue_jobs(make_interval(secs => $1))",
            &[(&heartbeat_timeout.as_secs_f64(), Type::FLOAT8)],
        )
        .await?;
    Ok(())
}

/// One batch, one transaction: a backlog of finished jobs never becomes one long transaction.
pub async fn prune(client: &impl GenericClient, batch_size: i32) -> Result<i64> {
    Ok(client
        .query_typed_one(
            "SELECT soniq.prune_jobs(batch_size => $1, max_batches => 1)",
            &[(&batch_size, Type::INT4)],
        )
        .await?
        .get(0))
}
