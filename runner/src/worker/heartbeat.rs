//! The heartbeat: keeps the worker's leases alive, names the jobs it holds (so the store
//! takes back any it lost track of), aborts the jobs whose cancellation was requested, and
//! registers the worker again if it was presumed dead (its old leases are gone, their
//! outcomes will be refused).

use super::attempts::Attempts;
use super::WorkerId;
use crate::execute::ReportKind;
use crate::store::{Store, WorkerRegistration};
use std::sync::Arc;
use tokio_postgres::error::SqlState;

pub(crate) struct Heartbeat {
    pub store: Arc<dyn Store>,
    pub attempts: Arc<Attempts>,
    pub worker_id: Arc<WorkerId>,
    pub registration: WorkerRegistration,
}

impl Heartbeat {
    pub async fn beat(&self) {
        let held = self.attempts.held();
        match self
            .store
            .worker_heartbeat(self.worker_id.get(), &held)
            .await
        {
            Ok(cancelled) => {
                self.attempts.stop(&cancelled, || {
                    ReportKind::Abort("cancelled on request".into())
                });
            }
            Err(e) if e.sqlstate() == Some(SqlState::NO_DATA_FOUND) => {
                tracing::warn!("this worker was presumed dead; registering again");
                if let Ok(id) = self.store.worker_register(&self.registration).await {
                    self.worker_id.set(id);
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}
