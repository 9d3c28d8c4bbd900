//! The schedules page: each schedule's timing (cron or every, in its time zone), its next fire
//! times, its last fire, job and error; signed in, pause and resume.

use super::html::{layout, maybe_time, seconds, time, Viewer};
use super::{Dashboard, PageError};
use crate::scheduler::ScheduleInfo;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{html, Markup};
use std::sync::Arc;

/// How many coming fire times the page lists for each schedule.
const FIRE_TIMES_SHOWN: usize = 3;

pub async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Result<Html<String>, PageError> {
    let schedules = dashboard.app.scheduler().list(None).await?;
    let viewer = dashboard.viewer(&headers);
    Ok(Html(render(&viewer, &schedules).into_string()))
}

fn timing(schedule: &ScheduleInfo) -> String {
    match (&schedule.cron, schedule.every) {
        (Some(cron), _) => format!("cron {cron}"),
        (None, Some(every)) => format!("every {}", seconds(every.as_secs_f64())),
        (None, None) => String::new(),
    }
}

fn render(viewer: &Viewer, schedules: &[ScheduleInfo]) -> Markup {
    let base = &viewer.base;
    let back = format!("{base}/schedules");
    layout(
        viewer,
        "Schedules",
        html! {
            @if schedules.is_empty() {
                p { "No schedule yet." }
            } @else {
                table {
                    thead { tr {
                        th { "schedule" } th.text { "task" } th.text { "timing" } th.text { "time zone" } th.text { "state" }
                        th.text { "next fires (UTC)" } th { "last fired" } th { "fired" } th.text { "last job" } th.text { "last error" }
                        @if viewer.signed_in() { th {} }
                    } }
                    tbody {
                        @for schedule in schedules {
                            tr {
                                td { (schedule.name) }
                                td.text { (schedule.task_name) }
                                td.text { (timing(schedule)) }
                                td.text { (schedule.time_zone) }
                                td.text { @if schedule.enabled { "enabled" } @else { "paused" } }
                                td.text {
                                    @match schedule.fire_times(FIRE_TIMES_SHOWN) {
                                        Ok(times) => { @for at in times { (time(at)) br; } },
                                        Err(e) => span.bad { (e) },
                                    }
                                }
                                td { (maybe_time(schedule.last_fire_at)) }
                                td { (schedule.fire_count) }
                                td.text {
                                    @if let Some(id) = schedule.last_job_id {
                                        a href=(format!("{base}/jobs/{id}")) { (id) }
                                    }
                                }
                                td.text.bad { (schedule.last_error.as_deref().unwrap_or("")) }
                                @if viewer.signed_in() {
                                    td {
                                        @let verb = if schedule.enabled { "pause" } else { "resume" };
                                        (viewer.button(&format!("/schedules/{}/{verb}", schedule.name),
                                            if schedule.enabled { "Pause" } else { "Resume" }, &back, &[]))
                                        (viewer.button(&format!("/schedules/{}/fire", schedule.name), "Fire now", &back, &[]))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
