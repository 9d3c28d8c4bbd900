//! The dead letter: list, get, tag, replay, delete, purge, stats.

use crate::dead_letter::{DeadJob, DeadLetterFilter, DeadLetterStats, ReplayOptions};
use crate::error::{Error, Result};
use crate::store::DeadLetterReason;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

const DEAD_COLUMNS: &str = "id, task_name, args, queue, priority, attempts, max_attempts, last_error, \
     dead_letter_reason, original_created_at, moved_to_dead_letter_at, resurrection_count, last_resurrection_at, tags";

fn dead_job_from_row(row: &Row) -> Result<DeadJob> {
    Ok(DeadJob {
        id: row.get(0),
        task_name: row.get(1),
        args: row.get(2),
        queue: row.get(3),
        priority: row.get(4),
        attempts: row.get(5),
        max_attempts: row.get(6),
        last_error: row.get(7),
        reason: DeadLetterReason::parse(row.get(8))?,
        original_created_at: row.get(9),
        moved_at: row.get(10),
        resurrection_count: row.get(11),
        last_resurrection_at: row.get(12),
        tags: row.get(13),
    })
}

pub async fn list(client: &impl GenericClient, filter: &DeadLetterFilter) -> Result<Vec<DeadJob>> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT {DEAD_COLUMNS} FROM soniq.dead_letter_list($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                (&filter.task_name, Type::TEXT),
                (&filter.queue, Type::TEXT),
                (&filter.reason.map(DeadLetterReason::as_str), Type::TEXT),
                (&filter.moved_after, Type::TIMESTAMPTZ),
                (&filter.moved_before, Type::TIMESTAMPTZ),
                (&filter.tags, Type::TEXT_ARRAY),
                (&filter.replayed, Type::BOOL),
                (&filter.limit, Type::INT4),
                (&filter.offset, Type::INT4),
            ],
        )
        .await?;
    rows.iter().map(dead_job_from_row).collect()
}

pub async fn get(client: &impl GenericClient, id: Uuid) -> Result<Option<DeadJob>> {
    let row = client
        .query_typed_opt(
            &format!("SELECT {DEAD_COLUMNS} FROM soniq.dead_letter_get($1)"),
            &[(&id, Type::UUID)],
        )
        .await?;
    row.as_ref().map(dead_job_from_row).transpose()
}

/// Mint a fresh job from a dead one; `None` when `unless_replayed` and it was replayed before.
pub async fn replay(
    client: &impl GenericClient,
    id: Uuid,
    options: &ReplayOptions,
    unless_replayed: bool,
) -> Result<Option<Uuid>> {
    let row = client
        .query_typed_one(
            "SELECT soniq.replay($1, $2, $3, $4, $5, $6)",
            &[
                (&id, Type::UUID),
                (&options.queue, Type::TEXT),
                (&options.priority, Type::INT4),
                (&options.max_attempts, Type::INT4),
                (&options.reset_attempts, Type::BOOL),
                (&unless_replayed, Type::BOOL),
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// All or nothing; (dead id, new job id) pairs.
pub async fn replay_many(
    client: &impl GenericClient,
    ids: &[Uuid],
    options: &ReplayOptions,
) -> Result<Vec<(Uuid, Uuid)>> {
    let rows = client
        .query_typed(
            "SELECT dead_job_id, job_id FROM soniq.replay_many($1, $2, $3, $4, $5)",
            &[
                (&ids, Type::UUID_ARRAY),
                (&options.queue, Type::TEXT),
                (&options.priority, Type::INT4),
                (&options.max_attempts, Type::INT4),
                (&options.reset_attempts, Type::BOOL),
            ],
        )
        .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub async fn delete(client: &impl GenericClient, id: Uuid) -> Result<()> {
    client
        .query_typed("SELECT soniq.dead_letter_delete($1)", &[(&id, Type::UUID)])
        .await?;
    Ok(())
}

/// Delete the dead jobs that died more than `older_than` ago; returns how many.
pub async fn purge(client: &impl GenericClient, older_than: Duration) -> Result<i64> {
    Ok(client
        .query_typed_one(
            "SELECT soniq.dead_letter_purge(make_interval(secs => $1))",
            &[(&older_than.as_secs_f64(), Type::FLOAT8)],
        )
        .await?
        .get(0))
}

/// Add tags; returns all the job's tags.
pub async fn tag(client: &impl GenericClient, id: Uuid, tags: &[&str]) -> Result<Vec<String>> {
    Ok(client
        .query_typed_one(
            "SELECT soniq.dead_letter_tag($1, $2)",
            &[(&id, Type::UUID), (&tags, Type::TEXT_ARRAY)],
        )
        .await?
        .get(0))
}

pub async fn stats(
    client: &impl GenericClient,
    since: Option<Duration>,
) -> Result<DeadLetterStats> {
    let since = since.map(|d| d.as_secs_f64());
    let value: Value = client
        .query_typed_one(
            "SELECT soniq.dead_letter_stats(make_interval(secs => $1))",
            &[(&since, Type::FLOAT8)],
        )
        .await?
        .get(0);
    serde_json::from_value(value)
        .map_err(|e| Error::Invalid(format!("unexpected dead-letter stats: {e}")))
}
