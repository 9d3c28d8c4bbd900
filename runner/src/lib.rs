//! The Soniq runner: register handlers, enqueue jobs and run a worker against a database
//! with the `soniq` extension. Every state change goes through the extension's SQL
//! functions; the runner never writes a table directly.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use soniq_runner::{JobContext, JobResult, Outcome, Soniq, WorkerOptions};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Welcome { to: String }
//!
//! # async fn demo() -> soniq_runner::Result<()> {
//! let mut app = Soniq::from_env()?;
//! let send_welcome = app.job("users.send_welcome").retries(5).handler(
//!     |args: Welcome, ctx: JobContext| async move {
//!         println!("attempt {} of {}: welcome {}", ctx.attempt, ctx.max_attempts, args.to);
//!         JobResult::Ok(Outcome::done())
//!     },
//! )?;
//! app.enqueue(&send_welcome, Welcome { to: "dev@example.com".into() }).await?;
//! app.run_worker(WorkerOptions::default()).await?;
//! # Ok(()) }
//! ```

mod attempt_log;
mod awaiting;
mod batches;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod command_handlers;
pub mod connection;
#[cfg(feature = "cli")]
pub mod dashboard;
mod dead_letter;
#[cfg(feature = "http")]
pub mod endpoints;
mod enqueue;
mod error;
mod execute;
mod flow;
mod hooks;
mod job;
mod jobs;
mod metrics;
mod middleware;
mod registry;
mod scheduler;
mod settings;
#[doc(hidden)]
pub mod store;
pub mod telemetry;
mod testing;
mod time;
mod worker;

pub use batches::BatchStatus;
pub use connection::ConnectionConfig;
pub use dead_letter::{
    DeadJob, DeadLetter, DeadLetterFilter, DeadLetterStats, ExportFormat, ReplayOptions,
};
pub use enqueue::{Enqueue, JobHandle};
pub use error::{Error, Result};
pub use flow::{QueueLimitUse, QueueSettings};
pub use hooks::{AfterJob, BeforeJob, OnError};
pub use job::{
    JobContext, JobError, JobResult, Outcome, RetryDecision, RetryPolicy, MAX_ERROR_BYTES,
    MAX_RESULT_BYTES, MAX_SNOOZE,
};
pub use jobs::{DependencyResult, JobFilter, JobInfo, JobOutcome, JobStatus, QueueStats};
#[cfg(feature = "prometheus")]
pub use metrics::PrometheusMetrics;
pub use metrics::{AttemptEnd, MetricsSink};
pub use middleware::Next;
pub use registry::{derive_task_name, Task, TaskBuilder, TaskOptions};
pub use scheduler::{ScheduleInfo, ScheduleSpec, Scheduler};
pub use settings::{
    hostname, EnqueueValidation, Listen, Settings, SettingsBuilder, TaskNamePattern,
};
/// The schedule builder: `every(5).minutes()`, `daily().at("09:00")`, ...
pub use soniq_cron::{dsl, Schedule};
pub use store::{DeadLetterReason, OnDependencyFailure};
pub use testing::wait_until;
pub use worker::{WorkerMonitor, WorkerOptions, WorkerReport, WorkerSnapshot, WorkerState};

use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use store::{MemoryStore, NewJobs, PgStore, Store};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Whether this is the first enqueue, in this process, of `task_name` without a handler: the
/// `warn` validation says so once per name, not on every enqueue. It remembers up to 1024
/// names, then starts over (a producer of endless distinct names does not grow it forever).
fn first_unknown_enqueue(task_name: &str) -> bool {
    static WARNED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::LazyLock::new(Default::default);
    let mut names = WARNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if names.contains(task_name) {
        return false;
    }
    if names.len() >= 1024 {
        names.clear();
    }
    names.insert(task_name.to_string())
}

/// Where jobs live: the database, or (for unit tests of handlers) this process's memory.
enum Backend {
    Postgres(Arc<PgStore>),
    Memory(Arc<MemoryStore>),
}

/// A Soniq application: settings, where its jobs live and the handlers of this process.
pub struct Soniq {
    settings: Settings,
    backend: Backend,
    handlers: execute::Handlers,
    /// Where the worker's listener waits for new jobs (`LISTEN`); none: it polls.
    listen: Option<ConnectionConfig>,
    /// Whether the handlers' options are in `soniq.tasks` (published before the first
    /// enqueue and at worker start, so a job gets its task's options however it is enqueued).
    published: tokio::sync::OnceCell<()>,
}

