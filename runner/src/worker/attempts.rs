//! The attempts a worker holds: running, or finished with their outcomes on their way to
//! the store. The heartbeat names them all; shutdown and cancellation stop running ones.

use super::completer::Report;
use crate::attempt_log::AttemptLog;
use crate::execute::{execute, Handlers, ReportKind};
use crate::store::{ClaimedJob, Lease};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;

struct Running {
    abort: AbortHandle,
    lease: Lease,
    worker_id: Uuid,
    log: AttemptLog,
}

/// Running attempts and those being recorded, and where outcomes go.
pub(crate) struct Attempts {
    handlers: Handlers,
    running: Mutex<HashMap<Uuid, Running>>,
    /// Finished attempts whose outcomes the completer has not recorded yet.
    recording: Mutex<HashSet<Uuid>>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Attempts {
    pub fn new(handlers: Handlers, reports: mpsc::UnboundedSender<Report>) -> Self {
        Attempts {
            handlers,
            running: Mutex::new(HashMap::new()),
            recording: Mutex::new(HashSet::new()),
            reports,
        }
    }

    /// Move a job from running to recording, under the caller's lock on `running`, so a
    /// heartbeat never finds it in neither; `None` if it was not running.
    fn finish(&self, running: &mut HashMap<Uuid, Running>, job_id: Uuid) -> Option<Running> {
        let job = running.remove(&job_id)?;
        self.recording.lock().unwrap().insert(job_id);
        Some(job)
    }

    /// The outcome is recorded (or given up on): the job is no longer held.
    pub fn recorded(&self, job_id: Uuid) {
        self.recording.lock().unwrap().remove(&job_id);
    }

    /// The jobs this worker holds: running, or finished with their outcomes being recorded.
    pub fn held(&self) -> Vec<Uuid> {
        let running = self.running.lock().unwrap();
        let recording = self.recording.lock().unwrap();
        running.keys().chain(recording.iter()).copied().collect()
    }

    pub fn running_ids(&self) -> Vec<Uuid> {
        self.running.lock().unwrap().keys().copied().collect()
    }

    pub fn any_running(&self) -> bool {
        !self.running.lock().unwrap().is_empty()
    }

    /// Run a claimed attempt in a task of its own; its job slots are freed when the handler
    /// returns, its held slot travels with the report (freed once the outcome is recorded).
    pub fn spawn(self: &Arc<Self>, job: ClaimedJob, slots: super::claimer::Slots) {
        let lease = Lease {
            job_id: job.context.job_id,
            attempt: job.context.attempt,
        };
        let worker_id = job.context.worker_id;
        let mut running = self.running.lock().unwrap();
        let attempts = Arc::clone(self);
        let log = AttemptLog::start(&job.context);
        let handle = tokio::spawn(async move {
            let kind = match job.unrunnable {
                Some(error) => ReportKind::failure(error),
                None => execute(&attempts.handlers, job.context, job.args).await,
            };
            // Only a job still in the map reports: one the heartbeat aborted has reported already.
            let finished = attempts.finish(&mut attempts.running.lock().unwrap(), lease.job_id);
            if let Some(finished) = finished {
                finished.log.ended(&kind);
                let _ = attempts.reports.send(Report {
                    lease,
                    worker_id,
                    kind,
                    _held: Some(slots.finished()),
                });
            }
        });
        running.insert(
            lease.job_id,
            Running {
                abort: handle.abort_handle(),
                lease,
                worker_id,
                log,
            },
        );
    }

    /// Stop the given running jobs and report them with `kind`; returns how many were stopped.
    pub fn stop(&self, ids: &[Uuid], kind: impl Fn() -> ReportKind) -> usize {
        let mut running = self.running.lock().unwrap();
        let mut stopped = 0;
        for id in ids {
            if let Some(job) = self.finish(&mut running, *id) {
                job.abort.abort();
                let kind = kind();
                job.log.ended(&kind);
                let _ = self.reports.send(Report {
                    lease: job.lease,
                    worker_id: job.worker_id,
                    kind,
                    _held: None, // the aborted task held its slots and has dropped them
                });
                stopped += 1;
            }
        }
        stopped
    }
}
