//! How the command prints: aligned tables for people, JSON for scripts, colour only on a
//! terminal and never with NO_COLOR, passwords masked in URLs.

use serde_json::Value;
use std::io::IsTerminal;

pub struct Output {
    pub json: bool,
    color: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { json, color }
    }

    /// A job or schedule state, coloured on a terminal.
    pub fn state(&self, state: &str) -> String {
        let code = match state {
            "done" | "alive" | "enabled" | "ok" => "32",
            "dead" | "failed" | "stale" | "error" => "31",
            "processing" | "queued" | "waiting" | "paused" | "cancelled" => "33",
            _ => return state.to_string(),
        };
        if self.color {
            format!("\x1b[{code}m{state}\x1b[0m")
        } else {
            state.to_string()
        }
    }

    pub fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON values serialise")
        );
    }

    /// Columns aligned on the widest cell (colour codes do not count).
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        let visible = |cell: &str| strip_color(cell).chars().count();
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                rows.iter()
                    .map(|r| visible(&r[i]))
                    .chain([headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - visible(cell))))
                .collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(headers.iter().map(|h| h.to_uppercase()).collect());
        for row in rows {
            line(row.clone());
        }
        if rows.is_empty() {
            println!("(none)");
        }
    }
}

fn strip_color(cell: &str) -> String {
    let mut out = String::new();
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub use crate::connection::mask_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_do_not_count_for_width() {
        assert_eq!(strip_color("\x1b[32mdone\x1b[0m"), "done");
    }
}
