//! Cron expressions, fixed intervals and their next fire times, for Soniq.
//!
//! No database and no runtime: the extension's background worker and the runner both use it.
//!
//! * [`CronExpr`]: the standard 5-field syntax (`minute hour day-of-month month day-of-week`)
//!   with ranges, lists, steps, month and weekday names, `0` and `7` for Sunday, the
//!   `@hourly`-style macros and the classic day-of-month / day-of-week rule (see [`CronExpr`]).
//! * [`Schedule`]: a cron expression or an interval (`every`), and [`Schedule::next_after`].
//! * [`dsl`]: the builder the Python Soniq documents (`every(5).minutes()`, `daily().at("09:00")`, …).
//!
//! # Time zones and daylight saving
//!
//! A cron expression names wall-clock times in a time zone. Each wall-clock time that matches
//! fires once:
//! * in a repeated hour (clocks go back), at its first occurrence;
//! * in a skipped hour (clocks go forward), shifted forward by the length of the gap
//!   (`30 2 * * *` fires at 03:30 on the day New York springs forward), and only the first
//!   matching time of the gap fires (the others would fall on the same instants again).
//!
//! Intervals ignore the calendar: `every 1h` is 3600 s of real time, across any transition.

mod expr;
mod schedule;

pub mod dsl;

pub use expr::{CronError, CronExpr};
pub use jiff::{tz::TimeZone, SignedDuration, Timestamp};
pub use schedule::Schedule;
