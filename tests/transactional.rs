//! Enqueue inside the caller's transaction: a rollback leaves no job and no notification;
//! a commit makes both visible at once.
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use std::time::{Duration, Instant};

/// Payloads received on soniq_new_job until `marker` arrives. Notifications are delivered
/// in commit order, so anything committed before the marker's transaction is in the list.
fn payloads_until(listener: &mut Client, marker: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut notifications = listener.notifications();
        let mut batch = notifications.timeout_iter(Duration::from_millis(200));
        while let Some(n) = batch.next().unwrap() {
            assert_eq!(n.channel(), "soniq_new_job");
            if n.payload() == marker {
                return seen;
            }
            seen.push(n.payload().to_string());
        }
    }
    panic!("the marker notification never arrived; saw {seen:?}");
}

fn listener() -> Client {
    let mut client = common::connect();
    client.batch_execute("LISTEN soniq_new_job").unwrap();
    client
}

fn enqueue_marker(client: &mut Client) -> String {
    let marker = common::unique_name("marker");
    client
        .execute("SELECT soniq.enqueue('tx.marker', queue => $1)", &[&marker])
        .unwrap();
    marker
}

enum Outcome {
    Commit,
    RollBack,
}

/// An application's transaction that enqueues a job and then commits or rolls back.
fn enqueue_order_in_transaction(producer: &mut Client, queue: &str, outcome: Outcome) {
    let mut tx = producer.transaction().unwrap();
    tx.execute(
        "SELECT soniq.enqueue('tx.order_created', '{\"order\": 1}', queue => $1)",
        &[&queue],
    )
    .unwrap();
    match outcome {
        Outcome::Commit => tx.commit().unwrap(),
        Outcome::RollBack => tx.rollback().unwrap(),
    }
}

fn jobs_in(client: &mut Client, queue: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1",
            &[&queue],
        )
        .unwrap()
        .get(0)
}

#[test]
fn rolled_back_enqueue_leaves_no_job_and_no_notification() {
    let mut listener = listener();
    let mut producer = common::connect();
    let queue = common::unique_name("rollback");

    enqueue_order_in_transaction(&mut producer, &queue, Outcome::RollBack);

    let marker = enqueue_marker(&mut producer);
    let seen = payloads_until(&mut listener, &marker);
    assert!(
        !seen.contains(&queue),
        "a rolled-back enqueue notified: {seen:?}"
    );
    assert_eq!(
        jobs_in(&mut producer, &queue),
        0,
        "a rolled-back enqueue left a job"
    );

    // The same enqueue committed does notify, so the check above can fail.
    enqueue_order_in_transaction(&mut producer, &queue, Outcome::Commit);
    let marker = enqueue_marker(&mut producer);
    let seen = payloads_until(&mut listener, &marker);
    assert_eq!(seen.iter().filter(|p| **p == queue).count(), 1);
    assert_eq!(jobs_in(&mut producer, &queue), 1);
}

#[test]
fn a_job_is_claimable_only_after_its_transaction_commits() {
    let mut producer = common::connect();
    let mut worker = common::connect();
    let worker_id: String = worker
        .query_one("SELECT soniq.register_worker()::text", &[])
        .unwrap()
        .get(0);
    let queue = common::unique_name("visibility");
    let claim = |worker: &mut Client| {
        worker
            .query(
                "SELECT id FROM soniq.claim($1::text::uuid, ARRAY[$2])",
                &[&worker_id, &queue],
            )
            .unwrap()
            .len()
    };

    let mut tx = producer.transaction().unwrap();
    tx.execute("SELECT soniq.enqueue('tx.visible', queue => $1)", &[&queue])
        .unwrap();
    assert_eq!(claim(&mut worker), 0, "an uncommitted job was claimed");
    tx.commit().unwrap();
    assert_eq!(claim(&mut worker), 1, "the committed job was not claimable");
}

