//! Flow control of a queue: limits on the jobs that run and start, per queue and per
//! concurrency key, and fair share between keys. `soniq.claim` keeps them for every worker in
//! every language (sql/flow.sql); this is how a Rust application sets and reads them.

use crate::error::Result;
use crate::Soniq;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio_postgres::types::Type;

/// Changes to a queue's flow-control settings (`soniq.queue_configure`); a setting left out
/// keeps its value. Ranges: `max_running` and `max_running_per_key` 1..=100,000; rate limits
/// 1..=1,000,000 jobs per period of 1 s to 1 day (whole seconds); key weights 1..=100.
#[derive(Debug, Clone, Default)]
pub struct QueueSettings {
    changes: Map<String, Value>,
}

impl QueueSettings {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(mut self, setting: &str, value: impl Into<Value>) -> Self {
        self.changes.insert(setting.into(), value.into());
        self
    }

    /// At most `limit` jobs of the queue processing at once, across every worker.
    pub fn max_running(self, limit: u32) -> Self {
        self.set("max_running", limit)
    }

    /// At most `limit` jobs of each concurrency key processing at once (implies fair share).
    pub fn max_running_per_key(self, limit: u32) -> Self {
        self.set("max_running_per_key", limit)
    }

    /// At most `limit` jobs started in any `period` (a sliding window; the period is shared
    /// with the per-key rate limit).
    pub fn rate_limit(self, limit: u32, period: Duration) -> Self {
        self.set("rate_limit", limit).rate_period(period)
    }

    /// At most `limit` jobs of each key started in any `period` (implies fair share).
    pub fn rate_limit_per_key(self, limit: u32, period: Duration) -> Self {
        self.set("rate_limit_per_key", limit).rate_period(period)
    }

    /// The window of both rate limits, whole seconds.
    pub fn rate_period(self, period: Duration) -> Self {
        self.set("rate_period", period.as_secs_f64())
    }

    /// Claims rotate across the queue's concurrency keys.
    pub fn fair_share(self, on: bool) -> Self {
        self.set("fair_share", on)
    }

    /// Fair share: a key's jobs per round (1 for keys not named). Replaces the weights set
    /// before, as a whole.
    pub fn key_weights<K: Into<String>>(self, weights: impl IntoIterator<Item = (K, u32)>) -> Self {
        let weights: Map<String, Value> = weights
            .into_iter()
            .map(|(key, weight)| (key.into(), Value::from(weight)))
            .collect();
        self.set("key_weights", weights)
    }

    /// A waiting job's priority counts one better per `step` it has been due (whole seconds,
    /// 1 s to 1 day; not with fair share or per-key limits).
    pub fn priority_aging(self, step: Duration) -> Self {
        self.set("priority_aging", step.as_secs_f64())
    }

    /// Remove a setting (`"max_running"`, `"rate_limit"`, `"key_weights"`, ...).
    pub fn clear(self, setting: &str) -> Self {
        self.set(setting, Value::Null)
    }

    /// The JSON object `soniq.queue_configure` takes.
    pub fn to_json(&self) -> Value {
        Value::Object(self.changes.clone())
    }
}

/// What a limited queue, or one concurrency key of it, uses now (`soniq.queue_limits`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueLimitUse {
    pub queue: String,
    /// `None` on the queue's own row; a key (`""`: the default key) on a key's row.
    pub concurrency_key: Option<String>,
    /// The queue's settings (on its own row).
    pub settings: Option<Value>,
    /// Jobs processing.
    pub running: i64,
    /// Jobs started in the current rate window.
    pub started_in_window: i64,
    /// Jobs queued and due.
    pub runnable: i64,
    /// Runnable jobs that wait because a limit is reached now (all of them while it is).
    pub waiting_for_limit: i64,
}

impl Soniq {
    /// Change a queue's flow control; returns its settings after the change. Takes effect at
    /// the next claim of every worker.
    pub async fn configure_queue(&self, queue: &str, settings: &QueueSettings) -> Result<Value> {
        let client = self.connection().await?;
        let row = client
            .query_typed_one(
                "SELECT soniq.queue_configure($1, $2)",
                &[(&queue, Type::TEXT), (&settings.to_json(), Type::JSONB)],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The queues with flow control (or one of them), each followed by its keys.
    pub async fn queue_limits(&self, queue: Option<&str>) -> Result<Vec<QueueLimitUse>> {
        let client = self.connection().await?;
        let rows = client
            .query_typed(
                "SELECT queue, concurrency_key, settings, running, started_in_window, runnable, waiting_for_limit
                   FROM soniq.queue_limits WHERE $1::text IS NULL OR queue = $1
                  ORDER BY queue, concurrency_key NULLS FIRST",
                &[(&queue, Type::TEXT)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| QueueLimitUse {
                queue: row.get(0),
                concurrency_key: row.get(1),
                settings: row.get(2),
                running: row.get(3),
                started_in_window: row.get(4),
                runnable: row.get(5),
                waiting_for_limit: row.get(6),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_become_the_object_queue_configure_takes() {
        let settings = QueueSettings::new()
            .max_running(64)
            .rate_limit_per_key(10, Duration::from_secs(60))
            .key_weights([("gold", 3)])
            .clear("rate_limit");
        assert_eq!(
            settings.to_json(),
            json!({"max_running": 64, "rate_limit_per_key": 10, "rate_period": 60.0,
                   "key_weights": {"gold": 3}, "rate_limit": null})
        );
    }
}
