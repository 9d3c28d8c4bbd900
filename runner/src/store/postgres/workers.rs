//! Workers and tasks: register, heartbeat, deregister, publish task options, and the
//! maintenance rounds a worker runs where no control plane serves the database.

use crate::error::Result;
use crate::store::WorkerRegistration;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::{GenericClient, ToStatement};
use uuid::Uuid;

pub const HEARTBEAT: &str = "SELECT soniq.heartbeat($1, $2)";

pub async fn register(client: &impl GenericClient, worker: &WorkerRegistration) -> Result<Uuid> {
    let row = client
        .query_one(
            "SELECT soniq.register_worker($1, $2, $3, $4, $5, task_names => $6)",
            &[
                &worker.host,
                &worker.pid,
                &worker.queues,
                &worker.concurrency,
                &worker.version,
                &worker.task_names,
            ],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn heartbeat<C, S>(
    client: &C,
    statement: &S,
    worker_id: Uuid,
    held: &[Uuid],
) -> Result<Vec<Uuid>>
where
    C: GenericClient + Sync,
    S: ?Sized + ToStatement + Sync + Send,
{
    let rows = client.query(statement, &[&worker_id, &held]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

pub async fn deregister(client: &impl GenericClient, worker_id: Uuid) -> Result<()> {
    client
        .execute("SELECT soniq.deregister_worker($1)", &[&worker_id])
        .await?;
    Ok(())
}

pub async fn register_task(
    client: &impl GenericClient,
    name: &str,
    defaults: &Value,
) -> Result<()> {
    client
        .execute("SELECT soniq.register_task($1, $2)", &[&name, defaults])
        .await?;
    Ok(())
}

pub async fn rescue(client: &impl GenericClient, heartbeat_timeout: Duration) -> Result<()> {
    client
        .execute(
            "SELECT soniq.rescue_jobs(make_interval(secs => $1))",
            &[&heartbeat_timeout.as_secs_f64()],
        )
        .await?;
    Ok(())
}

/// One batch, one transaction: a backlog of finished jobs never becomes one long transaction.
pub async fn prune(client: &impl GenericClient, batch_size: i32) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT soniq.prune_jobs(batch_size => $1, max_batches => 1)",
            &[&batch_size],
        )
        .await?
        .get(0))
}
