//! The dead-letter page: dead jobs filtered by task, queue, reason, tag and when they died,
//! newest deaths first, in keyset pages.

use super::html::{first_line, layout, pager, time};
use super::params::{dead_cursor, parse_dead_cursor, Params};
use super::{Dashboard, PageError};
use crate::store::postgres::browse::{self, DeadQuery, DeadRow, Paged};
use crate::store::DeadLetterReason;
use axum::extract::{RawQuery, State};
use axum::response::Html;
use maud::{html, Markup};
use std::sync::Arc;

const PAGE_SIZE: usize = super::jobs::PAGE_SIZE;

const PARAMETERS: [&str; 8] = [
    "queue", "task", "reason", "tag", "from", "to", "before", "after",
];

const FILTERS: [&str; 6] = ["queue", "task", "reason", "tag", "from", "to"];

fn dead_query(params: &Params) -> Result<DeadQuery, PageError> {
    let (moved_from, moved_to) = params.time_range("from", "to")?;
    let reasons: Vec<&str> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
    Ok(DeadQuery {
        queue: params.queue("queue")?,
        task_name: params.task_name("task")?,
        reason: params.one_of("reason", &reasons)?,
        tag: params.tag("tag")?,
        moved_from,
        moved_to,
    })
}

pub async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, PageError> {
    let params = Params::parse(query.as_deref(), &PARAMETERS)?;
    let filters = dead_query(&params)?;
    let page = params.page(parse_dead_cursor)?;
    let client = dashboard.app.connection().await?;
    let paged = browse::dead_jobs(&**client, &filters, &page, PAGE_SIZE).await?;
    Ok(Html(
        render(&dashboard.options.base_path, &params, &paged).into_string(),
    ))
}

fn render(base: &str, params: &Params, paged: &Paged<DeadRow>) -> Markup {
    let value = |key| params.get(key).unwrap_or("");
    let path = format!("{base}/dead-letter");
    let mut filters = form_urlencoded::Serializer::new(String::new());
    for key in FILTERS {
        if let Some(value) = params.get(key) {
            filters.append_pair(key, value);
        }
    }
    layout(
        base,
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
            p.note { "Newest deaths first; times in UTC." }
            @if paged.rows.is_empty() {
                p { "No dead job matches." }
            } @else {
                table {
                    thead { tr {
                        th { "job" } th.text { "task" } th.text { "queue" } th.text { "reason" } th { "attempts" }
                        th { "died" } th { "replayed" } th.text { "tags" } th.text { "last error" }
                    } }
                    tbody {
                        @for dead in &paged.rows {
                            tr {
                                td { a href=(format!("{base}/jobs/{}", dead.id)) { (dead.id) } }
                                td.text { (dead.task_name) } td.text { (dead.queue) } td.text { (dead.reason) }
                                td { (dead.attempts) } td { (time(dead.moved_at)) } td { (dead.resurrection_count) }
                                td.text { (dead.tags.join(", ")) }
                                td.text { (dead.last_error.as_deref().map(first_line).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            (pager(&path, &filters.finish(), paged, |key| dead_cursor(*key)))
        },
    )
}
