//! Jobs: enqueue, claim, outcomes, lookups and management, and their row decoding.

use super::binds::{Bind, PgBinds};
use super::{one, run, Sql};
use crate::error::Result;
use crate::job::JobContext;
use crate::jobs::{DependencyResult, JobFilter, JobInfo, JobOutcome, JobStatus, QueueStats};
use crate::store::{
    ClaimRequest, ClaimedJob, Completion, DeadLetterReason, FailedAttempt, Lease, NewJob, NewJobs,
};
use crate::time::duration_from_db;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row, Statement};
use uuid::Uuid;

// scheduled_at travels as Unix seconds and timeout as seconds: both drivers bind an f64,
// neither needs a date or interval type.
pub const ENQUEUE: Sql = Sql {
    text: "SELECT soniq.enqueue($1, $2, queue => $3, priority => $4, \
           scheduled_at => to_timestamp($5::float8), retries => $6, unique_job => $7, \
           dedup_key => $8, timeout => make_interval(secs => $9::float8), producer_id => $10, \
           depends_on => $11, on_dependency_failure => $12, awaitable => $13, batch_id => $14, \
           traceparent => $15)",
    types: &[
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::INT4,
        Type::FLOAT8,
        Type::INT4,
        Type::BOOL,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::UUID_ARRAY,
        Type::TEXT,
        Type::BOOL,
        Type::UUID,
        Type::TEXT,
    ],
};

pub const ENQUEUE_MANY: Sql = Sql {
    text: "SELECT soniq.enqueue_many($1, $2::jsonb[], queue => $3, priority => $4, \
           retries => $5, unique_job => $6, timeout => make_interval(secs => $7::float8), \
           producer_id => $8, traceparent => $9)",
    types: &[
        Type::TEXT,
        Type::JSONB_ARRAY,
        Type::TEXT,
        Type::INT4,
        Type::INT4,
        Type::BOOL,
        Type::FLOAT8,
        Type::TEXT,
        Type::TEXT,
    ],
};

pub const ENQUEUE_BATCH: Sql = Sql {
    text: "SELECT soniq.enqueue_many($1::jsonb)",
    types: &[Type::JSONB],
};

pub const CLAIM: Sql = Sql {
    text: "SELECT id, task_name, args, attempt, max_attempts, queue, \
           extract(epoch FROM timeout)::float8, scheduled_at, created_at, traceparent \
           FROM soniq.claim($1, $2, $3, $4)",
    types: &[Type::UUID, Type::TEXT_ARRAY, Type::INT4, Type::TEXT_ARRAY],
};

pub const COMPLETE_MANY: Sql = Sql {
    text: "SELECT soniq.complete_many($1, $2, $3, $4)",
    types: &[
        Type::UUID_ARRAY,
        Type::UUID,
        Type::INT4_ARRAY,
        Type::JSONB_ARRAY,
    ],
};

pub const FAIL_MANY: Sql = Sql {
    text: "SELECT job_id FROM soniq.fail_many($1, $2, $3, $4, \
           (SELECT array_agg(make_interval(secs => d.s) ORDER BY d.n) \
              FROM unnest($5::float8[]) WITH ORDINALITY AS d(s, n)), $6)",
    types: &[
        Type::UUID_ARRAY,
        Type::UUID,
        Type::INT4_ARRAY,
        Type::TEXT_ARRAY,
        Type::FLOAT8_ARRAY,
        Type::TEXT_ARRAY,
    ],
};

pub const SNOOZE: Sql = Sql {
    text: "SELECT soniq.snooze($1, $2, $3, make_interval(secs => $4), reason => $5)",
    types: &[Type::UUID, Type::UUID, Type::INT4, Type::FLOAT8, Type::TEXT],
};

pub const ABORT: Sql = Sql {
    text: "SELECT soniq.abort($1, $2, $3, $4)",
    types: &[Type::UUID, Type::UUID, Type::INT4, Type::TEXT],
};

const JOB_COLUMNS: &str = "id, task_name, args, status, queue, priority, attempts, max_attempts, \
     scheduled_at, last_error, result, dead_letter_reason, producer_id, created_at, updated_at, \
     depends_on, progress";

/// `NULL` for a job that depends on none (an empty array would be refused).
fn depends_on(job: &NewJob) -> Option<&[Uuid]> {
    (!job.depends_on.is_empty()).then_some(job.depends_on.as_slice())
}

fn unix_seconds(at: Option<SystemTime>) -> Option<f64> {
    at.map(|at| match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    })
}

