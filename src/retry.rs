//! Retry policies: how long a failed attempt waits before the next one.
//!
//! A policy is stored on each job as JSON (`{"delay": 5, "backoff": true, "max_delay": 60}`),
//! resolved from the task's registered defaults at enqueue time; NULL means "retry at once".

use pgrx::prelude::*;
use serde::{Deserialize, Serialize};

/// No computed delay exceeds this, so an exponential backoff cannot overflow an interval.
pub const LONGEST_DELAY_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Seconds before a retry: one value, or one per attempt (the last repeats).
    #[serde(default)]
    pub delay: Delay,
    /// Double the delay with every attempt.
    #[serde(default)]
    pub backoff: bool,
    /// Upper bound of the delay, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<f64>,
    /// With backoff, spread retries over [delay/2, delay] so failed jobs do not return in lockstep.
    #[serde(default = "jitter_default")]
    pub jitter: bool,
}

fn jitter_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Delay {
    Seconds(f64),
    PerAttempt(Vec<f64>),
}

impl Default for Delay {
    fn default() -> Self {
        Delay::Seconds(0.0)
    }
}

/// A per-attempt delay list holds at most this many delays (its last one repeats).
pub const MAX_DELAYS: usize = 100;

fn check_seconds(what: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=LONGEST_DELAY_SECONDS).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{what} must be a number of seconds between 0 and {LONGEST_DELAY_SECONDS} (365 days), got {}",
            shown(value)
        ))
    }
}

/// A number of seconds for a message: huge ones in exponent form, not 300 digits.
pub fn shown(seconds: f64) -> String {
    if seconds.abs() < 1e15 {
        format!("{seconds}")
    } else {
        format!("{seconds:e}")
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), String> {
        match &self.delay {
            Delay::Seconds(s) => check_seconds("retry_delay", *s)?,
            Delay::PerAttempt(list) => {
                if list.is_empty() {
                    return Err("retry_delay list must not be empty".into());
                }
                if list.len() > MAX_DELAYS {
                    return Err(format!(
                        "retry_delay may list at most {MAX_DELAYS} delays (the last one repeats), got {}",
                        list.len()
                    ));
                }
                for s in list {
                    check_seconds("each retry_delay", *s)?;
                }
                if self.backoff {
                    return Err(
                        "retry_backoff cannot be combined with a per-attempt retry_delay list: the list already sets each delay"
                            .into(),
                    );
                }
            }
        }
        if let Some(cap) = self.max_delay {
            check_seconds("retry_max_delay", cap)?;
        }
        Ok(())
    }

    /// Seconds to wait after attempt `attempt` (1 = the first run) failed.
    /// `unit`, in [0, 1), places the delay inside the jitter range.
    pub fn delay_seconds(&self, attempt: i32, unit: f64) -> f64 {
        let attempt = attempt.max(1);
        let mut delay = match &self.delay {
            Delay::Seconds(s) => *s,
            Delay::PerAttempt(list) => {
                let index = usize::try_from(attempt - 1)
                    .unwrap_or(0)
                    .min(list.len().saturating_sub(1));
                list.get(index).copied().unwrap_or(0.0)
            }
        };
        if self.backoff {
            let base = if delay > 0.0 { delay } else { 1.0 };
            delay = base * 2f64.powi((attempt - 1).min(62));
        }
        if let Some(cap) = self.max_delay {
            delay = delay.min(cap);
        }
        delay = delay.min(LONGEST_DELAY_SECONDS);
        if self.backoff && self.jitter && delay > 0.0 {
            delay = delay / 2.0 + unit * delay / 2.0;
        }
        delay.max(0.0)
    }
}

