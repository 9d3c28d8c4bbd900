//! Middleware: functions that wrap every handler call (inside the job's timeout). The first
//! registered is the outermost.

use crate::job::{JobContext, JobResult};
use crate::registry::BoxFuture;
use std::future::Future;
use std::sync::Arc;

/// The rest of the chain: the next middleware, or the handler itself.
pub struct Next(Box<dyn FnOnce() -> BoxFuture<JobResult> + Send>);

impl Next {
    pub async fn run(self) -> JobResult {
        (self.0)().await
    }
}

pub(crate) type Middleware = Arc<dyn Fn(JobContext, Next) -> BoxFuture<JobResult> + Send + Sync>;

pub(crate) fn wrap<F, Fut>(middleware: F) -> Middleware
where
    F: Fn(JobContext, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    Arc::new(move |ctx, next| Box::pin(middleware(ctx, next)))
}

/// The handler's future wrapped in the chain, outermost first.
pub(crate) fn chain(
    middlewares: &[Middleware],
    ctx: &JobContext,
    handler: BoxFuture<JobResult>,
) -> BoxFuture<JobResult> {
    let mut call: Box<dyn FnOnce() -> BoxFuture<JobResult> + Send> = Box::new(move || handler);
    for middleware in middlewares.iter().rev() {
        let middleware = Arc::clone(middleware);
        let ctx = ctx.clone();
        let next = Next(call);
        call = Box::new(move || middleware(ctx, next));
    }
    call()
}
