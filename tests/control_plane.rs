//! The control plane, end to end: the background worker of a cluster started with
//! `shared_preload_libraries = 'soniq'` and short timeouts (scripts/test:
//! tick 2 s, heartbeat timeout 2 s, lease grace 1 s), watched from committing clients.
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use postgres::Client;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn fire_count(client: &mut Client, schedule: &str) -> i64 {
    client
        .query_one(
            "SELECT fire_count FROM soniq.schedules WHERE name = $1",
            &[&schedule],
        )
        .unwrap()
        .get(0)
}

fn jobs_of(client: &mut Client, schedule: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE producer_id = 'schedule:' || $1",
            &[&schedule],
        )
        .unwrap()
        .get(0)
}

fn add_every_second(client: &mut Client, name: &str) {
    client
        .execute(
            "SELECT soniq.schedule_add($1, 'cp.tick', every => '1 second')",
            &[&name],
        )
        .unwrap();
}

#[test]
fn an_every_second_schedule_fires_once_per_second() {
    let mut client = common::connect();
    let name = common::unique_name("every-second");
    add_every_second(&mut client, &name);
    let added = Instant::now();
    sleep(Duration::from_millis(3500).saturating_sub(added.elapsed()));

    // Slots at +1 s, +2 s and +3 s are due by +3.5 s: three jobs, one per slot.
    assert_eq!(jobs_of(&mut client, &name), 3);
    let slots: i64 = client
        .query_one(
            "SELECT count(DISTINCT scheduled_at) FROM soniq.jobs WHERE producer_id = 'schedule:' || $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(slots, 3, "each job has its own slot");
    let spread: String = client
        .query_one(
            "SELECT (max(scheduled_at) - min(scheduled_at))::text FROM soniq.jobs
              WHERE producer_id = 'schedule:' || $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(spread, "00:00:02", "slots are exactly one second apart");
    assert_eq!(fire_count(&mut client, &name), 3);
}

#[test]
fn a_new_schedule_fires_without_waiting_for_a_tick() {
    let mut client = common::connect();
    let name = common::unique_name("woken");
    add_every_second(&mut client, &name);
    // The first slot is one second after the add; the worker was woken by the add's commit,
    // so it does not sleep out its 2 s tick first.
    let late: f64 = common::wait_for("the first fire", Duration::from_secs(10), || {
        client
            .query_opt(
                "SELECT extract(epoch FROM j.created_at - s.created_at)::float8 FROM soniq.jobs j
                   JOIN soniq.schedules s ON j.producer_id = 'schedule:' || s.name
                  WHERE s.name = $1 ORDER BY j.created_at LIMIT 1",
                &[&name],
            )
            .unwrap()
            .map(|row| row.get(0))
    });
    assert!(late < 1.5, "first job {late:.2} s after the add");
}

#[test]
fn pause_stops_a_schedule_and_resume_restarts_it() {
    let mut client = common::connect();
    let name = common::unique_name("pausable");
    add_every_second(&mut client, &name);
    common::wait_for("a first fire", Duration::from_secs(10), || {
        (fire_count(&mut client, &name) >= 1).then_some(())
    });
    client
        .execute("SELECT soniq.schedule_pause($1)", &[&name])
        .unwrap();
    let paused_at = jobs_of(&mut client, &name);
    sleep(Duration::from_millis(2500));
    assert_eq!(
        jobs_of(&mut client, &name),
        paused_at,
        "a paused schedule fired"
    );

    client
        .execute("SELECT soniq.schedule_resume($1)", &[&name])
        .unwrap();
    common::wait_for("a fire after resume", Duration::from_secs(10), || {
        (jobs_of(&mut client, &name) > paused_at).then_some(())
    });
    // Resuming starts from the next slot: no burst for the slots missed while paused.
    assert!(jobs_of(&mut client, &name) <= paused_at + 2);
}

#[test]
fn a_missed_schedule_fires_once_for_all_missed_slots() {
    let mut client = common::connect();
    let name = common::unique_name("missed");
    client
        .execute(
            "SELECT soniq.schedule_add($1, 'cp.minutely', every => '1 minute')",
            &[&name],
        )
        .unwrap();
    // As if the database had been down for an hour: sixty slots were missed.
    client
        .execute(
            "UPDATE soniq.schedules SET next_fire_at = now() - interval '1 hour' WHERE name = $1",
            &[&name],
        )
        .unwrap();
    common::wait_for("the catch-up fire", Duration::from_secs(15), || {
        (fire_count(&mut client, &name) >= 1).then_some(())
    });
    sleep(Duration::from_millis(2500));
    assert_eq!(
        jobs_of(&mut client, &name),
        1,
        "one job for sixty missed slots"
    );
    let on_grid_in_future: bool = client
        .query_one(
            "SELECT next_fire_at > now() AND extract(epoch FROM next_fire_at - last_fire_at)::int % 60 = 0
               FROM soniq.schedules WHERE name = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert!(on_grid_in_future);
}

#[test]
fn a_cron_schedule_gets_the_right_next_fire_time() {
    let mut client = common::connect();
    let name = common::unique_name("cron");
    let row = client
        .query_one(
            "SELECT s.next_fire_at = soniq.cron_next('0 9 * * *', now(), 'America/New_York'),
                    to_char(s.next_fire_at AT TIME ZONE 'America/New_York', 'HH24:MI'),
                    s.next_fire_at > now() AND s.next_fire_at <= now() + interval '25 hours'
               FROM soniq.schedule_add($1, 'cp.report', cron => '0 9 * * *', time_zone => 'America/New_York') s",
            &[&name],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "09:00");
    assert!(row.get::<_, bool>(2));
}

#[test]
fn a_poisoned_schedule_does_not_stop_a_healthy_one() {
    let mut client = common::connect();
    let healthy = common::unique_name("healthy");
    let poisoned = common::unique_name("poisoned");
    let scheduler_failures = |client: &mut postgres::Client| -> i64 {
        client
            .query_one(
                "SELECT failures FROM soniq.health WHERE subsystem = 'scheduler'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let failures_before = scheduler_failures(&mut client);
    add_every_second(&mut client, &poisoned);
    // Break the row behind the API's back: its args are no longer a JSON object.
    client
        .execute(
            "UPDATE soniq.schedules SET args = '[1, 2]' WHERE name = $1",
            &[&poisoned],
        )
        .unwrap();
    add_every_second(&mut client, &healthy);
    common::wait_for(
        "the healthy schedule to fire twice",
        Duration::from_secs(10),
        || (fire_count(&mut client, &healthy) >= 2).then_some(()),
    );
    let row = client
        .query_one(
            "SELECT last_error, fire_count FROM soniq.schedules WHERE name = $1",
            &[&poisoned],
        )
        .unwrap();
    let error: Option<String> = row.get(0);
    assert!(
        error
            .as_deref()
            .unwrap_or("")
            .contains("args must be a JSON object"),
        "{error:?}"
    );
    assert_eq!(row.get::<_, i64>(1), 0);
    assert_eq!(jobs_of(&mut client, &poisoned), 0);
    // Each failed fire counts in soniq.health (its last_error shows it until a clean round,
    // which other tests' schedules make at any moment here: pg_test/sql/schedules.sql checks it).
    assert!(scheduler_failures(&mut client) > failures_before);
    client
        .execute("SELECT soniq.schedule_remove($1)", &[&poisoned])
        .unwrap();
}

#[test]
fn a_silent_workers_jobs_come_back() {
    let mut client = common::connect();
    let queue = common::unique_name("silent");
    let worker: String = client
        .query_one("SELECT soniq.register_worker()::text", &[])
        .unwrap()
        .get(0);
    client
        .execute("SELECT soniq.enqueue('cp.job', queue => $1)", &[&queue])
        .unwrap();
    let claimed = client
        .query(
            "SELECT id FROM soniq.claim($1::text::uuid, ARRAY[$2])",
            &[&worker, &queue],
        )
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // No heartbeat: after the 2 s timeout the control plane takes the job back.
    common::wait_for("the job back in the queue", Duration::from_secs(15), || {
        client
            .query_opt(
                "SELECT 1 FROM soniq.jobs WHERE queue = $1 AND status = 'queued' AND attempts = 1",
                &[&queue],
            )
            .unwrap()
    });
    let worker_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.workers WHERE id = $1::text::uuid",
            &[&worker],
        )
        .unwrap()
        .get(0);
    assert_eq!(worker_rows, 0, "the silent worker is removed");
}

#[test]
fn an_attempt_that_outlives_its_timeout_is_taken_back() {
    let mut client = common::connect();
    let queue = common::unique_name("expired");
    let worker: String = client
        .query_one("SELECT soniq.register_worker()::text", &[])
        .unwrap()
        .get(0);
    client
        .execute(
            "SELECT soniq.enqueue('cp.slow', queue => $1, timeout => '1 second', retries => 1)",
            &[&queue],
        )
        .unwrap();
    let row = client
        .query_one(
            "SELECT id::text, attempt FROM soniq.claim($1::text::uuid, ARRAY[$2])",
            &[&worker, &queue],
        )
        .unwrap();
    let (job, attempt): (String, i32) = (row.get(0), row.get(1));
    // The worker stays alive (it heartbeats) but its attempt hangs past timeout + grace.
    let error: String = common::wait_for(
        "the expired lease to be taken back",
        Duration::from_secs(15),
        || {
            client
                .query_one("SELECT soniq.heartbeat($1::text::uuid)", &[&worker])
                .ok();
            client
            .query_opt(
                "SELECT last_error FROM soniq.jobs WHERE id = $1::text::uuid AND status = 'queued'",
                &[&job],
            )
            .unwrap()
            .map(|row| row.get(0))
        },
    );
    assert!(error.contains("outlived its timeout"), "{error}");
    let late_completion = client.execute(
        "SELECT soniq.complete($1::text::uuid, $2::text::uuid, $3)",
        &[&job, &worker, &attempt],
    );
    let code = late_completion.unwrap_err().code().cloned();
    assert_eq!(
        code,
        Some(postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
}

/// Sets `soniq.prune_batch_size` for the cluster while it lives, back to its default after.
struct PruneBatchSize;

impl PruneBatchSize {
    fn set(client: &mut postgres::Client, size: i32) -> Self {
        // Two statements: ALTER SYSTEM refuses to run in a transaction block.
        client
            .batch_execute(&format!("ALTER SYSTEM SET soniq.prune_batch_size = {size}"))
            .unwrap();
        client.batch_execute("SELECT pg_reload_conf()").unwrap();
        PruneBatchSize
    }
}

impl Drop for PruneBatchSize {
    fn drop(&mut self) {
        let mut client = common::connect();
        let _ = client.batch_execute("ALTER SYSTEM RESET soniq.prune_batch_size");
        let _ = client.batch_execute("SELECT pg_reload_conf()");
    }
}

/// A backlog of finished jobs is pruned while it lasts, not a fixed number of batches a round
/// (ten batches a round could not keep up with a queue finishing more than ten batches' worth
/// a tick). Counted, not timed: the prune batches each control-plane round ran (soniq.health's
/// `runs` of prune, per `runs` of the control plane) while the backlog lasted. With batches of
/// 100 a round prunes for a whole tick (2 s here): far more than ten batches on any machine
/// this runs on, where ten a round was the old cap.
#[test]
fn a_backlog_of_finished_jobs_is_pruned_while_it_lasts() {
    let mut client = common::connect();
    let _batch = PruneBatchSize::set(&mut client, 100);
    let runs = |client: &mut postgres::Client| -> (i64, i64) {
        let row = client
            .query_one(
                "SELECT (SELECT runs FROM soniq.health WHERE subsystem = 'control_plane'),
                        (SELECT runs FROM soniq.health WHERE subsystem = 'prune')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    // A whole round after the reload: the control plane prunes in batches of 100.
    let (reloaded, _) = runs(&mut client);
    common::wait_for(
        "two rounds after the reload",
        Duration::from_secs(30),
        || (runs(&mut client).0 >= reloaded + 2).then_some(()),
    );
    let task = common::unique_name("prune.backlog").replace('-', "_");
    // Test shortcut: finished rows written directly, past their result TTL.
    client
        .execute(
            "INSERT INTO soniq.jobs (task_name, status, worker_id, finished_at, expires_at)
             SELECT $1, 'done', soniq.uuid_v7(), now() - interval '2 hours', now() - interval '1 hour'
               FROM generate_series(1, 20000)",
            &[&task],
        )
        .unwrap();
    // The most prune batches of one round, from samples of both counters.
    let mut most_in_a_round = 0;
    let (mut round, mut batches_at_round_start) = runs(&mut client);
    common::wait_for("the backlog to be pruned", Duration::from_secs(120), || {
        let (now_round, batches) = runs(&mut client);
        if now_round != round {
            round = now_round;
            batches_at_round_start = batches;
        }
        most_in_a_round = most_in_a_round.max(batches - batches_at_round_start);
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM soniq.jobs WHERE task_name = $1",
                &[&task],
            )
            .unwrap()
            .get(0);
        std::thread::sleep(Duration::from_millis(20));
        (left == 0).then_some(())
    });
    assert!(
        most_in_a_round > 10,
        "at most {most_in_a_round} prune batches in a round while a backlog lasted: ten was the old cap"
    );
}

#[test]
fn finished_jobs_are_pruned_after_their_result_ttl() {
    let mut client = common::connect();
    let task = format!("cp.{}", common::unique_name("ttl").replace('-', "_"));
    client
        .execute(
            "SELECT soniq.register_task($1, '{\"result_ttl\": 1}')",
            &[&task],
        )
        .unwrap();
    let worker: String = client
        .query_one("SELECT soniq.register_worker()::text", &[])
        .unwrap()
        .get(0);
    let job: String = client
        .query_one("SELECT soniq.enqueue($1)::text", &[&task])
        .unwrap()
        .get(0);
    client
        .query(
            "SELECT soniq.complete(id, $1::text::uuid, attempt, '{\"ok\": true}')
               FROM soniq.claim($1::text::uuid, task_names => ARRAY[$2])",
            &[&worker, &task],
        )
        .unwrap();
    let done: String = client
        .query_one(
            "SELECT status FROM soniq.jobs WHERE id = $1::text::uuid",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert_eq!(done, "done");
    common::wait_for("the done job to be pruned", Duration::from_secs(15), || {
        client
            .query_opt(
                "SELECT 1 FROM soniq.jobs WHERE id = $1::text::uuid",
                &[&job],
            )
            .unwrap()
            .is_none()
            .then_some(())
    });
}

/// A job for a task no live worker serves (a typo) is seen by the control plane within a
/// tick: listed in soniq.unserved and counted by queue_overview, and the health view's lag
/// shows how long it has waited. (Burying after the grace: pg_test/sql/unserved.sql.)
#[test]
fn a_job_nobody_serves_is_surfaced_within_a_tick() {
    let mut client = common::connect();
    let queue = common::unique_name("unserved").replace('-', "_");
    let worker: String = client
        .query_one(
            "SELECT soniq.register_worker(queues => ARRAY[$1], task_names => '{billing.charge}')::text",
            &[&queue],
        )
        .unwrap()
        .get(0);
    client
        .execute(
            "SELECT soniq.enqueue('billing.chrage', queue => $1)",
            &[&queue],
        )
        .unwrap();
    common::wait_for(
        "the control plane to list the typo",
        Duration::from_secs(10),
        || {
            let listed: i64 = client
            .query_one(
                "SELECT count(*) FROM soniq.unserved WHERE task_name = 'billing.chrage' AND queue = $1",
                &[&queue],
            )
            .unwrap()
            .get(0);
            (listed == 1).then_some(())
        },
    );
    let row = client
        .query_one(
            "SELECT (SELECT unserved FROM soniq.queue_overview WHERE queue = $1),
                    (SELECT lag >= interval '0' FROM soniq.health WHERE subsystem = 'unserved')",
            &[&queue],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert!(row.get::<_, bool>(1));
    client
        .execute("DELETE FROM soniq.jobs WHERE queue = $1", &[&queue])
        .unwrap();
    client
        .execute(
            "DELETE FROM soniq.workers WHERE id = $1::text::uuid",
            &[&worker],
        )
        .unwrap();
}
