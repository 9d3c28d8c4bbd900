//! The claimer: one per worker, it claims jobs in batches up to the free job slots (and the
//! free slots of tasks with a limit of their own), plus jobs claimed ahead for the slots that
//! free while a claim is on its way, and hands them to [`Attempts`] to run.
//! Woken by the listener, so a notification never sends every job slot racing to the store,
//! and by the completer once outcomes are recorded (slots of a queue's limit may be free).

use super::attempts::Attempts;
use super::{WorkerId, WorkerMonitor};
use crate::error::Result;
use crate::job::StoreHandle;
use crate::metrics::MetricsSink;
use crate::store::{ClaimRequest, ClaimedJob, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

/// Jobs claimed per round trip at most.
pub(crate) const MAX_CLAIM_BATCH: usize = 100;
/// Jobs a worker holds (claimed, until their outcome is recorded) per job slot: a finished
/// attempt frees its job slot at once, so the next batch is claimed while the completer
/// records the last ones (their round trips at the same time instead of one after the other),
/// and at most this many slots' worth of jobs are held. Measured (docs/benchmarks.md): 2
/// lifted the drain at concurrency 64 from 16.2k to 17.7k jobs/s, 4 to 20.6k.
pub(crate) const HELD_PER_SLOT: usize = 4;
/// Jobs claimed ahead at most, per job slot: a claim asks for the free job slots and for as
/// many more as handlers returned while the last claim was on its way (at most this many per
/// slot), so that a claim's round trip does not leave the slots its jobs free idle until
/// the next. Those jobs wait in the worker for a slot, about one round trip.
const AHEAD_PER_SLOT: usize = 1;
/// After a notification, look again this soon even if none follows: a producer whose wake-up
/// was skipped because another's was committing (the extension's src/wake.rs) commits a moment
/// after the notified claim ran.
const FOLLOW_UP: Duration = Duration::from_millis(20);

/// The slots one attempt takes: one of the worker's job slots and, when its task has a limit
/// in this worker, one of the task's, both until its handler returns; and a held slot, until
/// its outcome is recorded ([`Slots::finished`]). The task's goes first (fields drop in
/// order): whoever sees the worker's slots free must see the task's free too, or `run_once`
/// could find the task at its limit with nothing running, and stop with its jobs queued.
pub(crate) struct Slots {
    _task: Option<TaskSlot>,
    job: JobSlot,
    held: Held,
}

/// An attempt's job slot: taken when it was claimed, or, for a job claimed ahead, taken from
/// the worker's slots when one frees.
enum JobSlot {
    Taken { _permit: OwnedSemaphorePermit },
    Ahead(Arc<Semaphore>),
}

/// A held slot: the attempt's outcome is not recorded yet.
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
}

impl Slots {
    /// The slots of a job claimed ahead: a held slot, and a job slot to take from `slots`.
    #[cfg(test)]
    pub fn claimed_ahead(slots: &Arc<Semaphore>, held: OwnedSemaphorePermit) -> Self {
        Slots {
            _task: None,
            job: JobSlot::Ahead(Arc::clone(slots)),
            held: Held { _permit: held },
        }
    }

    /// Whether the job was claimed ahead, without a job slot yet.
    pub fn ahead(&self) -> bool {
        matches!(self.job, JobSlot::Ahead(_))
    }

    /// Take the job slot of a job claimed ahead, waiting at most `patience` for one to free;
    /// false if none did.
    pub async fn take_job_slot(&mut self, patience: Option<Duration>) -> bool {
        let JobSlot::Ahead(slots) = &self.job else {
            return true;
        };
        let acquire = Arc::clone(slots).acquire_owned();
        let permit = match patience {
            Some(patience) => match tokio::time::timeout(patience, acquire).await {
                Ok(permit) => permit,
                Err(_) => return false,
            },
            None => acquire.await,
        };
        self.job = JobSlot::Taken {
            _permit: permit.expect("slots are never closed"),
        };
        true
    }

    /// The handler returned: its job and task slots are free; the held slot goes with the
    /// outcome to the completer.
    pub fn finished(self) -> Held {
        self.held
    }
}

