//! `soniq schedule list|add|pause|resume|remove|next|fire`.

use super::output::Output;
use super::{args_object, time, CliResult, Failure};
use crate::scheduler::{ScheduleInfo, ScheduleSpec};
use crate::time::rfc3339_json;
use crate::Soniq;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use soniq_cron::{Schedule, SignedDuration};

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule, or only enabled or paused ones.
    List {
        #[arg(long, conflicts_with = "paused")]
        enabled: bool,
        #[arg(long)]
        paused: bool,
    },
    /// Add a schedule, or update it by name (same timing keeps its next fire time).
    Add(AddArgs),
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Make the schedule's job now (also while it is paused); its next fire time stays.
    Fire {
        name: String,
    },
    /// The coming fire times of a schedule.
    Next {
        name: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

fn info_json(s: &ScheduleInfo) -> Value {
    json!({
        "name": s.name, "task_name": s.task_name, "args": s.args, "cron": s.cron,
        "every_seconds": s.every.map(|d| d.as_secs_f64()), "time_zone": s.time_zone, "enabled": s.enabled,
        "next_fire_at": rfc3339_json(s.next_fire_at), "last_fire_at": rfc3339_json(s.last_fire_at),
        "fire_count": s.fire_count, "last_error": s.last_error,
    })
}

#[derive(Args)]
pub struct AddArgs {
    name: String,
    /// The task to enqueue (default: the schedule's name).
    #[arg(long)]
    task: Option<String>,
    /// A 5-field cron expression.
    #[arg(long, required_unless_present = "every", conflicts_with = "every")]
    cron: Option<String>,
    /// An interval in seconds.
    #[arg(long, value_name = "SECONDS")]
    every: Option<f64>,
    #[arg(long, default_value = "{}")]
    args: String,
    /// IANA time zone of the cron times.
    #[arg(long, default_value = "UTC")]
    tz: String,
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    priority: Option<i32>,
}

pub async fn run(app: &Soniq, command: ScheduleCommand, out: &Output) -> CliResult {
    let scheduler = app.scheduler();
    match command {
        ScheduleCommand::List { enabled, paused } => {
            let which = if enabled {
                Some(true)
            } else if paused {
                Some(false)
            } else {
                None
            };
            list(app, which, out).await?;
        }
        ScheduleCommand::Add(args) => add(app, args, out).await?,
        ScheduleCommand::Pause { name } => {
            let changed = scheduler.pause(&name).await?;
            let said = if changed {
                "paused"
            } else {
                "was already paused"
            };
            println!("{name} {said}");
        }
        ScheduleCommand::Resume { name } => {
            let changed = scheduler.resume(&name).await?;
            let said = if changed { "resumed" } else { "was not paused" };
            println!("{name} {said}");
        }
        ScheduleCommand::Remove { name } => {
            scheduler.remove(&name).await?;
            println!("removed {name}");
        }
        ScheduleCommand::Next { name, count } => next(app, &name, count, out).await?,
        ScheduleCommand::Fire { name } => {
            let job = scheduler.fire(&name).await?;
            if out.json {
                out.print_json(&json!({ "schedule": name, "job_id": job.to_string() }));
            } else {
                println!("fired {name}: job {job}");
            }
        }
    }
    Ok(())
}

async fn list(app: &Soniq, which: Option<bool>, out: &Output) -> CliResult {
    let schedules = app.scheduler().list(which).await?;
    if out.json {
        out.print_json(&Value::Array(schedules.iter().map(info_json).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            let timing = match (&s.cron, s.every) {
                (Some(c), _) => format!("{c} ({})", s.time_zone),
                (None, Some(e)) => format!("every {}s", e.as_secs_f64()),
                _ => "-".into(),
            };
            vec![
                s.name.clone(),
                s.task_name.clone(),
                timing,
                out.state(if s.enabled { "enabled" } else { "paused" }),
                time(s.next_fire_at),
                s.fire_count.to_string(),
            ]
        })
        .collect();
    out.table(&["name", "task", "when", "state", "next", "fired"], &rows);
    Ok(())
}

async fn add(app: &Soniq, add: AddArgs, out: &Output) -> CliResult {
    let args = args_object(&add.args)?;
    let schedule = match (add.cron, add.every) {
        (Some(expr), None) => {
            Schedule::cron(&expr).map_err(|e| Failure::usage(format!("--cron: {e}")))?
        }
        (None, Some(seconds)) if seconds > 0.0 => SignedDuration::try_from_secs_f64(seconds)
            .map_err(|e| e.to_string())
            .and_then(|every| Schedule::every(every).map_err(|e| e.to_string()))
            .map_err(|e| Failure::usage(format!("--every: {e}")))?,
        _ => {
            return Err(Failure::usage(
                "give --cron EXPRESSION or --every SECONDS (> 0)",
            ))
        }
    };
    let mut spec = ScheduleSpec::new(add.task.unwrap_or_else(|| add.name.clone()), schedule)
        .name(&add.name)
        .args(args)
        .time_zone(add.tz);
    spec.queue = add.queue;
    spec.priority = add.priority;
    let info = app.scheduler().add(&spec).await?;
    if out.json {
        out.print_json(&info_json(&info));
    } else {
        println!(
            "schedule {} next fires at {}",
            info.name,
            time(info.next_fire_at)
        );
    }
    Ok(())
}

async fn next(app: &Soniq, name: &str, count: usize, out: &Output) -> CliResult {
    let info = app
        .scheduler()
        .get(name)
        .await?
        .ok_or_else(|| Failure::new(format!("no schedule {name}")))?;
    let times = info.fire_times(count.max(1))?;
    if out.json {
        out.print_json(&Value::Array(
            times.iter().map(|t| rfc3339_json(Some(*t))).collect(),
        ));
    } else if times.is_empty() {
        println!("{name} is paused");
    } else {
        for t in times {
            println!("{}", time(Some(t)));
        }
    }
    Ok(())
}
