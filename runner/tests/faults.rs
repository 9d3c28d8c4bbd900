//! The fault suite: a committed job runs, and runs again only when it must.
//!
//! Runner processes (examples/fault_worker) drain jobs whose handler writes one row per run to
//! soniq_faults.runs; then they are killed with SIGKILL, PostgreSQL is restarted (fast and
//! immediate shutdown), its control plane is killed, leases are revoked; one runner works
//! through PgBouncer in transaction mode (SONIQ_TEST_PGBOUNCER_URL). After each fault,
//! every job must end done, and a job may have run more than once only if it was running
//! when the fault hit (and then with a new attempt). The figures are printed.
//!
//! A binary of its own: it restarts the test cluster; its scenarios take turns. Needs
//! SONIQ_TEST_DATABASE_URL and SONIQ_TEST_PGDATA (scripts/test sets both) and the built
//! example (`cargo test` builds it). SONIQ_FAULTS_LONG=1 runs the long variants.
#![cfg(feature = "e2e")]

mod common;

use common::{database_url, stop_runner, unique, wait_for, Runner};
use soniq_testkit::pg_program;
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::Client;
use uuid::Uuid;

/// Scenarios restart the cluster or count every worker's jobs: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn long() -> bool {
    std::env::var("SONIQ_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// A client for checks, connecting again (for up to a minute) while the cluster restarts.
async fn connect() -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match soniq_runner::cli::connect(&database_url()).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect: {e}; again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the test cluster did not come back: {e}"),
        }
    }
}

async fn prepare() -> Client {
    let client = connect().await;
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS soniq_faults;
             CREATE TABLE IF NOT EXISTS soniq_faults.runs (
                 job_id uuid NOT NULL, attempt int NOT NULL, pid int NOT NULL,
                 at timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE INDEX IF NOT EXISTS runs_job_idx ON soniq_faults.runs (job_id);
             -- as examples/fault_worker registers it, so jobs enqueued before it starts match
             SELECT soniq.register_task('fault.record',
                 '{\"retries\": 50, \"retry_delay\": [0.2], \"result_ttl\": 86400}');",
        )
        .await
        .unwrap();
    client
}

/// Enqueue `n` jobs of the fault worker's task in `queue`.
async fn enqueue(client: &Client, queue: &str, n: i32) -> usize {
    let row = client
        .query_one(
            "SELECT count(*) FROM soniq.enqueue_many('fault.record',
                 array_fill('{}'::jsonb, ARRAY[$2::int]), queue => $1)",
            &[&queue, &n],
        )
        .await
        .unwrap();
    usize::try_from(row.get::<_, i64>(0)).unwrap()
}

/// A runner process serving `queue` at `concurrency`.
fn start_runner(queue: &str, concurrency: usize) -> Runner {
    start_runner_with(queue, concurrency, &[])
}

/// A runner process serving `queue` at `concurrency`, with more (or other) settings.
fn start_runner_with(queue: &str, concurrency: usize, env: &[(&str, String)]) -> Runner {
    common::start_example("fault_worker", queue, concurrency, env)
}

struct Counts {
    done: i64,
    dead: i64,
    /// Rows in soniq_faults.runs: handler runs that completed their side effect.
    runs: i64,
}

async fn try_counts(client: &Client, queue: &str) -> Result<Counts, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND status = 'done'),
                    (SELECT count(*) FROM soniq.dead_letter_jobs WHERE queue = $1),
                    (SELECT count(*) FROM soniq_faults.runs r JOIN soniq.jobs j ON j.id = r.job_id
                      WHERE j.queue = $1)",
            &[&queue],
        )
        .await?;
    Ok(Counts {
        done: row.get(0),
        dead: row.get(1),
        runs: row.get(2),
    })
}

