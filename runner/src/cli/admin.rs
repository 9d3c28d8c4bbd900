//! setup, status, inspect, enqueue, cancel, jobs list.

use super::output::{mask_url, Output};
use super::{args_object, time, CliResult, Failure};
use crate::error::with_causes;
use crate::jobs::{JobFilter, JobInfo, JobOutcome, JobStatus};
use crate::store::postgres::admin;
use crate::store::{DeadLetterReason, OnDependencyFailure};
use crate::time::rfc3339_json;
use crate::{Settings, Soniq};
use clap::Args;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Create the database if it is missing, install or update the extension, and say plainly
/// whether the control plane serves this database (and how to make it).
pub async fn setup(settings: &Settings, out: &Output) -> CliResult {
    let url = &settings.database_url();
    let config = crate::ConnectionConfig::parse(url)
        .map_err(|e| Failure::usage(format!("SONIQ_DATABASE_URL: {e}")))?;
    let database = config.dbname().to_string();
    let mut report = Vec::new();
    let client = connect_or_create(url, &config, &mut report).await?;
    let failed = |what: &str| {
        let what = what.to_string();
        move |e: crate::Error| Failure::new(format!("{what}: {e}"))
    };
    let Some(versions) = admin::extension_versions(&client)
        .await
        .map_err(failed("cannot read the available extensions"))?
    else {
        return Err(Failure::new(
            "the soniq extension is not installed on this PostgreSQL server: build and install it \
             (cargo pgrx install --release) on the server first",
        ));
    };
    match versions.installed {
        None => {
            admin::create_extension(&client)
                .await
                .map_err(failed("CREATE EXTENSION soniq failed"))?;
            report.push(format!("installed extension soniq {}", versions.default));
        }
        Some(v) if v != versions.default => {
            admin::update_extension(&client)
                .await
                .map_err(failed("ALTER EXTENSION soniq UPDATE failed"))?;
            report.push(format!(
                "updated extension soniq {v} -> {}",
                versions.default
            ));
        }
        Some(v) => report.push(format!("extension soniq {v} is up to date")),
    }
    let control_plane = admin::control_plane(&client)
        .await
        .map_err(failed("cannot read the control plane's state"))?;
    let warnings = control_plane_warnings(&control_plane, &database);
    if out.json {
        out.print_json(&json!({"database": database, "url": mask_url(url), "done": report, "warnings": warnings}));
    } else {
        println!("database {} ({})", database, mask_url(url));
        for line in &report {
            println!("{line}");
        }
        if warnings.is_empty() {
            println!("control plane: {}", out.state("ok"));
        }
        for warning in &warnings {
            println!("warning: {warning}");
        }
    }
    Ok(())
}

/// A connection to the database, created first (through the `postgres` database) if missing.
async fn connect_or_create(
    url: &str,
    config: &crate::ConnectionConfig,
    report: &mut Vec<String>,
) -> Result<tokio_postgres::Client, Failure> {
    let cannot_connect = |e: tokio_postgres::Error| {
        Failure::new(format!(
            "cannot connect to {}: {}",
            mask_url(url),
            with_causes(&e)
        ))
    };
    match config.connect().await {
        Ok(client) => Ok(client),
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            let database = config.dbname();
            let admin_client = config
                .with_dbname("postgres")
                .connect()
                .await
                .map_err(|e| {
                    Failure::new(format!(
                        "cannot connect to {} to create the database: {}",
                        mask_url(url),
                        with_causes(&e)
                    ))
                })?;
            admin::create_database(&admin_client, database)
                .await
                .map_err(|e| Failure::new(format!("cannot create database {database}: {e}")))?;
            report.push(format!("created database {database}"));
            config.connect().await.map_err(cannot_connect)
        }
        Err(e) => Err(cannot_connect(e)),
    }
}

/// What keeps the control plane from serving `database`, said with the fix.
fn control_plane_warnings(state: &admin::ControlPlane, database: &str) -> Vec<String> {
    if !state.preloaded {
        return vec![format!(
            "the control plane is not running: add shared_preload_libraries = 'soniq' and \
             soniq.database_name = '{database}' to postgresql.conf, then restart PostgreSQL"
        )];
    }
    if state.serves.as_deref() != Some(database) {
        return vec![format!(
            "the control plane serves database {}, not {database}: set soniq.database_name = '{database}' \
             in postgresql.conf and restart PostgreSQL",
            state.serves.as_deref().unwrap_or("postgres")
        )];
    }
    if !state.alive {
        return vec![
            "the control plane serves this database but is not up yet (it starts within seconds)"
                .into(),
        ];
    }
    Vec::new()
}

