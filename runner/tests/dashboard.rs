//! `soniq dashboard` as a soniq_viewer login: the overview's counts and the queues' metrics
//! against the jobs in the database, a count that follows new jobs, the base path; the jobs
//! and dead-letter pages' filters and keyset pages against the database's order, a job's page,
//! the schedules and workers pages; bad parameters (400) and bad flags refused.
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

/// The text of a row's cells, tags left out, joined by `|`.
fn cells(row: &str) -> String {
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let mut text = String::new();
            let mut in_tag = true; // the rest of the <td ...> tag
            for c in cell.trim_end_matches("</td>").chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The overview's row of `queue`, as its cells' text.
fn queue_row(page: &str, queue: &str) -> Option<String> {
    let name = page.find(&format!(">{queue}</a></td>"))?;
    let start = page[..name].rfind("<tr>")?;
    let row = &page[start..start + page[start..].find("</tr>")?];
    Some(cells(row))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_the_metrics_count_each_queue_and_follow_new_jobs() {
    let admin = sql().await;
    let viewer = create_login(&admin, "dash_viewer", "soniq_viewer").await;
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
    // The vendored script, cached for good under its versioned name.
    let (status, head, script) =
        http_exchange(address, &format!("{base}/assets/htmx-2.0.11.min.js"));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("immutable"), "{head}");
    assert!(script.contains("htmx"), "the script itself");
    assert_eq!(http_get(address, &format!("{base}/assets/other.js")).0, 404);
    drop(server);
    drop_login(&admin, &viewer).await;
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

/// The job ids a page links to, in the page's order (each row's first cell).
fn job_ids(page: &str, base: &str) -> Vec<uuid::Uuid> {
    let marker = format!("<tr><td><a href=\"{base}/jobs/");
    page.split(&marker)
        .skip(1)
        .map(|rest| uuid::Uuid::parse_str(&rest[..36]).unwrap())
        .collect()
}

/// The page a `rel` link (`next`: older, `prev`: newer) leads to, if the page has one.
fn link(page: &str, rel: &str) -> Option<String> {
    let start = page.find(&format!("<a rel=\"{rel}\" href=\""))? + 16 + rel.len();
    let href = &page[start..start + page[start..].find('"')?];
    Some(href.replace("&amp;", "&"))
}

/// Every id `first` and the pages it leads to (following `next`) show, and the pages' paths.
fn walk(address: SocketAddr, first: &str, base: &str) -> (Vec<uuid::Uuid>, Vec<String>) {
    let (mut ids, mut pages) = (Vec::new(), vec![first.to_string()]);
    loop {
        let (status, page) = http_get(address, pages.last().unwrap());
        assert_eq!(status, 200, "{page}");
        ids.extend(job_ids(&page, base));
        match link(&page, "next") {
            Some(next) => pages.push(next),
            None => return (ids, pages),
        }
    }
}

async fn ids(admin: &tokio_postgres::Client, sql: &str, queue: &str) -> Vec<uuid::Uuid> {
    admin
        .query(sql, &[&queue])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn assert_refused(address: SocketAddr, path: &str, expected: &str) {
    let (status, page) = http_get(address, path);
    assert_eq!(status, 400, "{path}: {page}");
    assert!(page.contains(expected), "{path}: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_pages_filter_page_by_keyset_and_show_a_job() {
    let admin = sql().await;
    let viewer = create_login(&admin, "dash_viewer", "soniq_viewer").await;
    let queue = unique("browse");
    admin
        .execute(
            "SELECT soniq.enqueue($1 || CASE WHEN i % 2 = 0 THEN '.even' ELSE '.odd' END,
                                  jsonb_build_object('i', i), queue => $1)
               FROM generate_series(1, 120) i",
            &[&queue],
        )
        .await
        .unwrap();
    admin
        .execute(
            "SELECT soniq.cancel_job(id) FROM soniq.jobs WHERE queue = $1 AND (args->>'i')::int % 17 = 0",
            &[&queue],
        )
        .await
        .unwrap();
    let base = "/d";
    let (server, address) = dashboard_serving(&viewer, base);

    // Every job once, newest first, in pages of 50, as the database orders them.
    let newest_first = ids(
        &admin,
        "SELECT id FROM soniq.jobs WHERE queue = $1 ORDER BY id DESC",
        &queue,
    )
    .await;
    let (shown, pages) = walk(address, &format!("{base}/jobs?queue={queue}"), base);
    assert_eq!(shown, newest_first);
    assert_eq!(pages.len(), 3, "{pages:?}");
    // Back from the last page: the newer page is the second one again, filters kept.
    let (_, last) = http_get(address, &pages[2]);
    let newer = link(&last, "prev").expect("a newer page");
    assert!(newer.contains(&format!("queue={queue}")), "{newer}");
    let (_, second) = http_get(address, &newer);
    assert_eq!(job_ids(&second, base), newest_first[50..100]);
    let (_, first) = http_get(address, &pages[0]);
    assert_eq!(
        link(&first, "prev"),
        None,
        "nothing is newer than the first page"
    );

    // Filters, alone and together.
    let cancelled = ids(
        &admin,
        "SELECT id FROM soniq.jobs WHERE queue = $1 AND status = 'cancelled' ORDER BY id DESC",
        &queue,
    )
    .await;
    assert_eq!(cancelled.len(), 7);
    let (shown, _) = walk(
        address,
        &format!("{base}/jobs?queue={queue}&status=cancelled"),
        base,
    );
    assert_eq!(shown, cancelled);
    let odd_queued = ids(
        &admin,
        "SELECT id FROM soniq.jobs WHERE queue = $1 AND status = 'queued' AND task_name LIKE '%.odd' ORDER BY id DESC",
        &queue,
    )
    .await;
    let (shown, _) = walk(
        address,
        &format!("{base}/jobs?queue={queue}&status=queued&task={queue}.odd&from=2000-01-01&to="),
        base,
    );
    assert_eq!(shown, odd_queued);
    let (status, page) = http_get(
        address,
        &format!("{base}/jobs?queue={queue}&from=2999-01-01T00:00"),
    );
    assert_eq!((status, job_ids(&page, base).len()), (200, 0));
    assert!(page.contains("No job matches."), "{page}");

    // A search by id leads to the job's page: its args, timeline and status.
    let job = newest_first[10];
    let (status, head, _) = http_exchange(address, &format!("{base}/jobs?id={job}"));
    assert_eq!(status, 303, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("location: {base}/jobs/{job}")),
        "{head}"
    );
    let i: i32 = admin
        .query_one(
            "SELECT (args->>'i')::int FROM soniq.jobs WHERE id = $1",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    let (status, page) = http_get(address, &format!("{base}/jobs/{job}"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&format!("&quot;i&quot;: {i}")), "{page}");
    assert!(page.contains("<dt>created</dt>"), "{page}");

    // A dead job's page shows its dead-letter row.
    admin
        .execute("SELECT soniq.dead_letter_move($1)", &[&job])
        .await
        .unwrap();
    admin
        .execute(
            "SELECT soniq.dead_letter_tag($1, ARRAY['dash-tag'])",
            &[&job],
        )
        .await
        .unwrap();
    let (status, page) = http_get(address, &format!("{base}/jobs/{job}"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<dd class=\"status\">dead</dd>"), "{page}");
    assert!(
        page.contains("<dt>reason</dt><dd>manual_move</dd>"),
        "{page}"
    );
    assert!(page.contains("dash-tag"), "{page}");

    // Bad input: a page that says what is wrong, never a 500.
    let unknown = uuid::Uuid::from_u128(7);
    let (status, page) = http_get(address, &format!("{base}/jobs/{unknown}"));
    assert_eq!(status, 404, "{page}");
    assert!(page.contains(&format!("No job {unknown}")), "{page}");
    assert_refused(address, &format!("{base}/jobs/nope"), "is not a job id");
    assert_refused(address, &format!("{base}/jobs?id=42"), "is not a job id");
    assert_refused(
        address,
        &format!("{base}/jobs?limit=5"),
        "no parameter &quot;limit&quot;",
    );
    assert_refused(
        address,
        &format!("{base}/jobs?before=zz"),
        "not a page cursor",
    );
    assert_refused(
        address,
        &format!("{base}/jobs?before={job}&after={job}"),
        "not both",
    );
    assert_refused(
        address,
        &format!("{base}/jobs?queue=1x"),
        "starts with a letter",
    );
    assert_refused(
        address,
        &format!("{base}/jobs?status=dead"),
        "is not one of",
    );
    assert_refused(address, &format!("{base}/jobs?from=soon"), "is not a time");
    assert_refused(
        address,
        &format!("{base}/jobs?from=2026-02-02&to=2026-01-01"),
        "to is before from",
    );
    assert_refused(
        address,
        &format!("{base}/jobs?queue=a&queue=b"),
        "given twice",
    );
    let (status, page) = http_get(address, &format!("{base}/nowhere"));
    assert_eq!(status, 404);
    assert!(
        page.contains(&format!("href=\"{base}/jobs\"")),
        "the error page's links keep the base: {page}"
    );

    drop(server);
    drop_login(&admin, &viewer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_page_filters_and_pages_in_order_of_death() {
    let admin = sql().await;
    let viewer = create_login(&admin, "dash_viewer", "soniq_viewer").await;
    let queue = unique("browse_dead");
    // 60 jobs die in one transaction, so they share their time of death: the keyset's second
    // key, the id, orders them.
    dead_jobs(&admin, &queue, 60).await;
    admin
        .execute(
            "SELECT soniq.dead_letter_tag(id, ARRAY['billing'])
               FROM (SELECT id FROM soniq.dead_letter_jobs WHERE queue = $1 ORDER BY id LIMIT 9) d",
            &[&queue],
        )
        .await
        .unwrap();
    let base = "";
    let (server, address) = dashboard_serving(&viewer, "/");

    let in_order = ids(
        &admin,
        "SELECT id FROM soniq.dead_letter_jobs WHERE queue = $1
          ORDER BY moved_to_dead_letter_at DESC, id DESC",
        &queue,
    )
    .await;
    let (shown, pages) = walk(address, &format!("/dead-letter?queue={queue}"), base);
    assert_eq!(shown, in_order);
    assert_eq!(pages.len(), 2, "{pages:?}");

    let billing = ids(
        &admin,
        "SELECT id FROM soniq.dead_letter_jobs WHERE queue = $1 AND 'billing' = ANY(tags)
          ORDER BY moved_to_dead_letter_at DESC, id DESC",
        &queue,
    )
    .await;
    assert_eq!(billing.len(), 9);
    let (shown, _) = walk(
        address,
        &format!("/dead-letter?queue={queue}&tag=billing&reason=manual_move&task={queue}.work"),
        base,
    );
    assert_eq!(shown, billing);
    let (status, page) = http_get(
        address,
        &format!("/dead-letter?queue={queue}&reason=timeout"),
    );
    assert_eq!(status, 200);
    assert!(page.contains("No dead job matches."), "{page}");

    assert_refused(address, "/dead-letter?reason=bored", "is not one of");
    assert_refused(
        address,
        &format!("/dead-letter?before={}", in_order[0]),
        "not a page cursor",
    );
    assert_refused(address, "/dead-letter?from=2026-13-01", "is not a time");
    assert_refused(
        address,
        &format!("/dead-letter?tag={}", "t".repeat(201)),
        "at most 200",
    );

    drop(server);
    drop_login(&admin, &viewer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_and_workers_pages_show_what_the_database_holds() {
    let admin = sql().await;
    let viewer = create_login(&admin, "dash_viewer", "soniq_viewer").await;
    let name = unique("dash_schedule");
    admin
        .execute(
            "SELECT soniq.schedule_add($1, 'reports.daily', cron => '30 9 * * *', time_zone => 'Europe/Paris')",
            &[&name],
        )
        .await
        .unwrap();
    let (server, address) = dashboard_serving(&viewer, "/");

    let (status, page) = http_get(address, "/schedules");
    assert_eq!(status, 200, "{page}");
    let start = page
        .find(&format!("<tr><td>{name}</td>"))
        .expect("the schedule's row");
    let row = cells(&page[start..start + page[start..].find("</tr>").unwrap()]);
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(
        fields[1..5],
        [
            "reports.daily",
            "cron 30 9 * * *",
            "Europe/Paris",
            "enabled"
        ],
        "{row}"
    );
    // Three coming fire times, a day apart, at 09:30 in Paris (08:30 or 07:30 UTC).
    let times: Vec<&str> = fields[5].split(" UTC").filter(|t| !t.is_empty()).collect();
    assert_eq!(times.len(), 3, "{row}");
    assert!(times.iter().all(|t| t.ends_with(":30:00")), "{row}");
    let next_fire: std::time::SystemTime = admin
        .query_one(
            "SELECT next_fire_at FROM soniq.schedules WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    let stored = jiff::Timestamp::try_from(next_fire)
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert_eq!(times[0], stored, "the first is the stored next fire time");

    let host = unique("dash-host");
    let worker: uuid::Uuid = admin
        .query_one(
            "SELECT soniq.register_worker(hostname => $1, pid => 4242, queues => ARRAY['mail', 'sms'], concurrency => 3)",
            &[&host],
        )
        .await
        .unwrap()
        .get(0);
    let (status, page) = http_get(address, "/workers");
    admin
        .execute("SELECT soniq.deregister_worker($1)", &[&worker])
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let start = page
        .find(&format!("<tr><td>{worker}</td>"))
        .expect("the worker's row");
    let row = cells(&page[start..start + page[start..].find("</tr>").unwrap()]);
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(
        fields[1..6],
        [host.as_str(), "4242", "mail, sms", "3", "0"],
        "{row}"
    );

    admin
        .execute("SELECT soniq.schedule_remove($1)", &[&name])
        .await
        .unwrap();
    drop(server);
    drop_login(&admin, &viewer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_matches_lie_beyond_its_scan_says_so_and_links_on() {
    // One cancelled job, then more jobs than a page looks through (100,000): the first page
    // of cancelled jobs is empty and says it stopped; the next finds the job, and ends there.
    let database = fresh_database("dash_scan").await;
    let cancelled: uuid::Uuid = database
        .client
        .query_one("SELECT soniq.enqueue('scan.work')", &[])
        .await
        .unwrap()
        .get(0);
    database
        .client
        .batch_execute(&format!(
            "SELECT soniq.cancel_job('{cancelled}');
             SELECT soniq.enqueue_many(jsonb_agg(jsonb_build_object('task_name', 'scan.work')))
               FROM generate_series(1, 100050)"
        ))
        .await
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    command
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .env("SONIQ_DATABASE_URL", &database.url);
    let (server, address) = start_serving(command, "serving the dashboard");

    let (status, first) = http_get(address, "/jobs?status=cancelled");
    assert_eq!(status, 200, "{first}");
    assert!(job_ids(&first, "").is_empty(), "{first}");
    assert!(first.contains("looked through 100000 rows"), "{first}");
    let onward = link(&first, "next").expect("a link to look further");
    let (status, second) = http_get(address, &onward);
    assert_eq!(status, 200, "{second}");
    assert_eq!(job_ids(&second, ""), [cancelled]);
    assert!(!second.contains("looked through"), "{second}");
    assert_eq!(link(&second, "next"), None, "the table ends there");
    // A page with nothing on it still leads back the way it came.
    let (status, empty) = http_get(
        address,
        &format!("/jobs?status=cancelled&before={cancelled}"),
    );
    assert_eq!(status, 200, "{empty}");
    assert!(job_ids(&empty, "").is_empty(), "{empty}");
    assert!(link(&empty, "prev").is_some(), "a newer page: {empty}");

    drop(server);
    drop_database(database).await;
}

/// The chart's summary line: (completed, failed) over the last hour.
fn charted(page: &str) -> (i64, i64) {
    let start = page.find("over the last hour: ").expect("the chart") + 20;
    let line = &page[start..start + page[start..].find('.').unwrap()];
    let numbers: Vec<i64> = line
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_charts_the_last_hours_outcomes() {
    // A database of its own: nothing else completes or fails jobs in it.
    let database = fresh_database("dash_chart").await;
    let admin = &database.client;
    let queue = "charted";
    let worker: uuid::Uuid = admin
        .query_one(
            "SELECT soniq.register_worker(queues => ARRAY[$1])",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .execute(
            "SELECT soniq.enqueue('charted.work', queue => $1, retries => 0) FROM generate_series(1, 3)",
            &[&queue],
        )
        .await
        .unwrap();
    let claimed: Vec<uuid::Uuid> = admin
        .query(
            "SELECT id FROM soniq.claim($1, ARRAY[$2], 3) ORDER BY id",
            &[&worker, &queue],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(claimed.len(), 3);
    admin
        .execute(
            "SELECT soniq.complete_many($1, $2, '{1,1}')",
            &[&&claimed[..2], &worker],
        )
        .await
        .unwrap();
    admin
        .execute(
            "SELECT soniq.fail($1, $2, 1, 'boom')",
            &[&claimed[2], &worker],
        )
        .await
        .unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    command
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .env("SONIQ_DATABASE_URL", &database.url);
    let (server, address) = start_serving(command, "serving the dashboard");
    let (status, page) = http_get(address, "/");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<svg class=\"chart\""), "{page}");
    assert_eq!(charted(&page), (2, 1), "{page}");
    let bars = page.matches("<g class=\"minute\">").count();
    assert!(
        bars == 1 || bars == 2,
        "this minute's bar (or two, across a minute's turn): {page}"
    );

    drop(server);
    drop_database(database).await;
}
