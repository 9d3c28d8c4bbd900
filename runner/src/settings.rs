//! Settings: `SONIQ_*` environment variables, validated once with errors that name the
//! variable and the accepted range.

use crate::connection::mask_url;
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

/// Where a worker's listener waits for the notification of a new job (`SONIQ_LISTEN_URL`).
#[derive(Clone, PartialEq, Eq)]
pub enum Listen {
    /// On a connection to `SONIQ_DATABASE_URL` (the default).
    Database,
    /// On a connection to this URL: the server itself when the database URL goes through
    /// PgBouncer in transaction mode, which cannot keep a `LISTEN`.
    Url(String),
    /// Nowhere: idle workers poll every `SONIQ_POLL_INTERVAL`.
    Off,
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Database => f.write_str("Database"),
            Listen::Url(url) => f.debug_tuple("Url").field(&mask_url(url)).finish(),
            Listen::Off => f.write_str("Off"),
        }
    }
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

/// A setting counted in whole numbers: its variable and range, used to read the variable and
/// to check a value set in code or by a flag.
struct Count {
    var: &'static str,
    low: usize,
    high: usize,
}

/// A setting in seconds: its variable and range.
struct Seconds {
    var: &'static str,
    low: f64,
    high: f64,
}

const CONCURRENCY: Count = Count {
    var: "SONIQ_CONCURRENCY",
    low: 1,
    high: 1000,
};
const POLL_INTERVAL: Seconds = Seconds {
    var: "SONIQ_POLL_INTERVAL",
    low: 0.1,
    high: 60.0,
};
const HEARTBEAT_INTERVAL: Seconds = Seconds {
    var: "SONIQ_HEARTBEAT_INTERVAL",
    low: 0.1,
    high: 60.0,
};
const SHUTDOWN_TIMEOUT: Seconds = Seconds {
    var: "SONIQ_SHUTDOWN_TIMEOUT",
    low: 0.0,
    high: 3600.0,
};
const ERROR_RETRY_DELAY: Seconds = Seconds {
    var: "SONIQ_ERROR_RETRY_DELAY",
    low: 0.1,
    high: 300.0,
};
const HEARTBEAT_TIMEOUT: Seconds = Seconds {
    var: "SONIQ_HEARTBEAT_TIMEOUT",
    low: 1.0,
    high: 7200.0,
};
const CLEANUP_INTERVAL: Seconds = Seconds {
    var: "SONIQ_CLEANUP_INTERVAL",
    low: 10.0,
    high: 3600.0,
};

impl Count {
    fn refused(&self, name: &str, shown: impl std::fmt::Display) -> Error {
        Error::Config(format!(
            "{name} must be a whole number from {} to {}, got {shown}",
            self.low, self.high
        ))
    }

    fn check_as(&self, name: &str, n: usize) -> Result<usize> {
        if (self.low..=self.high).contains(&n) {
            Ok(n)
        } else {
            Err(self.refused(name, n))
        }
    }

    fn parse(&self, text: &str) -> Result<usize> {
        match text.trim().parse::<usize>() {
            Ok(n) if (self.low..=self.high).contains(&n) => Ok(n),
            _ => Err(self.refused(self.var, format!("{text:?}"))),
        }
    }
}

impl Seconds {
    fn refused(&self, shown: impl std::fmt::Display) -> Error {
        Error::Config(format!(
            "{} must be a number of seconds from {} to {}, got {shown}",
            self.var, self.low, self.high
        ))
    }

    fn check(&self, value: Duration) -> Result<Duration> {
        if (self.low..=self.high).contains(&value.as_secs_f64()) {
            Ok(value)
        } else {
            Err(self.refused(value.as_secs_f64()))
        }
    }

    fn parse(&self, text: &str) -> Result<Duration> {
        match text.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (self.low..=self.high).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            _ => Err(self.refused(format!("{text:?}"))),
        }
    }
}

/// A worker's concurrency given other than by `SONIQ_CONCURRENCY` (`name`: the flag or the
/// field), checked against that variable's range.
pub(crate) fn check_concurrency(name: &str, n: usize) -> Result<usize> {
    CONCURRENCY.check_as(name, n)
}

