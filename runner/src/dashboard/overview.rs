//! The overview: every queue by state (from the last background count), the control plane's
//! rounds and the workers alive and stale.

use super::chart;
use super::counts::Counts;
use super::html::{layout, seconds, time, Viewer};
use super::{Dashboard, Liveness, PageError};
use crate::store::postgres::admin;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use futures_util::Stream;
use maud::{html, Markup};
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::GenericClient;

pub async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Result<Html<String>, PageError> {
    let client = dashboard.app.connection().await?;
    let liveness = dashboard.liveness(&**client).await?;
    let viewer = dashboard.viewer(&headers);
    let queues = queues_now(&dashboard, &**client, &viewer).await?;
    Ok(Html(render(&viewer, queues, &liveness).into_string()))
}

/// The queues' table from the last count, with their pause state read now (a pause shows at
/// once, not at the next count), and the chart of the last hour's outcomes.
async fn queues_now(
    dashboard: &Dashboard,
    client: &impl GenericClient,
    viewer: &Viewer,
) -> Result<Markup, PageError> {
    let paused = admin::paused_queues(client).await?;
    let minutes = admin::outcome_minutes(client).await?;
    let counts = dashboard.counts.borrow().clone();
    let every = dashboard.options.count_interval.as_secs();
    Ok(html! {
        (queues(viewer, every, &counts, &paused))
        h2 { "Outcomes" }
        (chart::outcomes(&minutes))
    })
}

/// The queues' table again after each count, as server-sent events (`queues`), for the
/// overview's live update; a comment every 15 s keeps proxies from closing the stream.
pub async fn events(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let viewer = dashboard.viewer(&headers);
    let counts = dashboard.counts.clone();
    let stream = futures_util::stream::unfold(
        (dashboard, viewer, counts),
        |(dashboard, viewer, mut counts)| async move {
            counts.changed().await.ok()?;
            let table = async {
                let client = dashboard.app.connection().await?;
                queues_now(&dashboard, &**client, &viewer).await
            };
            let data = match table.await {
                Ok(table) => table.into_string(),
                Err(PageError::Unavailable(e)) => {
                    html! { p.bad { "The database cannot be read: " (e) } }.into_string()
                }
                Err(_) => return None,
            };
            let event = Event::default().event("queues").data(data);
            Some((Ok(event), (dashboard, viewer, counts)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn queues(viewer: &Viewer, every: u64, counts: &Counts, paused: &HashSet<String>) -> Markup {
    let base = &viewer.base;
    let back = format!("{base}/");
    html! {
        @match &counts.latest {
            None => p.note { "Counting the queues…" },
            Some(counted) => {
                p.note {
                    "Counted at " (time(counted.at)) " (in " (format!("{:.0}", counted.took.as_secs_f64() * 1000.0))
                    " ms); counts are taken every " (every) " s, and sooner after new jobs."
                }
                table {
                    thead { tr {
                        th { "queue" } th { "state" } th { "runnable" } th { "scheduled" } th { "waiting" }
                        th { "processing" } th { "done" } th { "cancelled" } th { "dead" } th { "oldest runnable" }
                        @if viewer.signed_in() { th {} }
                    } }
                    tbody {
                        @for q in &counted.queues {
                            @let is_paused = paused.contains(&q.queue);
                            tr {
                                td { a href=(format!("{base}/jobs?queue={}", q.queue)) { (q.queue) } }
                                td { @if is_paused { "paused" } @else { "running" } }
                                td { (q.runnable) } td { (q.scheduled) } td { (q.waiting) } td { (q.processing) }
                                td { (q.done) } td { (q.cancelled) }
                                td { a href=(format!("{base}/dead-letter?queue={}", q.queue)) { (q.dead) } }
                                td { (q.oldest_runnable_seconds.map(seconds).unwrap_or_default()) }
                                @if viewer.signed_in() {
                                    td {
                                        @if is_paused {
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
    }
}

fn render(viewer: &Viewer, queues: Markup, liveness: &Liveness) -> Markup {
    let base = &viewer.base;
    layout(
        viewer,
        "Overview",
        html! {
            h2 { "Queues" }
            // Live with script (htmx's server-sent events); a reload shows the same without.
            div #queues hx-ext="sse" sse-connect=(format!("{base}/events")) sse-swap="queues" {
                (queues)
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
            p.note { "The queues' counts follow live; reload for the rest." }
        },
    )
}
