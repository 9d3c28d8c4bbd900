//! The header of a run: when, on what machine, against which PostgreSQL and with which
//! settings — the figures mean little without them.

use super::Plan;
use serde_json::{json, Map, Value};
use soniq_runner::cli::mask_url;
use soniq_runner::Result;
use tokio_postgres::Client;

/// Server settings that move the figures (durability, memory, connections).
const SETTINGS: &[&str] = &[
    "synchronous_commit",
    "fsync",
    "shared_buffers",
    "wal_level",
    "max_connections",
];

/// The 1, 5 and 15 minute load averages (Linux), to show whether something else was
/// running on the machine: on 2 cores that moves every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether soniq's control plane (the background worker) serves this database: it fires
/// schedules and prunes here only then.
pub async fn control_plane_serves(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT coalesce((SELECT alive FROM soniq.health WHERE subsystem = 'control_plane'), false)
                    AND coalesce(current_setting('soniq.enabled', true), 'on') <> 'off'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn header(
    client: &Client,
    url: &str,
    plan: &Plan,
    control_plane: bool,
) -> Result<Vec<(String, Value)>> {
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let mut settings = Map::new();
    for name in SETTINGS {
        let value: String = client.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
        settings.insert(name.to_string(), json!(value));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let host = soniq_runner::hostname().unwrap_or_default();
    let date = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let control_plane = if control_plane {
        "serves this database"
    } else {
        "does not serve this database"
    };
    Ok(vec![
        ("date".into(), json!(date)),
        (
            "machine".into(),
            json!({"host": host, "cores": cores, "os": std::env::consts::OS, "arch": std::env::consts::ARCH}),
        ),
        ("load_average_at_start".into(), json!(load_average())),
        ("postgres".into(), json!(version)),
        ("settings".into(), Value::Object(settings)),
        ("control_plane".into(), json!(control_plane)),
        ("database".into(), json!(mask_url(url))),
        (
            "run".into(),
            json!({
                "quick": plan.quick,
                "jobs": plan.jobs,
                "one_at_a_time_jobs": plan.single_jobs,
                "enqueue_seconds": plan.enqueue_seconds,
                "clients": plan.clients,
                "churn_seconds": plan.churn_seconds,
            }),
        ),
    ])
}
