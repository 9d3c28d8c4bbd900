//! Registered handlers and their options.

use crate::enqueue::job_option_setters;
use crate::error::{Error, Result};
use crate::job::{JobContext, JobResult};
use crate::settings::Settings;
use crate::store::JobOptions;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A handler behind its typed arguments: JSON in, outcome out. Arguments that do not
/// deserialize are reported as `Err(message)` (the job is dead-lettered `invalid_arguments`).
pub(crate) type Handler =
    Arc<dyn Fn(Value, JobContext) -> Result<BoxFuture<JobResult>, String> + Send + Sync>;

/// Checks JSON arguments against a handler's argument type (the error says why not).
pub(crate) type ArgsCheck = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// A task's options, published for its jobs (`soniq.register_task`). Unset options fall
/// back to the system defaults in the database.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<i32>,
    pub(crate) retries: Option<i32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) unique: Option<bool>,
    pub(crate) retry_delays: Option<Vec<Duration>>,
    retry_backoff: Option<bool>,
    retry_max_delay: Option<Duration>,
    retry_jitter: Option<bool>,
    result_ttl: Option<Duration>,
    /// The field of the args (a dotted path) whose value is a job's concurrency key.
    concurrency_key: Option<String>,
    /// Published as a schedule named after the task when the application starts.
    pub(crate) periodic: Option<soniq_cron::Schedule>,
    /// At most this many of the task's jobs run at once in one worker (not published: a
    /// limit of this process, kept by its claimer).
    pub(crate) max_concurrent: Option<usize>,
}

impl TaskOptions {
    /// The defaults document `soniq.register_task` takes.
    pub(crate) fn to_defaults(&self) -> Value {
        let mut out = Map::new();
        let mut put = |key: &str, value: Value| {
            out.insert(key.into(), value);
        };
        if let Some(q) = &self.queue {
            put("queue", json!(q));
        }
        if let Some(p) = self.priority {
            put("priority", json!(p));
        }
        if let Some(r) = self.retries {
            put("retries", json!(r));
        }
        if let Some(t) = self.timeout {
            put("timeout", json!(t.as_secs_f64()));
        }
        if let Some(u) = self.unique {
            put("unique", json!(u));
        }
        if let Some(delays) = &self.retry_delays {
            let seconds: Vec<f64> = delays.iter().map(Duration::as_secs_f64).collect();
            put(
                "retry_delay",
                if seconds.len() == 1 {
                    json!(seconds[0])
                } else {
                    json!(seconds)
                },
            );
        }
        if let Some(b) = self.retry_backoff {
            put("retry_backoff", json!(b));
        }
        if let Some(m) = self.retry_max_delay {
            put("retry_max_delay", json!(m.as_secs_f64()));
        }
        if let Some(j) = self.retry_jitter {
            put("retry_jitter", json!(j));
        }
        if let Some(t) = self.result_ttl {
            put("result_ttl", json!(t.as_secs_f64()));
        }
        if let Some(key) = &self.concurrency_key {
            put("concurrency_key", json!(key));
        }
        Value::Object(out)
    }
}

/// The task name `task_name!(function)` derives: the module path with `.` for `::`, then
/// the function's name (`my_app::jobs` + `send_welcome` → `my_app.jobs.send_welcome`).
pub fn derive_task_name(module_path: &str, function: &str) -> String {
    format!("{}.{function}", module_path.replace("::", "."))
}

/// The task name of a handler function, derived from where it is written.
#[macro_export]
macro_rules! task_name {
    ($function:ident) => {
        $crate::derive_task_name(module_path!(), stringify!($function))
    };
}

/// A typed handle on a task: enqueue with `A` as arguments. Made by registering a handler,
/// or with [`Soniq::task_ref`](crate::Soniq::task_ref) by a producer that does not run the task.
///
/// A handle may carry options (`.queue("billing")`, `.priority(10)`, ...): every enqueue
/// through it uses them unless the enqueue call sets its own; what neither sets comes from
/// the task's registered options, then the system defaults.
pub struct Task<A> {
    name: String,
    pub(crate) options: JobOptions,
    args: PhantomData<fn(A)>,
}

impl<A> Clone for Task<A> {
    fn clone(&self) -> Self {
        Task {
            name: self.name.clone(),
            options: self.options.clone(),
            args: PhantomData,
        }
    }
}

impl<A: Serialize> Task<A> {
    pub(crate) fn named(name: String) -> Self {
        Task {
            name,
            options: JobOptions::default(),
            args: PhantomData,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    // A producer names its consumers' queue here, so a job enqueued before they published
    // their options does not land in `default`.
    job_option_setters!();
}

pub(crate) fn check_task_name(settings: &Settings, name: &str) -> Result<()> {
    if settings.task_name_pattern().matches(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "task name {name:?} does not match SONIQ_TASK_NAME_PATTERN ({})",
            settings.task_name_pattern().as_str()
        )))
    }
}

#[derive(Clone)]
pub(crate) struct Registered {
    pub options: TaskOptions,
    pub handler: Handler,
    /// Checks arguments enqueued by name against the handler's type.
    pub check_args: ArgsCheck,
}

/// The handlers of this process, by task name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    pub tasks: HashMap<String, Registered>,
}

