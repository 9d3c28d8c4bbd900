-- Soniq control plane: schedules, and the rounds the background worker runs
-- (fire due schedules, take back jobs, prune). Each round is callable from psql too.
-- Conventions as in api.sql.

------------------------------------------------------------------------------------------
-- Schedules
------------------------------------------------------------------------------------------

-- _every_seconds: a schedule's interval as seconds; months and years are refused, since
-- their length varies (a cron expression says "monthly" exactly).
CREATE FUNCTION soniq._every_seconds(every interval) RETURNS float8
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF extract(month FROM every) <> 0 OR extract(year FROM every) <> 0 THEN
        RAISE EXCEPTION 'every must be a fixed duration, got %', every
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use days, hours, minutes or seconds, or a cron expression such as ''0 0 1 * *''.';
    END IF;
    RETURN extract(epoch FROM every);
END
$$;

-- _wake_control_plane: wake the background worker when this transaction commits.
CREATE FUNCTION soniq._wake_control_plane() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT soniq._wake_control_plane_at_commit(c.pid)
      FROM soniq.control_plane c
     WHERE c.subsystem = 'worker' AND c.pid IS NOT NULL
$$;

-- schedule_add: create or update (by name) a periodic job. Exactly one of cron (5 fields,
-- in time_zone) and every (a fixed interval of 1 second to 365 days). task_name defaults to
-- the schedule's name; queue, priority, retries and timeout default like enqueue's.
-- Re-adding with the same timing keeps the next fire time, so redeploys do not delay it.
CREATE FUNCTION soniq.schedule_add(
    name      text,
    task_name text     DEFAULT NULL,
    cron      text     DEFAULT NULL,
    every     interval DEFAULT NULL,
    args      jsonb    DEFAULT '{}',
    time_zone text     DEFAULT 'UTC',
    queue     text     DEFAULT NULL,
    priority  int      DEFAULT NULL,
    retries   int      DEFAULT NULL,
    timeout   interval DEFAULT NULL,
    enabled   boolean  DEFAULT true
) RETURNS soniq.schedules
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    row_out soniq.schedules;
    every_seconds float8;
BEGIN
    PERFORM soniq.check_schedule_name(name);
    PERFORM soniq.check_task_name(coalesce(schedule_add.task_name, name));
    PERFORM soniq._check_args(args);
    PERFORM soniq._require(time_zone, 'time_zone');
    PERFORM soniq._require(enabled, 'enabled');
    IF schedule_add.queue IS NOT NULL THEN
        PERFORM soniq.check_queue_name(schedule_add.queue);
    END IF;
    PERFORM soniq._check_job_options(schedule_add.priority, schedule_add.retries, schedule_add.timeout);
    PERFORM soniq._check_interval(schedule_add.every, 'every', interval '365 days');
    every_seconds := soniq._every_seconds(schedule_add.every);
    PERFORM soniq._check_schedule(schedule_add.cron, every_seconds, time_zone);

    INSERT INTO soniq.schedules AS s (name, task_name, args, cron, every, time_zone, queue, priority,
                                      retries, timeout, enabled, next_fire_at)
    VALUES (name, coalesce(schedule_add.task_name, name), args, schedule_add.cron, schedule_add.every,
            time_zone, schedule_add.queue, schedule_add.priority, schedule_add.retries,
            schedule_add.timeout, enabled,
            CASE WHEN enabled THEN soniq._next_fire(schedule_add.cron, every_seconds, time_zone, NULL, now()) END)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
       SET task_name = excluded.task_name, args = excluded.args, cron = excluded.cron,
           every = excluded.every, time_zone = excluded.time_zone, queue = excluded.queue,
           priority = excluded.priority, retries = excluded.retries, timeout = excluded.timeout,
           enabled = excluded.enabled, updated_at = now(),
           next_fire_at = CASE
               WHEN NOT excluded.enabled THEN NULL
               WHEN s.enabled AND s.cron IS NOT DISTINCT FROM excluded.cron
                    AND s.every IS NOT DISTINCT FROM excluded.every
                    AND s.time_zone = excluded.time_zone THEN s.next_fire_at
               ELSE excluded.next_fire_at END
    RETURNING s.* INTO row_out;
    PERFORM soniq._wake_control_plane();
    RETURN row_out;
END
$$;

