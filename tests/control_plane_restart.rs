//! The control plane after a start: it survives an operator killing it, and gives the workers
//! one heartbeat timeout to be heard from. A binary of its own, so the few seconds without a
//! control plane cannot disturb the other control-plane tests; its tests take turns (each
//! restarts the control plane).
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use postgres::Client;
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn control_plane_pid(client: &mut Client) -> i32 {
    common::wait_for(
        "the control plane to be up",
        Duration::from_secs(30),
        || {
            client
                .query_one(
                    "SELECT pid FROM soniq.health WHERE subsystem = 'control_plane' AND alive",
                    &[],
                )
                .ok()
                .and_then(|row| row.get(0))
        },
    )
}

/// Terminate the control plane and wait for the postmaster's new one; returns both pids.
fn restart_control_plane(client: &mut Client) -> (i32, i32) {
    let before = control_plane_pid(client);
    client
        .execute("SELECT pg_terminate_backend($1)", &[&before])
        .unwrap();
    let after = common::wait_for("a new control plane", Duration::from_secs(30), || {
        client
            .query_opt(
                "SELECT pid FROM soniq.health
                  WHERE subsystem = 'control_plane' AND alive AND pid <> $1 AND lag < interval '10 seconds'",
                &[&before],
            )
            .unwrap()
            .map(|row| row.get(0))
    });
    (before, after)
}

#[test]
fn a_terminated_control_plane_comes_back() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut client = common::connect();
    let (before, after) = restart_control_plane(&mut client);
    assert_ne!(before, after);
}

fn rescue_rounds(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT runs FROM soniq.control_plane WHERE subsystem = 'rescue'",
            &[],
        )
        .unwrap()
        .get(0)
}

/// After a server was down for longer than the heartbeat timeout, every worker's last
/// heartbeat is older than that when the control plane starts. The workers that are back must
/// keep their jobs: no worker is presumed dead until it has had one timeout to be heard from.
#[test]
fn a_started_control_plane_presumes_no_worker_dead_for_one_heartbeat_timeout() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut client = common::connect();
    let timeout = common::SystemSetting::set("soniq.heartbeat_timeout", "60s");
    restart_control_plane(&mut client);

    let queue = common::unique_name("grace");
    let worker: String = client
        .query_one(
            "SELECT soniq.register_worker(queues => ARRAY[$1])::text",
            &[&queue],
        )
        .unwrap()
        .get(0);
    let job: String = client
        .query_one(
            "SELECT soniq.enqueue('grace.job', queue => $1, retries => 3)::text",
            &[&queue],
        )
        .unwrap()
        .get(0);
    let claimed: i64 = client
        .query_one(
            "SELECT count(*) FROM soniq.claim($1::text::uuid, ARRAY[$2])",
            &[&worker, &queue],
        )
        .unwrap()
        .get(0);
    assert_eq!(claimed, 1);
    // Silent for an hour, as if the server had been down that long.
    client
        .execute(
            "UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = $1::text::uuid",
            &[&worker],
        )
        .unwrap();

    let rounds = rescue_rounds(&mut client);
    common::wait_for("two rescue rounds", Duration::from_secs(30), || {
        (rescue_rounds(&mut client) >= rounds + 2).then_some(())
    });
    let (registered, status): (bool, String) = {
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT FROM soniq.workers WHERE id = $1::text::uuid),
                        (SELECT status FROM soniq.jobs WHERE id = $2::text::uuid)",
                &[&worker, &job],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        registered,
        "the worker was presumed dead within a heartbeat timeout of the control plane's start"
    );
    assert_eq!(
        status, "processing",
        "the job was taken back from its worker"
    );

    // Back to the cluster's 2 s: the control plane has run longer than that, so the silent
    // worker is presumed dead now, and its job goes back to the queue.
    drop(timeout);
    let status: String = common::wait_for(
        "the silent worker's job to be taken back",
        Duration::from_secs(30),
        || {
            let status: String = client
                .query_one(
                    "SELECT status FROM soniq.jobs WHERE id = $1::text::uuid",
                    &[&job],
                )
                .unwrap()
                .get(0);
            (status != "processing").then_some(status)
        },
    );
    assert_eq!(status, "queued");
    let registered: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM soniq.workers WHERE id = $1::text::uuid)",
            &[&worker],
        )
        .unwrap()
        .get(0);
    assert!(!registered, "the silent worker is forgotten");
}
