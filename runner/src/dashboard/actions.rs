//! What a signed-in operator may do: pause and resume queues and schedules; replay, delete and
//! tag dead jobs, one, the ticked ones, or every match of the dead letter's filters.
//! Every action is a POST whose form carries the session's CSRF token; each is one call of the
//! SQL API with the dashboard's login, so a login without `soniq_admin` is refused by the
//! database (a 403 page) and nothing changes. Then it sends the browser back where it was.

use super::dead_letter::{dead_query, FILTERS};
use super::html::{layout, Actions};
use super::params::{check_queue_name, parse_uuid, schedule_name, Params};
use super::session::{set_cookie, Session, SESSION_LIFETIME};
use super::{cookie_header, Dashboard, PageError};
use crate::store::postgres::{self as store, browse, dead_letter, schedules};
use crate::ReplayOptions;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A replay of "every match" replays at most this many dead jobs; narrower filters do more.
pub const MAX_REPLAY: usize = 100_000;
/// Ticked jobs replayed at once, at most.
const MAX_TICKED: usize = 1000;
/// `soniq.replay_many` calls take this many jobs each (one transaction holds them all).
const REPLAY_CHUNK: usize = 1000;
/// The transaction-level advisory lock that replays of every match take, so two of them (a
/// form sent twice) run one after the other and the second finds nothing left to replay.
const REPLAY_LOCK: i64 = 0x736f_6e71_6472_6570; // "sonqdrep"

const ACTIONS_OFF: &str =
    "Actions are off: start the dashboard with --actions and SONIQ_DASHBOARD_PASSWORD set.";

pub fn routes(router: Router<Arc<Dashboard>>, base: &str) -> Router<Arc<Dashboard>> {
    router
        .route(&format!("{base}/login"), get(login_page).post(login))
        .route(&format!("{base}/logout"), post(logout))
        .route(&format!("{base}/queues/{{queue}}/{{verb}}"), post(queue))
        .route(
            &format!("{base}/schedules/{{name}}/{{verb}}"),
            post(schedule),
        )
        .route(&format!("{base}/dead-letter/replay"), post(replay_ticked))
        .route(
            &format!("{base}/dead-letter/replay-matching"),
            get(super::dead_letter::confirm_replay).post(replay_matching),
        )
        .route(
            &format!("{base}/dead-letter/{{id}}/{{verb}}"),
            post(dead_job),
        )
}

pub fn not_signed_in(dashboard: &Dashboard) -> PageError {
    match dashboard.options.actions {
        None => PageError::Forbidden(ACTIONS_OFF.into()),
        Some(_) => PageError::Forbidden(format!(
            "Log in first ({}/login): actions need the dashboard's password.",
            dashboard.options.base_path
        )),
    }
}

/// The form of an action, once its session and CSRF token are good.
fn authorized(
    dashboard: &Dashboard,
    headers: &HeaderMap,
    body: &Bytes,
    fields: &[&str],
    lists: &[&str],
) -> Result<Params, PageError> {
    authorized_session(dashboard, headers, body, fields, lists).map(|(form, _)| form)
}

fn authorized_session(
    dashboard: &Dashboard,
    headers: &HeaderMap,
    body: &Bytes,
    fields: &[&str],
    lists: &[&str],
) -> Result<(Params, Session), PageError> {
    let guard = dashboard
        .options
        .actions
        .as_ref()
        .ok_or_else(|| PageError::Forbidden(ACTIONS_OFF.into()))?;
    let session = guard
        .session(cookie_header(headers))
        .ok_or_else(|| not_signed_in(dashboard))?;
    let text = std::str::from_utf8(body)
        .map_err(|_| PageError::BadRequest("the form is not UTF-8".into()))?;
    let mut known = vec!["csrf", "back"];
    known.extend(fields);
    let form = Params::parse_with_lists(text, &known, lists)?;
    match form.get("csrf") {
        None => Err(PageError::Forbidden(
            "The form carries no CSRF token: reload the page and submit it again.".into(),
        )),
        Some(token) if !guard.csrf_matches(&session, token) => Err(PageError::Forbidden(
            "The form's CSRF token is not this session's: reload the page and submit it again."
                .into(),
        )),
        Some(_) => Ok((form, session)),
    }
}

/// Whether `to` is a path of this dashboard: under the base path, and nothing a browser could
/// read as another site (`//host`, `/\\host`, control characters it would drop first).
fn is_own_page(base: &str, to: &str) -> bool {
    to.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| {
            !rest.starts_with(['/', '\\'])
                && !to.contains('\\')
                && !to.chars().any(char::is_control)
        })
}

