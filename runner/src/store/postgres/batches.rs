//! Batches: open, close, status.

use crate::batches::BatchStatus;
use crate::error::Result;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

pub async fn open(
    client: &impl GenericClient,
    callback_task: &str,
    callback_args: &Value,
    queue: Option<&str>,
) -> Result<Uuid> {
    Ok(client
        .query_typed_one(
            "SELECT soniq.batch_open($1, $2, $3)",
            &[
                (&callback_task, Type::TEXT),
                (callback_args, Type::JSONB),
                (&queue, Type::TEXT),
            ],
        )
        .await?
        .get(0))
}

pub async fn close(client: &impl GenericClient, batch_id: Uuid) -> Result<bool> {
    Ok(client
        .query_typed_one("SELECT soniq.batch_close($1)", &[(&batch_id, Type::UUID)])
        .await?
        .get(0))
}

pub async fn status(client: &impl GenericClient, batch_id: Uuid) -> Result<Option<BatchStatus>> {
    let row = client
        .query_typed_opt(
            "SELECT id, callback_task, jobs, pending, done, dead, cancelled, failed_ids, created_at, \
             closed_at, finished_at, callback_job_id FROM soniq.batch_status($1)",
            &[(&batch_id, Type::UUID)],
        )
        .await?;
    Ok(row.map(|row| BatchStatus {
        id: row.get(0),
        callback_task: row.get(1),
        jobs: row.get(2),
        pending: row.get(3),
        done: row.get(4),
        dead: row.get(5),
        cancelled: row.get(6),
        failed_ids: row.get(7),
        created_at: row.get(8),
        closed_at: row.get(9),
        finished_at: row.get(10),
        callback_job_id: row.get(11),
    }))
}
