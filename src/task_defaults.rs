//! The defaults a runner registers for a task (`soniq.register_task`), checked field by field.
//!
//! The input is the JSON a runner publishes; the output is the same data normalised for
//! the `soniq.tasks` columns, with the retry options folded into one retry policy.

use crate::names::{name_problem, MAX_QUEUE_NAME_LEN};
use crate::retry::{Delay, RetryPolicy};
use pgrx::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskDefaults {
    queue: Option<String>,
    priority: Option<i64>,
    #[serde(alias = "max_retries")]
    retries: Option<i64>,
    timeout: Option<f64>,
    result_ttl: Option<f64>,
    unique: Option<bool>,
    retry_delay: Option<Delay>,
    retry_backoff: Option<bool>,
    retry_max_delay: Option<f64>,
    retry_jitter: Option<bool>,
    concurrency_key: Option<String>,
}

/// Segments a concurrency key's path may have, and bytes a segment may take.
const MAX_KEY_PATH_SEGMENTS: usize = 8;
const MAX_KEY_SEGMENT_BYTES: usize = 63;

/// The path in a job's args that a concurrency key names ("tenant_id", "customer.id"): field
/// names of letters, digits, `_` and `-`, joined by dots.
fn key_path(key: &str) -> Result<Vec<String>, String> {
    let segments: Vec<&str> = key.split('.').collect();
    let well_formed = segments.len() <= MAX_KEY_PATH_SEGMENTS
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.len() <= MAX_KEY_SEGMENT_BYTES
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !well_formed {
        return Err(format!(
            "concurrency_key must name a field of the args, like \"tenant_id\" or \"customer.id\" \
             (at most {MAX_KEY_PATH_SEGMENTS} names of letters, digits, '_' and '-', each at most \
             {MAX_KEY_SEGMENT_BYTES} bytes), got {key:?}"
        ));
    }
    Ok(segments.into_iter().map(str::to_owned).collect())
}

fn in_range(what: &str, value: i64, low: i64, high: i64) -> Result<i64, String> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{what} must be between {low} and {high}, got {value}"
        ))
    }
}

/// A job's timeout is at most 30 days (0: none).
pub const LONGEST_TIMEOUT_SECONDS: f64 = 30.0 * 24.0 * 3600.0;
/// A done job's result is kept at most 365 days.
pub const LONGEST_RESULT_TTL_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// Published defaults take at most this many bytes (as JSON text).
pub const MAX_DEFAULTS_BYTES: usize = 64 * 1024;

fn seconds(what: &str, value: f64, longest: f64) -> Result<f64, String> {
    if value.is_finite() && (0.0..=longest).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{what} must be a number of seconds between 0 and {longest}, got {}",
            crate::retry::shown(value)
        ))
    }
}

/// Validate registered defaults and normalise them; the error says which field is wrong.
pub fn normalize(defaults: &Value) -> Result<Value, String> {
    if !defaults.is_object() {
        return Err(format!(
            "task defaults must be a JSON object, got {defaults}"
        ));
    }
    let d: TaskDefaults = serde_json::from_value(defaults.clone())
        .map_err(|e| format!("invalid task defaults: {e}"))?;
    let mut out = Map::new();
    if let Some(queue) = d.queue {
        if let Some(problem) = name_problem("queue name", &queue, MAX_QUEUE_NAME_LEN) {
            return Err(problem);
        }
        out.insert("queue".into(), json!(queue));
    }
    if let Some(p) = d.priority {
        out.insert("priority".into(), json!(in_range("priority", p, 1, 1000)?));
    }
    if let Some(r) = d.retries {
        out.insert("retries".into(), json!(in_range("retries", r, 0, 1000)?));
    }
    if let Some(t) = d.timeout {
        out.insert(
            "timeout".into(),
            json!(seconds("timeout", t, LONGEST_TIMEOUT_SECONDS)?),
        );
    }
    if let Some(t) = d.result_ttl {
        out.insert(
            "result_ttl".into(),
            json!(seconds("result_ttl", t, LONGEST_RESULT_TTL_SECONDS)?),
        );
    }
    if let Some(u) = d.unique {
        out.insert("unique".into(), json!(u));
    }
    if let Some(key) = d.concurrency_key {
        out.insert("concurrency_key".into(), json!(key_path(&key)?));
    }
    let has_retry_policy = d.retry_delay.is_some()
        || d.retry_backoff.is_some()
        || d.retry_max_delay.is_some()
        || d.retry_jitter.is_some();
    if has_retry_policy {
        let policy = RetryPolicy {
            delay: d.retry_delay.unwrap_or_default(),
            backoff: d.retry_backoff.unwrap_or(false),
            max_delay: d.retry_max_delay,
            jitter: d.retry_jitter.unwrap_or(true),
        };
        policy.validate()?;
        out.insert(
            "retry_policy".into(),
            serde_json::to_value(policy).map_err(|e| e.to_string())?,
        );
    }
    Ok(Value::Object(out))
}

