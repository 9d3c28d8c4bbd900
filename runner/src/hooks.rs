//! Hooks around every job: before it runs, after it succeeds, when it fails. Several per
//! event run in registration order; one that panics logs a warning and changes nothing.

use crate::registry::BoxFuture;
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct BeforeJob {
    pub task_name: String,
    pub job_id: Uuid,
    pub attempt: i32,
}

#[derive(Debug, Clone)]
pub struct AfterJob {
    pub task_name: String,
    pub job_id: Uuid,
    /// Wall-clock time of the handler, in milliseconds.
    pub duration_ms: f64,
}

#[derive(Debug, Clone)]
pub struct OnError {
    pub task_name: String,
    pub job_id: Uuid,
    pub error: String,
    pub attempt: i32,
}

type Hook<E> = Arc<dyn Fn(E) -> BoxFuture<()> + Send + Sync>;

/// The hooks of one event.
pub(crate) struct HookList<E>(Vec<Hook<E>>);

impl<E> Default for HookList<E> {
    fn default() -> Self {
        HookList(Vec::new())
    }
}

impl<E> Clone for HookList<E> {
    fn clone(&self) -> Self {
        HookList(self.0.clone())
    }
}

impl<E: Clone + Send + 'static> HookList<E> {
    pub fn add_sync(&mut self, hook: impl Fn(&E) + Send + Sync + 'static) {
        self.0.push(Arc::new(move |event: E| {
            hook(&event);
            Box::pin(async {}) as BoxFuture<()>
        }));
    }

    pub fn add_async<F, Fut>(&mut self, hook: F)
    where
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.0.push(Arc::new(move |event: E| {
            Box::pin(hook(event)) as BoxFuture<()>
        }));
    }

    pub async fn run(&self, name: &str, event: &E) {
        for hook in &self.0 {
            let call = AssertUnwindSafe(async { hook(event.clone()).await });
            if call.catch_unwind().await.is_err() {
                tracing::warn!("hook {name} failed (it panicked); the job goes on");
            }
        }
    }
}

#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub before_job: HookList<BeforeJob>,
    pub after_job: HookList<AfterJob>,
    pub on_error: HookList<OnError>,
}
