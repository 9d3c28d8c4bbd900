//! Test helpers of `Soniq::in_memory()`: run the due jobs inline, and look at what was
//! enqueued. The queue itself is the in-memory store (`store::memory`); a drain claims and
//! records outcomes through it as a worker does.

use crate::error::Result;
use crate::execute::execute;
use crate::job::JobContext;
use crate::jobs::JobInfo;
use crate::registry::Task;
use crate::store::{ClaimRequest, Lease, MemoryStore, Store, WorkerRegistration};
use crate::worker::{record_batch, Report};
use crate::{Backend, Soniq};
use serde::Serialize;
use std::time::Duration;

impl Soniq {
    #[track_caller]
    fn memory(&self) -> &MemoryStore {
        match &self.backend {
            Backend::Memory(store) => store,
            Backend::Postgres(_) => panic!("this is a test helper of Soniq::in_memory()"),
        }
    }

    /// Run every due job inline, one at a time, until none is due (an immediate retry runs in
    /// the same drain; delayed retries and future jobs wait). Returns the attempts run, in
    /// order. Only for `Soniq::in_memory()`; panics if the store refuses a step (a test
    /// helper: the in-memory store refuses only what a test got wrong).
    pub async fn drain(&self) -> Vec<JobContext> {
        self.drain_due()
            .await
            .unwrap_or_else(|e| panic!("the in-memory queue refused a step of the drain: {e}"))
    }

    async fn drain_due(&self) -> Result<Vec<JobContext>> {
        let store = self.memory();
        self.publish_tasks().await?;
        let worker_id = store
            .worker_register(&WorkerRegistration {
                host: None,
                pid: std::process::id() as i32,
                queues: None,
                concurrency: 1,
                version: env!("CARGO_PKG_VERSION").into(),
                task_names: self.handlers.registry.names(),
            })
            .await?;
        let next = ClaimRequest {
            worker_id,
            queues: None,
            count: 1,
            task_names: None,
        };
        let mut ran = Vec::new();
        while let Some(job) = store.job_claim(&next).await?.pop() {
            let mut ctx = job.context;
            ctx.store = crate::job::StoreHandle(Some(self.store()));
            let kind = execute(&self.handlers, ctx.clone(), job.args).await;
            let lease = Lease {
                job_id: ctx.job_id,
                attempt: ctx.attempt,
            };
            record_batch(store, &mut vec![Report::new(lease, worker_id, kind)]).await?;
            ran.push(ctx);
        }
        store.worker_deregister(worker_id).await?;
        Ok(ran)
    }

    /// The jobs of a task in the in-memory queue, in enqueue order, in any state.
    pub fn enqueued(&self, task_name: &str) -> Vec<JobInfo> {
        self.memory()
            .all()
            .into_iter()
            .filter(|job| job.task_name == task_name)
            .collect()
    }

    /// Panic unless a job of `task` with exactly these arguments was enqueued (in memory).
    #[track_caller]
    pub fn assert_enqueued<A: Serialize>(&self, task: &Task<A>, args: &A) {
        let expected = serde_json::to_value(args).expect("arguments serialise to JSON");
        let jobs = self.enqueued(task.name());
        if !jobs.iter().any(|job| job.args == expected) {
            let seen: Vec<String> = jobs.iter().map(|job| job.args.to_string()).collect();
            panic!(
                "no job of {} was enqueued with {expected}; enqueued: [{}]",
                task.name(),
                seen.join(", ")
            );
        }
    }
}

/// Wait until `condition` holds, checking every 10 ms; an error after `timeout`.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::Error::Invalid(format!(
                "the condition did not hold within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