/// A task's slot; freeing it wakes the claimer, which may have left the task out.
struct TaskSlot {
    _permit: OwnedSemaphorePermit,
    wake: Arc<Notify>,
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// What one claim asks for: how many jobs, of which tasks. Tasks whose own limit is reached
/// are left out, and the count is kept within the free slots of every limited task it names,
/// so no job is claimed that could not start at once (it would hold its lease, and run down
/// its timeout, waiting for a slot). `None` when every task is at its limit.
pub(crate) fn claim_size(
    free: usize,
    tasks: &[String],
    task_free: &HashMap<String, usize>,
) -> Option<(usize, Vec<String>)> {
    let mut count = free.min(MAX_CLAIM_BATCH);
    let mut names = Vec::with_capacity(tasks.len());
    for name in tasks {
        match task_free.get(name) {
            Some(0) => continue,
            Some(&limit) => count = count.min(limit),
            None => {}
        }
        names.push(name.clone());
    }
    (count > 0 && !names.is_empty()).then_some((count, names))
}

/// What the claimer needs to know.
pub(crate) struct ClaimerConfig {
    pub queues: Option<Vec<String>>,
    pub task_names: Vec<String>,
    /// Tasks with a limit of their own in this worker (`TaskBuilder::max_concurrent`).
    pub task_limits: HashMap<String, usize>,
    pub concurrency: usize,
    pub run_once: bool,
    pub max_jobs: Option<usize>,
    pub poll_interval: Duration,
    pub error_retry_delay: Duration,
}

pub(crate) struct Claimer {
    pub store: Arc<dyn Store>,
    pub attempts: Arc<Attempts>,
    pub worker_id: Arc<WorkerId>,
    pub wake: Arc<Notify>,
    /// The worker's job slots: attempts whose handler runs.
    pub slots: Arc<Semaphore>,
    /// Held slots (`HELD_PER_SLOT` per job slot): attempts claimed and not yet recorded.
    pub held: Arc<Semaphore>,
    pub config: ClaimerConfig,
    /// Attempts started.
    pub started: AtomicUsize,
    pub monitor: WorkerMonitor,
    pub metrics: Option<Arc<dyn MetricsSink>>,
}

impl Claimer {
    fn task_slots(&self) -> HashMap<String, Arc<Semaphore>> {
        self.config
            .task_limits
            .iter()
            .map(|(name, limit)| (name.clone(), Arc::new(Semaphore::new(*limit))))
            .collect()
    }

