-- Soniq SQL: outcomes: complete, fail, snooze, abort (a worker's, on its lease). Conventions:
-- sql/helpers.sql.

-- _tally: count attempts that ended in each of queues (one entry per attempt) into this
-- minute's outcome_minutes rows of the worker, as completed or failed. Rows are taken in queue
-- order, so two transactions that add to the same worker's rows (its outcomes, the rescue
-- failing its timed-out attempt) wait for each other instead of deadlocking.
CREATE FUNCTION soniq._tally(worker_id uuid, queues text[], completed boolean) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO soniq.outcome_minutes AS m (minute, queue, worker_id, completed, failed)
    SELECT date_trunc('minute', now()), q, $1, CASE WHEN $3 THEN count(*) ELSE 0 END,
           CASE WHEN $3 THEN 0 ELSE count(*) END
      FROM unnest($2) q
     GROUP BY q
     ORDER BY q
        ON CONFLICT (minute, queue, worker_id)
        DO UPDATE SET completed = m.completed + EXCLUDED.completed, failed = m.failed + EXCLUDED.failed
$$;

-- complete_many: finish many attempts of one worker in one round trip. Returns the ids it
-- completed; an id missing from the result was not held under that lease (it was taken
-- back) and stays as it is. A job whose result TTL is 0 is deleted at once. Jobs that wait
-- for the completed ones count them off, and become queued when none is left.
CREATE FUNCTION soniq.complete_many(
    job_ids   uuid[],
    worker_id uuid,
    attempts  int[],
    results   jsonb[] DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    completed uuid[];
    freed text[];  -- the queues of the jobs completed
    ended_in text[];  -- the queue of each job completed, for outcome_minutes
    followed soniq._ended_job[];  -- the jobs completed that others follow (sql/finished.sql)
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

    -- Each lease names the state its job must be in. (Compared with the job's as a join, the
    -- state reaches each job by id. As conditions on the job alone, the planner, which rarely
    -- sees processing rows in the statistics, read all the jobs the worker held for each job
    -- of the batch: 3 ms for a batch of 64 in a drain.)
    WITH lease AS (
        SELECT l.*, 'processing'::text AS status, complete_many.worker_id AS worker_id
          FROM unnest(job_ids, complete_many.attempts, results) AS l(id, attempt, result)
    ), kept AS (
        UPDATE soniq.jobs j
           SET status = 'done', result = l.result, finished_at = now(), updated_at = now(),
               expires_at = now() + j.result_ttl
          FROM lease l
         WHERE j.id = l.id AND j.status = l.status AND j.worker_id = l.worker_id
           AND j.attempts = l.attempt AND j.result_ttl > interval '0'
        RETURNING j.id, j.queue, j.has_dependents, j.awaited, j.batch_id
    ), dropped AS (
        DELETE FROM soniq.jobs j
         USING lease l
         WHERE j.id = l.id AND j.status = l.status AND j.worker_id = l.worker_id
           AND j.attempts = l.attempt AND j.result_ttl <= interval '0'
        RETURNING j.id, j.queue, j.has_dependents, j.awaited, j.batch_id
    ), finished AS (
        SELECT k.* FROM kept k UNION ALL SELECT d.* FROM dropped d
    )
    SELECT array_agg(f.id), array_agg(DISTINCT f.queue), array_agg(f.queue),
           array_agg(ROW(f.id, f.has_dependents, f.awaited, f.batch_id)::soniq._ended_job)
               FILTER (WHERE f.has_dependents OR f.awaited OR f.batch_id IS NOT NULL)
      INTO completed, freed, ended_in, followed
      FROM finished f;
    PERFORM soniq._slots_freed(freed);
    IF ended_in IS NOT NULL THEN
        PERFORM soniq._tally(complete_many.worker_id, ended_in, true);
    END IF;
    -- A later statement, which sees a dependent whose enqueue this one waited for.
    IF followed IS NOT NULL THEN
        PERFORM soniq._finished(followed, 'done', NULL);
    END IF;
    RETURN QUERY SELECT unnest(completed);
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
    PERFORM soniq._tally(_fail.worker_id, ARRAY[job.queue], false);

    IF reason IN ('permanent_failure', 'invalid_arguments', 'job_not_found') OR job.attempts >= job.max_attempts THEN
        PERFORM soniq._bury(ARRAY[job.id],
                            CASE WHEN reason IS NULL THEN 'max_retries_exceeded' ELSE reason END,
                            left(error, 8192));
        RETURN 'dead';
    END IF;

    delay := coalesce(retry_in, make_interval(secs => soniq._retry_delay(job.retry_policy, job.attempts, job.id)));
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
-- itself, or heartbeat reported a cancellation request); the jobs that depend on it are
-- cancelled too (or run, if they said so).
CREATE FUNCTION soniq.abort(job_id uuid, worker_id uuid, attempt int, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ended soniq.jobs;
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
       AND j.attempts = abort.attempt
    RETURNING j.* INTO ended;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
    PERFORM soniq._slots_freed(ARRAY[ended.queue]);
    PERFORM soniq._ended(ended, 'cancelled', 'was cancelled');
END
$$;
