-- Soniq SQL API: every state transition of a job.
--
-- Conventions
-- * Bad input raises a clear error with a standard SQLSTATE and writes nothing:
--   22004 a required value is NULL, 22023 a value is out of range or malformed,
--   P0002 an unknown job, dead job or worker, 55000 the caller's lease is no longer current.
-- * A lease is the right of one worker to finish one attempt: (worker_id, attempt).
--   complete, fail, snooze and abort must present it; a lease that was taken back is refused.
-- * Lookups (get_job, list_jobs, ...) return no row for an unknown id.
-- * Objects are schema-qualified everywhere, so no function depends on the caller's search_path.

------------------------------------------------------------------------------------------
-- Internal helpers
------------------------------------------------------------------------------------------

-- soniq._wake(queue) (src/wake.rs): wake the queue's idle workers when the transaction
-- commits; throttled at commit, nothing sent on rollback.

-- _require: raise 22004 when a required argument is NULL.
CREATE FUNCTION soniq._require(value anyelement, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;

-- _require_value: _require for SQL expressions; returns the value.
CREATE FUNCTION soniq._require_value(value anyelement, what text) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM soniq._require(value, what);
    RETURN value;
END
$$;

-- _check_filter: raise unless an optional text[] filter is NULL or a non-empty list without NULLs.
CREATE FUNCTION soniq._check_filter(list text[], what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF list IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(list) = 0 THEN
        RAISE EXCEPTION '% must not be empty', what
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL to mean all.';
    END IF;
    IF array_position(list, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '% must not contain NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;

-- _check_interval: raise unless an interval is between 0 and longest (each interval an
-- argument takes has a documented range; the upper bound keeps every sum of times finite).
CREATE FUNCTION soniq._check_interval(value interval, what text, longest interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value < interval '0' OR value > longest THEN
        RAISE EXCEPTION '% must be between 0 and %, got %', what, longest, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- _seconds: a number of seconds given as JSON (a job spec's timeout) as an interval of at most
-- longest; 22023 unless it is a finite number in range. NULL stays NULL.
CREATE FUNCTION soniq._seconds(value jsonb, what text, longest interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR value = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) <> 'number' OR value::numeric NOT BETWEEN 0 AND extract(epoch FROM longest) THEN
        RAISE EXCEPTION '% must be a number of seconds between 0 and % (%), got %', what,
                        extract(epoch FROM longest)::bigint, longest,
                        CASE jsonb_typeof(value) WHEN 'number' THEN trim_scale(value::numeric)::text ELSE value::text END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN make_interval(secs => value::numeric::float8);
END
$$;

-- _integer: a whole number from low to high given as JSON (a job spec's priority or
-- retries); 22023 unless it is one. NULL stays NULL.
CREATE FUNCTION soniq._integer(value jsonb, what text, low int, high int) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR value = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) <> 'number' OR value::numeric <> trunc(value::numeric)
       OR value::numeric NOT BETWEEN low AND high THEN
        RAISE EXCEPTION '% must be a whole number between % and %, got %', what, low, high, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN value::numeric::int;
END
$$;

-- _check_size: raise 54000 when a text argument is longer than limit bytes.
CREATE FUNCTION soniq._check_size(value text, what text, limit_bytes int) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF octet_length(value) > limit_bytes THEN
        RAISE EXCEPTION '% takes % bytes, more than the % it may take', what, octet_length(value), limit_bytes
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
END
$$;

-- _check_args: a job's args must be a JSON object of at most 1 MiB (stored size): every
-- claim reads them, and large payloads belong elsewhere with a reference in the args.
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

-- _check_job_options: the ranges of a job's options (NULL: not given).
CREATE FUNCTION soniq._check_job_options(priority int, retries int, timeout interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF priority NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'priority must be between 1 and 1000, got %', priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retries NOT BETWEEN 0 AND 1000 THEN
        RAISE EXCEPTION 'retries must be between 0 and 1000, got %', retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM soniq._check_interval(timeout, 'timeout', interval '30 days');
END
$$;

-- _check_result: a job's result may take at most 1 MiB (stored size), like its args.
CREATE FUNCTION soniq._check_result(result jsonb, job_id uuid) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF pg_column_size(result) > 1048576 THEN
        RAISE EXCEPTION 'the result of job % takes % bytes, more than the 1 MiB a result may take',
                        job_id, pg_column_size(result)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store large outputs elsewhere and return a reference to them.';
    END IF;
END
$$;

-- _is_admin: whether the login may act for any worker and see any job (a member of
-- soniq_admin, or a superuser). The login is session_user: inside the API, current_user is
-- the functions' owner.
CREATE FUNCTION soniq._is_admin() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.pg_has_role(session_user, 'soniq_admin', 'MEMBER')
$$;

-- _check_worker_owner: a worker is bound to the login that registered it: another login
-- (admins excepted) is refused 42501 whatever it knows of the worker's id. Returns whether the
-- worker is registered (an unknown one passes: the caller says so in its own words).
CREATE FUNCTION soniq._check_worker_owner(worker_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    owner text;
BEGIN
    SELECT w.registered_by INTO owner FROM soniq.workers w WHERE w.id = _check_worker_owner.worker_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF owner <> session_user AND NOT soniq._is_admin() THEN
        RAISE EXCEPTION 'worker % was registered by another login', worker_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A worker''s claims, outcomes and heartbeats come from the login that registered it.';
    END IF;
    RETURN true;
END
$$;

-- _lease_refused: explain why a worker's lease on a job is not current, always raising.
CREATE FUNCTION soniq._lease_refused(job_id uuid, worker_id uuid, attempt int) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- Nothing about the job's present holder is told: the caller is not it.
    IF NOT EXISTS (SELECT FROM soniq.jobs j WHERE j.id = _lease_refused.job_id)
       AND NOT EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = _lease_refused.job_id) THEN
        RAISE EXCEPTION 'job % does not exist', job_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'It may have been deleted or pruned after its lease was taken back.';
    END IF;
    RAISE EXCEPTION 'worker % does not hold the lease on attempt % of job %', worker_id, attempt, job_id
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = 'The lease was taken back (the worker was presumed dead), or the job finished or was dead-lettered; this attempt''s outcome is discarded.';
END
$$;

-- _bury: move jobs into the dead letter with a reason and their last error.
CREATE FUNCTION soniq._bury(job_ids uuid[], reason text, error text) RETURNS int
LANGUAGE sql VOLATILE AS $$
    WITH gone AS (
        DELETE FROM soniq.jobs j WHERE j.id = ANY (job_ids) RETURNING j.*
    ), buried AS (
        INSERT INTO soniq.dead_letter_jobs AS d (
            id, task_name, args, queue, priority, attempts, max_attempts, timeout, retry_policy,
            result_ttl, last_error, dead_letter_reason, producer_id, original_created_at, enqueued_by)
        SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.attempts, g.max_attempts, g.timeout,
               g.retry_policy, g.result_ttl, coalesce(error, g.last_error), reason, g.producer_id, g.created_at,
               g.enqueued_by
        FROM gone g
        RETURNING d.id
    )
    SELECT count(*)::int FROM buried
$$;

-- _queued_duplicate: the queued job a unique or dedup job would collide with on going back
-- to the queue (the same task and args of a unique job, or the same dedup key); NULL if none.
CREATE FUNCTION soniq._queued_duplicate(job soniq.jobs) RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT d.id FROM soniq.jobs d
     WHERE d.status = 'queued' AND d.id <> job.id AND d.enqueued_by = job.enqueued_by
       AND ((job.dedup_key IS NOT NULL AND d.dedup_key = job.dedup_key)
            OR (job.args_hash IS NOT NULL AND d.task_name = job.task_name AND d.args_hash = job.args_hash))
     LIMIT 1
$$;

-- _queue_again: the update behind _requeue.
CREATE FUNCTION soniq._queue_again(job soniq.jobs, attempts int, run_at timestamptz, error text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE soniq.jobs j
       SET status = 'queued', worker_id = NULL, attempts = _queue_again.attempts,
           scheduled_at = run_at, last_error = error, updated_at = now()
     WHERE j.id = job.id;
    IF run_at IS NULL OR run_at <= now() THEN
        PERFORM soniq._wake(job.queue);
    END IF;
END
$$;

-- _requeue: put a processing job (locked by the caller) back in the queue: a retry, a snooze
-- or a take-back, with its attempts, due at run_at (NULL: at once) and error as its last error.
-- The rule for duplicates: while a unique or dedup job ran, the same job may have been
-- enqueued again (allowed: it was no longer queued). The returning job then yields to that
-- queued duplicate, which does the work once: it ends cancelled, its last error saying so
-- and naming the duplicate. Returns 'queued' or 'merged'.
CREATE FUNCTION soniq._requeue(job soniq.jobs, attempts int, run_at timestamptz, error text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    duplicate uuid;
BEGIN
    IF job.args_hash IS NULL AND job.dedup_key IS NULL THEN
        PERFORM soniq._queue_again(job, attempts, run_at, error);
        RETURN 'queued';
    END IF;
    FOR turn IN 1..3 LOOP
        duplicate := soniq._queued_duplicate(job);
        IF duplicate IS NOT NULL THEN
            UPDATE soniq.jobs j
               SET status = 'cancelled', finished_at = now(), updated_at = now(),
                   last_error = format('%s; not run again: job %s, queued with the same %s, runs instead',
                                       error, duplicate,
                                       CASE WHEN job.dedup_key IS NOT NULL THEN 'dedup key' ELSE 'task and args' END)
             WHERE j.id = job.id;
            RETURN 'merged';
        END IF;
        BEGIN  -- a subtransaction only for unique and dedup jobs
            PERFORM soniq._queue_again(job, attempts, run_at, error);
            RETURN 'queued';
        EXCEPTION WHEN unique_violation THEN
            NULL;  -- a duplicate was enqueued (and committed) since the look-up: yield to it
        END;
    END LOOP;
    RAISE EXCEPTION 'could not queue job % again after repeated deduplication races', job.id
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END
$$;

-- _take_back: revoke the leases held by the given workers (only on the jobs listed in
-- job_ids, when given). A job whose cancellation was requested ends cancelled; a job that
-- used up its attempts goes to the dead letter (the crash-loop guard: a job whose workers
-- keep dying does not run again); the rest go back to the queue (see _requeue). Each job is
-- locked and re-checked first: one whose outcome commits meanwhile is no longer held and
-- stays as its outcome left it. Returns the number of jobs taken back.
CREATE FUNCTION soniq._take_back(worker_ids uuid[], why text, job_ids uuid[] DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held soniq.jobs;
    taken int := 0;
BEGIN
    FOR held IN
        SELECT * FROM soniq.jobs j
         WHERE j.status = 'processing' AND j.worker_id = ANY (worker_ids)
           AND (job_ids IS NULL OR j.id = ANY (job_ids))
         ORDER BY j.id
           FOR UPDATE
    LOOP
        IF held.cancel_requested THEN
            UPDATE soniq.jobs j
               SET status = 'cancelled', finished_at = now(), updated_at = now(),
                   last_error = format('cancelled; %s during attempt %s', why, held.attempts)
             WHERE j.id = held.id;
        ELSIF held.attempts >= held.max_attempts THEN
            PERFORM soniq._bury(ARRAY[held.id], 'max_retries_exceeded',
                                format('%s during its last attempt; attempts exhausted', why));
        ELSE
            -- Due as it was: the claim order of a taken-back job does not change.
            PERFORM soniq._requeue(held, held.attempts, held.scheduled_at,
                                   format('%s during attempt %s', why, held.attempts));
        END IF;
        taken := taken + 1;
    END LOOP;
    RETURN taken;
END
$$;

------------------------------------------------------------------------------------------
-- Tasks and queues
------------------------------------------------------------------------------------------

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
    PERFORM soniq.check_task_name(task_name);
    d := soniq.normalize_task_defaults(defaults);
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

-- pause_queue: workers stop claiming from the queue; jobs keep arriving. Returns whether
-- this call changed the state.
CREATE FUNCTION soniq.pause_queue(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    changed boolean;
BEGIN
    PERFORM soniq.check_queue_name(name);
    INSERT INTO soniq.queues AS q (name, paused, paused_at) VALUES (pause_queue.name, true, now())
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE
       SET paused = true, paused_at = now(), updated_at = now()
     WHERE NOT q.paused
    RETURNING true INTO changed;
    RETURN coalesce(changed, false);
END
$$;

-- resume_queue: workers claim from the queue again (and are woken at once).
CREATE FUNCTION soniq.resume_queue(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq.check_queue_name(name);
    UPDATE soniq.queues q SET paused = false, paused_at = NULL, updated_at = now()
     WHERE q.name = resume_queue.name AND q.paused;
    IF FOUND THEN
        PERFORM soniq._wake(name);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

------------------------------------------------------------------------------------------
-- Enqueue
------------------------------------------------------------------------------------------

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
    PERFORM soniq.check_task_name(task_name);
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
    PERFORM soniq.check_queue_name(job.queue);
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

------------------------------------------------------------------------------------------
-- Workers
------------------------------------------------------------------------------------------

-- register_worker: a runner process announces itself; returns its id, which claims and
-- heartbeats present. queues NULL means all queues; task_names, the tasks it has handlers
-- for (NULL: any), tells the control plane which jobs nobody serves (check_unserved).
CREATE FUNCTION soniq.register_worker(
    hostname    text    DEFAULT NULL,
    pid         int     DEFAULT NULL,
    queues      text[]  DEFAULT NULL,
    concurrency int     DEFAULT 1,
    version     text    DEFAULT NULL,
    metadata    jsonb   DEFAULT '{}',
    task_names  text[]  DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM soniq._check_filter(queues, 'queues');
    PERFORM soniq.check_queue_name(q) FROM unnest(queues) q;
    PERFORM soniq._check_filter(task_names, 'task_names');
    PERFORM soniq.check_task_name(t) FROM unnest(task_names) t;
    IF concurrency IS NULL OR concurrency < 1 THEN
        RAISE EXCEPTION 'concurrency must be at least 1, got %', coalesce(concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO soniq.workers AS w (hostname, pid, queues, concurrency, version, metadata, task_names)
    VALUES (register_worker.hostname, register_worker.pid, register_worker.queues,
            register_worker.concurrency, register_worker.version, register_worker.metadata,
            register_worker.task_names)
    RETURNING w.id INTO new_id;
    RETURN new_id;
END
$$;

-- heartbeat: the worker is alive. Returns the ids of the jobs it holds whose cancellation
-- was requested (soniq.cancel_job): the worker should abort them.
CREATE FUNCTION soniq.heartbeat(worker_id uuid) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    UPDATE soniq.workers w SET last_heartbeat = now() WHERE w.id = heartbeat.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered', worker_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'It was presumed dead and its leases were taken back; register again.';
    END IF;
    RETURN QUERY
    SELECT j.id FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id AND j.cancel_requested;
END
$$;

-- heartbeat (with the jobs the worker is running, or finished and still recording): as
-- above, and takes back the jobs this worker holds but does not know of, once held longer
-- than grace. A claim whose answer was lost with its connection leaves such jobs: the worker
-- stays alive, so without this they would wait for their timeout.
CREATE FUNCTION soniq.heartbeat(worker_id uuid, running uuid[], grace interval DEFAULT '30 seconds')
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    unknown uuid[];
BEGIN
    PERFORM soniq._require(running, 'running');
    PERFORM soniq._require(grace, 'grace');
    PERFORM soniq._check_interval(grace, 'grace', interval '1 day');
    PERFORM soniq._check_worker_owner(worker_id);
    SELECT array_agg(j.id) INTO unknown FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id
       AND j.id <> ALL (running) AND j.started_at < now() - grace;
    IF unknown IS NOT NULL THEN
        PERFORM soniq._take_back(ARRAY[worker_id], 'its worker had lost track of it', unknown);
    END IF;
    RETURN QUERY SELECT soniq.heartbeat(worker_id);
END
$$;

-- deregister_worker: a worker leaves. Jobs it still holds are taken back (queued again,
-- or dead-lettered if that was their last attempt). Returns how many.
CREATE FUNCTION soniq.deregister_worker(worker_id uuid) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    DELETE FROM soniq.workers w WHERE w.id = deregister_worker.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered', worker_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN soniq._take_back(ARRAY[worker_id], format('worker %s deregistered', worker_id));
END
$$;

-- _forget_stale_workers: remove the workers silent for longer than timeout.
CREATE FUNCTION soniq._forget_stale_workers(timeout interval) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(timeout, 'timeout');
    IF timeout <= interval '0' OR timeout > interval '30 days' THEN
        RAISE EXCEPTION 'timeout must be more than 0 and at most 30 days, got %', timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM soniq.workers w WHERE w.last_heartbeat < now() - timeout;
END
$$;

-- recover_stale_workers: workers silent for longer than timeout (at most 30 days) are presumed
-- dead and removed; their jobs are taken back (see _take_back), and so are the jobs held by
-- any worker that no longer exists. Returns how many jobs were taken back.
CREATE FUNCTION soniq.recover_stale_workers(timeout interval DEFAULT '5 minutes') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lost uuid[];
BEGIN
    PERFORM soniq._forget_stale_workers(timeout);
    lost := ARRAY(
        SELECT DISTINCT j.worker_id FROM soniq.jobs j
         WHERE j.status = 'processing'
           AND NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = j.worker_id));
    IF cardinality(lost) = 0 THEN
        RETURN 0;
    END IF;
    RETURN soniq._take_back(lost, 'its worker stopped heartbeating');
END
$$;

------------------------------------------------------------------------------------------
-- Claim and outcomes
------------------------------------------------------------------------------------------

-- claim: lease up to batch_size due jobs to a worker, in priority order (lower number
-- first), never-scheduled before scheduled, oldest first. Skips paused queues and rows
-- other claimers hold. queues / task_names restrict the claim (NULL: any); a worker
-- passes the task names it can run so it never takes a job it does not know.
CREATE FUNCTION soniq.claim(
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
    IF NOT soniq._check_worker_owner(claim.worker_id) THEN
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

-- complete_many: finish many attempts of one worker in one round trip. Returns the ids it
-- completed; an id missing from the result was not held under that lease (it was taken
-- back) and stays as it is. A job whose result TTL is 0 is deleted at once.
CREATE FUNCTION soniq.complete_many(
    job_ids   uuid[],
    worker_id uuid,
    attempts  int[],
    results   jsonb[] DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_ids, 'job_ids');
    PERFORM soniq._require(complete_many.worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(complete_many.worker_id);
    PERFORM soniq._require(complete_many.attempts, 'attempts');
    IF array_position(job_ids, NULL) IS NOT NULL OR array_position(complete_many.attempts, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'job_ids and attempts must not contain NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF cardinality(job_ids) <> cardinality(complete_many.attempts)
       OR cardinality(job_ids) <> coalesce(cardinality(results), cardinality(job_ids)) THEN
        RAISE EXCEPTION 'job_ids, attempts and results must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM soniq._check_result(r.result, r.id)
       FROM unnest(job_ids, results) AS r(id, result)
      WHERE pg_column_size(r.result) > 1048576;

    RETURN QUERY
    WITH lease AS (
        SELECT * FROM unnest(job_ids, complete_many.attempts, results) AS l(id, attempt, result)
    ), kept AS (
        UPDATE soniq.jobs j
           SET status = 'done', result = l.result, finished_at = now(), updated_at = now(),
               expires_at = now() + j.result_ttl
          FROM lease l
         WHERE j.id = l.id AND j.status = 'processing' AND j.worker_id = complete_many.worker_id
           AND j.attempts = l.attempt AND j.result_ttl > interval '0'
        RETURNING j.id
    ), dropped AS (
        DELETE FROM soniq.jobs j
         USING lease l
         WHERE j.id = l.id AND j.status = 'processing' AND j.worker_id = complete_many.worker_id
           AND j.attempts = l.attempt AND j.result_ttl <= interval '0'
        RETURNING j.id
    )
    SELECT k.id FROM kept k UNION ALL SELECT d.id FROM dropped d;
END
$$;

-- complete: the attempt succeeded. The result is kept for the task's result TTL.
CREATE FUNCTION soniq.complete(job_id uuid, worker_id uuid, attempt int, result jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM FROM soniq.complete_many(ARRAY[job_id], worker_id, ARRAY[attempt], ARRAY[result]);
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
END
$$;

-- _fail: the one implementation behind fail and fail_many. Returns the job's new state
-- ('queued', 'dead', or 'merged' when a queued duplicate runs instead: see _requeue), or NULL
-- when the lease is not current. The error is stored up to 8192 characters. Its callers
-- check the worker's login (_check_worker_owner) once per call.
CREATE FUNCTION soniq._fail(job_id uuid, worker_id uuid, attempt int, error text, retry_in interval, reason text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job soniq.jobs;
    delay interval;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._require(error, 'error');
    PERFORM soniq._check_size(error, 'error', 65536);
    PERFORM soniq._check_interval(retry_in, 'retry_in', interval '365 days');
    IF reason NOT IN ('timeout', 'permanent_failure', 'invalid_arguments', 'job_not_found') THEN
        RAISE EXCEPTION 'reason must be timeout, permanent_failure, invalid_arguments or job_not_found, got %', reason
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for an ordinary failure that retries while attempts remain.';
    END IF;

    SELECT * INTO job FROM soniq.jobs j
     WHERE j.id = _fail.job_id AND j.status = 'processing' AND j.worker_id = _fail.worker_id
       AND j.attempts = _fail.attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF reason IN ('permanent_failure', 'invalid_arguments', 'job_not_found') OR job.attempts >= job.max_attempts THEN
        PERFORM soniq._bury(ARRAY[job.id],
                            CASE WHEN reason IS NULL THEN 'max_retries_exceeded' ELSE reason END,
                            left(error, 8192));
        RETURN 'dead';
    END IF;

    delay := coalesce(retry_in, make_interval(secs => soniq.retry_delay(job.retry_policy, job.attempts, job.id)));
    RETURN soniq._requeue(job, job.attempts, CASE WHEN delay > interval '0' THEN now() + delay END,
                          left(error, 8192));
END
$$;

-- fail: the attempt failed with error (at most 64 KiB; the first 8192 characters are kept).
-- While attempts remain the job is queued again after its retry policy's delay (or retry_in,
-- at most 365 days, when a runner's own policy computed one); after the last attempt it moves
-- to the dead letter (reason max_retries_exceeded, or timeout when reason is 'timeout').
-- reason permanent_failure, invalid_arguments or job_not_found dead-letters the job at once.
-- Returns the job's new state: 'queued', 'dead', or 'merged' (a unique or dedup job whose
-- duplicate was queued meanwhile ends cancelled and the duplicate runs: see _requeue).
CREATE FUNCTION soniq.fail(
    job_id    uuid,
    worker_id uuid,
    attempt   int,
    error     text,
    retry_in  interval DEFAULT NULL,
    reason    text     DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    outcome text;
BEGIN
    PERFORM soniq._check_worker_owner(worker_id);
    outcome := soniq._fail(job_id, worker_id, attempt, error, retry_in, reason);
    IF outcome IS NULL THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
    RETURN outcome;
END
$$;

-- fail_many: fail many attempts of one worker in one round trip. Returns (job_id, state)
-- for each failure it recorded; a job missing from the result was not held under that lease.
CREATE FUNCTION soniq.fail_many(
    job_ids   uuid[],
    worker_id uuid,
    attempts  int[],
    errors    text[],
    retry_in  interval[] DEFAULT NULL,
    reasons   text[]     DEFAULT NULL
) RETURNS TABLE (job_id uuid, state text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_ids, 'job_ids');
    PERFORM soniq._require(fail_many.attempts, 'attempts');
    PERFORM soniq._require(errors, 'errors');
    PERFORM soniq._check_worker_owner(fail_many.worker_id);  -- once, not per job
    IF cardinality(job_ids) <> cardinality(fail_many.attempts)
       OR cardinality(job_ids) <> cardinality(errors)
       OR cardinality(job_ids) <> coalesce(cardinality(fail_many.retry_in), cardinality(job_ids))
       OR cardinality(job_ids) <> coalesce(cardinality(reasons), cardinality(job_ids)) THEN
        RAISE EXCEPTION 'job_ids, attempts, errors, retry_in and reasons must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT f.id, f.state
      FROM (SELECT l.id, soniq._fail(l.id, fail_many.worker_id, l.attempt, l.error, l.delay, l.reason) AS state, l.n
              FROM unnest(job_ids, fail_many.attempts, errors, fail_many.retry_in, reasons)
                   WITH ORDINALITY AS l(id, attempt, error, delay, reason, n)) f
     WHERE f.state IS NOT NULL
     ORDER BY f.n;
END
$$;

-- snooze: put the job back to sleep for delay (at most 30 days) without using up an attempt
-- (the next claim sees the same attempt number); its last error becomes 'snoozed' or
-- 'snoozed: <reason>'. A unique or dedup job whose duplicate was queued meanwhile yields to
-- it (see _requeue).
CREATE FUNCTION soniq.snooze(job_id uuid, worker_id uuid, attempt int, delay interval, reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job soniq.jobs;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._require(delay, 'delay');
    PERFORM soniq._check_interval(delay, 'delay', interval '30 days');
    PERFORM soniq._check_size(reason, 'reason', 65536);
    SELECT * INTO job FROM soniq.jobs j
     WHERE j.id = snooze.job_id AND j.status = 'processing' AND j.worker_id = snooze.worker_id
       AND j.attempts = snooze.attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
    PERFORM soniq._requeue(job, job.attempts - 1, now() + delay,
                           'snoozed' || coalesce(': ' || left(reason, 8192), ''));
END
$$;

-- abort: the worker ends its attempt and the job as cancelled (the handler cancelled
-- itself, or heartbeat reported a cancellation request).
CREATE FUNCTION soniq.abort(job_id uuid, worker_id uuid, attempt int, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._check_size(reason, 'reason', 65536);
    UPDATE soniq.jobs j
       SET status = 'cancelled', finished_at = now(), updated_at = now(),
           last_error = coalesce(left(abort.reason, 8192), j.last_error)
     WHERE j.id = abort.job_id AND j.status = 'processing' AND j.worker_id = abort.worker_id
       AND j.attempts = abort.attempt;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
END
$$;

------------------------------------------------------------------------------------------
-- Managing jobs
------------------------------------------------------------------------------------------

-- cancel_job: a queued job becomes cancelled and never runs; a processing job is flagged,
-- and its worker learns it from its next heartbeat. Returns false when the job already
-- finished (done, cancelled or dead).
CREATE FUNCTION soniq.cancel_job(job_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_status text;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    SELECT j.status INTO current_status FROM soniq.jobs j WHERE j.id = cancel_job.job_id FOR UPDATE;
    IF current_status = 'queued' THEN
        UPDATE soniq.jobs j SET status = 'cancelled', finished_at = now(), updated_at = now()
         WHERE j.id = cancel_job.job_id;
        RETURN true;
    ELSIF current_status = 'processing' THEN
        UPDATE soniq.jobs j SET cancel_requested = true, updated_at = now() WHERE j.id = cancel_job.job_id;
        RETURN true;
    ELSIF current_status IS NOT NULL
          OR EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = cancel_job.job_id) THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
END
$$;

-- delete_job: remove a job in any state (a processing job's lease is revoked with it).
CREATE FUNCTION soniq.delete_job(job_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    DELETE FROM soniq.jobs j WHERE j.id = delete_job.job_id;
    IF FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = delete_job.job_id) THEN
        RAISE EXCEPTION 'job % is in the dead letter', job_id USING ERRCODE = 'no_data_found',
            HINT = 'Use soniq.dead_letter_delete() for dead jobs.';
    END IF;
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
END
$$;

-- job_info: one job as lookups return it; status 'dead' for a dead-lettered job.
CREATE VIEW soniq.job_info AS
SELECT j.id, j.task_name, j.args, j.status, j.queue, j.priority, j.attempts, j.max_attempts,
       j.scheduled_at, j.timeout, j.last_error, j.result, j.worker_id, j.cancel_requested,
       j.producer_id, NULL::text AS dead_letter_reason, j.created_at, j.updated_at,
       j.started_at, j.finished_at, j.expires_at, j.enqueued_by
  FROM soniq.jobs j
UNION ALL
SELECT d.id, d.task_name, d.args, 'dead', d.queue, d.priority, d.attempts, d.max_attempts,
       NULL, d.timeout, d.last_error, NULL, NULL, false,
       d.producer_id, d.dead_letter_reason, d.original_created_at, d.moved_to_dead_letter_at,
       NULL, d.moved_to_dead_letter_at, NULL, d.enqueued_by
  FROM soniq.dead_letter_jobs d;

-- get_job: a job by id, also when it is dead; no row when unknown.
CREATE FUNCTION soniq.get_job(job_id uuid) RETURNS SETOF soniq.job_info
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.job_info i WHERE i.id = job_id
$$;

-- job_status: where a job stands, without its args or result: what a producer may see of
-- the jobs its login enqueued (admins see every job's). No row when unknown, or enqueued by
-- another login; status 'dead' when dead.
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
      FROM soniq.job_info i WHERE i.id = job_id AND (i.enqueued_by = session_user OR soniq._is_admin())
$$;

-- list_jobs: jobs newest first, filtered by queue and status (queued, processing, done,
-- cancelled), paged by row_limit and row_offset. Dead jobs: soniq.dead_letter_list().
CREATE FUNCTION soniq.list_jobs(
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

-- queue_stats: counts of one queue (or of all when queue is NULL), read through the
-- (queue, status) index: every row of the queue is counted, so it costs what the queue holds
-- (done and cancelled rows are bounded by their TTL and the retention).
CREATE FUNCTION soniq.queue_stats(queue text DEFAULT NULL) RETURNS TABLE (
    total       bigint,
    queued      bigint,
    processing  bigint,
    done        bigint,
    cancelled   bigint,
    dead_letter bigint
)
LANGUAGE sql STABLE AS $$
    WITH live AS (
        SELECT count(*) FILTER (WHERE j.status = 'queued') AS queued,
               count(*) FILTER (WHERE j.status = 'processing') AS processing,
               count(*) FILTER (WHERE j.status = 'done') AS done,
               count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled
          FROM soniq.jobs j
         WHERE $1 IS NULL OR j.queue = $1
    ), dead AS (
        SELECT count(*) AS dead_letter FROM soniq.dead_letter_jobs d WHERE $1 IS NULL OR d.queue = $1
    )
    SELECT l.queued + l.processing + l.done + l.cancelled + d.dead_letter,
           l.queued, l.processing, l.done, l.cancelled, d.dead_letter
      FROM live l, dead d
$$;

------------------------------------------------------------------------------------------
-- Dead letter
------------------------------------------------------------------------------------------

-- dead_letter_get: one dead job by its original id; no row when it is not dead.
CREATE FUNCTION soniq.dead_letter_get(job_id uuid) RETURNS SETOF soniq.dead_letter_jobs
LANGUAGE sql STABLE AS $$
    SELECT d.* FROM soniq.dead_letter_jobs d WHERE d.id = job_id
$$;

-- dead_letter_list: dead jobs, most recently dead first, filtered and paged: by task,
-- queue, reason, when they died (moved_after <= t < moved_before), tags (all of them) and
-- whether they were replayed.
CREATE FUNCTION soniq.dead_letter_list(
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

-- replay: mint a fresh job from a dead one (new id, same args and policy; queue, priority
-- and max_attempts may be overridden). Attempts start again from 0 unless reset_attempts is
-- false (then max_attempts must leave an attempt). The dead row stays, with its
-- resurrection_count incremented. Returns the new job's id. With unless_replayed, a dead job
-- that was replayed before is left alone and NULL is returned: running the same replay twice,
-- or two operators at once, makes one job (the dead row is locked while it is replayed).
CREATE FUNCTION soniq.replay(
    dead_job_id     uuid,
    queue           text    DEFAULT NULL,
    priority        int     DEFAULT NULL,
    max_attempts    int     DEFAULT NULL,
    reset_attempts  boolean DEFAULT true,
    unless_replayed boolean DEFAULT false
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    dead soniq.dead_letter_jobs;
    new_id uuid := soniq.uuid_v7();
    attempts_so_far int;
BEGIN
    PERFORM soniq._require(dead_job_id, 'dead_job_id');
    PERFORM soniq._require(reset_attempts, 'reset_attempts');
    PERFORM soniq._require(unless_replayed, 'unless_replayed');
    PERFORM soniq._check_job_options(replay.priority, NULL, NULL);
    IF replay.max_attempts NOT BETWEEN 1 AND 1001 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1001, got %', replay.max_attempts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF replay.queue IS NOT NULL THEN
        PERFORM soniq.check_queue_name(replay.queue);
    END IF;
    UPDATE soniq.dead_letter_jobs d
       SET resurrection_count = d.resurrection_count + 1, last_resurrection_at = now()
     WHERE d.id = dead_job_id AND NOT (unless_replayed AND d.resurrection_count > 0)
    RETURNING d.* INTO dead;
    IF NOT FOUND THEN
        IF unless_replayed AND EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = dead_job_id) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'dead job % does not exist', dead_job_id USING ERRCODE = 'no_data_found';
    END IF;
    attempts_so_far := CASE WHEN reset_attempts THEN 0 ELSE dead.attempts END;
    IF attempts_so_far >= coalesce(replay.max_attempts, dead.max_attempts) THEN
        RAISE EXCEPTION 'dead job % used % of % attempts; keeping them leaves none to run', dead_job_id,
                        attempts_so_far, coalesce(replay.max_attempts, dead.max_attempts)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a larger max_attempts, or reset the attempts.';
    END IF;
    INSERT INTO soniq.jobs (id, task_name, args, queue, priority, attempts, max_attempts, timeout,
                            retry_policy, result_ttl, producer_id, enqueued_by)
    VALUES (new_id, dead.task_name, dead.args, coalesce(replay.queue, dead.queue),
            coalesce(replay.priority, dead.priority), attempts_so_far,
            coalesce(replay.max_attempts, dead.max_attempts),
            dead.timeout, dead.retry_policy, dead.result_ttl, dead.producer_id, dead.enqueued_by);
    PERFORM soniq._wake(coalesce(replay.queue, dead.queue));
    RETURN new_id;
END
$$;

-- replay_many: replay each of the dead jobs (see replay) in one call; all or nothing. With
-- unless_replayed, a dead job replayed before gets a NULL job_id.
CREATE FUNCTION soniq.replay_many(
    dead_job_ids    uuid[],
    queue           text    DEFAULT NULL,
    priority        int     DEFAULT NULL,
    max_attempts    int     DEFAULT NULL,
    reset_attempts  boolean DEFAULT true,
    unless_replayed boolean DEFAULT false
) RETURNS TABLE (dead_job_id uuid, job_id uuid)
LANGUAGE sql VOLATILE AS $$
    SELECT d.id, soniq.replay(d.id, $2, $3, $4, $5, $6)
      FROM unnest(soniq._require_value($1, 'dead_job_ids')) WITH ORDINALITY AS d(id, n)
     ORDER BY d.n
$$;

-- dead_letter_tag: add labels to a dead job (at most 50, each at most 200 bytes); returns all its tags.
CREATE FUNCTION soniq.dead_letter_tag(dead_job_id uuid, tags text[]) RETURNS text[]
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
    PERFORM soniq._check_size(t, 'a tag', 200) FROM unnest(tags) t;
    UPDATE soniq.dead_letter_jobs d
       SET tags = ARRAY(SELECT DISTINCT t FROM unnest(d.tags || dead_letter_tag.tags) t ORDER BY t)
     WHERE d.id = dead_job_id
    RETURNING d.tags INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead job % does not exist', dead_job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF cardinality(result) > 50 THEN
        RAISE EXCEPTION 'a dead job may carry at most 50 tags, this one would carry %', cardinality(result)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN result;
END
$$;

-- dead_letter_stats: counts of the dead letter (or of the jobs that died within `since`):
-- total, by task, queue and reason, by day over the last 7 days, the oldest's age in
-- seconds, and how many were replayed at least once.
CREATE FUNCTION soniq.dead_letter_stats(since interval DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM soniq._check_interval(since, 'since', interval '100 years');
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

-- dead_letter_move: move a job that is not running (queued or cancelled) into the dead
-- letter by hand, reason manual_move.
CREATE FUNCTION soniq.dead_letter_move(job_id uuid, note text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_status text;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    SELECT j.status INTO current_status FROM soniq.jobs j WHERE j.id = dead_letter_move.job_id FOR UPDATE;
    IF current_status IS NULL THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    ELSIF current_status NOT IN ('queued', 'cancelled') THEN
        RAISE EXCEPTION 'job % is %; only a queued or cancelled job can be moved to the dead letter', job_id, current_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM soniq._bury(ARRAY[job_id], 'manual_move', note);
END
$$;

-- dead_letter_delete: remove one dead job for good.
CREATE FUNCTION soniq.dead_letter_delete(dead_job_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(dead_job_id, 'dead_job_id');
    DELETE FROM soniq.dead_letter_jobs d WHERE d.id = dead_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead job % does not exist', dead_job_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

-- dead_letter_purge: remove dead jobs that died more than older_than ago (interval '0'
-- removes them all). Returns how many were removed.
CREATE FUNCTION soniq.dead_letter_purge(older_than interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM soniq._require(older_than, 'older_than');
    PERFORM soniq._check_interval(older_than, 'older_than', interval '100 years');
    DELETE FROM soniq.dead_letter_jobs d WHERE d.moved_to_dead_letter_at <= now() - older_than;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

------------------------------------------------------------------------------------------
-- Operator views
------------------------------------------------------------------------------------------

-- queue_overview: one row per known queue with its jobs by state and its pause state.
-- runnable = queued and due now; scheduled = queued for later; unserved = queued jobs of a
-- task no live worker serves in this queue (see check_unserved).
CREATE VIEW soniq.queue_overview AS
WITH names AS (
    SELECT DISTINCT j.queue AS name FROM soniq.jobs j
    UNION SELECT q.name FROM soniq.queues q
    UNION SELECT d.queue FROM soniq.dead_letter_jobs d
)
SELECT n.name AS queue,
       coalesce(q.paused, false) AS paused,
       count(j.id) FILTER (WHERE j.status = 'queued' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())) AS runnable,
       count(j.id) FILTER (WHERE j.status = 'queued' AND j.scheduled_at > now()) AS scheduled,
       count(j.id) FILTER (WHERE j.status = 'processing') AS processing,
       count(j.id) FILTER (WHERE j.status = 'done') AS done,
       count(j.id) FILTER (WHERE j.status = 'cancelled') AS cancelled,
       (SELECT count(*) FROM soniq.dead_letter_jobs d WHERE d.queue = n.name) AS dead,
       min(j.created_at) FILTER (WHERE j.status = 'queued' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())) AS oldest_runnable_since,
       (SELECT count(*) FROM soniq.unserved u JOIN soniq.jobs k
            ON k.task_name = u.task_name AND k.queue = u.queue AND k.status = 'queued'
         WHERE u.queue = n.name) AS unserved
  FROM names n
  LEFT JOIN soniq.queues q ON q.name = n.name
  LEFT JOIN soniq.jobs j ON j.queue = n.name
 GROUP BY n.name, q.paused;

-- unserved_jobs: the tasks and queues whose queued jobs no live worker serves, longest
-- unserved first, with how many jobs wait.
CREATE VIEW soniq.unserved_jobs AS
SELECT u.task_name, u.queue, u.since, now() - u.since AS unserved_for,
       (SELECT count(*) FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.task_name = u.task_name AND j.queue = u.queue) AS jobs
  FROM soniq.unserved u
 ORDER BY u.since, u.task_name, u.queue;

-- worker_overview: registered workers, how long each has been silent and what it holds.
CREATE VIEW soniq.worker_overview AS
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.version, w.started_at, w.last_heartbeat,
       now() - w.last_heartbeat AS silent_for,
       (SELECT count(*) FROM soniq.jobs j WHERE j.status = 'processing' AND j.worker_id = w.id) AS jobs_held
  FROM soniq.workers w;
