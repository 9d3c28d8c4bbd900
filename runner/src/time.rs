//! Times as the runner prints and exports them: RFC 3339 in UTC.

use serde_json::Value;
use std::time::SystemTime;

/// `2026-11-28T21:38:00.123456Z`, or `None` for a time jiff cannot represent.
pub(crate) fn rfc3339(time: SystemTime) -> Option<String> {
    jiff::Timestamp::try_from(time).ok().map(|t| t.to_string())
}

/// A time as a JSON string, `null` when absent.
pub(crate) fn rfc3339_json(time: Option<SystemTime>) -> Value {
    time.and_then(rfc3339).map_or(Value::Null, Value::String)
}
