-- Soniq SQL: what follows the end of a job (since 0.9.0). Conventions: sql/helpers.sql.
--
-- Every path that ends a job — done, dead, cancelled (by a producer, its worker, a take-back,
-- a failed parent, a duplicate), deleted — hands the ended jobs that others follow to
-- _finished, once per statement: their dependents (sql/dependencies.sql), their awaiters
-- (sql/awaiting.sql) and their batch (sql/batches.sql). A job nobody follows is not handed
-- over: an outcome reads its three marks back and pays nothing more.

-- _ended_job: an ended job as _finished needs it (its marks as they were when it ended).
CREATE TYPE soniq._ended_job AS (
    id             uuid,
    has_dependents boolean,
    awaited        boolean,
    batch_id       uuid
);

-- _finished: ended jobs, all ended as ended_as ('done', 'dead' or 'cancelled'; a deleted job
-- counts as cancelled); why: how they ended, for their dependents' last error (NULL when done).
-- Awaiters are notified at commit; dependents are counted off (done) or cancelled (else); the
-- batches count them and enqueue their callbacks when they are complete.
CREATE FUNCTION soniq._finished(ended soniq._ended_job[], ended_as text, why text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    parents uuid[];
BEGIN
    PERFORM pg_notify('soniq_job_finished', e.id::text) FROM unnest(ended) e WHERE e.awaited;
    parents := ARRAY(SELECT e.id FROM unnest(ended) e WHERE e.has_dependents);
    IF cardinality(parents) > 0 THEN
        IF ended_as = 'done' THEN
            PERFORM soniq._release(parents);
        ELSE
            PERFORM soniq._dependency_failed(parents, why);
        END IF;
    END IF;
    IF EXISTS (SELECT FROM unnest(ended) e WHERE e.batch_id IS NOT NULL) THEN
        PERFORM soniq._batch_count(ended, ended_as);
    END IF;
END
$$;

-- _ended: _finished for one job, as it was when it ended, if anyone follows it.
CREATE FUNCTION soniq._ended(job soniq.jobs, ended_as text, why text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF job.has_dependents OR job.awaited OR job.batch_id IS NOT NULL THEN
        PERFORM soniq._finished(ARRAY[ROW(job.id, job.has_dependents, job.awaited, job.batch_id)::soniq._ended_job],
                                ended_as, why);
    END IF;
END
$$;
