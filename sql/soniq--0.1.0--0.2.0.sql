-- soniq 0.1.0 -> 0.2.0
--   * job ids (uuid_v7) and wake-ups (_wake, now throttled at commit) made in Rust;
--   * the control plane fires due schedules in batches of 1,000 (fire_due_schedules) and prunes
--     one batch per transaction, due schedules first between batches (_run_subsystem);
--   * args limited to 1 MiB (_check_args, in enqueue and schedule_add); claim and list_jobs
--     refuse malformed queue and task names instead of matching nothing;
--   * roles soniq_producer, soniq_worker and soniq_admin; the API runs SECURITY DEFINER with a
--     pinned search_path (the privileges part below is sql/privileges.sql, verbatim);
--   * job_status for producers;
--   * heartbeat(worker_id, running, grace) takes back jobs a live worker lost track of.
-- Tables are unchanged. tests/survival.rs checks that an updated database equals a fresh install.

CREATE OR REPLACE FUNCTION soniq.uuid_v7() RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'uuid_v7_wrapper';

-- _take_back gained a third argument (the jobs to take back).
DROP FUNCTION soniq._take_back(uuid[], text);

CREATE OR REPLACE FUNCTION soniq._wake(queue text) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'wake_wrapper';

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

CREATE OR REPLACE FUNCTION soniq.dead_letter_list(
    task_name    text        DEFAULT NULL,
    queue        text        DEFAULT NULL,
    reason       text        DEFAULT NULL,
    moved_after  timestamptz DEFAULT NULL,
    moved_before timestamptz DEFAULT NULL,
    tags         text[]      DEFAULT NULL,
    replayed     boolean     DEFAULT NULL,
    row_limit    int         DEFAULT 100,
    row_offset   int         DEFAULT 0
) RETURNS SETOF soniq.dead_letter_jobs
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM soniq._check_filter(dead_letter_list.tags, 'tags');
    IF row_limit IS NULL OR row_limit NOT BETWEEN 1 AND 10000 OR row_offset IS NULL OR row_offset < 0 THEN
        RAISE EXCEPTION 'row_limit must be between 1 and 10000 and row_offset at least 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT d.* FROM soniq.dead_letter_jobs d
     WHERE (dead_letter_list.task_name IS NULL OR d.task_name = dead_letter_list.task_name)
       AND (dead_letter_list.queue IS NULL OR d.queue = dead_letter_list.queue)
       AND (dead_letter_list.reason IS NULL OR d.dead_letter_reason = dead_letter_list.reason)
       AND (moved_after IS NULL OR d.moved_to_dead_letter_at >= moved_after)
       AND (moved_before IS NULL OR d.moved_to_dead_letter_at < moved_before)
       AND (dead_letter_list.tags IS NULL OR d.tags @> dead_letter_list.tags)
       AND (replayed IS NULL OR (d.resurrection_count > 0) = replayed)
     ORDER BY d.moved_to_dead_letter_at DESC, d.id DESC
     LIMIT row_limit OFFSET row_offset;
END
$$;

