-- Managing jobs: cancel, delete, lookups, listing, statistics, views.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker() AS w \gset

-- cancel_job: a queued job never runs.
SELECT soniq.enqueue('m.cancel_me') AS c \gset
SELECT soniq.cancel_job(:'c') AS cancelled;
SELECT status, finished_at IS NOT NULL AS finished FROM soniq.jobs WHERE id = :'c';
SELECT count(*) AS claimable FROM soniq.claim(:'w', task_names => '{m.cancel_me}');
SELECT soniq.cancel_job(:'c') AS cancelled_twice;
-- a finished job cannot be cancelled
SELECT soniq.enqueue('m.done') AS d \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{m.done}');
SELECT soniq.complete(:'d', :'w', 1, '42');
SELECT soniq.cancel_job(:'d') AS cancel_done;

-- get_job: live and dead jobs; no row for an unknown id.
SELECT task_name, status, result, attempts, dead_letter_reason FROM soniq.get_job(:'d');
SELECT soniq.enqueue('m.dies', retries => 0) AS x \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{m.dies}');
SELECT soniq.fail(:'x', :'w', 1, 'fatal');
SELECT task_name, status, last_error, dead_letter_reason, attempts, max_attempts FROM soniq.get_job(:'x');
SELECT count(*) AS unknown FROM soniq.get_job(soniq.uuid_v7());

-- delete_job removes a job in any state; a processing job's lease goes with it.
SELECT soniq.enqueue('m.delete_me') AS del \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{m.delete_me}');
SELECT soniq.delete_job(:'del');
SELECT count(*) AS left_behind FROM soniq.jobs WHERE id = :'del';
SELECT soniq.complete(:'del', :'w', 1);
:error
SELECT soniq.delete_job(:'x');  -- a dead job is deleted with dead_letter_delete
:error

-- list_jobs: newest first, filtered by queue and status, paged.
SELECT count(*) AS enqueued FROM soniq.enqueue_many('m.page', ARRAY['{"n":1}','{"n":2}','{"n":3}','{"n":4}']::jsonb[], queue => 'pages');
SELECT args->>'n' AS n FROM soniq.list_jobs(queue => 'pages', row_limit => 2);
SELECT args->>'n' AS n FROM soniq.list_jobs(queue => 'pages', row_limit => 2, row_offset => 2);
SELECT task_name, status FROM soniq.list_jobs(status => 'cancelled');
SELECT count(*) AS done_jobs FROM soniq.list_jobs(status => 'done');

-- queue_stats: one queue or all.
SELECT * FROM soniq.queue_stats('pages');
SELECT * FROM soniq.queue_stats();
SELECT * FROM soniq.queue_stats('no_such_queue');

-- queue_overview: one row per queue.
SELECT soniq.enqueue('m.later', queue => 'pages', scheduled_at => now() + interval '1 day') IS NOT NULL AS later;
SELECT soniq.pause_queue('pages');
SELECT queue, paused, runnable, scheduled, processing, done, cancelled, dead, oldest_runnable_since IS NOT NULL AS has_oldest
  FROM soniq.queue_overview ORDER BY queue;
