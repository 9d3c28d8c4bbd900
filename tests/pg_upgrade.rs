//! `pg_upgrade` from PostgreSQL 15 to 18 with Soniq installed and preloaded: a 15 cluster
//! holding queued, processing, scheduled, done and dead jobs, a schedule, a paused queue and a
//! worker is upgraded (`--copy`) into an 18 cluster; every row comes through, the control
//! plane starts on 18 and the queue drains.
//!
//! The 15 is upstream's build (scripts/setup: SONIQ_PG15_UPSTREAM_BINDIR): Debian's 15 stamps
//! every column with an attribute option, `pg_attver`, that no other build knows, so no
//! cluster it made can be restored into the 18 we test. Run once, on the 18 pass of
//! scripts/test (feature `pg_upgrade`), with SONIQ_PG_BINDIR naming 18's programs.
#![cfg(all(feature = "e2e", feature = "pg_upgrade"))]

use soniq_testkit as common;

use common::cluster::Cluster;
use common::connect_to;
use common::sample::{fill, rows, run_the_queued_job};
use std::time::Duration;

const OLD_PORT: u16 = 5497;
const NEW_PORT: u16 = 5498;

/// Soniq preloaded, serving database `shop`.
fn preload(cluster: &Cluster) {
    cluster.configure(&[
        "shared_preload_libraries = 'soniq'".into(),
        "soniq.database_name = 'shop'".into(),
        "soniq.tick_interval = 1s".into(),
    ]);
}

fn shop(cluster: &Cluster) -> postgres::Client {
    connect_to(&cluster.url("shop"))
}

#[test]
fn pg_upgrade_from_15_to_18_keeps_every_row_and_the_queue_runs() {
    let old_bindir = std::env::var("SONIQ_PG15_UPSTREAM_BINDIR").expect(
        "SONIQ_PG15_UPSTREAM_BINDIR names upstream PostgreSQL 15's programs; run scripts/test",
    );
    let new_bindir = common::pg_bindir();

    let old = Cluster::init(&old_bindir, "upgrade-15", OLD_PORT);
    preload(&old);
    old.start(&[]);
    connect_to(&old.url("postgres"))
        .batch_execute("CREATE DATABASE shop")
        .unwrap();
    let mut client = shop(&old);
    client.batch_execute("CREATE EXTENSION soniq").unwrap();
    fill(&mut client);
    let before = rows(&mut client);
    let version: String = client
        .query_one(
            "SELECT extversion::text FROM pg_extension WHERE extname = 'soniq'",
            &[],
        )
        .unwrap()
        .get(0);
    drop(client);
    old.stop();

    // 18 turns data checksums on by default; the 15 cluster has none, and pg_upgrade needs
    // both alike.
    let new = Cluster::init_with(
        &new_bindir,
        "upgrade-18",
        NEW_PORT,
        &["--no-data-checksums"],
    );
    preload(&new);
    #[rustfmt::skip]
    new.run("pg_upgrade", &[
        "--copy",
        "-b", &old_bindir, "-B", &new_bindir,
        "-d", &old.data(), "-D", &new.data(),
        "-p", &OLD_PORT.to_string(), "-P", &NEW_PORT.to_string(),
        "-U", "postgres",
    ]);
    new.start(&[]);

    let mut client = shop(&new);
    let server: String = client
        .query_one("SELECT current_setting('server_version_num')", &[])
        .unwrap()
        .get(0);
    assert!(server.starts_with("18"), "the upgraded server is {server}");
    let upgraded: String = client
        .query_one(
            "SELECT extversion::text FROM pg_extension WHERE extname = 'soniq'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(upgraded, version);
    assert_eq!(rows(&mut client), before, "rows differ after pg_upgrade");
    common::wait_for("the control plane on 18", Duration::from_secs(30), || {
        client
            .query_one(
                "SELECT alive FROM soniq.health WHERE subsystem = 'control_plane'",
                &[],
            )
            .ok()
            .and_then(|row| row.get::<_, Option<bool>>(0))
            .filter(|alive| *alive)
    });
    assert_eq!(
        run_the_queued_job(&mut client),
        1,
        "the queued job runs on 18"
    );
}
