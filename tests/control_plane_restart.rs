//! The control plane survives an operator killing it. A binary of its own, so the few
//! seconds without a control plane cannot disturb the other control-plane tests.
#![cfg(feature = "e2e")]

use soniq_testkit as common;

use std::time::Duration;

#[test]
fn a_terminated_control_plane_comes_back() {
    let mut client = common::connect();
    let before: i32 = common::wait_for(
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
    );
    client
        .execute("SELECT pg_terminate_backend($1)", &[&before])
        .unwrap();
    let after: i32 = common::wait_for("a new control plane", Duration::from_secs(30), || {
        client
            .query_opt(
                "SELECT pid FROM soniq.health
                  WHERE subsystem = 'control_plane' AND alive AND pid <> $1 AND lag < interval '10 seconds'",
                &[&before],
            )
            .unwrap()
            .map(|row| row.get(0))
    });
    assert_ne!(before, after);
}
