-- Soniq SQL: enqueue: a task's published options, and jobs in (enqueue, enqueue_many).
-- Conventions: sql/helpers.sql.

-- register_task: publish a handler's options; an omitted option at enqueue resolves from
-- here before the system default. Re-registering replaces the previous defaults, and queued
-- jobs that took an option from them follow the new ones (_follow_task).
CREATE FUNCTION soniq.register_task(task_name text, defaults jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    d jsonb;
    before soniq.tasks;
    published soniq.tasks;
BEGIN
    PERFORM soniq._check_task_name(task_name);
    d := soniq._normalize_task_defaults(defaults);
    SELECT * INTO before FROM soniq.tasks t WHERE t.task_name = register_task.task_name FOR UPDATE;
    INSERT INTO soniq.tasks AS t (task_name, queue, priority, retries, timeout, retry_policy, result_ttl, unique_job)
    VALUES (register_task.task_name,
            d ->> 'queue',
            (d ->> 'priority')::int,
            (d ->> 'retries')::int,
            make_interval(secs => (d ->> 'timeout')::float8),
            d -> 'retry_policy',
            make_interval(secs => (d ->> 'result_ttl')::float8),
            (d ->> 'unique')::boolean)
    ON CONFLICT ON CONSTRAINT tasks_pkey DO UPDATE
       SET queue = excluded.queue, priority = excluded.priority, retries = excluded.retries,
           timeout = excluded.timeout, retry_policy = excluded.retry_policy,
           result_ttl = excluded.result_ttl, unique_job = excluded.unique_job, updated_at = now()
    RETURNING t.* INTO published;
    -- A redeploy that publishes the same options touches no job.
    IF (before.queue, before.priority, before.retries, before.timeout, before.retry_policy, before.result_ttl)
       IS DISTINCT FROM
       (published.queue, published.priority, published.retries, published.timeout, published.retry_policy,
        published.result_ttl) THEN
        PERFORM soniq._follow_task(published);
    END IF;
END
$$;

-- _follow_task: the queued jobs of a task take its newly published options wherever their
-- producer left an option out (soniq.jobs.inherited), so a job enqueued before its task was
-- published runs with the task's retries, timeout, retry policy, result TTL, priority and
-- queue. Options given at enqueue stay; a job already processing is not changed. A job keeps
-- at least one attempt.
CREATE FUNCTION soniq._follow_task(task soniq.tasks) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due_in text[];
BEGIN
    WITH followed AS (
        UPDATE soniq.jobs j
           SET queue = CASE WHEN j.inherited & 1 <> 0 THEN coalesce(task.queue, 'default') ELSE j.queue END,
               priority = CASE WHEN j.inherited & 2 <> 0 THEN coalesce(task.priority, 100) ELSE j.priority END,
               max_attempts = CASE WHEN j.inherited & 4 <> 0
                                   THEN greatest(coalesce(task.retries, 3) + 1, j.attempts + 1)
                                   ELSE j.max_attempts END,
               timeout = CASE WHEN j.inherited & 8 <> 0
                              THEN nullif(coalesce(task.timeout, interval '300 seconds'), interval '0')
                              ELSE j.timeout END,
               retry_policy = CASE WHEN j.inherited & 16 <> 0 THEN task.retry_policy ELSE j.retry_policy END,
               result_ttl = CASE WHEN j.inherited & 32 <> 0 THEN coalesce(task.result_ttl, interval '300 seconds')
                                 ELSE j.result_ttl END,
               updated_at = now()
         WHERE j.task_name = task.task_name AND j.status = 'queued' AND j.inherited <> 0
        RETURNING j.queue, j.scheduled_at
    )
    SELECT array_agg(DISTINCT f.queue) INTO due_in
      FROM followed f WHERE f.scheduled_at IS NULL OR f.scheduled_at <= now();
    PERFORM soniq._wake(q) FROM unnest(due_in) q;
END
$$;

-- enqueue: add one job and return its id. Options omitted here resolve from the task's
-- registered defaults, then from the system defaults (queue 'default', priority 100,
-- retries 3, timeout 300 s). With unique_job (a hash of the args) or a dedup_key, while a
-- matching job of the same login is queued the call returns that job's id and writes nothing
-- (another login's jobs never match: a duplicate reveals nothing of them).
-- Runs in the caller's transaction: rolled back, the job never existed.
CREATE FUNCTION soniq.enqueue(
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
    PERFORM soniq._check_task_name(task_name);
    PERFORM soniq._check_args(args);
    PERFORM soniq._check_job_options(enqueue.priority, enqueue.retries, enqueue.timeout);
    IF NOT isfinite(enqueue.scheduled_at) THEN
        RAISE EXCEPTION 'scheduled_at must be a finite time, got %', enqueue.scheduled_at
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL to run as soon as possible.';
    END IF;
    IF enqueue.dedup_key = '' THEN
        RAISE EXCEPTION 'dedup_key must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL for no deduplication key.';
    END IF;
    PERFORM soniq._check_size(enqueue.dedup_key, 'dedup_key', 512);
    PERFORM soniq._check_size(enqueue.producer_id, 'producer_id', 512);

    SELECT * INTO task FROM soniq.tasks t WHERE t.task_name = enqueue.task_name;

    job.id := soniq.uuid_v7();
    job.queue := coalesce(enqueue.queue, task.queue, 'default');
    PERFORM soniq._check_queue_name(job.queue);
    job.priority := coalesce(enqueue.priority, task.priority, 100);
    job.max_attempts := coalesce(enqueue.retries, task.retries, 3) + 1;
    job.timeout := nullif(coalesce(enqueue.timeout, task.timeout, interval '300 seconds'), interval '0');
    job.result_ttl := coalesce(task.result_ttl, interval '300 seconds');
    -- What this call left out follows the task's options while the job waits (_follow_task).
    job.inherited := 16 | 32 | CASE WHEN enqueue.queue IS NULL THEN 1 ELSE 0 END
                             | CASE WHEN enqueue.priority IS NULL THEN 2 ELSE 0 END
                             | CASE WHEN enqueue.retries IS NULL THEN 4 ELSE 0 END
                             | CASE WHEN enqueue.timeout IS NULL THEN 8 ELSE 0 END;
    IF coalesce(enqueue.unique_job, task.unique_job, false) THEN
        -- jsonb's text form is canonical (keys sorted, whitespace fixed), so equal args hash equal.
        job.args_hash := encode(sha256(convert_to(args::text, 'UTF8')), 'hex');
    END IF;

    -- A duplicate is found by the look-ups below; if it leaves the queued state between the
    -- INSERT and the look-up, the INSERT goes through on the next turn.
    FOR turn IN 1..10 LOOP
        INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at,
                                     timeout, retry_policy, result_ttl, args_hash, dedup_key, producer_id,
                                     inherited)
        VALUES (job.id, enqueue.task_name, enqueue.args, job.queue, job.priority, job.max_attempts,
                enqueue.scheduled_at, job.timeout, task.retry_policy, job.result_ttl, job.args_hash,
                enqueue.dedup_key, enqueue.producer_id, job.inherited)
        ON CONFLICT DO NOTHING
        RETURNING j.id INTO found_id;
        IF found_id IS NOT NULL THEN
            IF enqueue.scheduled_at IS NULL OR enqueue.scheduled_at <= now() THEN
                PERFORM soniq._wake(job.queue);
            END IF;
            RETURN found_id;
        END IF;

        SELECT j.id INTO found_id FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.enqueued_by = session_user AND j.dedup_key = enqueue.dedup_key;
        IF found_id IS NULL THEN
            SELECT j.id INTO found_id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.enqueued_by = session_user
               AND j.task_name = enqueue.task_name AND j.args_hash = job.args_hash;
        END IF;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not enqueue % after repeated deduplication races', task_name
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END
$$;

-- enqueue_many (specs): a JSON array of job specs, each an object with the keys task_name
-- (required), args, queue, priority, scheduled_at, retries, unique, dedup_key,
-- timeout (seconds) and producer_id. Ids come back in input order; an error names the
-- offending element, and nothing is written.
CREATE FUNCTION soniq.enqueue_many(jobs jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    spec jsonb;
    n int := 0;
    unknown text;
    message text;
    code text;
BEGIN
    PERFORM soniq._require(jobs, 'jobs');
    IF jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'jobs must be a JSON array of job specs, got a JSON %', jsonb_typeof(jobs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One exception block around the whole loop (not one per job: a subtransaction per
    -- row would overflow the subtransaction cache on large batches); n survives the
    -- rollback, so the error names the element that failed.
    BEGIN
        FOR spec IN SELECT value FROM jsonb_array_elements(jobs) LOOP
            IF jsonb_typeof(spec) <> 'object' THEN
                RAISE EXCEPTION 'a job spec must be a JSON object, got a JSON %', jsonb_typeof(spec)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(spec) k
             WHERE k NOT IN ('task_name', 'args', 'queue', 'priority', 'scheduled_at', 'retries',
                             'unique', 'dedup_key', 'timeout', 'producer_id');
            IF unknown IS NOT NULL THEN
                RAISE EXCEPTION 'unknown key(s) in job spec: %', unknown
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(spec -> 'unique') NOT IN ('boolean', 'null') THEN
                RAISE EXCEPTION 'unique must be true or false, got %', spec -> 'unique'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            RETURN NEXT soniq.enqueue(
                task_name    => spec ->> 'task_name',
                args         => coalesce(spec -> 'args', '{}'),
                queue        => spec ->> 'queue',
                priority     => soniq._integer(spec -> 'priority', 'priority', 1, 1000),
                scheduled_at => (spec ->> 'scheduled_at')::timestamptz,
                retries      => soniq._integer(spec -> 'retries', 'retries', 0, 1000),
                unique_job   => (spec ->> 'unique')::boolean,
                dedup_key    => spec ->> 'dedup_key',
                timeout      => soniq._seconds(spec -> 'timeout', 'timeout', interval '30 days'),
                producer_id  => spec ->> 'producer_id');
            n := n + 1;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, code = RETURNED_SQLSTATE;
        -- A value that does not parse (scheduled_at) is bad input like any other: 22023.
        IF code IN ('22007', '22008', '22P02') THEN
            code := '22023';
        END IF;
        RAISE EXCEPTION 'jobs[%]: %', n, message USING ERRCODE = code;
    END;
END
$$;

-- enqueue_many (one task, many args): one job per element of args, ids in input order.
CREATE FUNCTION soniq.enqueue_many(
    task_name    text,
    args         jsonb[],
    queue        text        DEFAULT NULL,
    priority     int         DEFAULT NULL,
    scheduled_at timestamptz DEFAULT NULL,
    retries      int         DEFAULT NULL,
    unique_job   boolean     DEFAULT NULL,
    timeout      interval    DEFAULT NULL,
    producer_id  text        DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE sql VOLATILE AS $$
    SELECT soniq.enqueue_many(coalesce(jsonb_agg(
               jsonb_build_object('task_name', $1, 'args', a.value)
               || jsonb_strip_nulls(jsonb_build_object(
                      'queue', $3, 'priority', $4, 'scheduled_at', $5, 'retries', $6,
                      'unique', $7, 'timeout', extract(epoch FROM $8), 'producer_id', $9))
               ORDER BY a.n), '[]'))
      FROM unnest(soniq._require_value($2, 'args')) WITH ORDINALITY AS a(value, n)
$$;
