//! What a running worker says of itself, read at any moment (a readiness probe, a metrics
//! scrape): its state and how its job slots are used.

use super::attempts::Attempts;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Not registered yet.
    Starting,
    /// Registered, and its last claim reached the database.
    Ready,
    /// Its last claim failed: it retries, and claims nothing meanwhile.
    Disconnected,
    /// Shutting down: claims nothing more, finishes or hands back what it holds.
    Draining,
    /// Deregistered (or never started: registration failed).
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Disconnected => "disconnected",
            WorkerState::Draining => "draining",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A worker's state and slots at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub state: WorkerState,
    /// Job slots (the worker's concurrency); 0 before it starts.
    pub concurrency: usize,
    /// Handlers running, each in a job slot.
    pub running: usize,
    /// Jobs claimed ahead, waiting for a job slot.
    pub claimed_ahead: usize,
    /// Finished attempts whose outcomes are not recorded yet.
    pub outcome_backlog: usize,
}

/// A window onto one worker: pass a clone in [`crate::WorkerOptions::monitor`] and read it
/// from anywhere (`soniq worker --metrics-listen` serves it as `/readyz` and gauges).
#[derive(Clone, Default)]
pub struct WorkerMonitor(Arc<Mutex<Watched>>);

#[derive(Default)]
struct Watched {
    state: Option<WorkerState>,
    concurrency: usize,
    attempts: Weak<Attempts>,
}

impl fmt::Debug for WorkerMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WorkerMonitor")
            .field(&self.snapshot())
            .finish()
    }
}

impl WorkerMonitor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn state(&self) -> WorkerState {
        self.0
            .lock()
            .unwrap()
            .state
            .unwrap_or(WorkerState::Starting)
    }

    pub fn snapshot(&self) -> WorkerSnapshot {
        let watched = self.0.lock().unwrap();
        let (running, claimed_ahead, outcome_backlog) = match watched.attempts.upgrade() {
            Some(attempts) => attempts.counts(),
            None => (0, 0, 0),
        };
        WorkerSnapshot {
            state: watched.state.unwrap_or(WorkerState::Starting),
            concurrency: watched.concurrency,
            running,
            claimed_ahead,
            outcome_backlog,
        }
    }

    pub(crate) fn started(&self, concurrency: usize, attempts: &Arc<Attempts>) {
        let mut watched = self.0.lock().unwrap();
        watched.concurrency = concurrency;
        watched.attempts = Arc::downgrade(attempts);
        watched.state = Some(WorkerState::Ready);
    }

    /// A claim reached the database (or did not). Draining and stopped are final.
    pub(crate) fn claimed(&self, reached: bool) {
        let mut watched = self.0.lock().unwrap();
        if matches!(
            watched.state,
            Some(WorkerState::Ready | WorkerState::Disconnected)
        ) {
            watched.state = Some(if reached {
                WorkerState::Ready
            } else {
                WorkerState::Disconnected
            });
        }
    }

    pub(crate) fn set(&self, state: WorkerState) {
        self.0.lock().unwrap().state = Some(state);
    }
}
