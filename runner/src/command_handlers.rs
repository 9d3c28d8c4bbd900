//! Handlers in any language: a TOML module maps task names to commands, which the stock
//! `soniq worker` runs.
//!
//! ```toml
//! [tasks."emails.send_welcome"]
//! command = ["python3", "examples/python/send_welcome.py"]
//! timeout = 30          # seconds; the process group is killed past it
//! retries = 3
//! queue = "emails"
//! concurrency = 2       # at most this many at once in this worker
//! env = { SMTP_HOST = "localhost" }
//! ```
//!
//! The command runs in the module's folder (relative paths in it are relative to the
//! module) and gets the job as JSON on stdin: `{"args": {...}, "context": {"job_id": ...,
//! "task_name": ..., "attempt": 1, "max_attempts": 4, "queue": ..., "worker_id": ...,
//! "scheduled_at": ..., "created_at": ...}}` (and `job_name`, the old name of `task_name`,
//! until the next version). Its exit status decides the outcome:
//! * 0: done; its stdout, if any, is the result (JSON, or else the text as a JSON string);
//!   more than [`MAX_RESULT_BYTES`] of it fails the attempt instead;
//! * [`EXIT_SNOOZE`] (75): run again later without using an attempt; stdout may say
//!   `{"snooze": SECONDS, "reason": "..."}` (both optional; default 60 s, at most 30 days;
//!   the reason is kept as the job's last error, `snoozed: <reason>`);
//! * [`EXIT_DISCARD`] (65): give up, straight to the dead letter;
//! * anything else: a failed attempt, retried while attempts remain; the end of stderr is the
//!   error.

use crate::error::{Error, Result};
use crate::job::{JobContext, JobError, JobResult, Outcome};
use crate::time::rfc3339_json;
use crate::Soniq;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The most stdout a command may return as its result.
pub use crate::job::MAX_RESULT_BYTES;

/// Exit status of a command handler that asks to run again later (EX_TEMPFAIL).
pub const EXIT_SNOOZE: i32 = 75;
/// Exit status of a command handler that gives up for good (EX_DATAERR).
pub const EXIT_DISCARD: i32 = 65;
/// How much of stderr a failure keeps.
const ERROR_TAIL: usize = 2000;
const DEFAULT_SNOOZE: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Module {
    #[serde(default)]
    tasks: BTreeMap<String, CommandTask>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandTask {
    command: Vec<String>,
    timeout: Option<f64>,
    retries: Option<i32>,
    queue: Option<String>,
    priority: Option<i32>,
    concurrency: Option<usize>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// The module's folder: the command runs there, so its paths are relative to the module.
    #[serde(skip)]
    dir: std::path::PathBuf,
}

fn job_document(args: &Value, ctx: &JobContext) -> Vec<u8> {
    let document = json!({
        "args": args,
        "context": {
            "job_id": ctx.job_id.to_string(), "task_name": ctx.task_name, "attempt": ctx.attempt,
            "max_attempts": ctx.max_attempts, "queue": ctx.queue, "worker_id": ctx.worker_id.to_string(),
            "scheduled_at": rfc3339_json(ctx.scheduled_at), "created_at": rfc3339_json(Some(ctx.created_at)),
            // The old name of task_name, kept for the commands written against it; it goes in
            // the next version.
            "job_name": ctx.task_name,
        }
    });
    document.to_string().into_bytes()
}

fn tail(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(ERROR_TAIL - 1)
        .map_or(0, |(i, _)| i);
    text[start..].to_string()
}

/// Kills the command's whole process group if the attempt is dropped (a timeout, a
/// cancellation, a shutdown) before the command ended.
struct ProcessGroup {
    id: Option<i32>,
}

impl ProcessGroup {
    fn finished(&mut self) {
        self.id = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // SAFETY: kill(2) with a negative pid signals the process group the command leads.
            unsafe { libc::kill(-id, libc::SIGKILL) };
        }
    }
}

async fn run_command(task: &CommandTask, args: Value, ctx: JobContext) -> JobResult {
    let (program, rest) = task
        .command
        .split_first()
        .ok_or_else(|| JobError::new("empty command"))?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .envs(&task.env)
        .current_dir(&task.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobError::new(format!("could not start {program}: {e}")))?;
    let mut group = ProcessGroup {
        id: child.id().map(|pid| pid as i32),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let document = job_document(&args, &ctx);
    let feed = async move {
        // A command that does not read its input is not an error.
        let _ = stdin.write_all(&document).await;
    };
    let (output, ()) = tokio::join!(child.wait_with_output(), feed);
    let output = output.map_err(|e| JobError::new(format!("{program} failed to run: {e}")))?;
    group.finished();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match output.status.code() {
        Some(0) if stdout.len() > MAX_RESULT_BYTES => Err(JobError::new(format!(
            "{program} wrote {} bytes to stdout, more than the {MAX_RESULT_BYTES} a result may take",
            stdout.len()
        ))),
        Some(0) if stdout.is_empty() => Ok(Outcome::done()),
        Some(0) => Ok(Outcome::Done(Some(
            serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)),
        ))),
        Some(EXIT_SNOOZE) => Ok(snooze_asked(&stdout)),
        Some(EXIT_DISCARD) => Ok(Outcome::discard(tail(&output.stderr))),
        code => {
            let status = code.map_or_else(
                || "killed by a signal".to_string(),
                |c| format!("exit status {c}"),
            );
            let stderr = tail(&output.stderr);
            Err(JobError::new(if stderr.is_empty() {
                status
            } else {
                format!("{status}: {stderr}")
            }))
        }
    }
}

