-- Soniq 0.9.0 -> 0.10.0: the read-only role soniq_viewer, and two views any login below a
-- superuser could not read as they were.
-- * health: pg_stat_activity hides backend_type from a login without pg_read_all_stats, so such
--   an admin saw the control plane dead; it now sees it alive by its pid.
-- * queue_limits: a view calls functions with its reader's rights, and the helpers it called
--   (_limited, _queue_settings) are granted to nobody; it writes them out.
-- Then the privileges as a fresh install sets them (sql/privileges.sql), which create
-- soniq_viewer if missing and grant it its reads.

-- health: is the control plane alive and keeping up? One row per subsystem.
-- lag: control_plane (the background worker itself), time since its last round; scheduler, how late the most overdue schedule
-- is; rescue, time since its last successful round; prune, age of the oldest done job
-- past its result TTL; unserved, how long the longest-unserved task has waited for a worker
-- (soniq.unserved lists them). alive: the control plane's process runs; a login that may not
-- read other sessions' details (not a superuser or pg_read_all_stats) sees its pid only.
CREATE OR REPLACE VIEW soniq.health AS
SELECT c.subsystem,
       EXISTS (SELECT FROM pg_stat_activity a
                WHERE a.pid = w.pid
                  AND (a.backend_type = 'soniq control plane' OR a.backend_type IS NULL)) AS alive,
       c.pid, c.started_at, c.last_run_at, c.last_success_at, c.last_result, c.last_error,
       c.last_error_at, c.runs, c.failures,
       CASE c.subsystem
           WHEN 'control_plane' THEN now() - c.last_run_at
           WHEN 'scheduler' THEN coalesce((SELECT now() - min(s.next_fire_at) FROM soniq.schedules s
                                            WHERE s.enabled AND s.next_fire_at <= now()), interval '0')
           WHEN 'rescue' THEN now() - c.last_success_at
           WHEN 'prune' THEN coalesce((SELECT now() - min(j.expires_at) FROM soniq.jobs j
                                        WHERE j.status = 'done' AND j.expires_at < now()), interval '0')
           WHEN 'unserved' THEN coalesce((SELECT now() - min(u.since) FROM soniq.unserved u), interval '0')
       END AS lag
  FROM soniq.control_plane c
  CROSS JOIN (SELECT pid FROM soniq.control_plane WHERE subsystem = 'control_plane') w;

-- queue_limits: each queue with flow control, its settings, what it uses now, its runnable
-- jobs and how many of them wait because a limit is reached (all of them while it is). One row
-- per queue (concurrency_key NULL), then one per concurrency key with jobs queued or processing
-- in a queue with per-key limits or fair share.
-- The view writes out _limited and _queue_settings: a view calls functions with its reader's
-- rights, and the helpers are granted to nobody (an admin or viewer reading it was refused).
CREATE OR REPLACE VIEW soniq.queue_limits AS
WITH limited AS (
    SELECT q.* FROM soniq.queues q
     WHERE q.max_running IS NOT NULL OR q.max_running_per_key IS NOT NULL
        OR q.rate_limit IS NOT NULL OR q.rate_limit_per_key IS NOT NULL OR q.fair_share
        OR q.priority_aging IS NOT NULL
), queue_use AS (
    SELECT q.name AS queue, NULL::text AS concurrency_key,
           jsonb_strip_nulls(jsonb_build_object(
               'max_running', q.max_running, 'max_running_per_key', q.max_running_per_key,
               'rate_limit', q.rate_limit, 'rate_limit_per_key', q.rate_limit_per_key,
               'rate_period', extract(epoch FROM q.rate_period)::int,
               'fair_share', CASE WHEN q.fair_share THEN true END, 'key_weights', q.key_weights,
               'priority_aging', extract(epoch FROM q.priority_aging)::int)) AS settings,
           (SELECT count(*) FROM soniq.jobs j WHERE j.queue = q.name AND j.status = 'processing') AS running,
           (SELECT coalesce(sum(s.jobs), 0) FROM soniq.queue_starts s
             WHERE s.queue = q.name AND s.started_at > now() - q.rate_period) AS started_in_window,
           (SELECT count(*) FROM soniq.jobs j WHERE j.queue = q.name AND j.status = 'queued'
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())) AS runnable,
           q.max_running AS running_limit, q.rate_limit AS start_limit
      FROM limited q
), key_use AS (
    SELECT k.queue, k.key AS concurrency_key, NULL::jsonb AS settings, k.running,
           (SELECT coalesce(sum(s.jobs), 0) FROM soniq.queue_starts s
             WHERE s.queue = k.queue AND s.concurrency_key = k.key AND s.started_at > now() - k.rate_period
               AND k.start_limit IS NOT NULL) AS started_in_window,
           k.runnable, k.running_limit, k.start_limit
      FROM (SELECT q.name AS queue, j.concurrency_key AS key, q.rate_period,
                   q.max_running_per_key AS running_limit, q.rate_limit_per_key AS start_limit,
                   count(*) FILTER (WHERE j.status = 'processing') AS running,
                   count(*) FILTER (WHERE j.status = 'queued' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()))
                       AS runnable
              FROM limited q
              JOIN soniq.jobs j ON j.queue = q.name AND j.status IN ('queued', 'processing')
             WHERE q.max_running_per_key IS NOT NULL OR q.rate_limit_per_key IS NOT NULL OR q.fair_share
             GROUP BY 1, 2, 3, 4, 5) k
)
SELECT u.queue, u.concurrency_key, u.settings, u.running, u.started_in_window, u.runnable,
       CASE WHEN u.running >= u.running_limit OR u.started_in_window >= u.start_limit THEN u.runnable ELSE 0 END
           AS waiting_for_limit
  FROM (SELECT * FROM queue_use UNION ALL SELECT * FROM key_use) u;

