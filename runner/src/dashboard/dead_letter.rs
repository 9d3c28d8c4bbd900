//! The dead-letter page: dead jobs filtered by task, queue, reason, tag and when they died,
//! newest deaths first, in keyset pages; signed in, a replay of the jobs ticked, and the page
//! that confirms a replay of every match (with their count).

use super::html::{first_line, layout, pager, time, Viewer};
use super::params::{dead_cursor, micros, parse_dead_cursor, Params};
use super::{Dashboard, PageError};
use crate::store::postgres::browse::{self, DeadQuery, DeadRow, Paged};
use crate::store::DeadLetterReason;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{html, Markup};
use std::sync::Arc;

const PAGE_SIZE: usize = super::jobs::PAGE_SIZE;

const PARAMETERS: [&str; 9] = [
    "queue", "task", "reason", "tag", "from", "to", "before", "after", "replayed",
];

pub const FILTERS: [&str; 6] = ["queue", "task", "reason", "tag", "from", "to"];

pub fn dead_query(params: &Params) -> Result<DeadQuery, PageError> {
    let (moved_from, moved_to) = params.time_range("from", "to")?;
    let reasons: Vec<&str> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
    Ok(DeadQuery {
        queue: params.queue("queue")?,
        task_name: params.task_name("task")?,
        reason: params.one_of("reason", &reasons)?,
        tag: params.tag("tag")?,
        moved_from,
        moved_to,
        not_replayed_since: None,
    })
}

pub async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let params = Params::parse(query.as_deref(), &PARAMETERS)?;
    let filters = dead_query(&params)?;
    let page = params.page(parse_dead_cursor)?;
    // After a replay of every match: how many it replayed.
    let replayed = params.count("replayed")?;
    let mut client = dashboard.app.connection().await?;
    let snapshot = super::snapshot(&mut client).await?;
    let paged = browse::dead_jobs(&*snapshot, &filters, &page, PAGE_SIZE).await?;
    let viewer = dashboard.viewer(&headers);
    Ok(Html(
        render(&viewer, &params, &paged, replayed).into_string(),
    ))
}

fn render(
    viewer: &Viewer,
    params: &Params,
    paged: &Paged<DeadRow>,
    replayed: Option<u64>,
) -> Markup {
    let base = &viewer.base;
    let value = |key| params.get(key).unwrap_or("");
    let path = format!("{base}/dead-letter");
    let filters = params.query_of(&FILTERS);
    let here = if filters.is_empty() {
        path.clone()
    } else {
        format!("{path}?{filters}")
    };
    layout(
        viewer,
        "Dead letter",
        html! {
            form.filters method="get" action=(path) {
                label { "task " input name="task" value=(value("task")) size="16"; }
                label { "queue " input name="queue" value=(value("queue")) size="12"; }
                label { "reason "
                    select name="reason" {
                        option value="" { "any" }
                        @for reason in DeadLetterReason::ALL {
                            option value=(reason.as_str()) selected[value("reason") == reason.as_str()] { (reason.as_str()) }
                        }
                    }
                }
                label { "tag " input name="tag" value=(value("tag")) size="12"; }
                label { "died from " input name="from" value=(value("from")) placeholder="2026-12-02T10:00" size="16"; }
                label { "to " input name="to" value=(value("to")) size="16"; }
                button type="submit" { "Filter" }
            }
            @if let Some(replayed) = replayed {
                p.done { "Replayed " strong.count { (replayed) } " dead jobs: each is a new job, queued now." }
            }
            p.note { "Newest deaths first; times in UTC." }
            @if paged.rows.is_empty() {
                p { "No dead job matches." }
            } @else {
                table {
                    thead { tr {
                        th { "job" } th.text { "task" } th.text { "queue" } th.text { "reason" } th { "attempts" }
                        th { "died" } th { "replayed" } th.text { "tags" } th.text { "last error" }
                        @if viewer.signed_in() { th { "replay" } }
                    } }
                    tbody {
                        @for dead in &paged.rows {
                            tr {
                                td { a href=(format!("{base}/jobs/{}", dead.id)) { (dead.id) } }
                                td.text { (dead.task_name) } td.text { (dead.queue) } td.text { (dead.reason) }
                                td { (dead.attempts) } td { (time(dead.moved_at)) } td { (dead.resurrection_count) }
                                td.text { (dead.tags.join(", ")) }
                                td.text { (dead.last_error.as_deref().map(first_line).unwrap_or("")) }
                                @if viewer.signed_in() {
                                    td { input type="checkbox" name="id" value=(dead.id) form="replay-selected"; }
                                }
                            }
                        }
                    }
                }
                @if viewer.signed_in() {
                    form.action #replay-selected method="post" action=(format!("{path}/replay")) {
                        (viewer.csrf_field())
                        input type="hidden" name="back" value=(here);
                        button type="submit" { "Replay the ticked jobs" }
                    }
                    " "
                    a href=(format!("{path}/replay-matching{}", if filters.is_empty() { String::new() } else { format!("?{filters}") })) {
                        "Replay every match…"
                    }
                }
            }
            (pager(&path, &filters, paged, |key| dead_cursor(*key)))
        },
    )
}

/// The page that confirms a replay of every dead job the filters match: how many, and a form
/// that carries the filters, that count and the database's time of it (the replay takes the
/// matches not replayed since, and refuses if they are not as many).
pub async fn confirm_replay(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let params = Params::parse(query.as_deref(), &FILTERS)?;
    let filters = dead_query(&params)?;
    let viewer = dashboard.viewer(&headers);
    if !viewer.signed_in() {
        return Err(super::actions::not_signed_in(&dashboard));
    }
    let client = dashboard.app.connection().await?;
    let (count, counted_at) = browse::dead_count(&**client, &filters).await?;
    let base = &viewer.base;
    let described: Vec<String> = params
        .pairs(&FILTERS)
        .iter()
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    let page = layout(
        &viewer,
        "Replay every match",
        html! {
            p {
                "Replay " strong.count { (count) } " dead jobs"
                @if described.is_empty() { " (every dead job)" } @else { " matching " (described.join(", ")) }
                "? Each becomes a new job, queued now; the dead rows stay, counted as replayed."
            }
            @if count > 0 {
                form.action method="post" action=(format!("{base}/dead-letter/replay-matching")) {
                    (viewer.csrf_field())
                    input type="hidden" name="count" value=(count);
                    input type="hidden" name="confirmed_at" value=(micros(counted_at));
                    @for (key, value) in params.pairs(&FILTERS) { input type="hidden" name=(key) value=(value); }
                    button type="submit" { "Replay " (count) " jobs" }
                }
            }
            p { a href=(format!("{base}/dead-letter?{}", params.query_of(&FILTERS))) { "Back to the dead letter" } }
        },
    );
    Ok(Html(page.into_string()))
}
