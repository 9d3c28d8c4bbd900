//! The completer: drains attempts' outcomes and records them in the store, many completions
//! (and failures) per statement, retrying through outages. The grouping is pure and tested
//! here; the recording goes through [`Store`].

use super::attempts::Attempts;
use super::claimer::Held;
use crate::error::{Error, Result};
use crate::execute::ReportKind;
use crate::store::{Completion, FailedAttempt, Lease, Store};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Outcomes recorded per round trip at most.
const MAX_REPORT_BATCH: usize = 500;
/// How many times the completer yields, while jobs are still running, to gather their
/// outcomes into the batch it records.
const REPORT_YIELDS: usize = 4;
/// How long outcomes are retried through a database outage.
const RECORDING_PATIENCE: Duration = Duration::from_secs(120);

/// An attempt's outcome, on its way to the store. It carries the attempt's held slot, freed
/// once the outcome is recorded: what a worker may claim (and `run_once`'s "all done") counts
/// the attempts whose outcome is not recorded.
pub(crate) struct Report {
    pub lease: Lease,
    pub worker_id: Uuid,
    pub kind: ReportKind,
    pub _held: Option<Held>,
}

impl Report {
    pub fn new(lease: Lease, worker_id: Uuid, kind: ReportKind) -> Self {
        Report {
            lease,
            worker_id,
            kind,
            _held: None,
        }
    }
}

/// Whether an error says the outcome's lease is gone (taken back, or the job deleted).
pub(crate) fn lease_lost(e: &Error) -> bool {
    matches!(
        e.sqlstate(),
        Some(code) if code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE || code == SqlState::NO_DATA_FOUND
    )
}

/// Whether an error's SQLSTATE is a refusal that sending again cannot fix — bad data, a
/// constraint, a permission, a limit (classes 22, 23, 42, 54) — rather than an outage.
fn permanent_refusal(code: Option<SqlState>) -> bool {
    code.is_some_and(|code| matches!(code.code().get(..2), Some("22" | "23" | "42" | "54")))
}

/// How the store took one statement of outcomes.
enum Sent {
    /// Recorded; an outcome whose lease was taken back is refused, logged, and its job runs again.
    Recorded,
    /// Refused as a whole, for a reason sending it again cannot fix.
    Refused(Error),
}

/// Outcomes one statement records share this: a worker id and a kind.
fn statement_key(report: &Report) -> (Uuid, u8) {
    let kind = match report.kind {
        ReportKind::Done(_) => 0,
        ReportKind::Fail { .. } => 1,
        ReportKind::Snooze { .. } => 2,
        ReportKind::Abort(_) => 3,
    };
    (report.worker_id, kind)
}

/// How many outcomes at the head of `batch` (sorted by `statement_key`) one statement
/// records: the completions, or the failures, of one worker id; one snooze or abort.
fn group_len(batch: &[Report]) -> usize {
    let head = &batch[0];
    if !matches!(head.kind, ReportKind::Done(_) | ReportKind::Fail { .. }) {
        return 1;
    }
    batch
        .iter()
        .take_while(|r| statement_key(r) == statement_key(head))
        .count()
}

/// Record a batch of outcomes, a statement per group (`complete_many`, `fail_many`,
/// `snooze`, `abort`). Recorded outcomes leave `batch` (freeing their held slots), so a retry
/// after an outage sends only what is left. A group the store refuses for its content is not
/// retried: its outcomes are recorded one by one, so one bad outcome does not hold back the
/// others.
pub(crate) async fn record_batch(store: &dyn Store, batch: &mut Vec<Report>) -> Result<()> {
    batch.sort_by_key(statement_key);
    while !batch.is_empty() {
        let n = group_len(batch);
        if n > 1 {
            let group: Vec<&Report> = batch[..n].iter().collect();
            match send(store, &group).await? {
                Sent::Recorded => {
                    batch.drain(..n);
                    continue;
                }
                Sent::Refused(refusal) => tracing::warn!(
                    outcomes = n,
                    "the database refused a statement of outcomes ({refusal}); recording them one by one"
                ),
            }
        }
        for _ in 0..n {
            record_alone(store, &batch[0]).await?;
            batch.remove(0);
        }
    }
    Ok(())
}

