//! Enqueueing: a builder for the per-call options, sent on the runner's pool or on the
//! caller's own connection or transaction (transactional enqueue).

use crate::error::{Error, Result};
use crate::jobs::JobOutcome;
use crate::store::postgres::jobs;
use crate::store::{JobOptions, NewJob, OnDependencyFailure};
use crate::telemetry;
use crate::Soniq;
use serde_json::Value;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use tokio_postgres::GenericClient;
use tracing::Span;
use uuid::Uuid;

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
    pub(crate) depends_on: Vec<Uuid>,
    pub(crate) on_dependency_failure: Option<OnDependencyFailure>,
    pub(crate) awaitable: bool,
    pub(crate) batch_id: Option<Uuid>,
    pub(crate) traceparent: Option<String>,
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
            depends_on: Vec::new(),
            on_dependency_failure: None,
            awaitable: false,
            batch_id: None,
            traceparent: None,
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

    /// Wait for these jobs (at most 1,000, of the same database login): the job is
    /// `waiting` until they are all done, then queued. If one is cancelled or dies, this job
    /// is cancelled too, unless [`Enqueue::on_dependency_failure`] says to run it anyway.
    /// Not with `unique` or a dedup key; needs the database (not `Soniq::in_memory()`).
    pub fn depends_on(mut self, jobs: impl IntoIterator<Item = Uuid>) -> Self {
        self.depends_on.extend(jobs);
        self
    }

    /// Join an open batch ([`Soniq::open_batch`]) of the same login; not with `unique` or a
    /// dedup key.
    pub fn batch(mut self, batch_id: Uuid) -> Self {
        self.batch_id = Some(batch_id);
        self
    }

    /// The producer's trace context (a W3C `traceparent`: `00-<trace id>-<span id>-<flags>`),
    /// which each attempt's span links to. With the feature `otel` it defaults to the context
    /// of this enqueue's span (`crate::telemetry`).
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// What a failed job it depends on does to this one; default cancel.
    pub fn on_dependency_failure(mut self, on_failure: OnDependencyFailure) -> Self {
        self.on_dependency_failure = Some(on_failure);
        self
    }

    /// Enqueue on the runner's pool and return a handle to wait for the job's end with
    /// ([`JobHandle::wait`]): the job notifies its end, which the wait hears at once. A job
    /// enqueued otherwise is awaited too ([`Soniq::wait_for_job`]), found by polling.
    pub async fn send_awaitable(mut self) -> Result<JobHandle<'a>> {
        self.awaitable = true;
        let soniq = self.soniq;
        let id = self.send().await?;
        Ok(JobHandle { soniq, id })
    }

    /// Enqueue on the runner's own pool (or into the in-memory queue).
    pub async fn send(mut self) -> Result<Uuid> {
        let (span, job) = self.take_traced_job()?;
        let soniq = self.soniq;
        telemetry::traced(
            span,
            async {
                soniq.publish_tasks().await?;
                soniq.store().job_enqueue(&job).await
            },
            std::slice::from_ref,
        )
        .await
    }

    /// The job to enqueue, or the error the builder kept for the send.
    fn take_job(&mut self) -> Result<NewJob> {
        let args = std::mem::replace(&mut self.args, Ok(Value::Null))?;
        Ok(NewJob {
            task_name: self.task_name.clone(),
            args,
            options: self.options.clone(),
            scheduled_at: self.scheduled_at,
            dedup_key: self.dedup_key.clone(),
            producer_id: self.soniq.settings.producer_id().to_string(),
            depends_on: self.depends_on.clone(),
            on_dependency_failure: self.on_dependency_failure,
            awaitable: self.awaitable,
            batch_id: self.batch_id,
            traceparent: self.traceparent.clone(),
        })
    }

    /// The job to enqueue and the span of its enqueue, whose trace context the job carries
    /// unless it was given one.
    fn take_traced_job(&mut self) -> Result<(Span, NewJob)> {
        let mut job = self.take_job()?;
        let span = telemetry::enqueue_span(&job.task_name, job.options.queue.as_deref());
        if job.traceparent.is_none() {
            job.traceparent = telemetry::traceparent_of(&span);
        }
        Ok((span, job))
    }

    /// Enqueue on the caller's tokio-postgres connection or transaction: the job exists if
    /// and only if that transaction commits. Refused for `Soniq::in_memory()`, whose queue
    /// would never see the job.
    pub async fn send_on<C: GenericClient + Sync>(mut self, client: &C) -> Result<Uuid> {
        self.check_database_backed()?;
        let (span, job) = self.take_traced_job()?;
        let soniq = self.soniq;
        telemetry::traced(
            span,
            async {
                soniq.publish_tasks().await?;
                jobs::enqueue(client, None, &job).await
            },
            std::slice::from_ref,
        )
        .await
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

    /// Enqueue on the caller's sqlx connection or transaction (`&mut *tx`): the job exists
    /// if and only if that transaction commits. Refused for `Soniq::in_memory()`.
    #[cfg(feature = "sqlx")]
    pub async fn send_on_sqlx(mut self, connection: &mut sqlx::PgConnection) -> Result<Uuid> {
        use crate::store::postgres::binds::SqlxBinds;
        self.check_database_backed()?;
        let (span, job) = self.take_traced_job()?;
        let soniq = self.soniq;
        telemetry::traced(
            span,
            async {
                soniq.publish_tasks().await?;
                let mut binds = SqlxBinds {
                    query: Some(sqlx::query_scalar(jobs::ENQUEUE.text)),
                };
                jobs::enqueue_binds(&job, &mut binds);
                let query = binds.query.expect("binding keeps the query");
                Ok(query.fetch_one(connection).await?)
            },
            std::slice::from_ref,
        )
        .await
    }
}

/// A job enqueued with [`Enqueue::send_awaitable`].
#[derive(Clone, Copy)]
pub struct JobHandle<'a> {
    soniq: &'a Soniq,
    id: Uuid,
}

impl JobHandle<'_> {
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Wait up to `timeout` for the job to end (done, cancelled or dead): its outcome, with
    /// the result or the last error; `None` if it had not ended by then.
    pub async fn wait(&self, timeout: Duration) -> Result<Option<JobOutcome>> {
        self.soniq.wait_for_job(self.id, timeout).await
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
