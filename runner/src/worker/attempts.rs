//! The attempts a worker holds: claimed ahead and waiting for a job slot, running, or
//! finished with their outcomes on their way to the store. The heartbeat names them all;
//! shutdown hands back the waiting ones and stops the running ones, cancellation stops either.

use super::completer::Report;
use crate::attempt_log::AttemptLog;
use crate::execute::{execute, Handlers, ReportKind};
use crate::store::{ClaimedJob, Lease};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;
use uuid::Uuid;

struct Running {
    /// Claimed ahead, its handler not started: it waits for a job slot.
    waiting: bool,
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
    /// Handlers returned so far: the claimer sizes its claims ahead by how many return while
    /// a claim is on its way.
    returned: AtomicUsize,
}

/// How a job claimed ahead that found no job slot within its time limit goes back.
fn no_slot_in_time() -> ReportKind {
    ReportKind::Snooze {
        delay: Duration::ZERO,
        reason: Some("claimed ahead, no job slot freed within its timeout: handed back".into()),
    }
}

/// How shutdown hands back the jobs still waiting for a job slot (no attempt used).
pub(crate) fn handed_back_at_shutdown() -> ReportKind {
    ReportKind::Snooze {
        delay: Duration::ZERO,
        reason: Some("handed back unfinished at shutdown".into()),
    }
}

