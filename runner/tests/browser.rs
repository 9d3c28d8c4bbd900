//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver. It opens each page, filters the jobs, watches a
//! queue's count change without a reload (server-sent events through the vendored htmx), logs
//! in, pauses a queue and replays a dead job, checking each in the database; and it saves a
//! screenshot of each page under docs/dashboard/.
#![cfg(all(feature = "e2e", feature = "cli"))]

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use uuid::Uuid;

const PASSWORD: &str = "browser test password";

/// `chromedriver` on a port it picks, killed when dropped.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/setup installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver said where it listens")
                .unwrap();
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').parse().unwrap();
            }
        };
        // Keep reading what it says, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Chromedriver { child, port }
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--hide-scrollbars"],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The cells of the overview's row of `queue`, as the browser shows them (read in one script,
/// so a live update cannot swap the table between two reads); none while a page loads.
async fn queue_cells(browser: &Client, queue: &str) -> Vec<String> {
    let script = "const row = [...document.querySelectorAll('#queues tbody tr')]
                      .find(r => r.cells[0].textContent === arguments[0]);
                  return row ? [...row.cells].map(c => c.textContent) : [];";
    match browser.execute(script, vec![json!(queue)]).await {
        Ok(cells) => serde_json::from_value(cells).unwrap(),
        Err(_) => Vec::new(),
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_browses_filters_watches_counts_live_pauses_and_replays() {
    let admin = sql().await;
    let operator = create_login(&admin, "browser_admin", "soniq_admin").await;
    let queue = unique("emails");
    admin
        .execute(
            "SELECT soniq.enqueue('emails.send_welcome', jsonb_build_object('user_id', i), queue => $1)
               FROM generate_series(1, 3) i",
            &[&queue],
        )
        .await
        .unwrap();
    let dead_queue = unique("billing");
    let doomed: Uuid = admin
        .query_one(
            "SELECT soniq.enqueue('billing.charge', '{\"order_id\": 7}', queue => $1)",
            &[&dead_queue],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .execute(
            "SELECT soniq.dead_letter_move($1, 'card declined')",
            &[&doomed],
        )
        .await
        .unwrap();
    let schedule = unique("nightly_report");
    admin
        .execute(
            "SELECT soniq.schedule_add($1, 'reports.nightly', cron => '0 2 * * *', time_zone => 'Europe/Berlin')",
            &[&schedule],
        )
        .await
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    command
        .args([
            "dashboard",
            "--actions",
            "--listen",
            "127.0.0.1:0",
            "--count-interval",
            "1",
        ])
        .env("SONIQ_DATABASE_URL", url_as(&operator))
        .env("SONIQ_DASHBOARD_PASSWORD", PASSWORD);
    let (server, address) = start_serving(command, "serving the dashboard");
    let url = |path: &str| format!("http://{address}{path}");
    let driver = Chromedriver::start();
    let browser = driver.browser().await;

    // The overview, then a new job's count arriving without a reload.
    browser.goto(&url("/")).await.unwrap();
    wait_for("the queue's row", async || {
        queue_cells(&browser, &queue).await.len() >= 10
    })
    .await;
    assert_eq!(
        queue_cells(&browser, &queue).await[..3],
        [queue.as_str(), "running", "3"]
    );
    screenshot(&browser, "overview").await;
    browser
        .execute("window.notReloaded = true", vec![])
        .await
        .unwrap();
    admin
        .execute(
            "SELECT soniq.enqueue('emails.send_welcome', queue => $1)",
            &[&queue],
        )
        .await
        .unwrap();
    wait_for("the live count", async || {
        queue_cells(&browser, &queue)
            .await
            .get(2)
            .map(String::as_str)
            == Some("4")
    })
    .await;
    let same_page = browser
        .execute("return window.notReloaded === true", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, json!(true), "the count changed in place");

    // The jobs page, filtered through its form; a job's page.
    browser.goto(&url("/jobs")).await.unwrap();
    let form = browser.form(Locator::Css("form.filters")).await.unwrap();
    form.set_by_name("queue", &queue).await.unwrap();
    form.submit().await.unwrap();
    // The submit returns once the browser has it, not once the next page is loaded.
    let filtered = format!("/jobs?queue={queue}");
    wait_for("the filtered page", async || {
        browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&filtered)
            && browser
                .find_all(Locator::Css("tbody tr"))
                .await
                .unwrap()
                .len()
                == 4
    })
    .await;
    screenshot(&browser, "jobs").await;
    click(&browser, "tbody tr:last-child td a").await;
    assert_eq!(text_of(&browser, "dd.status").await, "queued");
    assert!(text_of(&browser, "pre.args")
        .await
        .contains("\"user_id\": 1"));
    screenshot(&browser, "job").await;

    browser
        .goto(&url(&format!("/dead-letter?queue={dead_queue}")))
        .await
        .unwrap();
    assert_eq!(
        browser
            .find_all(Locator::Css("tbody tr"))
            .await
            .unwrap()
            .len(),
        1
    );
    screenshot(&browser, "dead-letter").await;
    browser.goto(&url("/schedules")).await.unwrap();
    assert!(browser.source().await.unwrap().contains(&schedule));
    screenshot(&browser, "schedules").await;
    // A worker that registers just now (it never heartbeats, so it is soon stale and gone).
    let worker: Uuid = admin
        .query_one(
            "SELECT soniq.register_worker(hostname => 'app-1', pid => 4711, queues => ARRAY[$1], concurrency => 8)",
            &[&queue],
        )
        .await
        .unwrap()
        .get(0);
    browser.goto(&url("/workers")).await.unwrap();
    assert!(browser.source().await.unwrap().contains("app-1"));
    screenshot(&browser, "workers").await;

    // Log in, pause the queue, replay the dead job.
    browser.goto(&url("/login")).await.unwrap();
    let login = browser.form(Locator::Css("form")).await.unwrap();
    login.set_by_name("password", PASSWORD).await.unwrap();
    login.submit().await.unwrap();
    wait_for("the signed-in overview", async || {
        browser
            .source()
            .await
            .is_ok_and(|page| page.contains("Log out"))
    })
    .await;
    // The queues' table is swapped in at each count, so its button is clicked in one script
    // (a WebDriver element found there can be replaced before the click reaches it).
    let pause = format!("form[action='/queues/{queue}/pause'] button");
    browser
        .execute(
            "document.querySelector(arguments[0]).click()",
            vec![json!(pause)],
        )
        .await
        .unwrap();
    wait_for("the pause to land", async || {
        admin
            .query_one(
                "SELECT coalesce(bool_or(paused), false) FROM soniq.queues WHERE name = $1",
                &[&queue],
            )
            .await
            .unwrap()
            .get(0)
    })
    .await;
    let paused: bool = admin
        .query_one("SELECT paused FROM soniq.queues WHERE name = $1", &[&queue])
        .await
        .unwrap()
        .get(0);
    assert!(paused);
    wait_for("the paused row", async || {
        queue_cells(&browser, &queue)
            .await
            .get(1)
            .map(String::as_str)
            == Some("paused")
    })
    .await;
    screenshot(&browser, "overview-signed-in").await;

    browser
        .goto(&url(&format!("/jobs/{doomed}")))
        .await
        .unwrap();
    screenshot(&browser, "dead-job").await;
    click(
        &browser,
        &format!("form[action='/dead-letter/{doomed}/replay'] button"),
    )
    .await;
    wait_for("the replayed job's page", async || {
        !browser
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with(&doomed.to_string())
    })
    .await;
    assert_eq!(text_of(&browser, "dd.status").await, "queued");
    let replays: i32 = admin
        .query_one(
            "SELECT resurrection_count FROM soniq.dead_letter_jobs WHERE id = $1",
            &[&doomed],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(replays, 1);

    browser.close().await.unwrap();
    drop(driver);
    drop(server);
    // The control plane may have taken the silent worker back already.
    let _ = admin
        .execute("SELECT soniq.deregister_worker($1)", &[&worker])
        .await;
    admin
        .execute("SELECT soniq.schedule_remove($1)", &[&schedule])
        .await
        .unwrap();
    admin
        .execute("SELECT soniq.resume_queue($1)", &[&queue])
        .await
        .unwrap();
    drop_login(&admin, &operator).await;
}
