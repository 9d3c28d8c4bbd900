//! Settings: `SONIQ_*` environment variables, validated once with errors that name the
//! variable and the accepted range.

use crate::error::{Error, Result};
use std::time::Duration;

/// What to do when a job is enqueued by a task name that has no handler in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueValidation {
    /// Refuse the enqueue (the default: a typo never reaches the queue).
    Strict,
    /// Enqueue, and log a warning (once per task name and process).
    Warn,
    /// Enqueue silently (producers that only know task names).
    None,
}

/// The rule task names must follow: a regular expression that must match the whole name.
#[derive(Debug, Clone)]
pub struct TaskNamePattern {
    source: String,
    regex: regex_lite::Regex,
}

impl TaskNamePattern {
    /// Dot-separated lowercase words: `billing.send_invoice`.
    pub const DEFAULT: &'static str = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*";

    pub fn new(pattern: &str) -> std::result::Result<Self, String> {
        let regex =
            regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?;
        Ok(TaskNamePattern {
            source: pattern.to_string(),
            regex,
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Default for TaskNamePattern {
    fn default() -> Self {
        TaskNamePattern::new(Self::DEFAULT).expect("the default pattern compiles")
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `SONIQ_DATABASE_URL`, default `postgresql://postgres@localhost/soniq`.
    pub database_url: String,
    /// `SONIQ_CONCURRENCY`: jobs one worker runs at once, 1..=1000, default 4.
    pub concurrency: usize,
    /// `SONIQ_POLL_INTERVAL`: seconds an idle worker waits for a notification before it
    /// polls, 0.1..=60, default 5.
    pub poll_interval: Duration,
    /// `SONIQ_HEARTBEAT_INTERVAL`: seconds between heartbeats, 0.1..=60, default 5.
    pub heartbeat_interval: Duration,
    /// `SONIQ_SHUTDOWN_TIMEOUT`: seconds running jobs get to finish at shutdown, 0..=3600, default 30.
    pub shutdown_timeout: Duration,
    /// `SONIQ_ERROR_RETRY_DELAY`: seconds to wait after a database error, 0.1..=300, default 5.
    pub error_retry_delay: Duration,
    /// `SONIQ_HEARTBEAT_TIMEOUT`: silence after which a worker is presumed dead, 1..=7200 s,
    /// default 300, at least twice `SONIQ_HEARTBEAT_INTERVAL` (the worker's own maintenance and
    /// `soniq status` use it).
    pub heartbeat_timeout: Duration,
    /// `SONIQ_CLEANUP_INTERVAL`: seconds between a worker's maintenance rounds (rescue of dead
    /// workers' jobs, pruning), 10..=3600, default 300. They back up the control plane, and
    /// do its work where no control plane serves the database.
    pub cleanup_interval: Duration,
    /// `SONIQ_ENQUEUE_VALIDATION`: `strict` (default), `warn` or `none`.
    pub enqueue_validation: EnqueueValidation,
    /// `SONIQ_PRODUCER_ID`, stamped on every job this process enqueues; default `host:pid:program`.
    pub producer_id: String,
    /// `SONIQ_TASK_NAME_PATTERN`: the rule task names follow (whole-name match).
    pub task_name_pattern: TaskNamePattern,
    /// `SONIQ_ROUTE_MAP`: a JSON object of task-name prefix → queue, for handlers registered
    /// without a queue (the longest matching prefix wins).
    pub route_map: Vec<(String, String)>,
}

/// This machine's name (as workers register with it), if it has one.
pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

fn default_producer_id() -> String {
    let host = hostname()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    let program = std::env::args()
        .next()
        .and_then(|p| p.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    format!("{host}:{}:{program}", std::process::id())
}

impl Settings {
    /// Defaults, with the given database URL.
    pub fn new(database_url: impl Into<String>) -> Self {
        Settings {
            database_url: database_url.into(),
            concurrency: 4,
            poll_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            error_retry_delay: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(300),
            cleanup_interval: Duration::from_secs(300),
            enqueue_validation: EnqueueValidation::Strict,
            producer_id: default_producer_id(),
            task_name_pattern: TaskNamePattern::default(),
            route_map: Vec::new(),
        }
    }

    /// Read the `SONIQ_*` variables; an invalid value is an [`Error::Config`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read settings from any source of variables (the environment, a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut settings = Settings::new(
            lookup("SONIQ_DATABASE_URL")
                .unwrap_or_else(|| "postgresql://postgres@localhost/soniq".into()),
        );
        if settings.database_url.trim().is_empty() {
            return Err(Error::Config("SONIQ_DATABASE_URL must not be empty".into()));
        }
        if let Some(value) = lookup("SONIQ_CONCURRENCY") {
            settings.concurrency = parse_count("SONIQ_CONCURRENCY", &value, 1, 1000)?;
        }
        let seconds = |name: &str, low: f64, high: f64, default: Duration| -> Result<Duration> {
            match lookup(name) {
                Some(value) => parse_seconds(name, &value, low, high),
                None => Ok(default),
            }
        };
        settings.poll_interval = seconds("SONIQ_POLL_INTERVAL", 0.1, 60.0, settings.poll_interval)?;
        settings.heartbeat_interval = seconds(
            "SONIQ_HEARTBEAT_INTERVAL",
            0.1,
            60.0,
            settings.heartbeat_interval,
        )?;
        settings.shutdown_timeout = seconds(
            "SONIQ_SHUTDOWN_TIMEOUT",
            0.0,
            3600.0,
            settings.shutdown_timeout,
        )?;
        settings.error_retry_delay = seconds(
            "SONIQ_ERROR_RETRY_DELAY",
            0.1,
            300.0,
            settings.error_retry_delay,
        )?;
        settings.heartbeat_timeout = seconds(
            "SONIQ_HEARTBEAT_TIMEOUT",
            1.0,
            7200.0,
            settings.heartbeat_timeout,
        )?;
        settings.cleanup_interval = seconds(
            "SONIQ_CLEANUP_INTERVAL",
            10.0,
            3600.0,
            settings.cleanup_interval,
        )?;
        if let Some(value) = lookup("SONIQ_ENQUEUE_VALIDATION") {
            settings.enqueue_validation = match value.trim().to_ascii_lowercase().as_str() {
                "strict" => EnqueueValidation::Strict,
                "warn" => EnqueueValidation::Warn,
                "none" => EnqueueValidation::None,
                _ => {
                    return Err(Error::Config(format!(
                        "SONIQ_ENQUEUE_VALIDATION must be strict, warn or none, got {value:?}"
                    )))
                }
            };
        }
        if let Some(value) = lookup("SONIQ_PRODUCER_ID").filter(|v| v != "auto") {
            settings.producer_id = value;
        }
        if let Some(value) = lookup("SONIQ_TASK_NAME_PATTERN") {
            settings.task_name_pattern = TaskNamePattern::new(&value).map_err(|e| {
                Error::Config(format!(
                    "SONIQ_TASK_NAME_PATTERN is not a valid regular expression: {e}"
                ))
            })?;
        }
        if let Some(value) = lookup("SONIQ_ROUTE_MAP") {
            settings.route_map = parse_route_map(&value)?;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The rules between settings (each one's own range is checked where it is read):
    /// `SONIQ_HEARTBEAT_TIMEOUT` must be at least twice `SONIQ_HEARTBEAT_INTERVAL`, or one
    /// late heartbeat makes a live worker look dead — to the control plane, and to its own
    /// maintenance rounds, which would take back its running jobs.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_timeout < self.heartbeat_interval * 2 {
            return Err(Error::Config(format!(
                "SONIQ_HEARTBEAT_TIMEOUT ({} s) must be at least twice SONIQ_HEARTBEAT_INTERVAL ({} s): \
                 a worker one heartbeat late would be presumed dead",
                self.heartbeat_timeout.as_secs_f64(),
                self.heartbeat_interval.as_secs_f64()
            )));
        }
        Ok(())
    }
}

fn parse_route_map(value: &str) -> Result<Vec<(String, String)>> {
    let bad = |why: String| {
        Error::Config(format!(
            "SONIQ_ROUTE_MAP must be a JSON object of prefix to queue name: {why}"
        ))
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
    let mut routes = map
        .into_iter()
        .map(|(prefix, queue)| match queue {
            serde_json::Value::String(queue) if !queue.is_empty() => Ok((prefix, queue)),
            other => Err(bad(format!("the queue for {prefix:?} is {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    Ok(routes)
}

fn parse_count(name: &str, value: &str, low: usize, high: usize) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(Error::Config(format!(
            "{name} must be a whole number from {low} to {high}, got {value:?}"
        ))),
    }
}

fn parse_seconds(name: &str, value: &str, low: f64, high: f64) -> Result<Duration> {
    match value.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (low..=high).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::Config(format!(
            "{name} must be a number of seconds from {low} to {high}, got {value:?}"
        ))),
    }
}

/// The URL with its password replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(mask_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(mask_url("postgresql://u:p@h"), "postgresql://u:***@h");
        assert_eq!(mask_url("host=db user=app"), "host=db user=app");
    }

    fn from(vars: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_reference() {
        let s = from(&[]).unwrap();
        assert_eq!(s.database_url, "postgresql://postgres@localhost/soniq");
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.poll_interval, Duration::from_secs(5));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.enqueue_validation, EnqueueValidation::Strict);
    }

    #[test]
    fn reads_every_variable() {
        let s = from(&[
            ("SONIQ_DATABASE_URL", "postgres://x@h/db"),
            ("SONIQ_CONCURRENCY", "16"),
            ("SONIQ_POLL_INTERVAL", "0.5"),
            ("SONIQ_HEARTBEAT_INTERVAL", "2"),
            ("SONIQ_SHUTDOWN_TIMEOUT", "0"),
            ("SONIQ_ERROR_RETRY_DELAY", "1"),
            ("SONIQ_HEARTBEAT_TIMEOUT", "60"),
            ("SONIQ_CLEANUP_INTERVAL", "30"),
            ("SONIQ_ENQUEUE_VALIDATION", "warn"),
            ("SONIQ_PRODUCER_ID", "web-1"),
        ])
        .unwrap();
        assert_eq!(s.concurrency, 16);
        assert_eq!(s.poll_interval, Duration::from_millis(500));
        assert_eq!(s.shutdown_timeout, Duration::ZERO);
        assert_eq!(s.enqueue_validation, EnqueueValidation::Warn);
        assert_eq!(s.producer_id, "web-1");
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(s.cleanup_interval, Duration::from_secs(30));
    }

    #[test]
    fn refuses_out_of_range_values_by_name() {
        let err = from(&[("SONIQ_CONCURRENCY", "0")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "SONIQ_CONCURRENCY must be a whole number from 1 to 1000, got \"0\""
        );
        let err = from(&[("SONIQ_POLL_INTERVAL", "fast")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SONIQ_POLL_INTERVAL must be a number of seconds from 0.1 to 60"));
        assert!(from(&[("SONIQ_ENQUEUE_VALIDATION", "loose")]).is_err());
        assert!(from(&[("SONIQ_DATABASE_URL", " ")]).is_err());
        assert!(from(&[("SONIQ_HEARTBEAT_INTERVAL", "NaN")]).is_err());
        let err = from(&[("SONIQ_CLEANUP_INTERVAL", "5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 10 to 3600"), "{err}");
        let err = from(&[("SONIQ_TASK_NAME_PATTERN", "(")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SONIQ_TASK_NAME_PATTERN is not a valid regular expression"),
            "{err}"
        );
        assert!(from(&[("SONIQ_ROUTE_MAP", "[1]")]).is_err());
        assert!(from(&[("SONIQ_ROUTE_MAP", r#"{"billing.": 7}"#)]).is_err());
    }

    #[test]
    fn the_heartbeat_timeout_must_be_at_least_twice_the_interval() {
        let err = from(&[
            ("SONIQ_HEARTBEAT_INTERVAL", "5"),
            ("SONIQ_HEARTBEAT_TIMEOUT", "5"),
        ])
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert_eq!(
            err.to_string(),
            "SONIQ_HEARTBEAT_TIMEOUT (5 s) must be at least twice SONIQ_HEARTBEAT_INTERVAL (5 s): \
             a worker one heartbeat late would be presumed dead"
        );
        assert!(from(&[
            ("SONIQ_HEARTBEAT_INTERVAL", "5"),
            ("SONIQ_HEARTBEAT_TIMEOUT", "10")
        ])
        .is_ok());
        // The interval alone can break the rule too: 60 s against a 100 s timeout.
        assert!(from(&[
            ("SONIQ_HEARTBEAT_INTERVAL", "60"),
            ("SONIQ_HEARTBEAT_TIMEOUT", "100")
        ])
        .is_err());

        // Settings made in code are checked when an application is made from them.
        let mut settings = Settings::new("postgres://localhost/soniq");
        settings.heartbeat_interval = Duration::from_secs(5);
        settings.heartbeat_timeout = Duration::from_secs(9);
        let err = crate::Soniq::with_settings(settings.clone()).err().unwrap();
        assert!(
            err.to_string().contains("SONIQ_HEARTBEAT_TIMEOUT (9 s)"),
            "{err}"
        );
        settings.heartbeat_timeout = Duration::from_secs(10);
        assert!(crate::Soniq::with_settings(settings).is_ok());
    }

    #[test]
    fn task_name_patterns_match_whole_names() {
        let default = TaskNamePattern::default();
        for good in ["send_welcome", "billing.send_invoice", "a1.b_2.c"] {
            assert!(default.matches(good), "{good}");
        }
        for bad in [
            "",
            "Billing.x",
            "a..b",
            "1a",
            "a.",
            "send-welcome",
            "a b",
            "x.y; drop",
        ] {
            assert!(!default.matches(bad), "{bad}");
        }
        let custom = from(&[("SONIQ_TASK_NAME_PATTERN", "[a-z_]+(::[a-z_]+)*")])
            .unwrap()
            .task_name_pattern;
        assert!(custom.matches("billing::send_invoice"));
        assert!(!custom.matches("billing.send_invoice"));
    }

    #[test]
    fn route_map_is_ordered_longest_prefix_first() {
        let s = from(&[(
            "SONIQ_ROUTE_MAP",
            r#"{"billing.": "billing", "billing.eu.": "billing_eu"}"#,
        )])
        .unwrap();
        assert_eq!(
            s.route_map,
            vec![
                ("billing.eu.".to_string(), "billing_eu".to_string()),
                ("billing.".into(), "billing".into())
            ]
        );
    }
}
