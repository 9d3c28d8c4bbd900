//! One of every kind of row a database of Soniq holds, and those rows as text: what the
//! survival tests (an update, a dump and restore) compare before and after.

use postgres::Client;

/// One of every kind of row, through the API (the same calls on both versions).
pub fn fill(client: &mut Client) {
    client
        .batch_execute(
            "SELECT soniq.register_task('keep.task', '{\"retries\": 2, \"priority\": 5}');
             SELECT soniq.enqueue('keep.task', '{\"state\": \"queued\"}');
             SELECT soniq.enqueue('keep.later', '{\"state\": \"scheduled\"}', scheduled_at => now() + interval '1 day');
             SELECT soniq.enqueue('keep.running', '{\"state\": \"processing\"}', queue => 'keep_running');
             SELECT soniq.enqueue('keep.done', '{\"state\": \"done\"}', queue => 'keep_done');
             SELECT soniq.dead_letter_move(soniq.enqueue('keep.dead', '{\"state\": \"dead\"}'), 'kept');
             SELECT soniq.schedule_add('keep.hourly', every => interval '1 hour');
             SELECT soniq.pause_queue('keep_paused');
             CREATE TEMP TABLE w AS SELECT soniq.register_worker('host', 1, ARRAY['keep_running', 'keep_done']) AS id;
             SELECT count(*) FROM soniq.claim((SELECT id FROM w), ARRAY['keep_running']);
             SELECT soniq.complete(c.id, (SELECT id FROM w), c.attempt, '{\"ok\": true}')
               FROM soniq.claim((SELECT id FROM w), ARRAY['keep_done']) c;",
        )
        .unwrap();
}

/// Columns added since the earliest previous version: an update fills them for old rows
/// (NULL: the row predates logins being recorded), so they are left out when rows are
/// compared across an update. (By name, of whichever table has them: `concurrency_key` of jobs
/// and tasks, the flow-control columns of queues, all of 0.7.0; the dependency, awaiting
/// and batch columns of jobs, of 0.9.0; the trace context of jobs, of 0.12.0.)
pub const ADDED_COLUMNS: [&str; 24] = [
    "enqueued_by",
    "inherited",
    "task_names",
    "registered_by",
    "concurrency_key",
    "max_running",
    "max_running_per_key",
    "rate_limit",
    "rate_limit_per_key",
    "rate_period",
    "fair_share",
    "key_weights",
    "key_cursor",
    "held_back",
    "wake_at",
    "priority_aging",
    "depends_on",
    "waiting_on",
    "on_dependency_failure",
    "has_dependents",
    "cancelled_by",
    "awaited",
    "batch_id",
    "traceparent",
];

/// Every row of every table, as text (without `skip`'s columns).
pub fn rows_without(client: &mut Client, skip: &[&str]) -> String {
    let tables = [
        "jobs",
        "workers",
        "dead_letter_jobs",
        "tasks",
        "queues",
        "schedules",
    ];
    let mut all = String::new();
    for table in tables {
        let text: String = client
            .query_one(
                &format!("SELECT '{table}: ' || coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '')
                            FROM (SELECT to_jsonb(t) - $1::text[] AS r FROM soniq.{table} t) t"),
                &[&skip],
            )
            .unwrap()
            .get(0);
        all.push_str(&text);
        all.push('\n');
    }
    all
}

/// Every row of every table, as text.
pub fn rows(client: &mut Client) -> String {
    rows_without(client, &[])
}

/// Claim and complete the queued job `fill` made; returns how many were completed.
pub fn run_the_queued_job(client: &mut Client) -> i64 {
    client
        .query_one(
            "SELECT count(soniq.complete(c.id, r.w, c.attempt))
               FROM (SELECT soniq.register_worker() AS w) r,
                    LATERAL soniq.claim(r.w, task_names => ARRAY['keep.task']) c",
            &[],
        )
        .unwrap()
        .get(0)
}