impl Registry {
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tasks.keys().cloned().collect();
        names.sort();
        names
    }

    /// The tasks with a limit of their own in this worker, and their limits.
    pub fn task_limits(&self) -> HashMap<String, usize> {
        self.tasks
            .iter()
            .filter_map(|(name, task)| Some((name.clone(), task.options.max_concurrent?)))
            .collect()
    }
}

/// Options of a task being registered; `handler` completes the registration.
pub struct TaskBuilder<'a> {
    pub(crate) registry: &'a mut Registry,
    pub(crate) settings: &'a Settings,
    pub(crate) name: String,
    pub(crate) options: TaskOptions,
}

impl TaskBuilder<'_> {
    job_option_setters!();

    /// The reference's alias of [`TaskBuilder::retries`].
    pub fn max_retries(self, retries: i32) -> Self {
        self.retries(retries)
    }

    /// Wait before each retry; one delay, or one per attempt (the last repeats).
    pub fn retry_delay(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.options.retry_delays = Some(delays.into_iter().collect());
        self
    }

    /// Double a single retry delay each attempt (with jitter unless turned off).
    pub fn retry_backoff(mut self, backoff: bool) -> Self {
        self.options.retry_backoff = Some(backoff);
        self
    }

    pub fn retry_max_delay(mut self, cap: Duration) -> Self {
        self.options.retry_max_delay = Some(cap);
        self
    }

    pub fn retry_jitter(mut self, jitter: bool) -> Self {
        self.options.retry_jitter = Some(jitter);
        self
    }

    /// How long a finished job and its result are kept; default 300 s, zero deletes at once.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.options.result_ttl = Some(ttl);
        self
    }

    /// Run the task on a schedule (`dsl::every(5).minutes()`, `dsl::daily().at("09:00")`,
    /// ...): published as schedule `<task name>` when the application starts. The
    /// extension's background worker fires it.
    pub fn periodic(mut self, schedule: soniq_cron::Schedule) -> Self {
        self.options.periodic = Some(schedule);
        self
    }

    /// The field of the args whose value is each job's concurrency key (`"tenant_id"`, or a
    /// dotted path like `"customer.id"`): the key the per-key limits and the fair share of its
    /// queue count by (`Soniq::configure_queue`). Resolved when a job is enqueued; a job whose
    /// args lack the field is in the default key `""`.
    pub fn concurrency_key(mut self, field: impl Into<String>) -> Self {
        self.options.concurrency_key = Some(field.into());
        self
    }

    /// At most `limit` (1..=1000) of this task's jobs run at once in one worker; the worker
    /// claims no more of them than that, so none waits for a slot while holding its lease.
    pub fn max_concurrent(mut self, limit: usize) -> Self {
        self.options.max_concurrent = Some(limit);
        self
    }

    /// Register the handler. Its arguments are `A`, deserialized from the job's JSON args.
    pub fn handler<A, F, Fut>(self, handler: F) -> Result<Task<A>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        check_task_name(self.settings, &self.name)?;
        if let Some(limit) = self
            .options
            .max_concurrent
            .filter(|n| !(1..=1000).contains(n))
        {
            return Err(Error::Config(format!(
                "task {}: max_concurrent must be from 1 to 1000, got {limit}",
                self.name
            )));
        }
        let mut options = self.options;
        if options.queue.is_none() {
            options.queue = self
                .settings
                .route_map()
                .iter()
                .find(|(prefix, _)| self.name.starts_with(prefix.as_str()))
                .map(|(_, queue)| queue.clone());
        }
        if self.registry.tasks.contains_key(&self.name) {
            return Err(Error::Invalid(format!(
                "task {:?} is registered twice",
                self.name
            )));
        }
        let handler = Arc::new(handler);
        let run: Handler = Arc::new(move |args: Value, ctx: JobContext| {
            let args: A = serde_json::from_value(args).map_err(|e| e.to_string())?;
            let handler = Arc::clone(&handler);
            Ok(Box::pin(async move { handler(args, ctx).await }) as BoxFuture<JobResult>)
        });
        let check_args: ArgsCheck = Arc::new(|args: &Value| {
            serde_json::from_value::<A>(args.clone())
                .map(drop)
                .map_err(|e| e.to_string())
        });
        // The handle routes its jobs to the handler's queue whoever publishes the options (a
        // producer login may not) and whenever: a job must not wait in a queue nobody serves.
        let mut task = Task::named(self.name.clone());
        task.options.queue = options.queue.clone();
        self.registry.tasks.insert(
            self.name,
            Registered {
                options,
                handler: run,
                check_args,
            },
        );
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_use_dots() {
        assert_eq!(
            derive_task_name("my_app::jobs", "send_welcome"),
            "my_app.jobs.send_welcome"
        );
        assert_eq!(
            crate::task_name!(derived_names_use_dots),
            "soniq_runner.registry.tests.derived_names_use_dots"
        );
    }

    #[test]
    fn options_become_register_task_defaults() {
        let options = TaskOptions {
            queue: Some("billing".into()),
            retries: Some(5),
            timeout: Some(Duration::from_secs(120)),
            retry_delays: Some(vec![Duration::from_secs(1), Duration::from_secs(5)]),
            result_ttl: Some(Duration::ZERO),
            ..TaskOptions::default()
        };
        assert_eq!(
            options.to_defaults(),
            json!({"queue": "billing", "retries": 5, "timeout": 120.0,
                   "retry_delay": [1.0, 5.0], "result_ttl": 0.0})
        );
        assert_eq!(TaskOptions::default().to_defaults(), json!({}));
    }
}
