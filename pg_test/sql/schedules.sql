-- Schedules and the control plane's rounds, called directly (this database is not the one
-- the background worker serves, so nothing here happens behind the test's back).
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'

-- cron_next for operators.
SELECT soniq.cron_next('*/15 * * * *', '2026-01-01 00:07:30+00') AS next_quarter;
SELECT soniq.cron_next('30 2 * * *', '2026-03-08 06:00+00', 'America/New_York') AS skipped_hour_fires_after_the_gap;
SELECT soniq.cron_next('0 12 1 * 1', '2026-02-01 12:00+00') AS first_of_month_or_monday;

-- schedule_add: a cron schedule in a time zone; task name defaults to the schedule's name.
SELECT name, task_name, args, cron, every, time_zone, enabled, fire_count,
       next_fire_at = soniq.cron_next('0 9 * * 1-5', now(), 'Europe/Berlin') AS next_is_cron_next
  FROM soniq.schedule_add('reports.daily', cron => '0 9 * * 1-5', time_zone => 'Europe/Berlin');
-- an interval schedule with job options
SELECT name, task_name, args, cron, every, queue, priority, retries, timeout,
       next_fire_at - now() AS first_fire_in
  FROM soniq.schedule_add('metrics.flush', 'metrics.flush_all', every => '30 seconds', args => '{"region": "eu"}',
                          queue => 'maintenance', priority => 5, retries => 0, timeout => '10 seconds');
-- Re-adding with the same timing updates the options and keeps the next fire time...
UPDATE soniq.schedules SET next_fire_at = now() + interval '7 seconds' WHERE name = 'metrics.flush';
SELECT priority, round(extract(epoch FROM next_fire_at - now())) AS kept_seconds
  FROM soniq.schedule_add('metrics.flush', 'metrics.flush_all', every => '30 seconds', priority => 9);
-- ...new timing recomputes it.
SELECT every, next_fire_at - now() AS recomputed
  FROM soniq.schedule_add('metrics.flush', 'metrics.flush_all', every => '1 minute');
SELECT name, enabled FROM soniq.schedule_list();

-- pause, resume, get, remove.
SELECT soniq.schedule_pause('metrics.flush') AS paused, soniq.schedule_pause('metrics.flush') AS paused_again;
SELECT enabled, next_fire_at FROM soniq.schedule_get('metrics.flush');
SELECT name FROM soniq.schedule_list(enabled => false);
SELECT soniq.schedule_resume('metrics.flush') AS resumed, soniq.schedule_resume('metrics.flush') AS resumed_again;
SELECT enabled, round(extract(epoch FROM next_fire_at - now())) AS next_in_seconds FROM soniq.schedule_get('metrics.flush');
SELECT count(*) AS unknown FROM soniq.schedule_get('no.such.schedule');
-- added paused
SELECT enabled, next_fire_at FROM soniq.schedule_add('later.maybe', cron => '@daily', enabled => false);

-- fire_due_schedules: one job per due schedule, stamped with its slot and the schedule.
UPDATE soniq.schedules SET next_fire_at = '2026-01-01 00:00:00+00' WHERE name = 'metrics.flush';
SELECT soniq.fire_due_schedules() AS handled;
SELECT task_name, args, queue, priority, max_attempts, scheduled_at, producer_id, status
  FROM soniq.jobs ORDER BY created_at;
-- It was far behind: it fired once, and its next slot is after now, on its one-minute grid.
SELECT fire_count, last_fire_at, next_fire_at > now() AS next_after_now,
       extract(epoch FROM next_fire_at - last_fire_at)::int % 60 AS off_grid_seconds,
       last_job_id = (SELECT id FROM soniq.jobs) AS links_its_job
  FROM soniq.schedules WHERE name = 'metrics.flush';
