//! `soniq dashboard --actions`: logging in with the password, the session cookie and the CSRF
//! token each action needs, and each action's effect in the database (queues, schedules, dead
//! jobs: one, the ticked ones, every match with its confirmed count); the refusals (actions off,
//! no session, wrong password, no or a wrong CSRF token, a forged cookie, a viewer login)
//! change nothing; bad input is a 400, unknown things a 404.
#![cfg(all(feature = "e2e", feature = "cli"))]

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::Command;
use uuid::Uuid;

const PASSWORD: &str = "a long enough password";

fn dashboard(user: &str, actions: bool) -> (Runner, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
    command
        .args([
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--base-path",
            "/ops",
        ])
        .env("SONIQ_DATABASE_URL", url_as(user))
        .env("SONIQ_DASHBOARD_PASSWORD", PASSWORD);
    if actions {
        command.arg("--actions");
    }
    start_serving(command, "serving the dashboard")
}

/// An operator's browser: its session cookie and the CSRF token its pages carry.
struct Browser {
    address: SocketAddr,
    cookie: String,
    csrf: String,
}

impl Browser {
    fn log_in(address: SocketAddr) -> Browser {
        let (status, head, _) = http_request(
            address,
            "POST",
            "/ops/login",
            &[],
            &format!("password={}", PASSWORD.replace(' ', "+")),
        );
        assert_eq!(status, 303, "{head}");
        let set_cookie = header(&head, "set-cookie").expect("a session cookie");
        assert!(
            set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let mut browser = Browser {
            address,
            cookie,
            csrf: String::new(),
        };
        let (status, page) = browser.get("/ops/");
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("Log out"), "{page}");
        browser.csrf = csrf_of(&page);
        browser
    }

    fn get(&self, path: &str) -> (u16, String) {
        let cookie = format!("Cookie: {}", self.cookie);
        let (status, _, body) = http_request(self.address, "GET", path, &[&cookie], "");
        (status, body)
    }

    /// POSTs `form` with the session's CSRF token; the status, the redirect's target, the page.
    fn act(&self, path: &str, form: &str) -> (u16, Option<String>, String) {
        let form = if form.is_empty() {
            format!("csrf={}", self.csrf)
        } else {
            format!("csrf={}&{form}", self.csrf)
        };
        self.post(path, &form)
    }

    fn post(&self, path: &str, form: &str) -> (u16, Option<String>, String) {
        let cookie = format!("Cookie: {}", self.cookie);
        let (status, head, body) = http_request(self.address, "POST", path, &[&cookie], form);
        (status, header(&head, "location").map(str::to_string), body)
    }
}

/// The value of a page's hidden field `name`.
fn hidden(page: &str, name: &str) -> String {
    let field = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&field)
        .unwrap_or_else(|| panic!("a field {name}: {page}"))
        + field.len();
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

fn csrf_of(page: &str) -> String {
    hidden(page, "csrf")
}

async fn paused(admin: &tokio_postgres::Client, queue: &str) -> bool {
    admin
        .query_opt("SELECT paused FROM soniq.queues WHERE name = $1", &[&queue])
        .await
        .unwrap()
        .is_some_and(|row| row.get(0))
}

