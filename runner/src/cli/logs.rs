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
//! - With the feature `otel`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` set: Soniq's spans (`soniq_runner::telemetry`) go to that
//!   collector over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`, if set, must be
//!   `http/protobuf`), named by `OTEL_SERVICE_NAME` (default `soniq`). The log never shows
//!   the spans.

use super::Failure;
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

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

/// The log's layer, in the format the environment asks for.
fn log_layer() -> Result<Box<dyn Layer<Registry> + Send + Sync>, Failure> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match std::env::var("SONIQ_LOG_FORMAT").as_deref() {
        Ok("text") | Err(_) => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            Ok(layer.with_ansi(colour).with_target(false).boxed())
        }
        Ok("json") => Ok(layer.json().flatten_event(true).with_ansi(false).boxed()),
        Ok(other) => Err(Failure::usage(format!(
            "SONIQ_LOG_FORMAT must be text or json, got {other:?}"
        ))),
    }
}

/// What the process's subscriber holds until the process ends: the trace exporter, whose
/// last spans are sent when it is dropped.
pub struct Installed {
    #[cfg(feature = "otel")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(traces) = self.traces.take() {
            if let Err(e) = traces.shutdown() {
                eprintln!("warning: the last traces were not all sent: {e}");
            }
        }
    }
}

/// Install the subscriber for this process, as the environment says.
pub fn install() -> Result<Installed, Failure> {
    let filter = std::env::var("SONIQ_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let log = log_layer()?.with_filter(filter_for(&filter)?);
    let subscriber = tracing_subscriber::registry().with(log);
    #[cfg(feature = "otel")]
    if exports_traces()? {
        use tracing_subscriber::filter::Targets;
        let (layer, provider) = crate::telemetry::otlp_layer(None, "soniq").map_err(|e| {
            Failure::usage(format!(
                "cannot export traces to OTEL_EXPORTER_OTLP_ENDPOINT: {e}"
            ))
        })?;
        let spans = Targets::new().with_target(crate::telemetry::TARGET, tracing::Level::INFO);
        subscriber.with(layer.with_filter(spans)).init();
        return Ok(Installed {
            traces: Some(provider),
        });
    }
    subscriber.init();
    Ok(Installed {
        #[cfg(feature = "otel")]
        traces: None,
    })
}

/// Whether the environment names a collector for traces, refusing a protocol other than
/// OTLP/HTTP with protobuf.
#[cfg(feature = "otel")]
fn exports_traces() -> Result<bool, Failure> {
    let named = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !named {
        return Ok(false);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        match std::env::var(name).as_deref() {
            Ok("http/protobuf") | Err(_) => {}
            Ok(other) => {
                return Err(Failure::usage(format!(
                    "{name} must be http/protobuf (the only protocol this soniq exports with), got {other:?}"
                )))
            }
        }
    }
    Ok(true)
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
