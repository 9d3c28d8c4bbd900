//! The jobs page (filtered by queue, status, task and creation time; a search by id; keyset
//! pages, newest first) and a job's own page (args, result, error, attempts, timeline, its
//! worker and its dead-letter row).

use super::html::{first_line, json, layout, maybe_time, pager, time, Viewer};
use super::params::{parse_uuid, Params};
use super::{Dashboard, PageError};
use crate::store::postgres::browse::{self, JobDetail, JobQuery, JobRow, Paged};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};
use std::sync::Arc;
use uuid::Uuid;

/// Rows on one page.
pub const PAGE_SIZE: usize = 50;

/// The statuses of jobs in `soniq.jobs`; dead jobs have the dead-letter page.
const STATUSES: [&str; 5] = ["waiting", "queued", "processing", "done", "cancelled"];

/// The filters, which the pager's links keep.
const FILTERS: [&str; 5] = ["queue", "status", "task", "from", "to"];

const PARAMETERS: [&str; 8] = [
    "queue", "status", "task", "from", "to", "id", "before", "after",
];

fn job_query(params: &Params) -> Result<JobQuery, PageError> {
    let (created_from, created_to) = params.time_range("from", "to")?;
    Ok(JobQuery {
        queue: params.queue("queue")?,
        status: params.one_of("status", &STATUSES)?,
        task_name: params.task_name("task")?,
        created_from,
        created_to,
    })
}

pub async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = Params::parse(query.as_deref(), &PARAMETERS)?;
    let base = &dashboard.options.base_path;
    if let Some(id) = params.uuid("id")? {
        return Ok(Redirect::to(&format!("{base}/jobs/{id}")).into_response());
    }
    let filters = job_query(&params)?;
    let page = params.page(|text| Uuid::try_parse(text).ok())?;
    let mut client = dashboard.app.connection().await?;
    let snapshot = super::snapshot(&mut client).await?;
    let paged = browse::jobs(&*snapshot, &filters, &page, PAGE_SIZE).await?;
    let viewer = dashboard.viewer(&headers);
    Ok(Html(render_list(&viewer, &params, &paged).into_string()).into_response())
}