fn seconds(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| d.as_secs_f64())
}

/// The enqueue statement's parameters, in bind order: the one list both drivers bind
/// (tokio-postgres and sqlx, `super::binds`).
pub fn enqueue_binds<'a>(job: &'a NewJob, binds: &mut impl Bind<'a>) {
    binds.bind(&job.task_name);
    binds.bind(&job.args);
    binds.bind(&job.options.queue);
    binds.bind(job.options.priority);
    binds.bind(unix_seconds(job.scheduled_at));
    binds.bind(job.options.retries);
    binds.bind(job.options.unique);
    binds.bind(&job.dedup_key);
    binds.bind(seconds(job.options.timeout));
    binds.bind(&job.producer_id);
    binds.bind(depends_on(job));
    binds.bind(job.on_dependency_failure.map(|f| f.as_str()));
    binds.bind(job.awaitable);
    binds.bind(job.batch_id);
    binds.bind(&job.traceparent);
}

/// One job; `prepared`: ENQUEUE prepared on this connection (none: sent unnamed).
pub async fn enqueue(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    job: &NewJob,
) -> Result<Uuid> {
    let mut binds = PgBinds::default();
    enqueue_binds(job, &mut binds);
    let rows = run(client, &ENQUEUE, prepared, &binds.params()).await?;
    Ok(one(rows)?.get(0))
}

