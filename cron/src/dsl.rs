//! The schedule builder the Python Soniq documents (the README's Schedules section), in Rust.
//!
//! ```
//! use soniq_cron::dsl::{cron, daily, every, monthly, weekly};
//! assert_eq!(every(5).minutes().unwrap().to_string(), "*/5 * * * *");
//! assert_eq!(every(2).hours().unwrap().to_string(), "0 */2 * * *");
//! assert_eq!(every(30).seconds().unwrap().to_string(), "every 30s");
//! assert_eq!(daily().at("09:00").unwrap().to_string(), "0 9 * * *");
//! assert_eq!(weekly().on("monday").at("09:00").unwrap().to_string(), "0 9 * * 1");
//! assert_eq!(monthly().on_day(15).at("12:00").unwrap().to_string(), "0 12 15 * *");
//! assert_eq!(cron("*/15 * * * *").unwrap().to_string(), "*/15 * * * *");
//! ```
//!
//! Where the Python builder's strings would not mean what they say, this builder returns an
//! interval instead: `every(7).minutes()` is every 7 minutes of real time (`*/7` would
//! restart at :00 each hour), `every(3).days()` is every 72 hours (`*/3` in the
//! day-of-month field restarts each month).

use crate::expr::CronError;
use crate::schedule::Schedule;
use jiff::SignedDuration;

/// `every(n)`: every n seconds, minutes, hours or days.
pub fn every(n: u32) -> Every {
    Every(n)
}

/// `daily()`: once a day, at midnight unless `.at(...)` says otherwise.
pub fn daily() -> Daily {
    Daily
}

/// `weekly().on(day)`: once a week.
pub fn weekly() -> Weekly {
    Weekly { day: Ok(0) }
}

/// `monthly().on_day(n)`: once a month.
pub fn monthly() -> Monthly {
    Monthly { day: 1 }
}

/// A cron expression as it is, checked.
pub fn cron(expression: &str) -> Result<Schedule, CronError> {
    Schedule::cron(expression)
}

pub struct Every(u32);

impl Every {
    fn interval(&self, unit_seconds: i64) -> Result<Schedule, CronError> {
        if self.0 == 0 {
            return Err(CronError("every(n) needs n of at least 1, got 0".into()));
        }
        Schedule::every(SignedDuration::from_secs(i64::from(self.0) * unit_seconds))
    }

    /// A cron step when `n` divides the unit evenly (so the step never restarts early),
    /// otherwise an interval.
    fn step_or_interval(
        &self,
        per_unit: u32,
        pattern: impl Fn(u32) -> String,
        unit_seconds: i64,
    ) -> Result<Schedule, CronError> {
        match self.0 {
            0 => self.interval(unit_seconds),
            n if per_unit.is_multiple_of(n) => Schedule::cron(&pattern(n)),
            _ => self.interval(unit_seconds),
        }
    }

    pub fn seconds(&self) -> Result<Schedule, CronError> {
        self.interval(1)
    }

    pub fn minutes(&self) -> Result<Schedule, CronError> {
        self.step_or_interval(
            60,
            |n| {
                if n == 1 {
                    "* * * * *".into()
                } else {
                    format!("*/{n} * * * *")
                }
            },
            60,
        )
    }

    pub fn hours(&self) -> Result<Schedule, CronError> {
        self.step_or_interval(
            24,
            |n| {
                if n == 1 {
                    "0 * * * *".into()
                } else {
                    format!("0 */{n} * * *")
                }
            },
            3600,
        )
    }

    pub fn days(&self) -> Result<Schedule, CronError> {
        self.step_or_interval(1, |_| "0 0 * * *".into(), 86_400)
    }
}

/// `HH:MM` (24-hour) → (hour, minute).
fn parse_time(text: &str) -> Result<(u32, u32), CronError> {
    let bad = || CronError(format!("a time is HH:MM in 24-hour form, got {text:?}"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(CronError(format!(
            "a time is between 00:00 and 23:59, got {text:?}"
        )));
    }
    Ok((h, m))
}

pub struct Daily;

impl Daily {
    pub fn at(&self, time: &str) -> Result<Schedule, CronError> {
        let (h, m) = parse_time(time)?;
        Schedule::cron(&format!("{m} {h} * * *"))
    }
}

pub struct Weekly {
    day: Result<u32, CronError>,
}

impl Weekly {
    /// A weekday by name (`"monday"`, `"mon"`, any case) or number (0 or 7 = Sunday).
    pub fn on(self, day: &str) -> Weekly {
        const DAYS: [&str; 7] = [
            "sunday",
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
        ];
        let lower = day.to_ascii_lowercase();
        let found = DAYS
            .iter()
            .position(|d| *d == lower || (lower.len() == 3 && d.starts_with(&lower)))
            .map(|i| i as u32)
            .or_else(|| lower.parse::<u32>().ok().filter(|n| *n <= 7).map(|n| n % 7));
        Weekly {
            day: found.ok_or_else(|| CronError(format!("{day:?} is not a day of the week"))),
        }
    }

    pub fn at(self, time: &str) -> Result<Schedule, CronError> {
        let day = self.day?;
        let (h, m) = parse_time(time)?;
        Schedule::cron(&format!("{m} {h} * * {day}"))
    }
}

pub struct Monthly {
    day: u32,
}

impl Monthly {
    pub fn on_day(self, day: u32) -> Monthly {
        Monthly { day }
    }

    pub fn at(self, time: &str) -> Result<Schedule, CronError> {
        if !(1..=31).contains(&self.day) {
            return Err(CronError(format!(
                "a day of the month is between 1 and 31, got {}",
                self.day
            )));
        }
        let (h, m) = parse_time(time)?;
        Schedule::cron(&format!("{m} {h} {} * *", self.day))
    }
}
