//! `soniq batch open|close|status`: batches of jobs with a callback.

use super::output::Output;
use super::{args_object, time, CliResult, Failure};
use crate::Soniq;
use clap::Subcommand;
use serde_json::json;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum BatchCommand {
    /// Open a batch; prints its id (for `soniq enqueue --batch ID`).
    Open {
        /// The callback's task: enqueued once every job of the closed batch has ended.
        callback_task: String,
        /// The callback's args (a JSON object; `batch` is added: the id and the counts).
        #[arg(long)]
        args: Option<String>,
        /// The callback's queue (default: its task's).
        #[arg(long)]
        queue: Option<String>,
    },
    /// No more jobs join the batch; its callback is enqueued once they have all ended.
    Close { id: Uuid },
    /// Its jobs by how they ended, the failures, its callback.
    Status { id: Uuid },
}

pub async fn run(app: &Soniq, command: BatchCommand, out: &Output) -> CliResult {
    match command {
        BatchCommand::Open {
            callback_task,
            args,
            queue,
        } => {
            let args = args_object(args.as_deref().unwrap_or("{}"))?;
            let id = app
                .open_batch(&callback_task, &args, queue.as_deref())
                .await?;
            if out.json {
                out.print_json(&json!({"id": id.to_string()}));
            } else {
                println!("{id}");
            }
            Ok(())
        }
        BatchCommand::Close { id } => {
            if app.close_batch(id).await? {
                println!("closed batch {id}");
                Ok(())
            } else {
                Err(Failure::new(format!("batch {id} was closed already")))
            }
        }
        BatchCommand::Status { id } => {
            let Some(batch) = app.batch_status(id).await? else {
                return Err(Failure::new(format!(
                    "no batch {id} (unknown, another login's, or pruned after it finished)"
                )));
            };
            let failed: Vec<String> = batch.failed_ids.iter().map(Uuid::to_string).collect();
            if out.json {
                out.print_json(&json!({
                    "id": batch.id.to_string(), "callback_task": batch.callback_task, "jobs": batch.jobs,
                    "pending": batch.pending, "done": batch.done, "dead": batch.dead,
                    "cancelled": batch.cancelled, "failed_ids": failed,
                    "closed_at": batch.closed_at.map(|t| time(Some(t))),
                    "finished_at": batch.finished_at.map(|t| time(Some(t))),
                    "callback_job_id": batch.callback_job_id.map(|id| id.to_string()),
                }));
                return Ok(());
            }
            let field = |name: &str, value: String| println!("{name:<13} {value}");
            field("id", batch.id.to_string());
            field("callback", batch.callback_task.clone());
            field(
                "jobs",
                format!(
                    "{} ({} pending, {} done, {} dead, {} cancelled)",
                    batch.jobs, batch.pending, batch.done, batch.dead, batch.cancelled
                ),
            );
            if !failed.is_empty() {
                field("failed", failed.join(", "));
            }
            field("created at", time(Some(batch.created_at)));
            field("closed at", time(batch.closed_at));
            field("finished at", time(batch.finished_at));
            if let Some(callback) = batch.callback_job_id {
                field("callback job", callback.to_string());
            }
            Ok(())
        }
    }
}
