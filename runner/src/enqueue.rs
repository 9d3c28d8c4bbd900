//! Enqueueing: a builder for the per-call options, sent on the runner's pool or on the
//! caller's own connection or transaction (transactional enqueue).

use crate::error::{Error, Result};
use crate::Soniq;
use serde_json::Value;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::{GenericClient, ToStatement};
use uuid::Uuid;

// scheduled_at travels as Unix seconds: both clients bind an f64, neither needs a date type.
const ENQUEUE_SQL: &str = "SELECT soniq.enqueue($1, $2, queue => $3, priority => $4, \
     scheduled_at => to_timestamp($5::float8), unique_job => $6, dedup_key => $7, producer_id => $8)";

/// One job about to be enqueued. `.await` it to enqueue on the runner's pool, or call
/// [`Enqueue::send_on`] with your own client or transaction.
#[must_use = "an enqueue does nothing until it is awaited or sent"]
pub struct Enqueue<'a> {
    pub(crate) soniq: &'a Soniq,
    pub(crate) task_name: String,
    pub(crate) args: Result<Value>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) scheduled_at: Option<SystemTime>,
    pub(crate) unique: Option<bool>,
    pub(crate) dedup_key: Option<String>,
}

impl<'a> Enqueue<'a> {
    pub(crate) fn new(soniq: &'a Soniq, task_name: String, args: Result<Value>) -> Self {
        Enqueue {
            soniq,
            task_name,
            args,
            queue: None,
            priority: None,
            scheduled_at: None,
            unique: None,
            dedup_key: None,
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Run at (or after) a point in time.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.scheduled_at = Some(at);
        self
    }

    /// Run after a delay from now.
    pub fn run_in(self, delay: Duration) -> Self {
        self.run_at(SystemTime::now() + delay)
    }

    /// Deduplicate by the arguments while a matching job is queued (overrides the task's setting).
    pub fn unique(mut self, unique: bool) -> Self {
        self.unique = Some(unique);
        self
    }

    /// At most one queued job per key; a duplicate returns the queued job's id.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Enqueue on the runner's own pool (or into the in-memory queue).
    pub async fn send(mut self) -> Result<Uuid> {
        let args = self.take_args()?;
        if let crate::Backend::Memory(store) = &self.soniq.backend {
            return Ok(store.enqueue(&self.soniq.handlers.registry, &self, args));
        }
        let client = self.soniq.connection().await?;
        // Prepared once per pooled connection: an ad-hoc statement costs a round trip more.
        let statement = client.prepare_cached(ENQUEUE_SQL).await?;
        let client: &tokio_postgres::Client = &client;
        self.send_with(client, &statement, args).await
    }

    /// The args, or the error the builder kept for the send.
    fn take_args(&mut self) -> Result<Value> {
        std::mem::replace(&mut self.args, Ok(Value::Null))
    }

    fn unix_seconds(&self) -> Option<f64> {
        self.scheduled_at
            .map(|at| match at.duration_since(UNIX_EPOCH) {
                Ok(after) => after.as_secs_f64(),
                Err(before) => -before.duration().as_secs_f64(),
            })
    }

    /// Enqueue on the caller's tokio-postgres connection or transaction: the job exists if
    /// and only if that transaction commits.
    pub async fn send_on<C: GenericClient + Sync>(mut self, client: &C) -> Result<Uuid> {
        let args = self.take_args()?;
        self.send_with(client, ENQUEUE_SQL, args).await
    }

    async fn send_with<C, S>(self, client: &C, statement: &S, args: Value) -> Result<Uuid>
    where
        C: GenericClient + Sync,
        S: ?Sized + ToStatement + Sync + Send,
    {
        self.soniq.publish_tasks().await?;
        let row = client
            .query_one(
                statement,
                &[
                    &self.task_name,
                    &args,
                    &self.queue,
                    &self.priority,
                    &self.unix_seconds(),
                    &self.unique,
                    &self.dedup_key,
                    &self.soniq.settings.producer_id,
                ],
            )
            .await
            .map_err(Error::from)?;
        Ok(row.get(0))
    }

    /// Enqueue on the caller's sqlx connection or transaction (`&mut *tx`): the job exists
    /// if and only if that transaction commits.
    #[cfg(feature = "sqlx")]
    pub async fn send_on_sqlx(mut self, connection: &mut sqlx::PgConnection) -> Result<Uuid> {
        let args = self.take_args()?;
        self.soniq.publish_tasks().await?;
        let id: Uuid = sqlx::query_scalar(ENQUEUE_SQL)
            .bind(&self.task_name)
            .bind(&args)
            .bind(&self.queue)
            .bind(self.priority)
            .bind(self.unix_seconds())
            .bind(self.unique)
            .bind(&self.dedup_key)
            .bind(&self.soniq.settings.producer_id)
            .fetch_one(connection)
            .await?;
        Ok(id)
    }
}

impl<'a> IntoFuture for Enqueue<'a> {
    type Output = Result<Uuid>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Uuid>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