    /// Claim and start jobs until told to stop (or, with `run_once`, until nothing is left;
    /// with `max_jobs`, until that many started). Never dropped mid-claim: jobs claimed but
    /// never run would lose an attempt; it ends at its next wait.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let task_slots = self.task_slots();
        let mut follow_up = false;
        // Jobs the next claim asks for beyond the free job slots. Never with tasks limited in
        // this worker: their slots are counted at the claim.
        let mut ahead = 0;
        while !*stop.borrow() {
            let remaining = self.config.max_jobs.map_or(usize::MAX, |max| {
                max.saturating_sub(self.started.load(Ordering::Relaxed))
            });
            if remaining == 0 {
                break;
            }
            let Some(mut permits) = self.free_slots(remaining, ahead, &mut stop).await else {
                break;
            };
            // Armed before the claim, so a notification during the claim is not lost.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let task_free: HashMap<String, usize> = task_slots
                .iter()
                .map(|(name, slots)| (name.clone(), slots.available_permits()))
                .collect();
            let Some((asked, task_names)) =
                claim_size(permits.len(), &self.config.task_names, &task_free)
            else {
                // Every task is at its limit: wait until a slot of one frees.
                drop(permits);
                tokio::select! {
                    _ = &mut woken => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            permits.truncate(asked);
            // Nothing held while we claim: an empty claim then means nothing is left.
            let nothing_running = self.held.available_permits() + asked == self.held_capacity();
            let returned = self.attempts.returned();
            let claim_began = Instant::now();
            let claimed = self.claim(asked, task_names).await;
            self.monitor.claimed(claimed.is_ok());
            if let (Some(metrics), Ok(jobs)) = (&self.metrics, &claimed) {
                metrics.claim_finished(asked, jobs.len(), claim_began.elapsed());
            }
            let got = match claimed {
                Ok(jobs) => self.start(jobs, permits, &task_slots),
                Err(e) => {
                    tracing::warn!("claim failed: {e}");
                    drop(permits);
                    pause(self.config.error_retry_delay, &mut stop).await;
                    continue;
                }
            };
            if task_slots.is_empty() {
                ahead = (self.attempts.returned() - returned)
                    .min(self.config.concurrency * AHEAD_PER_SLOT);
            }
            if got == asked {
                continue; // a full batch: there may be more at once
            }
            // Run once, the worker ends when nothing runs and nothing is left but what a limit
            // holds back. Jobs still running may leave immediate retries, or free a limit's
            // slots: it waits for their outcomes like an idle worker, then looks again.
            if self.config.run_once && got == 0 && nothing_running && !self.held_back().await {
                break;
            }
            let idle = if follow_up {
                FOLLOW_UP
            } else {
                self.config.poll_interval
            };
            follow_up = tokio::select! {
                _ = &mut woken => true,
                _ = tokio::time::sleep(idle) => false,
                _ = stop.changed() => false,
            };
        }
        Ok(())
    }

    /// Whether a limit of the queues served holds back jobs this worker can run (they will be
    /// claimable later, when a slot frees or the rate window moves on); a failed look counts
    /// as no.
    async fn held_back(&self) -> bool {
        let held_back = self
            .store
            .queue_held_back(self.config.queues.as_deref(), &self.config.task_names);
        match held_back.await {
            Ok(held_back) => held_back,
            Err(e) => {
                tracing::warn!("could not tell whether a limit holds jobs back: {e}");
                false
            }
        }
    }

    fn held_capacity(&self) -> usize {
        self.config.concurrency * HELD_PER_SLOT
    }

    /// Wait for a free job slot and held slot, then take every free pair, and up to `ahead`
    /// held slots more for jobs claimed ahead (all of it within `limit` and a batch); `None`
    /// when told to stop meanwhile.
    async fn free_slots(
        &self,
        limit: usize,
        ahead: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<(JobSlot, Held)>> {
        let acquire = |slots: &Arc<Semaphore>| {
            let slots = Arc::clone(slots);
            async move { slots.acquire_owned().await.expect("slots are never closed") }
        };
        let held = tokio::select! {
            held = acquire(&self.held) => held,
            _ = stop.changed() => return None,
        };
        let first = (
            JobSlot::Taken {
                _permit: acquire(&self.slots).await,
            },
            Held { _permit: held },
        );
        let most = limit.min(MAX_CLAIM_BATCH);
        let mut permits = vec![first];
        while permits.len() < most {
            let Ok(job) = Arc::clone(&self.slots).try_acquire_owned() else {
                break;
            };
            let Ok(held) = Arc::clone(&self.held).try_acquire_owned() else {
                break;
            };
            permits.push((JobSlot::Taken { _permit: job }, Held { _permit: held }));
        }
        let wanted = most.min(permits.len() + ahead);
        while permits.len() < wanted {
            let Ok(held) = Arc::clone(&self.held).try_acquire_owned() else {
                break;
            };
            permits.push((
                JobSlot::Ahead(Arc::clone(&self.slots)),
                Held { _permit: held },
            ));
        }
        Some(permits)
    }

    async fn claim(&self, count: usize, task_names: Vec<String>) -> Result<Vec<ClaimedJob>> {
        let request = ClaimRequest {
            worker_id: self.worker_id.get(),
            queues: self.config.queues.clone(),
            count,
            task_names: Some(task_names),
        };
        let mut jobs = self.store.job_claim(&request).await?;
        for job in &mut jobs {
            job.context.store = StoreHandle(Some(Arc::clone(&self.store)));
        }
        Ok(jobs)
    }

    /// Run the claimed jobs, each with a slot (and its task's, where limited); returns how many.
    fn start(
        &self,
        jobs: Vec<ClaimedJob>,
        permits: Vec<(JobSlot, Held)>,
        task_slots: &HashMap<String, Arc<Semaphore>>,
    ) -> usize {
        let got = jobs.len();
        self.started.fetch_add(got, Ordering::Relaxed);
        for (job, (slot, held)) in jobs.into_iter().zip(permits) {
            // Only the claimer takes task slots, and it claimed no more than were free (and
            // none ahead).
            let task = task_slots.get(&job.context.task_name).and_then(|slots| {
                let permit = Arc::clone(slots).try_acquire_owned().ok()?;
                Some(TaskSlot {
                    _permit: permit,
                    wake: Arc::clone(&self.wake),
                })
            });
            let slots = Slots {
                _task: task,
                job: slot,
                held,
            };
            self.attempts.spawn(job, slots);
        }
        got
    }
}

/// Sleep for `period`, or until told to stop.
async fn pause(period: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_claim_takes_every_free_slot_up_to_a_batch() {
        let tasks = names(&["a", "b"]);
        assert_eq!(
            claim_size(8, &tasks, &HashMap::new()),
            Some((8, tasks.clone()))
        );
        assert_eq!(
            claim_size(500, &tasks, &HashMap::new()),
            Some((MAX_CLAIM_BATCH, tasks.clone()))
        );
    }

    #[test]
    fn a_task_at_its_limit_is_left_out_and_a_limited_task_bounds_the_count() {
        let tasks = names(&["convert", "mail", "resize"]);
        let free: HashMap<String, usize> = [("convert".to_string(), 0), ("resize".to_string(), 2)]
            .into_iter()
            .collect();
        // resize has two free slots: a claim that may return resize jobs takes at most two.
        assert_eq!(
            claim_size(8, &tasks, &free),
            Some((2, names(&["mail", "resize"])))
        );
        // Every task at its limit: nothing to claim.
        let full: HashMap<String, usize> = [("convert".to_string(), 0)].into_iter().collect();
        assert_eq!(claim_size(8, &names(&["convert"]), &full), None);
    }
}