/// Where to send the browser after an action: the form's `back` if it is a page of this
/// dashboard, else `default`.
fn back(dashboard: &Dashboard, form: &Params, default: String) -> Redirect {
    let base = &dashboard.options.base_path;
    let to = form
        .get("back")
        .filter(|to| is_own_page(base, to))
        .map_or(default, str::to_string);
    Redirect::to(&to)
}

fn unknown_action(verb: &str) -> PageError {
    PageError::NotFound(format!("There is no action {verb:?} here."))
}

async fn login_page(State(dashboard): State<Arc<Dashboard>>) -> Result<Html<String>, PageError> {
    if dashboard.options.actions.is_none() {
        return Err(PageError::NotFound(ACTIONS_OFF.into()));
    }
    Ok(Html(login_form(&dashboard, None).into_string()))
}

fn login_form(dashboard: &Dashboard, refusal: Option<&str>) -> maud::Markup {
    let viewer = super::html::Viewer {
        base: dashboard.options.base_path.clone(),
        actions: Actions::LoggedOut,
    };
    let base = &viewer.base;
    layout(
        &viewer,
        "Log in",
        html! {
            @if let Some(refusal) = refusal { p.bad { (refusal) } }
            form method="post" action=(format!("{base}/login")) {
                label { "password " input type="password" name="password" autofocus; }
                button type="submit" { "Log in" }
            }
            p.note { "A session lasts " (SESSION_LIFETIME.as_secs() / 3600) " hours, or until the dashboard restarts." }
        },
    )
}

async fn login(State(dashboard): State<Arc<Dashboard>>, body: Bytes) -> Response {
    let Some(guard) = &dashboard.options.actions else {
        return PageError::NotFound(ACTIONS_OFF.into()).into_response();
    };
    let password = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "password")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if !guard.password_matches(&password) {
        tracing::warn!("a wrong password was given to the dashboard");
        guard.refuse_slowly().await;
        let page = login_form(&dashboard, Some("Wrong password."));
        return (StatusCode::FORBIDDEN, Html(page.into_string())).into_response();
    }
    let session = match guard.new_session() {
        Ok(session) => session,
        Err(e) => return PageError::Unavailable(crate::Error::Invalid(e)).into_response(),
    };
    let base = &dashboard.options.base_path;
    let cookie = set_cookie(base, &session, SESSION_LIFETIME);
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{base}/")),
    )
        .into_response()
}

async fn logout(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (_, session) = authorized_session(&dashboard, &headers, &body, &[], &[])?;
    if let Some(guard) = &dashboard.options.actions {
        guard.end(&session);
    }
    let base = &dashboard.options.base_path;
    let cookie = set_cookie(base, "", Duration::ZERO);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{base}/")),
    )
        .into_response())
}

