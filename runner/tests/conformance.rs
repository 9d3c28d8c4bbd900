//! The store's conformance suite: every check runs against the in-memory store and (with the
//! `e2e` feature, on the test cluster) against the extension, so `Soniq::in_memory()` behaves
//! as the database does wherever a test of a handler can see it; and once more through
//! PgBouncer in transaction mode (SONIQ_TEST_PGBOUNCER_URL) with the statement cache off.

use serde_json::{json, Value};
use soniq_runner::store::{
    ClaimRequest, ClaimedJob, Completion, FailReason, FailedAttempt, JobOptions, Lease,
    MemoryStore, NewJob, NewJobs, Store, WorkerRegistration,
};
use soniq_runner::{JobFilter, JobStatus};
use std::time::{Duration, SystemTime};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// One check's store and the names that keep it apart from other checks on a shared database.
struct Case {
    store: Box<dyn Store>,
    task: String,
    queue: String,
}

impl Case {
    fn job(&self, args: Value) -> NewJob {
        NewJob {
            task_name: self.task.clone(),
            args,
            options: JobOptions {
                queue: Some(self.queue.clone()),
                ..JobOptions::default()
            },
            scheduled_at: None,
            dedup_key: None,
            producer_id: "conformance".into(),
            depends_on: Vec::new(),
            on_dependency_failure: None,
            awaitable: false,
            batch_id: None,
            traceparent: None,
        }
    }

    async fn enqueue(&self, args: Value) -> Uuid {
        self.store.job_enqueue(&self.job(args)).await.unwrap()
    }

    async fn worker(&self) -> Uuid {
        self.store
            .worker_register(&WorkerRegistration {
                host: Some("conformance".into()),
                pid: 1,
                queues: Some(vec![self.queue.clone()]),
                concurrency: 10,
                version: "test".into(),
                task_names: vec![self.task.clone()],
            })
            .await
            .unwrap()
    }

    async fn claim(&self, worker_id: Uuid, count: usize) -> Vec<ClaimedJob> {
        self.store
            .job_claim(&ClaimRequest {
                worker_id,
                queues: Some(vec![self.queue.clone()]),
                count,
                task_names: Some(vec![self.task.clone()]),
            })
            .await
            .unwrap()
    }

    async fn status(&self, id: Uuid) -> (JobStatus, i32, Option<String>) {
        let job = self
            .store
            .job_get(id)
            .await
            .unwrap()
            .expect("the job exists");
        (job.status, job.attempts, job.last_error)
    }

    async fn total(&self) -> i64 {
        self.store
            .queue_stats(Some(&self.queue))
            .await
            .unwrap()
            .total
    }
}

fn lease(job: &ClaimedJob) -> Lease {
    Lease {
        job_id: job.context.job_id,
        attempt: job.context.attempt,
    }
}

fn failure<'a>(job: &ClaimedJob, error: &'a str, reason: Option<FailReason>) -> FailedAttempt<'a> {
    FailedAttempt {
        lease: lease(job),
        error,
        retry_in: None,
        reason,
    }
}

fn code(result: soniq_runner::Result<impl std::fmt::Debug>) -> SqlState {
    result
        .unwrap_err()
        .sqlstate()
        .expect("a refusal with a SQLSTATE")
}

async fn options_come_from_the_call_then_the_task_then_the_defaults(case: Case) {
    let plain = case.enqueue(json!({})).await;
    let job = case.store.job_get(plain).await.unwrap().unwrap();
    assert_eq!((job.priority, job.max_attempts), (100, 4), "the defaults");
    assert_eq!(job.queue, case.queue);

    case.store
        .task_register(
            &case.task,
            &json!({"queue": case.queue, "priority": 7, "retries": 1}),
        )
        .await
        .unwrap();
    let mut from_task = case.job(json!({"n": 1}));
    from_task.options.queue = None;
    let id = case.store.job_enqueue(&from_task).await.unwrap();
    let job = case.store.job_get(id).await.unwrap().unwrap();
    assert_eq!(
        (job.queue.as_str(), job.priority, job.max_attempts),
        (case.queue.as_str(), 7, 2)
    );

    let mut from_call = case.job(json!({"n": 2}));
    from_call.options.priority = Some(3);
    let id = case.store.job_enqueue(&from_call).await.unwrap();
    assert_eq!(case.store.job_get(id).await.unwrap().unwrap().priority, 3);
}

