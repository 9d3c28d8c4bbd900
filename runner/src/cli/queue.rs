//! `soniq queue configure|show|pause|resume`: a queue's flow control and pause state.

use super::output::Output;
use super::{CliResult, Failure};
use crate::{QueueLimitUse, QueueSettings, Soniq};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Set a queue's limits and fair share (settings not given keep their values).
    Configure(ConfigureArgs),
    /// The queues with flow control (or one): settings, jobs running, started in the rate
    /// window, runnable, and the same per concurrency key.
    Show { queue: Option<String> },
    /// Stop claiming from a queue (jobs keep arriving).
    Pause { queue: String },
    /// Claim from a paused queue again.
    Resume { queue: String },
}

#[derive(Args)]
pub struct ConfigureArgs {
    queue: String,
    /// Jobs of the queue processing at once, across every worker (1..=100000).
    #[arg(long, value_name = "N")]
    max_running: Option<u32>,
    /// Jobs of each concurrency key processing at once (1..=100000).
    #[arg(long, value_name = "N")]
    max_running_per_key: Option<u32>,
    /// Jobs started per --rate-period (1..=1000000).
    #[arg(long, value_name = "N", requires = "rate_period")]
    rate_limit: Option<u32>,
    /// Jobs of each key started per --rate-period (1..=1000000).
    #[arg(long, value_name = "N", requires = "rate_period")]
    rate_limit_per_key: Option<u32>,
    /// The rate limits' sliding window, in whole seconds (1..=86400).
    #[arg(long, value_name = "SECONDS")]
    rate_period: Option<u64>,
    /// Claims rotate across concurrency keys (true or false).
    #[arg(long, value_name = "BOOL")]
    fair_share: Option<bool>,
    /// A key's jobs per fair-share round, KEY=WEIGHT (repeat for several; replaces all).
    #[arg(long = "key-weight", value_name = "KEY=WEIGHT", value_parser = key_weight)]
    key_weights: Vec<(String, u32)>,
    /// A waiting job's priority counts one better per this many seconds it has been due
    /// (1..=86400; not with fair share or per-key limits).
    #[arg(long, value_name = "SECONDS")]
    priority_aging: Option<u64>,
    /// Remove a setting (max_running, max_running_per_key, rate_limit, rate_limit_per_key,
    /// rate_period, fair_share, key_weights, priority_aging); repeat for several.
    #[arg(long, value_name = "SETTING")]
    clear: Vec<String>,
}

fn key_weight(text: &str) -> Result<(String, u32), String> {
    let (key, weight) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("expected KEY=WEIGHT, got {text:?}"))?;
    let weight = weight
        .parse()
        .map_err(|_| format!("the weight of {key:?} must be a whole number, got {weight:?}"))?;
    Ok((key.to_string(), weight))
}

impl ConfigureArgs {
    fn settings(&self) -> Result<QueueSettings, Failure> {
        let mut settings = QueueSettings::new();
        for setting in &self.clear {
            settings = settings.clear(setting);
        }
        let period = self.rate_period.map(Duration::from_secs);
        if let Some(n) = self.max_running {
            settings = settings.max_running(n);
        }
        if let Some(n) = self.max_running_per_key {
            settings = settings.max_running_per_key(n);
        }
        if let Some(p) = period {
            settings = settings.rate_period(p);
        }
        if let (Some(n), Some(p)) = (self.rate_limit, period) {
            settings = settings.rate_limit(n, p);
        }
        if let (Some(n), Some(p)) = (self.rate_limit_per_key, period) {
            settings = settings.rate_limit_per_key(n, p);
        }
        if let Some(on) = self.fair_share {
            settings = settings.fair_share(on);
        }
        if let Some(seconds) = self.priority_aging {
            settings = settings.priority_aging(Duration::from_secs(seconds));
        }
        if !self.key_weights.is_empty() {
            settings = settings.key_weights(self.key_weights.iter().cloned());
        }
        if settings.to_json() == json!({}) {
            return Err(Failure::usage(
                "nothing to change: give a setting (--max-running, --rate-limit, ...) or --clear SETTING",
            ));
        }
        Ok(settings)
    }
}

