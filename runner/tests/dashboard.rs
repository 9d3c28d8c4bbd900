//! `soniq dashboard` as a soniq_viewer login: the overview's counts and the queues' metrics
//! against the jobs in the database, a count that follows new jobs, the base path, and bad
//! flags refused.
#![cfg(all(feature = "e2e", feature = "cli"))]

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Command;

fn dashboard(user: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    command
        .arg("dashboard")
        .args(args)
        .env("SONIQ_DATABASE_URL", url_as(user));
    command
}

/// The overview's row of `queue`, as the cells' text joined by `|`.
fn queue_row(page: &str, queue: &str) -> Option<String> {
    let start = page.find(&format!("<tr><td>{queue}</td>"))?;
    let row = &page[start..start + page[start..].find("</tr>")?];
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|cell| cell.trim_end_matches("</td>"))
        .collect();
    Some(cells.join("|"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_the_metrics_count_each_queue_and_follow_new_jobs() {
    let admin = sql().await;
    let viewer = unique("dash_viewer");
    admin
        .batch_execute(&format!("CREATE ROLE {viewer} LOGIN IN ROLE soniq_viewer"))
        .await
        .unwrap();
    let queue = unique("dashboard");
    let enqueue =
        |extra: &str| format!("SELECT soniq.enqueue('{queue}.work', queue => '{queue}'{extra})");
    for _ in 0..2 {
        admin.execute(&enqueue(""), &[]).await.unwrap();
    }
    admin
        .execute(&enqueue(", scheduled_at => now() + interval '1 hour'"), &[])
        .await
        .unwrap();
    let doomed: uuid::Uuid = admin.query_one(&enqueue(""), &[]).await.unwrap().get(0);
    admin
        .execute("SELECT soniq.dead_letter_move($1)", &[&doomed])
        .await
        .unwrap();
    admin
        .execute("SELECT soniq.pause_queue($1)", &[&queue])
        .await
        .unwrap();

    let base = "/ops/soniq";
    let (server, address) = dashboard_serving(&viewer, base);
    let overview = format!("{base}/");
    // queue, state, runnable, scheduled, waiting, processing, done, cancelled, dead, oldest
    let expected = format!("{queue}|paused|2|1|0|0|0|0|1|");
    wait_for("the overview's count of the queue", async || {
        let (status, page) = http_get(address, &overview);
        assert_eq!(status, 200, "{page}");
        queue_row(&page, &queue).is_some_and(|row| row.starts_with(&expected))
    })
    .await;
    let (_, page) = http_get(address, base);
    assert!(
        page.contains("Counted at "),
        "the page says how fresh: {page}"
    );
    assert!(page.contains("control_plane"), "{page}");

    let (status, text) = http_get(address, &format!("{base}/metrics"));
    assert_eq!(status, 200);
    let all = prometheus_samples(&text);
    let jobs = |state: &str| {
        sample(
            &all,
            &format!("soniq_queue_jobs{{queue=\"{queue}\",state=\"{state}\"}}"),
        )
    };
    assert_eq!(
        [
            jobs("runnable"),
            jobs("scheduled"),
            jobs("dead"),
            jobs("done")
        ],
        [2.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(
        sample(&all, &format!("soniq_queue_paused{{queue=\"{queue}\"}}")),
        1.0
    );
    assert!(
        sample(
            &all,
            &format!("soniq_queue_oldest_runnable_seconds{{queue=\"{queue}\"}}")
        ) >= 0.0
    );
    assert_eq!(
        sample(
            &all,
            "soniq_control_plane_alive{subsystem=\"control_plane\"}"
        ),
        1.0
    );
    assert!(sample(&all, "soniq_queue_counts_age_seconds") < 60.0);
    assert!(all.contains_key("soniq_workers{state=\"alive\"}"));

    // A new job shows at the next count (every second here).
    admin.execute(&enqueue(""), &[]).await.unwrap();
    let more = format!("{queue}|paused|3|1|");
    wait_for("the next count", async || {
        let (_, page) = http_get(address, &overview);
        queue_row(&page, &queue).is_some_and(|row| row.starts_with(&more))
    })
    .await;

    assert_eq!(
        http_get(address, &format!("{base}/healthz")),
        (200, "ok\n".into())
    );
    assert_eq!(
        http_get(address, "/").0,
        404,
        "nothing outside the base path"
    );
    assert_eq!(http_get(address, &format!("{base}/nothing")).0, 404);
    drop(server);
    admin
        .batch_execute(&format!("DROP ROLE {viewer}"))
        .await
        .unwrap();
}

fn dashboard_serving(user: &str, base: &str) -> (Runner, SocketAddr) {
    let command = dashboard(
        user,
        &[
            "--listen",
            "127.0.0.1:0",
            "--count-interval",
            "1",
            "--base-path",
            base,
        ],
    );
    start_serving(command, "serving the dashboard")
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    for (args, expected) in [
        (&["--base-path", "soniq"][..], "is not a base path"),
        (&["--base-path", "/a b"][..], "is not a base path"),
        (&["--count-interval", "0"][..], "0 is not in 1..=3600"),
        (&["--count-interval", "3601"][..], "3601 is not in 1..=3600"),
        (&["--listen", "localhost"][..], "invalid socket address"),
    ] {
        let output = dashboard("postgres", args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
