//! The workers page: each registered worker's host, pid, queues, concurrency, the jobs it
//! holds and when it was last heard from.

use super::html::{layout, seconds, time, Viewer};
use super::{Dashboard, PageError};
use crate::store::postgres::browse::{self, WorkerRow};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Html;
use maud::{html, Markup};
use std::sync::Arc;

pub async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Result<Html<String>, PageError> {
    let client = dashboard.app.connection().await?;
    let workers = browse::workers(&**client).await?;
    let timeout = dashboard.app.settings.heartbeat_timeout().as_secs_f64();
    Ok(Html(
        render(&dashboard.viewer(&headers), &workers, timeout).into_string(),
    ))
}

fn render(viewer: &Viewer, workers: &[WorkerRow], heartbeat_timeout: f64) -> Markup {
    layout(
        viewer,
        "Workers",
        html! {
            p.note {
                "A worker silent for more than " (seconds(heartbeat_timeout))
                " is stale: the control plane takes its jobs back."
            }
            @if workers.is_empty() {
                p { "No worker is registered." }
            } @else {
                table {
                    thead { tr {
                        th { "worker" } th.text { "host" } th { "pid" } th.text { "queues" } th { "concurrency" }
                        th { "jobs held" } th { "started" } th { "last heartbeat" } th.text { "state" } th.text { "version" }
                    } }
                    tbody {
                        @for worker in workers {
                            tr {
                                td { (worker.id) }
                                td.text { (worker.hostname.as_deref().unwrap_or("")) }
                                td { (worker.pid.map(|pid| pid.to_string()).unwrap_or_default()) }
                                td.text { (worker.queues.as_ref().map_or_else(|| "all".to_string(), |q| q.join(", "))) }
                                td { (worker.concurrency) }
                                td { (worker.jobs_held) }
                                td { (time(worker.started_at)) }
                                td { (time(worker.last_heartbeat)) " (" (seconds(worker.silent_seconds)) " ago)" }
                                td.text {
                                    @if worker.silent_seconds > heartbeat_timeout { span.bad { "stale" } } @else { "alive" }
                                }
                                td.text { (worker.version.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    )
}
