//! The dashboard's reads: pages of jobs and dead jobs in keyset order (never OFFSET: a page
//! deep into a million rows costs what the first one does), one job with everything known of
//! it, and the workers. Plain SELECTs on the tables and views a `soniq_viewer` may read.

use crate::dead_letter::DeadJob;
use crate::error::Result;
use crate::store::postgres::dead_letter;
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

/// How many rows one page looks through for its matches, at most. A filter no index serves
/// (a rare task among millions of jobs) would otherwise read the whole table for one page;
/// within this bound a page costs some tens of milliseconds whatever its filters (about
/// 100 ns a row), and a page whose matches are further away says so and links on.
pub const SCAN_BUDGET: i64 = 100_000;

/// One page of rows, newest first, and the cursors of the pages on either side (`None`: there
/// is nothing more that way).
pub struct Paged<T: Keyed> {
    pub rows: Vec<T>,
    pub older: Option<T::Key>,
    pub newer: Option<T::Key>,
    /// The page looked through [`SCAN_BUDGET`] rows without filling up: more matches may lie
    /// beyond, where its cursor leads.
    pub scan_stopped: bool,
}

/// A row's place in its table's keyset order.
pub trait Keyed {
    type Key: Clone + Sync + Send;
    fn key(&self) -> Self::Key;
}

/// A table read in keyset pages: its key columns, newest last, and what a page selects.
struct Keyset {
    table: &'static str,
    key: &'static [&'static str],
    columns: &'static str,
}

