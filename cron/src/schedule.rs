//! A schedule: a cron expression or a fixed interval.

use crate::expr::{CronError, CronExpr};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::fmt;

/// When a periodic job fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Wall-clock times in a time zone.
    Cron(CronExpr),
    /// A fixed period of real time (at least one second).
    Every(SignedDuration),
}

impl Schedule {
    pub fn cron(expression: &str) -> Result<Self, CronError> {
        expression.parse().map(Schedule::Cron)
    }

    pub fn every(period: SignedDuration) -> Result<Self, CronError> {
        if period < SignedDuration::from_secs(1) {
            return Err(CronError(format!(
                "an interval must be at least 1 second, got {period:#}"
            )));
        }
        Ok(Schedule::Every(period))
    }

    /// The first fire time strictly after `after`. An interval counts from `after`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Cron(expr) => expr.next_after(after, tz),
            Schedule::Every(period) => after.checked_add(*period).ok(),
        }
    }

    /// The next fire time once the slot `fired` has fired and the clock reads `now`: the
    /// first slot after `now`. A schedule that fell behind (the database was down) therefore
    /// fires once for all the slots it missed, not once per slot. Intervals stay on the grid
    /// of `fired`, so a late tick does not make them drift.
    pub fn next_slot(&self, fired: Timestamp, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Cron(expr) => expr.next_after(now.max(fired), tz),
            Schedule::Every(period) => {
                let period_ns = period.as_nanos();
                let behind_ns = now.duration_since(fired).as_nanos().max(0);
                let periods = behind_ns / period_ns + 1;
                let offset = i64::try_from(periods.checked_mul(period_ns)?).ok()?;
                fired.checked_add(SignedDuration::from_nanos(offset)).ok()
            }
        }
    }
}

impl fmt::Display for Schedule {
    /// A cron schedule shows its expression; an interval shows as `every 30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(expr) => write!(f, "{expr}"),
            Schedule::Every(period) => write!(f, "every {period:#}"),
        }
    }
}