/// Record one outcome in a statement of its own. An outcome the store refuses becomes a
/// failed attempt with the refusal's message; a refused failure is logged and left to the
/// lease's expiry (the job runs again).
async fn record_alone(store: &dyn Store, report: &Report) -> Result<()> {
    let Sent::Refused(refusal) = send(store, &[report]).await? else {
        return Ok(());
    };
    if matches!(report.kind, ReportKind::Fail { .. }) {
        left_to_lease_expiry(report, &refusal);
        return Ok(());
    }
    let failed = Report::new(
        report.lease,
        report.worker_id,
        ReportKind::failure(format!("the database refused the outcome: {refusal}")),
    );
    if let Sent::Refused(again) = send(store, &[&failed]).await? {
        left_to_lease_expiry(&failed, &again);
    }
    Ok(())
}

fn left_to_lease_expiry(failure: &Report, refusal: &Error) {
    tracing::error!(
        job_id = %failure.lease.job_id,
        attempt = failure.lease.attempt,
        "the database refused to record a failed attempt ({refusal}); the job runs again when its lease expires"
    );
}

/// One statement: a group of one worker's completions or failures, or one snooze or abort.
/// `Err` is an outage (or anything else worth sending again).
async fn send(store: &dyn Store, group: &[&Report]) -> Result<Sent> {
    let worker = group[0].worker_id;
    let sent = match &group[0].kind {
        ReportKind::Done(_) => {
            let completions: Vec<Completion> = group
                .iter()
                .map(|r| Completion {
                    lease: r.lease,
                    result: match &r.kind {
                        ReportKind::Done(result) => result.as_ref(),
                        _ => None,
                    },
                })
                .collect();
            let recorded = store.job_complete_many(worker, &completions).await;
            recorded.map(|n| group.len() - n)
        }
        ReportKind::Fail { .. } => {
            let failures: Vec<FailedAttempt> = group
                .iter()
                .filter_map(|r| match &r.kind {
                    ReportKind::Fail {
                        error,
                        retry_in,
                        reason,
                    } => Some(FailedAttempt {
                        lease: r.lease,
                        error,
                        retry_in: *retry_in,
                        reason: *reason,
                    }),
                    _ => None,
                })
                .collect();
            let recorded = store.job_fail_many(worker, &failures).await;
            recorded.map(|n| group.len() - n)
        }
        ReportKind::Snooze { delay, reason } => store
            .job_snooze(worker, group[0].lease, *delay, reason.as_deref())
            .await
            .map(|()| 0),
        ReportKind::Abort(reason) => store
            .job_abort(worker, group[0].lease, reason)
            .await
            .map(|()| 0),
    };
    let lost = match sent {
        Ok(lost) => lost,
        // A snooze or abort whose lease was taken back raises (the `_many` statements leave
        // such outcomes out instead).
        Err(e) if group.len() == 1 && lease_lost(&e) => 1,
        // A group that raises it for one of its outcomes: recorded one by one, to tell which.
        Err(e) if lease_lost(&e) => return Ok(Sent::Refused(e)),
        Err(e) if permanent_refusal(e.sqlstate()) => return Ok(Sent::Refused(e)),
        Err(e) => return Err(e),
    };
    if lost > 0 {
        tracing::warn!(
            refused = lost,
            "outcomes refused: their leases are gone (taken back: those jobs run again; or recorded by a try whose answer was lost)"
        );
    }
    Ok(Sent::Recorded)
}

/// The completer service: drains outcomes, records them in batches, retries through
/// outages. `attempts` is weak: the completer must not keep the channel's sender alive (it
/// ends once every sender is gone).
pub(crate) async fn run(
    store: Arc<dyn Store>,
    attempts: Weak<Attempts>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    error_retry_delay: Duration,
    claimer: Arc<Notify>,
) {
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        take_ready(&mut reports, &mut batch);
        // Jobs still running may finish in a moment: let them (yielding to the scheduler a
        // few times) so one statement, one commit, records many outcomes.
        for _ in 0..REPORT_YIELDS {
            let others_running = attempts.upgrade().is_some_and(|a| a.any_running());
            if !others_running || batch.len() >= MAX_REPORT_BATCH {
                break;
            }
            tokio::task::yield_now().await;
            take_ready(&mut reports, &mut batch);
        }
        // Retried through an outage (a database restart): a lost outcome would leave the job
        // processing until its lease expires. After RECORDING_PATIENCE the lease expiry is
        // the fallback: the job runs again (at-least-once, never lost).
        let ids: Vec<Uuid> = batch.iter().map(|r| r.lease.job_id).collect();
        let give_up_at = Instant::now() + RECORDING_PATIENCE;
        let mut try_number = 1;
        while let Err(e) = record_batch(&*store, &mut batch).await {
            if Instant::now() >= give_up_at {
                tracing::error!(
                    jobs = batch.len(),
                    "gave up recording outcomes ({e}); the jobs will run again"
                );
                break;
            }
            tracing::warn!(
                try_number,
                jobs = batch.len(),
                "could not record outcomes, retrying: {e}"
            );
            try_number += 1;
            tokio::time::sleep(error_retry_delay).await;
        }
        if let Some(attempts) = attempts.upgrade() {
            for id in &ids {
                attempts.recorded(*id);
            }
        }
        // Recorded outcomes free slots of a queue's limit: a claimer whose last claim a limit
        // cut short looks again now, not at the next notification or poll.
        claimer.notify_one();
        drop(batch); // what is left (given up on) frees its held slots
    }
}

