//! Cron evaluation for `soniq.schedules`, on top of the soniq-cron crate.
//!
//! Timestamps cross the SQL boundary as `timestamptz`; intervals as seconds (`every`), since
//! a schedule's interval is a fixed duration.

use pgrx::prelude::*;
use soniq_cron::{Schedule, SignedDuration, TimeZone, Timestamp};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

fn to_instant(value: TimestampWithTimeZone) -> Timestamp {
    if !value.is_finite() {
        crate::invalid_parameter("an infinite timestamp has no next fire time".into())
    }
    let micros = pg_sys::TimestampTz::from(value) + PG_EPOCH_OFFSET_MICROS;
    Timestamp::from_microsecond(micros)
        .unwrap_or_else(|e| crate::invalid_parameter(format!("timestamp out of range: {e}")))
}

fn from_instant(value: Timestamp) -> TimestampWithTimeZone {
    let micros = value.as_microsecond() - PG_EPOCH_OFFSET_MICROS;
    TimestampWithTimeZone::try_from(micros)
        .unwrap_or_else(|e| crate::invalid_parameter(format!("timestamp out of range: {e:?}")))
}

fn time_zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|_| {
        crate::invalid_parameter(format!(
            "unknown time zone {name:?}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ))
    })
}

/// The schedule a `soniq.schedules` row describes: exactly one of a cron expression and an
/// interval (in seconds).
fn schedule(cron: Option<&str>, every_seconds: Option<f64>) -> Schedule {
    let parsed = match (cron, every_seconds) {
        (Some(expr), None) => {
            Schedule::cron(expr).map_err(|e| format!("invalid cron expression {expr:?}: {e}"))
        }
        (None, Some(seconds)) => {
            if !seconds.is_finite() || seconds > 1e12 {
                Err(format!("every must be a finite interval, got {seconds} s"))
            } else {
                Schedule::every(SignedDuration::from_secs_f64(seconds)).map_err(|e| e.to_string())
            }
        }
        _ => Err("give exactly one of cron and every".into()),
    };
    parsed.unwrap_or_else(|e| crate::invalid_parameter(e))
}

/// The first time `expr` fires after `after`, in time zone `tz` (for operators).
#[pg_extern(stable, parallel_safe)]
pub fn cron_next(
    expr: &str,
    after: default!(TimestampWithTimeZone, "now()"),
    tz: default!(&str, "'UTC'"),
) -> Option<TimestampWithTimeZone> {
    schedule(Some(expr), None)
        .next_after(to_instant(after), &time_zone(tz))
        .map(from_instant)
}

/// Check a schedule's timing (22023 when invalid).
#[pg_extern(immutable, parallel_safe, name = "_check_schedule")]
pub fn check_schedule(cron: Option<&str>, every_seconds: Option<f64>, tz: &str) -> bool {
    schedule(cron, every_seconds);
    time_zone(tz);
    true
}

/// A schedule's next fire time. With `fired` NULL (a new or resumed schedule) it is the
/// first fire time after `now`; otherwise the slot after `now` that follows `fired`
/// (one fire for all missed slots; intervals keep their grid).
#[pg_extern(immutable, parallel_safe, name = "_next_fire")]
pub fn next_fire(
    cron: Option<&str>,
    every_seconds: Option<f64>,
    tz: &str,
    fired: Option<TimestampWithTimeZone>,
    now: TimestampWithTimeZone,
) -> Option<TimestampWithTimeZone> {
    let schedule = schedule(cron, every_seconds);
    let tz = time_zone(tz);
    let now = to_instant(now);
    match fired {
        None => schedule.next_after(now, &tz),
        Some(fired) => schedule.next_slot(to_instant(fired), now, &tz),
    }
    .map(from_instant)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn cron_next_in_a_time_zone() {
        let next = Spi::get_one::<bool>(
            "SELECT soniq.cron_next('30 2 * * *', '2026-03-08 06:00+00', 'America/New_York')
                    = '2026-03-08 07:30+00'::timestamptz",
        );
        assert_eq!(next, Ok(Some(true)));
    }

    #[pg_test]
    fn next_fire_keeps_intervals_on_their_grid() {
        let next = Spi::get_one::<bool>(
            "SELECT soniq._next_fire(NULL, 10, 'UTC', '2026-01-01 00:00:00+00', '2026-01-01 00:00:35+00')
                    = '2026-01-01 00:00:40+00'::timestamptz",
        );
        assert_eq!(next, Ok(Some(true)));
    }

    #[pg_test(
        error = "unknown time zone \"Mars/Olympus\"; use an IANA name such as 'UTC' or 'Europe/Berlin'"
    )]
    fn unknown_time_zones_are_refused() {
        Spi::run("SELECT soniq.cron_next('* * * * *', now(), 'Mars/Olympus')").unwrap();
    }

    #[pg_test(
        error = "invalid cron expression \"61 * * * *\": minute field: 61 is out of range 0-59"
    )]
    fn bad_cron_is_refused() {
        Spi::run("SELECT soniq.cron_next('61 * * * *')").unwrap();
    }
}
