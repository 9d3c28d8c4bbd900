-- Soniq SQL: batches (since 0.9.0). Conventions: sql/helpers.sql.
--
-- A batch is opened with a callback (a task, its args, a queue); jobs are enqueued into it
-- (enqueue's batch_id, or a spec's); it is closed when no more will come. When it is closed
-- and every one of its jobs has ended — done, dead or cancelled (a deleted job counts as
-- cancelled) — the callback job is enqueued exactly once, in the transaction that ended the
-- last job (or closed the batch), with the counts and the ids of the failures in its args.
-- The batch's row counts its jobs as they end (_batch_count, from _finished) under its row
-- lock, so whichever transaction completes it sees every other's count: no second callback,
-- and no crash between the last job's end and the callback (they commit together).

-- At most this many failed jobs' ids are kept per batch (the counts are exact).
CREATE FUNCTION soniq._max_batch_failures() RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- batch_open: a new batch whose callback is a job of callback_task with callback_args (a JSON
-- object; the callback's args are these plus "batch": its id and counts), in callback_queue
-- (NULL: the task's). Returns its id. The batch is the caller's login's.
CREATE FUNCTION soniq.batch_open(callback_task text, callback_args jsonb DEFAULT '{}', callback_queue text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    opened uuid;
BEGIN
    PERFORM soniq._check_task_name(callback_task);
    PERFORM soniq._check_args(soniq._require_value(callback_args, 'callback_args'));
    IF callback_queue IS NOT NULL THEN
        PERFORM soniq._check_queue_name(callback_queue);
    END IF;
    INSERT INTO soniq.batches (callback_task, callback_args, callback_queue)
    VALUES (callback_task, callback_args, callback_queue)
    RETURNING id INTO opened;
    RETURN opened;
END
$$;

-- _join_batch: the jobs ids, just enqueued, join batch (open, and the caller's login's, or any
-- for an admin): 22023 otherwise. A job already ended (a dependent cancelled at enqueue) is
-- counted at once.
CREATE FUNCTION soniq._join_batch(batch uuid, ids uuid[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    joined soniq.batches;
    ended soniq._ended_job[];
BEGIN
    IF EXISTS (SELECT FROM soniq.jobs j WHERE j.id = ANY (ids) AND (j.args_hash IS NOT NULL OR j.dedup_key IS NOT NULL)) THEN
        RAISE EXCEPTION 'a unique or dedup job cannot join a batch'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A duplicate would return a job outside the batch: drop unique and dedup_key, or batch_id.';
    END IF;
    UPDATE soniq.batches b SET jobs = b.jobs + cardinality(ids)
     WHERE b.id = batch AND b.closed_at IS NULL AND (b.enqueued_by = session_user OR soniq._is_admin())
    RETURNING b.* INTO joined;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % does not exist or is closed', batch
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Open a batch with soniq.batch_open(); a closed one takes no more jobs.';
    END IF;
    WITH joining AS (
        UPDATE soniq.jobs j SET batch_id = batch WHERE j.id = ANY (ids)
        RETURNING j.id, j.status
    )
    SELECT array_agg(ROW(k.id, false, false, batch)::soniq._ended_job) INTO ended
      FROM joining k WHERE k.status = 'cancelled';
    IF ended IS NOT NULL THEN
        PERFORM soniq._batch_count(ended, 'cancelled');
    END IF;
END
$$;

-- batch_close: no more jobs may join the batch; if they have all ended already, the callback
-- is enqueued now. Returns false when it was closed already; P0002 when unknown (or another
-- login's).
CREATE FUNCTION soniq.batch_close(batch_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    closed soniq.batches;
BEGIN
    PERFORM soniq._require(batch_id, 'batch_id');
    UPDATE soniq.batches b SET closed_at = now()
     WHERE b.id = batch_close.batch_id AND b.closed_at IS NULL
       AND (b.enqueued_by = session_user OR soniq._is_admin())
    RETURNING b.* INTO closed;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM soniq.batches b WHERE b.id = batch_close.batch_id
                      AND (b.enqueued_by = session_user OR soniq._is_admin())) THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION 'batch % does not exist', batch_id USING ERRCODE = 'no_data_found';
    END IF;
    IF closed.done + closed.dead + closed.cancelled = closed.jobs THEN
        PERFORM soniq._batch_callback(closed);
    END IF;
    RETURN true;
END
$$;

-- _batch_count: count ended jobs (all ended as ended_as) in their batches, locked in id order;
-- a batch they complete enqueues its callback.
CREATE FUNCTION soniq._batch_count(ended soniq._ended_job[], ended_as text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    counted soniq.batches;
BEGIN
    FOR counted IN
        WITH ended_in AS (
            SELECT e.batch_id, count(*)::int AS n, array_agg(e.id) AS ids
              FROM unnest(ended) e WHERE e.batch_id IS NOT NULL GROUP BY e.batch_id
        ), locked AS (
            SELECT b.id FROM soniq.batches b WHERE b.id IN (SELECT i.batch_id FROM ended_in i)
             ORDER BY b.id FOR NO KEY UPDATE
        )
        UPDATE soniq.batches b
           SET done = b.done + CASE WHEN ended_as = 'done' THEN i.n ELSE 0 END,
               dead = b.dead + CASE WHEN ended_as = 'dead' THEN i.n ELSE 0 END,
               cancelled = b.cancelled + CASE WHEN ended_as = 'cancelled' THEN i.n ELSE 0 END,
               failed_ids = CASE WHEN ended_as = 'done' THEN b.failed_ids
                                 ELSE (b.failed_ids || i.ids)[1:soniq._max_batch_failures()] END
          FROM ended_in i, locked l
         WHERE b.id = i.batch_id AND l.id = b.id
        RETURNING b.*
    LOOP
        IF counted.closed_at IS NOT NULL AND counted.finished_at IS NULL
           AND counted.done + counted.dead + counted.cancelled = counted.jobs THEN
            PERFORM soniq._batch_callback(counted);
        END IF;
    END LOOP;
END
$$;

-- _batch_callback: enqueue a complete batch's callback (the caller holds its row) and record it.
CREATE FUNCTION soniq._batch_callback(complete soniq.batches) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    callback uuid;
BEGIN
    callback := soniq.enqueue(complete.callback_task,
                              complete.callback_args || jsonb_build_object('batch', jsonb_build_object(
                                  'id', complete.id, 'jobs', complete.jobs, 'done', complete.done,
                                  'dead', complete.dead, 'cancelled', complete.cancelled,
                                  'failed_ids', to_jsonb(complete.failed_ids))),
                              queue => complete.callback_queue);
    -- The batch's opener's job, whoever ended the last of its jobs.
    UPDATE soniq.jobs j SET enqueued_by = complete.enqueued_by WHERE j.id = callback;
    UPDATE soniq.batches b SET finished_at = now(), callback_job_id = callback WHERE b.id = complete.id;
END
$$;

-- batch_status: a batch of the caller's login (any, for an admin): its callback, its jobs by
-- how they ended (pending: not ended yet), up to 1,000 failed jobs' ids, when it was closed and
-- finished, and its callback job. No row when unknown.
CREATE FUNCTION soniq.batch_status(batch_id uuid) RETURNS TABLE (
    id              uuid,
    callback_task   text,
    jobs            int,
    pending         int,
    done            int,
    dead            int,
    cancelled       int,
    failed_ids      uuid[],
    created_at      timestamptz,
    closed_at       timestamptz,
    finished_at     timestamptz,
    callback_job_id uuid
)
LANGUAGE sql STABLE AS $$
    SELECT b.id, b.callback_task, b.jobs, b.jobs - b.done - b.dead - b.cancelled, b.done, b.dead, b.cancelled,
           b.failed_ids, b.created_at, b.closed_at, b.finished_at, b.callback_job_id
      FROM soniq.batches b
     WHERE b.id = batch_status.batch_id AND (b.enqueued_by = session_user OR soniq._is_admin())
$$;