pub async fn status(app: &Soniq, out: &Output) -> CliResult {
    let stats = app.queue_stats(None).await?;
    let client = app.connection().await?;
    let (alive, stale) = admin::worker_counts(&**client, app.settings.heartbeat_timeout()).await?;
    let health = admin::health(&**client).await?;
    // Queued jobs of a task no live worker serves (found by the control plane each round).
    let unserved = admin::unserved(&**client).await?;
    // The queues' own rows of flow control (`soniq queue show` has their keys too).
    let limits: Vec<_> = app
        .queue_limits(None)
        .await?
        .into_iter()
        .filter(|row| row.concurrency_key.is_none())
        .collect();
    if out.json {
        out.print_json(&json!({
            "database": mask_url(app.settings.database_url()),
            "jobs": {"total": stats.total, "waiting": stats.waiting, "queued": stats.queued,
                     "processing": stats.processing, "done": stats.done, "cancelled": stats.cancelled,
                     "dead_letter": stats.dead_letter},
            "workers": {"alive": alive, "stale": stale},
            "control_plane": health.iter().map(|h| json!({
                "subsystem": h.subsystem, "alive": h.alive, "lag_seconds": h.lag_seconds, "last_error": h.last_error})).collect::<Vec<_>>(),
            "unserved": unserved.iter().map(|u| json!({
                "task_name": u.task_name, "queue": u.queue, "jobs": u.jobs, "unserved_seconds": u.unserved_seconds})).collect::<Vec<_>>(),
            "flow_control": limits.iter().map(|l| json!({
                "queue": l.queue, "settings": l.settings, "running": l.running,
                "started_in_window": l.started_in_window, "runnable": l.runnable, "waiting_for_limit": l.waiting_for_limit})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("database: {}", mask_url(app.settings.database_url()));
    out.table(
        &[
            "total",
            "waiting",
            "queued",
            "processing",
            "done",
            "cancelled",
            "dead letter",
        ],
        &[[
            stats.total,
            stats.waiting,
            stats.queued,
            stats.processing,
            stats.done,
            stats.cancelled,
            stats.dead_letter,
        ]
        .iter()
        .map(i64::to_string)
        .collect()],
    );
    println!("workers: {alive} alive, {stale} stale");
    let rows: Vec<Vec<String>> = health
        .iter()
        .map(|h| {
            vec![
                h.subsystem.clone(),
                out.state(if h.alive { "alive" } else { "stale" }),
                format!("{:.1}s", h.lag_seconds),
                h.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.table(&["control plane", "state", "lag", "last error"], &rows);
    if !limits.is_empty() {
        super::queue::print_limits(&limits, out);
    }
    for u in &unserved {
        println!(
            "warning: {} queued jobs of task {} in queue {}: no live worker has served them for {:.0}s",
            u.jobs, u.task_name, u.queue, u.unserved_seconds
        );
    }
    Ok(())
}

fn job_json(job: &JobInfo) -> Value {
    json!({
        "id": job.id.to_string(), "task_name": job.task_name, "args": job.args, "status": job.status.as_str(),
        "queue": job.queue, "priority": job.priority, "attempts": job.attempts, "max_attempts": job.max_attempts,
        "scheduled_at": rfc3339_json(job.scheduled_at), "last_error": job.last_error, "result": job.result,
        "dead_letter_reason": job.dead_letter_reason.map(DeadLetterReason::as_str), "producer_id": job.producer_id,
        "created_at": rfc3339_json(Some(job.created_at)), "updated_at": rfc3339_json(Some(job.updated_at)),
        "depends_on": job.depends_on.iter().map(Uuid::to_string).collect::<Vec<_>>(),
        "progress": job.progress,
    })
}

pub async fn inspect(app: &Soniq, id: Uuid, out: &Output) -> CliResult {
    let Some(job) = app.get_job(id).await? else {
        return Err(Failure::new(format!(
            "no job {id} (unknown, or pruned after its result TTL)"
        )));
    };
    if out.json {
        out.print_json(&job_json(&job));
        return Ok(());
    }
    let field = |name: &str, value: String| println!("{name:<13} {value}");
    field("id", job.id.to_string());
    field("task", job.task_name.clone());
    field("status", out.state(job.status.as_str()));
    field("queue", job.queue.clone());
    field("priority", job.priority.to_string());
    field(
        "attempts",
        format!("{} of {}", job.attempts, job.max_attempts),
    );
    field("args", job.args.to_string());
    field("scheduled at", time(job.scheduled_at));
    field("created at", time(Some(job.created_at)));
    field("updated at", time(Some(job.updated_at)));
    if let Some(progress) = &job.progress {
        field("progress", progress.to_string());
    }
    if let Some(result) = &job.result {
        field("result", result.to_string());
    }
    if let Some(error) = &job.last_error {
        field("last error", error.clone());
    }
    if let Some(reason) = job.dead_letter_reason {
        field("dead because", reason.to_string());
    }
    if !job.depends_on.is_empty() {
        let ids: Vec<String> = job.depends_on.iter().map(Uuid::to_string).collect();
        field("depends on", ids.join(", "));
    }
    Ok(())
}

#[derive(Args)]
pub struct EnqueueArgs {
    /// The task name (`billing.send_invoice`).
    #[arg(required_unless_present = "from")]
    task: Option<String>,
    /// Enqueue the jobs of a file of JSON lines (`-`: standard input), one job spec a line:
    /// task_name, and optionally args, queue, priority, scheduled_at (RFC 3339), retries,
    /// unique, dedup_key, timeout (seconds), depends_on (job ids), on_dependency_failure,
    /// batch_id.
    /// Sent in batches that commit one by one.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["task", "args", "queue", "priority", "at", "unique", "dedup_key", "depends_on", "run_on_dependency_failure", "batch", "wait"])]
    from: Option<std::path::PathBuf>,
    /// Jobs per statement with --from (1..=10000; default 1000).
    #[arg(long, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=super::enqueue_file::MAX_BATCH as u64))]
    batch_size: Option<usize>,
    /// The arguments: a JSON object.
    #[arg(long)]
    args: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    /// 1..=1000, lower runs sooner.
    #[arg(long)]
    priority: Option<i32>,
    /// When to run: an RFC 3339 time (2026-12-01T09:00:00Z) or +SECONDS from now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Skip it while a job with the same arguments is queued.
    #[arg(long)]
    unique: bool,
    /// At most one queued job per key.
    #[arg(long)]
    dedup_key: Option<String>,
    /// Wait until this job is done (repeat for several): the job is `waiting` until then,
    /// and is cancelled if one of them is cancelled or dies.
    #[arg(long, value_name = "JOB_ID")]
    depends_on: Vec<Uuid>,
    /// Run even if a job it depends on is cancelled or dies (once the others are done).
    #[arg(long, requires = "depends_on")]
    run_on_dependency_failure: bool,
    /// Join this open batch (`soniq batch open`).
    #[arg(long, value_name = "BATCH_ID")]
    batch: Option<Uuid>,
    /// Wait for the job to end and print its result (or error); exit 0 when it is done, 1
    /// when it was cancelled or died or the wait timed out.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (0..=3600; default 60).
    #[arg(long, value_name = "SECONDS", requires = "wait",
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(0..=3600))]
    timeout: Option<u64>,
    #[command(flatten)]
    pub modules: super::ModulesArg,
}

fn parse_at(text: &str) -> Result<SystemTime, Failure> {
    if let Some(seconds) = text.strip_prefix('+') {
        return seconds
            .parse()
            .ok()
            .and_then(|s: f64| Duration::try_from_secs_f64(s).ok())
            .and_then(|delay| SystemTime::now().checked_add(delay))
            .ok_or_else(|| {
                Failure::usage(format!(
                    "--at +SECONDS needs a number of seconds >= 0, got {text:?}"
                ))
            });
    }
    let at: jiff::Timestamp = text.parse().map_err(|e| {
        Failure::usage(format!(
            "--at must be an RFC 3339 time or +SECONDS, got {text:?}: {e}"
        ))
    })?;
    SystemTime::try_from(at).map_err(|e| Failure::usage(format!("--at is out of range: {e}")))
}

pub async fn enqueue(app: &Soniq, args: EnqueueArgs, out: &Output) -> CliResult {
    if let Some(path) = &args.from {
        let batch = args
            .batch_size
            .unwrap_or(super::enqueue_file::DEFAULT_BATCH);
        return super::enqueue_file::run(app, path, batch, out).await;
    }
    if args.batch_size.is_some() {
        return Err(Failure::usage("--batch-size goes with --from FILE"));
    }
    let task = args
        .task
        .as_deref()
        .expect("clap requires a task without --from");
    let mut request = app.enqueue_by_name(task, args_object(args.args.as_deref().unwrap_or("{}"))?);
    if let Some(queue) = args.queue {
        request = request.queue(queue);
    }
    if let Some(priority) = args.priority {
        request = request.priority(priority);
    }
    if let Some(at) = &args.at {
        request = request.run_at(parse_at(at)?);
    }
    if args.unique {
        request = request.unique(true);
    }
    if let Some(key) = args.dedup_key {
        request = request.dedup_key(key);
    }
    request = request.depends_on(args.depends_on);
    if let Some(batch) = args.batch {
        request = request.batch(batch);
    }
    if args.run_on_dependency_failure {
        request = request.on_dependency_failure(OnDependencyFailure::Run);
    }
    if args.wait {
        let handle = request.send_awaitable().await?;
        let timeout = Duration::from_secs(args.timeout.unwrap_or(60));
        return print_outcome(handle.id(), handle.wait(timeout).await?, timeout, out);
    }
    let id = request.await?;
    if out.json {
        out.print_json(&json!({"id": id.to_string()}));
    } else {
        println!("{id}");
    }
    Ok(())
}

/// A waited-for job's end: its result (done: exit 0), or why it did not end well (exit 1).
fn print_outcome(
    id: Uuid,
    outcome: Option<JobOutcome>,
    timeout: Duration,
    out: &Output,
) -> CliResult {
    let Some(outcome) = outcome else {
        return Err(Failure::new(format!(
            "job {id} had not ended after {} s (it goes on; `soniq inspect {id}`)",
            timeout.as_secs()
        )));
    };
    if out.json {
        out.print_json(
            &json!({"id": id.to_string(), "status": outcome.status.as_str(),
                                "result": outcome.result, "last_error": outcome.last_error}),
        );
    } else if outcome.status == JobStatus::Done {
        println!("{}", outcome.result.unwrap_or(Value::Null));
    }
    if outcome.status == JobStatus::Done {
        return Ok(());
    }
    Err(Failure::new(format!(
        "job {id} is {}: {}",
        outcome.status.as_str(),
        outcome.last_error.unwrap_or_default()
    )))
}

pub async fn cancel(app: &Soniq, id: Uuid) -> CliResult {
    if app.cancel_job(id).await? {
        println!("cancelled {id} (a running job stops at its worker's next heartbeat)");
        Ok(())
    } else {
        Err(Failure::new(format!(
            "job {id} already finished; nothing to cancel"
        )))
    }
}

#[derive(Args)]
pub struct JobsListArgs {
    #[arg(long)]
    queue: Option<String>,
    /// waiting, queued, processing, done or cancelled (dead jobs: `soniq dead-letter list`).
    #[arg(long)]
    status: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: i32,
    #[arg(long, default_value_t = 0)]
    offset: i32,
}

pub async fn jobs_list(app: &Soniq, args: JobsListArgs, out: &Output) -> CliResult {
    // Dead jobs are listed by `soniq dead-letter list`.
    let status = match args.status.as_deref().map(JobStatus::parse).transpose() {
        Ok(status) if status != Some(JobStatus::Dead) => status,
        _ => {
            return Err(Failure::usage(format!(
                "--status must be waiting, queued, processing, done or cancelled, got {:?}",
                args.status.unwrap_or_default()
            )))
        }
    };
    let filter = JobFilter {
        queue: args.queue,
        status,
        limit: args.limit,
        offset: args.offset,
    };
    let jobs = app.list_jobs(&filter).await?;
    if out.json {
        out.print_json(&Value::Array(jobs.iter().map(job_json).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.task_name.clone(),
                out.state(j.status.as_str()),
                j.queue.clone(),
                format!("{}/{}", j.attempts, j.max_attempts),
                time(Some(j.created_at)),
            ]
        })
        .collect();
    out.table(
        &["id", "task", "status", "queue", "attempts", "created"],
        &rows,
    );
    Ok(())
}
