//! Races between a job's outcome and its take-back, and between a returning unique job and
//! its queued duplicate: many workers, counted outcomes. Nothing that completed is buried,
//! nothing is lost, and no take-back fails on a duplicate key.
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use postgres::error::SqlState;
use postgres::Client;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The chaos below presumes every worker in the database dead: these tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn register(client: &mut Client) -> String {
    client
        .query_one("SELECT soniq.register_worker()::text", &[])
        .unwrap()
        .get(0)
}

/// Wait until the backend with `pid` is blocked on a lock.
fn wait_until_blocked(client: &mut Client, pid: i32) {
    common::wait_for(
        "the take-back to wait on the job's lock",
        Duration::from_secs(10),
        || {
            let waiting: bool = client
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .unwrap()
            .get(0);
            waiting.then_some(())
        },
    );
}

/// Where a job ended: its status in soniq.jobs, or 'dead'.
fn fate(client: &mut Client, job: &str) -> (String, Option<String>) {
    let row = client
        .query_one(
            "SELECT status, result::text FROM soniq.job_info WHERE id = $1::text::uuid",
            &[&job],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// A last-attempt job completed in a transaction that commits while a take-back of its
/// worker's jobs waits on it: the completion stands (the take-back used to read the job
/// unlocked, then delete it into the dead letter by id once the completion had committed).
/// `take_back` names the worker as `{worker}`; `silence` first makes the worker look dead.
fn completion_racing(take_back: &str, silence: bool) {
    let _turn = one_at_a_time();
    let mut holder = common::connect();
    let task = common::unique_name("race.last").replace('-', "_");
    let worker = register(&mut holder);
    let job: String = holder
        .query_one("SELECT soniq.enqueue($1, retries => 0)::text", &[&task])
        .unwrap()
        .get(0);
    holder
        .query(
            "SELECT soniq.claim($1::text::uuid, task_names => ARRAY[$2])",
            &[&worker, &task],
        )
        .unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "SELECT soniq.complete($1::text::uuid, $2::text::uuid, 1, '{\"ok\": true}')",
        &[&job, &worker],
    )
    .unwrap();
    if silence {
        // Only now, with the completion holding the job's row: silenced any earlier, the
        // control plane's own rescue round could take the job back before it completed.
        common::connect()
            .execute(
                "UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = $1::text::uuid",
                &[&worker],
            )
            .unwrap();
    }

    let mut taker = common::connect();
    let taker_pid: i32 = taker
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let statement = take_back.replace("{worker}", &worker);
    let taking = thread::spawn(move || -> i32 { taker.query_one(&statement, &[]).unwrap().get(0) });
    wait_until_blocked(&mut common::connect(), taker_pid);
    tx.commit().unwrap();
    let taken = taking.join().unwrap();

    if !silence {
        // (A rescue round may also take back other tests' silent workers.)
        assert_eq!(taken, 0, "{take_back}: took back a job that had completed");
    }
    let (status, result) = fate(&mut holder, &job);
    assert_eq!(
        status, "done",
        "{take_back}: the completed job ended {status}"
    );
    assert_eq!(result.as_deref(), Some("{\"ok\": true}"));
}

#[test]
fn a_completion_committing_during_deregistration_stands() {
    completion_racing("SELECT soniq.deregister_worker('{worker}')", false);
}

#[test]
fn a_completion_committing_during_the_rescue_round_stands() {
    completion_racing("SELECT soniq.rescue_jobs('5 minutes')", true);
}

/// Refusals a worker expects when its lease was taken back; anything else fails the test.
fn lease_lost(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE || *c == SqlState::NO_DATA_FOUND
    )
}

const JOBS: usize = 2_000;
const WORKERS: usize = 6;

/// One worker of the chaos below: claims and completes until `stop`, re-registering when it
/// was presumed dead. Returns the jobs whose completion committed.
fn complete_until(stop: Arc<AtomicBool>, task: String) -> Vec<String> {
    let mut client = common::connect();
    let mut worker = register(&mut client);
    let mut completed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let rows = match client.query(
            "SELECT id::text FROM soniq.claim($1::text::uuid, task_names => ARRAY[$2], batch_size => 8)",
            &[&worker, &task],
        ) {
            Ok(rows) => rows,
            Err(e) if lease_lost(&e) => {
                worker = register(&mut client); // presumed dead: a new worker
                continue;
            }
            Err(e) => panic!("claim: {e}"),
        };
        for row in rows {
            let job: String = row.get(0);
            match client.execute(
                "SELECT soniq.complete($1::text::uuid, $2::text::uuid, 1)",
                &[&job, &worker],
            ) {
                Ok(_) => completed.push(job),
                Err(e) if lease_lost(&e) => {}
                Err(e) => panic!("complete: {e}"),
            }
        }
    }
    completed
}