async fn options_out_of_range_are_refused_and_nothing_is_written(case: Case) {
    let bad = [
        JobOptions {
            priority: Some(0),
            ..JobOptions::default()
        },
        JobOptions {
            priority: Some(1001),
            ..JobOptions::default()
        },
        JobOptions {
            retries: Some(-1),
            ..JobOptions::default()
        },
        JobOptions {
            timeout: Some(Duration::from_secs(31 * 24 * 3600)),
            ..JobOptions::default()
        },
    ];
    for options in bad {
        let mut job = case.job(json!({}));
        job.options = JobOptions {
            queue: Some(case.queue.clone()),
            ..options.clone()
        };
        assert_eq!(
            code(case.store.job_enqueue(&job).await),
            SqlState::INVALID_PARAMETER_VALUE,
            "{options:?}"
        );
        let many = NewJobs {
            task_name: case.task.clone(),
            args: vec![json!({}), json!({"n": 2})],
            options: job.options.clone(),
            producer_id: "conformance".into(),
            traceparent: None,
        };
        assert_eq!(
            code(case.store.job_enqueue_many(&many).await),
            SqlState::INVALID_PARAMETER_VALUE
        );
    }
    let mut empty_key = case.job(json!({}));
    empty_key.dedup_key = Some(String::new());
    assert_eq!(
        code(case.store.job_enqueue(&empty_key).await),
        SqlState::INVALID_PARAMETER_VALUE
    );
    assert_eq!(case.total().await, 0, "nothing written");
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn a_jobs_trace_context_reaches_its_claim_and_a_malformed_one_is_refused(case: Case) {
    let mut traced = case.job(json!({"n": 1}));
    traced.traceparent = Some(TRACEPARENT.into());
    let one = case.store.job_enqueue(&traced).await.unwrap();
    let unsampled = TRACEPARENT.replace("-01", "-00");
    let many = NewJobs {
        task_name: case.task.clone(),
        args: vec![json!({"n": 2}), json!({"n": 3})],
        options: traced.options.clone(),
        producer_id: "conformance".into(),
        traceparent: Some(unsampled.clone()),
    };
    let batch = case.store.job_enqueue_many(&many).await.unwrap();
    let plain = case.enqueue(json!({"n": 4})).await;
    let worker = case.worker().await;
    let claimed: Vec<(Uuid, Option<String>)> = case
        .claim(worker, 10)
        .await
        .into_iter()
        .map(|job| (job.context.job_id, job.traceparent))
        .collect();
    assert_eq!(
        claimed,
        vec![
            (one, Some(TRACEPARENT.to_string())),
            (batch[0], Some(unsampled.clone())),
            (batch[1], Some(unsampled)),
            (plain, None),
        ]
    );

    for bad in [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let mut job = case.job(json!({}));
        job.traceparent = Some(bad.into());
        assert_eq!(
            code(case.store.job_enqueue(&job).await),
            SqlState::INVALID_PARAMETER_VALUE,
            "{bad:?}"
        );
        let many = NewJobs {
            traceparent: Some(bad.into()),
            ..many.clone()
        };
        assert_eq!(
            code(case.store.job_enqueue_many(&many).await),
            SqlState::INVALID_PARAMETER_VALUE
        );
    }
    assert_eq!(case.total().await, 4, "nothing written by the refusals");
}

async fn a_unique_or_dedup_job_returns_the_queued_duplicate(case: Case) {
    let mut unique = case.job(json!({"to": "a"}));
    unique.options.unique = Some(true);
    let first = case.store.job_enqueue(&unique).await.unwrap();
    assert_eq!(case.store.job_enqueue(&unique).await.unwrap(), first);
    let mut other_args = unique.clone();
    other_args.args = json!({"to": "b"});
    assert_ne!(case.store.job_enqueue(&other_args).await.unwrap(), first);

    let mut keyed = case.job(json!({"n": 1}));
    keyed.dedup_key = Some(format!("{}-key", case.queue));
    let key_first = case.store.job_enqueue(&keyed).await.unwrap();
    keyed.args = json!({"n": 2});
    assert_eq!(
        case.store.job_enqueue(&keyed).await.unwrap(),
        key_first,
        "same key, other args"
    );
    assert_eq!(case.total().await, 3);

    let many = NewJobs {
        task_name: case.task.clone(),
        args: vec![json!({"m": 1}), json!({"m": 2}), json!({"m": 3})],
        options: JobOptions {
            queue: Some(case.queue.clone()),
            ..JobOptions::default()
        },
        producer_id: "conformance".into(),
        traceparent: None,
    };
    let ids = case.store.job_enqueue_many(&many).await.unwrap();
    assert_eq!(ids.len(), 3);
    let listed = case
        .store
        .job_list(&JobFilter {
            queue: Some(case.queue.clone()),
            limit: 3,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let newest: Vec<Uuid> = listed.iter().map(|j| j.id).collect();
    assert_eq!(
        newest,
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "newest first, in input order"
    );
}

async fn a_batch_of_jobs_is_written_whole_or_not_at_all(case: Case) {
    let mut urgent = case.job(json!({"n": 1}));
    urgent.options.priority = Some(5);
    let mut keyed = case.job(json!({"n": 2}));
    keyed.dedup_key = Some(format!("{}-key", case.queue));
    let later = NewJob {
        scheduled_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        ..case.job(json!({"n": 3}))
    };
    let batch = [urgent, keyed.clone(), later, keyed];
    let ids = case.store.job_enqueue_batch(&batch).await.unwrap();
    assert_eq!(ids.len(), 4, "one id per job, in input order");
    assert_eq!(
        ids[1], ids[3],
        "a dedup key repeated in the batch is one job"
    );
    let first = case.store.job_get(ids[0]).await.unwrap().unwrap();
    assert_eq!((first.priority, first.args["n"].as_i64()), (5, Some(1)));
    assert!(case
        .store
        .job_get(ids[2])
        .await
        .unwrap()
        .unwrap()
        .scheduled_at
        .is_some());
    assert_eq!(case.total().await, 3);

    let mut bad = case.job(json!({"n": 9}));
    bad.options.retries = Some(-1);
    let refused = case
        .store
        .job_enqueue_batch(&[case.job(json!({"n": 8})), bad])
        .await
        .unwrap_err();
    assert_eq!(refused.sqlstate(), Some(SqlState::INVALID_PARAMETER_VALUE));
    assert!(
        refused.to_string().starts_with("jobs[1]: retries"),
        "{refused}"
    );
    assert_eq!(
        case.total().await,
        3,
        "nothing of a refused batch is written"
    );
}

async fn claims_follow_priority_then_age_and_the_filters(case: Case) {
    let mut ids = Vec::new();
    for priority in [5, 1, 3] {
        let mut job = case.job(json!({ "priority": priority }));
        job.options.priority = Some(priority);
        ids.push(case.store.job_enqueue(&job).await.unwrap());
    }
    let mut later = case.job(json!({"later": true}));
    later.scheduled_at = Some(SystemTime::now() + Duration::from_secs(3600));
    case.store.job_enqueue(&later).await.unwrap();
    let mut other_task = case.job(json!({}));
    other_task.task_name = format!("{}.other", case.task);
    case.store.job_enqueue(&other_task).await.unwrap();

    let worker = case.worker().await;
    let claimed = case.claim(worker, 10).await;
    let order: Vec<Uuid> = claimed.iter().map(|j| j.context.job_id).collect();
    assert_eq!(
        order,
        vec![ids[1], ids[2], ids[0]],
        "priority 1, 3, 5; not the future job nor another task's"
    );
    let first = &claimed[0].context;
    assert_eq!(
        (first.attempt, first.max_attempts, first.worker_id),
        (1, 4, worker)
    );
    assert_eq!(
        (first.task_name.as_str(), first.queue.as_str()),
        (case.task.as_str(), case.queue.as_str())
    );
    assert_eq!(first.timeout, Some(Duration::from_secs(300)));
    assert_eq!(claimed[0].args, json!({"priority": 1}));
    assert!(
        case.claim(worker, 10).await.is_empty(),
        "claimed jobs are not claimed again"
    );

    let unknown = Uuid::from_u128(42);
    let request = ClaimRequest {
        worker_id: unknown,
        queues: None,
        count: 1,
        task_names: None,
    };
    assert_eq!(
        code(case.store.job_claim(&request).await),
        SqlState::NO_DATA_FOUND
    );
    let request = ClaimRequest {
        worker_id: worker,
        queues: None,
        count: 0,
        task_names: None,
    };
    assert_eq!(
        code(case.store.job_claim(&request).await),
        SqlState::INVALID_PARAMETER_VALUE
    );
    case.store.worker_deregister(worker).await.unwrap();
}

async fn completions_are_recorded_only_for_held_leases(case: Case) {
    case.enqueue(json!({"n": 1})).await;
    case.enqueue(json!({"n": 2})).await;
    let worker = case.worker().await;
    let claimed = case.claim(worker, 2).await;
    let stale = Lease {
        attempt: 9,
        ..lease(&claimed[1])
    };
    let sent = json!({"sent": true});
    let completions = [
        Completion {
            lease: lease(&claimed[0]),
            result: Some(&sent),
        },
        Completion {
            lease: stale,
            result: None,
        },
    ];
    assert_eq!(
        case.store
            .job_complete_many(worker, &completions)
            .await
            .unwrap(),
        1
    );
    let done = case
        .store
        .job_get(claimed[0].context.job_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (JobStatus::Done, Some(json!({"sent": true})))
    );
    assert_eq!(
        case.status(claimed[1].context.job_id).await.0,
        JobStatus::Processing
    );
    assert_eq!(
        case.store
            .job_complete_many(worker, &completions[..1])
            .await
            .unwrap(),
        0,
        "a finished job's completion is refused"
    );
    case.store.worker_deregister(worker).await.unwrap();
}

async fn failures_retry_while_attempts_remain_then_die(case: Case) {
    let mut job = case.job(json!({}));
    job.options.retries = Some(1);
    let id = case.store.job_enqueue(&job).await.unwrap();
    let worker = case.worker().await;
    let first = case.claim(worker, 1).await.remove(0);
    assert_eq!(
        case.store
            .job_fail_many(worker, &[failure(&first, "boom 1", None)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        case.status(id).await,
        (JobStatus::Queued, 1, Some("boom 1".into()))
    );
    let second = case.claim(worker, 1).await.remove(0);
    assert_eq!(second.context.attempt, 2, "retried at once");
    case.store
        .job_fail_many(worker, &[failure(&second, "boom 2", None)])
        .await
        .unwrap();
    let dead = case.store.job_get(id).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Dead);
    assert_eq!(
        dead.dead_letter_reason.map(|r| r.as_str()),
        Some("max_retries_exceeded")
    );
    assert_eq!(dead.last_error.as_deref(), Some("boom 2"));

    let given_up = case.enqueue(json!({"give": "up"})).await;
    let claimed = case.claim(worker, 1).await.remove(0);
    let permanent = failure(&claimed, "bad card", Some(FailReason::PermanentFailure));
    case.store
        .job_fail_many(worker, &[permanent])
        .await
        .unwrap();
    let dead = case.store.job_get(given_up).await.unwrap().unwrap();
    assert_eq!(
        (
            dead.status,
            dead.attempts,
            dead.dead_letter_reason.map(|r| r.as_str())
        ),
        (JobStatus::Dead, 1, Some("permanent_failure")),
        "attempts remained"
    );

    let delayed = case.enqueue(json!({"later": true})).await;
    let claimed = case.claim(worker, 1).await.remove(0);
    let mut later = failure(&claimed, "busy", None);
    later.retry_in = Some(Duration::from_secs(3600));
    case.store.job_fail_many(worker, &[later]).await.unwrap();
    assert_eq!(case.status(delayed).await.0, JobStatus::Queued);
    assert!(
        case.claim(worker, 1).await.is_empty(),
        "not due for an hour"
    );
    case.store.worker_deregister(worker).await.unwrap();
}

async fn a_returning_unique_job_yields_to_its_queued_duplicate(case: Case) {
    let mut unique = case.job(json!({"to": "a"}));
    unique.options.unique = Some(true);
    let first = case.store.job_enqueue(&unique).await.unwrap();
    let worker = case.worker().await;
    let claimed = case.claim(worker, 1).await.remove(0);
    let duplicate = case.store.job_enqueue(&unique).await.unwrap();
    assert_ne!(duplicate, first, "the first is not queued any more");
    case.store
        .job_fail_many(worker, &[failure(&claimed, "boom", None)])
        .await
        .unwrap();
    let (status, _, error) = case.status(first).await;
    assert_eq!(status, JobStatus::Cancelled);
    assert_eq!(
        error.as_deref(),
        Some(format!("boom; not run again: job {duplicate}, queued with the same task and args, runs instead").as_str())
    );
    assert_eq!(case.status(duplicate).await.0, JobStatus::Queued);
    case.store.worker_deregister(worker).await.unwrap();
}

async fn a_snooze_gives_the_attempt_back_and_an_abort_cancels(case: Case) {
    let snoozed = case.enqueue(json!({"n": 1})).await;
    let aborted = case.enqueue(json!({"n": 2})).await;
    let worker = case.worker().await;
    let claimed = case.claim(worker, 2).await;
    let hour = Duration::from_secs(3600);
    case.store
        .job_snooze(worker, lease(&claimed[0]), hour, Some("later"))
        .await
        .unwrap();
    assert_eq!(
        case.status(snoozed).await,
        (JobStatus::Queued, 0, Some("snoozed: later".into()))
    );
    assert_eq!(
        code(
            case.store
                .job_snooze(worker, lease(&claimed[0]), hour, None)
                .await
        ),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "the lease is gone"
    );
    let month = Duration::from_secs(31 * 24 * 3600);
    assert_eq!(
        code(
            case.store
                .job_snooze(worker, lease(&claimed[1]), month, None)
                .await
        ),
        SqlState::INVALID_PARAMETER_VALUE
    );
    case.store
        .job_abort(worker, lease(&claimed[1]), "stop")
        .await
        .unwrap();
    assert_eq!(
        case.status(aborted).await,
        (JobStatus::Cancelled, 1, Some("stop".into()))
    );
    assert_eq!(
        code(
            case.store
                .job_abort(worker, lease(&claimed[1]), "again")
                .await
        ),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    );
    let unknown = Lease {
        job_id: Uuid::from_u128(7 << 100),
        attempt: 1,
    };
    assert_eq!(
        code(case.store.job_abort(worker, unknown, "x").await),
        SqlState::NO_DATA_FOUND
    );
    assert!(
        case.claim(worker, 1).await.is_empty(),
        "the snoozed job waits an hour"
    );
    case.store.worker_deregister(worker).await.unwrap();
}

async fn a_cancelled_running_job_is_named_by_its_workers_heartbeat(case: Case) {
    let queued = case.enqueue(json!({"n": 1})).await;
    assert!(case.store.job_cancel(queued).await.unwrap());
    assert_eq!(case.status(queued).await.0, JobStatus::Cancelled);
    assert!(
        !case.store.job_cancel(queued).await.unwrap(),
        "already finished"
    );

    let running = case.enqueue(json!({"n": 2})).await;
    let worker = case.worker().await;
    let claimed = case.claim(worker, 1).await;
    assert_eq!(claimed[0].context.job_id, running);
    assert!(case
        .store
        .worker_heartbeat(worker, &[running])
        .await
        .unwrap()
        .is_empty());
    assert!(case.store.job_cancel(running).await.unwrap());
    assert_eq!(
        case.store
            .worker_heartbeat(worker, &[running])
            .await
            .unwrap(),
        vec![running]
    );
    case.store
        .job_abort(worker, lease(&claimed[0]), "cancelled on request")
        .await
        .unwrap();
    assert_eq!(case.status(running).await.0, JobStatus::Cancelled);

    assert_eq!(
        code(case.store.job_cancel(Uuid::from_u128(9 << 100)).await),
        SqlState::NO_DATA_FOUND
    );
    case.store.worker_deregister(worker).await.unwrap();
    assert_eq!(
        code(case.store.worker_heartbeat(worker, &[]).await),
        SqlState::NO_DATA_FOUND,
        "a deregistered worker is unknown"
    );
}

async fn deregistering_hands_back_unfinished_jobs(case: Case) {
    let mut last_try = case.job(json!({"last": true}));
    last_try.options.retries = Some(0);
    last_try.options.priority = Some(1);
    let last_id = case.store.job_enqueue(&last_try).await.unwrap();
    let id = case.enqueue(json!({})).await;
    let worker = case.worker().await;
    assert_eq!(case.claim(worker, 2).await.len(), 2);
    case.store.worker_deregister(worker).await.unwrap();
    let why = format!("worker {worker} deregistered");
    assert_eq!(
        case.status(id).await,
        (
            JobStatus::Queued,
            1,
            Some(format!("{why} during attempt 1"))
        )
    );
    let dead = case.store.job_get(last_id).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Dead);
    assert_eq!(
        dead.last_error,
        Some(format!("{why} during its last attempt; attempts exhausted"))
    );
    assert_eq!(
        code(case.store.worker_deregister(worker).await),
        SqlState::NO_DATA_FOUND
    );
}

async fn lists_counts_deletes_and_paused_queues(case: Case) {
    let first = case.enqueue(json!({"n": 1})).await;
    let second = case.enqueue(json!({"n": 2})).await;
    let worker = case.worker().await;
    assert!(case.store.queue_pause(&case.queue).await.unwrap());
    assert!(
        !case.store.queue_pause(&case.queue).await.unwrap(),
        "paused already"
    );
    assert!(
        case.claim(worker, 2).await.is_empty(),
        "a paused queue is not claimed from"
    );
    assert!(case.store.queue_resume(&case.queue).await.unwrap());
    assert!(!case.store.queue_resume(&case.queue).await.unwrap());
    // A queue without flow control holds nothing back, whatever it has queued.
    let queues = [case.queue.clone()];
    let tasks = [case.task.clone()];
    assert!(!case
        .store
        .queue_held_back(Some(&queues), &tasks)
        .await
        .unwrap());
    let claimed = case.claim(worker, 1).await;
    assert_eq!(claimed[0].context.job_id, first);

    let stats = case.store.queue_stats(Some(&case.queue)).await.unwrap();
    assert_eq!((stats.total, stats.queued, stats.processing), (2, 1, 1));
    let queued = JobFilter {
        queue: Some(case.queue.clone()),
        status: Some(JobStatus::Queued),
        ..JobFilter::default()
    };
    let listed: Vec<Uuid> = case
        .store
        .job_list(&queued)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![second]);
    let dead = JobFilter {
        status: Some(JobStatus::Dead),
        ..queued.clone()
    };
    assert_eq!(
        code(case.store.job_list(&dead).await),
        SqlState::INVALID_PARAMETER_VALUE
    );

    case.store.job_delete(second).await.unwrap();
    assert!(case.store.job_get(second).await.unwrap().is_none());
    assert_eq!(
        code(case.store.job_delete(second).await),
        SqlState::NO_DATA_FOUND
    );
    case.store.worker_deregister(worker).await.unwrap();
}

/// One test per check and store.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::Case {
                        store: Box::new(super::MemoryStore::new()),
                        task: "conformance.task".into(),
                        queue: "conformance".into(),
                    })
                    .await
                }
            )*
        }

        #[cfg(feature = "e2e")]
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::on_the_extension("SONIQ_TEST_DATABASE_URL", true)).await
                }
            )*
        }

        #[cfg(feature = "e2e")]
        mod through_pgbouncer {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::on_the_extension("SONIQ_TEST_PGBOUNCER_URL", false)).await
                }
            )*
        }
    };
}

