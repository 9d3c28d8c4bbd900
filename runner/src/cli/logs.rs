//! The `soniq` command's log: `tracing` events on standard error (standard output is the
//! command's own output). The library never installs a subscriber; this binary does.
//!
//! - `SONIQ_LOG`: the level (`off`, `error`, `warn`, `info`, `debug`, `trace`; default `info`)
//!   or a full filter such as `soniq_runner=debug,tokio_postgres=info`; unset, `RUST_LOG` is
//!   read the same way. A bare level applies to Soniq's own events; other crates log only
//!   warnings and errors (or less, at `error` and `off`).
//! - `SONIQ_LOG_FORMAT`: `text` (default), lines for people, coloured only on a terminal and
//!   never with `NO_COLOR`; `json`, one object per event with the fields `timestamp`,
//!   `level`, `target`, `message` and the event's own (`task`, `job_id`, `attempt`, ...).

use super::Failure;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The filter a `SONIQ_LOG` (or `RUST_LOG`) value stands for.
fn filter_for(value: &str) -> Result<EnvFilter, Failure> {
    let value = value.trim();
    let directives = if LEVELS.contains(&value) {
        let others = if matches!(value, "off" | "error") {
            value
        } else {
            "warn"
        };
        format!("{others},soniq_runner={value}")
    } else {
        value.to_string()
    };
    EnvFilter::try_new(&directives).map_err(|e| {
        Failure::usage(format!(
            "SONIQ_LOG must be a level ({}) or a tracing filter, got {value:?}: {e}",
            LEVELS.join(", ")
        ))
    })
}

/// Install the subscriber for this process, as the environment says.
pub fn install() -> Result<(), Failure> {
    let filter = std::env::var("SONIQ_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = filter_for(&filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("SONIQ_LOG_FORMAT").as_deref() {
        Ok("text") | Err(_) => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).with_target(false).init();
        }
        Ok("json") => builder.json().flatten_event(true).with_ansi(false).init(),
        Ok(other) => {
            return Err(Failure::usage(format!(
                "SONIQ_LOG_FORMAT must be text or json, got {other:?}"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_soniqs_and_others_log_warnings() {
        assert_eq!(
            filter_for("debug").unwrap().to_string(),
            "soniq_runner=debug,warn"
        );
        assert_eq!(
            filter_for("error").unwrap().to_string(),
            "soniq_runner=error,error"
        );
        assert_eq!(
            filter_for("soniq_runner=trace").unwrap().to_string(),
            "soniq_runner=trace"
        );
        let refused = filter_for("soniq_runner=loudly").err().unwrap();
        assert_eq!(refused.status, 2);
        assert!(
            refused.message.contains("SONIQ_LOG must be a level"),
            "{}",
            refused.message
        );
    }
}
