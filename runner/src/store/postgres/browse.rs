//! The dashboard's reads: pages of jobs and dead jobs in keyset order (never OFFSET: a page
//! deep into a million rows costs what the first one does), one job with everything known of
//! it, and the workers. Plain SELECTs on the tables and views a `soniq_viewer` may read.

use crate::error::Result;
use serde_json::Value;
use std::fmt::Write;
use std::time::SystemTime;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

/// Where a page starts: the first page, the rows after (older than) a row, or the rows before
/// (newer than) one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Page<K> {
    First,
    Older(K),
    Newer(K),
}

/// One page of rows, newest first, and whether there are more on either side.
pub struct Paged<T> {
    pub rows: Vec<T>,
    pub has_older: bool,
    pub has_newer: bool,
}

/// Which jobs of `soniq.jobs` a page shows; `None` is any.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub queue: Option<String>,
    pub status: Option<String>,
    pub task_name: Option<String>,
    /// Created at or after.
    pub created_from: Option<SystemTime>,
    /// Created before.
    pub created_to: Option<SystemTime>,
}

/// A job as the jobs page lists it (the job page shows the rest).
pub struct JobRow {
    pub id: Uuid,
    pub task_name: String,
    pub queue: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: SystemTime,
    pub scheduled_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Accumulates a WHERE clause and its parameters, numbered in order.
#[derive(Default)]
struct Conditions<'a> {
    sql: String,
    params: Vec<(&'a (dyn ToSql + Sync), Type)>,
}

impl<'a> Conditions<'a> {
    /// Adds `column op $n`, or nothing when `value` is `None`.
    fn add<T: ToSql + Sync>(&mut self, column: &str, op: &str, value: &'a Option<T>, ty: Type) {
        if let Some(value) = value {
            self.push(column, op, value, ty);
        }
    }

