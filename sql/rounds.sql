-- Soniq SQL: the background worker's rounds: fire schedules, rescue, prune, find unserved tasks,
-- each recorded. Conventions: sql/helpers.sql.

-- _fire: enqueue the due schedules' jobs in one batch (_insert_jobs) and move each schedule to
-- its next fire time (the jobs and the new fire times commit together, so a fire time never
-- makes two jobs). A schedule that fell behind fires once, then continues from its next slot
-- after now. Returns how many schedules fired.
CREATE FUNCTION soniq._fire(due soniq.schedules[]) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    jobs soniq._job_batch;
    ids uuid[];
BEGIN
    SELECT array_agg(d.task_name ORDER BY d.ordinality), array_agg(d.args ORDER BY d.ordinality),
           array_agg(d.queue ORDER BY d.ordinality), array_agg(d.priority ORDER BY d.ordinality),
           array_agg(d.next_fire_at ORDER BY d.ordinality), array_agg(d.retries ORDER BY d.ordinality),
           array_fill(NULL::boolean, ARRAY[count(*)::int]), array_fill(NULL::text, ARRAY[count(*)::int]),
           array_agg(d.timeout ORDER BY d.ordinality), array_agg('schedule:' || d.name ORDER BY d.ordinality),
           NULL::text[]
      INTO jobs
      FROM unnest(due) WITH ORDINALITY d;
    IF jobs.task_names IS NULL THEN
        RETURN 0;
    END IF;
    ids := ARRAY(SELECT soniq._insert_jobs(jobs));
    UPDATE soniq.schedules s
       SET last_fire_at = d.next_fire_at, last_job_id = ids[d.ordinality], fire_count = s.fire_count + 1,
           next_fire_at = soniq._next_fire(d.cron, soniq._every_seconds(d.every), d.time_zone,
                                           d.next_fire_at, now()),
           updated_at = now()
      FROM unnest(due) WITH ORDINALITY d
     WHERE s.name = d.name;
    RETURN cardinality(ids);
END
$$;

-- fire_due_schedules: fire each due schedule (at most max_fires, oldest fire time first).
-- The whole batch is one _fire; if any schedule in it fails, the batch is redone one
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
        RETURN soniq._fire(ARRAY(SELECT d FROM soniq.schedules d
                                  WHERE d.enabled AND d.next_fire_at <= now()
                                  ORDER BY d.next_fire_at
                                  LIMIT max_fires
                                    FOR UPDATE SKIP LOCKED));
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
            -- Alone, a bad job is refused in enqueue's words, not as element 0 of a batch.
            PERFORM soniq._check_job(due.task_name, due.args, due.queue, due.priority, due.next_fire_at,
                                     due.retries, NULL, due.timeout, 'schedule:' || due.name);
            PERFORM soniq._fire(ARRAY[due]);
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

-- prune_jobs: delete done jobs whose result TTL has passed (but not while a job that
-- depends on them has yet to run: it reads their results) and cancelled jobs finished more
-- than retention ago (and batches finished that long ago), up to batch_size of each per batch and at most max_batches
-- batches (the control plane runs one batch per transaction), and outcome_minutes rows more
-- than two hours old. Returns how many jobs were deleted.
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
    DELETE FROM soniq.outcome_minutes m WHERE m.minute < now() - interval '2 hours';
    FOR batch IN 1..max_batches LOOP
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT d.id FROM soniq.jobs d WHERE d.status = 'done' AND d.expires_at < now()
               AND NOT (d.has_dependents AND EXISTS (
                   SELECT FROM soniq.jobs c WHERE c.depends_on && ARRAY[d.id]
                      AND c.status IN ('waiting', 'queued', 'processing')))
             ORDER BY d.expires_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS done_rows = ROW_COUNT;
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT c.id FROM soniq.jobs c WHERE c.status = 'cancelled' AND c.finished_at < now() - retention
             ORDER BY c.finished_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS cancelled_rows = ROW_COUNT;
        -- What attempts of jobs now gone recorded, and batches finished as long ago as a
        -- cancelled job is kept (neither counted in the total).
        DELETE FROM soniq.job_progress p WHERE p.job_id IN (
            SELECT q.job_id FROM soniq.job_progress q
             WHERE NOT EXISTS (SELECT FROM soniq.jobs j WHERE j.id = q.job_id)
             LIMIT batch_size FOR UPDATE SKIP LOCKED);
        DELETE FROM soniq.batches b WHERE b.id IN (
            SELECT f.id FROM soniq.batches f WHERE f.finished_at < now() - retention
             LIMIT batch_size FOR UPDATE SKIP LOCKED);
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

-- The rounds: each runs its work in a subtransaction (its BEGIN ... EXCEPTION block) and
-- records the outcome in soniq.control_plane, in one place (_round_done, _round_failed). An
-- error is recorded, never raised: the loop goes on. Each returns how much work it did.

-- _round_done: record a clean round. It clears the last error; one recorded during this round
-- (a skipped schedule or job, at now(): the same transaction) stays.
CREATE FUNCTION soniq._round_done(subsystem text, result bigint) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c
       SET last_run_at = now(), last_success_at = now(), last_result = $2, runs = c.runs + 1,
           last_error = CASE WHEN c.last_error_at = now() THEN c.last_error END,
           last_error_at = CASE WHEN c.last_error_at = now() THEN c.last_error_at END
     WHERE c.subsystem = $1;
    SELECT $2;
$$;

-- _round_failed: record a round that raised (its work rolled back); returns 0.
CREATE FUNCTION soniq._round_failed(subsystem text, message text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c
       SET last_run_at = now(), last_error = $2, last_error_at = now(), runs = c.runs + 1,
           failures = c.failures + 1
     WHERE c.subsystem = $1;
    SELECT 0::bigint;
$$;

-- _round_scheduler: fire up to batch_size due schedules.
CREATE FUNCTION soniq._round_scheduler(batch_size int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('scheduler', soniq.fire_due_schedules(batch_size));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('scheduler', message);
END
$$;

-- _round_rescue: take back the jobs of dead workers and of expired leases.
CREATE FUNCTION soniq._round_rescue(heartbeat_timeout interval, lease_grace interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('rescue', soniq.rescue_jobs(heartbeat_timeout, lease_grace));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('rescue', message);
END
$$;

-- _round_prune: delete one batch of finished jobs past their retention.
CREATE FUNCTION soniq._round_prune(retention interval, batch_size int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('prune', soniq.prune_jobs(retention, batch_size, max_batches => 1));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('prune', message);
END
$$;

-- _round_unserved: find the tasks no live worker serves (check_unserved).
CREATE FUNCTION soniq._round_unserved(grace interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('unserved', soniq.check_unserved(grace));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('unserved', message);
END
$$;
