//! schedules: N schedules due at the same instant; the time from that instant until all
//! their jobs exist. Where the control plane serves the database it fires them (it wakes
//! for the next due schedule, and fires them in batches); otherwise the bench calls
//! `soniq.fire_due_schedules()` itself in a loop from the due instant, and says so.

use super::db::{self, connect};
use super::report::{Figure, Target};
use super::Bench;
use soniq_runner::{Error, Result};
use std::time::{Duration, Instant};

const SCENARIO: &str = "schedules";
const TASK: &str = "bench.scheduled";
const QUEUE: &str = "bench.schedules";
/// Schedules are created this far ahead of the instant they are all due.
const LEAD: Duration = Duration::from_secs(2);
/// Give up waiting for the jobs after this long past the due instant.
const PATIENCE: Duration = Duration::from_secs(120);

async fn jobs(client: &tokio_postgres::Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM soniq.jobs WHERE queue = $1 AND task_name = $2",
            &[&QUEUE, &TASK],
        )
        .await?
        .get(0))
}

async fn remove_schedules(client: &tokio_postgres::Client) -> Result<()> {
    client
        .execute(
            "DELETE FROM soniq.schedules WHERE name LIKE 'bench.schedules.%'",
            &[],
        )
        .await?;
    Ok(())
}

pub async fn run(bench: &mut Bench) -> Result<()> {
    let mut admin = connect(&bench.url).await?;
    db::clean_queue(&admin, QUEUE).await?;
    remove_schedules(&admin).await?;
    let count = bench.plan.schedules;
    if !bench.control_plane {
        // The bench fires every due schedule of the database: not if others are due.
        let others = others_due_soon(&admin).await?;
        if others > 0 {
            bench.report.note(format!(
                "schedules: skipped: no control plane serves this database and {others} other schedules are due soon; firing them here would enqueue their jobs"
            ));
            return Ok(());
        }
    }
    let due = set_up(&mut admin, count).await?;
    tokio::time::sleep_until(due.into()).await;
    let (first, all) = wait_for_jobs(bench, &admin, count, due).await?;
    remove_schedules(&admin).await?;
    db::clean_queue(&admin, QUEUE).await?;

    let by = if bench.control_plane {
        "fired by the control plane"
    } else {
        "fired by the bench calling soniq.fire_due_schedules(): no control plane serves this database"
    };
    bench.report.add(Figure::new(
        SCENARIO,
        "first_job",
        format!("due instant to the first job, {count} schedules, {by}"),
        first.as_secs_f64(),
        "s",
    ));
    bench.report.add(
        Figure::new(
            SCENARIO,
            "all_jobs",
            format!("due instant to all {count} jobs, {by}"),
            all.as_secs_f64(),
            "s",
        )
        .target(Target::value_at_most(1.0)),
    );
    Ok(())
}

/// Enabled schedules of others due within ten minutes.
async fn others_due_soon(admin: &tokio_postgres::Client) -> Result<i64> {
    Ok(admin
        .query_one(
            "SELECT count(*) FROM soniq.schedules WHERE enabled AND name NOT LIKE 'bench.%'
                AND next_fire_at <= now() + interval '10 minutes'",
            &[],
        )
        .await?
        .get(0))
}

/// `count` hourly schedules (their first fire time an hour away), then all moved to one
/// instant a little ahead: setting the fire time directly is the fixture; the control plane is
/// woken at its commit so it sleeps until that instant, not a whole tick. Returns the instant.
async fn set_up(admin: &mut tokio_postgres::Client, count: usize) -> Result<Instant> {
    admin
        .execute(
            &format!(
                "SELECT count(soniq.schedule_add('bench.schedules.' || g, task_name => '{TASK}',
                                                 every => interval '1 hour', queue => '{QUEUE}',
                                                 args => jsonb_build_object('n', g)))
                   FROM generate_series(1, $1::int) g"
            ),
            &[&(count as i32)],
        )
        .await?;
    let transaction = admin.transaction().await?;
    let row = transaction
        .query_one(
            "WITH due AS (SELECT date_trunc('second', clock_timestamp()) + make_interval(secs => $1) AS at),
                  moved AS (UPDATE soniq.schedules s SET next_fire_at = due.at FROM due
                             WHERE s.name LIKE 'bench.schedules.%' RETURNING 1)
             SELECT (SELECT count(*) FROM moved),
                    extract(epoch FROM (SELECT at FROM due) - clock_timestamp())::float8",
            &[&(LEAD.as_secs_f64() + 1.0)],
        )
        .await?;
    // Re-adding one schedule with the same timing keeps its fire time and wakes the
    // control plane at commit (what a redeploy does), through the API.
    transaction
        .execute(
            &format!(
                "SELECT soniq.schedule_add('bench.schedules.1', task_name => '{TASK}',
                                           every => interval '1 hour', queue => '{QUEUE}',
                                           args => jsonb_build_object('n', 1))"
            ),
            &[],
        )
        .await?;
    transaction.commit().await?;
    let (moved, ahead): (i64, f64) = (row.get(0), row.get(1));
    if moved as usize != count {
        return Err(Error::Invalid(format!(
            "{moved} of {count} schedules were set up"
        )));
    }
    // Negative once that instant has passed (then it is due now).
    Ok(Instant::now() + Duration::try_from_secs_f64(ahead).unwrap_or_default())
}

/// From the due instant to the first job and to all `count` (firing them where no control
/// plane does).
async fn wait_for_jobs(
    bench: &Bench,
    admin: &tokio_postgres::Client,
    count: usize,
    due: Instant,
) -> Result<(Duration, Duration)> {
    let mut first: Option<Duration> = None;
    loop {
        if !bench.control_plane {
            admin
                .execute("SELECT soniq.fire_due_schedules()", &[])
                .await?;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let made = jobs(admin).await?;
        if made > 0 && first.is_none() {
            first = Some(due.elapsed());
        }
        if made as usize >= count {
            let all = due.elapsed();
            return Ok((first.unwrap_or(all), all));
        }
        if due.elapsed() > PATIENCE {
            return Err(Error::Invalid(format!(
                "only {made} of {count} scheduled jobs exist {} s after they were due",
                PATIENCE.as_secs()
            )));
        }
    }
}