/// The snooze a command asks for on stdout, `{"snooze": SECONDS, "reason": "..."}`. No
/// number of seconds (or a negative one) is the default snooze; one too large for a
/// `Duration` is the longest (the runner shortens any snooze to 30 days).
fn snooze_asked(stdout: &str) -> Outcome {
    let asked = serde_json::from_str::<Value>(stdout).ok();
    let field = |name: &str| asked.as_ref().and_then(|v| v.get(name));
    let delay = match field("snooze").and_then(Value::as_f64) {
        Some(seconds) if seconds >= 0.0 => {
            Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
        }
        _ => DEFAULT_SNOOZE,
    };
    match field("reason").and_then(Value::as_str) {
        Some(reason) => Outcome::snooze_because(delay, reason),
        None => Outcome::snooze(delay),
    }
}

/// Register the command handlers of the TOML modules at `paths`; returns the task names.
pub fn load_modules(app: &mut Soniq, paths: &[impl AsRef<Path>]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read jobs module {}: {e}", path.display()))
        })?;
        let module: Module = toml::from_str(&text).map_err(|e| {
            Error::Config(format!("jobs module {} is invalid: {e}", path.display()))
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for (name, mut task) in module.tasks {
            task.dir = if dir.as_os_str().is_empty() {
                ".".into()
            } else {
                dir.clone()
            };
            if task.command.is_empty() {
                return Err(Error::Config(format!(
                    "task {name} in {}: command must not be empty",
                    path.display()
                )));
            }
            let mut builder = app.job(&name);
            if let Some(t) = task.timeout {
                let timeout = Duration::try_from_secs_f64(t).map_err(|_| {
                    Error::Config(format!(
                        "task {name}: timeout must be a number of seconds >= 0, got {t}"
                    ))
                })?;
                builder = builder.timeout(timeout);
            }
            if let Some(r) = task.retries {
                builder = builder.retries(r);
            }
            if let Some(q) = &task.queue {
                builder = builder.queue(q);
            }
            if let Some(p) = task.priority {
                builder = builder.priority(p);
            }
            if let Some(n) = task.concurrency {
                if !(1..=1000).contains(&n) {
                    return Err(Error::Config(format!(
                        "task {name} in {}: concurrency must be from 1 to 1000, got {n}",
                        path.display()
                    )));
                }
                builder = builder.max_concurrent(n);
            }
            let task = Arc::new(task);
            builder.handler(move |args: Value, ctx: JobContext| {
                let task = Arc::clone(&task);
                async move { run_command(&task, args, ctx).await }
            })?;
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let long = "x".repeat(5000) + "the end";
        let kept = tail(long.as_bytes());
        assert_eq!(kept.chars().count(), ERROR_TAIL);
        assert!(kept.ends_with("the end"));
        assert_eq!(tail(b"  short \n"), "short");
    }

    #[test]
    fn a_snooze_says_how_long_and_why() {
        let snooze = |delay: u64, reason: Option<&str>| Outcome::Snooze {
            delay: Duration::from_secs(delay),
            reason: reason.map(str::to_string),
        };
        assert_eq!(snooze_asked(""), snooze(60, None));
        assert_eq!(snooze_asked(r#"{"snooze": 5}"#), snooze(5, None));
        assert_eq!(
            snooze_asked(r#"{"snooze": 30, "reason": "rate limited"}"#),
            snooze(30, Some("rate limited"))
        );
        assert_eq!(
            snooze_asked(r#"{"reason": "busy"}"#),
            snooze(60, Some("busy"))
        );
        assert_eq!(snooze_asked(r#"{"snooze": -5}"#), snooze(60, None));
        // Far past what a Duration holds: no panic, the longest snooze (then 30 days).
        assert_eq!(
            snooze_asked(r#"{"snooze": 1e300}"#),
            Outcome::snooze(Duration::MAX)
        );
    }

    #[test]
    fn a_module_timeout_no_duration_holds_is_refused() {
        let dir = std::env::temp_dir().join(format!("soniq_timeout_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let module = dir.join("jobs.toml");
        for timeout in ["1e300", "-1", "nan"] {
            std::fs::write(
                &module,
                format!("[tasks.\"a.b\"]\ncommand = [\"true\"]\ntimeout = {timeout}\n"),
            )
            .unwrap();
            let err = load_modules(&mut Soniq::in_memory(), &[&module])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("timeout must be a number of seconds >= 0"),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modules_refuse_unknown_keys() {
        let err =
            toml::from_str::<Module>("[tasks.a]\ncommand = [\"true\"]\ntimout = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `timout`"), "{err}");
    }
}