/// The settings of an application, validated: made by [`Settings::new`] (the defaults),
/// [`Settings::builder`] or from the environment ([`Settings::from_env`]); each way checks
/// every value's range and the rules between them. Its `Debug` masks passwords.
#[derive(Debug, Clone)]
pub struct Settings {
    database_url: ConnectionString,
    concurrency: usize,
    poll_interval: Duration,
    heartbeat_interval: Duration,
    shutdown_timeout: Duration,
    error_retry_delay: Duration,
    heartbeat_timeout: Duration,
    cleanup_interval: Duration,
    enqueue_validation: EnqueueValidation,
    producer_id: String,
    task_name_pattern: TaskNamePattern,
    route_map: Vec<(String, String)>,
    statement_cache: bool,
    listen: Listen,
}

/// A connection string, shown (`Debug`) with its password masked.
#[derive(Clone)]
struct ConnectionString(String);

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&mask_url(&self.0), f)
    }
}

/// This machine's name (as workers register with it), if it has one.
pub fn hostname() -> Option<String> {
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

/// The database `SONIQ_DATABASE_URL` names when it is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgresql://postgres@localhost/soniq";

impl Settings {
    /// The defaults, with the given database URL.
    pub fn new(database_url: impl Into<String>) -> Self {
        Settings {
            database_url: ConnectionString(database_url.into()),
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
            statement_cache: true,
            listen: Listen::Database,
        }
    }

    /// Settings from the defaults, changed by the builder's setters and checked by `build`.
    pub fn builder(database_url: impl Into<String>) -> SettingsBuilder {
        SettingsBuilder {
            settings: Settings::new(database_url),
        }
    }

    /// These settings, to change some (`settings.to_builder().concurrency(8).build()?`).
    pub fn to_builder(&self) -> SettingsBuilder {
        SettingsBuilder {
            settings: self.clone(),
        }
    }

    /// Read the `SONIQ_*` variables; an invalid value is an [`Error::Config`].
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read settings from any source of variables (the environment, a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        RawSettings::from_lookup(lookup).validate()
    }

    /// `SONIQ_DATABASE_URL`, default [`DEFAULT_DATABASE_URL`].
    pub fn database_url(&self) -> &str {
        &self.database_url.0
    }

    /// `SONIQ_CONCURRENCY`: jobs one worker runs at once, 1..=1000, default 4.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// `SONIQ_POLL_INTERVAL`: seconds an idle worker waits for a notification before it
    /// polls, 0.1..=60, default 5.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// `SONIQ_HEARTBEAT_INTERVAL`: seconds between heartbeats, 0.1..=60, default 5.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// `SONIQ_SHUTDOWN_TIMEOUT`: seconds running jobs get to finish at shutdown, 0..=3600,
    /// default 30.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// `SONIQ_ERROR_RETRY_DELAY`: seconds to wait after a database error, 0.1..=300, default 5.
    pub fn error_retry_delay(&self) -> Duration {
        self.error_retry_delay
    }

    /// `SONIQ_HEARTBEAT_TIMEOUT`: silence after which a worker is presumed dead, 1..=7200 s,
    /// default 300, at least twice `SONIQ_HEARTBEAT_INTERVAL` (the worker's own maintenance
    /// and `soniq status` use it).
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    /// `SONIQ_CLEANUP_INTERVAL`: seconds between a worker's maintenance rounds (rescue of
    /// dead workers' jobs, pruning), 10..=3600, default 300. They back up the control plane,
    /// and do its work where no control plane serves the database.
    pub fn cleanup_interval(&self) -> Duration {
        self.cleanup_interval
    }

    /// `SONIQ_ENQUEUE_VALIDATION`: `strict` (default), `warn` or `none`.
    pub fn enqueue_validation(&self) -> EnqueueValidation {
        self.enqueue_validation
    }

    /// `SONIQ_PRODUCER_ID`, stamped on every job this process enqueues; default
    /// `host:pid:program`.
    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// `SONIQ_TASK_NAME_PATTERN`: the rule task names follow (whole-name match).
    pub fn task_name_pattern(&self) -> &TaskNamePattern {
        &self.task_name_pattern
    }

    /// `SONIQ_ROUTE_MAP`: task-name prefix → queue for handlers registered without a queue,
    /// longest prefix first.
    pub fn route_map(&self) -> &[(String, String)] {
        &self.route_map
    }

    /// `SONIQ_STATEMENT_CACHE`: `on` (the default) prepares the hot statements once per
    /// connection; `off` sends every statement unnamed, as PgBouncer's transaction mode needs.
    pub fn statement_cache(&self) -> bool {
        self.statement_cache
    }

    /// `SONIQ_LISTEN_URL`: where idle workers wait for new jobs; a connection string, or
    /// `off` to poll only (default: the database URL).
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// Every value's range, and the rules between them: `SONIQ_HEARTBEAT_TIMEOUT` must be at
    /// least twice `SONIQ_HEARTBEAT_INTERVAL`, or one late heartbeat makes a live worker look
    /// dead — to the control plane, and to its own maintenance rounds, which would take back
    /// its running jobs.
    pub fn validate(&self) -> Result<()> {
        if self.database_url.0.trim().is_empty() {
            return Err(Error::Config("SONIQ_DATABASE_URL must not be empty".into()));
        }
        if let Listen::Url(url) = &self.listen {
            crate::ConnectionConfig::parse(url)
                .map_err(|e| Error::Config(format!("SONIQ_LISTEN_URL: {e}")))?;
        }
        CONCURRENCY.check_as(CONCURRENCY.var, self.concurrency)?;
        POLL_INTERVAL.check(self.poll_interval)?;
        HEARTBEAT_INTERVAL.check(self.heartbeat_interval)?;
        SHUTDOWN_TIMEOUT.check(self.shutdown_timeout)?;
        ERROR_RETRY_DELAY.check(self.error_retry_delay)?;
        HEARTBEAT_TIMEOUT.check(self.heartbeat_timeout)?;
        CLEANUP_INTERVAL.check(self.cleanup_interval)?;
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

/// Changes to [`Settings`], checked together by [`SettingsBuilder::build`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct SettingsBuilder {
    settings: Settings,
}

/// Setters of the builder, one per setting (the getters of [`Settings`] say each one's range).
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $type:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $type) -> Self {
                self.settings.$name = value;
                self
            }
        )*
    };
}