impl Attempts {
    pub fn new(handlers: Handlers, reports: mpsc::UnboundedSender<Report>) -> Self {
        Attempts {
            handlers,
            running: Mutex::new(HashMap::new()),
            recording: Mutex::new(HashSet::new()),
            reports,
            returned: AtomicUsize::new(0),
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

    /// Handlers running, jobs claimed ahead waiting for a slot, outcomes not yet recorded.
    pub fn counts(&self) -> (usize, usize, usize) {
        let running = self.running.lock().unwrap();
        let waiting = running.values().filter(|job| job.waiting).count();
        let recording = self.recording.lock().unwrap().len();
        (running.len() - waiting, waiting, recording)
    }

    pub fn any_running(&self) -> bool {
        !self.running.lock().unwrap().is_empty()
    }

    /// How many handlers have returned so far.
    pub fn returned(&self) -> usize {
        self.returned.load(Ordering::Relaxed)
    }

    /// The handler of a job claimed ahead may start now; false if the job was stopped while
    /// it waited (shutdown, cancellation), under the same lock as [`Attempts::stop_waiting`].
    fn begin(&self, job_id: Uuid) -> bool {
        match self.running.lock().unwrap().get_mut(&job_id) {
            Some(job) => {
                job.waiting = false;
                true
            }
            None => false,
        }
    }

    /// Hand back the jobs claimed ahead whose handler has not started; returns how many.
    pub fn stop_waiting(&self) -> usize {
        let waiting: Vec<Uuid> = {
            let running = self.running.lock().unwrap();
            running
                .iter()
                .filter(|(_, job)| job.waiting)
                .map(|(id, _)| *id)
                .collect()
        };
        self.stop_if(&waiting, |job| job.waiting, handed_back_at_shutdown)
    }

    /// Run a claimed attempt in a task of its own; its job slots are freed when the handler
    /// returns, its held slot travels with the report (freed once the outcome is recorded).
    /// A job claimed ahead first waits for a job slot, at most its time limit (which counts
    /// from the claim, as its lease does); its handler gets what is left of it.
    pub fn spawn(self: &Arc<Self>, job: ClaimedJob, mut slots: super::claimer::Slots) {
        let lease = Lease {
            job_id: job.context.job_id,
            attempt: job.context.attempt,
        };
        let worker_id = job.context.worker_id;
        let mut running = self.running.lock().unwrap();
        let attempts = Arc::clone(self);
        let log = AttemptLog::start(&job.context, job.traceparent.as_deref());
        let span = log.span().clone();
        let waiting = slots.ahead();
        let handle = tokio::spawn(async move {
            let mut job = job;
            let claimed = Instant::now();
            let kind = if !slots.take_job_slot(job.context.timeout).await {
                no_slot_in_time()
            } else if waiting && !attempts.begin(lease.job_id) {
                return; // stopped while it waited: reported by whoever stopped it
            } else {
                if waiting {
                    // Its lease runs from the claim: the handler gets what is left of it.
                    job.context.timeout = job
                        .context
                        .timeout
                        .map(|limit| limit.saturating_sub(claimed.elapsed()));
                }
                let kind = match job.unrunnable {
                    Some(error) => ReportKind::failure(error),
                    None => {
                        execute(&attempts.handlers, job.context, job.args)
                            .instrument(span)
                            .await
                    }
                };
                attempts.returned.fetch_add(1, Ordering::Relaxed);
                kind
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
                waiting,
                abort: handle.abort_handle(),
                lease,
                worker_id,
                log,
            },
        );
    }

    /// Stop the given jobs (running or waiting) and report them with `kind`; returns how
    /// many were stopped.
    pub fn stop(&self, ids: &[Uuid], kind: impl Fn() -> ReportKind) -> usize {
        self.stop_if(ids, |_| true, kind)
    }

    /// `stop`, for those of the jobs that pass `which` at the time of stopping.
    fn stop_if(
        &self,
        ids: &[Uuid],
        which: impl Fn(&Running) -> bool,
        kind: impl Fn() -> ReportKind,
    ) -> usize {
        let mut running = self.running.lock().unwrap();
        let mut stopped = 0;
        for id in ids {
            if !running.get(id).is_some_and(&which) {
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobContext;
    use crate::worker::claimer::Slots;
    use std::time::SystemTime;
    use tokio::sync::Semaphore;

    fn claimed(n: u128, timeout: Option<Duration>) -> ClaimedJob {
        ClaimedJob {
            context: JobContext {
                job_id: Uuid::from_u128(n),
                task_name: "t".into(),
                attempt: 1,
                max_attempts: 3,
                queue: "default".into(),
                worker_id: Uuid::from_u128(99),
                scheduled_at: None,
                created_at: SystemTime::now(),
                timeout,
                store: Default::default(),
            },
            args: serde_json::json!({}),
            unrunnable: None,
            traceparent: None,
        }
    }

    fn snooze_reason(report: &Report) -> &str {
        match &report.kind {
            ReportKind::Snooze {
                reason: Some(reason),
                delay,
            } if delay.is_zero() => reason,
            _ => panic!("expected a hand-back"),
        }
    }

    #[tokio::test]
    async fn a_job_claimed_ahead_starts_when_a_slot_frees_and_otherwise_goes_back_unstarted() {
        let (reports, mut outcomes) = mpsc::unbounded_channel();
        let attempts = Arc::new(Attempts::new(Handlers::default(), reports));
        let job_slots = Arc::new(Semaphore::new(0)); // every job slot is taken
        let held = Arc::new(Semaphore::new(8));
        let ahead = |held: &Arc<Semaphore>| {
            Slots::claimed_ahead(&job_slots, Arc::clone(held).try_acquire_owned().unwrap())
        };

        // No slot frees within its time limit: back without running.
        attempts.spawn(claimed(1, Some(Duration::from_millis(50))), ahead(&held));
        let report = outcomes.recv().await.unwrap();
        assert_eq!(report.lease.job_id, Uuid::from_u128(1));
        assert!(snooze_reason(&report).contains("no job slot"));
        assert_eq!(attempts.returned(), 0, "its handler never ran");
        attempts.recorded(report.lease.job_id);
        drop(report); // its held slot with it, as the completer does

        // Still waiting at shutdown: back at once.
        attempts.spawn(claimed(2, None), ahead(&held));
        tokio::task::yield_now().await;
        assert_eq!(
            attempts.held().len(),
            1,
            "a waiting job is held (heartbeats name it)"
        );
        assert_eq!(attempts.stop_waiting(), 1);
        let report = outcomes.recv().await.unwrap();
        assert_eq!(report.lease.job_id, Uuid::from_u128(2));
        assert!(snooze_reason(&report).contains("shutdown"));

        // A slot frees: the job runs (here its task has no handler, so it fails saying so).
        attempts.spawn(claimed(3, Some(Duration::from_secs(60))), ahead(&held));
        job_slots.add_permits(1);
        let report = outcomes.recv().await.unwrap();
        assert_eq!(report.lease.job_id, Uuid::from_u128(3));
        assert!(matches!(report.kind, ReportKind::Fail { .. }));
        assert_eq!(attempts.returned(), 1);
        assert_eq!(attempts.stop_waiting(), 0);
        drop(report);
        // The stopped job's task drops its held slot once the runtime ends it.
        let all_back = async {
            while held.available_permits() < 8 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), all_back)
            .await
            .expect("every held slot comes back");
    }
}
