//! The overview: every queue by state (from the last background count), the control plane's
//! rounds and the workers alive and stale.

use super::counts::Counts;
use super::html::{layout, seconds, time, Viewer};
use super::{Dashboard, Liveness, PageError};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{html, Markup};
use std::sync::Arc;

pub async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Result<Html<String>, PageError> {
    let liveness = dashboard.liveness().await?;
    let counts = dashboard.counts.borrow().clone();
    let viewer = dashboard.viewer(&headers);
    let every = dashboard.options.count_interval.as_secs();
    Ok(Html(
        render(&viewer, every, &counts, &liveness).into_string(),
    ))
}

fn render(viewer: &Viewer, every: u64, counts: &Counts, liveness: &Liveness) -> Markup {
    let base = &viewer.base;
    let back = format!("{base}/");
    layout(
        viewer,
        "Overview",
        html! {
            h2 { "Queues" }
            @match &counts.latest {
                None => p.note { "Counting the queues… reload in a moment." },
                Some(counted) => {
                    p.note {
                        "Counted at " (time(counted.at)) " (in " (format!("{:.0}", counted.took.as_secs_f64() * 1000.0))
                        " ms); counts are taken every " (every) " s."
                    }
                    table {
                        thead { tr {
                            th { "queue" } th { "state" } th { "runnable" } th { "scheduled" } th { "waiting" }
                            th { "processing" } th { "done" } th { "cancelled" } th { "dead" } th { "oldest runnable" }
                            @if viewer.signed_in() { th {} }
                        } }
                        tbody {
                            @for q in &counted.queues {
                                @let jobs = format!("{base}/jobs?queue={}", q.queue);
                                tr {
                                    td { a href=(jobs) { (q.queue) } }
                                    td { @if q.paused { "paused" } @else { "running" } }
                                    td { (q.runnable) } td { (q.scheduled) } td { (q.waiting) } td { (q.processing) }
                                    td { (q.done) } td { (q.cancelled) }
                                    td { a href=(format!("{base}/dead-letter?queue={}", q.queue)) { (q.dead) } }
                                    td { (q.oldest_runnable_seconds.map(seconds).unwrap_or_default()) }
                                    @if viewer.signed_in() {
                                        td {
                                            @if q.paused {
                                                (viewer.button(&format!("/queues/{}/resume", q.queue), "Resume", &back, &[]))
                                            } @else {
                                                (viewer.button(&format!("/queues/{}/pause", q.queue), "Pause", &back, &[]))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if counted.queues.is_empty() { p { "No queue has jobs yet." } }
                }
            }
            @if let Some(error) = &counts.error {
                p.bad { "The last count failed: " (error) }
            }
            h2 { "Control plane" }
            table {
                thead { tr { th { "round" } th { "state" } th { "lag" } th.text { "last error" } } }
                tbody {
                    @for round in &liveness.health {
                        tr {
                            td { (round.subsystem) }
                            td { @if round.alive { "alive" } @else { span.bad { "stale" } } }
                            td { (seconds(round.lag_seconds)) }
                            td.text { (round.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            h2 { "Workers" }
            p {
                a href=(format!("{base}/workers")) { (liveness.workers_alive) " alive" }
                ", " (liveness.workers_stale) " stale."
            }
            p.note { "Reload the page for fresh figures." }
        },
    )
}