impl SettingsBuilder {
    setters!(
        concurrency: usize,
        poll_interval: Duration,
        heartbeat_interval: Duration,
        shutdown_timeout: Duration,
        error_retry_delay: Duration,
        heartbeat_timeout: Duration,
        cleanup_interval: Duration,
        enqueue_validation: EnqueueValidation,
        task_name_pattern: TaskNamePattern,
        statement_cache: bool,
        listen: Listen,
    );

    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.settings.database_url = ConnectionString(url.into());
        self
    }

    pub fn producer_id(mut self, id: impl Into<String>) -> Self {
        self.settings.producer_id = id.into();
        self
    }

    /// Task-name prefix → queue; the longest matching prefix wins.
    pub fn route_map(mut self, mut routes: Vec<(String, String)>) -> Self {
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        self.settings.route_map = routes;
        self
    }

    /// The settings, or an [`Error::Config`] naming the first value out of its range.
    pub fn build(self) -> Result<Settings> {
        self.settings.validate()?;
        Ok(self.settings)
    }
}

/// The `SONIQ_*` variables as read, once, before anything is checked: the CLI lays its flags
/// over them, then validates the whole into [`Settings`].
#[derive(Debug, Clone, Default)]
pub(crate) struct RawSettings {
    pub database_url: Option<String>,
    pub concurrency: Option<String>,
    pub poll_interval: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub error_retry_delay: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub cleanup_interval: Option<String>,
    pub enqueue_validation: Option<String>,
    pub producer_id: Option<String>,
    pub task_name_pattern: Option<String>,
    pub route_map: Option<String>,
    pub statement_cache: Option<String>,
    pub listen_url: Option<String>,
    /// `SONIQ_JOBS_MODULES`: comma-separated TOML modules of command handlers (the CLI's).
    pub jobs_modules: Option<String>,
}

