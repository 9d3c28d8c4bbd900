//! Periodic jobs: the imperative scheduler API over `soniq.schedules`, and the schedules
//! that `TaskBuilder::periodic` registrations publish at start. The extension's background
//! worker fires them; no scheduler process is needed.

use crate::error::Result;
use crate::Soniq;
use serde_json::{json, Value};
use soniq_cron::Schedule;
use std::time::{Duration, SystemTime};
use tokio_postgres::Row;

/// A schedule to add (or update, by name).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: String,
    pub task_name: String,
    pub schedule: Schedule,
    pub args: Value,
    /// IANA time zone of a cron schedule's wall-clock times; default UTC.
    pub time_zone: String,
    pub queue: Option<String>,
    pub priority: Option<i32>,
    pub retries: Option<i32>,
    pub timeout: Option<Duration>,
}

impl ScheduleSpec {
    /// A schedule named after its task, with empty args.
    pub fn new(task_name: impl Into<String>, schedule: Schedule) -> Self {
        let task_name = task_name.into();
        ScheduleSpec {
            name: task_name.clone(),
            task_name,
            schedule,
            args: json!({}),
            time_zone: "UTC".into(),
            queue: None,
            priority: None,
            retries: None,
            timeout: None,
        }
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }

    pub fn time_zone(mut self, time_zone: impl Into<String>) -> Self {
        self.time_zone = time_zone.into();
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// A schedule as the database holds it.
#[derive(Debug, Clone)]
pub struct ScheduleInfo {
    pub name: String,
    pub task_name: String,
    pub args: Value,
    pub cron: Option<String>,
    pub every: Option<Duration>,
    pub time_zone: String,
    pub enabled: bool,
    pub next_fire_at: Option<SystemTime>,
    pub last_fire_at: Option<SystemTime>,
    pub fire_count: i64,
    pub last_error: Option<String>,
}

const SCHEDULE_COLUMNS: &str =
    "name, task_name, args, cron, extract(epoch FROM every)::float8, time_zone, \
     enabled, next_fire_at, last_fire_at, fire_count, last_error";

impl ScheduleInfo {
    fn from_row(row: &Row) -> Result<Self> {
        let name: String = row.get(0);
        let every = match row.get::<_, Option<f64>>(4) {
            None => None,
            Some(seconds) => Some(
                crate::time::duration_from_db(seconds, &format!("schedule {name}: every"))
                    .map_err(crate::Error::Invalid)?,
            ),
        };
        Ok(ScheduleInfo {
            name,
            task_name: row.get(1),
            args: row.get(2),
            cron: row.get(3),
            every,
            time_zone: row.get(5),
            enabled: row.get(6),
            next_fire_at: row.get(7),
            last_fire_at: row.get(8),
            fire_count: row.get(9),
            last_error: row.get(10),
        })
    }
}

impl ScheduleInfo {
    /// The timing this schedule fires on (the inverse of what `add` stores).
    pub fn schedule(&self) -> Result<Schedule> {
        match (&self.cron, self.every) {
            (Some(expr), _) => Ok(Schedule::cron(expr)?),
            (None, Some(every)) => {
                let period = soniq_cron::SignedDuration::try_from(every)
                    .map_err(|e| crate::Error::Invalid(format!("schedule {}: {e}", self.name)))?;
                Ok(Schedule::every(period)?)
            }
            (None, None) => Err(crate::Error::Invalid(format!(
                "schedule {} has neither cron nor every",
                self.name
            ))),
        }
    }
}

/// The scheduler API: `soniq.scheduler().add(...)`.
pub struct Scheduler<'a> {
    soniq: &'a Soniq,
}

pub(crate) async fn add(
    client: &tokio_postgres::Client,
    spec: &ScheduleSpec,
) -> Result<ScheduleInfo> {
    let (cron, every) = match &spec.schedule {
        Schedule::Cron(expr) => (Some(expr.to_string()), None),
        Schedule::Every(period) => (None, Some(period.as_secs_f64())),
    };
    let timeout = spec.timeout.map(|t| t.as_secs_f64());
    let row = client
        .query_one(
            &format!(
                "SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_add($1, $2, $3, make_interval(secs => $4), $5, $6, \
                 $7, $8, $9, make_interval(secs => $10))"
            ),
            &[
                &spec.name,
                &spec.task_name,
                &cron,
                &every,
                &spec.args,
                &spec.time_zone,
                &spec.queue,
                &spec.priority,
                &spec.retries,
                &timeout,
            ],
        )
        .await?;
    ScheduleInfo::from_row(&row)
}

impl Scheduler<'_> {
    /// Add a schedule, or update it in place (same timing: the next fire time is kept).
    pub async fn add(&self, spec: &ScheduleSpec) -> Result<ScheduleInfo> {
        let client = self.soniq.connection().await?;
        add(&client, spec).await
    }

    /// Stop firing; false when it was already paused.
    pub async fn pause(&self, name: &str) -> Result<bool> {
        let client = self.soniq.connection().await?;
        Ok(client
            .query_one("SELECT soniq.schedule_pause($1)", &[&name])
            .await?
            .get(0))
    }

    /// Fire again from the next fire time after now; false when it was not paused.
    pub async fn resume(&self, name: &str) -> Result<bool> {
        let client = self.soniq.connection().await?;
        Ok(client
            .query_one("SELECT soniq.schedule_resume($1)", &[&name])
            .await?
            .get(0))
    }

    pub async fn remove(&self, name: &str) -> Result<()> {
        let client = self.soniq.connection().await?;
        client
            .execute("SELECT soniq.schedule_remove($1)", &[&name])
            .await?;
        Ok(())
    }

    /// All schedules by name, or only enabled (`Some(true)`) or paused (`Some(false)`) ones.
    pub async fn list(&self, enabled: Option<bool>) -> Result<Vec<ScheduleInfo>> {
        let client = self.soniq.connection().await?;
        let rows = client
            .query(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_list($1)"),
                &[&enabled],
            )
            .await?;
        rows.iter().map(ScheduleInfo::from_row).collect()
    }

    pub async fn get(&self, name: &str) -> Result<Option<ScheduleInfo>> {
        let client = self.soniq.connection().await?;
        let row = client
            .query_opt(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM soniq.schedule_get($1)"),
                &[&name],
            )
            .await?;
        row.as_ref().map(ScheduleInfo::from_row).transpose()
    }
}

impl Soniq {
    pub fn scheduler(&self) -> Scheduler<'_> {
        Scheduler { soniq: self }
    }
}