async fn resurrections(admin: &tokio_postgres::Client, ids: &[Uuid]) -> Vec<i32> {
    let mut counts = Vec::new();
    for id in ids {
        let row = admin
            .query_one(
                "SELECT resurrection_count FROM soniq.dead_letter_jobs WHERE id = $1",
                &[id],
            )
            .await
            .unwrap();
        counts.push(row.get(0));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_operator_acts_and_every_refusal_changes_nothing() {
    let admin = sql().await;
    let operator = create_login(&admin, "dash_admin", "soniq_admin").await;
    let queue = unique("acts");
    admin
        .execute(
            "SELECT soniq.enqueue($1 || '.work', queue => $1)",
            &[&queue],
        )
        .await
        .unwrap();
    let schedule = unique("acts_schedule");
    admin
        .execute(
            "SELECT soniq.schedule_add($1, 'acts.tick', every => interval '1 hour')",
            &[&schedule],
        )
        .await
        .unwrap();
    let dead_queue = unique("acts_dead");
    let dead = dead_jobs(&admin, &dead_queue, 6).await;
    let (server, address) = dashboard(&operator, true);

    // Refused before a session: nothing changes.
    let stranger = Browser {
        address,
        cookie: "soniq_session=1.2.3".into(),
        csrf: "00".into(),
    };
    let pause = format!("/ops/queues/{queue}/pause");
    let (status, _, page) = stranger.act(&pause, "");
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Log in first"), "{page}");
    let (status, head, page) = http_request(address, "POST", "/ops/login", &[], "password=guess");
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Wrong password."), "{page}");
    assert_eq!(header(&head, "set-cookie"), None);
    assert!(!paused(&admin, &queue).await);

    // Signed in: a page shows the forms; a form without its token, or with another, is refused.
    let browser = Browser::log_in(address);
    let (_, overview) = browser.get("/ops/");
    assert!(
        overview.contains(&format!("action=\"{pause}\"")),
        "{overview}"
    );
    let (status, _, page) = browser.post(&pause, "back=%2Fops%2F");
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("no CSRF token"), "{page}");
    let (status, _, page) = browser.post(&pause, &format!("csrf={}", "ab".repeat(32)));
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("not this session&#39;s") || page.contains("not this session's"),
        "{page}"
    );
    assert!(!paused(&admin, &queue).await, "refusals change nothing");

    // Queues.
    let (status, to, _) = browser.act(&pause, "back=%2Fops%2F");
    assert_eq!((status, to.as_deref()), (303, Some("/ops/")));
    assert!(paused(&admin, &queue).await);
    // A `back` elsewhere is not followed.
    for elsewhere in [
        "https%3A%2F%2Felsewhere.example%2F",
        "%2F%2Felsewhere.example%2F",
        "%2Fops%2F%2Felsewhere.example%2F",
        "%2Fops%2F%09%2Felsewhere.example%2F",
    ] {
        let (status, to, _) = browser.act(
            &format!("/ops/queues/{queue}/resume"),
            &format!("back={elsewhere}"),
        );
        assert_eq!((status, to.as_deref()), (303, Some("/ops/")), "{elsewhere}");
    }
    assert!(!paused(&admin, &queue).await);

    // Schedules.
    let enabled = async || -> bool {
        admin
            .query_one(
                "SELECT enabled FROM soniq.schedules WHERE name = $1",
                &[&schedule],
            )
            .await
            .unwrap()
            .get(0)
    };
    let (status, to, _) = browser.act(&format!("/ops/schedules/{schedule}/pause"), "");
    assert_eq!((status, to.as_deref()), (303, Some("/ops/schedules")));
    assert!(!enabled().await);
    let (_, schedules) = browser.get("/ops/schedules");
    assert!(
        schedules.contains(&format!("/ops/schedules/{schedule}/resume")),
        "{schedules}"
    );
    browser.act(&format!("/ops/schedules/{schedule}/resume"), "");
    assert!(enabled().await);
    // Fire now: its job, and that job's page.
    let (status, to, _) = browser.act(&format!("/ops/schedules/{schedule}/fire"), "");
    assert_eq!(status, 303);
    let fired: Uuid = to
        .unwrap()
        .trim_start_matches("/ops/jobs/")
        .parse()
        .unwrap();
    let (producer, last_job): (String, Uuid) = {
        let row = admin
            .query_one(
                "SELECT j.producer_id, s.last_job_id FROM soniq.jobs j, soniq.schedules s
                  WHERE j.id = $1 AND s.name = $2",
                &[&fired, &schedule],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (producer, last_job),
        (format!("schedule:{schedule}"), fired)
    );

    // One dead job: tag, replay (to the new job's page), delete.
    let (status, to, _) = browser.act(
        &format!("/ops/dead-letter/{}/tag", dead[0]),
        "tags=urgent%2C+billing",
    );
    assert_eq!(
        (status, to.as_deref()),
        (303, Some(&*format!("/ops/jobs/{}", dead[0])))
    );
    let tags: Vec<String> = admin
        .query_one(
            "SELECT tags FROM soniq.dead_letter_jobs WHERE id = $1",
            &[&dead[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tags, ["billing", "urgent"]);
    let (status, to, _) = browser.act(&format!("/ops/dead-letter/{}/replay", dead[0]), "");
    assert_eq!(status, 303);
    let new_job: Uuid = to
        .unwrap()
        .trim_start_matches("/ops/jobs/")
        .parse()
        .unwrap();
    let (status, page) = browser.get(&format!("/ops/jobs/{new_job}"));
    assert_eq!(status, 200);
    assert!(page.contains("<dd class=\"status\">queued</dd>"), "{page}");
    assert_eq!(resurrections(&admin, &dead[..1]).await, [1]);
    browser.act(&format!("/ops/dead-letter/{}/delete", dead[1]), "");
    let gone = admin
        .query_opt(
            "SELECT 1 FROM soniq.dead_letter_jobs WHERE id = $1",
            &[&dead[1]],
        )
        .await
        .unwrap();
    assert!(gone.is_none());

    // The ticked ones.
    let ticked = format!("id={}&id={}", dead[2], dead[3]);
    let (status, _, page) = browser.act("/ops/dead-letter/replay", &ticked);
    assert_eq!(status, 303, "{page}");
    assert_eq!(resurrections(&admin, &dead[2..]).await, [1, 1, 0, 0]);

    // Every match: the count confirmed, refused when it is not the count any more; sent twice,
    // it replays once.
    let (status, page) = browser.get(&format!(
        "/ops/dead-letter/replay-matching?queue={dead_queue}"
    ));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Replay <strong class=\"count\">5</strong> dead jobs"),
        "{page}"
    );
    let confirmed_at = hidden(&page, "confirmed_at");
    let (status, _, page) = browser.act(
        "/ops/dead-letter/replay-matching",
        &format!("queue={dead_queue}&count=4&confirmed_at={confirmed_at}"),
    );
    assert_eq!(status, 409, "{page}");
    assert_eq!(
        resurrections(&admin, &dead[2..]).await,
        [1, 1, 0, 0],
        "nothing replayed"
    );
    let confirmed = format!("queue={dead_queue}&count=5&confirmed_at={confirmed_at}");
    let (status, to, page) = browser.act("/ops/dead-letter/replay-matching", &confirmed);
    assert_eq!(status, 303, "{page}");
    let to = to.expect("back to the dead letter");
    assert!(to.contains("replayed=5"), "{to}");
    let (_, page) = browser.get(&to);
    assert!(
        page.contains("Replayed <strong class=\"count\">5</strong>"),
        "{page}"
    );
    let mut remaining = vec![dead[0]];
    remaining.extend(&dead[2..]);
    assert_eq!(resurrections(&admin, &remaining).await, [2, 2, 2, 1, 1]);
    let (status, _, page) = browser.act("/ops/dead-letter/replay-matching", &confirmed);
    assert_eq!(status, 409, "the same form again: {page}");
    assert_eq!(
        resurrections(&admin, &remaining).await,
        [2, 2, 2, 1, 1],
        "replayed once"
    );

    // Bad input and unknown things.
    for (path, form, status, expected) in [
        ("/ops/queues/1bad/pause", "", 400, "is not a queue name"),
        ("/ops/queues/ok/explode", "", 404, "no action"),
        ("/ops/dead-letter/nope/replay", "", 400, "is not a job id"),
        (
            &*format!("/ops/dead-letter/{}/replay", Uuid::from_u128(9)),
            "",
            404,
            "does not exist",
        ),
        (
            &*format!("/ops/dead-letter/{}/tag", dead[0]),
            "tags=+",
            400,
            "at least one tag",
        ),
        ("/ops/dead-letter/replay", "", 400, "tick at least one"),
        ("/ops/dead-letter/replay", "id=zz", 400, "is not a job id"),
        ("/ops/dead-letter/replay-matching", "queue=x", 400, "count"),
        (
            "/ops/dead-letter/replay-matching",
            "queue=x&count=1&confirmed_at=99999999999999999999",
            400,
            "is not a time",
        ),
        (
            &*format!("/ops/schedules/{schedule}/pause"),
            "force=yes",
            400,
            "no parameter",
        ),
    ] {
        let (got, _, page) = browser.act(path, form);
        assert_eq!(got, status, "{path} {form}: {page}");
        assert!(page.contains(expected), "{path} {form}: {page}");
    }

    // Logging out ends the cookie.
    let cookie = format!("Cookie: {}", browser.cookie);
    let (status, head, _) = http_request(
        address,
        "POST",
        "/ops/logout",
        &[&cookie],
        &format!("csrf={}", browser.csrf),
    );
    assert_eq!(status, 303);
    assert!(
        header(&head, "set-cookie").unwrap().contains("Max-Age=0"),
        "{head}"
    );
    let (status, _, page) = browser.act(&format!("/ops/queues/{queue}/pause"), "");
    assert_eq!(
        status, 403,
        "a copy of the cookie is no session after logging out: {page}"
    );
    assert!(!paused(&admin, &queue).await);

    drop(server);
    admin
        .execute("SELECT soniq.schedule_remove($1)", &[&schedule])
        .await
        .unwrap();
    drop_login(&admin, &operator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_login_or_a_dashboard_without_actions_changes_nothing() {
    let admin = sql().await;
    let viewer = create_login(&admin, "dash_viewer", "soniq_viewer").await;
    let queue = unique("acts_viewer");
    admin
        .execute(
            "SELECT soniq.enqueue($1 || '.work', queue => $1)",
            &[&queue],
        )
        .await
        .unwrap();
    let dead_queue = unique("acts_viewer_dead");
    let dead = dead_jobs(&admin, &dead_queue, 1).await;

    let (server, address) = dashboard(&viewer, true);
    let browser = Browser::log_in(address);
    for path in [
        format!("/ops/queues/{queue}/pause"),
        format!("/ops/dead-letter/{}/replay", dead[0]),
        format!("/ops/dead-letter/{}/delete", dead[0]),
    ] {
        let (status, _, page) = browser.act(&path, "");
        assert_eq!(status, 403, "{path}: {page}");
        assert!(
            page.contains("actions need a login with soniq_admin"),
            "{path}: {page}"
        );
    }
    assert!(!paused(&admin, &queue).await);
    assert_eq!(resurrections(&admin, &dead).await, [0]);
    drop(server);

    let (server, address) = dashboard(&viewer, false);
    let (status, page) = http_get(address, "/ops/login");
    assert_eq!(status, 404, "{page}");
    let (status, _, page) = http_request(
        address,
        "POST",
        &format!("/ops/queues/{queue}/pause"),
        &[],
        "csrf=00",
    );
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Actions are off"), "{page}");
    let (_, overview) = http_get(address, "/ops/");
    assert!(
        !overview.contains("<form class=\"action\""),
        "no forms: {overview}"
    );
    assert!(!paused(&admin, &queue).await);
    drop(server);
    drop_login(&admin, &viewer).await;
}

#[test]
fn actions_without_a_good_password_are_refused_at_start() {
    for (password, expected) in [
        (
            None,
            "--actions needs the password in SONIQ_DASHBOARD_PASSWORD",
        ),
        (Some("short"), "at least 12 characters"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
        command
            .args(["dashboard", "--actions", "--listen", "127.0.0.1:0"])
            .env("SONIQ_DATABASE_URL", url_as("postgres"))
            .env_remove("SONIQ_DASHBOARD_PASSWORD");
        if let Some(password) = password {
            command.env("SONIQ_DASHBOARD_PASSWORD", password);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}
