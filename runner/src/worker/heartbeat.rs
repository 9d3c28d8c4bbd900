//! The heartbeat: keeps the worker's leases alive, names the jobs it holds (so the store
//! takes back any it lost track of), aborts the jobs whose cancellation was requested, and
//! registers the worker again if it was presumed dead (its old leases are gone, their
//! outcomes will be refused). A heartbeat that could not reach the database marks an outage,
//! after which the maintenance presumes no worker dead for a while ([`LastOutage`]).

use super::attempts::Attempts;
use super::WorkerId;
use crate::execute::ReportKind;
use crate::store::{Store, WorkerRegistration};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

pub(crate) struct Heartbeat {
    pub store: Arc<dyn Store>,
    pub attempts: Arc<Attempts>,
    pub worker_id: Arc<WorkerId>,
    pub registration: WorkerRegistration,
    pub outage: Arc<LastOutage>,
}

/// When this worker's heartbeat last failed: its database was out of reach, and so it was for
/// the other workers. For one heartbeat timeout after that the maintenance presumes no worker
/// dead, as the control plane does after it starts: none could heartbeat meanwhile.
#[derive(Default)]
pub(crate) struct LastOutage(Mutex<Option<Instant>>);

impl LastOutage {
    fn seen(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether the last outage ended less than `span` ago.
    pub fn within(&self, span: Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < span)
    }
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
            Err(e) => {
                // A refusal (a revoked privilege, say) is no outage: other workers still beat.
                if e.unreachable() {
                    self.outage.seen();
                }
                tracing::warn!("heartbeat failed: {e}");
            }
        }
    }
}