conformance!(
    options_come_from_the_call_then_the_task_then_the_defaults,
    options_out_of_range_are_refused_and_nothing_is_written,
    a_unique_or_dedup_job_returns_the_queued_duplicate,
    a_jobs_trace_context_reaches_its_claim_and_a_malformed_one_is_refused,
    a_batch_of_jobs_is_written_whole_or_not_at_all,
    claims_follow_priority_then_age_and_the_filters,
    completions_are_recorded_only_for_held_leases,
    failures_retry_while_attempts_remain_then_die,
    a_returning_unique_job_yields_to_its_queued_duplicate,
    a_snooze_gives_the_attempt_back_and_an_abort_cancels,
    a_cancelled_running_job_is_named_by_its_workers_heartbeat,
    deregistering_hands_back_unfinished_jobs,
    lists_counts_deletes_and_paused_queues,
);

/// The store on the test database (the URL in `url_var`), with a task and queue of the
/// check's own.
#[cfg(feature = "e2e")]
fn on_the_extension(url_var: &str, statement_cache: bool) -> Case {
    static CHECKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let url = std::env::var(url_var)
        .unwrap_or_else(|_| panic!("{url_var} names the test database; run scripts/test"));
    let pool = soniq_runner::ConnectionConfig::parse(&url)
        .unwrap()
        .pool(8)
        .unwrap();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let check = CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("conformance_{nanos}_{check}");
    Case {
        store: Box::new(soniq_runner::store::PgStore::new(pool, statement_cache)),
        task: format!("{name}.task"),
        queue: name,
    }
}