pub async fn run(app: &Soniq, command: QueueCommand, out: &Output) -> CliResult {
    match command {
        QueueCommand::Configure(args) => {
            let settings = app.configure_queue(&args.queue, &args.settings()?).await?;
            if out.json {
                out.print_json(&json!({"queue": args.queue, "settings": settings}));
            } else {
                println!("{}: {}", args.queue, describe(&settings));
            }
        }
        QueueCommand::Show { queue } => show(app, queue.as_deref(), out).await?,
        QueueCommand::Pause { queue } => {
            let changed = app.pause_queue(&queue).await?;
            println!(
                "{queue} {}",
                if changed {
                    "paused"
                } else {
                    "was already paused"
                }
            );
        }
        QueueCommand::Resume { queue } => {
            let changed = app.resume_queue(&queue).await?;
            println!(
                "{queue} {}",
                if changed { "resumed" } else { "was not paused" }
            );
        }
    }
    Ok(())
}

/// Settings as one line: `max_running 64, rate_limit 100 per 60s`; "no limits" when none.
pub fn describe(settings: &Value) -> String {
    let Some(map) = settings.as_object().filter(|m| !m.is_empty()) else {
        return "no limits".into();
    };
    let period = map
        .get("rate_period")
        .map(|p| format!(" per {p}s"))
        .unwrap_or_default();
    map.iter()
        .filter(|(name, _)| name.as_str() != "rate_period")
        .map(|(name, value)| match name.as_str() {
            "rate_limit" | "rate_limit_per_key" => format!("{name} {value}{period}"),
            _ => format!("{name} {value}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn use_json(row: &QueueLimitUse) -> Value {
    json!({
        "queue": row.queue, "concurrency_key": row.concurrency_key, "settings": row.settings,
        "running": row.running, "started_in_window": row.started_in_window, "runnable": row.runnable,
        "waiting_for_limit": row.waiting_for_limit,
    })
}

/// The rows of `soniq.queue_limits` as a table (also `soniq status`'s flow-control part).
pub fn print_limits(rows: &[QueueLimitUse], out: &Output) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let (name, settings) = match &row.concurrency_key {
                None => (
                    row.queue.clone(),
                    row.settings.as_ref().map(describe).unwrap_or_default(),
                ),
                Some(key) => (format!("  key {key:?}"), String::new()),
            };
            vec![
                name,
                settings,
                row.running.to_string(),
                row.started_in_window.to_string(),
                row.runnable.to_string(),
                row.waiting_for_limit.to_string(),
            ]
        })
        .collect();
    out.table(
        &[
            "queue",
            "limits",
            "running",
            "started in window",
            "runnable",
            "waiting for limit",
        ],
        &cells,
    );
}

async fn show(app: &Soniq, queue: Option<&str>, out: &Output) -> CliResult {
    let rows = app.queue_limits(queue).await?;
    if out.json {
        out.print_json(&Value::Array(rows.iter().map(use_json).collect()));
        return Ok(());
    }
    if rows.is_empty() {
        match queue {
            Some(queue) => println!("{queue}: no limits"),
            None => println!("no queue has flow control"),
        }
        return Ok(());
    }
    print_limits(&rows, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_one_line() {
        assert_eq!(describe(&json!({})), "no limits");
        assert_eq!(
            describe(&json!({"max_running": 64, "rate_limit": 100, "rate_period": 60})),
            "max_running 64, rate_limit 100 per 60s"
        );
    }

    #[test]
    fn a_key_weight_is_key_equals_weight() {
        assert_eq!(key_weight("a=b=3"), Ok(("a=b".into(), 3)));
        assert!(key_weight("gold").unwrap_err().contains("KEY=WEIGHT"));
        assert!(key_weight("gold=x").unwrap_err().contains("whole number"));
    }
}
