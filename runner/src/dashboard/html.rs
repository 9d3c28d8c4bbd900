//! What every page shares: the layout and its navigation, how times, durations and JSON are
//! written, the pager, and the error pages. maud escapes every value it writes.

use crate::store::postgres::browse::{Keyed, Paged, SCAN_BUDGET};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::time::SystemTime;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}\
nav a{margin-right:1rem}nav{margin-bottom:1rem}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}\
th:first-child,td:first-child{text-align:left}td.text,th.text{text-align:left}\
.bad{color:#b00020}.note{color:#666}pre{background:#f6f6f6;padding:.5rem;max-width:60rem;overflow:auto}\
form.filters label{margin-right:.75rem}form.action{display:inline;margin:0 .25rem 0 0}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{color:#666}dd{margin:0}";

/// The pages the navigation links, as (path under the base, label).
const NAVIGATION: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/jobs", "Jobs"),
    ("/dead-letter", "Dead letter"),
    ("/schedules", "Schedules"),
    ("/workers", "Workers"),
];

/// Who looks at a page, as far as the page's links and forms care.
pub struct Viewer {
    pub base: String,
    pub actions: Actions,
}

pub enum Actions {
    /// Started without `--actions`: pages show no forms.
    Off,
    LoggedOut,
    /// Signed in: forms carry this CSRF token.
    LoggedIn {
        csrf: String,
    },
}

impl Viewer {
    /// A form that POSTs to `action` (under the base path) with `fields` and the session's
    /// CSRF token, then comes back to `back`; nothing unless the viewer is signed in.
    pub fn button(&self, action: &str, label: &str, back: &str, fields: &[(&str, &str)]) -> Markup {
        let Actions::LoggedIn { csrf } = &self.actions else {
            return html! {};
        };
        html! {
            form.action method="post" action=(format!("{}{action}", self.base)) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="back" value=(back);
                @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
                button type="submit" { (label) }
            }
        }
    }

    /// The CSRF token's hidden field, for a form of the page's own.
    pub fn csrf_field(&self) -> Markup {
        match &self.actions {
            Actions::LoggedIn { csrf } => html! { input type="hidden" name="csrf" value=(csrf); },
            _ => html! {},
        }
    }

    pub fn signed_in(&self) -> bool {
        matches!(self.actions, Actions::LoggedIn { .. })
    }
}

pub fn layout(viewer: &Viewer, title: &str, body: Markup) -> Markup {
    let base = &viewer.base;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Soniq" }
                style { (PreEscaped(STYLE)) }
                script src=(format!("{base}/assets/{}", super::assets::HTMX)) defer {}
                script src=(format!("{base}/assets/{}", super::assets::HTMX_SSE)) defer {}
            }
            body {
                nav {
                    strong { "Soniq" } " "
                    @for (path, label) in NAVIGATION { a href=(format!("{base}{path}")) { (label) } }
                    a href=(format!("{base}/metrics")) { "Metrics" }
                    @match &viewer.actions {
                        Actions::Off => {},
                        Actions::LoggedOut => a href=(format!("{base}/login")) { "Log in to act" },
                        Actions::LoggedIn { csrf } => form.action method="post" action=(format!("{base}/logout")) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        },
                    }
                }
                h1 { (title) }
                (body)
            }
        }
    }
}

/// A time as people read it, UTC to the second.
pub fn time(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .ok()
        .and_then(|t| t.round(jiff::Unit::Second).ok())
        .map_or_else(
            || "-".into(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

pub fn maybe_time(t: Option<SystemTime>) -> String {
    t.map(time).unwrap_or_default()
}

pub fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

pub fn json(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// The first line of an error, for a table cell.
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Links to the newer and older pages, keeping the filters (`query`, already encoded), and a
/// note when the page stopped looking before it filled up.
pub fn pager<T: Keyed>(
    path: &str,
    query: &str,
    paged: &Paged<T>,
    cursor: impl Fn(&T::Key) -> String,
) -> Markup {
    let link = |which: &str, key: &T::Key| {
        let mut url = form_urlencoded::Serializer::new(query.to_string());
        url.append_pair(which, &cursor(key));
        format!("{path}?{}", url.finish())
    };
    let newest = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    html! {
        @if paged.scan_stopped {
            p.note {
                "This page looked through " (SCAN_BUDGET) " rows and found no more matches there; "
                "follow the link to look further."
            }
        }
        p.pager {
            @if let Some(key) = &paged.newer {
                a href=(newest) { "« newest" } " "
                a rel="prev" href=(link("after", key)) { "← newer" } " "
            }
            @if let Some(key) = &paged.older {
                a rel="next" href=(link("before", key)) { "older →" }
            }
        }
    }
}

pub fn error_page(base: &str, title: &str, message: &str) -> Markup {
    let viewer = Viewer {
        base: base.to_string(),
        actions: Actions::Off,
    };
    layout(&viewer, title, html! { p.bad { (message) } })
}