fn render_list(viewer: &Viewer, params: &Params, paged: &Paged<JobRow>) -> Markup {
    let base = &viewer.base;
    let value = |key| params.get(key).unwrap_or("");
    let path = format!("{base}/jobs");
    layout(
        viewer,
        "Jobs",
        html! {
            form.filters method="get" action=(path) {
                label { "queue " input name="queue" value=(value("queue")) size="12"; }
                label { "status "
                    select name="status" {
                        option value="" { "any" }
                        @for status in STATUSES {
                            option value=(status) selected[value("status") == status] { (status) }
                        }
                    }
                }
                label { "task " input name="task" value=(value("task")) size="16"; }
                label { "created from " input name="from" value=(value("from")) placeholder="2026-12-02T10:00" size="16"; }
                label { "to " input name="to" value=(value("to")) size="16"; }
                button type="submit" { "Filter" }
            }
            form.filters method="get" action=(path) {
                label { "job id " input name="id" size="36"; }
                button type="submit" { "Find" }
            }
            p.note { "Newest first; times in UTC. Dead jobs are on the " a href=(format!("{base}/dead-letter")) { "dead letter" } " page." }
            @if paged.rows.is_empty() {
                p { "No job matches." }
            } @else {
                table {
                    thead { tr {
                        th { "job" } th.text { "task" } th.text { "queue" } th.text { "status" } th { "attempts" }
                        th { "created" } th { "scheduled" } th { "finished" } th.text { "last error" }
                    } }
                    tbody {
                        @for job in &paged.rows {
                            tr {
                                td { a href=(format!("{base}/jobs/{}", job.id)) { (job.id) } }
                                td.text { (job.task_name) } td.text { (job.queue) } td.text { (job.status) }
                                td { (job.attempts) "/" (job.max_attempts) }
                                td { (time(job.created_at)) } td { (maybe_time(job.scheduled_at)) }
                                td { (maybe_time(job.finished_at)) }
                                td.text { (job.last_error.as_deref().map(first_line).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            (pager(&path, &params.query_of(&FILTERS), paged, Uuid::to_string))
        },
    )
}

pub async fn show(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = parse_uuid("the job", &id)?;
    let client = dashboard.app.connection().await?;
    match browse::job(&**client, id).await? {
        Some(job) => {
            let viewer = dashboard.viewer(&headers);
            Ok(Html(render_job(&viewer, &job).into_string()).into_response())
        }
        None => Err(PageError::NotFound(format!(
            "No job {id}: it never existed, or it was done and pruned after its result TTL."
        ))),
    }
}

fn render_job(viewer: &Viewer, job: &JobDetail) -> Markup {
    let base = &viewer.base;
    let job_link = |id: &uuid::Uuid| html! { a href=(format!("{base}/jobs/{id}")) { (id) } };
    let here = format!("{base}/jobs/{}", job.id);
    layout(
        viewer,
        &format!("Job {}", job.id),
        html! {
            dl {
                dt { "task" } dd { (job.task_name) }
                dt { "queue" } dd { a href=(format!("{base}/jobs?queue={}", job.queue)) { (job.queue) } }
                dt { "status" } dd.status { (job.status) }
                dt { "priority" } dd { (job.priority) }
                dt { "attempts" } dd { (job.attempts) " of " (job.max_attempts) }
                @if let Some(worker) = &job.worker {
                    dt { "worker" }
                    dd {
                        (worker.id)
                        @match (&worker.hostname, worker.pid) {
                            (Some(host), Some(pid)) => { " (" (host) ", pid " (pid) ")" },
                            (None, None) => span.note { " (no longer registered)" },
                            _ => {},
                        }
                    }
                }
                @if let Some(by) = &job.enqueued_by { dt { "enqueued by" } dd { (by) } }
                @if let Some(producer) = &job.producer_id { dt { "producer" } dd { (producer) } }
                @if !job.depends_on.is_empty() {
                    dt { "depends on" }
                    dd { @for id in &job.depends_on { (job_link(id)) " " } }
                }
            }
            h2 { "Timeline" }
            dl.timeline {
                dt { "created" } dd { (time(job.created_at)) }
                @if let Some(at) = job.scheduled_at { dt { "scheduled" } dd { (time(at)) } }
                @if let Some(at) = job.started_at { dt { "started" } dd { (time(at)) } }
                @if let Some(at) = job.finished_at { dt { "finished" } dd { (time(at)) } }
                dt { "updated" } dd { (time(job.updated_at)) }
                @if let Some(at) = job.expires_at { dt { "pruned after" } dd { (time(at)) } }
            }
            h2 { "Arguments" }
            pre.args { (json(&job.args)) }
            @if let Some(result) = &job.result { h2 { "Result" } pre.result { (json(result)) } }
            @if let Some(progress) = &job.progress { h2 { "Progress" } pre { (json(progress)) } }
            @if let Some(error) = &job.last_error { h2 { "Last error" } pre.error { (error) } }
            @if let Some(dead) = &job.dead {
                h2 { "Dead letter" }
                dl.dead {
                    dt { "reason" } dd { (dead.reason.as_str()) }
                    dt { "died" } dd { (time(dead.moved_at)) }
                    dt { "replayed" } dd { (dead.resurrection_count) " times" }
                    @if let Some(at) = dead.last_resurrection_at { dt { "last replayed" } dd { (time(at)) } }
                    dt { "tags" } dd { (dead.tags.join(", ")) }
                }
                @if viewer.signed_in() {
                    p {
                        (viewer.button(&format!("/dead-letter/{}/replay", job.id), "Replay", &here, &[]))
                        (viewer.button(&format!("/dead-letter/{}/delete", job.id), "Delete", &format!("{base}/dead-letter"), &[]))
                    }
                    form.action method="post" action=(format!("{base}/dead-letter/{}/tag", job.id)) {
                        (viewer.csrf_field())
                        input type="hidden" name="back" value=(here);
                        label { "tags to add (comma-separated) " input name="tags" size="30"; }
                        button type="submit" { "Add tags" }
                    }
                }
            }
        },
    )
}
