//! The store in PostgreSQL: every statement the runner and the CLI send, calling only the
//! extension's `soniq.*` functions (and its views). Each area's statements and row decoding
//! are written once, over `tokio_postgres::GenericClient`, so a pooled connection and a
//! caller's own transaction (`Enqueue::send_on`) share them.
//!
//! Every statement declares its parameters' types and goes out unnamed (parse, bind and
//! execute in one round trip), so nothing it leaves on a server connection can be missing
//! from the next: PgBouncer in transaction mode hands each transaction to any of them. The
//! hot statements ([`Sql`]) are prepared once per pooled connection instead, with the same
//! types, unless the statement cache is off (`SONIQ_STATEMENT_CACHE=off`, for PgBouncer).

pub mod admin;
pub mod batches;
pub mod binds;
pub mod browse;
pub mod dead_letter;
pub mod jobs;
pub mod schedules;
pub mod workers;

use super::{
    BoxFuture, ClaimRequest, ClaimedJob, Completion, FailedAttempt, Lease, NewJob, NewJobs, Store,
    WorkerRegistration,
};
use crate::error::{Error, Result};
use crate::jobs::{DependencyResult, JobFilter, JobInfo, JobOutcome, QueueStats};
use deadpool_postgres::{Object, Pool};
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row, Statement};
use uuid::Uuid;

/// A hot statement and its parameters' types.
pub struct Sql {
    pub text: &'static str,
    pub types: &'static [Type],
}

/// Run `sql`: as `prepared` on this connection, or unnamed with its declared types.
pub(crate) async fn run(
    client: &(impl GenericClient + Sync),
    sql: &Sql,
    prepared: Option<&Statement>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    debug_assert_eq!(params.len(), sql.types.len(), "{}", sql.text);
    Ok(match prepared {
        Some(statement) => client.query(statement, params).await?,
        None => {
            let typed: Vec<_> = params
                .iter()
                .copied()
                .zip(sql.types.iter().cloned())
                .collect();
            client.query_typed(sql.text, &typed).await?
        }
    })
}

/// The one row a statement returns.
pub(crate) fn one(rows: Vec<Row>) -> Result<Row> {
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("the statement returned no row".into()))
}

/// The store on a pool of connections to a database with the extension.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    statement_cache: bool,
}

impl PgStore {
    /// `statement_cache`: prepare the hot statements once per connection (off behind
    /// PgBouncer in transaction mode).
    pub fn new(pool: Pool, statement_cache: bool) -> Self {
        PgStore {
            pool,
            statement_cache,
        }
    }

    /// A pooled connection, for the operations of one area (`schedules::add(&**client, ..)`).
    pub async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    /// `sql` prepared on `client`, when the statement cache is on.
    async fn prepared(&self, client: &Object, sql: &Sql) -> Result<Option<Statement>> {
        if !self.statement_cache {
            return Ok(None);
        }
        Ok(Some(
            client.prepare_typed_cached(sql.text, sql.types).await?,
        ))
    }
}

pub async fn queue_pause(client: &impl GenericClient, queue: &str) -> Result<bool> {
    Ok(client
        .query_typed_one("SELECT soniq.pause_queue($1)", &[(&queue, Type::TEXT)])
        .await?
        .get(0))
}

pub async fn queue_resume(client: &impl GenericClient, queue: &str) -> Result<bool> {
    Ok(client
        .query_typed_one("SELECT soniq.resume_queue($1)", &[(&queue, Type::TEXT)])
        .await?
        .get(0))
}

