//! The dashboard's HTML, rendered on the server (maud escapes every value it writes).

use super::counts::Counts;
use super::{DashboardOptions, Liveness};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::time::SystemTime;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:right}\
th:first-child,td:first-child{text-align:left}.bad{color:#b00020}.note{color:#666}";

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Soniq" }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// A time as people read it, UTC to the second.
fn time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .ok()
        .and_then(|t| t.round(jiff::Unit::Second).ok())
        .map_or_else(
            || "-".into(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

pub fn overview(options: &DashboardOptions, counts: &Counts, liveness: &Liveness) -> Markup {
    let base = &options.base_path;
    let every = options.count_interval.as_secs();
    layout(
        "Overview",
        html! {
            h1 { "Soniq" }
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
                        } }
                        tbody {
                            @for q in &counted.queues {
                                tr {
                                    td { (q.queue) }
                                    td { @if q.paused { "paused" } @else { "running" } }
                                    td { (q.runnable) } td { (q.scheduled) } td { (q.waiting) } td { (q.processing) }
                                    td { (q.done) } td { (q.cancelled) } td { (q.dead) }
                                    td { (q.oldest_runnable_seconds.map(seconds).unwrap_or_default()) }
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
                thead { tr { th { "round" } th { "state" } th { "lag" } th { "last error" } } }
                tbody {
                    @for round in &liveness.health {
                        tr {
                            td { (round.subsystem) }
                            td { @if round.alive { "alive" } @else { span.bad { "stale" } } }
                            td { (seconds(round.lag_seconds)) }
                            td { (round.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            h2 { "Workers" }
            p { (liveness.workers_alive) " alive, " (liveness.workers_stale) " stale." }
            p.note { a href=(format!("{base}/metrics")) { "Prometheus metrics" } " · reload the page for fresh figures." }
        },
    )
}

pub fn unavailable(error: &str) -> Markup {
    layout(
        "Unavailable",
        html! {
            h1 { "Soniq" }
            p.bad { "The database cannot be read: " (error) }
        },
    )
}
