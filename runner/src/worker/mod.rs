//! The worker, wired from small services that share one lifecycle — started together, the
//! claimer stopped first, the others once the running jobs are finished or handed back:
//! * [`claimer`]: one per process, claims in batches up to the free job slots, and ahead
//!   for the slots that free during a claim's round trip;
//! * [`attempts`]: one task per claimed job (waiting for a job slot, or running), and the
//!   jobs the worker holds;
//! * [`completer`]: records outcomes, many completions (and failures) per statement;
//! * [`heartbeat`]: keeps the leases alive and learns of cancellation requests;
//! * [`maintenance`]: rescue and pruning rounds where no control plane serves the database;
//! * [`listener`]: `LISTEN soniq_new_job`, waking the claimer;
//! * [`monitor`]: the worker's state and slots, for readiness probes and metrics.
//!
//! On shutdown, jobs claimed ahead and not started go back at once, and unfinished jobs are
//! handed back after the shutdown timeout, neither using up an attempt.

mod attempts;
mod claimer;
mod completer;
mod heartbeat;
pub(crate) mod listener;
mod maintenance;
mod monitor;
mod signals;

pub(crate) use completer::{record_batch, Report};
pub use monitor::{WorkerMonitor, WorkerSnapshot, WorkerState};

use crate::error::{Error, Result};
use crate::store::{Store, WorkerRegistration};
use crate::Soniq;
use attempts::Attempts;
use claimer::{Claimer, ClaimerConfig};
use heartbeat::Heartbeat;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Jobs run at once, 1..=1000 (as `SONIQ_CONCURRENCY`, the default).
    pub concurrency: Option<usize>,
    /// Queues to serve; `None` serves all.
    pub queues: Option<Vec<String>>,
    /// Run what is due, wait for it to finish, and return when nothing is left.
    pub run_once: bool,
    /// Stop claiming once this many jobs were started (with or without `run_once`), then
    /// finish them and return.
    pub max_jobs: Option<usize>,
    /// Where the worker reports its state and slots as it runs (readiness, gauges).
    pub monitor: Option<WorkerMonitor>,
}

/// What a worker did before it returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Attempts started.
    pub jobs_run: usize,
    /// Attempts handed back unfinished at shutdown (they will run again, no attempt used).
    pub handed_back: usize,
}

/// The worker's id, which a heartbeat changes when the worker registers again.
pub(crate) struct WorkerId(Mutex<Uuid>);

impl WorkerId {
    pub fn get(&self) -> Uuid {
        *self.0.lock().unwrap()
    }

    fn set(&self, id: Uuid) {
        *self.0.lock().unwrap() = id;
    }
}

/// Run `round` every `period` until `stop` changes; a long round is handed `stop` to end early.
fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut round: F) -> JoinHandle<()>
where
    F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            round(stop.clone()).await;
        }
    })
}