impl Store for PgStore {
    fn task_register<'a>(
        &'a self,
        name: &'a str,
        defaults: &'a Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(
            async move { workers::register_task(&**self.client().await?, name, defaults).await },
        )
    }

    fn job_enqueue<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, Result<Uuid>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::ENQUEUE).await?;
            jobs::enqueue(&**client, prepared.as_ref(), job).await
        })
    }

    fn job_enqueue_many<'a>(&'a self, new: &'a NewJobs) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::ENQUEUE_MANY).await?;
            jobs::enqueue_many(&**client, prepared.as_ref(), new).await
        })
    }

    fn job_enqueue_batch<'a>(&'a self, new: &'a [NewJob]) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::ENQUEUE_BATCH).await?;
            jobs::enqueue_batch(&**client, prepared.as_ref(), new).await
        })
    }

    fn job_claim<'a>(
        &'a self,
        request: &'a ClaimRequest,
    ) -> BoxFuture<'a, Result<Vec<ClaimedJob>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::CLAIM).await?;
            jobs::claim(&**client, prepared.as_ref(), request).await
        })
    }

    fn job_complete_many<'a>(
        &'a self,
        worker_id: Uuid,
        completions: &'a [Completion<'a>],
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::COMPLETE_MANY).await?;
            jobs::complete_many(&**client, prepared.as_ref(), worker_id, completions).await
        })
    }

    fn job_fail_many<'a>(
        &'a self,
        worker_id: Uuid,
        failures: &'a [FailedAttempt<'a>],
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::FAIL_MANY).await?;
            jobs::fail_many(&**client, prepared.as_ref(), worker_id, failures).await
        })
    }

    fn job_snooze<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        delay: Duration,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::SNOOZE).await?;
            jobs::snooze(
                &**client,
                prepared.as_ref(),
                worker_id,
                lease,
                delay,
                reason,
            )
            .await
        })
    }

    fn job_abort<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &jobs::ABORT).await?;
            jobs::abort(&**client, prepared.as_ref(), worker_id, lease, reason).await
        })
    }

    fn job_dependency_results(
        &self,
        worker_id: Uuid,
        lease: Lease,
    ) -> BoxFuture<'_, Result<Vec<DependencyResult>>> {
        Box::pin(async move {
            jobs::dependency_results(&**self.client().await?, worker_id, lease).await
        })
    }

    fn job_progress<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        progress: &'a Value,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            jobs::progress(&**self.client().await?, worker_id, lease, progress).await
        })
    }

    fn job_checkpoint_save<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        checkpoint: &'a Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            jobs::checkpoint_save(&**self.client().await?, worker_id, lease, checkpoint).await
        })
    }

    fn job_checkpoint_read(
        &self,
        worker_id: Uuid,
        lease: Lease,
    ) -> BoxFuture<'_, Result<Option<Value>>> {
        Box::pin(
            async move { jobs::checkpoint_read(&**self.client().await?, worker_id, lease).await },
        )
    }

    fn job_get(&self, job_id: Uuid) -> BoxFuture<'_, Result<Option<JobInfo>>> {
        Box::pin(async move { jobs::get(&**self.client().await?, job_id).await })
    }

    fn job_result(&self, job_id: Uuid) -> BoxFuture<'_, Result<Option<JobOutcome>>> {
        Box::pin(async move { jobs::result(&**self.client().await?, job_id).await })
    }

    fn job_list<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<Vec<JobInfo>>> {
        Box::pin(async move { jobs::list(&**self.client().await?, filter).await })
    }

    fn job_cancel(&self, job_id: Uuid) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move { jobs::cancel(&**self.client().await?, job_id).await })
    }

    fn job_delete(&self, job_id: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { jobs::delete(&**self.client().await?, job_id).await })
    }

    fn queue_stats<'a>(&'a self, queue: Option<&'a str>) -> BoxFuture<'a, Result<QueueStats>> {
        Box::pin(async move { jobs::queue_stats(&**self.client().await?, queue).await })
    }

    fn queue_pause<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { queue_pause(&**self.client().await?, queue).await })
    }

    fn queue_resume<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { queue_resume(&**self.client().await?, queue).await })
    }

    fn queue_held_back<'a>(
        &'a self,
        queues: Option<&'a [String]>,
        task_names: &'a [String],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .client()
                .await?
                .query_typed_one(
                    "SELECT soniq.held_back($1, $2)",
                    &[(&queues, Type::TEXT_ARRAY), (&task_names, Type::TEXT_ARRAY)],
                )
                .await?
                .get(0))
        })
    }

    fn worker_register<'a>(
        &'a self,
        worker: &'a WorkerRegistration,
    ) -> BoxFuture<'a, Result<Uuid>> {
        Box::pin(async move { workers::register(&**self.client().await?, worker).await })
    }

    fn worker_heartbeat<'a>(
        &'a self,
        worker_id: Uuid,
        held: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        Box::pin(async move {
            let client = self.client().await?;
            let prepared = self.prepared(&client, &workers::HEARTBEAT).await?;
            workers::heartbeat(&**client, prepared.as_ref(), worker_id, held).await
        })
    }

    fn worker_deregister(&self, worker_id: Uuid) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { workers::deregister(&**self.client().await?, worker_id).await })
    }

    fn maintenance_rescue(&self, heartbeat_timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { workers::rescue(&**self.client().await?, heartbeat_timeout).await })
    }

    fn maintenance_prune(&self, batch_size: i32) -> BoxFuture<'_, Result<i64>> {
        Box::pin(async move { workers::prune(&**self.client().await?, batch_size).await })
    }
}
