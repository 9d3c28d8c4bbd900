-- Soniq SQL: the conventions every file of sql/ follows, and the internal helpers they share.
--
-- Conventions
-- * Bad input raises a clear error with a standard SQLSTATE and writes nothing:
--   22004 a required value is NULL, 22023 a value is out of range or malformed,
--   P0002 an unknown job, dead job or worker, 55000 the caller's lease is no longer current.
-- * A lease is the right of one worker to finish one attempt: (worker_id, attempt).
--   complete, fail, snooze and abort must present it; a lease that was taken back is refused.
-- * Lookups (get_job, list_jobs, ...) return no row for an unknown id.
-- * Objects are schema-qualified everywhere, so no function depends on the caller's search_path.
-- * A statement that reads one queue's (or one key's) queued jobs in claim order names it as
--   a range, `j.queue >= q AND j.queue <= q`, not `j.queue = q`: from an equality the planner
--   drops the queue from the order and may serve it from the index of every queue's jobs in
--   claim order (jobs_claim_idx), walking past the backlog of every other queue. The range
--   leaves only the queue's own index to read.

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

-- _hold_lease: lock the job of a current lease FOR SHARE (a take-back waits for the caller);
-- _lease_refused's error when the lease is gone.
CREATE FUNCTION soniq._hold_lease(job_id uuid, worker_id uuid, attempt int) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(_hold_lease.worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._check_worker_owner(_hold_lease.worker_id);
    PERFORM FROM soniq.jobs j
     WHERE j.id = _hold_lease.job_id AND j.status = 'processing' AND j.worker_id = _hold_lease.worker_id
       AND j.attempts = _hold_lease.attempt
       FOR SHARE;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, _hold_lease.worker_id, attempt);
    END IF;
END
$$;

-- _bury: move jobs into the dead letter with a reason and their last error; the jobs that
-- depend on them are cancelled (or run, if they said so), their awaiters and batches told.
CREATE FUNCTION soniq._bury(job_ids uuid[], reason text, error text) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    buried int;
    followed soniq._ended_job[];
BEGIN
    WITH gone AS (
        DELETE FROM soniq.jobs j WHERE j.id = ANY (job_ids) RETURNING j.*
    ), freed AS (
        SELECT soniq._slots_freed(array_agg(DISTINCT g.queue)) FROM gone g WHERE g.status = 'processing'
    ), moved AS (
        INSERT INTO soniq.dead_letter_jobs AS d (
            id, task_name, args, queue, priority, attempts, max_attempts, timeout, retry_policy,
            result_ttl, last_error, dead_letter_reason, producer_id, original_created_at, enqueued_by)
        SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.attempts, g.max_attempts, g.timeout,
               g.retry_policy, g.result_ttl, coalesce(error, g.last_error), reason, g.producer_id, g.created_at,
               g.enqueued_by
        FROM gone g
        RETURNING d.id
    )
    SELECT (SELECT count(*)::int FROM moved),
           (SELECT array_agg(ROW(g.id, g.has_dependents, g.awaited, g.batch_id)::soniq._ended_job) FROM gone g
             WHERE g.has_dependents OR g.awaited OR g.batch_id IS NOT NULL)
      INTO buried, followed
      FROM (SELECT count(*) FROM freed) f;
    IF followed IS NOT NULL THEN
        PERFORM soniq._finished(followed, 'dead', format('ended in the dead letter (%s)', reason));
    END IF;
    RETURN buried;
END
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
    ELSE
        PERFORM soniq._slots_freed(ARRAY[job.queue]);
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
            PERFORM soniq._slots_freed(ARRAY[job.queue]);
            -- Its dependents wait for the duplicate instead; awaiters and a batch see it end.
            IF job.has_dependents THEN
                PERFORM soniq._dependents_follow(job.id, duplicate);
            END IF;
            job.has_dependents := false;
            PERFORM soniq._ended(job, 'cancelled', 'yielded to its duplicate');
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
            PERFORM soniq._slots_freed(ARRAY[held.queue]);
            PERFORM soniq._ended(held, 'cancelled', 'was cancelled');
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