/// Check a task's registered defaults and return them normalised (22023 when invalid,
/// 54000 when larger than 64 KiB).
#[pg_extern(immutable, parallel_safe, name = "_normalize_task_defaults")]
pub fn normalize_task_defaults(defaults: Option<pgrx::JsonB>) -> pgrx::JsonB {
    let Some(defaults) = defaults else {
        crate::null_not_allowed("task defaults")
    };
    let size = defaults.0.to_string().len();
    if size > MAX_DEFAULTS_BYTES {
        crate::limit_exceeded(format!(
            "task defaults take {size} bytes, more than the {MAX_DEFAULTS_BYTES} they may take"
        ));
    }
    pgrx::JsonB(normalize(&defaults.0).unwrap_or_else(|e| crate::invalid_parameter(e)))
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn normalises_every_option() {
        let out = normalize(&json!({
            "queue": "urgent", "priority": 10, "max_retries": 5, "timeout": 120,
            "result_ttl": 0, "unique": true, "retry_delay": [1, 5, 30]
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "queue": "urgent", "priority": 10, "retries": 5, "timeout": 120.0,
                "result_ttl": 0.0, "unique": true,
                "retry_policy": {"delay": [1.0, 5.0, 30.0], "backoff": false, "jitter": true}
            })
        );
    }

    #[test]
    fn a_concurrency_key_is_a_path_of_field_names() {
        assert_eq!(
            normalize(&json!({"concurrency_key": "customer.id"})).unwrap(),
            json!({"concurrency_key": ["customer", "id"]})
        );
        for bad in ["", "a..b", "tenant id", "a.", "$.x", "a.b.c.d.e.f.g.h.i"] {
            let err = normalize(&json!({ "concurrency_key": bad })).unwrap_err();
            assert!(
                err.contains("must name a field of the args"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn empty_defaults_stay_empty() {
        assert_eq!(normalize(&json!({})).unwrap(), json!({}));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let err = normalize(&json!({"retry": 5})).unwrap_err();
        assert!(err.contains("unknown field `retry`"), "{err}");
        assert!(normalize(&json!({"priority": 0}))
            .unwrap_err()
            .contains("between 1 and 1000"));
        assert!(normalize(&json!({"retries": -1}))
            .unwrap_err()
            .contains("between 0 and 1000"));
        assert!(normalize(&json!({"timeout": -5}))
            .unwrap_err()
            .contains("between 0 and 2592000"));
        // Past the range: 1e300 once became a negative interval.
        assert!(normalize(&json!({"timeout": 1e300}))
            .unwrap_err()
            .contains("between 0 and 2592000"));
        assert!(normalize(&json!({"result_ttl": 1e300}))
            .unwrap_err()
            .contains("between 0 and 31536000"));
        assert!(normalize(&json!({"retry_delay": vec![1; 101]}))
            .unwrap_err()
            .contains("at most 100 delays"));
        assert!(normalize(&json!({"retry_max_delay": 1e300}))
            .unwrap_err()
            .contains("365 days"));
        assert!(normalize(&json!({"queue": "a b"}))
            .unwrap_err()
            .contains("' '"));
        assert!(normalize(&json!({"retries": 1, "max_retries": 2}))
            .unwrap_err()
            .contains("duplicate"));
        assert!(normalize(&json!([1])).unwrap_err().contains("JSON object"));
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn sql_normalize_folds_retry_options() {
        let out = Spi::get_one::<pgrx::JsonB>(
            "SELECT soniq._normalize_task_defaults('{\"retry_delay\": 3, \"retry_backoff\": true}')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out.0,
            serde_json::json!({"retry_policy": {"delay": 3.0, "backoff": true, "jitter": true}})
        );
    }

    #[pg_test(error = "priority must be between 1 and 1000, got 5000")]
    fn sql_normalize_refuses_out_of_range() {
        Spi::run("SELECT soniq._normalize_task_defaults('{\"priority\": 5000}')").unwrap();
    }
}