pub async fn enqueue_many(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    jobs: &NewJobs,
) -> Result<Vec<Uuid>> {
    let options = &jobs.options;
    let rows = run(
        client,
        &ENQUEUE_MANY,
        prepared,
        &[
            &jobs.task_name,
            &jobs.args,
            &options.queue,
            &options.priority,
            &options.retries,
            &options.unique,
            &seconds(options.timeout),
            &jobs.producer_id,
            &jobs.traceparent,
        ],
    )
    .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// A job as a spec of `soniq.enqueue_many(jsonb)`, borrowing its args (serialized straight
/// into the statement's parameter); what it leaves out, the SQL resolves.
#[derive(Debug, serde::Serialize)]
struct JobSpec<'a> {
    task_name: &'a str,
    args: &'a Value,
    producer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unique: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on: Option<&'a [Uuid]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_dependency_failure: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    awaitable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

impl<'a> JobSpec<'a> {
    fn of(job: &'a NewJob) -> Self {
        let options = &job.options;
        JobSpec {
            task_name: &job.task_name,
            args: &job.args,
            producer_id: &job.producer_id,
            queue: options.queue.as_deref(),
            priority: options.priority,
            retries: options.retries,
            unique: options.unique,
            timeout: seconds(options.timeout),
            dedup_key: job.dedup_key.as_deref(),
            scheduled_at: job.scheduled_at.and_then(crate::time::rfc3339),
            depends_on: depends_on(job),
            on_dependency_failure: job.on_dependency_failure.map(|f| f.as_str()),
            awaitable: job.awaitable,
            batch_id: job.batch_id,
            traceparent: job.traceparent.as_deref(),
        }
    }
}

pub async fn enqueue_batch(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    jobs: &[NewJob],
) -> Result<Vec<Uuid>> {
    let specs: Vec<JobSpec> = jobs.iter().map(JobSpec::of).collect();
    let rows = run(
        client,
        &ENQUEUE_BATCH,
        prepared,
        &[&tokio_postgres::types::Json(&specs)],
    )
    .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// A claimed job's time limit, from the seconds its row holds. Zero is no limit (as
/// `soniq.enqueue` stores it). A value no `Duration` holds — negative, NaN, too large: a row
/// written by an older version — is an error, and the attempt fails with it.
pub(crate) fn job_timeout(seconds: Option<f64>) -> Result<Option<Duration>, String> {
    match seconds {
        None | Some(0.0) => Ok(None),
        Some(s) => duration_from_db(s, "the job's timeout").map(Some),
    }
}

fn claimed_from_row(row: &Row, worker_id: Uuid) -> ClaimedJob {
    let (timeout, unrunnable) = match job_timeout(row.get(6)) {
        Ok(timeout) => (timeout, None),
        Err(error) => (None, Some(error)),
    };
    ClaimedJob {
        context: JobContext {
            job_id: row.get(0),
            task_name: row.get(1),
            attempt: row.get(3),
            max_attempts: row.get(4),
            queue: row.get(5),
            worker_id,
            timeout,
            scheduled_at: row.get(7),
            created_at: row.get(8),
            store: Default::default(),
        },
        args: row.get(2),
        unrunnable,
        traceparent: row.get(9),
    }
}

pub async fn claim(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedJob>> {
    let count = i32::try_from(request.count).unwrap_or(i32::MAX);
    let rows = run(
        client,
        &CLAIM,
        prepared,
        &[
            &request.worker_id,
            &request.queues,
            &count,
            &request.task_names,
        ],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| claimed_from_row(row, request.worker_id))
        .collect())
}

fn lease_columns(leases: impl Iterator<Item = Lease>) -> (Vec<Uuid>, Vec<i32>) {
    leases.map(|lease| (lease.job_id, lease.attempt)).unzip()
}

pub async fn complete_many(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    worker_id: Uuid,
    completions: &[Completion<'_>],
) -> Result<usize> {
    let (ids, attempts) = lease_columns(completions.iter().map(|c| c.lease));
    let results: Vec<Option<&serde_json::Value>> = completions.iter().map(|c| c.result).collect();
    let recorded = run(
        client,
        &COMPLETE_MANY,
        prepared,
        &[&ids, &worker_id, &attempts, &results],
    )
    .await?;
    Ok(recorded.len())
}

pub async fn fail_many(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    worker_id: Uuid,
    failures: &[FailedAttempt<'_>],
) -> Result<usize> {
    let (ids, attempts) = lease_columns(failures.iter().map(|f| f.lease));
    let errors: Vec<&str> = failures.iter().map(|f| f.error).collect();
    let retry_in: Vec<Option<f64>> = failures.iter().map(|f| seconds(f.retry_in)).collect();
    let reasons: Vec<Option<&str>> = failures
        .iter()
        .map(|f| f.reason.map(|r| r.as_str()))
        .collect();
    let recorded = run(
        client,
        &FAIL_MANY,
        prepared,
        &[&ids, &worker_id, &attempts, &errors, &retry_in, &reasons],
    )
    .await?;
    Ok(recorded.len())
}

pub async fn snooze(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    worker_id: Uuid,
    lease: Lease,
    delay: Duration,
    reason: Option<&str>,
) -> Result<()> {
    run(
        client,
        &SNOOZE,
        prepared,
        &[
            &lease.job_id,
            &worker_id,
            &lease.attempt,
            &delay.as_secs_f64(),
            &reason,
        ],
    )
    .await?;
    Ok(())
}

pub async fn abort(
    client: &(impl GenericClient + Sync),
    prepared: Option<&Statement>,
    worker_id: Uuid,
    lease: Lease,
    reason: &str,
) -> Result<()> {
    run(
        client,
        &ABORT,
        prepared,
        &[&lease.job_id, &worker_id, &lease.attempt, &reason],
    )
    .await?;
    Ok(())
}

fn job_from_row(row: &Row) -> Result<JobInfo> {
    Ok(JobInfo {
        id: row.get(0),
        task_name: row.get(1),
        args: row.get(2),
        status: JobStatus::parse(row.get(3))?,
        queue: row.get(4),
        priority: row.get(5),
        attempts: row.get(6),
        max_attempts: row.get(7),
        scheduled_at: row.get(8),
        last_error: row.get(9),
        result: row.get(10),
        dead_letter_reason: row
            .get::<_, Option<&str>>(11)
            .map(DeadLetterReason::parse)
            .transpose()?,
        producer_id: row.get(12),
        created_at: row.get(13),
        updated_at: row.get(14),
        depends_on: row.get::<_, Option<Vec<Uuid>>>(15).unwrap_or_default(),
        progress: row.get(16),
    })
}

pub async fn get(client: &impl GenericClient, job_id: Uuid) -> Result<Option<JobInfo>> {
    let row = client
        .query_typed_opt(
            &format!("SELECT {JOB_COLUMNS} FROM soniq.get_job($1)"),
            &[(&job_id, Type::UUID)],
        )
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

pub async fn list(client: &impl GenericClient, filter: &JobFilter) -> Result<Vec<JobInfo>> {
    let status = filter.status.map(JobStatus::as_str);
    let rows = client
        .query_typed(
            &format!("SELECT {JOB_COLUMNS} FROM soniq.list_jobs($1, $2, $3, $4)"),
            &[
                (&filter.queue, Type::TEXT),
                (&status, Type::TEXT),
                (&filter.limit, Type::INT4),
                (&filter.offset, Type::INT4),
            ],
        )
        .await?;
    rows.iter().map(job_from_row).collect()
}

pub async fn dependency_results(
    client: &impl GenericClient,
    worker_id: Uuid,
    lease: Lease,
) -> Result<Vec<DependencyResult>> {
    let rows = client
        .query_typed(
            "SELECT parent_id, status, task_name, result, last_error \
             FROM soniq.dependency_results($1, $2, $3)",
            &[
                (&lease.job_id, Type::UUID),
                (&worker_id, Type::UUID),
                (&lease.attempt, Type::INT4),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DependencyResult {
                job_id: row.get(0),
                status: match row.get::<_, &str>(1) {
                    "pruned" => None,
                    status => Some(JobStatus::parse(status)?),
                },
                task_name: row.get(2),
                result: row.get(3),
                last_error: row.get(4),
            })
        })
        .collect()
}

pub async fn progress(
    client: &impl GenericClient,
    worker_id: Uuid,
    lease: Lease,
    progress: &Value,
) -> Result<bool> {
    Ok(client
        .query_typed_one(
            "SELECT soniq.report_progress($1, $2, $3, $4)",
            &[
                (&lease.job_id, Type::UUID),
                (&worker_id, Type::UUID),
                (&lease.attempt, Type::INT4),
                (progress, Type::JSONB),
            ],
        )
        .await?
        .get(0))
}

pub async fn checkpoint_save(
    client: &impl GenericClient,
    worker_id: Uuid,
    lease: Lease,
    checkpoint: &Value,
) -> Result<()> {
    client
        .query_typed(
            "SELECT soniq.save_checkpoint($1, $2, $3, $4)",
            &[
                (&lease.job_id, Type::UUID),
                (&worker_id, Type::UUID),
                (&lease.attempt, Type::INT4),
                (checkpoint, Type::JSONB),
            ],
        )
        .await?;
    Ok(())
}

pub async fn checkpoint_read(
    client: &impl GenericClient,
    worker_id: Uuid,
    lease: Lease,
) -> Result<Option<Value>> {
    Ok(client
        .query_typed_one(
            "SELECT soniq.read_checkpoint($1, $2, $3)",
            &[
                (&lease.job_id, Type::UUID),
                (&worker_id, Type::UUID),
                (&lease.attempt, Type::INT4),
            ],
        )
        .await?
        .get(0))
}

pub async fn result(client: &impl GenericClient, job_id: Uuid) -> Result<Option<JobOutcome>> {
    let row = client
        .query_typed_opt(
            "SELECT status, result, last_error FROM soniq.job_result($1)",
            &[(&job_id, Type::UUID)],
        )
        .await?;
    row.map(|row| {
        Ok(JobOutcome {
            status: JobStatus::parse(row.get(0))?,
            result: row.get(1),
            last_error: row.get(2),
        })
    })
    .transpose()
}

pub async fn cancel(client: &impl GenericClient, job_id: Uuid) -> Result<bool> {
    Ok(client
        .query_typed_one("SELECT soniq.cancel_job($1)", &[(&job_id, Type::UUID)])
        .await?
        .get(0))
}

pub async fn delete(client: &impl GenericClient, job_id: Uuid) -> Result<()> {
    client
        .query_typed("SELECT soniq.delete_job($1)", &[(&job_id, Type::UUID)])
        .await?;
    Ok(())
}

pub async fn queue_stats(client: &impl GenericClient, queue: Option<&str>) -> Result<QueueStats> {
    let row = client
        .query_typed_one(
            "SELECT total, queued, processing, done, cancelled, dead_letter, waiting \
             FROM soniq.queue_stats($1)",
            &[(&queue, Type::TEXT)],
        )
        .await?;
    Ok(QueueStats {
        total: row.get(0),
        queued: row.get(1),
        processing: row.get(2),
        done: row.get(3),
        cancelled: row.get(4),
        dead_letter: row.get(5),
        waiting: row.get(6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_no_duration_holds_fails_the_attempt_instead_of_the_worker() {
        assert_eq!(job_timeout(None), Ok(None));
        assert_eq!(job_timeout(Some(0.0)), Ok(None), "zero is no limit");
        assert_eq!(
            job_timeout(Some(2.5)),
            Ok(Some(Duration::from_millis(2500)))
        );
        for bad in [-5.0, f64::NAN, 1e300] {
            assert_eq!(
                job_timeout(Some(bad)),
                Err(format!(
                    "the job's timeout of {bad} seconds is out of range"
                ))
            );
        }
    }
}
