//! `soniq enqueue --from FILE`: jobs from a file of JSON lines (or `-`, standard input),
//! streamed to the database in batches, each one statement that commits on its own, so a file
//! of any length takes the memory of one batch. A progress line goes to a terminal's stderr.

use super::output::Output;
use super::{CliResult, Failure};
use crate::store::{JobOptions, NewJob, OnDependencyFailure};
use crate::Soniq;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Jobs per statement by default, and the range of `--batch-size`.
pub const DEFAULT_BATCH: usize = 1_000;
pub const MAX_BATCH: usize = 10_000;

/// The keys of a line: those of `soniq.enqueue_many`'s job specs (the producer id is the
/// CLI's own; `depends_on` names jobs by id only: a line cannot name another line).
const KEYS: [&str; 13] = [
    "task_name",
    "args",
    "queue",
    "priority",
    "scheduled_at",
    "retries",
    "unique",
    "dedup_key",
    "timeout",
    "depends_on",
    "on_dependency_failure",
    "batch_id",
    "traceparent",
];

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A key's value, absent and null alike `None`; `read` turns a present one into the option's
/// type or says what it should be.
fn field<T>(
    spec: &Map<String, Value>,
    key: &str,
    read: impl FnOnce(&Value) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, String> {
    match spec.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => read(value)
            .map(Some)
            .ok_or_else(|| format!("{key} must be {expected}, got {value}")),
    }
}

/// One line as a job; the error says what is wrong with it. Types are checked here, ranges
/// where every producer's are: in the database, which names the line's job.
fn parse_line(text: &str, producer_id: &str) -> Result<NewJob, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(spec) = value else {
        return Err(format!(
            "a line must be a JSON object (a job spec), got {}",
            kind(&value)
        ));
    };
    if let Some(unknown) = spec.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!(
            "unknown key {unknown:?}; a job spec has {}",
            KEYS.join(", ")
        ));
    }
    let string = |key| field(&spec, key, |v| v.as_str().map(str::to_string), "a string");
    let whole = |key| {
        field(
            &spec,
            key,
            |v| v.as_i64().and_then(|n| i32::try_from(n).ok()),
            "a whole number",
        )
    };
    let task_name = string("task_name")?.ok_or("task_name is missing")?;
    let args = field(
        &spec,
        "args",
        |v| v.is_object().then(|| v.clone()),
        "a JSON object",
    )?
    .unwrap_or_else(|| json!({}));
    let timeout = field(
        &spec,
        "timeout",
        |v| v.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()),
        "a number of seconds >= 0",
    )?;
    let scheduled_at = field(
        &spec,
        "scheduled_at",
        |v| {
            let at: jiff::Timestamp = v.as_str()?.parse().ok()?;
            SystemTime::try_from(at).ok()
        },
        "an RFC 3339 time (2026-12-01T09:00:00Z)",
    )?;
    Ok(NewJob {
        task_name,
        args,
        options: JobOptions {
            queue: string("queue")?,
            priority: whole("priority")?,
            retries: whole("retries")?,
            timeout,
            unique: field(&spec, "unique", Value::as_bool, "true or false")?,
        },
        scheduled_at,
        dedup_key: string("dedup_key")?,
        producer_id: producer_id.to_string(),
        depends_on: field(
            &spec,
            "depends_on",
            |v| {
                v.as_array()?
                    .iter()
                    .map(|id| id.as_str()?.parse().ok())
                    .collect()
            },
            "an array of job ids",
        )?
        .unwrap_or_default(),
        on_dependency_failure: field(
            &spec,
            "on_dependency_failure",
            |v| match v.as_str()? {
                "cancel" => Some(OnDependencyFailure::Cancel),
                "run" => Some(OnDependencyFailure::Run),
                _ => None,
            },
            "\"cancel\" or \"run\"",
        )?,
        awaitable: false,
        batch_id: field(
            &spec,
            "batch_id",
            |v| v.as_str()?.parse().ok(),
            "a batch's id",
        )?,
        traceparent: string("traceparent")?,
    })
}

/// The progress line on a terminal: jobs enqueued, their rate, and how much of a file is read.
struct Progress {
    shown: bool,
    size: Option<u64>,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    fn report(&mut self, jobs: usize, bytes: u64, last: bool) {
        let now = Instant::now();
        if !self.shown
            || (!last
                && self
                    .last
                    .is_some_and(|t| now - t < Duration::from_millis(200)))
        {
            return;
        }
        self.last = Some(now);
        let rate = jobs as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let read = self
            .size
            .filter(|&size| size > 0)
            .map(|size| {
                format!(
                    ", {:.0}% read",
                    bytes.min(size) as f64 * 100.0 / size as f64
                )
            })
            .unwrap_or_default();
        let mut err = std::io::stderr();
        let _ = write!(err, "\r{jobs} jobs enqueued, {rate:.0} jobs/s{read}\x1b[K");
        if last {
            let _ = writeln!(err);
        }
    }
}

/// Where the batches stand, for the message of a refusal.
struct Sent {
    jobs: usize,
    /// The first line of the batch in flight.
    batch_start: usize,
}