async fn queue(
    State(dashboard): State<Arc<Dashboard>>,
    Path((queue, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let form = authorized(&dashboard, &headers, &body, &[], &[])?;
    let queue = check_queue_name(&queue)?;
    let client = dashboard.app.connection().await?;
    match verb.as_str() {
        "pause" => store::queue_pause(&**client, &queue).await?,
        "resume" => store::queue_resume(&**client, &queue).await?,
        _ => return Err(unknown_action(&verb)),
    };
    tracing::info!(%queue, action = %verb, "dashboard action");
    Ok(back(
        &dashboard,
        &form,
        format!("{}/", dashboard.options.base_path),
    ))
}

async fn schedule(
    State(dashboard): State<Arc<Dashboard>>,
    Path((name, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let form = authorized(&dashboard, &headers, &body, &[], &[])?;
    let name = schedule_name(&name)?;
    let client = dashboard.app.connection().await?;
    match verb.as_str() {
        "pause" => schedules::pause(&**client, &name).await?,
        "resume" => schedules::resume(&**client, &name).await?,
        "fire" => {
            let job = schedules::fire(&**client, &name).await?;
            tracing::info!(schedule = %name, %job, "dashboard action: fired");
            return Ok(Redirect::to(&format!(
                "{}/jobs/{job}",
                dashboard.options.base_path
            )));
        }
        _ => return Err(unknown_action(&verb)),
    };
    tracing::info!(schedule = %name, action = %verb, "dashboard action");
    let default = format!("{}/schedules", dashboard.options.base_path);
    Ok(back(&dashboard, &form, default))
}

async fn dead_job(
    State(dashboard): State<Arc<Dashboard>>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let form = authorized(&dashboard, &headers, &body, &["tags"], &[])?;
    let id = parse_uuid("the dead job", &id)?;
    let base = &dashboard.options.base_path;
    let client = dashboard.app.connection().await?;
    let to = match verb.as_str() {
        "replay" => {
            let job = dead_letter::replay(&**client, id, &ReplayOptions::default(), false).await?;
            // The new job's page, where the replay can be followed.
            return Ok(Redirect::to(&format!("{base}/jobs/{}", job.unwrap_or(id))));
        }
        "delete" => {
            dead_letter::delete(&**client, id).await?;
            format!("{base}/dead-letter")
        }
        "tag" => {
            let tags: Vec<&str> = form
                .get("tags")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .collect();
            if tags.is_empty() {
                return Err(PageError::BadRequest("tags: give at least one tag".into()));
            }
            dead_letter::tag(&**client, id, &tags).await?;
            format!("{base}/jobs/{id}")
        }
        _ => return Err(unknown_action(&verb)),
    };
    tracing::info!(dead_job = %id, action = %verb, "dashboard action");
    Ok(back(&dashboard, &form, to))
}

async fn replay_ticked(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let form = authorized(&dashboard, &headers, &body, &[], &["id"])?;
    let ids = form
        .list("id")
        .iter()
        .map(|id| parse_uuid("id", id))
        .collect::<Result<Vec<Uuid>, _>>()?;
    if ids.is_empty() {
        return Err(PageError::BadRequest(
            "tick at least one dead job to replay".into(),
        ));
    }
    if ids.len() > MAX_TICKED {
        return Err(PageError::BadRequest(format!(
            "{} jobs are ticked; at most {MAX_TICKED} are replayed at once",
            ids.len()
        )));
    }
    let client = dashboard.app.connection().await?;
    dead_letter::replay_many(&**client, &ids, &ReplayOptions::default()).await?;
    tracing::info!(
        jobs = ids.len(),
        "dashboard action: replayed the ticked dead jobs"
    );
    let default = format!("{}/dead-letter", dashboard.options.base_path);
    Ok(back(&dashboard, &form, default))
}

/// Replays every dead job the filters match and that nobody replayed since the confirming
/// page counted them, if they are as many as it counted; all in one transaction (all or none),
/// under a lock that makes a second sending of the form wait, then find nothing to replay (a
/// 409). Then the dead letter, with the count replayed.
async fn replay_matching(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, PageError> {
    let mut fields = FILTERS.to_vec();
    fields.extend(["count", "confirmed_at"]);
    let form = authorized(&dashboard, &headers, &body, &fields, &[])?;
    let missing =
        |what: &str| PageError::BadRequest(format!("{what} is missing: confirm the replay again"));
    let confirmed = form.count("count")?.ok_or_else(|| missing("count"))?;
    let mut filters = dead_query(&form)?;
    filters.not_replayed_since = Some(
        form.micros("confirmed_at")?
            .ok_or_else(|| missing("confirmed_at"))?,
    );
    if confirmed as usize > MAX_REPLAY {
        return Err(PageError::BadRequest(format!(
            "{confirmed} dead jobs match; one replay takes at most {MAX_REPLAY}: narrow the filters"
        )));
    }
    let mut client = dashboard.app.connection().await?;
    let transaction = client.transaction().await.map_err(crate::Error::from)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&REPLAY_LOCK])
        .await
        .map_err(crate::Error::from)?;
    let ids = browse::dead_ids(&*transaction, &filters).await?;
    if ids.len() as u64 != confirmed {
        return Err(PageError::Conflict(format!(
            "{confirmed} dead jobs matched when you confirmed, {} of them are still to replay: \
             review the replay again.",
            ids.len()
        )));
    }
    for chunk in ids.chunks(REPLAY_CHUNK) {
        dead_letter::replay_many(&*transaction, chunk, &ReplayOptions::default()).await?;
    }
    transaction.commit().await.map_err(crate::Error::from)?;
    tracing::info!(
        jobs = ids.len(),
        "dashboard action: replayed every matching dead job"
    );
    let mut query = form_urlencoded::Serializer::new(form.query_of(&FILTERS));
    query.append_pair("replayed", &ids.len().to_string());
    Ok(Redirect::to(&format!(
        "{}/dead-letter?{}",
        dashboard.options.base_path,
        query.finish()
    )))
}

#[cfg(test)]
mod tests {
    use super::is_own_page;

    #[test]
    fn only_the_dashboards_own_pages_are_gone_back_to() {
        for (base, to) in [
            ("", "/"),
            ("", "/jobs?queue=a"),
            ("/ops", "/ops/"),
            ("/ops", "/ops/dead-letter"),
        ] {
            assert!(is_own_page(base, to), "{base} {to}");
        }
        for (base, to) in [
            ("", "//evil.example/"),
            ("", "/\\evil.example/"),
            ("", "/\t/evil.example/"),
            ("", "https://evil.example/"),
            ("", "jobs"),
            ("/ops", "/opsx/"),
            ("/ops", "/ops//evil.example/"),
            ("/ops", "/other/"),
            ("", "/jobs\r\nSet-Cookie: x=y"),
        ] {
            assert!(!is_own_page(base, to), "{base} {to:?}");
        }
    }
}