impl Keyset {
    fn order(&self, direction: &str) -> String {
        self.key
            .iter()
            .map(|column| format!("{column} {direction}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Binds a cursor's key columns.
pub trait CursorKey: Sync {
    fn binds(&self) -> Vec<(&(dyn ToSql + Sync), Type)>;
    fn from_row(row: &Row) -> Self;
}

impl CursorKey for Uuid {
    fn binds(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![(self, Type::UUID)]
    }
    fn from_row(row: &Row) -> Self {
        row.get(0)
    }
}

impl CursorKey for (SystemTime, Uuid) {
    fn binds(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        vec![(&self.0, Type::TIMESTAMPTZ), (&self.1, Type::UUID)]
    }
    fn from_row(row: &Row) -> Self {
        (row.get(0), row.get(1))
    }
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
            self.params.push((value, ty));
            let joiner = if self.sql.is_empty() {
                " WHERE "
            } else {
                " AND "
            };
            write!(self.sql, "{joiner}{column} {op} ${}", self.params.len()).expect("a String");
        }
    }
}

/// One page of `keyset`'s table: its rows matching `filters`, within the [`SCAN_BUDGET`] rows
/// that follow the page's cursor. A newer page is read oldest first and turned around. Its two
/// statements (the page, then where its window ended) must see the same rows: `client` is a
/// REPEATABLE READ transaction ([`crate::dashboard`] opens one), or rows deleted in between
/// would move the window's end past rows no page showed.
async fn page_of<'a, T: Keyed>(
    client: &impl GenericClient,
    keyset: &Keyset,
    filters: Conditions<'a>,
    page: &'a Page<T::Key>,
    page_size: usize,
    from_row: impl Fn(&Row) -> T,
) -> Result<Paged<T>>
where
    T::Key: CursorKey,
{
    let (direction, cursor) = match page {
        Page::First => ("DESC", None),
        Page::Older(key) => ("DESC", Some(("<", key))),
        Page::Newer(key) => ("ASC", Some((">", key))),
    };
    let order = keyset.order(direction);
    let cursor_binds = cursor.map(|(_, key)| key.binds()).unwrap_or_default();
    // The rows past the cursor, with the cursor's parameters numbered from `first + 1`.
    let window = |first: usize| match cursor {
        None => format!("{} ORDER BY {order}", keyset.table),
        Some((op, _)) => {
            let placeholders: Vec<String> = (1..=cursor_binds.len())
                .map(|n| format!("${}", first + n))
                .collect();
            format!(
                "{} WHERE ({}) {op} ({}) ORDER BY {order}",
                keyset.table,
                keyset.key.join(", "),
                placeholders.join(", ")
            )
        }
    };
    let Conditions {
        sql: filter_sql,
        mut params,
    } = filters;
    let window_sql = window(params.len());
    params.extend(cursor_binds.iter().cloned());
    let limit = page_size as i64 + 1;
    params.push((&limit, Type::INT8));
    let sql = format!(
        "SELECT {columns} FROM (SELECT * FROM {window_sql} LIMIT {SCAN_BUDGET}) w{filter_sql}
          ORDER BY {order} LIMIT ${limit}",
        columns = keyset.columns,
        limit = params.len(),
    );
    let mut rows: Vec<T> = client
        .query_typed(&sql, &params)
        .await?
        .iter()
        .map(from_row)
        .collect();
    let full = rows.len() > page_size;
    rows.truncate(page_size);
    // Short of a full page: did the window end the scan, or the table?
    let mut scan_stopped = false;
    let onward = if full {
        rows.last().map(Keyed::key)
    } else {
        // The window's last row, and one past it: only then is there more to look at.
        let window_end = format!(
            "SELECT {key} FROM {window} OFFSET {} LIMIT 2",
            SCAN_BUDGET - 1,
            key = keyset.key.join(", "),
            window = window(0),
        );
        let end = client.query_typed(&window_end, &cursor_binds).await?;
        scan_stopped = end.len() == 2;
        end.first().filter(|_| scan_stopped).map(T::Key::from_row)
    };
    // Back the way the page came: from its first row, or from its cursor when it is empty.
    let back = match page {
        Page::First => None,
        Page::Older(key) | Page::Newer(key) => {
            Some(rows.first().map_or_else(|| key.clone(), Keyed::key))
        }
    };
    Ok(match page {
        Page::Newer(_) => {
            rows.reverse();
            Paged {
                rows,
                older: back,
                newer: onward,
                scan_stopped,
            }
        }
        _ => Paged {
            rows,
            older: onward,
            newer: back,
            scan_stopped,
        },
    })
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

impl Keyed for JobRow {
    type Key = Uuid;
    fn key(&self) -> Uuid {
        self.id
    }
}

/// Ids are UUIDv7, so their order is the order jobs were made in, and the primary key serves
/// the keyset.
const JOBS: Keyset = Keyset {
    table: "soniq.jobs",
    key: &["id"],
    columns: "id, task_name, queue, status, attempts, max_attempts, created_at, scheduled_at, finished_at, last_error",
};

pub async fn jobs(
    client: &impl GenericClient,
    query: &JobQuery,
    page: &Page<Uuid>,
    page_size: usize,
) -> Result<Paged<JobRow>> {
    let mut filters = Conditions::default();
    filters.add("queue", "=", &query.queue, Type::TEXT);
    filters.add("status", "=", &query.status, Type::TEXT);
    filters.add("task_name", "=", &query.task_name, Type::TEXT);
    filters.add("created_at", ">=", &query.created_from, Type::TIMESTAMPTZ);
    filters.add("created_at", "<", &query.created_to, Type::TIMESTAMPTZ);
    page_of(client, &JOBS, filters, page, page_size, |row| JobRow {
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
    .await
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
    /// Not replayed since (never, or before this time).
    pub not_replayed_since: Option<SystemTime>,
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

impl Keyed for DeadRow {
    type Key = DeadKey;
    fn key(&self) -> DeadKey {
        (self.moved_at, self.id)
    }
}

const DEAD_JOBS: Keyset = Keyset {
    table: "soniq.dead_letter_jobs",
    key: &["moved_to_dead_letter_at", "id"],
    columns: "id, task_name, queue, dead_letter_reason::text, attempts, moved_to_dead_letter_at, \
              resurrection_count, tags, last_error",
};

/// `query` as conditions; `tags` is its tag as an array.
fn dead_filters<'a>(query: &'a DeadQuery, tags: &'a Option<Vec<String>>) -> Conditions<'a> {
    let mut filters = Conditions::default();
    filters.add("queue", "=", &query.queue, Type::TEXT);
    filters.add("task_name", "=", &query.task_name, Type::TEXT);
    filters.add("dead_letter_reason::text", "=", &query.reason, Type::TEXT);
    filters.add("tags", "@>", tags, Type::TEXT_ARRAY);
    filters.add(
        "moved_to_dead_letter_at",
        ">=",
        &query.moved_from,
        Type::TIMESTAMPTZ,
    );
    filters.add(
        "moved_to_dead_letter_at",
        "<",
        &query.moved_to,
        Type::TIMESTAMPTZ,
    );
    filters.add(
        "coalesce(last_resurrection_at, '-infinity')",
        "<",
        &query.not_replayed_since,
        Type::TIMESTAMPTZ,
    );
    filters
}

pub async fn dead_jobs(
    client: &impl GenericClient,
    query: &DeadQuery,
    page: &Page<DeadKey>,
    page_size: usize,
) -> Result<Paged<DeadRow>> {
    let tags = query.tag.as_ref().map(|tag| vec![tag.clone()]);
    let filters = dead_filters(query, &tags);
    page_of(client, &DEAD_JOBS, filters, page, page_size, |row| {
        DeadRow {
            id: row.get(0),
            task_name: row.get(1),
            queue: row.get(2),
            reason: row.get(3),
            attempts: row.get(4),
            moved_at: row.get(5),
            resurrection_count: row.get(6),
            tags: row.get(7),
            last_error: row.get(8),
        }
    })
    .await
}

/// How many dead jobs match `query`, and the database's time of the count (the dead letter is
/// small beside the jobs table: a count that reads it is what a replay of all matches
/// confirms against).
pub async fn dead_count(
    client: &impl GenericClient,
    query: &DeadQuery,
) -> Result<(i64, SystemTime)> {
    let tags = query.tag.as_ref().map(|tag| vec![tag.clone()]);
    let filters = dead_filters(query, &tags);
    let sql = format!(
        "SELECT count(*), now() FROM soniq.dead_letter_jobs{}",
        filters.sql
    );
    let row = client.query_typed_one(&sql, &filters.params).await?;
    Ok((row.get(0), row.get(1)))
}

/// The ids of every dead job that matches `query`, in the dead letter's order: one statement,
/// so they are one snapshot's (what a replay of every match replays).
pub async fn dead_ids(client: &impl GenericClient, query: &DeadQuery) -> Result<Vec<Uuid>> {
    let tags = query.tag.as_ref().map(|tag| vec![tag.clone()]);
    let filters = dead_filters(query, &tags);
    let sql = format!(
        "SELECT id FROM soniq.dead_letter_jobs{} ORDER BY {}",
        filters.sql,
        DEAD_JOBS.order("DESC")
    );
    let rows = client.query_typed(&sql, &filters.params).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
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
    /// Its dead-letter row, when it is dead.
    pub dead: Option<DeadJob>,
}

/// The worker that holds (or last held) a job.
pub struct WorkerRef {
    pub id: Uuid,
    /// `None` once the worker is gone from `soniq.workers`.
    pub hostname: Option<String>,
    pub pid: Option<i32>,
}

pub async fn job(client: &impl GenericClient, id: Uuid) -> Result<Option<JobDetail>> {
    let row = client
        .query_typed_opt(
            "SELECT i.id, i.task_name, i.queue, i.status, i.priority, i.attempts, i.max_attempts,
                    i.args, i.result, i.last_error, i.progress, i.created_at, i.scheduled_at,
                    i.started_at, i.finished_at, i.updated_at, i.expires_at, i.enqueued_by,
                    i.producer_id, i.depends_on, i.worker_id, w.hostname, w.pid
               FROM soniq.job_info i
               LEFT JOIN soniq.workers w ON w.id = i.worker_id
              WHERE i.id = $1",
            &[(&id, Type::UUID)],
        )
        .await?;
    let Some(mut job) = row.as_ref().map(job_detail_from_row) else {
        return Ok(None);
    };
    if job.status == "dead" {
        job.dead = dead_letter::get(client, id).await?;
    }
    Ok(Some(job))
}

fn job_detail_from_row(row: &Row) -> JobDetail {
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
        dead: None,
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