/// Move the outcomes already waiting into `batch`, up to a full batch.
fn take_ready(reports: &mut mpsc::UnboundedReceiver<Report>, batch: &mut Vec<Report>) {
    while batch.len() < MAX_REPORT_BATCH {
        match reports.try_recv() {
            Ok(report) => batch.push(report),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_data_constraints_permissions_and_limits_are_not_outages() {
        for code in [
            SqlState::INVALID_PARAMETER_VALUE,
            SqlState::UNIQUE_VIOLATION,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::UNDEFINED_FUNCTION,
            SqlState::PROGRAM_LIMIT_EXCEEDED,
        ] {
            assert!(permanent_refusal(Some(code.clone())), "{}", code.code());
        }
        for code in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CONNECTION_FAILURE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        ] {
            assert!(!permanent_refusal(Some(code.clone())), "{}", code.code());
        }
        assert!(
            !permanent_refusal(None),
            "no SQLSTATE: the connection failed"
        );
    }

    #[test]
    fn one_statement_records_one_workers_completions_or_failures_or_one_other_outcome() {
        let report = |worker: u128, kind: ReportKind| {
            Report::new(
                Lease {
                    job_id: Uuid::nil(),
                    attempt: 1,
                },
                Uuid::from_u128(worker),
                kind,
            )
        };
        let snooze = || ReportKind::Snooze {
            delay: Duration::ZERO,
            reason: None,
        };
        let mut batch = vec![
            report(2, ReportKind::Done(None)),
            report(1, ReportKind::failure("x")),
            report(1, snooze()),
            report(1, ReportKind::Done(None)),
            report(1, snooze()),
            report(1, ReportKind::Done(None)),
        ];
        batch.sort_by_key(statement_key);
        let mut groups = Vec::new();
        while !batch.is_empty() {
            let n = group_len(&batch);
            groups.push(n);
            batch.drain(..n);
        }
        // Worker 1: two completions, one failure, each snooze alone; worker 2: one completion.
        assert_eq!(groups, vec![2, 1, 1, 1, 1]);
    }

    #[tokio::test]
    async fn outcomes_whose_leases_are_gone_are_left_out_and_the_rest_recorded() {
        use crate::store::{ClaimRequest, MemoryStore, NewJob, WorkerRegistration};
        let store = MemoryStore::new();
        let worker = store
            .worker_register(&WorkerRegistration {
                host: None,
                pid: 1,
                queues: None,
                concurrency: 4,
                version: "test".into(),
                task_names: vec!["t".into()],
            })
            .await
            .unwrap();
        for n in 0..3 {
            store
                .job_enqueue(&NewJob {
                    task_name: "t".into(),
                    args: serde_json::json!({ "n": n }),
                    options: Default::default(),
                    scheduled_at: None,
                    dedup_key: None,
                    producer_id: "test".into(),
                    depends_on: Vec::new(),
                    on_dependency_failure: None,
                    awaitable: false,
                    batch_id: None,
                    traceparent: None,
                })
                .await
                .unwrap();
        }
        let claimed = store
            .job_claim(&ClaimRequest {
                worker_id: worker,
                queues: None,
                count: 3,
                task_names: None,
            })
            .await
            .unwrap();
        let lease = |i: usize| Lease {
            job_id: claimed[i].context.job_id,
            attempt: claimed[i].context.attempt,
        };
        let stale = Lease {
            attempt: 7,
            ..lease(2)
        };
        let mut batch = vec![
            Report::new(lease(0), worker, ReportKind::Done(None)),
            Report::new(stale, worker, ReportKind::Done(None)),
            Report::new(lease(1), worker, ReportKind::failure("boom")),
            Report::new(stale, worker, ReportKind::Abort("stop".into())),
        ];
        record_batch(&store, &mut batch).await.unwrap();
        assert!(batch.is_empty(), "every outcome is dealt with");
        let stats = store.queue_stats(None).await.unwrap();
        assert_eq!(
            (stats.done, stats.queued, stats.processing),
            (1, 1, 1),
            "one done, one retried, the stale outcomes refused (its job still held)"
        );
    }
}