impl Soniq {
    /// An application with default settings for the database at `database_url`.
    pub fn new(database_url: impl Into<String>) -> Result<Self> {
        Self::with_settings(Settings::new(database_url))
    }

    /// An application configured from the `SONIQ_*` environment variables.
    pub fn from_env() -> Result<Self> {
        Self::with_settings(Settings::from_env()?)
    }

    /// An application with these settings; refused (`Error::Config`) when they contradict
    /// each other ([`Settings::validate`]).
    pub fn with_settings(settings: Settings) -> Result<Self> {
        settings.validate()?;
        let database = ConnectionConfig::parse(settings.database_url())
            .map_err(|e| Error::Config(format!("SONIQ_DATABASE_URL: {e}")))?;
        // Room for every running handler to enqueue, and for the claim loop, the reporter,
        // heartbeats and maintenance rounds.
        let pool = database.pool(settings.concurrency() + 4)?;
        let listen = match settings.listen() {
            Listen::Database => Some(database),
            Listen::Url(url) => Some(
                ConnectionConfig::parse(url)
                    .map_err(|e| Error::Config(format!("SONIQ_LISTEN_URL: {e}")))?,
            ),
            Listen::Off => None,
        };
        let store = PgStore::new(pool, settings.statement_cache());
        Ok(Soniq {
            settings,
            backend: Backend::Postgres(Arc::new(store)),
            listen,
            handlers: execute::Handlers::default(),
            published: tokio::sync::OnceCell::new(),
        })
    }

    /// An application whose jobs live in this process's memory, to unit-test handlers
    /// without PostgreSQL: enqueue as usual, then `drain` runs the due jobs inline and
    /// `enqueued` / `assert_enqueued` show what was enqueued. Everything else needs a database
    /// (and `send_on` / `send_on_sqlx` are refused: the row would be in no queue it sees).
    pub fn in_memory() -> Self {
        Soniq {
            settings: Settings::new("memory:"),
            backend: Backend::Memory(Arc::new(MemoryStore::new())),
            listen: None,
            handlers: execute::Handlers::default(),
            published: tokio::sync::OnceCell::new(),
        }
    }

