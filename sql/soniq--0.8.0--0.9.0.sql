-- Soniq 0.8.0 -> 0.9.0: dependencies between jobs (sql/dependencies.sql). A job enqueued with
-- depends_on waits (the new state 'waiting') until the jobs it names are done, and is queued
-- in the transaction that completes the last of them; a parent that is cancelled or dies
-- cancels its waiting dependents (or they run anyway, with on_dependency_failure 'run'); a
-- replay of the dead parent re-arms them. Progress and checkpoints of a running attempt
-- (sql/progress.sql). Awaiting a job's end: jobs enqueued awaitable notify soniq_job_finished,
-- job_result and the procedure await_job (sql/awaiting.sql). Batches with a callback enqueued
-- once when all their jobs have ended (soniq.batches, sql/batches.sql); every end of a job
-- goes through one hook (sql/finished.sql). New columns on soniq.jobs (the table's last), the
-- tables job_progress and batches, one index (empty until jobs depend on others), the status
-- list; enqueue gains depends_on, on_dependency_failure, awaitable and batch_id, enqueue_many's
-- specs the same keys; queue_stats, queue_overview and job_info gain their waiting count,
-- depends_on and progress. And what main's 0.8.0 gained after it was released (at 2b3f80a):
-- jobs_worker_idx by (worker_id, id), _job_row, the generic plans, complete_many by id.
\echo Use "ALTER EXTENSION soniq UPDATE TO '0.9.0'" to load this file. \quit

-- The columns and the status check, in one pass over the table (the new columns have constant defaults:
-- no rewrite).
ALTER TABLE soniq.jobs
    ADD COLUMN depends_on uuid[],
    ADD COLUMN waiting_on int NOT NULL DEFAULT 0,
    ADD COLUMN on_dependency_failure text,
    ADD COLUMN has_dependents boolean NOT NULL DEFAULT false,
    ADD COLUMN cancelled_by uuid,
    ADD COLUMN awaited boolean NOT NULL DEFAULT false,
    ADD COLUMN batch_id uuid,
    DROP CONSTRAINT jobs_status_check,
    ADD CONSTRAINT jobs_status_check CHECK (status IN ('queued', 'processing', 'done', 'cancelled', 'waiting'));

CREATE INDEX jobs_dependents_idx ON soniq.jobs USING gin (depends_on) WHERE depends_on IS NOT NULL;

-- What running attempts recorded (since 0.9.0; sql/progress.sql): a job's last progress and
-- when, and the checkpoint its next attempt resumes from. A row only for a job whose handler
-- recorded something (every column of soniq.jobs costs each of its updates, and most jobs
-- record nothing); a row whose job is gone is pruned with the finished jobs.
CREATE TABLE soniq.job_progress (
    job_id      uuid PRIMARY KEY,
    progress    jsonb,
    progress_at timestamptz,
    checkpoint  jsonb
);
SELECT pg_catalog.pg_extension_config_dump('soniq.job_progress', '');

-- Batches (since 0.9.0; sql/batches.sql): a callback enqueued once every job of the batch
-- has ended, the batch closed. Its jobs by how they ended, counted as they end.
CREATE TABLE soniq.batches (
    id              uuid PRIMARY KEY DEFAULT soniq.uuid_v7(),
    callback_task   text NOT NULL,
    callback_args   jsonb NOT NULL DEFAULT '{}',
    callback_queue  text,           -- NULL: the task's
    jobs            int NOT NULL DEFAULT 0,
    done            int NOT NULL DEFAULT 0,
    dead            int NOT NULL DEFAULT 0,
    cancelled       int NOT NULL DEFAULT 0,
    failed_ids      uuid[] NOT NULL DEFAULT '{}',  -- the first 1,000 dead or cancelled
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,    -- no more jobs join it
    finished_at     timestamptz,    -- its callback was enqueued
    callback_job_id uuid,
    enqueued_by     text DEFAULT session_user
) WITH (fillfactor = 70);  -- every ended job of a batch updates its row: HOT updates
SELECT pg_catalog.pg_extension_config_dump('soniq.batches', '');

-- _ended_job: an ended job as _finished needs it (its marks as they were when it ended).
CREATE TYPE soniq._ended_job AS (
    id             uuid,
    has_dependents boolean,
    awaited        boolean,
    batch_id       uuid
);


-- 0.8.0 as released (at 2b3f80a) did not have what main's 0.8.0 gained after it, which comes
-- here: jobs_worker_idx gains the id (an outcome's look-up of its job is one probe), a single
-- enqueue resolves its job through _job_row, _insert_jobs and _insert_unique_jobs use the
-- generic plan, complete_many reaches its jobs by id (all re-created below).
DROP INDEX soniq.jobs_worker_idx;
CREATE INDEX jobs_worker_idx ON soniq.jobs (worker_id, id) WHERE status = 'processing';

-- Changed signatures and result types: dropped, then created below.
DROP FUNCTION soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text);
DROP FUNCTION soniq.queue_stats(text);

-- _finished: ended jobs, all ended as ended_as ('done', 'dead' or 'cancelled'; a deleted job
-- counts as cancelled); why: how they ended, for their dependents' last error (NULL when done).
-- Awaiters are notified at commit; dependents are counted off (done) or cancelled (else); the
-- batches count them and enqueue their callbacks when they are complete.
CREATE OR REPLACE FUNCTION soniq._finished(ended soniq._ended_job[], ended_as text, why text) RETURNS void
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
CREATE OR REPLACE FUNCTION soniq._ended(job soniq.jobs, ended_as text, why text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF job.has_dependents OR job.awaited OR job.batch_id IS NOT NULL THEN
        PERFORM soniq._finished(ARRAY[ROW(job.id, job.has_dependents, job.awaited, job.batch_id)::soniq._ended_job],
                                ended_as, why);
    END IF;
END
$$;

-- At most this many parents per job (documented in the README).
CREATE OR REPLACE FUNCTION soniq._max_parents() RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- _check_dependency_options: the rules of enqueue's depends_on and on_dependency_failure,
-- raised with prefix (a batch names the element) before the message.
CREATE OR REPLACE FUNCTION soniq._check_dependency_options(depends_on uuid[], on_dependency_failure text, prefix text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF on_dependency_failure IS NOT NULL AND on_dependency_failure NOT IN ('cancel', 'run') THEN
        RAISE EXCEPTION '%on_dependency_failure must be cancel or run, got %', prefix, on_dependency_failure
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF on_dependency_failure IS NOT NULL AND depends_on IS NULL THEN
        RAISE EXCEPTION '%on_dependency_failure needs depends_on', prefix USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF depends_on IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(depends_on) NOT BETWEEN 1 AND soniq._max_parents() THEN
        RAISE EXCEPTION '%depends_on must name between 1 and % jobs, got %', prefix, soniq._max_parents(),
                        cardinality(depends_on)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for a job that depends on none.';
    END IF;
    IF array_position(depends_on, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '%depends_on must not contain NULL', prefix USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- _dependency_edges: the parents a batch's depends_on names (per job a JSON array or NULL),
-- one row per job and parent in the order given (a parent named twice counts once): a string
-- is a job's id, an integer the batch's own element at that position (from 0; only an earlier
-- element, so no cycle can be built). ids: the batch's jobs, in input order.
CREATE OR REPLACE FUNCTION soniq._dependency_edges(depends jsonb[], ids uuid[]) RETURNS TABLE (n bigint, parent uuid)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    spec record;
    element jsonb;
    named uuid;
    parents uuid[];
BEGIN
    FOR spec IN SELECT d.value, d.n FROM unnest(depends) WITH ORDINALITY AS d(value, n) WHERE d.value IS NOT NULL LOOP
        IF jsonb_typeof(spec.value) <> 'array' THEN
            RAISE EXCEPTION 'jobs[%]: depends_on must be a JSON array of job ids and positions, got a JSON %',
                            spec.n - 1, jsonb_typeof(spec.value)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        parents := '{}';
        FOR element IN SELECT e FROM jsonb_array_elements(spec.value) e LOOP
            IF jsonb_typeof(element) = 'number' THEN
                IF element::numeric <> trunc(element::numeric) OR element::numeric < 0
                   OR element::numeric >= spec.n - 1 THEN
                    RAISE EXCEPTION 'jobs[%]: depends_on names position %, which is not an earlier job of the batch',
                                    spec.n - 1, element
                        USING ERRCODE = 'invalid_parameter_value',
                              HINT = 'A position counts from 0 and names an element before this one.';
                END IF;
                named := ids[element::numeric::int + 1];
            ELSE
                BEGIN
                    named := CASE WHEN jsonb_typeof(element) = 'string' THEN (element #>> '{}')::uuid END;
                EXCEPTION WHEN invalid_text_representation THEN
                    named := NULL;
                END;
                IF named IS NULL THEN
                    RAISE EXCEPTION 'jobs[%]: depends_on entry % is neither a job id nor a position', spec.n - 1, element
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
            IF named <> ALL (parents) THEN
                parents := parents || named;
            END IF;
        END LOOP;
        PERFORM soniq._check_dependency_options(parents, NULL, format('jobs[%s]: ', spec.n - 1));
        RETURN QUERY SELECT spec.n, p FROM unnest(parents) p;
    END LOOP;
END
$$;

-- _insert_dependent_jobs: _insert_jobs for a batch in which some jobs depend on others
-- (depends: per job a JSON array of ids and earlier positions, or NULL; on_failure: per job
-- 'cancel', 'run' or NULL; labelled: errors name the element, as enqueue_many's do). The
-- jobs go in as any batch does, then each dependent takes its state from its parents', read
-- under a lock: waiting while any is unfinished, queued when all are done, cancelled when one
-- was cancelled or died (unless on_failure is 'run', which counts a failed parent as
-- finished). A parent must be a job of the caller's login (or any job, for an admin); another
-- login's job is reported as unknown. Unique and dedup jobs cannot depend on others: a
-- waiting job is not deduplicated, and becoming queued could collide with a duplicate.
CREATE OR REPLACE FUNCTION soniq._insert_dependent_jobs(batch soniq._job_batch, depends jsonb[], on_failure text[],
                                             labelled boolean)
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ids uuid[];
    bad record;
    children bigint[];  -- the dependency edges: children[k] (a position) depends on parents[k]
    parents uuid[];
    known uuid[];       -- the parents outside the batch, with their states
    states text[];
    failed uuid[];
BEGIN
    SELECT o.n, o.value INTO bad FROM unnest(on_failure) WITH ORDINALITY AS o(value, n)
     WHERE o.value IS NOT NULL AND (o.value NOT IN ('cancel', 'run') OR depends[o.n] IS NULL) LIMIT 1;
    IF FOUND THEN
        PERFORM soniq._check_dependency_options(NULL, bad.value,
                                                CASE WHEN labelled THEN format('jobs[%s]: ', bad.n - 1) ELSE '' END);
    END IF;
    ids := ARRAY(SELECT soniq._insert_jobs(batch));
    SELECT array_agg(e.n), array_agg(e.parent) INTO children, parents FROM soniq._dependency_edges(depends, ids) e;

    SELECT DISTINCT e.n INTO bad FROM unnest(children) e(n) JOIN soniq.jobs j ON j.id = ids[e.n]
     WHERE j.args_hash IS NOT NULL OR j.dedup_key IS NOT NULL
     ORDER BY e.n LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%a unique or dedup job cannot depend on other jobs',
                        CASE WHEN labelled THEN format('jobs[%s]: ', bad.n - 1) ELSE '' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A waiting job is not deduplicated: drop unique and dedup_key, or depends_on.';
    END IF;

    -- The parents outside the batch, locked in id order in one statement (so two enqueues
    -- cannot deadlock on them; a parent's outcome waits for this transaction), with their
    -- states; then the dead ones.
    WITH locked AS (
        SELECT j.id, CASE j.status WHEN 'done' THEN 'finished' WHEN 'cancelled' THEN 'failed' ELSE 'open' END AS state
          FROM soniq.jobs j
         WHERE j.id = ANY (parents) AND j.id <> ALL (ids)
           AND (j.enqueued_by = session_user OR soniq._is_admin())
         ORDER BY j.id
           FOR NO KEY UPDATE OF j
    ), dead AS (
        SELECT x.id, 'failed' AS state FROM soniq.dead_letter_jobs x
         WHERE x.id = ANY (parents) AND (x.enqueued_by = session_user OR soniq._is_admin())
    )
    SELECT array_agg(k.id), array_agg(k.state) INTO known, states
      FROM (SELECT * FROM locked UNION ALL SELECT * FROM dead) k;
    SELECT e.n, e.parent INTO bad FROM unnest(children, parents) e(n, parent)
     WHERE e.parent <> ALL (ids) AND e.parent <> ALL (coalesce(known, '{}'))
     ORDER BY e.n LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%depends_on names job %, which does not exist',
                        CASE WHEN labelled THEN format('jobs[%s]: ', bad.n - 1) ELSE '' END, bad.parent
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A done job is pruned after its result TTL; a job that depends on it can no longer name it.';
    END IF;
    UPDATE soniq.jobs j SET has_dependents = true WHERE j.id = ANY (parents) AND NOT j.has_dependents;

    -- The dependents' states. A parent of the batch itself is open (it was just written).
    WITH edge AS (
        SELECT e.n, e.parent, e.k, coalesce(s.state, 'open') AS state
          FROM unnest(children, parents) WITH ORDINALITY AS e(n, parent, k)
          LEFT JOIN unnest(known, states) AS s(id, state) ON s.id = e.parent
    ), counted AS (
        SELECT ids[e.n] AS id, array_agg(e.parent ORDER BY e.k) AS parents,
               coalesce(on_failure[e.n], 'cancel') AS on_failure,
               count(*) FILTER (WHERE e.state = 'open') AS open,
               (array_agg(e.parent ORDER BY e.k) FILTER (WHERE e.state = 'failed'))[1] AS failed_parent
          FROM edge e
         GROUP BY e.n
    ), placed AS (
        UPDATE soniq.jobs j
           SET depends_on = c.parents, on_dependency_failure = c.on_failure, waiting_on = c.open,
               status = CASE WHEN c.failed_parent IS NOT NULL AND c.on_failure = 'cancel' THEN 'cancelled'
                             WHEN c.open > 0 THEN 'waiting' ELSE 'queued' END,
               cancelled_by = CASE WHEN c.on_failure = 'cancel' THEN c.failed_parent END,
               finished_at = CASE WHEN c.failed_parent IS NOT NULL AND c.on_failure = 'cancel' THEN now() END,
               last_error = CASE WHEN c.failed_parent IS NOT NULL AND c.on_failure = 'cancel'
                                 THEN format('cancelled: job %s, which it depends on, had failed', c.failed_parent) END
          FROM counted c
         WHERE j.id = c.id
        RETURNING j.id, j.status
    )
    SELECT array_agg(p.id) INTO failed FROM placed p WHERE p.status = 'cancelled';
    -- A dependent cancelled here may have dependents in the same batch.
    IF failed IS NOT NULL THEN
        PERFORM soniq._dependency_failed(failed, 'was cancelled: a job it depends on had failed');
    END IF;
    RETURN QUERY SELECT unnest(ids);
END
$$;

-- _release: count the given jobs, now done, off the waiting jobs that depend on them; one
-- with none left becomes queued (due as it was scheduled). With failed, the jobs failed
-- (cancelled or dead) and only the dependents that run anyway (on_dependency_failure 'run')
-- count them off. One statement for any number of dependents; locked in id order, so two
-- outcomes releasing the same jobs wait for each other instead of deadlocking.
CREATE OR REPLACE FUNCTION soniq._release(parents uuid[], failed boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due text[];
BEGIN
    WITH counted AS (
        SELECT c.id, (SELECT count(*) FROM unnest(c.depends_on) p WHERE p = ANY (parents)) AS n
          FROM soniq.jobs c
         WHERE c.status = 'waiting' AND c.depends_on && parents
           AND (NOT failed OR c.on_dependency_failure = 'run')
         ORDER BY c.id
           FOR NO KEY UPDATE
    ), released AS (
        UPDATE soniq.jobs c
           SET waiting_on = c.waiting_on - k.n, updated_at = now(),
               status = CASE WHEN c.waiting_on - k.n > 0 THEN 'waiting' ELSE 'queued' END
          FROM counted k
         WHERE c.id = k.id
        RETURNING c.status, c.queue, c.scheduled_at
    )
    SELECT array_agg(DISTINCT r.queue) INTO due
      FROM released r WHERE r.status = 'queued' AND (r.scheduled_at IS NULL OR r.scheduled_at <= now());
    PERFORM soniq._wake(q) FROM unnest(due) q;
END
$$;

-- _dependency_failed: the given jobs failed (cancelled, dead or deleted; why says which): their
-- waiting dependents end cancelled, each naming the parent in cancelled_by and last_error, and
-- so on down (a cancelled dependent fails its own); dependents that run anyway count the
-- failure off instead (_release).
CREATE OR REPLACE FUNCTION soniq._dependency_failed(parents uuid[], why text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    failed uuid[] := parents;
    followed soniq._ended_job[];  -- the dependents cancelled that others await or count
BEGIN
    WHILE failed IS NOT NULL LOOP
        PERFORM soniq._release(failed, failed => true);
        WITH doomed AS (
            SELECT c.id, (SELECT p FROM unnest(c.depends_on) p WHERE p = ANY (failed) LIMIT 1) AS cause
              FROM soniq.jobs c
             WHERE c.status = 'waiting' AND c.depends_on && failed AND c.on_dependency_failure = 'cancel'
             ORDER BY c.id
               FOR NO KEY UPDATE
        ), cancelled AS (
            UPDATE soniq.jobs c
               SET status = 'cancelled', cancelled_by = d.cause, finished_at = now(), updated_at = now(),
                   last_error = format('cancelled: job %s, which it depends on, %s', d.cause, why)
              FROM doomed d
             WHERE c.id = d.id
            RETURNING c.id, c.has_dependents, c.awaited, c.batch_id
        )
        -- Their own dependents are the next level here; their awaiters and batches are told.
        SELECT array_agg(k.id) FILTER (WHERE k.has_dependents),
               array_agg(ROW(k.id, false, k.awaited, k.batch_id)::soniq._ended_job)
                   FILTER (WHERE k.awaited OR k.batch_id IS NOT NULL)
          INTO failed, followed
          FROM cancelled k;
        IF followed IS NOT NULL THEN
            PERFORM soniq._finished(followed, 'cancelled', why);
        END IF;
        why := 'was cancelled: a job it depends on failed';
    END LOOP;
END
$$;

-- _dependents_follow: a job that yielded to its queued duplicate (_requeue's 'merged') hands
-- its waiting dependents to the duplicate, which does the work instead.
CREATE OR REPLACE FUNCTION soniq._dependents_follow(yielded uuid, duplicate uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    state text;
BEGIN
    SELECT j.status INTO state FROM soniq.jobs j WHERE j.id = duplicate FOR UPDATE;
    UPDATE soniq.jobs c SET depends_on = array_replace(c.depends_on, yielded, duplicate), updated_at = now()
     WHERE c.status = 'waiting' AND c.depends_on && ARRAY[yielded];
    UPDATE soniq.jobs j SET has_dependents = true WHERE j.id = duplicate;
    IF state = 'done' THEN
        PERFORM soniq._release(ARRAY[duplicate]);
    ELSIF state IS NULL OR state = 'cancelled' THEN
        PERFORM soniq._dependency_failed(ARRAY[duplicate], 'ended before it ran');
    END IF;
END
$$;

-- _rearm: a dead job replayed as a new job: the dependents its death cancelled wait again, for
-- the replayed job in its place, and so do theirs, level by level. A dependent with another
-- failed parent (cancelled, or still dead) stays cancelled. Returns (re-armed, left cancelled).
CREATE OR REPLACE FUNCTION soniq._rearm(dead uuid, replayed uuid, OUT rearmed bigint, OUT left_cancelled bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    causes uuid[] := ARRAY[dead];      -- the failed jobs whose dependents this level re-arms
    parents uuid[] := ARRAY[replayed];  -- the ids those dependents name now (the index's key)
    level_rearmed uuid[];
    level_left bigint;
BEGIN
    rearmed := 0;
    left_cancelled := 0;
    UPDATE soniq.jobs c SET depends_on = array_replace(c.depends_on, dead, replayed)
     WHERE c.depends_on && ARRAY[dead] AND c.cancelled_by = dead AND c.status = 'cancelled';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE soniq.jobs j SET has_dependents = true WHERE j.id = replayed;
    WHILE causes IS NOT NULL LOOP
        WITH candidate AS (
            SELECT c.id,
                   count(*) FILTER (WHERE p.status IN ('queued', 'processing', 'waiting')) AS open,
                   count(*) FILTER (WHERE p.status = 'cancelled'
                                       OR (p.status IS NULL AND EXISTS (SELECT FROM soniq.dead_letter_jobs x
                                                                         WHERE x.id = u.parent))) AS blocked
              FROM soniq.jobs c
             CROSS JOIN LATERAL unnest(c.depends_on) AS u(parent)
              LEFT JOIN soniq.jobs p ON p.id = u.parent
             WHERE c.depends_on && parents AND c.cancelled_by = ANY (causes) AND c.status = 'cancelled'
             GROUP BY c.id
        ), waiting_again AS (
            UPDATE soniq.jobs c
               SET status = 'waiting', waiting_on = k.open, cancelled_by = NULL, finished_at = NULL,
                   last_error = NULL, updated_at = now()
              FROM candidate k
             WHERE c.id = k.id AND k.blocked = 0 AND k.open > 0
            RETURNING c.id
        )
        SELECT (SELECT array_agg(w.id) FROM waiting_again w), (SELECT count(*) FROM candidate k WHERE k.blocked > 0)
          INTO level_rearmed, level_left;
        rearmed := rearmed + coalesce(cardinality(level_rearmed), 0);
        left_cancelled := left_cancelled + level_left;
        causes := level_rearmed;
        parents := level_rearmed;
    END LOOP;
END
$$;

-- dependency_results: the jobs a job depends on, in the order it named them, with their
-- state and result: what its handler reads of its parents, through the lease of the attempt
-- it holds. status 'pruned' for a done parent already pruned (its result TTL passed and no
-- dependent waited for it any longer).
CREATE OR REPLACE FUNCTION soniq.dependency_results(job_id uuid, worker_id uuid, attempt int) RETURNS TABLE (
    parent_id  uuid,
    task_name  text,
    status     text,
    result     jsonb,
    last_error text
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    parents uuid[];
BEGIN
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    SELECT j.depends_on INTO parents FROM soniq.jobs j WHERE j.id = dependency_results.job_id;
    RETURN QUERY
    SELECT u.parent, i.task_name, coalesce(i.status, 'pruned'), i.result, i.last_error
      FROM unnest(parents) WITH ORDINALITY AS u(parent, n)
      LEFT JOIN soniq.job_info i ON i.id = u.parent
     ORDER BY u.n;
END
$$;

-- At most this many failed jobs' ids are kept per batch (the counts are exact).
CREATE OR REPLACE FUNCTION soniq._max_batch_failures() RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- batch_open: a new batch whose callback is a job of callback_task with callback_args (a JSON
-- object; the callback's args are these plus "batch": its id and counts), in callback_queue
-- (NULL: the task's). Returns its id. The batch is the caller's login's.
CREATE OR REPLACE FUNCTION soniq.batch_open(callback_task text, callback_args jsonb DEFAULT '{}', callback_queue text DEFAULT NULL)
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
CREATE OR REPLACE FUNCTION soniq._join_batch(batch uuid, ids uuid[]) RETURNS void
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
CREATE OR REPLACE FUNCTION soniq.batch_close(batch_id uuid) RETURNS boolean
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
CREATE OR REPLACE FUNCTION soniq._batch_count(ended soniq._ended_job[], ended_as text) RETURNS void
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
CREATE OR REPLACE FUNCTION soniq._batch_callback(complete soniq.batches) RETURNS void
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
CREATE OR REPLACE FUNCTION soniq.batch_status(batch_id uuid) RETURNS TABLE (
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

-- _hold_lease: lock the job of a current lease FOR SHARE (a take-back waits for the caller);
-- _lease_refused's error when the lease is gone.
CREATE OR REPLACE FUNCTION soniq._hold_lease(job_id uuid, worker_id uuid, attempt int) RETURNS void
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

-- report_progress: record an attempt's progress (a JSON value of at most 64 KiB). Returns
-- whether it was kept: false when the job's progress was written less than a second ago.
CREATE OR REPLACE FUNCTION soniq.report_progress(job_id uuid, worker_id uuid, attempt int, progress jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    kept boolean;
BEGIN
    IF pg_column_size(progress) > 65536 THEN
        RAISE EXCEPTION 'progress takes % bytes, more than the 64 KiB it may take', pg_column_size(progress)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Report a summary: counts, a percentage, a phase.';
    END IF;
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    INSERT INTO soniq.job_progress AS p (job_id, progress, progress_at)
    VALUES (report_progress.job_id, report_progress.progress, now())
    ON CONFLICT ON CONSTRAINT job_progress_pkey DO UPDATE
       SET progress = excluded.progress, progress_at = excluded.progress_at
     WHERE p.progress_at IS NULL OR p.progress_at <= now() - interval '1 second'
    RETURNING true INTO kept;
    RETURN coalesce(kept, false);  -- not kept: written less than a second ago
END
$$;

-- save_checkpoint: what the job's next attempt resumes from (a JSON value of at most 1 MiB;
-- NULL clears it). Every call is kept.
CREATE OR REPLACE FUNCTION soniq.save_checkpoint(job_id uuid, worker_id uuid, attempt int, checkpoint jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_column_size(checkpoint) > 1048576 THEN
        RAISE EXCEPTION 'the checkpoint takes % bytes, more than the 1 MiB it may take', pg_column_size(checkpoint)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Store large state elsewhere and checkpoint a reference.';
    END IF;
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    INSERT INTO soniq.job_progress AS p (job_id, checkpoint) VALUES (save_checkpoint.job_id, save_checkpoint.checkpoint)
    ON CONFLICT ON CONSTRAINT job_progress_pkey DO UPDATE SET checkpoint = excluded.checkpoint;
END
$$;

-- read_checkpoint: the checkpoint an earlier attempt (or this one) saved; NULL if none.
CREATE OR REPLACE FUNCTION soniq.read_checkpoint(job_id uuid, worker_id uuid, attempt int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    RETURN (SELECT p.checkpoint FROM soniq.job_progress p WHERE p.job_id = read_checkpoint.job_id);
END
$$;

-- _await_jobs: mark jobs as awaited (enqueue's awaitable).
CREATE OR REPLACE FUNCTION soniq._await_jobs(ids uuid[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.jobs j SET awaited = true WHERE j.id = ANY (ids) AND NOT j.awaited
$$;

-- job_result: where a job the caller's login enqueued stands, with its result once done and
-- its last error: what its producer awaits (admins see every job's). No row when unknown, or
-- enqueued by another login (or deleted, or pruned); status 'dead' when dead.
CREATE OR REPLACE FUNCTION soniq.job_result(job_id uuid) RETURNS TABLE (status text, result jsonb, last_error text)
LANGUAGE sql STABLE AS $$
    SELECT i.status, i.result, i.last_error
      FROM soniq.job_info i WHERE i.id = job_id AND (i.enqueued_by = session_user OR soniq._is_admin())
$$;

-- _follow_task: the queued (and waiting) jobs of a task take its newly published options wherever their
-- producer left an option out (soniq.jobs.inherited), so a job enqueued before its task was
-- published runs with the task's retries, timeout, retry policy, result TTL, priority and
-- queue. Options given at enqueue stay; a job already processing is not changed. A job keeps
-- at least one attempt.
CREATE OR REPLACE FUNCTION soniq._follow_task(task soniq.tasks) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due_in text[];
BEGIN
    -- Only jobs whose options change are written: a worker publishing its tasks for the first
    -- time over a backlog of jobs that already run with the defaults rewrites none of them.
    WITH follows AS (
        SELECT j.id,
               CASE WHEN j.inherited & 1 <> 0 THEN coalesce(task.queue, 'default') ELSE j.queue END AS queue,
               CASE WHEN j.inherited & 2 <> 0 THEN coalesce(task.priority, 100) ELSE j.priority END AS priority,
               CASE WHEN j.inherited & 4 <> 0 THEN greatest(coalesce(task.retries, 3) + 1, j.attempts + 1)
                    ELSE j.max_attempts END AS max_attempts,
               CASE WHEN j.inherited & 8 <> 0 THEN nullif(coalesce(task.timeout, interval '300 seconds'), interval '0')
                    ELSE j.timeout END AS timeout,
               CASE WHEN j.inherited & 16 <> 0 THEN task.retry_policy ELSE j.retry_policy END AS retry_policy,
               CASE WHEN j.inherited & 32 <> 0 THEN coalesce(task.result_ttl, interval '300 seconds')
                    ELSE j.result_ttl END AS result_ttl
          FROM soniq.jobs j
         WHERE j.task_name = task.task_name AND j.status IN ('queued', 'waiting') AND j.inherited <> 0
    ), followed AS (
        UPDATE soniq.jobs j
           SET queue = f.queue, priority = f.priority, max_attempts = f.max_attempts, timeout = f.timeout,
               retry_policy = f.retry_policy, result_ttl = f.result_ttl, updated_at = now()
          FROM follows f
         WHERE j.id = f.id
           AND (j.queue, j.priority, j.max_attempts, j.timeout, j.retry_policy, j.result_ttl)
               IS DISTINCT FROM (f.queue, f.priority, f.max_attempts, f.timeout, f.retry_policy, f.result_ttl)
        RETURNING j.queue, j.scheduled_at, j.status
    )
    SELECT array_agg(DISTINCT f.queue) INTO due_in
      FROM followed f WHERE f.status = 'queued' AND (f.scheduled_at IS NULL OR f.scheduled_at <= now());
    PERFORM soniq._wake(q) FROM unnest(due_in) q;
END
$$;

-- _spec_ok: whether a job spec of enqueue_many is well formed: an object of known keys whose
-- numbers are in range (the rest is _job_ok's). _refuse_specs says what is wrong with one.
CREATE OR REPLACE FUNCTION soniq._spec_ok(spec jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(spec) = 'object' THEN
               spec - '{task_name,args,queue,priority,scheduled_at,retries,unique,dedup_key,timeout,producer_id,depends_on,on_dependency_failure,awaitable,batch_id}'::text[]
                   = '{}'
               AND coalesce(jsonb_typeof(spec -> 'unique'), 'null') IN ('boolean', 'null')
               AND coalesce(jsonb_typeof(spec -> 'awaitable'), 'null') IN ('boolean', 'null')
               AND coalesce(jsonb_typeof(spec -> 'batch_id'), 'null') IN ('string', 'null')
               AND soniq._json_in_range(spec -> 'priority', 1, 1000, true)
               AND soniq._json_in_range(spec -> 'retries', 0, 1000, true)
               AND soniq._json_in_range(spec -> 'timeout', 0, 2592000, false)
           ELSE false END
$$;

-- _refuse_specs: raise the error of the first bad job spec, named by its position (from 0):
-- the slow path of a batch that failed its set-based checks. Always raises.
CREATE OR REPLACE FUNCTION soniq._refuse_specs(jobs jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    spec jsonb;
    n int := 0;
    unknown text;
    message text;
    code text;
BEGIN
    -- One exception block around the whole loop; n survives the rollback, so the error names
    -- the element that failed.
    BEGIN
        FOR spec IN SELECT value FROM jsonb_array_elements(jobs) LOOP
            IF jsonb_typeof(spec) <> 'object' THEN
                RAISE EXCEPTION 'a job spec must be a JSON object, got a JSON %', jsonb_typeof(spec)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            SELECT string_agg(k, ', ') INTO unknown FROM jsonb_object_keys(spec) k
             WHERE k NOT IN ('task_name', 'args', 'queue', 'priority', 'scheduled_at', 'retries',
                             'unique', 'dedup_key', 'timeout', 'producer_id', 'depends_on',
                             'on_dependency_failure', 'awaitable', 'batch_id');
            IF unknown IS NOT NULL THEN
                RAISE EXCEPTION 'unknown key(s) in job spec: %', unknown
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(spec -> 'unique') NOT IN ('boolean', 'null') THEN
                RAISE EXCEPTION 'unique must be true or false, got %', spec -> 'unique'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(spec -> 'awaitable') NOT IN ('boolean', 'null') THEN
                RAISE EXCEPTION 'awaitable must be true or false, got %', spec -> 'awaitable'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(spec -> 'batch_id') NOT IN ('string', 'null') THEN
                RAISE EXCEPTION 'batch_id must be a batch''s id, got %', spec -> 'batch_id'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM (spec ->> 'batch_id')::uuid;
            PERFORM soniq._check_job(
                task_name    => spec ->> 'task_name',
                args         => coalesce(spec -> 'args', '{}'),
                queue        => spec ->> 'queue',
                priority     => soniq._integer(spec -> 'priority', 'priority', 1, 1000),
                scheduled_at => (spec ->> 'scheduled_at')::timestamptz,
                retries      => soniq._integer(spec -> 'retries', 'retries', 0, 1000),
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
    RAISE EXCEPTION 'enqueue_many refused a batch in which no job spec breaks a rule'
        USING ERRCODE = 'internal_error', HINT = 'This is a bug in Soniq: _job_ok and _check_job disagree.';
END
$$;

-- _job_row: one job as it will be stored. An option the caller left NULL resolves from the
-- task's registered defaults, then from the system defaults (queue 'default', priority 100,
-- retries 3, timeout 300 s, result TTL 300 s); the concurrency key from the args field the
-- task names. well_formed: whether the job's fields are in range (_job_ok; its names are
-- _names_ok's). The one place options resolve, for enqueue and enqueue_many alike; inlined
-- into their statements (no call per job). A single enqueue reads it directly: as a batch of
-- one (_job_rows) its INSERT cost it ~25 µs more.
CREATE OR REPLACE FUNCTION soniq._job_row(
    task_name    text,
    args         jsonb,
    queue        text,
    priority     int,
    scheduled_at timestamptz,
    retries      int,
    unique_job   boolean,
    dedup_key    text,
    timeout      interval,
    producer_id  text
) RETURNS TABLE (
    task_name    text,
    args         jsonb,
    queue        text,
    priority     int,
    max_attempts int,
    scheduled_at timestamptz,
    timeout      interval,
    retry_policy jsonb,
    result_ttl   interval,
    args_hash    text,
    dedup_key    text,
    producer_id  text,
    inherited    int,
    well_formed  boolean,
    concurrency_key text
)
LANGUAGE sql STABLE AS $$
    SELECT _job_row.task_name, _job_row.args,
           coalesce(_job_row.queue, t.queue, 'default'),
           coalesce(_job_row.priority, t.priority, 100),
           coalesce(_job_row.retries, t.retries, 3) + 1,
           _job_row.scheduled_at,
           nullif(coalesce(_job_row.timeout, t.timeout, interval '300 seconds'), interval '0'),
           t.retry_policy,
           coalesce(t.result_ttl, interval '300 seconds'),
           -- jsonb's text form is canonical (keys sorted, whitespace fixed), so equal args hash equal.
           CASE WHEN coalesce(_job_row.unique_job, t.unique_job, false)
                THEN encode(sha256(convert_to(_job_row.args::text, 'UTF8')), 'hex') END,
           _job_row.dedup_key,
           _job_row.producer_id,
           -- What the caller left out follows the task's options while the job waits (_follow_task).
           16 | 32 | CASE WHEN _job_row.queue IS NULL THEN 1 ELSE 0 END
                   | CASE WHEN _job_row.priority IS NULL THEN 2 ELSE 0 END
                   | CASE WHEN _job_row.retries IS NULL THEN 4 ELSE 0 END
                   | CASE WHEN _job_row.timeout IS NULL THEN 8 ELSE 0 END,
           coalesce(soniq._job_ok(_job_row.args, _job_row.priority, _job_row.retries, _job_row.timeout,
                                  _job_row.scheduled_at, _job_row.dedup_key, _job_row.producer_id), false),
           soniq._concurrency_key(_job_row.args #>> t.concurrency_key)
      FROM (SELECT) one
      LEFT JOIN soniq.tasks t ON t.task_name = _job_row.task_name
$$;

-- _job_rows: a batch's jobs as they will be stored (_job_row), one per element of the arrays
-- (all of one length), n their position from 1.
CREATE OR REPLACE FUNCTION soniq._job_rows(batch soniq._job_batch) RETURNS TABLE (
    n            bigint,
    task_name    text,
    args         jsonb,
    queue        text,
    priority     int,
    max_attempts int,
    scheduled_at timestamptz,
    timeout      interval,
    retry_policy jsonb,
    result_ttl   interval,
    args_hash    text,
    dedup_key    text,
    producer_id  text,
    inherited    int,
    well_formed  boolean,
    concurrency_key text
)
LANGUAGE sql STABLE AS $$
    SELECT r.n, g.*
      FROM unnest(batch.task_names, batch.args, batch.queues, batch.priorities, batch.scheduled_ats,
                  batch.retries, batch.unique_jobs, batch.dedup_keys, batch.timeouts, batch.producer_ids)
           WITH ORDINALITY AS r(task_name, args, queue, priority, scheduled_at, retries, unique_job,
                                dedup_key, timeout, producer_id, n)
     CROSS JOIN LATERAL soniq._job_row(r.task_name, r.args, r.queue, r.priority, r.scheduled_at, r.retries,
                                       r.unique_job, r.dedup_key, r.timeout, r.producer_id) g
$$;

-- _insert_jobs: the set-based enqueue behind enqueue_many and enqueue: one job per element of
-- the arrays, ids returned in input order; if any element is bad nothing is written and the
-- error names the first (_refuse_specs). A unique or dedup job with a queued duplicate of the
-- same login — in the table or earlier in the same batch — returns that job's id and writes
-- nothing (another login's jobs never match: a duplicate reveals nothing of them).
CREATE OR REPLACE FUNCTION soniq._insert_jobs(batch soniq._job_batch) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET jit = off  -- as _insert_unique_jobs: a large batch must not wait for a compiler
-- One plan for every batch size: planned for the batch at hand, a batch of one (a unique
-- enqueue) looked cheaper than the generic plan and was planned again at every call, ~1.2 ms.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    ids uuid[];        -- by position: the job's id, or its queued duplicate's
    pending bigint[];  -- positions of unique and dedup jobs neither written nor matched yet
    due text[];
BEGIN
    IF NOT soniq._names_ok(batch.task_names, batch.queues) THEN
        PERFORM soniq._refuse_specs(soniq._as_specs(batch));
    END IF;

    -- Every job is checked as it is made (a bad one stops the statement before it commits
    -- anything: _refuse_specs raises). Plain jobs cannot collide with one another and go in
    -- without ON CONFLICT, whose speculative insertion costs ~3 µs a row; ids are made in input
    -- order, the claim's tie-break. Unique and dedup jobs follow.
    WITH job AS MATERIALIZED (
        SELECT soniq.uuid_v7() AS id, r.*,
               CASE WHEN NOT r.well_formed THEN soniq._refuse_specs(soniq._as_specs(batch)) END AS refused
          FROM (SELECT * FROM soniq._job_rows(batch)
                 ORDER BY 1) r
    ), written AS (
        INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                     retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key)
        SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
               g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key
          FROM job g
         WHERE g.args_hash IS NULL AND g.dedup_key IS NULL
        RETURNING j.queue, j.scheduled_at
    )
    SELECT array_agg(CASE WHEN g.args_hash IS NULL AND g.dedup_key IS NULL THEN g.id END ORDER BY g.n),
           array_agg(g.n ORDER BY g.n) FILTER (WHERE g.args_hash IS NOT NULL OR g.dedup_key IS NOT NULL),
           (SELECT array_agg(DISTINCT w.queue) FROM written w WHERE w.scheduled_at IS NULL OR w.scheduled_at <= now())
      INTO ids, pending, due
      FROM job g;
    IF pending IS NOT NULL THEN
        ids := soniq._insert_unique_jobs(batch, ids, pending);
    END IF;
    PERFORM soniq._wake(q) FROM unnest(due) q;
    RETURN QUERY SELECT unnest(ids);
END
$$;

-- _insert_unique_jobs: _insert_jobs' second half: the unique and dedup jobs at positions
-- pending go in with ON CONFLICT DO NOTHING; one not written takes its queued duplicate's id
-- (the dedup key's first, then the task's and args'); one whose duplicate left the queued
-- state between the two statements goes round again. Returns ids with those positions filled.
CREATE OR REPLACE FUNCTION soniq._insert_unique_jobs(batch soniq._job_batch, ids uuid[], pending bigint[]) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE
-- Before soniq.jobs is analyzed its estimates are wild, and a look-up that is an index probe
-- a job can look costly enough to JIT-compile: 0.2 s a batch, for nothing.
SET jit = off
SET plan_cache_mode = force_generic_plan  -- as _insert_jobs
AS $$
DECLARE
    tried uuid[];
    hashes text[];
    written uuid[];
    due text[];
BEGIN
    FOR turn IN 1..10 LOOP
        WITH job AS MATERIALIZED (
            SELECT soniq.uuid_v7() AS id, r.*
              FROM (SELECT * FROM soniq._job_rows(batch) x
                     WHERE x.n IN (SELECT unnest(pending))
                     ORDER BY 1) r
        ), inserted AS (
            INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                         retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key)
            SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
                   g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key
              FROM job g
             -- In key order, as every batch: two batches sharing keys wait for each other in
             -- one order, never in a cycle (a deadlock). The earlier of duplicates goes first.
             ORDER BY g.dedup_key, g.task_name, g.args_hash, g.n
            ON CONFLICT DO NOTHING
            RETURNING j.id, j.queue, j.scheduled_at
        )
        SELECT array_agg(g.id ORDER BY g.n), array_agg(g.args_hash ORDER BY g.n),
               (SELECT array_agg(w.id) FROM inserted w),
               (SELECT array_agg(DISTINCT w.queue) FROM inserted w WHERE w.scheduled_at IS NULL OR w.scheduled_at <= now())
          INTO tried, hashes, written, due
          FROM job g;
        PERFORM soniq._wake(q) FROM unnest(due) q;

        -- This statement sees the rows just written, the batch's own among them. (LIMIT keeps
        -- each look-up an index probe per job: pulled up into a join, the planner may scan the
        -- table instead, and a growing table before its ANALYZE took seconds a batch.)
        WITH outcome AS MATERIALIZED (
            SELECT p.n, coalesce(w.id, by_key.id, by_args.id) AS id
              FROM unnest(pending, tried, hashes) AS p(n, id, args_hash)
              LEFT JOIN unnest(written) AS w(id) ON w.id = p.id
              LEFT JOIN LATERAL (
                  SELECT j.id FROM soniq.jobs j
                   WHERE w.id IS NULL AND j.status = 'queued' AND j.enqueued_by = session_user
                     AND j.dedup_key = batch.dedup_keys[p.n]
                   LIMIT 1) by_key ON true
              LEFT JOIN LATERAL (
                  SELECT j.id FROM soniq.jobs j
                   WHERE w.id IS NULL AND by_key.id IS NULL AND j.status = 'queued'
                     AND j.enqueued_by = session_user
                     AND j.task_name = batch.task_names[p.n] AND j.args_hash = p.args_hash
                   LIMIT 1) by_args ON true
        )
        SELECT array_agg(coalesce(o.id, i.id) ORDER BY i.k),
               array_agg(i.k ORDER BY i.k) FILTER (WHERE o.n IS NOT NULL AND o.id IS NULL)
          INTO ids, pending
          FROM unnest(ids) WITH ORDINALITY AS i(id, k)
          LEFT JOIN outcome o ON o.n = i.k;
        IF pending IS NULL THEN
            RETURN ids;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not enqueue % after repeated deduplication races', batch.task_names[pending[1]]
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END
$$;

-- enqueue: add one job and return its id. Options omitted here resolve from the task's
-- registered defaults, then from the system defaults (queue 'default', priority 100,
-- retries 3, timeout 300 s). With unique_job (a hash of the args) or a dedup_key, while a
-- matching job of the same login is queued the call returns that job's id and writes nothing
-- (another login's jobs never match: a duplicate reveals nothing of them). With depends_on
-- (at most 1,000 jobs of the same login) the job waits until they are all done; if one is
-- cancelled or dies it is cancelled too, or runs anyway with on_dependency_failure 'run'
-- (sql/dependencies.sql). With awaitable, its end notifies soniq_job_finished (a duplicate
-- returned instead is marked so: sql/awaiting.sql). With batch_id it joins an open batch of
-- the same login (sql/batches.sql). Runs in the caller's transaction: rolled back, the job
-- never existed.
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
    producer_id  text        DEFAULT NULL,
    depends_on   uuid[]      DEFAULT NULL,
    on_dependency_failure text DEFAULT NULL,
    awaitable    boolean     DEFAULT false,
    batch_id     uuid        DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job record;
    id uuid;
BEGIN
    -- The common case checked in one expression; a bad call pays for finding out why.
    IF NOT coalesce(soniq._check_task_name(task_name)
                    AND (queue IS NULL OR soniq._check_queue_name(queue))
                    AND soniq._job_ok(args, priority, retries, timeout, scheduled_at, dedup_key, producer_id),
                    false) THEN
        PERFORM soniq._check_job(task_name, args, queue, priority, scheduled_at, retries, dedup_key, timeout,
                                 producer_id);
    END IF;
    IF awaitable OR batch_id IS NOT NULL THEN
        id := soniq.enqueue(task_name, args, queue, priority, scheduled_at, retries, unique_job, dedup_key, timeout,
                            producer_id, depends_on, on_dependency_failure);
        IF batch_id IS NOT NULL THEN
            PERFORM soniq._join_batch(batch_id, ARRAY[id]);
        END IF;
        IF awaitable THEN
            PERFORM soniq._await_jobs(ARRAY[id]);
        END IF;
        RETURN id;
    END IF;
    IF depends_on IS NOT NULL OR on_dependency_failure IS NOT NULL THEN
        PERFORM soniq._check_dependency_options(depends_on, on_dependency_failure, '');
        RETURN soniq._insert_dependent_jobs(
            ROW(ARRAY[task_name], ARRAY[args], ARRAY[queue], ARRAY[priority], ARRAY[scheduled_at], ARRAY[retries],
                ARRAY[unique_job], ARRAY[dedup_key], ARRAY[timeout], ARRAY[producer_id]),
            ARRAY[to_jsonb(depends_on)], ARRAY[on_dependency_failure], labelled => false);
    END IF;
    -- A plain job is written here; a unique or dedup one, whose duplicate may be queued, takes
    -- the batch path, which finds it.
    INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                 retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key)
    SELECT soniq.uuid_v7(), g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
           g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key
      FROM soniq._job_row(task_name, args, queue, priority, scheduled_at, retries, unique_job, dedup_key, timeout,
                          producer_id) g
     WHERE g.args_hash IS NULL AND g.dedup_key IS NULL
    RETURNING j.id, j.queue INTO job;
    IF FOUND THEN
        IF enqueue.scheduled_at IS NULL OR enqueue.scheduled_at <= now() THEN
            PERFORM soniq._wake(job.queue);
        END IF;
        RETURN job.id;
    END IF;
    RETURN soniq._insert_jobs(ROW(ARRAY[task_name], ARRAY[args], ARRAY[queue], ARRAY[priority], ARRAY[scheduled_at],
                                  ARRAY[retries], ARRAY[unique_job], ARRAY[dedup_key], ARRAY[timeout],
                                  ARRAY[producer_id]));
END
$$;

-- complete_many: finish many attempts of one worker in one round trip. Returns the ids it
-- completed; an id missing from the result was not held under that lease (it was taken
-- back) and stays as it is. A job whose result TTL is 0 is deleted at once. Jobs that wait
-- for the completed ones count them off, and become queued when none is left.
CREATE OR REPLACE FUNCTION soniq.complete_many(
    job_ids   uuid[],
    worker_id uuid,
    attempts  int[],
    results   jsonb[] DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    completed uuid[];
    freed text[];  -- the queues of the jobs completed
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
    SELECT array_agg(f.id), array_agg(DISTINCT f.queue),
           array_agg(ROW(f.id, f.has_dependents, f.awaited, f.batch_id)::soniq._ended_job)
               FILTER (WHERE f.has_dependents OR f.awaited OR f.batch_id IS NOT NULL)
      INTO completed, freed, followed
      FROM finished f;
    PERFORM soniq._slots_freed(freed);
    -- A later statement, which sees a dependent whose enqueue this one waited for.
    IF followed IS NOT NULL THEN
        PERFORM soniq._finished(followed, 'done', NULL);
    END IF;
    RETURN QUERY SELECT unnest(completed);
END
$$;

-- abort: the worker ends its attempt and the job as cancelled (the handler cancelled
-- itself, or heartbeat reported a cancellation request); the jobs that depend on it are
-- cancelled too (or run, if they said so).
CREATE OR REPLACE FUNCTION soniq.abort(job_id uuid, worker_id uuid, attempt int, reason text DEFAULT NULL) RETURNS void
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

-- _bury: move jobs into the dead letter with a reason and their last error; the jobs that
-- depend on them are cancelled (or run, if they said so), their awaiters and batches told.
CREATE OR REPLACE FUNCTION soniq._bury(job_ids uuid[], reason text, error text) RETURNS int
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

-- _requeue: put a processing job (locked by the caller) back in the queue: a retry, a snooze
-- or a take-back, with its attempts, due at run_at (NULL: at once) and error as its last error.
-- The rule for duplicates: while a unique or dedup job ran, the same job may have been
-- enqueued again (allowed: it was no longer queued). The returning job then yields to that
-- queued duplicate, which does the work once: it ends cancelled, its last error saying so
-- and naming the duplicate. Returns 'queued' or 'merged'.
CREATE OR REPLACE FUNCTION soniq._requeue(job soniq.jobs, attempts int, run_at timestamptz, error text) RETURNS text
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
CREATE OR REPLACE FUNCTION soniq._take_back(worker_ids uuid[], why text, job_ids uuid[] DEFAULT NULL) RETURNS int
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

-- cancel_job: a queued or waiting job becomes cancelled and never runs (and so do the jobs
-- that depend on it, unless they run anyway); a processing job is flagged, and its worker
-- learns it from its next heartbeat. Returns false when the job already finished (done,
-- cancelled or dead).
CREATE OR REPLACE FUNCTION soniq.cancel_job(job_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_status text;
    ended soniq.jobs;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    SELECT j.status INTO current_status FROM soniq.jobs j WHERE j.id = cancel_job.job_id FOR UPDATE;
    IF current_status IN ('queued', 'waiting') THEN
        UPDATE soniq.jobs j SET status = 'cancelled', finished_at = now(), updated_at = now()
         WHERE j.id = cancel_job.job_id
        RETURNING j.* INTO ended;
        PERFORM soniq._ended(ended, 'cancelled', 'was cancelled');
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

-- delete_job: remove a job in any state (a processing job's lease is revoked with it); the
-- jobs waiting for it are cancelled (or run, if they said so).
CREATE OR REPLACE FUNCTION soniq.delete_job(job_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    deleted soniq.jobs;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    DELETE FROM soniq.jobs j WHERE j.id = delete_job.job_id RETURNING j.* INTO deleted;
    IF FOUND THEN
        IF deleted.status = 'processing' THEN
            PERFORM soniq._slots_freed(ARRAY[deleted.queue]);  -- its slot of a limit is free
        END IF;
        PERFORM soniq._ended(deleted, 'cancelled', 'was deleted');
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = delete_job.job_id) THEN
        RAISE EXCEPTION 'job % is in the dead letter', job_id USING ERRCODE = 'no_data_found',
            HINT = 'Use soniq.dead_letter_delete() for dead jobs.';
    END IF;
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
END
$$;

-- list_jobs: jobs newest first, filtered by queue and status (waiting, queued, processing,
-- done, cancelled), paged by row_limit and row_offset. Dead jobs: soniq.dead_letter_list().
CREATE OR REPLACE FUNCTION soniq.list_jobs(
    queue      text DEFAULT NULL,
    status     text DEFAULT NULL,
    row_limit  int  DEFAULT 100,
    row_offset int  DEFAULT 0
) RETURNS SETOF soniq.job_info
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF list_jobs.queue IS NOT NULL THEN
        PERFORM soniq._check_queue_name(list_jobs.queue);
    END IF;
    IF list_jobs.status NOT IN ('waiting', 'queued', 'processing', 'done', 'cancelled') THEN
        RAISE EXCEPTION 'status must be waiting, queued, processing, done or cancelled, got %', list_jobs.status
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
CREATE OR REPLACE FUNCTION soniq.queue_stats(queue text DEFAULT NULL) RETURNS TABLE (
    total       bigint,
    queued      bigint,
    processing  bigint,
    done        bigint,
    cancelled   bigint,
    dead_letter bigint,
    waiting     bigint   -- since 0.9.0: waiting for the jobs they depend on
)
LANGUAGE sql STABLE AS $$
    WITH live AS (
        SELECT count(*) FILTER (WHERE j.status = 'waiting') AS waiting,
               count(*) FILTER (WHERE j.status = 'queued') AS queued,
               count(*) FILTER (WHERE j.status = 'processing') AS processing,
               count(*) FILTER (WHERE j.status = 'done') AS done,
               count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled
          FROM soniq.jobs j
         WHERE $1 IS NULL OR j.queue = $1
    ), dead AS (
        SELECT count(*) AS dead_letter FROM soniq.dead_letter_jobs d WHERE $1 IS NULL OR d.queue = $1
    )
    SELECT l.waiting + l.queued + l.processing + l.done + l.cancelled + d.dead_letter,
           l.queued, l.processing, l.done, l.cancelled, d.dead_letter, l.waiting
      FROM live l, dead d
$$;

-- replay: mint a fresh job from a dead one (new id, same args and policy; queue, priority
-- and max_attempts may be overridden). Attempts start again from 0 unless reset_attempts is
-- false (then max_attempts must leave an attempt). The dead row stays, with its
-- resurrection_count incremented. Returns the new job's id. With unless_replayed, a dead job
-- that was replayed before is left alone and NULL is returned: running the same replay twice,
-- or two operators at once, makes one job (the dead row is locked while it is replayed). The
-- jobs its death cancelled (and theirs) wait for the new job instead, unless another job they
-- depend on failed too; a notice says how many wait again and how many stay cancelled.
CREATE OR REPLACE FUNCTION soniq.replay(
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
    dependents record;
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
        PERFORM soniq._check_queue_name(replay.queue);
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
                            retry_policy, result_ttl, producer_id, enqueued_by, concurrency_key)
    VALUES (new_id, dead.task_name, dead.args, coalesce(replay.queue, dead.queue),
            coalesce(replay.priority, dead.priority), attempts_so_far,
            coalesce(replay.max_attempts, dead.max_attempts),
            dead.timeout, dead.retry_policy, dead.result_ttl, dead.producer_id, dead.enqueued_by,
            -- the key as the task names it now (the dead letter keeps none)
            soniq._concurrency_key(dead.args #>> (SELECT t.concurrency_key FROM soniq.tasks t
                                                   WHERE t.task_name = dead.task_name)));
    PERFORM soniq._wake(coalesce(replay.queue, dead.queue));
    SELECT * INTO dependents FROM soniq._rearm(dead_job_id, new_id);
    IF dependents.rearmed + dependents.left_cancelled > 0 THEN
        RAISE NOTICE 'replayed job %: % job(s) that depend on it wait again, % stay cancelled (another job they depend on failed)',
                     new_id, dependents.rearmed, dependents.left_cancelled;
    END IF;
    RETURN new_id;
END
$$;

-- dead_letter_move: move a job that is not running (waiting, queued or cancelled) into the
-- dead letter by hand, reason manual_move.
CREATE OR REPLACE FUNCTION soniq.dead_letter_move(job_id uuid, note text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_status text;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    SELECT j.status INTO current_status FROM soniq.jobs j WHERE j.id = dead_letter_move.job_id FOR UPDATE;
    IF current_status IS NULL THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    ELSIF current_status NOT IN ('waiting', 'queued', 'cancelled') THEN
        RAISE EXCEPTION 'job % is %; only a waiting, queued or cancelled job can be moved to the dead letter', job_id, current_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM soniq._bury(ARRAY[job_id], 'manual_move', note);
END
$$;

-- prune_jobs: delete done jobs whose result TTL has passed (but not while a job that
-- depends on them has yet to run: it reads their results) and cancelled jobs finished more
-- than retention ago (and batches finished that long ago), up to batch_size of each per batch and at most max_batches
-- batches (the control plane runs one batch per transaction). Returns how many were deleted.
CREATE OR REPLACE FUNCTION soniq.prune_jobs(retention interval DEFAULT '7 days', batch_size int DEFAULT 1000,
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

-- await_job: wait up to timeout (0 to 1 hour) for a job of the caller's login to end, and
-- return its status (done, cancelled or dead; on a timeout, where it stands), result and last
-- error. A procedure: CALL it outside a transaction block (inside one PostgreSQL refuses its
-- COMMIT with 2D000). It looks every 10 ms at first, then every 40 ms, committing in between,
-- so no transaction stays open while it waits; a runner LISTENs instead. P0002 when the job
-- is unknown (or another login's, or deleted).
CREATE OR REPLACE PROCEDURE soniq.await_job(job_id uuid, timeout interval, INOUT status text DEFAULT NULL,
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

-- enqueue_many (specs): a JSON array of job specs, each an object with the keys task_name
-- (required), args, queue, priority, scheduled_at, retries, unique, dedup_key,
-- timeout (seconds), producer_id, depends_on, on_dependency_failure, awaitable and batch_id. Ids come back in
-- input order; an error names the offending element, and nothing is written. Jobs are
-- deduplicated as by enqueue, against the table and within the batch (a later element
-- returns the id of an earlier duplicate). depends_on is an array of job ids (strings) and
-- positions (integers from 0) of earlier elements of the same call, so a whole graph of jobs
-- goes in with one call.
CREATE OR REPLACE FUNCTION soniq.enqueue_many(jobs jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    well_formed boolean;
    task_names text[];
    args jsonb[];
    queues text[];
    priorities int[];
    scheduled_ats timestamptz[];
    retries int[];
    unique_jobs boolean[];
    dedup_keys text[];
    timeouts interval[];
    producer_ids text[];
    depends jsonb[];
    on_failure text[];
    dependent boolean;  -- whether any job depends on others
    followed boolean;   -- whether any has dependencies, is awaitable or joins a batch
    awaited bigint[];   -- the positions of awaitable jobs
    batches uuid[];     -- by position: the batch each joins, or NULL
    batch uuid;
    ids uuid[];
BEGIN
    PERFORM soniq._require(jobs, 'jobs');
    IF jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'jobs must be a JSON array of job specs, got a JSON %', jsonb_typeof(jobs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The specs as columns, in one pass; a spec that does not convert (a scheduled_at that does
    -- not parse) or is not well formed sends the batch to _refuse_specs, which says why.
    BEGIN
        SELECT bool_and(soniq._spec_ok(e.spec)),
               array_agg(e.spec ->> 'task_name' ORDER BY e.n),
               array_agg(coalesce(e.spec -> 'args', '{}') ORDER BY e.n),
               array_agg(e.spec ->> 'queue' ORDER BY e.n),
               array_agg((e.spec ->> 'priority')::numeric::int ORDER BY e.n),
               array_agg((e.spec ->> 'scheduled_at')::timestamptz ORDER BY e.n),
               array_agg((e.spec ->> 'retries')::numeric::int ORDER BY e.n),
               array_agg((e.spec ->> 'unique')::boolean ORDER BY e.n),
               array_agg(e.spec ->> 'dedup_key' ORDER BY e.n),
               array_agg(make_interval(secs => (e.spec ->> 'timeout')::float8) ORDER BY e.n),
               array_agg(e.spec ->> 'producer_id' ORDER BY e.n),
               array_agg(nullif(e.spec -> 'depends_on', 'null') ORDER BY e.n),
               array_agg(e.spec ->> 'on_dependency_failure' ORDER BY e.n),
               bool_or(e.spec ? 'depends_on' OR e.spec ? 'on_dependency_failure'),
               bool_or(e.spec ?| '{depends_on,on_dependency_failure,awaitable,batch_id}'),
               array_agg(e.n) FILTER (WHERE (e.spec ->> 'awaitable')::boolean),
               array_agg((e.spec ->> 'batch_id')::uuid ORDER BY e.n)
          INTO well_formed, task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs,
               dedup_keys, timeouts, producer_ids, depends, on_failure, dependent, followed, awaited, batches
          FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(spec, n);
    EXCEPTION WHEN data_exception THEN
        well_formed := false;
    END;
    IF NOT coalesce(well_formed, true) THEN
        PERFORM soniq._refuse_specs(jobs);
    END IF;
    IF NOT coalesce(followed, false) THEN
        -- Plain jobs, the common case: straight through.
        RETURN QUERY SELECT soniq._insert_jobs(ROW(task_names, args, queues, priorities, scheduled_ats, retries,
                                                   unique_jobs, dedup_keys, timeouts, producer_ids));
        RETURN;
    END IF;
    IF dependent THEN
        ids := ARRAY(SELECT soniq._insert_dependent_jobs(
            ROW(task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs, dedup_keys, timeouts,
                producer_ids),
            depends, on_failure, labelled => true));
    ELSE
        ids := ARRAY(SELECT soniq._insert_jobs(ROW(task_names, args, queues, priorities, scheduled_ats, retries,
                                                   unique_jobs, dedup_keys, timeouts, producer_ids)));
    END IF;
    FOR batch IN SELECT DISTINCT b FROM unnest(batches) b WHERE b IS NOT NULL ORDER BY 1 LOOP
        PERFORM soniq._join_batch(batch, ARRAY(SELECT ids[u.n] FROM unnest(batches) WITH ORDINALITY AS u(b, n)
                                                WHERE u.b = batch));
    END LOOP;
    IF awaited IS NOT NULL THEN
        PERFORM soniq._await_jobs(ARRAY(SELECT ids[n] FROM unnest(awaited) n));
    END IF;
    RETURN QUERY SELECT unnest(ids);
END
$$;

-- job_info: one job as lookups return it; status 'dead' for a dead-lettered job. Since 0.9.0:
-- depends_on, the jobs it waits (or waited) for; progress and progress_at, what its attempt
-- last reported (sql/progress.sql).
CREATE OR REPLACE VIEW soniq.job_info AS
SELECT j.id, j.task_name, j.args, j.status, j.queue, j.priority, j.attempts, j.max_attempts,
       j.scheduled_at, j.timeout, j.last_error, j.result, j.worker_id, j.cancel_requested,
       j.producer_id, NULL::text AS dead_letter_reason, j.created_at, j.updated_at,
       j.started_at, j.finished_at, j.expires_at, j.enqueued_by, j.depends_on, p.progress, p.progress_at
  FROM soniq.jobs j
  LEFT JOIN soniq.job_progress p ON p.job_id = j.id
UNION ALL
SELECT d.id, d.task_name, d.args, 'dead', d.queue, d.priority, d.attempts, d.max_attempts,
       NULL, d.timeout, d.last_error, NULL, NULL, false,
       d.producer_id, d.dead_letter_reason, d.original_created_at, d.moved_to_dead_letter_at,
       NULL, d.moved_to_dead_letter_at, NULL, d.enqueued_by, NULL, NULL, NULL
  FROM soniq.dead_letter_jobs d;

-- queue_overview: one row per known queue with its jobs by state and its pause state.
-- runnable = queued and due now; scheduled = queued for later; unserved = queued jobs of a
-- task no live worker serves in this queue (see check_unserved); limits = the queue's flow
-- control (NULL: none) and waiting_for_limit = runnable jobs held back by a reached limit
-- (soniq.queue_limits has them per key); waiting = jobs waiting for the jobs they depend on.
CREATE OR REPLACE VIEW soniq.queue_overview AS
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
         WHERE u.queue = n.name) AS unserved,
       (SELECT l.settings FROM soniq.queue_limits l WHERE l.queue = n.name AND l.concurrency_key IS NULL) AS limits,
       coalesce((SELECT l.waiting_for_limit FROM soniq.queue_limits l
                  WHERE l.queue = n.name AND l.concurrency_key IS NULL), 0) AS waiting_for_limit,
       count(j.id) FILTER (WHERE j.status = 'waiting') AS waiting
  FROM names n
  LEFT JOIN soniq.queues q ON q.name = n.name
  LEFT JOIN soniq.jobs j ON j.queue = n.name
 GROUP BY n.name, q.paused;

-- Privileges as a fresh install sets them (sql/privileges.sql).
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
         WHERE p.pronamespace = 'soniq'::regnamespace AND p.proname NOT LIKE '\_%' AND p.prokind = 'f'
    LOOP
        IF language IN ('sql', 'plpgsql') THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', api);
        END IF;
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO soniq_admin', api);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA soniq FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA soniq FROM PUBLIC;
GRANT USAGE ON SCHEMA soniq TO soniq_producer, soniq_worker, soniq_admin;

GRANT EXECUTE ON FUNCTION
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text, uuid[], text, boolean, uuid),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text),
    soniq.job_status(uuid),
    soniq.job_result(uuid),  -- the outcome of a job its login enqueued, which it may await
    soniq.batch_open(text, jsonb, text),  -- batches of its login's jobs, with a callback
    soniq.batch_close(uuid),
    soniq.batch_status(uuid)
TO soniq_producer;

GRANT EXECUTE ON FUNCTION
    soniq.register_task(text, jsonb),  -- a worker publishes its handlers' options
    soniq.register_worker(text, int, text[], int, text, jsonb, text[]),
    soniq.heartbeat(uuid),
    soniq.heartbeat(uuid, uuid[], interval),
    soniq.deregister_worker(uuid),
    soniq.claim(uuid, text[], int, text[]),
    soniq.complete(uuid, uuid, int, jsonb),
    soniq.complete_many(uuid[], uuid, int[], jsonb[]),
    soniq.fail(uuid, uuid, int, text, interval, text),
    soniq.fail_many(uuid[], uuid, int[], text[], interval[], text[]),
    soniq.snooze(uuid, uuid, int, interval, text),
    soniq.abort(uuid, uuid, int, text),
    soniq.dependency_results(uuid, uuid, int),  -- a handler reads the results of the jobs it depends on
    soniq.report_progress(uuid, uuid, int, jsonb),
    soniq.save_checkpoint(uuid, uuid, int, jsonb),
    soniq.read_checkpoint(uuid, uuid, int),
    soniq.held_back(text[], text[])
TO soniq_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_admin;

-- await_job runs with the caller's rights (a procedure that commits cannot be SECURITY
-- DEFINER) and reads only through job_result.
GRANT EXECUTE ON PROCEDURE soniq.await_job(uuid, interval, text, jsonb, text) TO soniq_producer, soniq_admin;
