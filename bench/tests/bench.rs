//! `soniq-bench --quick` against the test database: every scenario reports its figures as
//! JSON, and the database is left as it was. Figures are only printed, never compared with
//! a speed (no timed assertions): the run is here so the harness cannot rot.
#![cfg(feature = "e2e")]

use serde_json::Value;
use soniq_testkit::{database_url, unique_name};
use std::process::{Command, Stdio};

/// The figure keys each scenario must report.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "limit",
        &[
            "one_per_transaction",
            "batched_16",
            "batched_64",
            "transactions_per_job_1",
            "transactions_per_job_64",
        ],
    ),
    (
        "enqueue",
        &[
            "bare_insert_1",
            "enqueue_1",
            "bare_insert_8",
            "enqueue_8",
            "bulk_bare_insert",
            "bulk_enqueue_many",
        ],
    ),
    (
        "drain",
        &[
            "concurrency_1",
            "concurrency_16",
            "concurrency_64",
            "best_batched",
            "best_deleting",
            "transactions_per_job_1",
            "transactions_per_job_64",
        ],
    ),
    ("latency", &["p50", "p99", "max"]),
    (
        "churn",
        &[
            "enqueue_rate",
            "drain_rate",
            "backlog",
            "size_end",
            "growth",
        ],
    ),
    ("schedules", &["first_job", "all_jobs"]),
    (
        "depth",
        &[
            "median_1000_0",
            "p99_1000_0",
            "median_10000_0",
            "median_10000_10000",
            "p99_10000_10000",
        ],
    ),
    (
        "dashboard",
        &[
            "overview",
            "jobs",
            "jobs_done",
            "job",
            "dead_letter",
            "dead_letter_tag",
            "schedules",
            "workers",
            "metrics",
            "drain_alone",
            "drain_dashboard",
        ],
    ),
];

fn figure<'a>(report: &'a Value, scenario: &str, key: &str) -> &'a Value {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["scenario"] == scenario && f["key"] == key)
        .unwrap_or_else(|| panic!("no figure {scenario}/{key} in {report:#}"))
}

/// Run soniq-bench with `args` (`--json` among them) on the test database: its report, and
/// its process id (its workers' pid).
fn run_bench(args: &[&str]) -> (Value, i32) {
    let child = Command::new(env!("CARGO_BIN_EXE_soniq-bench"))
        .args(args)
        .env("SONIQ_DATABASE_URL", database_url())
        // Heartbeats well inside the test cluster's 2 s timeout.
        .env("SONIQ_HEARTBEAT_INTERVAL", "0.5")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let report =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (report, pid)
}

/// One bench at a time: each starts by cleaning up after any other, and checks what it left.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn rounds_report_each_figures_median_round_with_that_rounds_yardstick() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (report, _) = run_bench(&[
        "--quick",
        "--json",
        "--scenario",
        "enqueue",
        "--rounds",
        "3",
    ]);
    assert_eq!(report["header"]["rounds"], 3, "{report:#}");
    let figures = report["figures"].as_array().unwrap();
    // Each figure once, not once a round.
    let keys: std::collections::HashSet<&str> =
        figures.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), figures.len(), "{report:#}");
    let (_, expected) = EXPECTED.iter().find(|(s, _)| *s == "enqueue").unwrap();
    assert!(expected.iter().all(|k| keys.contains(k)), "{report:#}");
    let mut against_yardsticks = 0;
    for f in figures {
        let measure = f["measure"].as_str().unwrap();
        assert!(measure.ends_with("(median of 3 of 3 rounds)"), "{f}");
        if let Some(yardstick) = f["yardstick"]["value"].as_f64() {
            let ratio = f["ratio"].as_f64().unwrap();
            assert!(
                (ratio - f["value"].as_f64().unwrap() / yardstick).abs() < 1e-9,
                "{f}"
            );
            against_yardsticks += 1;
        }
    }
    // enqueue_1, enqueue_8, the bulk enqueues: each against its bare INSERT.
    assert!(against_yardsticks >= 3, "{report:#}");
}

#[tokio::test]
async fn quick_run_reports_every_scenario_and_leaves_the_database_as_it_was() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let db = soniq_runner::cli::connect(&database_url()).await.unwrap();
    // Someone else's job, which the bench must not touch.
    let queue = unique_name("bench_guard");
    let guard: uuid::Uuid = db
        .query_one(
            "SELECT soniq.enqueue('guard.keep', '{}', queue => $1)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    let before: (String, std::time::SystemTime) = {
        let row = db
            .query_one(
                "SELECT status, updated_at FROM soniq.jobs WHERE id = $1",
                &[&guard],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };

    let (report, pid) = run_bench(&["--quick", "--json"]);

    let header = &report["header"];
    assert!(header["machine"]["cores"].as_u64().unwrap() >= 1);
    // The server under test (scripts/test sets SONIQ_PG: 15 or 18).
    let version = std::env::var("SONIQ_PG").expect("SONIQ_PG: run scripts/test");
    assert!(
        header["postgres"].as_str().unwrap().starts_with(&version),
        "{header:#}"
    );
    for setting in [
        "synchronous_commit",
        "fsync",
        "shared_buffers",
        "wal_level",
        "max_connections",
    ] {
        assert!(header["settings"][setting].is_string(), "{header:#}");
    }
    assert!(header["control_plane"].is_string());
    assert_eq!(header["run"]["quick"], true);

    for (scenario, keys) in EXPECTED {
        for key in *keys {
            figure(&report, scenario, key);
        }
    }
    for f in report["figures"].as_array().unwrap() {
        let value = f["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{f}");
        if f["unit"] == "jobs/s" {
            assert!(value > 0.0, "a rate of zero: {f}");
        }
        // A target whose yardstick was measured in this run is decided.
        if !f["target"].is_null() && (f["target"]["of"] == "value" || !f["yardstick"].is_null()) {
            assert!(f["met"].is_boolean(), "{f}");
        }
    }
    // Ratios are computed against figures of the same run.
    let drain_1 = figure(&report, "drain", "concurrency_1");
    let limit_1 = figure(&report, "limit", "one_per_transaction");
    let ratio = drain_1["ratio"].as_f64().unwrap();
    let expected = drain_1["value"].as_f64().unwrap() / limit_1["value"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 1e-9 * expected.max(1.0));
    assert!(figure(&report, "enqueue", "enqueue_8")["ratio"].is_number());
    assert!(!report["churn_samples"].as_array().unwrap().is_empty());

    // Nothing of the bench is left; the other job is as it was.
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM soniq.jobs WHERE queue LIKE 'bench.%' OR task_name LIKE 'bench.%')
                  + (SELECT count(*) FROM soniq.dead_letter_jobs WHERE queue LIKE 'bench.%')
                  + (SELECT count(*) FROM soniq.schedules WHERE name LIKE 'bench.%')
                  + (SELECT count(*) FROM soniq.tasks WHERE task_name LIKE 'bench.%')
                  + (SELECT count(*) FROM soniq.workers WHERE pid = $1)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'soniq_bench')",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the bench left rows behind");
    let row = db
        .query_one(
            "SELECT status, updated_at FROM soniq.jobs WHERE id = $1",
            &[&guard],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get(1)), before);
    db.execute("SELECT soniq.delete_job($1)", &[&guard])
        .await
        .unwrap();
}