fn refused(path: &Path, line: usize, problem: &str, sent: &Sent) -> Failure {
    let done = match sent.jobs {
        0 => "nothing was enqueued".to_string(),
        jobs => format!(
            "the {jobs} job{} of the lines before line {} {} enqueued (each batch commits on its \
             own), none from that line on",
            if jobs == 1 { "" } else { "s" },
            sent.batch_start,
            if jobs == 1 { "is" } else { "are" },
        ),
    };
    Failure::new(format!("{}:{line}: {problem}; {done}", path.display()))
}

/// Send one batch; a refusal names the line of the job it names (`jobs[i]: ...`).
async fn send(
    app: &Soniq,
    path: &Path,
    jobs: &mut Vec<NewJob>,
    lines: &mut Vec<usize>,
    sent: &mut Sent,
) -> CliResult {
    if jobs.is_empty() {
        return Ok(());
    }
    if let Err(e) = app.enqueue_batch(jobs).await {
        let message = e.to_string();
        let named = message
            .strip_prefix("jobs[")
            .and_then(|rest| rest.split_once("]: "))
            .and_then(|(index, problem)| Some((lines.get(index.parse::<usize>().ok()?)?, problem)));
        return Err(match named {
            Some((&line, problem)) => refused(path, line, problem, sent),
            None => refused(path, lines[0], &message, sent),
        });
    }
    sent.jobs += jobs.len();
    jobs.clear();
    lines.clear();
    Ok(())
}

pub async fn run(app: &Soniq, path: &Path, batch: usize, out: &Output) -> CliResult {
    let cannot_read =
        |e: std::io::Error| Failure::new(format!("cannot read {}: {e}", path.display()));
    let (reader, size): (Box<dyn BufRead>, Option<u64>) = if path == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::new(file)), size)
    };
    let started = Instant::now();
    let mut progress = Progress {
        shown: !out.json && std::io::stderr().is_terminal(),
        size,
        started,
        last: None,
    };
    let producer_id = app.settings().producer_id().to_string();
    let (mut jobs, mut lines) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
    let mut sent = Sent {
        jobs: 0,
        batch_start: 1,
    };
    let (mut line_count, mut bytes) = (0usize, 0u64);
    for text in reader.lines() {
        let text = text.map_err(cannot_read)?;
        line_count += 1;
        bytes += text.len() as u64 + 1;
        if text.trim().is_empty() {
            continue;
        }
        if jobs.is_empty() {
            sent.batch_start = line_count;
        }
        let job = parse_line(&text, &producer_id)
            .map_err(|problem| refused(path, line_count, &problem, &sent))?;
        jobs.push(job);
        lines.push(line_count);
        if jobs.len() == batch {
            send(app, path, &mut jobs, &mut lines, &mut sent).await?;
            progress.report(sent.jobs, bytes, false);
        }
    }
    send(app, path, &mut jobs, &mut lines, &mut sent).await?;
    progress.report(sent.jobs, bytes, true);
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        out.print_json(&json!({"enqueued": sent.jobs, "lines": line_count, "seconds": seconds}));
    } else {
        println!(
            "enqueued {} jobs from {} in {seconds:.1} s ({:.0} jobs/s)",
            sent.jobs,
            path.display(),
            sent.jobs as f64 / seconds.max(1e-9)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_line;
    use std::time::Duration;

    #[test]
    fn a_line_is_a_job_spec_and_a_bad_one_says_what_is_wrong() {
        let job = parse_line(
            r#"{"task_name": "mail.send", "args": {"to": "a@x"}, "priority": 5, "timeout": 1.5,
                "scheduled_at": "2030-01-01T09:00:00Z", "unique": true, "dedup_key": "k",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#,
            "cli",
        )
        .unwrap();
        assert_eq!(
            (
                job.task_name.as_str(),
                job.options.priority,
                job.options.timeout
            ),
            ("mail.send", Some(5), Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            (job.options.unique, job.dedup_key.as_deref()),
            (Some(true), Some("k"))
        );
        assert!(job.scheduled_at.is_some());
        assert_eq!(
            job.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let defaults = parse_line(r#"{"task_name": "a.b", "queue": null}"#, "cli").unwrap();
        assert_eq!(
            (defaults.args, defaults.options.queue),
            (serde_json::json!({}), None)
        );

        for (line, problem) in [
            ("[1]", "a line must be a JSON object"),
            ("{", "not JSON"),
            (r#"{"args": {}}"#, "task_name is missing"),
            (r#"{"task_name": "a", "prio": 1}"#, "unknown key \"prio\""),
            (
                r#"{"task_name": "a", "priority": 1.5}"#,
                "priority must be a whole number, got 1.5",
            ),
            (
                r#"{"task_name": "a", "timeout": -1}"#,
                "timeout must be a number of seconds >= 0",
            ),
            (
                r#"{"task_name": "a", "args": [1]}"#,
                "args must be a JSON object",
            ),
            (
                r#"{"task_name": "a", "scheduled_at": "soon"}"#,
                "scheduled_at must be an RFC 3339 time",
            ),
            (
                r#"{"task_name": "a", "unique": "yes"}"#,
                "unique must be true or false",
            ),
        ] {
            let error = parse_line(line, "cli").map(|_| ()).unwrap_err();
            assert!(error.contains(problem), "{line}: {error}");
        }
    }
}