    fn push(&mut self, column: &str, op: &str, value: &'a (dyn ToSql + Sync), ty: Type) {
        self.params.push((value, ty));
        let joiner = if self.sql.is_empty() {
            " WHERE "
        } else {
            " AND "
        };
        write!(self.sql, "{joiner}{column} {op} ${}", self.params.len()).expect("a String");
    }
}

/// Rows one past a page tell whether there is more; a page of newer rows is read oldest first
/// and turned around.
fn paged<T>(mut rows: Vec<T>, page_size: usize, reversed: bool, from_cursor: bool) -> Paged<T> {
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    if reversed {
        rows.reverse();
    }
    Paged {
        rows,
        has_older: if reversed { from_cursor } else { more },
        has_newer: if reversed { more } else { from_cursor },
    }
}

pub async fn jobs(
    client: &impl GenericClient,
    query: &JobQuery,
    page: Page<Uuid>,
    page_size: usize,
) -> Result<Paged<JobRow>> {
    let mut conditions = Conditions::default();
    conditions.add("queue", "=", &query.queue, Type::TEXT);
    conditions.add("status", "=", &query.status, Type::TEXT);
    conditions.add("task_name", "=", &query.task_name, Type::TEXT);
    conditions.add("created_at", ">=", &query.created_from, Type::TIMESTAMPTZ);
    conditions.add("created_at", "<", &query.created_to, Type::TIMESTAMPTZ);
    // Ids are UUIDv7, so their order is the order jobs were made in, and the primary key
    // serves the keyset.
    let (order, cursor) = match &page {
        Page::First => ("DESC", None),
        Page::Older(id) => ("DESC", Some(("<", id))),
        Page::Newer(id) => ("ASC", Some((">", id))),
    };
    if let Some((op, id)) = cursor {
        conditions.push("id", op, id, Type::UUID);
    }
    let limit = page_size as i64 + 1;
    conditions.params.push((&limit, Type::INT8));
    let sql = format!(
        "SELECT id, task_name, queue, status, attempts, max_attempts, created_at, scheduled_at,
                finished_at, last_error
           FROM soniq.jobs{} ORDER BY id {order} LIMIT ${}",
        conditions.sql,
        conditions.params.len()
    );
    let rows = client.query_typed(&sql, &conditions.params).await?;
    let rows = rows
        .iter()
        .map(|row| JobRow {
            id: row.get(0),
            task_name: row.get(1),
            queue: row.get(2),
            status: row.get(3),
            attempts: row.get(4),
            max_attempts: row.get(5),
            created_at: row.get(6),
            scheduled_at: row.get(7),
            finished_at: row.get(8),
            last_error: row.get(9),
        })
        .collect();
    Ok(paged(
        rows,
        page_size,
        matches!(page, Page::Newer(_)),
        page != Page::First,
    ))
}

/// Which dead jobs a page shows; `None` is any.
#[derive(Debug, Clone, Default)]
pub struct DeadQuery {
    pub queue: Option<String>,
    pub task_name: Option<String>,
    pub reason: Option<String>,
    /// Carrying this tag.
    pub tag: Option<String>,
    /// Died at or after.
    pub moved_from: Option<SystemTime>,
    /// Died before.
    pub moved_to: Option<SystemTime>,
}

/// A dead job's place in the dead letter's order: when it died, then its id.
pub type DeadKey = (SystemTime, Uuid);

pub struct DeadRow {
    pub id: Uuid,
    pub task_name: String,
    pub queue: String,
    pub reason: String,
    pub attempts: i32,
    pub moved_at: SystemTime,
    pub resurrection_count: i32,
    pub tags: Vec<String>,
    pub last_error: Option<String>,
}

impl DeadRow {
    pub fn key(&self) -> DeadKey {
        (self.moved_at, self.id)
    }
}

pub async fn dead_jobs(
    client: &impl GenericClient,
    query: &DeadQuery,
    page: Page<DeadKey>,
    page_size: usize,
) -> Result<Paged<DeadRow>> {
    let tags = query.tag.as_ref().map(|tag| vec![tag.clone()]);
    let mut conditions = Conditions::default();
    conditions.add("queue", "=", &query.queue, Type::TEXT);
    conditions.add("task_name", "=", &query.task_name, Type::TEXT);
    conditions.add("dead_letter_reason::text", "=", &query.reason, Type::TEXT);
    conditions.add("tags", "@>", &tags, Type::TEXT_ARRAY);
    conditions.add(
        "moved_to_dead_letter_at",
        ">=",
        &query.moved_from,
        Type::TIMESTAMPTZ,
    );
    conditions.add(
        "moved_to_dead_letter_at",
        "<",
        &query.moved_to,
        Type::TIMESTAMPTZ,
    );
    let (order, cursor) = match &page {
        Page::First => ("DESC", None),
        Page::Older(key) => ("DESC", Some(("<", key))),
        Page::Newer(key) => ("ASC", Some((">", key))),
    };
    if let Some((op, (moved_at, id))) = cursor {
        conditions.params.push((moved_at, Type::TIMESTAMPTZ));
        conditions.params.push((id, Type::UUID));
        let joiner = if conditions.sql.is_empty() {
            " WHERE "
        } else {
            " AND "
        };
        let n = conditions.params.len();
        write!(
            conditions.sql,
            "{joiner}(moved_to_dead_letter_at, id) {op} (${}, ${n})",
            n - 1
        )
        .expect("a String");
    }
    let limit = page_size as i64 + 1;
    conditions.params.push((&limit, Type::INT8));
    let sql = format!(
        "SELECT id, task_name, queue, dead_letter_reason::text, attempts, moved_to_dead_letter_at,
                resurrection_count, tags, last_error
           FROM soniq.dead_letter_jobs{}
          ORDER BY moved_to_dead_letter_at {order}, id {order} LIMIT ${}",
        conditions.sql,
        conditions.params.len()
    );
    let rows = client.query_typed(&sql, &conditions.params).await?;
    let rows = rows
        .iter()
        .map(|row| DeadRow {
            id: row.get(0),
            task_name: row.get(1),
            queue: row.get(2),
            reason: row.get(3),
            attempts: row.get(4),
            moved_at: row.get(5),
            resurrection_count: row.get(6),
            tags: row.get(7),
            last_error: row.get(8),
        })
        .collect();
    Ok(paged(
        rows,
        page_size,
        matches!(page, Page::Newer(_)),
        page != Page::First,
    ))
}

/// Everything the job page shows of one job, live or dead.
pub struct JobDetail {
    pub id: Uuid,
    pub task_name: String,
    pub queue: String,
    pub status: String,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub args: Value,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub progress: Option<Value>,
    pub created_at: SystemTime,
    pub scheduled_at: Option<SystemTime>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub updated_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    pub enqueued_by: Option<String>,
    pub producer_id: Option<String>,
    pub depends_on: Vec<Uuid>,
    pub worker: Option<WorkerRef>,
    pub dead: Option<DeadDetail>,
}

/// The worker that holds (or last held) a job.
pub struct WorkerRef {
    pub id: Uuid,
    /// `None` once the worker is gone from `soniq.workers`.
    pub hostname: Option<String>,
    pub pid: Option<i32>,
}

/// A dead job's dead-letter row beyond what `job_info` shows.
pub struct DeadDetail {
    pub reason: String,
    pub moved_at: SystemTime,
    pub resurrection_count: i32,
    pub last_resurrection_at: Option<SystemTime>,
    pub tags: Vec<String>,
}

pub async fn job(client: &impl GenericClient, id: Uuid) -> Result<Option<JobDetail>> {
    let row = client
        .query_typed_opt(
            "SELECT i.id, i.task_name, i.queue, i.status, i.priority, i.attempts, i.max_attempts,
                    i.args, i.result, i.last_error, i.progress, i.created_at, i.scheduled_at,
                    i.started_at, i.finished_at, i.updated_at, i.expires_at, i.enqueued_by,
                    i.producer_id, i.depends_on, i.worker_id, w.hostname, w.pid,
                    d.dead_letter_reason::text, d.moved_to_dead_letter_at, d.resurrection_count,
                    d.last_resurrection_at, d.tags
               FROM soniq.job_info i
               LEFT JOIN soniq.workers w ON w.id = i.worker_id
               LEFT JOIN soniq.dead_letter_jobs d ON d.id = i.id AND i.status = 'dead'
              WHERE i.id = $1",
            &[(&id, Type::UUID)],
        )
        .await?;
    Ok(row.as_ref().map(job_detail_from_row))
}

fn job_detail_from_row(row: &Row) -> JobDetail {
    let dead = row.get::<_, Option<String>>(23).map(|reason| DeadDetail {
        reason,
        moved_at: row.get(24),
        resurrection_count: row.get(25),
        last_resurrection_at: row.get(26),
        tags: row.get(27),
    });
    JobDetail {
        id: row.get(0),
        task_name: row.get(1),
        queue: row.get(2),
        status: row.get(3),
        priority: row.get(4),
        attempts: row.get(5),
        max_attempts: row.get(6),
        args: row.get(7),
        result: row.get(8),
        last_error: row.get(9),
        progress: row.get(10),
        created_at: row.get(11),
        scheduled_at: row.get(12),
        started_at: row.get(13),
        finished_at: row.get(14),
        updated_at: row.get(15),
        expires_at: row.get(16),
        enqueued_by: row.get(17),
        producer_id: row.get(18),
        depends_on: row.get::<_, Option<Vec<Uuid>>>(19).unwrap_or_default(),
        worker: row.get::<_, Option<Uuid>>(20).map(|id| WorkerRef {
            id,
            hostname: row.get(21),
            pid: row.get(22),
        }),
        dead,
    }
}

/// A registered worker, as `soniq.worker_overview` shows it.
pub struct WorkerRow {
    pub id: Uuid,
    pub hostname: Option<String>,
    pub pid: Option<i32>,
    /// `None`: every queue.
    pub queues: Option<Vec<String>>,
    pub concurrency: i32,
    pub version: Option<String>,
    pub started_at: SystemTime,
    pub last_heartbeat: SystemTime,
    pub silent_seconds: f64,
    pub jobs_held: i64,
}

pub async fn workers(client: &impl GenericClient) -> Result<Vec<WorkerRow>> {
    let rows = client
        .query_typed(
            "SELECT id, hostname, pid, queues, concurrency, version, started_at, last_heartbeat,
                    extract(epoch FROM silent_for)::float8, jobs_held
               FROM soniq.worker_overview ORDER BY started_at, id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| WorkerRow {
            id: row.get(0),
            hostname: row.get(1),
            pid: row.get(2),
            queues: row.get(3),
            concurrency: row.get(4),
            version: row.get(5),
            started_at: row.get(6),
            last_heartbeat: row.get(7),
            silent_seconds: row.get(8),
            jobs_held: row.get(9),
        })
        .collect())
}
