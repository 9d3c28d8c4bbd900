//! The operator's reads and the database set-up: the extension's versions, installing or
//! updating it, whether the control plane serves this database, its health, workers alive
//! and stale, and queued jobs no live worker serves.

use crate::error::Result;
use std::time::Duration;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

/// The extension's version on the server (`default`) and in this database (`installed`);
/// `None` when the server does not have it.
pub struct ExtensionVersions {
    pub default: String,
    pub installed: Option<String>,
}

pub async fn extension_versions(client: &impl GenericClient) -> Result<Option<ExtensionVersions>> {
    let row = client
        .query_typed_opt(
            "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'soniq'",
            &[],
        )
        .await?;
    Ok(row.map(|row| ExtensionVersions {
        default: row.get(0),
        installed: row.get(1),
    }))
}

pub async fn create_extension(client: &impl GenericClient) -> Result<()> {
    client.batch_execute("CREATE EXTENSION soniq").await?;
    Ok(())
}

pub async fn update_extension(client: &impl GenericClient) -> Result<()> {
    client.batch_execute("ALTER EXTENSION soniq UPDATE").await?;
    Ok(())
}

pub async fn create_database(client: &impl GenericClient, name: &str) -> Result<()> {
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await?;
    Ok(())
}

/// Whether this server preloads soniq, which database its control plane serves, and whether
/// it is alive.
pub struct ControlPlane {
    pub preloaded: bool,
    pub serves: Option<String>,
    pub alive: bool,
}

pub async fn control_plane(client: &impl GenericClient) -> Result<ControlPlane> {
    let row = client
        .query_typed_one(
            "SELECT current_setting('shared_preload_libraries') ~ '(^|[ ,])soniq($|[ ,])',
                    current_setting('soniq.database_name', true),
                    (SELECT alive FROM soniq.health WHERE subsystem = 'control_plane')",
            &[],
        )
        .await?;
    Ok(ControlPlane {
        preloaded: row.get(0),
        serves: row.get(1),
        alive: row.get(2),
    })
}

/// Workers heard from within `heartbeat_timeout`, and the others.
pub async fn worker_counts(
    client: &impl GenericClient,
    heartbeat_timeout: Duration,
) -> Result<(i64, i64)> {
    let row = client
        .query_typed_one(
            "SELECT count(*) FILTER (WHERE extract(epoch FROM silent_for)::float8 <= $1),
                    count(*) FILTER (WHERE extract(epoch FROM silent_for)::float8 > $1)
               FROM soniq.worker_overview",
            &[(&heartbeat_timeout.as_secs_f64(), Type::FLOAT8)],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// One round of the control plane, as `soniq.health` shows it.
pub struct RoundHealth {
    pub subsystem: String,
    pub alive: bool,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
}

pub async fn health(client: &impl GenericClient) -> Result<Vec<RoundHealth>> {
    let rows = client
        .query_typed(
            "SELECT subsystem, alive, coalesce(extract(epoch FROM lag)::float8, 0), last_error FROM soniq.health
              ORDER BY array_position(ARRAY['control_plane', 'scheduler', 'rescue', 'prune', 'unserved'], subsystem)",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row: &Row| RoundHealth {
            subsystem: row.get(0),
            alive: row.get(1),
            lag_seconds: row.get(2),
            last_error: row.get(3),
        })
        .collect())
}

/// Queued jobs of a task in a queue that no live worker has served for a while.
pub struct Unserved {
    pub task_name: String,
    pub queue: String,
    pub unserved_seconds: f64,
    pub jobs: i64,
}

pub async fn unserved(client: &impl GenericClient) -> Result<Vec<Unserved>> {
    let rows = client
        .query_typed(
            "SELECT task_name, queue, extract(epoch FROM unserved_for)::float8, jobs FROM soniq.unserved_jobs",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Unserved {
            task_name: row.get(0),
            queue: row.get(1),
            unserved_seconds: row.get(2),
            jobs: row.get(3),
        })
        .collect())
}

/// One queue as `soniq.queue_overview` counts it.
pub struct QueueCounts {
    pub queue: String,
    pub paused: bool,
    pub runnable: i64,
    pub scheduled: i64,
    pub waiting: i64,
    pub processing: i64,
    pub done: i64,
    pub cancelled: i64,
    pub dead: i64,
    /// How long the longest-waiting runnable job has waited since it was enqueued.
    pub oldest_runnable_seconds: Option<f64>,
    pub unserved: i64,
    pub waiting_for_limit: i64,
}

/// Every queue's jobs by state: one read of `soniq.jobs` and `soniq.dead_letter_jobs`, for a
/// caller that keeps the counts for a while (`crate::dashboard`).
pub async fn queue_counts(client: &impl GenericClient) -> Result<Vec<QueueCounts>> {
    let rows = client
        .query_typed(
            "SELECT queue, paused, runnable, scheduled, waiting, processing, done, cancelled, dead,
                    extract(epoch FROM now() - oldest_runnable_since)::float8, unserved, waiting_for_limit
               FROM soniq.queue_overview ORDER BY queue",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| QueueCounts {
            queue: row.get(0),
            paused: row.get(1),
            runnable: row.get(2),
            scheduled: row.get(3),
            waiting: row.get(4),
            processing: row.get(5),
            done: row.get(6),
            cancelled: row.get(7),
            dead: row.get(8),
            oldest_runnable_seconds: row.get(9),
            unserved: row.get(10),
            waiting_for_limit: row.get(11),
        })
        .collect())
}

/// The queues paused now (a small table: read per page, unlike the counts).
pub async fn paused_queues(
    client: &impl GenericClient,
) -> Result<std::collections::HashSet<String>> {
    let rows = client
        .query_typed("SELECT name FROM soniq.queues WHERE paused", &[])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The attempts completed and failed in one minute, every queue and worker summed.
pub struct MinuteOutcomes {
    /// How many minutes before the current one (0: the current minute).
    pub minutes_ago: i32,
    pub completed: i64,
    pub failed: i64,
}

/// The last hour of `soniq.outcome_minutes`, minute by minute (minutes with nothing left out).
pub async fn outcome_minutes(client: &impl GenericClient) -> Result<Vec<MinuteOutcomes>> {
    let rows = client
        .query_typed(
            "SELECT (extract(epoch FROM date_trunc('minute', now()) - minute) / 60)::int,
                    sum(completed)::bigint, sum(failed)::bigint
               FROM soniq.outcome_minutes
              WHERE minute > date_trunc('minute', now()) - interval '60 minutes'
              GROUP BY minute ORDER BY minute",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| MinuteOutcomes {
            minutes_ago: row.get(0),
            completed: row.get(1),
            failed: row.get(2),
        })
        .collect())
}