/// splitmix64's finaliser: a cheap, well-spread 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A number in [0, 1) derived from the job and attempt: jitter that differs between jobs
/// but is reproducible for one job (tests and operators can predict it).
fn jitter_unit(job_id: &[u8; 16], attempt: i32) -> f64 {
    let (high, low) = job_id.split_at(8);
    let high = u64::from_le_bytes(high.try_into().expect("8 bytes"));
    let low = u64::from_le_bytes(low.try_into().expect("8 bytes"));
    let x = mix(low ^ mix(high ^ mix(attempt as u64)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

pub fn parse(policy: &serde_json::Value) -> Result<RetryPolicy, String> {
    let policy: RetryPolicy =
        serde_json::from_value(policy.clone()).map_err(|e| format!("invalid retry policy: {e}"))?;
    policy.validate()?;
    Ok(policy)
}

/// Seconds before job `job_id` retries after attempt `attempt` failed under `policy`.
#[pg_extern(immutable, parallel_safe, name = "_retry_delay")]
pub fn retry_delay(policy: Option<pgrx::JsonB>, attempt: i32, job_id: pgrx::Uuid) -> f64 {
    let policy = match policy {
        None => RetryPolicy::default(),
        Some(json) => parse(&json.0).unwrap_or_else(|e| crate::invalid_parameter(e)),
    };
    policy.delay_seconds(attempt, jitter_unit(job_id.as_bytes(), attempt))
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn policy(value: serde_json::Value) -> RetryPolicy {
        parse(&value).unwrap()
    }

    #[test]
    fn default_retries_at_once() {
        assert_eq!(RetryPolicy::default().delay_seconds(1, 0.5), 0.0);
    }

    #[test]
    fn per_attempt_list_repeats_its_last_entry() {
        let p = policy(json!({"delay": [1, 5, 30]}));
        let delays: Vec<f64> = (1..=5).map(|a| p.delay_seconds(a, 0.0)).collect();
        assert_eq!(delays, vec![1.0, 5.0, 30.0, 30.0, 30.0]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = policy(json!({"delay": 2, "backoff": true, "max_delay": 10, "jitter": false}));
        let delays: Vec<f64> = (1..=5).map(|a| p.delay_seconds(a, 0.0)).collect();
        assert_eq!(delays, vec![2.0, 4.0, 8.0, 10.0, 10.0]);
    }

    #[test]
    fn backoff_without_delay_starts_at_one_second() {
        let p = policy(json!({"backoff": true, "jitter": false}));
        assert_eq!(p.delay_seconds(3, 0.0), 4.0);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p = policy(json!({"delay": 8, "backoff": true}));
        assert_eq!(p.delay_seconds(1, 0.0), 4.0);
        assert!(p.delay_seconds(1, 0.999) < 8.0);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let p = policy(json!({"delay": 1000, "backoff": true, "jitter": false}));
        assert_eq!(p.delay_seconds(i32::MAX, 0.0), LONGEST_DELAY_SECONDS);
    }

    #[test]
    fn jitter_unit_is_in_range_and_varies() {
        let a = jitter_unit(&[1; 16], 1);
        let b = jitter_unit(&[2; 16], 1);
        let c = jitter_unit(&[1; 16], 2);
        for unit in [a, b, c] {
            assert!((0.0..1.0).contains(&unit));
        }
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, jitter_unit(&[1; 16], 1));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(parse(&json!({"delay": -1}))
            .unwrap_err()
            .contains("between 0 and"));
        assert!(parse(&json!({"delay": 1e300}))
            .unwrap_err()
            .contains("(365 days)"));
        assert!(parse(&json!({"delay": vec![1; 101]}))
            .unwrap_err()
            .contains("at most 100 delays"));
        assert!(parse(&json!({"delay": []}))
            .unwrap_err()
            .contains("must not be empty"));
        assert!(parse(&json!({"delay": [1, 2], "backoff": true}))
            .unwrap_err()
            .contains("cannot be combined"));
        assert!(parse(&json!({"dealy": 1}))
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse(&json!({"delay": "soon"})).is_err());
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn sql_retry_delay_follows_the_policy() {
        let delay = Spi::get_one::<f64>(
            "SELECT soniq._retry_delay('{\"delay\": [1, 5, 30]}', 2, gen_random_uuid())",
        );
        assert_eq!(delay, Ok(Some(5.0)));
        let none = Spi::get_one::<f64>("SELECT soniq._retry_delay(NULL, 3, gen_random_uuid())");
        assert_eq!(none, Ok(Some(0.0)));
    }

    #[pg_test(
        error = "invalid retry policy: unknown field `dealy`, expected one of `delay`, `backoff`, `max_delay`, `jitter`"
    )]
    fn sql_retry_delay_refuses_a_malformed_policy() {
        Spi::run("SELECT soniq._retry_delay('{\"dealy\": 1}', 1, gen_random_uuid())").unwrap();
    }
}