    /// Where this application's jobs live.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Postgres(store) => Arc::clone(store) as Arc<dyn Store>,
            Backend::Memory(store) => Arc::clone(store) as Arc<dyn Store>,
        }
    }

    /// The database, for what only it does (schedules, the dead letter, the operator's reads).
    pub(crate) fn postgres(&self) -> Result<&PgStore> {
        match &self.backend {
            Backend::Postgres(store) => Ok(store),
            Backend::Memory(_) => Err(Error::Invalid(
                "this needs a database: the in-memory queue has no schedules, dead-letter service or control plane".into(),
            )),
        }
    }

    /// A pooled connection to the database.
    pub(crate) async fn connection(&self) -> Result<deadpool_postgres::Object> {
        self.postgres()?.client().await
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Start registering a handler for `name` (`billing.send_invoice`).
    pub fn job(&mut self, name: impl Into<String>) -> TaskBuilder<'_> {
        self.published = tokio::sync::OnceCell::new();
        TaskBuilder {
            registry: &mut self.handlers.registry,
            settings: &self.settings,
            name: name.into(),
            options: TaskOptions::default(),
        }
    }

    /// A typed handle on a task another service runs: enqueue it by name with typed
    /// arguments, without a handler here (the name is checked against the pattern). Give it
    /// the options its consumers register, so a job enqueued before they have published them
    /// still lands where they look: `app.task_ref::<Charge>("billing.charge")?.queue("billing")`.
    pub fn task_ref<A: Serialize>(&self, name: impl Into<String>) -> Result<Task<A>> {
        let name = name.into();
        registry::check_task_name(&self.settings, &name)?;
        Ok(Task::named(name))
    }

    /// Wrap every handler call (inside the job's timeout); the first registered is the
    /// outermost. A middleware can look at the context, change the result or short-circuit.
    pub fn middleware<F, Fut>(&mut self, middleware: F)
    where
        F: Fn(JobContext, Next) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = JobResult> + Send + 'static,
    {
        self.handlers.middlewares.push(middleware::wrap(middleware));
    }

    /// Report every attempt to `sink` (e.g. `PrometheusMetrics` with the `prometheus` feature).
    pub fn metrics_sink(&mut self, sink: impl MetricsSink + 'static) {
        self.handlers.metrics = Some(std::sync::Arc::new(sink));
    }

    /// Enqueue a task with typed arguments.
    pub fn enqueue<A: Serialize>(&self, task: &Task<A>, args: A) -> Enqueue<'_> {
        let args = serde_json::to_value(args)
            .map_err(|e| Error::Invalid(format!("arguments of {} are not JSON: {e}", task.name())));
        Enqueue::new(self, task.name().to_string(), args, task.options.clone())
    }

    /// Enqueue a task to run at (or after) `run_at`: `enqueue(task, args).run_at(run_at)`.
    pub fn enqueue_at<A: Serialize>(
        &self,
        task: &Task<A>,
        args: A,
        run_at: std::time::SystemTime,
    ) -> Enqueue<'_> {
        self.enqueue(task, args).run_at(run_at)
    }

    /// The old name of [`Soniq::enqueue_at`]: it enqueues one job for later (periodic jobs are
    /// [`Soniq::scheduler`]'s).
    #[deprecated(note = "renamed to `enqueue_at`")]
    pub fn schedule<A: Serialize>(
        &self,
        task: &Task<A>,
        args: A,
        run_at: std::time::SystemTime,
    ) -> Enqueue<'_> {
        self.enqueue_at(task, args, run_at)
    }

    /// Enqueue many jobs of one task in one round trip; ids in input order.
    pub async fn enqueue_many<A: Serialize>(
        &self,
        task: &Task<A>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Uuid>> {
        let args = args
            .into_iter()
            .map(serde_json::to_value)
            .collect::<std::result::Result<Vec<Value>, _>>()
            .map_err(|e| {
                Error::Invalid(format!("arguments of {} are not JSON: {e}", task.name()))
            })?;
        let span = telemetry::enqueue_span(task.name(), task.options.queue.as_deref());
        let jobs = NewJobs {
            task_name: task.name().to_string(),
            args,
            options: task.options.clone(),
            producer_id: self.settings.producer_id().to_string(),
            traceparent: telemetry::traceparent_of(&span),
        };
        let enqueue = async {
            self.publish_tasks().await?;
            self.store().job_enqueue_many(&jobs).await
        };
        telemetry::traced(span, enqueue, Vec::as_slice).await
    }

    /// Enqueue jobs of any tasks, each with its own options, in one statement (`soniq enqueue
    /// --from FILE`): each checked as [`Soniq::enqueue_by_name`] checks one, ids in input
    /// order, all or nothing; a refusal names the job by its index (`jobs[3]: ...`).
    pub(crate) async fn enqueue_batch(&self, jobs: &[store::NewJob]) -> Result<Vec<Uuid>> {
        for (index, job) in jobs.iter().enumerate() {
            self.check_by_name(&job.task_name, &job.args)
                .map_err(|e| Error::Invalid(format!("jobs[{index}]: {e}")))?;
        }
        self.publish_tasks().await?;
        self.store().job_enqueue_batch(jobs).await
    }

    /// Enqueue by task name with JSON arguments. A name this process has a handler for has
    /// its arguments checked against the handler's type; an unknown name is refused, logged
    /// or let through according to `SONIQ_ENQUEUE_VALIDATION`.
    pub fn enqueue_by_name(&self, task_name: impl Into<String>, args: Value) -> Enqueue<'_> {
        let task_name = task_name.into();
        let checked = self.check_by_name(&task_name, &args).map(|()| args);
        Enqueue::new(self, task_name, checked, store::JobOptions::default())
    }

    fn check_by_name(&self, task_name: &str, args: &Value) -> Result<()> {
        registry::check_task_name(&self.settings, task_name)?;
        if !args.is_object() {
            return Err(Error::Invalid(format!(
                "arguments of {task_name} must be a JSON object"
            )));
        }
        match self.handlers.registry.tasks.get(task_name) {
            Some(registered) => (registered.check_args)(args)
                .map_err(|e| Error::Invalid(format!("invalid arguments for {task_name}: {e}"))),
            None => match self.settings.enqueue_validation() {
                EnqueueValidation::Strict => Err(Error::Invalid(format!(
                    "task {task_name:?} has no handler in this process and SONIQ_ENQUEUE_VALIDATION is strict"
                ))),
                EnqueueValidation::Warn => {
                    if first_unknown_enqueue(task_name) {
                        tracing::warn!(
                            task_name,
                            "enqueueing a task this process has no handler for (said once per name)"
                        );
                    }
                    Ok(())
                }
                EnqueueValidation::None => Ok(()),
            },
        }
    }

    /// Run `hook` before every job (several run in registration order).
    pub fn before_job(&mut self, hook: impl Fn(&BeforeJob) + Send + Sync + 'static) {
        self.handlers.hooks.before_job.add_sync(hook);
    }

    pub fn before_job_async<F, Fut>(&mut self, hook: F)
    where
        F: Fn(BeforeJob) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handlers.hooks.before_job.add_async(hook);
    }

    /// Run `hook` after every successful job.
    pub fn after_job(&mut self, hook: impl Fn(&AfterJob) + Send + Sync + 'static) {
        self.handlers.hooks.after_job.add_sync(hook);
    }

    pub fn after_job_async<F, Fut>(&mut self, hook: F)
    where
        F: Fn(AfterJob) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handlers.hooks.after_job.add_async(hook);
    }

    /// Run `hook` when a job fails (before the retry or dead-letter decision is recorded).
    pub fn on_error(&mut self, hook: impl Fn(&OnError) + Send + Sync + 'static) {
        self.handlers.hooks.on_error.add_sync(hook);
    }

    pub fn on_error_async<F, Fut>(&mut self, hook: F)
    where
        F: Fn(OnError) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handlers.hooks.on_error.add_async(hook);
    }

    /// Replace the retry-delay decision for failed attempts (errors and panics).
    pub fn retry_policy(
        &mut self,
        policy: impl Fn(&JobContext, &str) -> RetryDecision + Send + Sync + 'static,
    ) {
        self.handlers.retry_policy = Some(std::sync::Arc::new(policy));
    }

    /// Publish every handler's options with `soniq.register_task` (once; again after a new
    /// registration).
    pub(crate) async fn publish_tasks(&self) -> Result<()> {
        self.published
            .get_or_try_init(|| async {
                match self.publish_every_task().await {
                    // A producer login may not publish task options (its workers do): it
                    // enqueues all the same, and does not ask again.
                    Err(e) if e.sqlstate() == Some(SqlState::INSUFFICIENT_PRIVILEGE) => {
                        tracing::debug!("this login may not publish task options: {e}");
                        Ok(())
                    }
                    other => other,
                }
            })
            .await
            .map(drop)
    }

    /// Cancel a job: a queued one never runs; a running one is aborted by its worker at its
    /// next heartbeat. False when it already finished.
    pub async fn cancel_job(&self, job_id: Uuid) -> Result<bool> {
        self.store().job_cancel(job_id).await
    }

    /// Stop claiming from `queue` (jobs keep arriving); false when it was paused already.
    pub async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.store().queue_pause(queue).await
    }

    /// Claim from `queue` again; false when it was not paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.store().queue_resume(queue).await
    }

    /// Publish every handler's options, so plain-SQL producers get them, and the schedules
    /// of periodic tasks (an unchanged schedule keeps its next fire time; the in-memory
    /// queue has no schedules).
    async fn publish_every_task(&self) -> Result<()> {
        let store = self.store();
        let registry = &self.handlers.registry;
        for name in registry.names() {
            let options = &registry.tasks[&name].options;
            store.task_register(&name, &options.to_defaults()).await?;
            if let (Some(schedule), Backend::Postgres(pg)) = (&options.periodic, &self.backend) {
                let spec = ScheduleSpec::new(name.clone(), schedule.clone());
                store::postgres::schedules::add(&**pg.client().await?, &spec).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_task_name_is_warned_about_once_per_name() {
        let name = "tests.warned_once";
        assert!(first_unknown_enqueue(name));
        assert!(!first_unknown_enqueue(name));
        assert!(!first_unknown_enqueue(name));
        assert!(first_unknown_enqueue("tests.warned_once_too"));
    }
}