/// The PgBouncer the suite runs through hands consecutive transactions to different server
/// connections, so the checks above would fail if the store left a statement prepared on one:
/// a named statement, prepared and then executed, is missing there, and the error says what
/// to set.
#[cfg(feature = "e2e")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_a_named_statement_is_lost_and_the_error_says_what_to_set() {
    let url = std::env::var("SONIQ_TEST_PGBOUNCER_URL").expect(
        "SONIQ_TEST_PGBOUNCER_URL names the test database through PgBouncer; run scripts/test",
    );
    let config = soniq_runner::ConnectionConfig::parse(&url).unwrap();
    // Three transactions at once: PgBouncer opens (at least) three server connections.
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(config.connect().await.unwrap());
    }
    let sleeps = busy
        .iter()
        .map(|client| client.batch_execute("SELECT pg_sleep(0.2)"));
    for slept in futures_util::future::join_all(sleeps).await {
        slept.unwrap();
    }
    let client = config.connect().await.unwrap();
    let statement = client.prepare("SELECT 1").await.unwrap();
    let mut lost = None;
    for _ in 0..6 {
        if let Err(e) = client.query(&statement, &[]).await {
            lost = Some(soniq_runner::Error::from(e));
            break;
        }
    }
    let lost =
        lost.expect("every execution found the statement: PgBouncer kept one server connection");
    assert_eq!(
        lost.sqlstate(),
        Some(SqlState::INVALID_SQL_STATEMENT_NAME),
        "{lost}"
    );
    assert!(
        lost.to_string().contains("set SONIQ_STATEMENT_CACHE=off"),
        "{lost}"
    );
}