/// The services that run beside the claimer, stopped after it.
struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Soniq {
    /// Run a worker until SIGINT or SIGTERM (or, with `run_once`, until nothing is due).
    /// The first signal shuts down gracefully; a second one exits the process at once
    /// (status 130; jobs still running are taken back by the control plane once this
    /// worker's heartbeats stop).
    pub async fn run_worker(&self, options: WorkerOptions) -> Result<WorkerReport> {
        let first_signal = async {
            signals::shutdown_signal().await;
            tracing::info!("shutting down: no new jobs; running jobs get SONIQ_SHUTDOWN_TIMEOUT");
            tokio::spawn(async {
                signals::shutdown_signal().await;
                tracing::warn!("second signal: exiting at once");
                std::process::exit(130);
            });
        };
        self.run_worker_until(options, first_signal).await
    }

    fn registration(
        options: &WorkerOptions,
        concurrency: usize,
        task_names: &[String],
    ) -> WorkerRegistration {
        WorkerRegistration {
            host: crate::settings::hostname(),
            pid: std::process::id() as i32,
            queues: options.queues.clone(),
            concurrency: i32::try_from(concurrency).unwrap_or(i32::MAX),
            version: env!("CARGO_PKG_VERSION").into(),
            task_names: task_names.to_vec(),
        }
    }

    fn claimer_config(
        &self,
        options: &WorkerOptions,
        concurrency: usize,
        task_names: Vec<String>,
    ) -> ClaimerConfig {
        ClaimerConfig {
            queues: options.queues.clone(),
            task_names,
            task_limits: self.handlers.registry.task_limits(),
            concurrency,
            run_once: options.run_once,
            max_jobs: options.max_jobs,
            poll_interval: self.settings.poll_interval(),
            error_retry_delay: self.settings.error_retry_delay(),
        }
    }

    /// Start the heartbeat, maintenance and (on a database) the listener.
    fn start_background(
        &self,
        store: &Arc<dyn Store>,
        heartbeat: Heartbeat,
        wake: &Arc<Notify>,
    ) -> Background {
        let (stop, stopped) = watch::channel(false);
        let outage = Arc::clone(&heartbeat.outage);
        let heartbeat = Arc::new(heartbeat);
        let mut tasks = vec![
            every(
                self.settings.heartbeat_interval(),
                stopped.clone(),
                move |_| {
                    let heartbeat = Arc::clone(&heartbeat);
                    async move { heartbeat.beat().await }
                },
            ),
            every(self.settings.cleanup_interval(), stopped.clone(), {
                let (store, timeout) = (Arc::clone(store), self.settings.heartbeat_timeout());
                let budget = self.settings.cleanup_interval();
                move |stop| {
                    let (store, outage) = (Arc::clone(&store), Arc::clone(&outage));
                    async move { maintenance::round(&*store, timeout, &outage, budget, stop).await }
                }
            }),
        ];
        if !self.settings.statement_cache() && *self.settings.listen() == crate::Listen::Database {
            tracing::warn!(
                "SONIQ_STATEMENT_CACHE=off and no SONIQ_LISTEN_URL: behind a pooler in \
                 transaction mode LISTEN hears nothing; set SONIQ_LISTEN_URL to the server \
                 itself (or to off, to poll)"
            );
        }
        if let Some(listen) = &self.listen {
            tasks.push(tokio::spawn(listener::run(
                listen.clone(),
                Arc::clone(wake),
                self.settings.error_retry_delay(),
                stopped,
            )));
        }
        Background { stop, tasks }
    }

    /// Run a worker until `shutdown` resolves: embed one in an application with its own
    /// lifecycle. Shutdown stops claiming, gives running jobs `SONIQ_SHUTDOWN_TIMEOUT`,
    /// then hands the rest back without using up an attempt, and deregisters.
    pub async fn run_worker_until(
        &self,
        options: WorkerOptions,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport> {
        let concurrency = match options.concurrency {
            Some(n) => crate::settings::check_concurrency("WorkerOptions::concurrency", n)?,
            None => self.settings.concurrency(),
        };
        let task_names = self.handlers.registry.names();
        if task_names.is_empty() {
            return Err(Error::Invalid(
                "a worker needs at least one registered handler".into(),
            ));
        }
        let monitor = options.monitor.clone().unwrap_or_default();
        let registration = Self::registration(&options, concurrency, &task_names);
        let worker_id = match self.register(&registration).await {
            Ok(id) => Arc::new(WorkerId(Mutex::new(id))),
            Err(e) => {
                monitor.set(WorkerState::Stopped);
                return Err(e);
            }
        };
        let store = self.store();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            worker_id = %worker_id.get(),
            queues = %options.queues.as_ref().map_or("all".into(), |q| q.join(",")),
            concurrency,
            tasks = %task_names.join(","),
            database = %crate::connection::mask_url(self.settings.database_url()),
            "worker started"
        );
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let attempts = Arc::new(Attempts::new(self.handlers.clone(), reports_tx));
        monitor.started(concurrency, &attempts);
        let wake = Arc::new(Notify::new());
        let completer = tokio::spawn(completer::run(
            Arc::clone(&store),
            Arc::downgrade(&attempts),
            reports_rx,
            self.settings.error_retry_delay(),
            Arc::clone(&wake),
        ));
        let background = self.start_background(
            &store,
            Heartbeat {
                store: Arc::clone(&store),
                attempts: Arc::clone(&attempts),
                worker_id: Arc::clone(&worker_id),
                registration,
                outage: Arc::default(),
            },
            &wake,
        );
        let claimer = Claimer {
            store: Arc::clone(&store),
            attempts: Arc::clone(&attempts),
            worker_id: Arc::clone(&worker_id),
            wake,
            slots: Arc::new(Semaphore::new(concurrency)),
            held: Arc::new(Semaphore::new(concurrency * claimer::HELD_PER_SLOT)),
            config: self.claimer_config(&options, concurrency, task_names),
            started: Default::default(),
            monitor: monitor.clone(),
            metrics: self.handlers.metrics.clone(),
        };
        let (claimed, shut_down) = claim_until(&claimer, shutdown).await;
        // Also when the claimer ended by itself (run once, max jobs): what runs now finishes.
        monitor.set(WorkerState::Draining);
        // Jobs claimed ahead that have not started go back at once on shutdown (they run
        // when the worker ends by itself: they count among the jobs it was to run).
        let not_started = if shut_down {
            attempts.stop_waiting()
        } else {
            0
        };
        claimer.started.fetch_sub(not_started, Ordering::Relaxed);
        let handed_back = not_started + self.finish_running(&claimer, &attempts).await;
        background.stop().await;
        // The completer ends once every sender is gone: the attempts' here, the job tasks' as
        // they end.
        drop(attempts);
        drop(claimer.attempts);
        let _ = completer.await;
        let deregistered = store.worker_deregister(worker_id.get()).await;
        monitor.set(WorkerState::Stopped);
        if let Err(e) = deregistered {
            if !completer::lease_lost(&e) {
                return Err(e);
            }
        }
        claimed?;
        let jobs_run = claimer.started.load(Ordering::Relaxed);
        tracing::info!(jobs_run, handed_back, "worker stopped and deregistered");
        Ok(WorkerReport {
            jobs_run,
            handed_back,
        })
    }

    /// Publish the tasks' options and register the worker; returns its id.
    async fn register(&self, registration: &WorkerRegistration) -> Result<Uuid> {
        self.publish_tasks().await?;
        self.store().worker_register(registration).await
    }

    /// Give running jobs `SONIQ_SHUTDOWN_TIMEOUT` to finish, then hand the rest back without
    /// using up an attempt; returns how many were handed back.
    async fn finish_running(&self, claimer: &Claimer, attempts: &Attempts) -> usize {
        let concurrency = claimer.config.concurrency;
        let all_slots = u32::try_from(concurrency).unwrap_or(u32::MAX);
        if claimer.slots.available_permits() < concurrency {
            tracing::info!(
                "stopped claiming; waiting up to {} s for the running jobs",
                self.settings.shutdown_timeout().as_secs_f64()
            );
        }
        let finished = tokio::time::timeout(
            self.settings.shutdown_timeout(),
            claimer.slots.acquire_many(all_slots),
        )
        .await;
        if finished.is_ok() {
            return 0;
        }
        attempts.stop(&attempts.running_ids(), attempts::handed_back_at_shutdown)
    }
}

/// Run the claimer until it ends (`run_once`, `max_jobs`) or `shutdown` resolves; then tell it
/// to stop and let it end at its next wait. Says whether it was shut down.
async fn claim_until(
    claimer: &Claimer,
    shutdown: impl Future<Output = ()> + Send,
) -> (Result<()>, bool) {
    let (stop, stopped) = watch::channel(false);
    let claiming = claimer.run(stopped);
    tokio::pin!(claiming);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut claiming => (result, false),
        _ = &mut shutdown => {
            // Not ready from the moment shutdown begins, while the last claim comes back.
            claimer.monitor.set(WorkerState::Draining);
            let _ = stop.send(true);
            (claiming.await, true)
        }
    }
}
