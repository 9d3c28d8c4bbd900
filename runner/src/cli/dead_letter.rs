//! `soniq dead-letter list|show|replay|delete|purge|export|stats`.

use super::output::Output;
use super::{time, CliResult, DeadFilter, Failure};
use crate::dead_letter::{DeadJob, DeadLetterFilter, ExportFormat, ReplayOptions};
use crate::store::DeadLetterReason;
use crate::Soniq;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// Bulk actions on at least this many dead jobs need `--yes` (or a `y` at a terminal).
const CONFIRM_FROM: usize = 5;

#[derive(Subcommand)]
pub enum DeadLetterCommand {
    /// Dead jobs, most recently dead first.
    List(DeadFilter),
    /// One dead job in full.
    Show { id: Uuid },
    /// Mint fresh jobs from dead ones (the dead rows stay, with their replay count).
    Replay(ReplayArgs),
    /// Delete dead jobs for good.
    Delete(Selection),
    /// Delete dead jobs older than a number of days (`cleanup` is its old name).
    #[command(alias = "cleanup")]
    Purge {
        #[arg(long, default_value_t = 30.0)]
        days: f64,
        /// Say how many, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write dead jobs as JSON or CSV.
    Export {
        #[command(flatten)]
        filter: DeadFilter,
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// The file to write; standard output when absent.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Counts by task, queue, reason and day.
    Stats {
        /// Only jobs that died within this many hours.
        #[arg(long)]
        hours: Option<f64>,
    },
}

/// Which dead jobs a bulk action takes: ids, or `--all` that match the filters.
#[derive(Args)]
pub struct Selection {
    ids: Vec<Uuid>,
    /// Every dead job matching the filters.
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    #[command(flatten)]
    filter: DeadFilter,
    /// Say what would happen, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    selection: Selection,
    /// Replay into this queue.
    #[arg(long = "to-queue", value_name = "QUEUE")]
    to_queue: Option<String>,
    #[arg(long)]
    priority: Option<i32>,
    #[arg(long)]
    max_attempts: Option<i32>,
    /// Keep the attempts already used (default: start again from zero).
    #[arg(long)]
    keep_attempts: bool,
    /// With --all: replay also the dead jobs replayed before (default: skip them).
    #[arg(long, requires = "all")]
    again: bool,
}

/// `amount` hours (or days, ...: `unit` seconds each) given to `flag`; a usage error, not a
/// panic, for an amount no `Duration` holds.
fn span(flag: &str, amount: f64, unit: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(amount * unit).map_err(|_| {
        Failure::usage(if amount >= 0.0 {
            format!("{flag} is too large, got {amount}")
        } else {
            format!("{flag} must be a number >= 0, got {amount}")
        })
    })
}

/// `span` before now (or the epoch, for a span longer than the clock's past).
fn ago(span: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(span)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn filter_of(f: &DeadFilter) -> Result<DeadLetterFilter, Failure> {
    let since = f
        .since_hours
        .map(|hours| span("--since-hours", hours, 3600.0))
        .transpose()?;
    Ok(DeadLetterFilter {
        task_name: f.task.clone(),
        queue: f.queue.clone(),
        reason: f
            .reason
            .as_deref()
            .map(DeadLetterReason::parse)
            .transpose()
            .map_err(|e| Failure::usage(format!("--reason: {e}")))?,
        moved_after: since.map(ago),
        moved_before: None,
        tags: (!f.tags.is_empty()).then(|| f.tags.clone()),
        replayed: if f.replayed {
            Some(true)
        } else if f.not_replayed {
            Some(false)
        } else {
            None
        },
        limit: f.limit,
        offset: 0,
    })
}

/// The ids a bulk action takes: those named, or with `--all` every dead job matching the
/// filters (page after page: `--limit` sizes a page, it does not cap the selection).
async fn select(app: &Soniq, selection: &Selection) -> Result<Vec<Uuid>, Failure> {
    if !selection.all {
        if selection.ids.is_empty() {
            return Err(Failure::usage(
                "name dead job ids, or pass --all (with filters)",
            ));
        }
        return Ok(selection.ids.clone());
    }
    let mut filter = filter_of(&selection.filter)?;
    let mut ids = Vec::new();
    loop {
        let page = app.dead_letter().list(&filter).await?;
        ids.extend(page.iter().map(|j| j.id));
        if page.len() < usize::try_from(filter.limit).unwrap_or(0) {
            return Ok(ids);
        }
        filter.offset += filter.limit;
    }
}

/// Ask before acting on many: `--yes`, or a `y` typed at a terminal.
fn confirm(verb: &str, count: usize, yes: bool) -> Result<(), Failure> {
    if count < CONFIRM_FROM || yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(format!(
            "refusing to {verb} {count} dead jobs without --yes (standard input is not a terminal)"
        )));
    }
    eprint!("{verb} {count} dead jobs? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(e.to_string()))?;
    if answer.trim().eq_ignore_ascii_case("y") {
        Ok(())
    } else {
        Err(Failure::new("aborted"))
    }
}

/// A one-line progress count on a terminal's stderr.
fn progress(done: usize, total: usize) {
    if std::io::stderr().is_terminal() {
        eprint!("\r{done}/{total}");
        if done == total {
            eprintln!();
        }
    }
}

pub async fn run(app: &Soniq, command: DeadLetterCommand, out: &Output) -> CliResult {
    match command {
        DeadLetterCommand::List(filter) => list(app, &filter, out).await,
        DeadLetterCommand::Show { id } => show(app, id, out).await,
        DeadLetterCommand::Replay(args) => replay(app, args).await,
        DeadLetterCommand::Delete(selection) => delete(app, &selection).await,
        DeadLetterCommand::Purge { days, dry_run } => purge(app, days, dry_run).await,
        DeadLetterCommand::Export {
            filter,
            format,
            output,
        } => export(app, &filter, &format, output).await,
        DeadLetterCommand::Stats { hours } => stats(app, hours, out).await,
    }
}

async fn list(app: &Soniq, filter: &DeadFilter, out: &Output) -> CliResult {
    let jobs = app.dead_letter().list(&filter_of(filter)?).await?;
    if out.json {
        out.print_json(&Value::Array(jobs.iter().map(DeadJob::to_json).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.task_name.clone(),
                j.reason.to_string(),
                j.queue.clone(),
                j.resurrection_count.to_string(),
                time(Some(j.moved_at)),
            ]
        })
        .collect();
    out.table(&["id", "task", "reason", "queue", "replays", "died"], &rows);
    Ok(())
}

async fn show(app: &Soniq, id: Uuid, out: &Output) -> CliResult {
    let job = app
        .dead_letter()
        .get(id)
        .await?
        .ok_or_else(|| Failure::new(format!("no dead job {id}")))?;
    if out.json {
        out.print_json(&job.to_json());
        return Ok(());
    }
    for (name, value) in [
        ("id", job.id.to_string()),
        ("task", job.task_name.clone()),
        ("reason", out.state("dead") + " " + job.reason.as_str()),
        ("queue", job.queue.clone()),
        (
            "attempts",
            format!("{} of {}", job.attempts, job.max_attempts),
        ),
        ("args", job.args.to_string()),
        ("last error", job.last_error.clone().unwrap_or_default()),
        ("died", time(Some(job.moved_at))),
        ("replays", job.resurrection_count.to_string()),
        ("tags", job.tags.join(", ")),
    ] {
        println!("{name:<11} {value}");
    }
    Ok(())
}

async fn replay(app: &Soniq, args: ReplayArgs) -> CliResult {
    let ids = select(app, &args.selection).await?;
    if args.selection.dry_run {
        println!("would replay {} dead jobs", ids.len());
        return Ok(());
    }
    confirm("replay", ids.len(), args.selection.yes)?;
    let options = ReplayOptions {
        queue: args.to_queue,
        priority: args.priority,
        max_attempts: args.max_attempts,
        reset_attempts: !args.keep_attempts,
    };
    // --all is idempotent unless --again: running it twice, or two operators at once, does
    // not replay a dead job twice. Ids named one by one always replay.
    let once = args.selection.all && !args.again;
    let dlq = app.dead_letter();
    let mut skipped = 0;
    for (n, id) in ids.iter().enumerate() {
        let job = if once {
            dlq.replay_unless_replayed(*id, &options).await?
        } else {
            Some(dlq.replay(*id, &options).await?)
        };
        match job {
            Some(job) => println!("replayed {id} as {job}"),
            None => skipped += 1,
        }
        progress(n + 1, ids.len());
    }
    if skipped > 0 {
        println!("skipped {skipped} dead jobs replayed before (--again replays them too)");
    }
    Ok(())
}

async fn delete(app: &Soniq, selection: &Selection) -> CliResult {
    let ids = select(app, selection).await?;
    if selection.dry_run {
        println!("would delete {} dead jobs", ids.len());
        return Ok(());
    }
    confirm("delete", ids.len(), selection.yes)?;
    for (n, id) in ids.iter().enumerate() {
        app.dead_letter().delete(*id).await?;
        println!("deleted {id}");
        progress(n + 1, ids.len());
    }
    Ok(())
}

async fn purge(app: &Soniq, days: f64, dry_run: bool) -> CliResult {
    let older_than = span("--days", days, 86_400.0)?;
    let dlq = app.dead_letter();
    if dry_run {
        // Counted, not listed: every dead job, less those that died within the span.
        let older = dlq.stats(None).await?.total - dlq.stats(Some(older_than)).await?.total;
        println!("would delete {older} dead jobs older than {days} days");
    } else {
        let deleted = dlq.purge(older_than).await?;
        println!("deleted {deleted} dead jobs older than {days} days");
    }
    Ok(())
}

async fn export(
    app: &Soniq,
    filter: &DeadFilter,
    format: &str,
    output: Option<std::path::PathBuf>,
) -> CliResult {
    let format = if format == "json" {
        ExportFormat::Json
    } else {
        ExportFormat::Csv
    };
    let text = app
        .dead_letter()
        .export(&filter_of(filter)?, format)
        .await?;
    match output {
        Some(path) => {
            std::fs::write(&path, text)
                .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))?;
            println!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

async fn stats(app: &Soniq, hours: Option<f64>, out: &Output) -> CliResult {
    let since = match hours {
        Some(h) if h > 0.0 => Some(span("--hours", h, 3600.0)?),
        Some(h) => {
            return Err(Failure::usage(format!(
                "--hours must be a number > 0, got {h}"
            )))
        }
        None => None,
    };
    let stats = app.dead_letter().stats(since).await?;
    if out.json {
        out.print_json(&json!({
            "total": stats.total, "by_task": stats.by_task, "by_queue": stats.by_queue,
            "by_reason": stats.by_reason, "by_day": stats.by_day,
            "oldest_age_seconds": stats.oldest_age_seconds, "replayed": stats.replayed,
        }));
        return Ok(());
    }
    println!("total: {}   replayed: {}", stats.total, stats.replayed);
    for (title, map) in [
        ("task", &stats.by_task),
        ("queue", &stats.by_queue),
        ("reason", &stats.by_reason),
    ] {
        let rows: Vec<Vec<String>> = map
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        out.table(&[title, "dead"], &rows);
    }
    Ok(())
}