impl RawSettings {
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        RawSettings {
            database_url: lookup("SONIQ_DATABASE_URL"),
            concurrency: lookup(CONCURRENCY.var),
            poll_interval: lookup(POLL_INTERVAL.var),
            heartbeat_interval: lookup(HEARTBEAT_INTERVAL.var),
            shutdown_timeout: lookup(SHUTDOWN_TIMEOUT.var),
            error_retry_delay: lookup(ERROR_RETRY_DELAY.var),
            heartbeat_timeout: lookup(HEARTBEAT_TIMEOUT.var),
            cleanup_interval: lookup(CLEANUP_INTERVAL.var),
            enqueue_validation: lookup("SONIQ_ENQUEUE_VALIDATION"),
            producer_id: lookup("SONIQ_PRODUCER_ID"),
            task_name_pattern: lookup("SONIQ_TASK_NAME_PATTERN"),
            route_map: lookup("SONIQ_ROUTE_MAP"),
            statement_cache: lookup("SONIQ_STATEMENT_CACHE"),
            listen_url: lookup("SONIQ_LISTEN_URL"),
            jobs_modules: lookup("SONIQ_JOBS_MODULES"),
        }
    }

    /// Parse and check every value; what is unset keeps its default.
    pub fn validate(self) -> Result<Settings> {
        let defaults = Settings::new(
            self.database_url
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
        );
        let seconds = |range: &Seconds, text: Option<String>, default: Duration| match text {
            Some(text) => range.parse(&text),
            None => Ok(default),
        };
        let settings = Settings {
            concurrency: match self.concurrency {
                Some(text) => CONCURRENCY.parse(&text)?,
                None => defaults.concurrency,
            },
            poll_interval: seconds(&POLL_INTERVAL, self.poll_interval, defaults.poll_interval)?,
            heartbeat_interval: seconds(
                &HEARTBEAT_INTERVAL,
                self.heartbeat_interval,
                defaults.heartbeat_interval,
            )?,
            shutdown_timeout: seconds(
                &SHUTDOWN_TIMEOUT,
                self.shutdown_timeout,
                defaults.shutdown_timeout,
            )?,
            error_retry_delay: seconds(
                &ERROR_RETRY_DELAY,
                self.error_retry_delay,
                defaults.error_retry_delay,
            )?,
            heartbeat_timeout: seconds(
                &HEARTBEAT_TIMEOUT,
                self.heartbeat_timeout,
                defaults.heartbeat_timeout,
            )?,
            cleanup_interval: seconds(
                &CLEANUP_INTERVAL,
                self.cleanup_interval,
                defaults.cleanup_interval,
            )?,
            enqueue_validation: match self.enqueue_validation {
                Some(text) => parse_enqueue_validation(&text)?,
                None => defaults.enqueue_validation,
            },
            producer_id: match self.producer_id.filter(|id| id != "auto") {
                Some(id) => id,
                None => defaults.producer_id.clone(),
            },
            task_name_pattern: match self.task_name_pattern {
                Some(text) => TaskNamePattern::new(&text).map_err(|e| {
                    Error::Config(format!(
                        "SONIQ_TASK_NAME_PATTERN is not a valid regular expression: {e}"
                    ))
                })?,
                None => defaults.task_name_pattern.clone(),
            },
            route_map: match self.route_map {
                Some(text) => parse_route_map(&text)?,
                None => Vec::new(),
            },
            statement_cache: match self.statement_cache {
                Some(text) => parse_switch("SONIQ_STATEMENT_CACHE", &text)?,
                None => defaults.statement_cache,
            },
            listen: match self.listen_url.as_deref().map(str::trim) {
                None | Some("") => Listen::Database,
                Some(off) if off.eq_ignore_ascii_case("off") => Listen::Off,
                Some(url) => Listen::Url(url.to_string()),
            },
            ..defaults
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The modules `SONIQ_JOBS_MODULES` names.
    pub fn jobs_modules(&self) -> Vec<String> {
        self.jobs_modules
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn parse_enqueue_validation(text: &str) -> Result<EnqueueValidation> {
    match text.trim().to_ascii_lowercase().as_str() {
        "strict" => Ok(EnqueueValidation::Strict),
        "warn" => Ok(EnqueueValidation::Warn),
        "none" => Ok(EnqueueValidation::None),
        _ => Err(Error::Config(format!(
            "SONIQ_ENQUEUE_VALIDATION must be strict, warn or none, got {text:?}"
        ))),
    }
}

fn parse_switch(var: &str, text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(Error::Config(format!(
            "{var} must be on or off, got {text:?}"
        ))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = from(&[]).unwrap();
        assert_eq!(s.database_url(), "postgresql://postgres@localhost/soniq");
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.poll_interval, Duration::from_secs(5));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.enqueue_validation, EnqueueValidation::Strict);
        assert!(s.statement_cache);
        assert_eq!(s.listen, Listen::Database);
    }

    #[test]
    fn pgbouncer_settings_turn_off_the_cache_and_move_or_stop_the_listener() {
        let s = from(&[
            ("SONIQ_STATEMENT_CACHE", "off"),
            ("SONIQ_LISTEN_URL", "postgres://app@db/shop"),
        ])
        .unwrap();
        assert!(!s.statement_cache());
        assert_eq!(s.listen(), &Listen::Url("postgres://app@db/shop".into()));
        assert_eq!(
            from(&[("SONIQ_LISTEN_URL", "OFF")]).unwrap().listen,
            Listen::Off
        );
        let bad = from(&[("SONIQ_LISTEN_URL", "postgres://db/x?sslmode=sometimes")]).unwrap_err();
        assert!(bad.to_string().starts_with("SONIQ_LISTEN_URL: "), "{bad}");
        let shown = format!(
            "{:?}",
            from(&[
                ("SONIQ_DATABASE_URL", "postgres://app:s3cret@db/x"),
                ("SONIQ_LISTEN_URL", "postgres://app:s3cret@db/x"),
            ])
            .unwrap()
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            from(&[("SONIQ_STATEMENT_CACHE", "ON")])
                .unwrap()
                .statement_cache
        );
        let refused = from(&[("SONIQ_STATEMENT_CACHE", "sometimes")]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "SONIQ_STATEMENT_CACHE must be on or off, got \"sometimes\""
        );
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

        // Settings made in code are checked by the same rule.
        let base = Settings::builder("postgres://localhost/soniq")
            .heartbeat_interval(Duration::from_secs(5));
        let err = base
            .clone()
            .heartbeat_timeout(Duration::from_secs(9))
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("SONIQ_HEARTBEAT_TIMEOUT (9 s)"),
            "{err}"
        );
        let settings = base
            .heartbeat_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        assert!(crate::Soniq::with_settings(settings).is_ok());
    }

    #[test]
    fn settings_made_in_code_are_checked_as_the_environment_is() {
        let builder = || Settings::builder("postgres://localhost/soniq");
        // A zero heartbeat interval would spin.
        let err = builder()
            .heartbeat_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert_eq!(
            err.to_string(),
            "SONIQ_HEARTBEAT_INTERVAL must be a number of seconds from 0.1 to 60, got 0"
        );
        assert_eq!(
            builder().concurrency(0).build().unwrap_err().to_string(),
            "SONIQ_CONCURRENCY must be a whole number from 1 to 1000, got 0"
        );
        for bad in [
            builder().poll_interval(Duration::from_secs(61)),
            builder().shutdown_timeout(Duration::from_secs(3601)),
            builder().error_retry_delay(Duration::from_millis(50)),
            builder().cleanup_interval(Duration::from_secs(5)),
            builder().concurrency(1001),
            builder().database_url(" "),
        ] {
            assert!(bad.build().is_err());
        }
        let settings = builder()
            .concurrency(8)
            .poll_interval(Duration::from_millis(200))
            .build()
            .unwrap();
        assert_eq!(
            (settings.concurrency(), settings.poll_interval()),
            (8, Duration::from_millis(200))
        );
        let changed = settings.to_builder().concurrency(9).build().unwrap();
        assert_eq!(
            (changed.concurrency(), changed.poll_interval()),
            (9, Duration::from_millis(200))
        );
        assert_eq!(
            check_concurrency("--concurrency", 0)
                .unwrap_err()
                .to_string(),
            "--concurrency must be a whole number from 1 to 1000, got 0"
        );
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
