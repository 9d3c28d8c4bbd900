//! The dead-letter service: look at, label, replay, delete and export dead jobs.

use crate::error::Result;
use crate::store::postgres::dead_letter as store;
use crate::store::DeadLetterReason;
use crate::time::{rfc3339, rfc3339_json};
use crate::Soniq;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// Which dead jobs to list or export; newest first.
#[derive(Debug, Clone)]
pub struct DeadLetterFilter {
    pub task_name: Option<String>,
    pub queue: Option<String>,
    pub reason: Option<DeadLetterReason>,
    /// Died at or after this time.
    pub moved_after: Option<SystemTime>,
    /// Died before this time.
    pub moved_before: Option<SystemTime>,
    /// Carrying all of these tags.
    pub tags: Option<Vec<String>>,
    /// Replayed at least once (`true`) or never (`false`).
    pub replayed: Option<bool>,
    pub limit: i32,
    pub offset: i32,
}

impl Default for DeadLetterFilter {
    fn default() -> Self {
        DeadLetterFilter {
            task_name: None,
            queue: None,
            reason: None,
            moved_after: None,
            moved_before: None,
            tags: None,
            replayed: None,
            limit: 1000,
            offset: 0,
        }
    }
}

/// A dead job.
#[derive(Debug, Clone)]
pub struct DeadJob {
    /// The original job's id.
    pub id: Uuid,
    pub task_name: String,
    pub args: Value,
    pub queue: String,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub reason: DeadLetterReason,
    pub original_created_at: SystemTime,
    pub moved_at: SystemTime,
    pub resurrection_count: i32,
    pub last_resurrection_at: Option<SystemTime>,
    pub tags: Vec<String>,
}

impl DeadJob {
    /// The dead job as the JSON export and `soniq dead-letter --json` show it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id.to_string(), "task_name": self.task_name, "args": self.args, "queue": self.queue,
            "priority": self.priority, "attempts": self.attempts, "max_attempts": self.max_attempts,
            "last_error": self.last_error, "reason": self.reason.as_str(),
            "original_created_at": rfc3339_json(Some(self.original_created_at)), "moved_at": rfc3339_json(Some(self.moved_at)),
            "resurrection_count": self.resurrection_count,
            "last_resurrection_at": rfc3339_json(self.last_resurrection_at), "tags": self.tags,
        })
    }
}

/// How a replayed job differs from its dead original.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub queue: Option<String>,
    pub priority: Option<i32>,
    pub max_attempts: Option<i32>,
    /// Start counting attempts from zero again (default); `false` keeps the used attempts.
    pub reset_attempts: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            queue: None,
            priority: None,
            max_attempts: None,
            reset_attempts: true,
        }
    }
}

/// Counts of the dead letter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DeadLetterStats {
    pub total: i64,
    pub by_task: BTreeMap<String, i64>,
    pub by_queue: BTreeMap<String, i64>,
    pub by_reason: BTreeMap<String, i64>,
    /// Dead jobs per day (`YYYY-MM-DD`) over the last 7 days.
    pub by_day: BTreeMap<String, i64>,
    pub oldest_age_seconds: Option<f64>,
    /// Dead jobs replayed at least once.
    pub replayed: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Csv,
}

/// `soniq.dead_letter()`.
pub struct DeadLetter<'a> {
    soniq: &'a Soniq,
}

impl Soniq {
    pub fn dead_letter(&self) -> DeadLetter<'_> {
        DeadLetter { soniq: self }
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

impl DeadLetter<'_> {
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.soniq.connection().await
    }

    pub async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadJob>> {
        store::list(&**self.client().await?, filter).await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<DeadJob>> {
        store::get(&**self.client().await?, id).await
    }

    /// Mint a fresh job from a dead one; returns the new job's id.
    pub async fn replay(&self, id: Uuid, options: &ReplayOptions) -> Result<Uuid> {
        let job = store::replay(&**self.client().await?, id, options, false).await?;
        Ok(job.expect("soniq.replay returns a job unless asked to skip"))
    }

    /// Replay a dead job unless it was replayed before (then `None`): the same replay run twice,
    /// or by two operators at once, makes one job.
    pub async fn replay_unless_replayed(
        &self,
        id: Uuid,
        options: &ReplayOptions,
    ) -> Result<Option<Uuid>> {
        store::replay(&**self.client().await?, id, options, true).await
    }

    /// Replay many in one call (all or nothing); returns (dead id, new job id) pairs.
    pub async fn replay_many(
        &self,
        ids: &[Uuid],
        options: &ReplayOptions,
    ) -> Result<Vec<(Uuid, Uuid)>> {
        store::replay_many(&**self.client().await?, ids, options).await
    }

    pub async fn delete(&self, id: Uuid) -> Result<()> {
        store::delete(&**self.client().await?, id).await
    }

    /// Delete the dead jobs that died more than `older_than` ago; returns how many.
    pub async fn purge(&self, older_than: Duration) -> Result<i64> {
        store::purge(&**self.client().await?, older_than).await
    }

    /// Deprecated name of [`DeadLetter::purge`].
    #[deprecated(note = "renamed to `purge`: it deletes old dead jobs")]
    pub async fn cleanup(&self, older_than: Duration) -> Result<i64> {
        self.purge(older_than).await
    }

    /// Add tags to a dead job; returns all its tags.
    pub async fn tag(&self, id: Uuid, tags: &[&str]) -> Result<Vec<String>> {
        store::tag(&**self.client().await?, id, tags).await
    }

    /// Counts of the dead letter, or of the jobs that died within `since`.
    pub async fn stats(&self, since: Option<Duration>) -> Result<DeadLetterStats> {
        store::stats(&**self.client().await?, since).await
    }

    /// The filtered dead jobs as a JSON array or as CSV with a header row.
    pub async fn export(&self, filter: &DeadLetterFilter, format: ExportFormat) -> Result<String> {
        let jobs = self.list(filter).await?;
        Ok(match format {
            ExportFormat::Json => {
                Value::Array(jobs.iter().map(DeadJob::to_json).collect()).to_string()
            }
            ExportFormat::Csv => {
                let mut out = String::from(
                    "id,task_name,queue,reason,attempts,max_attempts,moved_at,resurrection_count,tags,last_error,args\n",
                );
                for job in &jobs {
                    let fields = [
                        job.id.to_string(),
                        job.task_name.clone(),
                        job.queue.clone(),
                        job.reason.to_string(),
                        job.attempts.to_string(),
                        job.max_attempts.to_string(),
                        rfc3339(job.moved_at).unwrap_or_default(),
                        job.resurrection_count.to_string(),
                        job.tags.join(";"),
                        job.last_error.clone().unwrap_or_default(),
                        job.args.to_string(),
                    ];
                    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    out.push_str(&line.join(","));
                    out.push('\n');
                }
                out
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
