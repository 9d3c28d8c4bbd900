-- Soniq SQL: awaiting a job's end (since 0.9.0). Conventions: sql/helpers.sql.
--
-- A job enqueued with awaitable => true (jobs.awaited) notifies the channel soniq_job_finished,
-- its id as the payload, in the transaction that ends it: done, cancelled, dead or deleted
-- (_finished). Jobs nobody awaits send nothing. A runner waits with LISTEN; any other client
-- can LISTEN too, or CALL soniq.await_job, which polls without holding a transaction open.

-- _await_jobs: mark jobs as awaited (enqueue's awaitable).
CREATE FUNCTION soniq._await_jobs(ids uuid[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.jobs j SET awaited = true WHERE j.id = ANY (ids) AND NOT j.awaited
$$;

-- job_result: where a job the caller's login enqueued stands, with its result once done and
-- its last error: what its producer awaits (admins see every job's). No row when unknown, or
-- enqueued by another login (or deleted, or pruned); status 'dead' when dead.
CREATE FUNCTION soniq.job_result(job_id uuid) RETURNS TABLE (status text, result jsonb, last_error text)
LANGUAGE sql STABLE AS $$
    SELECT i.status, i.result, i.last_error
      FROM soniq.job_info i WHERE i.id = job_id AND (i.enqueued_by = session_user OR soniq._is_admin())
$$;

-- await_job: wait up to timeout (0 to 1 hour) for a job of the caller's login to end, and
-- return its status (done, cancelled or dead; on a timeout, where it stands), result and last
-- error. A procedure: CALL it outside a transaction block (inside one PostgreSQL refuses its
-- COMMIT with 2D000). It looks every 10 ms at first, then every 40 ms, committing in between,
-- so no transaction stays open while it waits; a runner LISTENs instead. P0002 when the job
-- is unknown (or another login's, or deleted).
CREATE PROCEDURE soniq.await_job(job_id uuid, timeout interval, INOUT status text DEFAULT NULL,
                                 INOUT result jsonb DEFAULT NULL, INOUT last_error text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz;
    pause float8 := 0.01;
BEGIN
    -- With the caller's rights: only the API (job_result), no internal helper.
    IF job_id IS NULL OR timeout IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN job_id IS NULL THEN 'job_id' ELSE 'timeout' END
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF timeout NOT BETWEEN interval '0' AND interval '1 hour' THEN
        RAISE EXCEPTION 'timeout must be between 0 and 1 hour, got %', timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    deadline := clock_timestamp() + timeout;
    LOOP
        SELECT o.status, o.result, o.last_error INTO status, result, last_error FROM soniq.job_result(job_id) o;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found',
                HINT = 'It may have been deleted, or pruned after its result TTL.';
        END IF;
        EXIT WHEN status IN ('done', 'cancelled', 'dead') OR clock_timestamp() >= deadline;
        COMMIT;
        PERFORM pg_sleep(least(pause, extract(epoch FROM deadline - clock_timestamp())));
        pause := least(pause * 2, 0.04);
    END LOOP;
END
$$;
