//! Times as the runner prints and exports them (RFC 3339 in UTC), and durations as it reads
//! them from the database.

use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Seconds read from the database as a `Duration`. A value no `Duration` holds — negative,
/// NaN, too large: a row an older version wrote — is an error naming `what`, never a panic.
pub(crate) fn duration_from_db(seconds: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{what} of {seconds} seconds is out of range"))
}

/// `2026-11-28T21:38:00.123456Z`, or `None` for a time jiff cannot represent.
pub(crate) fn rfc3339(time: SystemTime) -> Option<String> {
    jiff::Timestamp::try_from(time).ok().map(|t| t.to_string())
}

/// A time as a JSON string, `null` when absent.
pub(crate) fn rfc3339_json(time: Option<SystemTime>) -> Value {
    time.and_then(rfc3339).map_or(Value::Null, Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_no_duration_holds_are_errors_not_panics() {
        assert_eq!(
            duration_from_db(1.5, "a timeout"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(duration_from_db(0.0, "a timeout"), Ok(Duration::ZERO));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            let err = duration_from_db(bad, "a timeout").unwrap_err();
            assert_eq!(err, format!("a timeout of {bad} seconds is out of range"));
        }
    }
}
