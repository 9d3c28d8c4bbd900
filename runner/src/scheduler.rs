//! Periodic jobs: the imperative scheduler API over `soniq.schedules`, and the schedules
//! that `TaskBuilder::periodic` registrations publish at start. The extension's background
//! worker fires them; no scheduler process is needed.

use crate::error::Result;
use crate::store::postgres::schedules;
use crate::Soniq;
use serde_json::{json, Value};
use soniq_cron::Schedule;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

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
    /// The job it last made.
    pub last_job_id: Option<Uuid>,
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

    /// Its next `count` fire times: the one stored, then the following ones computed here with
    /// the control plane's rules. None while it is paused.
    pub fn fire_times(&self, count: usize) -> Result<Vec<SystemTime>> {
        let Some(first) = self.next_fire_at else {
            return Ok(Vec::new());
        };
        let schedule = self.schedule()?;
        let invalid = |e: &dyn std::fmt::Display| {
            crate::Error::Invalid(format!("schedule {}: {e}", self.name))
        };
        let tz = soniq_cron::TimeZone::get(&self.time_zone).map_err(|e| invalid(&e))?;
        let mut times = vec![first];
        let mut at = soniq_cron::Timestamp::try_from(first).map_err(|e| invalid(&e))?;
        while times.len() < count {
            let Some(next) = schedule.next_after(at, &tz) else {
                break;
            };
            times.push(SystemTime::try_from(next).map_err(|e| invalid(&e))?);
            at = next;
        }
        Ok(times)
    }
}

/// The scheduler API: `soniq.scheduler().add(...)`.
pub struct Scheduler<'a> {
    soniq: &'a Soniq,
}

impl Scheduler<'_> {
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.soniq.connection().await
    }

    /// Add a schedule, or update it in place (same timing: the next fire time is kept).
    pub async fn add(&self, spec: &ScheduleSpec) -> Result<ScheduleInfo> {
        schedules::add(&**self.client().await?, spec).await
    }

    /// Stop firing; false when it was already paused.
    pub async fn pause(&self, name: &str) -> Result<bool> {
        schedules::pause(&**self.client().await?, name).await
    }

    /// Fire again from the next fire time after now; false when it was not paused.
    pub async fn resume(&self, name: &str) -> Result<bool> {
        schedules::resume(&**self.client().await?, name).await
    }

    /// Make the schedule's job now, outside its timing (also while paused); its next fire
    /// time stays. Returns the job's id.
    pub async fn fire(&self, name: &str) -> Result<Uuid> {
        schedules::fire(&**self.client().await?, name).await
    }

    pub async fn remove(&self, name: &str) -> Result<()> {
        schedules::remove(&**self.client().await?, name).await
    }

    /// All schedules by name, or only enabled (`Some(true)`) or paused (`Some(false)`) ones.
    pub async fn list(&self, enabled: Option<bool>) -> Result<Vec<ScheduleInfo>> {
        schedules::list(&**self.client().await?, enabled).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<ScheduleInfo>> {
        schedules::get(&**self.client().await?, name).await
    }
}

impl Soniq {
    pub fn scheduler(&self) -> Scheduler<'_> {
        Scheduler { soniq: self }
    }
}