#[test]
fn one_notification_per_queue_and_transaction_and_none_for_later_jobs() {
    let mut listener = listener();
    let mut producer = common::connect();
    let busy = common::unique_name("busy");
    let later = common::unique_name("later");

    let mut tx = producer.transaction().unwrap();
    for n in 0..100 {
        tx.execute(
            "SELECT soniq.enqueue('tx.bulk', jsonb_build_object('n', $2::int), queue => $1)",
            &[&busy, &n],
        )
        .unwrap();
    }
    tx.execute(
        "SELECT soniq.enqueue('tx.later', queue => $1, scheduled_at => now() + interval '1 hour')",
        &[&later],
    )
    .unwrap();
    tx.commit().unwrap();

    let marker = enqueue_marker(&mut producer);
    let seen = payloads_until(&mut listener, &marker);
    assert_eq!(seen.iter().filter(|p| **p == busy).count(), 1, "{seen:?}");
    assert!(!seen.contains(&later), "a job due later woke the workers");
    assert_eq!(jobs_in(&mut producer, &busy), 100);
}

/// The advisory lock that stood for "a wake-up of `queue` is committing" before the throttle
/// moved into shared memory (class "sonq", FNV-1a of the queue name): any role could hold it.
fn hold_wake_lock(client: &mut Client, queue: &str) {
    let key = queue.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    }) as i32;
    client
        .execute("SELECT pg_advisory_lock(x'736f6e71'::int, $1)", &[&key])
        .unwrap();
}

/// With the library preloaded, the throttle lives in shared memory no SQL reaches: a session
/// holding the old advisory lock of a queue no longer silences its wake-ups. (That a wake-up
/// is skipped while another backend commits one is tested inside the server, src/wake.rs.)
#[test]
fn no_role_can_silence_a_queue_by_holding_its_wake_lock() {
    let mut listener = listener();
    let mut producer = common::connect();
    let mut squatter = common::connect();
    let queue = common::unique_name("silenced");

    hold_wake_lock(&mut squatter, &queue);
    enqueue_order_in_transaction(&mut producer, &queue, Outcome::Commit);
    let marker = enqueue_marker(&mut producer);
    let seen = payloads_until(&mut listener, &marker);
    assert!(
        seen.contains(&queue),
        "a held advisory lock suppressed the wake-up: {seen:?}"
    );
    squatter
        .execute("SELECT pg_advisory_unlock_all()", &[])
        .unwrap();
}

#[test]
fn a_long_transaction_does_not_hold_back_other_producers_wake_ups() {
    let mut listener = listener();
    let mut long = common::connect();
    let mut producer = common::connect();
    let queue = common::unique_name("long");

    let mut tx = long.transaction().unwrap();
    tx.execute("SELECT soniq.enqueue('tx.first', queue => $1)", &[&queue])
        .unwrap();
    enqueue_order_in_transaction(&mut producer, &queue, Outcome::Commit);
    let marker = enqueue_marker(&mut producer);
    assert!(payloads_until(&mut listener, &marker).contains(&queue));

    tx.commit().unwrap();
    let marker = enqueue_marker(&mut producer);
    assert!(payloads_until(&mut listener, &marker).contains(&queue));
}

#[test]
fn a_prepared_transaction_may_enqueue() {
    let mut producer = common::connect();
    let queue = common::unique_name("prepared");
    let gid = common::unique_name("gid");
    producer.batch_execute("BEGIN").unwrap();
    producer
        .execute(
            "SELECT soniq.enqueue('tx.two_phase', queue => $1)",
            &[&queue],
        )
        .unwrap();
    producer
        .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
        .unwrap();
    assert_eq!(jobs_in(&mut producer, &queue), 0);
    producer
        .batch_execute(&format!("COMMIT PREPARED '{gid}'"))
        .unwrap();
    assert_eq!(jobs_in(&mut producer, &queue), 1);
}

#[test]
fn a_rolled_back_savepoint_takes_its_wake_up_back() {
    let mut listener = listener();
    let mut producer = common::connect();
    let undone = common::unique_name("undone");
    let kept = common::unique_name("kept");

    let mut tx = producer.transaction().unwrap();
    let mut savepoint = tx.savepoint("before_enqueue").unwrap();
    savepoint
        .execute("SELECT soniq.enqueue('tx.undone', queue => $1)", &[&undone])
        .unwrap();
    savepoint.rollback().unwrap();
    tx.execute("SELECT soniq.enqueue('tx.kept', queue => $1)", &[&kept])
        .unwrap();
    tx.commit().unwrap();

    let marker = enqueue_marker(&mut producer);
    let seen = payloads_until(&mut listener, &marker);
    assert!(seen.contains(&kept), "{seen:?}");
    assert!(
        !seen.contains(&undone),
        "a rolled-back savepoint woke workers: {seen:?}"
    );
    assert_eq!(jobs_in(&mut producer, &undone), 0);
}