-- _schedule: the named schedule, locked; P0002 when there is none.
CREATE FUNCTION soniq._schedule(name text) RETURNS soniq.schedules
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_row soniq.schedules;
BEGIN
    PERFORM soniq._require(name, 'name');
    SELECT * INTO found_row FROM soniq.schedules s WHERE s.name = _schedule.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schedule % does not exist', name USING ERRCODE = 'no_data_found';
    END IF;
    RETURN found_row;
END
$$;

-- schedule_pause: stop firing. Returns whether this call changed the state.
CREATE FUNCTION soniq.schedule_pause(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT (soniq._schedule(name)).enabled THEN
        RETURN false;
    END IF;
    UPDATE soniq.schedules s SET enabled = false, next_fire_at = NULL, updated_at = now()
     WHERE s.name = schedule_pause.name;
    RETURN true;
END
$$;

-- schedule_resume: fire again, from the next fire time after now (no backlog of the pause).
CREATE FUNCTION soniq.schedule_resume(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current soniq.schedules := soniq._schedule(name);
BEGIN
    IF current.enabled THEN
        RETURN false;
    END IF;
    UPDATE soniq.schedules s
       SET enabled = true, updated_at = now(),
           next_fire_at = soniq._next_fire(s.cron, soniq._every_seconds(s.every), s.time_zone, NULL, now())
     WHERE s.name = schedule_resume.name;
    PERFORM soniq._wake_control_plane();
    RETURN true;
END
$$;

-- schedule_remove: delete a schedule (jobs it already made stay).
CREATE FUNCTION soniq.schedule_remove(name text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._schedule(name);
    DELETE FROM soniq.schedules s WHERE s.name = schedule_remove.name;
END
$$;

-- schedule_get: one schedule; no row when unknown.
CREATE FUNCTION soniq.schedule_get(name text) RETURNS SETOF soniq.schedules
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.schedules s WHERE s.name = $1
$$;

-- schedule_list: all schedules by name, or only enabled (true) or paused (false) ones.
CREATE FUNCTION soniq.schedule_list(enabled boolean DEFAULT NULL) RETURNS SETOF soniq.schedules
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.schedules s WHERE $1 IS NULL OR s.enabled = $1 ORDER BY s.name
$$;

------------------------------------------------------------------------------------------
-- The background worker's rounds
------------------------------------------------------------------------------------------

-- _fire: enqueue a due schedule's job and move the schedule to its next fire time (the job
-- and the new fire time commit together, so a fire time never makes two jobs). A schedule
-- that fell behind fires once, then continues from its next slot after now.
CREATE FUNCTION soniq._fire(due soniq.schedules) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job_id uuid;
BEGIN
    job_id := soniq.enqueue(due.task_name, due.args, due.queue, due.priority, due.next_fire_at,
                            due.retries, NULL, NULL, due.timeout, 'schedule:' || due.name);
    UPDATE soniq.schedules s
       SET last_fire_at = due.next_fire_at, last_job_id = job_id, fire_count = s.fire_count + 1,
           next_fire_at = soniq._next_fire(due.cron, soniq._every_seconds(due.every), due.time_zone,
                                           due.next_fire_at, now()),
           updated_at = now()
     WHERE s.name = due.name;
END
$$;

-- fire_due_schedules: fire each due schedule (at most max_fires, oldest fire time first).
-- The whole batch is one statement; if any schedule in it fails, the batch is redone one
-- schedule at a time (each in a subtransaction, at most 50: more would overflow the
-- subtransaction cache and slow every snapshot), the failing fire recorded on its schedule
-- and skipped, a schedule whose next fire time cannot be computed paused. Returns how many
-- schedules it handled.
CREATE FUNCTION soniq.fire_due_schedules(max_fires int DEFAULT 1000) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due soniq.schedules;
    handled int := 0;
    message text;
BEGIN
    BEGIN
        PERFORM soniq._fire(s) FROM soniq.schedules s
         WHERE s.name IN (SELECT d.name FROM soniq.schedules d
                           WHERE d.enabled AND d.next_fire_at <= now()
                           ORDER BY d.next_fire_at
                           LIMIT max_fires
                             FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS handled = ROW_COUNT;
        RETURN handled;
    EXCEPTION WHEN OTHERS THEN
        NULL; -- a schedule in the batch failed: find it below
    END;

    FOR due IN
        SELECT * FROM soniq.schedules s
         WHERE s.enabled AND s.next_fire_at <= now()
         ORDER BY s.next_fire_at
         LIMIT least(max_fires, 50)
           FOR UPDATE SKIP LOCKED
    LOOP
        handled := handled + 1;
        BEGIN
            PERFORM soniq._fire(due);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            PERFORM soniq._schedule_failed(due, message);
        END;
    END LOOP;
    RETURN handled;
END
$$;

-- _schedule_failed: record a failed fire on the schedule and in the health view, and move
-- the schedule past this fire time (or pause it, if even that fails).
CREATE FUNCTION soniq._schedule_failed(due soniq.schedules, message text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE soniq.control_plane c
       SET last_error = format('schedule %s: %s', due.name, message), last_error_at = now(),
           failures = c.failures + 1
     WHERE c.subsystem = 'scheduler';
    BEGIN
        UPDATE soniq.schedules s
           SET last_error = message, last_error_at = now(), updated_at = now(),
               next_fire_at = soniq._next_fire(due.cron, soniq._every_seconds(due.every), due.time_zone,
                                               due.next_fire_at, now())
         WHERE s.name = due.name;
    EXCEPTION WHEN OTHERS THEN
        UPDATE soniq.schedules s
           SET last_error = message || ' (paused: its next fire time cannot be computed)',
               last_error_at = now(), enabled = false, next_fire_at = NULL, updated_at = now()
         WHERE s.name = due.name;
    END;
END
$$;

-- _rescue: the rescue round in one go (see rescue_jobs).
CREATE FUNCTION soniq._rescue(heartbeat_timeout interval, lease_grace interval) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken int;
    expired soniq.jobs;
BEGIN
    taken := soniq.recover_stale_workers(heartbeat_timeout);
    FOR expired IN
        SELECT * FROM soniq.jobs j
         WHERE j.status = 'processing' AND j.timeout IS NOT NULL
           AND j.started_at + j.timeout + lease_grace < now()
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM soniq._expire(expired, lease_grace);
        taken := taken + 1;
    END LOOP;
    RETURN taken;
END
$$;

-- _expire: fail an attempt that outlived its timeout by more than lease_grace (reason timeout).
CREATE FUNCTION soniq._expire(expired soniq.jobs, lease_grace interval) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT soniq._fail(expired.id, expired.worker_id, expired.attempts,
                       format('attempt %s outlived its timeout of %s by more than %s and was taken back',
                              expired.attempts, expired.timeout, lease_grace),
                       NULL, 'timeout')
$$;

-- rescue_jobs: take back the jobs of workers silent for longer than heartbeat_timeout
-- (recover_stale_workers), and attempts that outlived their job's timeout by more than
-- lease_grace (failed with reason timeout: retried, or dead-lettered if it was the last).
-- One job that cannot be taken back does not stop the others: if the round fails, it is
-- redone one job at a time (each in a subtransaction, at most 50 a round, like
-- fire_due_schedules), the failing job's error recorded in soniq.health and the job skipped.
-- Returns how many jobs were taken back.
CREATE FUNCTION soniq.rescue_jobs(heartbeat_timeout interval DEFAULT '5 minutes',
                                  lease_grace interval DEFAULT '1 minute') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken int := 0;
    due soniq.jobs;
    message text;
BEGIN
    PERFORM soniq._require(heartbeat_timeout, 'heartbeat_timeout');
    PERFORM soniq._require(lease_grace, 'lease_grace');
    PERFORM soniq._check_interval(lease_grace, 'lease_grace', interval '7 days');
    BEGIN
        RETURN soniq._rescue(heartbeat_timeout, lease_grace);
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- a job in the round failed: find it below
    END;

    -- The stale workers go first (a plain delete), then their jobs and the expired ones.
    PERFORM soniq._forget_stale_workers(heartbeat_timeout);
    FOR due IN
        SELECT * FROM soniq.jobs j
         WHERE j.status = 'processing'
           AND (NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = j.worker_id)
                OR (j.timeout IS NOT NULL AND j.started_at + j.timeout + lease_grace < now()))
         ORDER BY j.started_at
         LIMIT 50
           FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            IF EXISTS (SELECT FROM soniq.workers w WHERE w.id = due.worker_id) THEN
                PERFORM soniq._expire(due, lease_grace);
            ELSE
                PERFORM soniq._take_back(ARRAY[due.worker_id], 'its worker stopped heartbeating', ARRAY[due.id]);
            END IF;
            taken := taken + 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            UPDATE soniq.control_plane c
               SET last_error = format('job %s: %s', due.id, message), last_error_at = now(),
                   failures = c.failures + 1
             WHERE c.subsystem = 'rescue';
        END;
    END LOOP;
    RETURN taken;
END
$$;

-- prune_jobs: delete done jobs whose result TTL has passed and cancelled jobs finished
-- more than retention ago, up to batch_size of each per batch and at most max_batches
-- batches (the control plane runs one batch per transaction). Returns how many were deleted.
CREATE FUNCTION soniq.prune_jobs(retention interval DEFAULT '7 days', batch_size int DEFAULT 1000,
                                 max_batches int DEFAULT 10) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    done_rows int;
    cancelled_rows int;
    total bigint := 0;
BEGIN
    PERFORM soniq._require(retention, 'retention');
    PERFORM soniq._check_interval(retention, 'retention', interval '100 years');
    IF batch_size IS NULL OR batch_size < 1 OR max_batches IS NULL OR max_batches < 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR batch IN 1..max_batches LOOP
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT d.id FROM soniq.jobs d WHERE d.status = 'done' AND d.expires_at < now()
             ORDER BY d.expires_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS done_rows = ROW_COUNT;
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT c.id FROM soniq.jobs c WHERE c.status = 'cancelled' AND c.finished_at < now() - retention
             ORDER BY c.finished_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS cancelled_rows = ROW_COUNT;
        total := total + done_rows + cancelled_rows;
        EXIT WHEN done_rows < batch_size AND cancelled_rows < batch_size;
    END LOOP;
    RETURN total;
END
$$;

-- check_unserved: find the tasks and queues whose queued jobs no live worker serves (no
-- worker has the task name among its task_names, or none takes jobs from the queue) and
-- record since when, in soniq.unserved (shown by queue_overview and soniq.health): a typo in
-- a task name is seen within a tick instead of waiting forever. Their due jobs go to the dead
-- letter as job_not_found once unserved for longer than grace (0: never), and only while
-- some worker is alive: with no worker at all nothing is served, and nothing is buried.
-- Buries at most 1,000 jobs a call; returns how many.
CREATE FUNCTION soniq.check_unserved(grace interval DEFAULT '1 day') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    pair soniq.unserved;
    ids uuid[];
    buried int := 0;
BEGIN
    PERFORM soniq._require(grace, 'grace');
    PERFORM soniq._check_interval(grace, 'grace', interval '30 days');
    WITH RECURSIVE queued AS (  -- each (task, queue) with queued jobs: one index probe each
        (SELECT j.task_name, j.queue FROM soniq.jobs j WHERE j.status = 'queued'
          ORDER BY j.task_name, j.queue LIMIT 1)
        UNION ALL
        SELECT later.task_name, later.queue FROM queued q CROSS JOIN LATERAL (
            SELECT j.task_name, j.queue FROM soniq.jobs j
             WHERE j.status = 'queued' AND (j.task_name, j.queue) > (q.task_name, q.queue)
             ORDER BY j.task_name, j.queue LIMIT 1) later
    ), nobody AS (
        SELECT q.task_name, q.queue FROM queued q
         WHERE NOT EXISTS (SELECT FROM soniq.workers w
                            WHERE (w.task_names IS NULL OR q.task_name = ANY (w.task_names))
                              AND (w.queues IS NULL OR q.queue = ANY (w.queues)))
    ), served_again AS (
        DELETE FROM soniq.unserved u
         WHERE NOT EXISTS (SELECT FROM nobody n WHERE n.task_name = u.task_name AND n.queue = u.queue)
    )
    INSERT INTO soniq.unserved (task_name, queue)
    SELECT n.task_name, n.queue FROM nobody n
    ON CONFLICT ON CONSTRAINT unserved_pkey DO NOTHING;

    IF grace = interval '0' OR NOT EXISTS (SELECT FROM soniq.workers) THEN
        RETURN 0;
    END IF;
    FOR pair IN SELECT * FROM soniq.unserved u WHERE u.since < now() - grace ORDER BY u.since LOOP
        SELECT array_agg(j.id) INTO ids FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.task_name = pair.task_name AND j.queue = pair.queue
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
             LIMIT 1000 - buried
               FOR UPDATE SKIP LOCKED) j;
        buried := buried + soniq._bury(coalesce(ids, '{}'), 'job_not_found',
                                       format('no live worker served task %s in queue %s for %s', pair.task_name,
                                              pair.queue, grace));
        EXIT WHEN buried >= 1000;
    END LOOP;
    RETURN buried;
END
$$;

-- _run_subsystem: one round of one subsystem in a subtransaction, its outcome recorded in
-- soniq.control_plane. An error is recorded, never raised: the loop goes on.
CREATE FUNCTION soniq._run_subsystem(subsystem text, heartbeat_timeout interval, lease_grace interval,
                                     retention interval, batch_size int,
                                     unserved_grace interval DEFAULT '1 day') RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    result bigint;
    message text;
BEGIN
    BEGIN
        result := CASE subsystem
            WHEN 'scheduler' THEN soniq.fire_due_schedules(batch_size)
            WHEN 'rescue' THEN soniq.rescue_jobs(heartbeat_timeout, lease_grace)
            WHEN 'prune' THEN soniq.prune_jobs(retention, batch_size, max_batches => 1)
            WHEN 'unserved' THEN soniq.check_unserved(unserved_grace)
        END;
        -- A clean round clears the last error; one recorded during this round (a skipped
        -- schedule or job, at now(): the same transaction) stays.
        UPDATE soniq.control_plane c
           SET last_run_at = now(), last_success_at = now(), last_result = result, runs = c.runs + 1,
               last_error = CASE WHEN c.last_error_at = now() THEN c.last_error END,
               last_error_at = CASE WHEN c.last_error_at = now() THEN c.last_error_at END
         WHERE c.subsystem = _run_subsystem.subsystem;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        UPDATE soniq.control_plane c
           SET last_run_at = now(), last_error = message, last_error_at = now(), runs = c.runs + 1,
               failures = c.failures + 1
         WHERE c.subsystem = _run_subsystem.subsystem;
        result := 0;
    END;
    RETURN result;
END
$$;

-- _control_plane_started: the background worker announces itself.
CREATE FUNCTION soniq._control_plane_started(pid int) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET pid = $1, started_at = now(), last_run_at = now()
     WHERE c.subsystem = 'worker'
$$;

-- _control_plane_round_done: the worker finished a round. Returns the seconds until the
-- next schedule is due (NULL when none is), so the worker sleeps no longer than that.
CREATE FUNCTION soniq._control_plane_round_done() RETURNS float8
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET last_run_at = now(), last_success_at = now(), runs = c.runs + 1
     WHERE c.subsystem = 'worker';
    SELECT extract(epoch FROM min(s.next_fire_at) - clock_timestamp())::float8
      FROM soniq.schedules s WHERE s.enabled;
$$;

-- health: is the control plane alive and keeping up? One row per subsystem.
-- lag: worker, time since its last round; scheduler, how late the most overdue schedule
-- is; rescue, time since its last successful round; prune, age of the oldest done job
-- past its result TTL; unserved, how long the longest-unserved task has waited for a worker
-- (soniq.unserved lists them).
CREATE VIEW soniq.health AS
SELECT c.subsystem,
       EXISTS (SELECT FROM pg_stat_activity a
                WHERE a.pid = w.pid AND a.backend_type = 'soniq control plane') AS alive,
       c.pid, c.started_at, c.last_run_at, c.last_success_at, c.last_result, c.last_error,
       c.last_error_at, c.runs, c.failures,
       CASE c.subsystem
           WHEN 'worker' THEN now() - c.last_run_at
           WHEN 'scheduler' THEN coalesce((SELECT now() - min(s.next_fire_at) FROM soniq.schedules s
                                            WHERE s.enabled AND s.next_fire_at <= now()), interval '0')
           WHEN 'rescue' THEN now() - c.last_success_at
           WHEN 'prune' THEN coalesce((SELECT now() - min(j.expires_at) FROM soniq.jobs j
                                        WHERE j.status = 'done' AND j.expires_at < now()), interval '0')
           WHEN 'unserved' THEN coalesce((SELECT now() - min(u.since) FROM soniq.unserved u), interval '0')
       END AS lag
  FROM soniq.control_plane c
  CROSS JOIN (SELECT pid FROM soniq.control_plane WHERE subsystem = 'worker') w;