SELECT soniq.fire_due_schedules() AS nothing_due;
-- Its next minute may come while this file runs: out of the way of the rounds below.
UPDATE soniq.schedules SET next_fire_at = now() + interval '1 day' WHERE name = 'metrics.flush';
-- schedule_fire: the job now, whatever the timing, which stays; it counts as a fire.
SELECT fire_count AS fires_before, next_fire_at AS kept FROM soniq.schedules WHERE name = 'metrics.flush' \gset
SELECT soniq.schedule_fire('metrics.flush') AS fired \gset
SELECT task_name, queue, producer_id, status, scheduled_at IS NULL AS runs_now FROM soniq.jobs WHERE id = :'fired';
SELECT fire_count - :fires_before AS more_fires, last_job_id = :'fired' AS links_it,
       next_fire_at = :'kept'::timestamptz AS timing_kept
  FROM soniq.schedules WHERE name = 'metrics.flush';
-- ...also while paused, which it stays.
SELECT soniq.schedule_pause('metrics.flush') AS paused;
SELECT soniq.schedule_fire('metrics.flush') IS NOT NULL AS fired_while_paused;
SELECT enabled, fire_count - :fires_before AS more_fires FROM soniq.schedules WHERE name = 'metrics.flush';
SELECT soniq.schedule_resume('metrics.flush') AS resumed;
UPDATE soniq.schedules SET next_fire_at = now() + interval '1 day' WHERE name = 'metrics.flush';
-- A healthy batch is fired as one batch (the one-at-a-time path stops at 50).
SELECT count(soniq.schedule_add('batch.' || n, every => '1 hour')) AS added FROM generate_series(1, 120) n;
UPDATE soniq.schedules SET next_fire_at = now() - interval '1 second' WHERE name LIKE 'batch.%';
SELECT soniq.fire_due_schedules() AS handled;
SELECT count(*) AS jobs, count(DISTINCT producer_id) AS schedules FROM soniq.jobs WHERE task_name LIKE 'batch.%';
SELECT count(soniq.schedule_remove(name)) AS removed FROM soniq.schedules WHERE name LIKE 'batch.%';
DELETE FROM soniq.jobs WHERE task_name LIKE 'batch.%';  -- test cleanup

-- A poisoned row fails alone: recorded on the schedule and in health, skipped to its next slot.
SELECT name FROM soniq.schedule_add('good.one', every => '1 hour');
SELECT name FROM soniq.schedule_add('bad.one', every => '1 hour');
UPDATE soniq.schedules SET args = '[]' WHERE name = 'bad.one';
UPDATE soniq.schedules SET next_fire_at = now() - interval '1 second' WHERE name IN ('good.one', 'bad.one');
SELECT soniq.fire_due_schedules() AS handled;
SELECT name, fire_count, last_error, next_fire_at > now() AS moved_on FROM soniq.schedules
 WHERE name IN ('good.one', 'bad.one') ORDER BY name;
SELECT last_error, failures FROM soniq.control_plane WHERE subsystem = 'scheduler';
-- A row whose timing cannot be evaluated any more is paused rather than retried forever.
UPDATE soniq.schedules SET cron = 'nonsense', every = NULL, next_fire_at = now() - interval '1 second' WHERE name = 'bad.one';
SELECT soniq.fire_due_schedules() AS handled;
SELECT enabled, last_error FROM soniq.schedules WHERE name = 'bad.one';

-- Each round (soniq._round_*) records itself in soniq.health, errors included, and never raises.
SELECT soniq._round_scheduler(50) AS fired;
SELECT soniq._round_prune('-1 day', 100) AS pruned;
SELECT subsystem, runs, failures, last_result, last_error, last_success_at IS NOT NULL AS succeeded_once
  FROM soniq.health WHERE subsystem IN ('scheduler', 'prune') ORDER BY subsystem;

-- rescue_jobs: a live worker's attempt that outlived its timeout by more than the grace.
SELECT soniq.register_worker() AS w \gset
SELECT soniq.enqueue('slow.job', timeout => '10 seconds', retries => 1) AS slow \gset
SELECT soniq.enqueue('fast.job', timeout => '1 hour') AS fast \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{slow.job,fast.job}', batch_size => 2);
UPDATE soniq.jobs SET started_at = now() - interval '15 seconds' WHERE id = :'slow';  -- test shortcut: time passed
SELECT soniq.rescue_jobs('5 minutes', '1 minute') AS within_grace;
SELECT soniq.rescue_jobs('5 minutes', '2 seconds') AS taken_back;
SELECT task_name, status, attempts, regexp_replace(last_error, '\d+ seconds?', 'N s', 'g') AS last_error
  FROM soniq.jobs WHERE id IN (:'slow', :'fast') ORDER BY task_name;
