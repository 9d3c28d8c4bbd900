//! setup, status, inspect, enqueue, cancel, jobs list.

use super::output::{mask_url, Output};
use super::{args_object, connect, time, CliResult, Failure};
use crate::error::with_causes;
use crate::jobs::{JobFilter, JobInfo, JobStatus};
use crate::time::rfc3339_json;
use crate::{Settings, Soniq};
use clap::Args;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use uuid::Uuid;

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Create the database if it is missing, install or update the extension, and say plainly
/// whether the control plane serves this database (and how to make it).
pub async fn setup(settings: &Settings, out: &Output) -> CliResult {
    let url = &settings.database_url;
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| Failure::usage(format!("SONIQ_DATABASE_URL is not a valid URL: {e}")))?;
    let database = config
        .get_dbname()
        .map(str::to_string)
        .unwrap_or_else(|| "postgres".into());
    let mut report = Vec::new();
    let client = match connect(url).await {
        Ok(client) => client,
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            let mut maintenance = config.clone();
            maintenance.dbname("postgres");
            let (admin, connection) = maintenance.connect(NoTls).await.map_err(|e| {
                Failure::new(format!(
                    "cannot connect to {} to create the database: {}",
                    mask_url(url),
                    with_causes(&e)
                ))
            })?;
            tokio::spawn(connection);
            admin
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&database)))
                .await
                .map_err(|e| Failure::new(format!("cannot create database {database}: {e}")))?;
            report.push(format!("created database {database}"));
            connect(url).await.map_err(|e| {
                Failure::new(format!(
                    "cannot connect to {}: {}",
                    mask_url(url),
                    with_causes(&e)
                ))
            })?
        }
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot connect to {}: {}",
                mask_url(url),
                with_causes(&e)
            )))
        }
    };
    let available = client
        .query_opt(
            "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'soniq'",
            &[],
        )
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    let Some(row) = available else {
        return Err(Failure::new(
            "the soniq extension is not installed on this PostgreSQL server: build and install it \
             (cargo pgrx install --release) on the server first",
        ));
    };
    let (default, installed): (String, Option<String>) = (row.get(0), row.get(1));
    match installed {
        None => {
            client
                .batch_execute("CREATE EXTENSION soniq")
                .await
                .map_err(|e| Failure::new(format!("CREATE EXTENSION soniq failed: {e}")))?;
            report.push(format!("installed extension soniq {default}"));
        }
        Some(v) if v != default => {
            client
                .batch_execute("ALTER EXTENSION soniq UPDATE")
                .await
                .map_err(|e| Failure::new(format!("ALTER EXTENSION soniq UPDATE failed: {e}")))?;
            report.push(format!("updated extension soniq {v} -> {default}"));
        }
        Some(v) => report.push(format!("extension soniq {v} is up to date")),
    }
    let row = client
        .query_one(
            "SELECT current_setting('shared_preload_libraries') ~ '(^|[ ,])soniq($|[ ,])',
                    current_setting('soniq.database_name', true),
                    (SELECT alive FROM soniq.health WHERE subsystem = 'worker')",
            &[],
        )
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    let (preloaded, served, alive): (bool, Option<String>, bool) =
        (row.get(0), row.get(1), row.get(2));
    let mut warnings = Vec::new();
    if !preloaded {
        warnings.push(format!(
            "the control plane is not running: add shared_preload_libraries = 'soniq' and \
             soniq.database_name = '{database}' to postgresql.conf, then restart PostgreSQL"
        ));
    } else if served.as_deref() != Some(database.as_str()) {
        warnings.push(format!(
            "the control plane serves database {}, not {database}: set soniq.database_name = '{database}' \
             in postgresql.conf and restart PostgreSQL",
            served.unwrap_or_else(|| "postgres".into())
        ));
    } else if !alive {
        warnings.push(
            "the control plane serves this database but is not up yet (it starts within seconds)"
                .into(),
        );
    }
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

