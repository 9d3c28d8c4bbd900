//! The vendored script (htmx and its server-sent-events extension; `assets/README.md` says
//! where each file is from), served under versioned names a browser may cache for good.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const HTMX: &str = "htmx-2.0.11.min.js";
pub const HTMX_SSE: &str = "htmx-ext-sse-2.2.4.js";

const FILES: [(&str, &str); 2] = [
    (HTMX, include_str!("assets/htmx-2.0.11.min.js")),
    (HTMX_SSE, include_str!("assets/htmx-ext-sse-2.2.4.js")),
];

pub async fn serve(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _)| *file == name) {
        Some((_, body)) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *body,
        )
            .into_response(),
        None => super::PageError::NotFound(format!("There is no asset {name:?}.")).into_response(),
    }
}
