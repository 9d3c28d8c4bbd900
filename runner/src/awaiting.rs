//! Waiting for a job's end: `LISTEN soniq_job_finished` (which awaitable jobs notify with their
//! id when they end) on a connection of the wait's own, with a look at the job before and
//! after each wake; polling when there is no listener (`SONIQ_LISTEN=off`, a PgBouncer in
//! transaction mode, the in-memory queue) or it fails.

use crate::error::{Error, Result};
use crate::jobs::JobOutcome;
use crate::{Backend, Soniq};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

/// How often a wait looks at the job: with a listener, in case a notification was missed (a
/// job not enqueued awaitable sends none); without one, to see the end soon enough.
const LOOK_LISTENING: Duration = Duration::from_secs(1);
const LOOK_POLLING: Duration = Duration::from_millis(50);
/// The longest wait (as `soniq.await_job`'s).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

impl Soniq {
    /// Wait up to `timeout` (at most an hour) for a job of this login to end: done, cancelled
    /// or dead. Returns its outcome (the result, or the last error), or `None` if it had not
    /// ended by then; P0002 when the job is unknown (another login's, deleted, or pruned).
    pub async fn wait_for_job(
        &self,
        job_id: Uuid,
        timeout: Duration,
    ) -> Result<Option<JobOutcome>> {
        if timeout > MAX_WAIT {
            return Err(Error::Invalid(format!(
                "a wait may last at most an hour, got {} s",
                timeout.as_secs_f64()
            )));
        }
        let deadline = Instant::now() + timeout;
        let woken = Arc::new(Notify::new());
        // Listening before the first look: an end after it wakes the wait.
        let listening = self.listen_for(job_id, &woken).await;
        let look_every = if listening.is_some() {
            LOOK_LISTENING
        } else {
            LOOK_POLLING
        };
        let store = self.store();
        loop {
            let outcome = store
                .job_result(job_id)
                .await?
                .ok_or_else(|| Error::Refused {
                    code: tokio_postgres::error::SqlState::NO_DATA_FOUND,
                    message: format!(
                        "job {job_id} does not exist (deleted, pruned, or another login's)"
                    ),
                })?;
            if outcome.ended() {
                return Ok(Some(outcome));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = woken.notified() => {}
                _ = tokio::time::sleep_until(deadline.min(now + look_every)) => {}
            }
        }
    }

    /// A connection listening for `job_id`'s end, waking `woken`; `None` when this Soniq has no
    /// listener or it cannot listen (the wait polls).
    async fn listen_for(&self, job_id: Uuid, woken: &Arc<Notify>) -> Option<Listening> {
        let (Backend::Postgres(_), Some(config)) = (&self.backend, &self.listen) else {
            return None;
        };
        let payload = job_id.to_string();
        let wake = Arc::clone(woken);
        let connected = config
            .connect_notifying(move |notification| {
                if notification.payload() == payload {
                    wake.notify_one();
                }
            })
            .await;
        let (client, driver) = match connected {
            Ok(connected) => connected,
            Err(e) => {
                tracing::debug!("wait for job {job_id}: cannot listen ({e}); polling");
                return None;
            }
        };
        let listening = Listening {
            driver: tokio::spawn(async move {
                let _ = driver.await;
            }),
            _client: client,
        };
        match listening
            ._client
            .batch_execute("LISTEN soniq_job_finished")
            .await
        {
            Ok(()) => Some(listening),
            Err(e) => {
                tracing::debug!("wait for job {job_id}: LISTEN failed ({e}); polling");
                None
            }
        }
    }
}

/// A wait's listening connection, closed when the wait ends.
struct Listening {
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