/// Workers complete last-attempt jobs while another session keeps presuming every worker
/// dead and taking its jobs back. Every job ends once, done or dead; every completion that
/// committed is done, none in the dead letter.
#[test]
fn completions_racing_take_backs_never_bury_a_completed_job() {
    let _turn = one_at_a_time();
    let task = common::unique_name("race.chaos").replace('-', "_");
    let mut client = common::connect();
    let ids: Vec<String> = client
        .query(
            "SELECT id::text FROM soniq.enqueue_many($1, array_fill('{}'::jsonb, ARRAY[$2::int]), retries => 0) id",
            &[&task, &(JOBS as i32)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (stop, task) = (stop.clone(), task.clone());
            thread::spawn(move || complete_until(stop, task))
        })
        .collect();
    let rescuer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut client = common::connect();
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                // Every worker silent for 20 ms is presumed dead.
                client
                    .query_one("SELECT soniq.rescue_jobs('20 milliseconds')", &[])
                    .unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    common::wait_for("every job to end", Duration::from_secs(120), || {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM soniq.jobs WHERE task_name = $1 AND status IN ('queued', 'processing')",
                &[&task],
            )
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let completed: HashSet<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let rounds = rescuer.join().unwrap();

    let dead: HashSet<String> = client
        .query(
            "SELECT id::text FROM soniq.dead_letter_jobs WHERE task_name = $1",
            &[&task],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let done: HashSet<String> = client
        .query(
            "SELECT id::text FROM soniq.jobs WHERE task_name = $1 AND status = 'done'",
            &[&task],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let buried_after_completing: Vec<_> = completed.intersection(&dead).collect();
    assert!(
        buried_after_completing.is_empty(),
        "{} completed jobs were dead-lettered",
        buried_after_completing.len()
    );
    assert_eq!(
        done, completed,
        "done jobs are exactly the completions that committed"
    );
    assert_eq!(done.len() + dead.len(), JOBS, "every job ends once");
    assert!(ids.iter().all(|id| done.contains(id) || dead.contains(id)));
    assert!(
        rounds > 0 && !dead.is_empty(),
        "the chaos took nothing back ({rounds} rounds)"
    );
}

/// Workers fail unique jobs (retries left) and snooze them, a producer keeps enqueueing the
/// same args, and rescue rounds keep taking jobs back: going back to the queue never meets a
/// duplicate key, at most one job per args is ever queued, and every job ends or is queued.
#[test]
fn unique_jobs_returning_while_duplicates_arrive_never_collide() {
    let _turn = one_at_a_time();
    const KEYS: i32 = 50;
    let task = common::unique_name("race.unique").replace('-', "_");
    let stop = Arc::new(AtomicBool::new(false));
    let enqueue = "SELECT soniq.enqueue($1, jsonb_build_object('n', $2::int), unique_job => true, retries => 1000)";
    let producer = {
        let (stop, task) = (stop.clone(), task.clone());
        thread::spawn(move || {
            let mut client = common::connect();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                client.execute(enqueue, &[&task, &(n % KEYS)]).unwrap();
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (stop, task) = (stop.clone(), task.clone());
            thread::spawn(move || {
                let mut client = common::connect();
                let mut worker = register(&mut client);
                let mut returned = 0;
                while !stop.load(Ordering::Relaxed) {
                    let rows = match client.query(
                        "SELECT id::text, attempt FROM soniq.claim($1::text::uuid, task_names => ARRAY[$2], batch_size => 4)",
                        &[&worker, &task],
                    ) {
                        Ok(rows) => rows,
                        Err(e) if lease_lost(&e) => {
                            worker = register(&mut client);
                            continue;
                        }
                        Err(e) => panic!("claim: {e}"),
                    };
                    for row in rows {
                        let (job, attempt): (String, i32) = (row.get(0), row.get(1));
                        let outcome = if i % 2 == 0 {
                            "SELECT soniq.fail($1::text::uuid, $2::text::uuid, $3, 'again', retry_in => '0')"
                        } else {
                            "SELECT soniq.snooze($1::text::uuid, $2::text::uuid, $3, '0', 'later')"
                        };
                        match client.execute(outcome, &[&job, &worker, &attempt]) {
                            Ok(_) => returned += 1,
                            Err(e) if lease_lost(&e) => {}
                            Err(e) => panic!("a job going back to the queue failed: {e}"),
                        }
                    }
                }
                returned
            })
        })
        .collect();
    let rescuer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut client = common::connect();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = client.query_one("SELECT soniq.rescue_jobs('20 milliseconds')", &[])
                {
                    panic!("the rescue round failed: {e}");
                }
            }
        })
    };
    thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let enqueued = producer.join().unwrap();
    let returned: i32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    rescuer.join().unwrap();

    let mut client = common::connect();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'queued'),
                    count(DISTINCT args) FILTER (WHERE status = 'queued'),
                    count(*) FILTER (WHERE status = 'cancelled' AND last_error LIKE '%runs instead'),
                    count(*)
               FROM soniq.jobs WHERE task_name = $1",
            &[&task],
        )
        .unwrap();
    let (queued, distinct_queued, merged, total): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        queued, distinct_queued,
        "two jobs with the same args are queued"
    );
    assert!(queued <= i64::from(KEYS));
    assert!(
        enqueued > 0 && returned > 0,
        "nothing ran ({enqueued} enqueues, {returned} returns)"
    );
    assert!(
        merged > 0,
        "no returning job met a queued duplicate: the race was not exercised"
    );
    let dead: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.dead_letter_jobs WHERE task_name = $1",
            &[&task],
        )
        .unwrap()
        .get(0);
    assert_eq!(dead, 0, "a unique job was dead-lettered");
    let processing: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE task_name = $1 AND status = 'processing'",
            &[&task],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        queued + merged + processing,
        total,
        "every job is queued, merged into its duplicate, or still held"
    );
}