-- the last attempt outliving its timeout goes to the dead letter with reason timeout
SELECT attempt FROM soniq.claim(:'w', task_names => '{slow.job}');
UPDATE soniq.jobs SET started_at = now() - interval '15 seconds' WHERE id = :'slow';
SELECT soniq.rescue_jobs('5 minutes', '2 seconds') AS taken_back;
SELECT dead_letter_reason, attempts FROM soniq.dead_letter_jobs WHERE id = :'slow';
-- and stale workers are recovered in the same round
UPDATE soniq.workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = :'w';
SELECT soniq.rescue_jobs('5 minutes', '2 seconds') AS taken_back;
SELECT status FROM soniq.jobs WHERE id = :'fast';

-- prune_jobs: done jobs past their result TTL, cancelled jobs past the retention, in batches.
SELECT soniq.register_worker() AS w2 \gset
SELECT count(*) AS enqueued FROM soniq.enqueue_many('prune.me', array_fill('{}'::jsonb, ARRAY[5]));
SELECT count(*) AS completed FROM soniq.claim(:'w2', task_names => '{prune.me}', batch_size => 5) c,
       LATERAL soniq.complete(c.id, :'w2', c.attempt);
SELECT soniq.enqueue('prune.cancelled') AS pc \gset
SELECT soniq.cancel_job(:'pc');
SELECT soniq.prune_jobs('7 days', 2) AS nothing_expired_yet;
UPDATE soniq.jobs SET expires_at = now() - interval '1 second' WHERE task_name = 'prune.me';
UPDATE soniq.jobs SET finished_at = now() - interval '8 days' WHERE id = :'pc';
SELECT soniq.prune_jobs('7 days', 2, max_batches => 2) AS first_round;
SELECT soniq.prune_jobs('7 days', 2) AS second_round;
SELECT count(*) AS left FROM soniq.jobs WHERE task_name LIKE 'prune.%';

-- Bad input.
SELECT soniq.schedule_add('bad name', cron => '* * * * *');
:error
SELECT soniq.schedule_add('x.y', 'bad task', cron => '* * * * *');
:error
SELECT soniq.schedule_add('x.y', cron => '61 * * * *');
:error
SELECT soniq.schedule_add('x.y', cron => '* * * *');
:error
SELECT soniq.schedule_add('x.y', cron => '0 0 30 2 *');
:error
SELECT soniq.schedule_add('x.y');
:error
SELECT soniq.schedule_add('x.y', cron => '* * * * *', every => '1 minute');
:error
SELECT soniq.schedule_add('x.y', every => '500 milliseconds');
:error
SELECT soniq.schedule_add('x.y', every => '1 month');
:error
SELECT soniq.schedule_add('x.y', every => '-1 minute');
:error
SELECT soniq.schedule_add('x.y', cron => '* * * * *', time_zone => 'Mars/Olympus');
:error
SELECT soniq.schedule_add('x.y', cron => '* * * * *', time_zone => NULL);
:error
SELECT soniq.schedule_add('x.y', cron => '* * * * *', args => '[]');
:error
SELECT soniq.schedule_add('x.y', cron => '* * * * *', priority => 0);
:error
SELECT soniq.schedule_add('x.y', cron => '* * * * *', queue => 'no spaces');
:error
SELECT soniq.schedule_pause('no.such');
:error
SELECT soniq.schedule_resume(NULL);
:error
SELECT soniq.schedule_remove('no.such');
:error
SELECT soniq.schedule_fire('no.such');
:error
SELECT soniq.schedule_fire(NULL);
:error
SELECT soniq.cron_next('* * * * *', 'infinity');
:error
SELECT soniq.prune_jobs('7 days', 0);
:error
SELECT count(*) AS no_schedule_written FROM soniq.schedules WHERE name = 'x.y';
SELECT soniq.schedule_remove('reports.daily');
SELECT name FROM soniq.schedule_list();
