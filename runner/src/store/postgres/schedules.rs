//! Schedules: add (or update), pause, resume, remove, list, get.

use crate::error::{Error, Result};
use crate::scheduler::{ScheduleInfo, ScheduleSpec};
use crate::time::duration_from_db;
use soniq_cron::Schedule;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

const SCHEDULE_COLUMNS: &str =
    "name, task_name, args, cron, extract(epoch FROM every)::float8, time_zone, \
     enabled, next_fire_at, last_fire_at, fire_count, last_error, last_job_id";

fn schedule_from_row(row: &Row) -> Result<ScheduleInfo> {
    let name: String = row.get(0);
    let every = match row.get::<_, Option<f64>>(4) {
        None => None,
        Some(seconds) => Some(
            duration_from_db(seconds, &format!("schedule {name}: every"))
                .map_err(Error::Invalid)?,
        ),
    };
    Ok(ScheduleInfo {
        name,
        task_name: row.get(1),
        args: row.get(2),
        cron: row.get(3),
        every,
        time_zone: row.get(5),
        enabled: row.get(6),
        next_fire_at: row.get(7),
        last_fire_at: row.get(8),
        fire_count: row.get(9),
        last_error: row.get(10),
        last_job_id: row.get(11),
    })
}

pub async fn add(client: &impl GenericClient, spec: &ScheduleSpec) -> Result<ScheduleInfo> {
    let (cron, every) = match &spec.schedule {
        Schedule::Cron(expr) => (Some(expr.to_string()), None),
        Schedule::Every(period) => (None, Some(period.as_secs_f64())),
    };
    let timeout = spec.timeout.map(|t| t.as_secs_f64());
    let row = client
        .query_typed_one(
            &format!(
                "SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_add($1, $2, $3, make_interval(secs => $4), $5, $6, \
                 $7, $8, $9, make_interval(secs => $10))"
            ),
            &[
                (&spec.name, Type::TEXT),
                (&spec.task_name, Type::TEXT),
                (&cron, Type::TEXT),
                (&every, Type::FLOAT8),
                (&spec.args, Type::JSONB),
                (&spec.time_zone, Type::TEXT),
                (&spec.queue, Type::TEXT),
                (&spec.priority, Type::INT4),
                (&spec.retries, Type::INT4),
                (&timeout, Type::FLOAT8),
            ],
        )
        .await?;
    schedule_from_row(&row)
}

pub async fn pause(client: &impl GenericClient, name: &str) -> Result<bool> {
    Ok(client
        .query_typed_one("SELECT soniq.schedule_pause($1)", &[(&name, Type::TEXT)])
        .await?
        .get(0))
}

pub async fn resume(client: &impl GenericClient, name: &str) -> Result<bool> {
    Ok(client
        .query_typed_one("SELECT soniq.schedule_resume($1)", &[(&name, Type::TEXT)])
        .await?
        .get(0))
}

pub async fn fire(client: &impl GenericClient, name: &str) -> Result<uuid::Uuid> {
    Ok(client
        .query_typed_one("SELECT soniq.schedule_fire($1)", &[(&name, Type::TEXT)])
        .await?
        .get(0))
}

pub async fn remove(client: &impl GenericClient, name: &str) -> Result<()> {
    client
        .query_typed("SELECT soniq.schedule_remove($1)", &[(&name, Type::TEXT)])
        .await?;
    Ok(())
}

pub async fn list(client: &impl GenericClient, enabled: Option<bool>) -> Result<Vec<ScheduleInfo>> {
    let rows = client
        .query_typed(
            &format!("SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_list($1)"),
            &[(&enabled, Type::BOOL)],
        )
        .await?;
    rows.iter().map(schedule_from_row).collect()
}

pub async fn get(client: &impl GenericClient, name: &str) -> Result<Option<ScheduleInfo>> {
    let row = client
        .query_typed_opt(
            &format!("SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_get($1)"),
            &[(&name, Type::TEXT)],
        )
        .await?;
    row.as_ref().map(schedule_from_row).transpose()
}