pub async fn status(app: &Soniq, out: &Output) -> CliResult {
    let stats = app.queue_stats(None).await?;
    let client = app.connection().await?;
    let timeout = app.settings.heartbeat_timeout.as_secs_f64();
    let workers = client
        .query(
            "SELECT count(*) FILTER (WHERE extract(epoch FROM silent_for)::float8 <= $1),
                    count(*) FILTER (WHERE extract(epoch FROM silent_for)::float8 > $1)
               FROM soniq.worker_overview",
            &[&timeout],
        )
        .await
        .map_err(crate::Error::from)?;
    let (alive, stale): (i64, i64) = (workers[0].get(0), workers[0].get(1));
    let health = client
        .query(
            "SELECT subsystem, alive, coalesce(extract(epoch FROM lag)::float8, 0), last_error FROM soniq.health
              ORDER BY array_position(ARRAY['worker', 'scheduler', 'rescue', 'prune', 'unserved'], subsystem)",
            &[],
        )
        .await
        .map_err(crate::Error::from)?;
    let health: Vec<(String, bool, f64, Option<String>)> = health
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    // Queued jobs of a task no live worker serves (found by the control plane each round).
    let unserved = client
        .query(
            "SELECT u.task_name, u.queue, extract(epoch FROM now() - u.since)::float8,
                    (SELECT count(*) FROM soniq.jobs j
                      WHERE j.status = 'queued' AND j.task_name = u.task_name AND j.queue = u.queue)
               FROM soniq.unserved u ORDER BY u.since, u.task_name, u.queue",
            &[],
        )
        .await
        .map_err(crate::Error::from)?;
    let unserved: Vec<(String, String, f64, i64)> = unserved
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    if out.json {
        out.print_json(&json!({
            "database": mask_url(&app.settings.database_url),
            "jobs": {"total": stats.total, "queued": stats.queued, "processing": stats.processing,
                     "done": stats.done, "cancelled": stats.cancelled, "dead_letter": stats.dead_letter},
            "workers": {"alive": alive, "stale": stale},
            "control_plane": health.iter().map(|(s, a, lag, e)| json!({
                "subsystem": s, "alive": a, "lag_seconds": lag, "last_error": e})).collect::<Vec<_>>(),
            "unserved": unserved.iter().map(|(task, queue, waited, jobs)| json!({
                "task_name": task, "queue": queue, "jobs": jobs, "unserved_seconds": waited})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("database: {}", mask_url(&app.settings.database_url));
    out.table(
        &[
            "total",
            "queued",
            "processing",
            "done",
            "cancelled",
            "dead letter",
        ],
        &[[
            stats.total,
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
        .map(|(subsystem, alive, lag, error)| {
            vec![
                subsystem.clone(),
                out.state(if *alive { "alive" } else { "stale" }),
                format!("{lag:.1}s"),
                error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.table(&["control plane", "state", "lag", "last error"], &rows);
    for (task, queue, waited, jobs) in &unserved {
        println!(
            "warning: {jobs} queued jobs of task {task} in queue {queue}: no live worker has served them for {waited:.0}s"
        );
    }
    Ok(())
}

fn job_json(job: &JobInfo) -> Value {
    json!({
        "id": job.id.to_string(), "task_name": job.task_name, "args": job.args, "status": job.status.as_str(),
        "queue": job.queue, "priority": job.priority, "attempts": job.attempts, "max_attempts": job.max_attempts,
        "scheduled_at": rfc3339_json(job.scheduled_at), "last_error": job.last_error, "result": job.result,
        "dead_letter_reason": job.dead_letter_reason, "producer_id": job.producer_id,
        "created_at": rfc3339_json(Some(job.created_at)), "updated_at": rfc3339_json(Some(job.updated_at)),
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
    if let Some(result) = &job.result {
        field("result", result.to_string());
    }
    if let Some(error) = &job.last_error {
        field("last error", error.clone());
    }
    if let Some(reason) = &job.dead_letter_reason {
        field("dead because", reason.clone());
    }
    Ok(())
}

#[derive(Args)]
pub struct EnqueueArgs {
    /// The task name (`billing.send_invoice`).
    task: String,
    /// The arguments: a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
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
    let mut request = app.enqueue_by_name(&args.task, args_object(&args.args)?);
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
    let id = request.await?;
    if out.json {
        out.print_json(&json!({"id": id.to_string()}));
    } else {
        println!("{id}");
    }
    Ok(())
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
    /// queued, processing, done or cancelled (dead jobs: `soniq dead-letter list`).
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
                "--status must be queued, processing, done or cancelled, got {:?}",
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