/// Wait (checking every 100 ms, reconnecting across restarts) until `probe` holds.
async fn wait_until(what: &str, limit: Duration, queue: &str, probe: impl Fn(&Counts) -> bool) {
    let deadline = Instant::now() + limit;
    let mut client = connect().await;
    loop {
        match try_counts(&client, queue).await {
            Ok(now) if probe(&now) => return,
            Ok(now) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} done, {} dead, {} runs",
                now.done,
                now.dead,
                now.runs
            ),
            Err(_) if client.is_closed() => client = connect().await,
            Err(e) => panic!("counting: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until a fifth of the `jobs` in `queue` ran: when a fault strikes.
async fn until_a_fifth_ran(queue: &str, jobs: usize) {
    wait_until(
        "a fifth of the jobs to run",
        Duration::from_secs(120),
        queue,
        |c| c.runs as usize >= jobs / 5,
    )
    .await;
}

async fn until_all_done(queue: &str, jobs: usize, limit: Duration) {
    wait_until("every job done", limit, queue, |c| c.done as usize == jobs).await;
}

/// Which repeated runs a fault accounts for.
enum Fault {
    /// None: every job runs exactly once.
    None,
    /// The runner died: only jobs it held (processing at the kill) may run again.
    Held(HashSet<Uuid>),
    /// The server went away until this moment: a job whose run started before then and whose
    /// outcome did not survive may run again.
    ServerDownUntil(SystemTime),
}

/// The verdict after a fault: nothing lost, nothing dead, and a job ran more than once only
/// as the fault allows, each run on an attempt of its own. Returns (jobs, duplicates).
async fn check_runs(queue: &str, jobs: usize, fault: &Fault) -> (usize, usize) {
    let client = connect().await;
    let c = try_counts(&client, queue).await.unwrap();
    assert_eq!(c.done, jobs as i64, "jobs lost: {} of {jobs} done", c.done);
    assert_eq!(c.dead, 0, "jobs dead-lettered");
    let never_ran: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs j WHERE j.queue = $1
                AND NOT EXISTS (SELECT FROM soniq_faults.runs r WHERE r.job_id = j.id)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(never_ran, 0, "done without running");
    let duplicates = client
        .query(
            "SELECT r.job_id, count(*), count(DISTINCT r.attempt), min(r.at)
               FROM soniq_faults.runs r JOIN soniq.jobs j ON j.id = r.job_id
              WHERE j.queue = $1 GROUP BY r.job_id HAVING count(*) > 1",
            &[&queue],
        )
        .await
        .unwrap();
    for row in &duplicates {
        let id: Uuid = row.get(0);
        let (runs, attempts, first_run): (i64, i64, SystemTime) =
            (row.get(1), row.get(2), row.get(3));
        assert_eq!(runs, attempts, "job {id} ran twice in one attempt");
        match fault {
            Fault::None => panic!("job {id} ran {runs} times without any fault"),
            Fault::Held(held) => assert!(
                held.contains(&id),
                "job {id} ran again but its runner did not hold it"
            ),
            Fault::ServerDownUntil(back) => assert!(
                first_run < *back,
                "job {id} ran again but first ran after the fault"
            ),
        }
    }
    (jobs, duplicates.len())
}

async fn processing(client: &Client, queue: &str) -> HashSet<Uuid> {
    client
        .query(
            "SELECT id FROM soniq.jobs WHERE queue = $1 AND status = 'processing'",
            &[&queue],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn pg_ctl(args: &[&str]) {
    let data = std::env::var("SONIQ_TEST_PGDATA").expect("SONIQ_TEST_PGDATA; run scripts/test");
    let log = format!("{data}/../postgres.log");
    let status = Command::new("sudo")
        .args([
            "-u",
            "postgres",
            &pg_program("pg_ctl"),
            "-D",
            &data,
            "-w",
            "-l",
            &log,
        ])
        .args(args)
        .status()
        .expect("run pg_ctl");
    assert!(status.success(), "pg_ctl {args:?} failed");
}

/// The pid of a running control plane other than `gone` (none: any), once there is one: up
/// to a minute, across restarts. Right after a `kill -9`, pg_stat_activity can still show the
/// dead process until the postmaster notices; waiting for another pid waits for the restart.
async fn control_plane_pid_other_than(gone: Option<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let client = connect().await;
        if let Ok(Some(row)) = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                  WHERE backend_type = 'soniq control plane' AND pid IS DISTINCT FROM $1",
                &[&gone],
            )
            .await
        {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "the control plane did not come back as a new process (the old one: {gone:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drain jobs with one runner (its settings: `env`), SIGKILL it a fifth of the way through,
/// finish with another: only jobs the killed one held may have run twice.
async fn kill_9_mid_drain(label: &str, env: &[(&str, String)]) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = prepare().await;
    let queue = unique("kill9");
    let jobs = enqueue(&client, &queue, if long() { 100_000 } else { 10_000 }).await;

    let first = start_runner_with(&queue, 32, env);
    until_a_fifth_ran(&queue, jobs).await;
    drop(first); // SIGKILL: no shutdown, no hand-back
    let in_flight = processing(&client, &queue).await;

    let second = start_runner_with(&queue, 32, env);
    until_all_done(&queue, jobs, Duration::from_secs(300)).await;
    stop_runner(second);
    let held = in_flight.len();
    let (jobs, duplicates) = check_runs(&queue, jobs, &Fault::Held(in_flight)).await;
    eprintln!(
        "{label}: {jobs} jobs, 0 lost, {held} held by the killed runner, {duplicates} ran twice (all among those)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_runner_with_jobs_in_flight_loses_nothing() {
    kill_9_mid_drain("kill -9", &[]).await;
}

/// Through PgBouncer in transaction mode (SONIQ_TEST_PGBOUNCER_URL, scripts/test starts it):
/// statements unnamed, LISTEN on the direct URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_runner_behind_pgbouncer_loses_nothing() {
    let pgbouncer = std::env::var("SONIQ_TEST_PGBOUNCER_URL").expect(
        "SONIQ_TEST_PGBOUNCER_URL names the test database through PgBouncer; run scripts/test",
    );
    let env = [
        ("SONIQ_DATABASE_URL", pgbouncer),
        ("SONIQ_STATEMENT_CACHE", "off".to_string()),
        ("SONIQ_LISTEN_URL", database_url()),
    ];
    kill_9_mid_drain("kill -9 behind PgBouncer", &env).await;
}

/// Drain jobs with one runner and strike with `fault` a fifth of the way through: the runner
/// reconnects by itself, every job ends done, the control plane comes back as a new process.
async fn fault_mid_drain(label: &str, fault: impl FnOnce(i32) + Send + 'static) {
    let client = prepare().await;
    let queue = unique("fault");
    let jobs = enqueue(&client, &queue, if long() { 50_000 } else { 5_000 }).await;
    drop(client);
    let before = control_plane_pid_other_than(None).await;

    let runner = start_runner(&queue, 16);
    until_a_fifth_ran(&queue, jobs).await;
    tokio::task::spawn_blocking(move || fault(before))
        .await
        .unwrap();
    let after = control_plane_pid_other_than(Some(before)).await;
    let back = SystemTime::now();
    until_all_done(&queue, jobs, Duration::from_secs(300)).await;
    stop_runner(runner);

    // A job whose lease lapsed while the server was down ran again, on a new attempt.
    let (jobs, duplicates) = check_runs(&queue, jobs, &Fault::ServerDownUntil(back)).await;
    eprintln!(
        "{label}: {jobs} jobs, 0 lost, {duplicates} ran twice (first run before the server was back); \
         control plane {before} -> {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_restart_mid_drain_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    fault_mid_drain("restart -m fast", |_| pg_ctl(&["-m", "fast", "restart"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_restart_mid_drain_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    fault_mid_drain("restart -m immediate", |_| {
        pg_ctl(&["-m", "immediate", "restart"])
    })
    .await;
}

/// SIGKILL of a backend makes the postmaster reset the whole cluster (crash recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_killed_mid_drain_comes_back_and_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    fault_mid_drain("control plane kill -9", |pid| {
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_runners_at_concurrency_32_run_each_job_exactly_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = prepare().await;
    let queue = unique("four");
    let jobs = enqueue(&client, &queue, if long() { 200_000 } else { 50_000 }).await;
    let started = Instant::now();
    let runners: Vec<Runner> = (0..4).map(|_| start_runner(&queue, 32)).collect();
    until_all_done(&queue, jobs, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    runners.into_iter().for_each(stop_runner);
    let (jobs, duplicates) = check_runs(&queue, jobs, &Fault::None).await;
    let pids: i64 = client
        .query_one(
            "SELECT count(DISTINCT r.pid) FROM soniq_faults.runs r JOIN soniq.jobs j ON j.id = r.job_id WHERE j.queue = $1",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pids, 4, "all four runners took part");
    eprintln!(
        "4 x 32: {jobs} jobs exactly once ({duplicates} duplicates) in {:.1} s",
        elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_cannot_finish_the_job_and_the_new_attempt_stands() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let client = prepare().await;
    let queue = unique("revoked");
    let job: Uuid = client
        .query_one(
            "SELECT soniq.enqueue('fault.lease', queue => $1, retries => 3)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let register = "SELECT soniq.register_worker(queues => ARRAY[$1])";
    let old: Uuid = client.query_one(register, &[&queue]).await.unwrap().get(0);
    let claim = "SELECT attempt FROM soniq.claim($1, ARRAY[$2])";
    let first: i32 = client
        .query_one(claim, &[&old, &queue])
        .await
        .unwrap()
        .get(0);

    // The old worker falls silent; the control plane (2 s heartbeat timeout here) takes the job back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one("SELECT status FROM soniq.jobs WHERE id = $1", &[&job])
        .await
        .unwrap()
        .get::<_, String>(0)
        != "queued"
    {
        assert!(
            Instant::now() < deadline,
            "the silent worker's job was never taken back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new: Uuid = client.query_one(register, &[&queue]).await.unwrap().get(0);
    let second: i32 = client
        .query_one(claim, &[&new, &queue])
        .await
        .unwrap()
        .get(0);
    assert_eq!((first, second), (1, 2));

    // The old lease is refused while the new attempt runs, and after it finished.
    let refused = |result: Result<u64, tokio_postgres::Error>| {
        let e = result.expect_err("a revoked lease was accepted");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE),
            "{e}"
        );
    };
    refused(
        client
            .execute(
                "SELECT soniq.complete($1, $2, 1, '{\"by\": \"old\"}')",
                &[&job, &old],
            )
            .await,
    );
    client
        .execute(
            "SELECT soniq.complete($1, $2, 2, '{\"by\": \"new\"}')",
            &[&job, &new],
        )
        .await
        .unwrap();
    refused(
        client
            .execute("SELECT soniq.fail($1, $2, 1, 'late')", &[&job, &old])
            .await,
    );
    refused(
        client
            .execute("SELECT soniq.complete($1, $2, 1)", &[&job, &old])
            .await,
    );
    let row = client
        .query_one(
            "SELECT status, result ->> 'by', attempts FROM soniq.jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i32>(2)
        ),
        ("done".to_string(), "new".to_string(), 2)
    );
    client
        .execute("SELECT soniq.deregister_worker($1)", &[&new])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_and_cancelled_jobs_never_run() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut client = prepare().await;
    let queue = unique("never");
    let runner = start_runner(&queue, 4);
    let enqueue_one = "SELECT soniq.enqueue('fault.record', queue => $1)";

    let tx = client.transaction().await.unwrap();
    let rolled_back: Uuid = tx.query_one(enqueue_one, &[&queue]).await.unwrap().get(0);
    tx.rollback().await.unwrap();
    // Cancelled in the transaction that enqueued it: no worker ever sees it queued.
    let tx = client.transaction().await.unwrap();
    let cancelled: Uuid = tx.query_one(enqueue_one, &[&queue]).await.unwrap().get(0);
    tx.execute("SELECT soniq.cancel_job($1)", &[&cancelled])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Due in a second, cancelled now.
    let delayed: Uuid = client
        .query_one(
            "SELECT soniq.enqueue('fault.record', queue => $1, scheduled_at => now() + interval '1 second')",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT soniq.cancel_job($1)", &[&delayed])
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let marker: Uuid = client
        .query_one(enqueue_one, &[&queue])
        .await
        .unwrap()
        .get(0);
    wait_until(
        "the marker job to run",
        Duration::from_secs(30),
        &queue,
        |c| c.done == 1,
    )
    .await;
    stop_runner(runner);

    let ran: Vec<Uuid> = client
        .query(
            "SELECT job_id FROM soniq_faults.runs WHERE job_id = ANY($1)",
            &[&vec![rolled_back, cancelled, delayed, marker]],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ran, vec![marker], "only the marker ran");
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE id = $1",
            &[&rolled_back],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the rolled-back job never existed");
}

async fn status_of(client: &Client, job: Uuid) -> String {
    client
        .query_one("SELECT status FROM soniq.jobs WHERE id = $1", &[&job])
        .await
        .unwrap()
        .get(0)
}

async fn registered(client: &Client, worker: Uuid) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT FROM soniq.workers WHERE id = $1)",
            &[&worker],
        )
        .await
        .unwrap()
        .get(0)
}

/// A worker registered on `queue` holding one job of it, enqueued with `options` (SQL named
/// arguments after the queue); returns (worker, job).
async fn worker_holding_a_job(client: &Client, queue: &str, options: &str) -> (Uuid, Uuid) {
    let worker: Uuid = client
        .query_one(
            "SELECT soniq.register_worker(queues => ARRAY[$1])",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let job: Uuid = client
        .query_one(
            &format!("SELECT soniq.enqueue('fault.other', queue => $1, {options})"),
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let claimed: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.claim($1, ARRAY[$2])",
            &[&worker, &queue],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(claimed, 1);
    (worker, job)
}

/// After an outage longer than the heartbeat timeout, every worker's last heartbeat is older
/// than that. A runner's maintenance right after it must not presume the workers that are
/// back dead: it gives them one heartbeat timeout from the end of the outage it saw itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runners_maintenance_presumes_no_worker_dead_for_one_heartbeat_timeout_after_an_outage() {
    let _turn = ONE_AT_A_TIME.lock().await;
    drop(prepare().await);
    // The control plane idle: only the runner's maintenance rescues.
    let _idle = soniq_testkit::SystemSetting::set("soniq.enabled", "off");
    let queue = unique("outage");
    let runner = start_runner_with(
        &queue,
        1,
        &[
            ("SONIQ_CLEANUP_INTERVAL", "10".into()),
            ("SONIQ_HEARTBEAT_TIMEOUT", "30".into()),
        ],
    );
    let client = connect().await;
    let runner_registered = "SELECT EXISTS (SELECT FROM soniq.workers WHERE $1 = ANY (queues))";
    wait_for("the runner to register", async || {
        client
            .query_one(runner_registered, &[&queue])
            .await
            .unwrap()
            .get(0)
    })
    .await;
    drop(client);

    // The outage: long enough for the runner's heartbeats (every 0.3 s) to fail.
    tokio::task::spawn_blocking(|| {
        pg_ctl(&["-m", "fast", "stop"]);
        std::thread::sleep(Duration::from_millis(1500));
        pg_ctl(&["start"]);
    })
    .await
    .unwrap();
    let client = connect().await;

    // A worker silent for an hour, as if the outage had lasted that long, holding a job; and
    // a live worker's attempt an hour past its timeout, which the next maintenance round
    // takes back (what shows that a round ran).
    let (silent, held) = worker_holding_a_job(&client, &unique("silent"), "retries => 3").await;
    client
        .execute(
            "UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = $1",
            &[&silent],
        )
        .await
        .unwrap();
    let (live, expired) = worker_holding_a_job(
        &client,
        &unique("expired"),
        "retries => 3, timeout => interval '1 second'",
    )
    .await;
    client
        .execute(
            "UPDATE soniq.workers SET last_heartbeat = now() + interval '1 day' WHERE id = $1",
            &[&live],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE soniq.jobs SET started_at = now() - interval '1 hour' WHERE id = $1",
            &[&expired],
        )
        .await
        .unwrap();

    wait_for(
        "a maintenance round to take back the expired attempt",
        async || status_of(&client, expired).await != "processing",
    )
    .await;
    assert!(
        registered(&client, silent).await,
        "a maintenance round right after the outage presumed the silent worker dead"
    );
    assert_eq!(status_of(&client, held).await, "processing");

    // One heartbeat timeout (30 s) after the outage, the silent worker is presumed dead.
    wait_for("the silent worker's job to be taken back", async || {
        status_of(&client, held).await != "processing"
    })
    .await;
    assert_eq!(status_of(&client, held).await, "queued");
    assert!(
        !registered(&client, silent).await,
        "the silent worker is forgotten"
    );
    stop_runner(runner);
    client
        .execute("SELECT soniq.deregister_worker($1)", &[&live])
        .await
        .unwrap();
}
