//! Parsing and matching of 5-field cron expressions.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::fmt;
use std::str::FromStr;

/// A parse error, with a message that names the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(pub(crate) String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

/// A parsed cron expression: the set of minutes, hours, days, months and weekdays it matches.
///
/// A day matches when its month matches and, as in Vixie cron, when both its day-of-month
/// and day-of-week fields match; except that when *both* fields are restricted (neither
/// starts with `*`), either one matching is enough. `0 9 1 * 1` fires on the 1st of each
/// month *and* on every Monday; `0 9 */2 * 1` fires on Mondays that fall on an odd day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_star: bool,
    dow_star: bool,
    source: String,
}

/// How far ahead [`CronExpr::next_after`] looks: a whole Gregorian cycle (400 years), after
/// which calendar and weekdays repeat. A day the parser accepts recurs within it on every
/// weekday (`* * 9 11 */7`, "9 November when it is a Sunday", can be 11 years apart).
const SEARCH_DAYS: i32 = 146_097;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value names count from (1 for months, 0 for weekdays).
    names_start: u32,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_start: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_start: 0,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    names_start: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    names_start: 1,
};
// 7 is accepted as Sunday and folded onto 0 after parsing.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    names_start: 0,
};

impl Field {
    fn value(&self, text: &str) -> Result<u32, CronError> {
        let value = match text.parse::<u32>() {
            Ok(n) => n,
            Err(_) => self
                .names
                .iter()
                .position(|name| name.eq_ignore_ascii_case(text))
                .map(|i| i as u32 + self.names_start)
                .ok_or_else(|| {
                    CronError(format!(
                        "{} field: {text:?} is not a number or a known name",
                        self.name
                    ))
                })?,
        };
        if value < self.min || value > self.max {
            return Err(CronError(format!(
                "{} field: {value} is out of range {}-{}",
                self.name, self.min, self.max
            )));
        }
        Ok(value)
    }

    /// The bit set of values one field matches.
    fn parse(&self, text: &str) -> Result<u64, CronError> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        CronError(format!(
                            "{} field: step {step:?} must be a whole number above 0",
                            self.name
                        ))
                    })?;
                    (range, step)
                }
                None => (item, 1),
            };
            let (low, high) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(CronError(format!(
                        "{} field: range {range:?} runs backwards",
                        self.name
                    )));
                }
                (a, b)
            } else if item.contains('/') {
                // `a/n`: from a to the end of the field, every n.
                (self.value(range)?, self.max)
            } else {
                let v = self.value(range)?;
                (v, v)
            };
            for v in (low..=high).step_by(step as usize) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

fn expand_macro(text: &str) -> Option<&'static str> {
    Some(match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

fn bit(set: u64, value: i8) -> bool {
    set & (1 << value) != 0
}

fn days_in_month_at_most(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, CronError> {
        let source = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let expanded = expand_macro(&source).unwrap_or(&source);
        let fields: Vec<&str> = expanded.split(' ').filter(|f| !f.is_empty()).collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week), got {} in {source:?}",
                fields.len()
            )));
        }
        let mut days_of_week = DAY_OF_WEEK.parse(fields[4])?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & 0x7f;
        }
        let expr = CronExpr {
            minutes: MINUTE.parse(fields[0])?,
            hours: HOUR.parse(fields[1])? as u32,
            days_of_month: DAY_OF_MONTH.parse(fields[2])? as u32,
            months: MONTH.parse(fields[3])? as u16,
            days_of_week: days_of_week as u8,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
            source,
        };
        expr.check_can_fire()?;
        Ok(expr)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl CronExpr {
    /// Refuse a day-of-month that no allowed month has (`0 0 30 2 *`): it would never fire.
    fn check_can_fire(&self) -> Result<(), CronError> {
        let day_decides = !self.dom_star && self.dow_star;
        let possible = (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=days_in_month_at_most(m)).any(|d| self.days_of_month & (1 << d) != 0)
        });
        if day_decides && !possible {
            return Err(CronError(format!(
                "{:?} never fires: none of its months has such a day",
                self.source
            )));
        }
        Ok(())
    }

    fn day_matches(&self, date: Date) -> bool {
        if !bit(u64::from(self.months), date.month()) {
            return false;
        }
        let dom = bit(u64::from(self.days_of_month), date.day());
        let dow = bit(
            u64::from(self.days_of_week),
            date.weekday().to_sunday_zero_offset(),
        );
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the wall-clock minute `datetime` (seconds ignored) matches.
    pub fn matches(&self, datetime: DateTime) -> bool {
        self.day_matches(datetime.date())
            && bit(u64::from(self.hours), datetime.hour())
            && bit(self.minutes, datetime.minute())
    }

    /// The first instant strictly after `after` at which the expression fires in `tz`
    /// (`None` only past the end of the representable calendar). See the crate docs for
    /// daylight-saving transitions.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let mut date = start.date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                for hour in (0i8..24).filter(|h| self.hours & (1 << h) != 0) {
                    for minute in (0i8..60).filter(|m| self.minutes & (1 << m) != 0) {
                        let local = date.to_datetime(Time::constant(hour, minute, 0, 0));
                        if local <= start {
                            continue;
                        }
                        // `compatible`: the earlier offset in a repeated hour, shifted past a gap.
                        let Ok(instant) = tz.to_ambiguous_timestamp(local).compatible() else {
                            continue;
                        };
                        if instant > after {
                            return Some(instant);
                        }
                    }
                }
            }
            date = date.checked_add(1.day()).ok()?;
        }
        None
    }
}