-- Privileges as a fresh install sets them (sql/privileges.sql).
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['soniq_producer', 'soniq_worker', 'soniq_admin', 'soniq_viewer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
    IF NOT pg_catalog.pg_has_role('soniq_worker', 'soniq_producer', 'MEMBER') THEN
        GRANT soniq_producer TO soniq_worker;
    END IF;
    IF NOT pg_catalog.pg_has_role('soniq_admin', 'soniq_worker', 'MEMBER') THEN
        GRANT soniq_worker TO soniq_admin;
    END IF;
    IF NOT pg_catalog.pg_has_role('soniq_admin', 'soniq_viewer', 'MEMBER') THEN
        GRANT soniq_viewer TO soniq_admin;
    END IF;
END
$$;

-- The API: every function whose name does not start with "_". Its SQL and PL/pgSQL
-- functions run with their owner's rights and a pinned search_path; soniq_admin may call all.
DO $$
DECLARE
    api regprocedure;
    language name;
BEGIN
    FOR api, language IN
        SELECT p.oid, l.lanname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'soniq'::regnamespace AND p.proname NOT LIKE '\_%' AND p.prokind = 'f'
    LOOP
        IF language IN ('sql', 'plpgsql') THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', api);
        END IF;
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO soniq_admin', api);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA soniq FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA soniq FROM PUBLIC;
GRANT USAGE ON SCHEMA soniq TO soniq_producer, soniq_worker, soniq_admin, soniq_viewer;

GRANT EXECUTE ON FUNCTION
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text, uuid[], text, boolean, uuid),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text),
    soniq.job_status(uuid),
    soniq.job_result(uuid),  -- the outcome of a job its login enqueued, which it may await
    soniq.batch_open(text, jsonb, text),  -- batches of its login's jobs, with a callback
    soniq.batch_close(uuid),
    soniq.batch_status(uuid)
TO soniq_producer;

GRANT EXECUTE ON FUNCTION
    soniq.register_task(text, jsonb),  -- a worker publishes its handlers' options
    soniq.register_worker(text, int, text[], int, text, jsonb, text[]),
    soniq.heartbeat(uuid),
    soniq.heartbeat(uuid, uuid[], interval),
    soniq.deregister_worker(uuid),
    soniq.claim(uuid, text[], int, text[]),
    soniq.complete(uuid, uuid, int, jsonb),
    soniq.complete_many(uuid[], uuid, int[], jsonb[]),
    soniq.fail(uuid, uuid, int, text, interval, text),
    soniq.fail_many(uuid[], uuid, int[], text[], interval[], text[]),
    soniq.snooze(uuid, uuid, int, interval, text),
    soniq.abort(uuid, uuid, int, text),
    soniq.dependency_results(uuid, uuid, int),  -- a handler reads the results of the jobs it depends on
    soniq.report_progress(uuid, uuid, int, jsonb),
    soniq.save_checkpoint(uuid, uuid, int, jsonb),
    soniq.read_checkpoint(uuid, uuid, int),
    soniq.held_back(text[], text[])
TO soniq_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_admin;

-- soniq_viewer reads what an operator's screens show, and changes nothing.
GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_viewer;
GRANT EXECUTE ON FUNCTION
    soniq.get_job(uuid),
    soniq.list_jobs(text, text, int, int),
    soniq.queue_stats(text),
    soniq.dead_letter_get(uuid),
    soniq.dead_letter_list(text, text, text, timestamptz, timestamptz, text[], boolean, int, int),
    soniq.dead_letter_stats(interval),
    soniq.schedule_get(text),
    soniq.schedule_list(boolean)
TO soniq_viewer;

-- await_job runs with the caller's rights (a procedure that commits cannot be SECURITY
-- DEFINER) and reads only through job_result.
GRANT EXECUTE ON PROCEDURE soniq.await_job(uuid, interval, text, jsonb, text) TO soniq_producer, soniq_admin;
