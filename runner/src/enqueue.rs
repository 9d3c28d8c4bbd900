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

// scheduled_at travels as Unix seconds and timeout as seconds: both clients bind an f64,
// neither needs a date or interval type.
const ENQUEUE_SQL: &str = "SELECT soniq.enqueue($1, $2, queue => $3, priority => $4, \
     scheduled_at => to_timestamp($5::float8), retries => $6, unique_job => $7, dedup_key => $8, \
     timeout => make_interval(secs => $9::float8), producer_id => $10)";

/// The options a producer may give a job. Unset ones come from the task's registered
/// options, then from the system defaults (in the database, or the in-memory queue).
#[derive(Debug, Clone, Default)]
pub(crate) struct JobOptions {
    pub queue: Option<String>,
    pub priority: Option<i32>,
    pub retries: Option<i32>,
    /// `Duration::ZERO`: no time limit.
    pub timeout: Option<Duration>,
    pub unique: Option<bool>,
}

/// The setters of the options a job carries, for a builder whose `options` has the fields
/// `queue`, `priority`, `retries`, `timeout` and `unique`: a task's builder (its published
/// options), a task handle (every enqueue through it) and one enqueue call (overriding both).
macro_rules! job_option_setters {
    () => {
        /// The queue its jobs go to; default `default`.
        pub fn queue(mut self, queue: impl Into<String>) -> Self {
            self.options.queue = Some(queue.into());
            self
        }

        /// 1..=1000, lower runs sooner; default 100.
        pub fn priority(mut self, priority: i32) -> Self {
            self.options.priority = Some(priority);
            self
        }

        /// Retries after the first attempt (max attempts = retries + 1), 0..=1000; default 3.
        pub fn retries(mut self, retries: i32) -> Self {
            self.options.retries = Some(retries);
            self
        }

        /// Time limit of each attempt, at most 30 days; `Duration::ZERO` for none; default 300 s.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.timeout = Some(timeout);
            self
        }

        /// Skip an enqueue while a job with the same arguments (and login) is queued.
        pub fn unique(mut self, unique: bool) -> Self {
            self.options.unique = Some(unique);
            self
        }
    };
}
pub(crate) use job_option_setters;

impl JobOptions {
    pub fn timeout_seconds(&self) -> Option<f64> {
        self.timeout.map(|t| t.as_secs_f64())
    }
}

/// One job about to be enqueued. `.await` it to enqueue on the runner's pool, or call
/// [`Enqueue::send_on`] with your own client or transaction.
#[must_use = "an enqueue does nothing until it is awaited or sent"]
pub struct Enqueue<'a> {
    pub(crate) soniq: &'a Soniq,
    pub(crate) task_name: String,
    pub(crate) args: Result<Value>,
    /// The task handle's options, overridden by this call's.
    pub(crate) options: JobOptions,
    pub(crate) scheduled_at: Option<SystemTime>,
    pub(crate) dedup_key: Option<String>,
}

impl<'a> Enqueue<'a> {
    pub(crate) fn new(
        soniq: &'a Soniq,
        task_name: String,
        args: Result<Value>,
        options: JobOptions,
    ) -> Self {
        Enqueue {
            soniq,
            task_name,
            args,
            options,
            scheduled_at: None,
            dedup_key: None,
        }
    }

    job_option_setters!();

    /// Run at (or after) a point in time.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.scheduled_at = Some(at);
        self
    }

    /// Run after a delay from now.
    pub fn run_in(self, delay: Duration) -> Self {
        self.run_at(SystemTime::now() + delay)
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
    /// and only if that transaction commits. Refused for `Soniq::in_memory()`, whose queue
    /// would never see the job.
    pub async fn send_on<C: GenericClient + Sync>(mut self, client: &C) -> Result<Uuid> {
        self.check_database_backed()?;
        let args = self.take_args()?;
        self.send_with(client, ENQUEUE_SQL, args).await
    }

    /// A transactional enqueue writes a row through the caller's connection: the in-memory
    /// queue would never see it, so a test would pass with the job in no queue it looks at.
    fn check_database_backed(&self) -> Result<()> {
        match self.soniq.backend {
            crate::Backend::Postgres(_) => Ok(()),
            crate::Backend::Memory(_) => Err(Error::Invalid(format!(
                "cannot enqueue {} on the caller's connection: this Soniq is in memory \
                 (Soniq::in_memory()), and its queue would never see the job; \
                 enqueue with .await instead",
                self.task_name
            ))),
        }
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
                    &self.options.queue,
                    &self.options.priority,
                    &self.unix_seconds(),
                    &self.options.retries,
                    &self.options.unique,
                    &self.dedup_key,
                    &self.options.timeout_seconds(),
                    &self.soniq.settings.producer_id,
                ],
            )
            .await
            .map_err(Error::from)?;
        Ok(row.get(0))
    }

    /// Enqueue on the caller's sqlx connection or transaction (`&mut *tx`): the job exists
    /// if and only if that transaction commits. Refused for `Soniq::in_memory()`.
    #[cfg(feature = "sqlx")]
    pub async fn send_on_sqlx(mut self, connection: &mut sqlx::PgConnection) -> Result<Uuid> {
        self.check_database_backed()?;
        let args = self.take_args()?;
        self.soniq.publish_tasks().await?;
        let id: Uuid = sqlx::query_scalar(ENQUEUE_SQL)
            .bind(&self.task_name)
            .bind(&args)
            .bind(&self.options.queue)
            .bind(self.options.priority)
            .bind(self.unix_seconds())
            .bind(self.options.retries)
            .bind(self.options.unique)
            .bind(&self.dedup_key)
            .bind(self.options.timeout_seconds())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_memory_soniq_refuses_to_enqueue_on_a_callers_connection() {
        let soniq = Soniq::in_memory();
        let err = soniq
            .enqueue_by_name("users.send", serde_json::json!({}))
            .check_database_backed()
            .unwrap_err()
            .to_string();
        assert!(err.contains("this Soniq is in memory"), "{err}");
        let soniq = Soniq::new("postgres://nobody@localhost/none").unwrap();
        let enqueue = soniq.enqueue_by_name("users.send", serde_json::json!({}));
        assert!(enqueue.check_database_backed().is_ok());
    }
}