CREATE OR REPLACE FUNCTION soniq.dead_letter_tag(dead_job_id uuid, tags text[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    result text[];
BEGIN
    PERFORM soniq._require(dead_job_id, 'dead_job_id');
    PERFORM soniq._require(tags, 'tags');
    PERFORM soniq._check_filter(tags, 'tags');
    IF EXISTS (SELECT FROM unnest(tags) t WHERE t = '') THEN
        RAISE EXCEPTION 'tags must not be empty strings' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE soniq.dead_letter_jobs d
       SET tags = ARRAY(SELECT DISTINCT t FROM unnest(d.tags || dead_letter_tag.tags) t ORDER BY t)
     WHERE d.id = dead_job_id
    RETURNING d.tags INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead job % does not exist', dead_job_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN result;
END
$$;

CREATE OR REPLACE FUNCTION soniq.dead_letter_stats(since interval DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM soniq._check_interval(since, 'since');
    RETURN (
    WITH dead AS (  -- only the columns counted: args can be large
        SELECT d.task_name, d.queue, d.dead_letter_reason, d.moved_to_dead_letter_at, d.resurrection_count
          FROM soniq.dead_letter_jobs d
         WHERE dead_letter_stats.since IS NULL OR d.moved_to_dead_letter_at >= now() - dead_letter_stats.since
    )
    SELECT jsonb_build_object(
        'total', (SELECT count(*) FROM dead),
        'by_task', coalesce((SELECT jsonb_object_agg(task_name, n) FROM
                             (SELECT task_name, count(*) AS n FROM dead GROUP BY task_name) t), '{}'),
        'by_queue', coalesce((SELECT jsonb_object_agg(queue, n) FROM
                              (SELECT queue, count(*) AS n FROM dead GROUP BY queue) q), '{}'),
        'by_reason', coalesce((SELECT jsonb_object_agg(dead_letter_reason, n) FROM
                               (SELECT dead_letter_reason, count(*) AS n FROM dead GROUP BY dead_letter_reason) r), '{}'),
        'by_day', coalesce((SELECT jsonb_object_agg(day, n) FROM
                            (SELECT moved_to_dead_letter_at::date::text AS day, count(*) AS n FROM dead
                              WHERE moved_to_dead_letter_at >= current_date - 6 GROUP BY 1) d), '{}'),
        'oldest_age_seconds', (SELECT round(extract(epoch FROM now() - min(moved_to_dead_letter_at))) FROM dead),
        'replayed', (SELECT count(*) FROM dead WHERE resurrection_count > 0)));
END
$$;

CREATE FUNCTION soniq._take_back(worker_ids uuid[], why text, job_ids uuid[] DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cancelled int;
    exhausted uuid[];
    requeued int;
    queues text[];
BEGIN
    UPDATE soniq.jobs j
       SET status = 'cancelled', finished_at = now(), updated_at = now(),
           last_error = format('cancelled; %s during attempt %s', why, j.attempts)
     WHERE j.status = 'processing' AND j.worker_id = ANY (worker_ids) AND j.cancel_requested
       AND (job_ids IS NULL OR j.id = ANY (job_ids));
    GET DIAGNOSTICS cancelled = ROW_COUNT;

    SELECT array_agg(j.id) INTO exhausted
      FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = ANY (worker_ids) AND j.attempts >= j.max_attempts
       AND (job_ids IS NULL OR j.id = ANY (job_ids));
    PERFORM soniq._bury(exhausted, 'max_retries_exceeded',
                        format('%s during its last attempt; attempts exhausted', why))
      WHERE exhausted IS NOT NULL;

    WITH requeued_jobs AS (
        UPDATE soniq.jobs j
           SET status = 'queued', worker_id = NULL, updated_at = now(),
               last_error = format('%s during attempt %s', why, j.attempts)
         WHERE j.status = 'processing' AND j.worker_id = ANY (worker_ids)
           AND (job_ids IS NULL OR j.id = ANY (job_ids))
        RETURNING j.queue
    )
    SELECT count(*), array_agg(DISTINCT r.queue) INTO requeued, queues FROM requeued_jobs r;
    PERFORM soniq._wake(q) FROM unnest(queues) q;

    RETURN cancelled + coalesce(cardinality(exhausted), 0) + requeued;
END
$$;

CREATE FUNCTION soniq.heartbeat(worker_id uuid, running uuid[], grace interval DEFAULT '30 seconds')
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    unknown uuid[];
BEGIN
    PERFORM soniq._require(running, 'running');
    PERFORM soniq._require(grace, 'grace');
    PERFORM soniq._check_interval(grace, 'grace');
    SELECT array_agg(j.id) INTO unknown FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id
       AND j.id <> ALL (running) AND j.started_at < now() - grace;
    IF unknown IS NOT NULL THEN
        PERFORM soniq._take_back(ARRAY[worker_id], 'its worker had lost track of it', unknown);
    END IF;
    RETURN QUERY SELECT soniq.heartbeat(worker_id);
END
$$;

CREATE FUNCTION soniq._check_args(args jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM soniq._require(args, 'args');
    IF jsonb_typeof(args) <> 'object' THEN
        RAISE EXCEPTION 'args must be a JSON object, got a JSON %', jsonb_typeof(args)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Wrap the value: {"value": ...}.';
    END IF;
    IF pg_column_size(args) > 1048576 THEN
        RAISE EXCEPTION 'args take % bytes, more than the 1 MiB a job may carry', pg_column_size(args)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store the payload elsewhere and pass a reference to it.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION soniq.enqueue(
    task_name    text,
    args         jsonb       DEFAULT '{}',
    queue        text        DEFAULT NULL,
    priority     int         DEFAULT NULL,
    scheduled_at timestamptz DEFAULT NULL,
    retries      int         DEFAULT NULL,
    unique_job   boolean     DEFAULT NULL,
    dedup_key    text        DEFAULT NULL,
    timeout      interval    DEFAULT NULL,
    producer_id  text        DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    task soniq.tasks;
    job soniq.jobs;
    found_id uuid;
BEGIN
    PERFORM soniq.check_task_name(task_name);
    PERFORM soniq._check_args(args);
    PERFORM soniq._check_job_options(enqueue.priority, enqueue.retries, enqueue.timeout);
    IF enqueue.dedup_key = '' THEN
        RAISE EXCEPTION 'dedup_key must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL for no deduplication key.';
    END IF;

    SELECT * INTO task FROM soniq.tasks t WHERE t.task_name = enqueue.task_name;

    job.id := soniq.uuid_v7();
    job.queue := coalesce(enqueue.queue, task.queue, 'default');
    PERFORM soniq.check_queue_name(job.queue);
    job.priority := coalesce(enqueue.priority, task.priority, 100);
    job.max_attempts := coalesce(enqueue.retries, task.retries, 3) + 1;
    job.timeout := nullif(coalesce(enqueue.timeout, task.timeout, interval '300 seconds'), interval '0');
    job.result_ttl := coalesce(task.result_ttl, interval '300 seconds');
    IF coalesce(enqueue.unique_job, task.unique_job, false) THEN
        -- jsonb's text form is canonical (keys sorted, whitespace fixed), so equal args hash equal.
        job.args_hash := encode(sha256(convert_to(args::text, 'UTF8')), 'hex');
    END IF;

    -- A duplicate is found by the look-ups below; if it leaves the queued state between the
    -- INSERT and the look-up, the INSERT goes through on the next turn.
    FOR turn IN 1..10 LOOP
        INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at,
                                     timeout, retry_policy, result_ttl, args_hash, dedup_key, producer_id)
        VALUES (job.id, enqueue.task_name, enqueue.args, job.queue, job.priority, job.max_attempts,
                enqueue.scheduled_at, job.timeout, task.retry_policy, job.result_ttl, job.args_hash,
                enqueue.dedup_key, enqueue.producer_id)
        ON CONFLICT DO NOTHING
        RETURNING j.id INTO found_id;
        IF found_id IS NOT NULL THEN
            IF enqueue.scheduled_at IS NULL OR enqueue.scheduled_at <= now() THEN
                PERFORM soniq._wake(job.queue);
            END IF;
            RETURN found_id;
        END IF;

        SELECT j.id INTO found_id FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.dedup_key = enqueue.dedup_key;
        IF found_id IS NULL THEN
            SELECT j.id INTO found_id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.task_name = enqueue.task_name AND j.args_hash = job.args_hash;
        END IF;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not enqueue % after repeated deduplication races', task_name
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END
$$;

CREATE OR REPLACE FUNCTION soniq.claim(
    worker_id  uuid,
    queues     text[] DEFAULT NULL,
    batch_size int    DEFAULT 1,
    task_names text[] DEFAULT NULL
) RETURNS TABLE (
    id           uuid,
    task_name    text,
    args         jsonb,
    attempt      int,
    max_attempts int,
    queue        text,
    priority     int,
    timeout      interval,
    scheduled_at timestamptz,
    created_at   timestamptz
)
LANGUAGE plpgsql VOLATILE
-- Claims read the claim index in order, never sort the backlog: right after a bulk load,
-- before ANALYZE, the planner would otherwise pick a sort of every queued row. (The one sort
-- left, of the claimed batch, then looks costly enough to JIT-compile: no JIT either.)
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    paused text[];
    picked uuid[];
BEGIN
    PERFORM soniq._require(claim.worker_id, 'worker_id');
    PERFORM soniq._check_filter(claim.queues, 'queues');
    PERFORM soniq._check_filter(claim.task_names, 'task_names');
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, got %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = claim.worker_id) THEN
        RAISE EXCEPTION 'worker % is not registered', claim.worker_id
            USING ERRCODE = 'no_data_found', HINT = 'Call soniq.register_worker() first.';
    END IF;
    SELECT coalesce(array_agg(q.name), '{}') INTO paused FROM soniq.queues q WHERE q.paused;

    -- The batch in claim order: one queue's from its own index (queue first), any other
    -- selection from the general one. The two statements differ only there: keep them in step.
    IF cardinality(claim.queues) = 1 THEN
        SELECT array_agg(b.id) INTO picked FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.queue = claim.queues[1]
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
               AND (claim.task_names IS NULL OR j.task_name = ANY (claim.task_names))
               AND j.queue <> ALL (paused)
             ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
             LIMIT claim.batch_size
               FOR UPDATE SKIP LOCKED) b;
    ELSE
        SELECT array_agg(b.id) INTO picked FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued'
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
               AND (claim.queues IS NULL OR j.queue = ANY (claim.queues))
               AND (claim.task_names IS NULL OR j.task_name = ANY (claim.task_names))
               AND j.queue <> ALL (paused)
             ORDER BY j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
             LIMIT claim.batch_size
               FOR UPDATE SKIP LOCKED) b;
    END IF;
    IF picked IS NULL THEN
        -- A malformed name matches no job: say so instead of claiming nothing forever (checked
        -- only here, off the path of claims that find work).
        PERFORM soniq.check_queue_name(q) FROM unnest(claim.queues) q;
        PERFORM soniq.check_task_name(t) FROM unnest(claim.task_names) t;
        RETURN;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE soniq.jobs j
           SET status = 'processing', attempts = j.attempts + 1, worker_id = claim.worker_id,
               started_at = now(), updated_at = now()
         WHERE j.id = ANY (picked)
        RETURNING j.*
    )
    SELECT c.id, c.task_name, c.args, c.attempts, c.max_attempts, c.queue, c.priority, c.timeout,
           c.scheduled_at, c.created_at
      FROM claimed c
     ORDER BY c.priority, c.scheduled_at NULLS FIRST, c.created_at, c.id;
END
$$;

CREATE OR REPLACE FUNCTION soniq.list_jobs(
    queue      text DEFAULT NULL,
    status     text DEFAULT NULL,
    row_limit  int  DEFAULT 100,
    row_offset int  DEFAULT 0
) RETURNS SETOF soniq.job_info
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF list_jobs.queue IS NOT NULL THEN
        PERFORM soniq.check_queue_name(list_jobs.queue);
    END IF;
    IF list_jobs.status NOT IN ('queued', 'processing', 'done', 'cancelled') THEN
        RAISE EXCEPTION 'status must be queued, processing, done or cancelled, got %', list_jobs.status
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Dead jobs are listed by soniq.dead_letter_list().';
    END IF;
    IF row_limit IS NULL OR row_limit NOT BETWEEN 1 AND 10000 OR row_offset IS NULL OR row_offset < 0 THEN
        RAISE EXCEPTION 'row_limit must be between 1 and 10000 and row_offset at least 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT i.* FROM soniq.job_info i
     WHERE i.status <> 'dead'
       AND (list_jobs.queue IS NULL OR i.queue = list_jobs.queue)
       AND (list_jobs.status IS NULL OR i.status = list_jobs.status)
     ORDER BY i.created_at DESC, i.id DESC
     LIMIT row_limit OFFSET row_offset;
END
$$;

CREATE FUNCTION soniq.job_status(job_id uuid) RETURNS TABLE (
    id           uuid,
    task_name    text,
    queue        text,
    status       text,
    attempts     int,
    max_attempts int,
    last_error   text,
    scheduled_at timestamptz,
    created_at   timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT i.id, i.task_name, i.queue, i.status, i.attempts, i.max_attempts, i.last_error,
           i.scheduled_at, i.created_at, i.started_at, i.finished_at
      FROM soniq.job_info i WHERE i.id = job_id
$$;

CREATE OR REPLACE FUNCTION soniq.schedule_add(
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

CREATE OR REPLACE FUNCTION soniq.fire_due_schedules(max_fires int DEFAULT 1000) RETURNS int
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

CREATE OR REPLACE FUNCTION soniq._run_subsystem(subsystem text, heartbeat_timeout interval, lease_grace interval,
                                     retention interval, batch_size int) RETURNS bigint
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
        END;
        UPDATE soniq.control_plane c
           SET last_run_at = now(), last_success_at = now(), last_result = result, runs = c.runs + 1
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

-- Privileges (sql/privileges.sql)

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['soniq_producer', 'soniq_worker', 'soniq_admin'] LOOP
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
         WHERE p.pronamespace = 'soniq'::regnamespace AND p.proname NOT LIKE '\_%'
    LOOP
        IF language IN ('sql', 'plpgsql') THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', api);
        END IF;
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO soniq_admin', api);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA soniq FROM PUBLIC;
GRANT USAGE ON SCHEMA soniq TO soniq_producer, soniq_worker, soniq_admin;

GRANT EXECUTE ON FUNCTION
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text),
    soniq.job_status(uuid),
    soniq.register_task(text, jsonb)  -- runners publish a task's options before enqueueing it
TO soniq_producer;

GRANT EXECUTE ON FUNCTION
    soniq.register_worker(text, int, text[], int, text, jsonb),
    soniq.heartbeat(uuid),
    soniq.heartbeat(uuid, uuid[], interval),
    soniq.deregister_worker(uuid),
    soniq.claim(uuid, text[], int, text[]),
    soniq.complete(uuid, uuid, int, jsonb),
    soniq.complete_many(uuid[], uuid, int[], jsonb[]),
    soniq.fail(uuid, uuid, int, text, interval, text),
    soniq.fail_many(uuid[], uuid, int[], text[], interval[], text[]),
    soniq.snooze(uuid, uuid, int, interval),
    soniq.abort(uuid, uuid, int, text)
TO soniq_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_admin;
