//! The overview's chart: attempts completed and failed per minute over the last hour
//! (`soniq.outcome_minutes`), drawn on the server as SVG: a bar a minute, completed in green
//! with failed stacked on top in red, each with its figures as a tooltip.

use crate::store::postgres::admin::MinuteOutcomes;
use maud::{html, Markup};

const MINUTES: i32 = 60;
const BAR: i32 = 10;
const HEIGHT: i32 = 120;
/// Room for the labels under the bars and left of them.
const BOTTOM: i32 = 18;
const LEFT: i32 = 48;

pub fn outcomes(minutes: &[MinuteOutcomes]) -> Markup {
    let top = minutes
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: i64| (n * i64::from(HEIGHT) / top) as i32;
    let (completed, failed): (i64, i64) = minutes
        .iter()
        .fold((0, 0), |(c, f), m| (c + m.completed, f + m.failed));
    let width = LEFT + MINUTES * BAR;
    html! {
        p.note {
            "Attempts per minute over the last hour: " (completed) " completed, " (failed) " failed."
        }
        svg.chart xmlns="http://www.w3.org/2000/svg" width=(width) height=(HEIGHT + BOTTOM)
            viewBox=(format!("0 0 {width} {}", HEIGHT + BOTTOM)) role="img"
            aria-label=(format!("{completed} completed and {failed} failed over the last hour")) {
            line x1=(LEFT) y1=(HEIGHT) x2=(width) y2=(HEIGHT) stroke="#999" {}
            text x=(LEFT - 4) y="10" text-anchor="end" font-size="10" { (top) }
            text x=(LEFT - 4) y=(HEIGHT) text-anchor="end" font-size="10" { "0" }
            text x=(LEFT) y=(HEIGHT + 14) font-size="10" { "60 min ago" }
            text x=(width) y=(HEIGHT + 14) text-anchor="end" font-size="10" { "now" }
            @for m in minutes {
                @let x = LEFT + (MINUTES - 1 - m.minutes_ago) * BAR;
                @let done = scale(m.completed);
                @let bad = scale(m.failed);
                g.minute {
                    title { (m.minutes_ago) " min ago: " (m.completed) " completed, " (m.failed) " failed" }
                    rect.completed x=(x) y=(HEIGHT - done) width=(BAR - 2) height=(done) fill="#2e7d32" {}
                    rect.failed x=(x) y=(HEIGHT - done - bad) width=(BAR - 2) height=(bad) fill="#c62828" {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stand_where_their_minute_is_and_as_high_as_their_share() {
        let minutes = [
            MinuteOutcomes {
                minutes_ago: 59,
                completed: 30,
                failed: 10,
            },
            MinuteOutcomes {
                minutes_ago: 0,
                completed: 15,
                failed: 0,
            },
        ];
        let svg = outcomes(&minutes).into_string();
        assert!(svg.contains("45 completed, 10 failed."), "{svg}");
        // The oldest minute at the left edge, full height (40 of 40: 30 completed, 10 failed
        // on top); the current one at the right.
        assert!(
            svg.contains(r#"<rect class="completed" x="48" y="30" width="8" height="90""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect class="failed" x="48" y="0" width="8" height="30""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect class="completed" x="638" y="75" width="8" height="45""#),
            "{svg}"
        );
        assert!(svg.contains("0 min ago: 15 completed, 0 failed"), "{svg}");
    }

    #[test]
    fn an_idle_hour_draws_an_empty_chart() {
        let svg = outcomes(&[]).into_string();
        assert!(svg.contains("0 completed, 0 failed."), "{svg}");
        assert!(!svg.contains("<rect"), "{svg}");
    }
}
