-- Soniq SQL: dependencies between jobs (since 0.9.0). Conventions: sql/helpers.sql.
--
-- A job enqueued with depends_on waits (status 'waiting') until every job it names is done,
-- then becomes queued in the transaction that completed the last of them. The state lives on
-- the rows: jobs.depends_on (the parents), jobs.waiting_on (how many have not finished),
-- jobs.has_dependents (on a parent: some job depends on it, so its outcome looks for them; a
-- job without dependents pays nothing), jobs.on_dependency_failure ('cancel' or 'run') and
-- jobs.cancelled_by (the parent whose failure cancelled it, for a replay to re-arm it).
--
-- The race between a parent finishing and a dependent being enqueued: the enqueue locks each
-- parent row (FOR SHARE) and reads its state, so an outcome either commits first (the enqueue
-- then sees it finished) or waits for the enqueue to commit (and its own next statement, with
-- a newer snapshot, then finds the dependent).

-- At most this many parents per job (documented in the README).
CREATE FUNCTION soniq._max_parents() RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT 1000 $$;

-- _check_dependency_options: the rules of enqueue's depends_on and on_dependency_failure,
-- raised with prefix (a batch names the element) before the message.
CREATE FUNCTION soniq._check_dependency_options(depends_on uuid[], on_dependency_failure text, prefix text)
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
CREATE FUNCTION soniq._dependency_edges(depends jsonb[], ids uuid[]) RETURNS TABLE (n bigint, parent uuid)
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
CREATE FUNCTION soniq._insert_dependent_jobs(batch soniq._job_batch, depends jsonb[], on_failure text[],
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
CREATE FUNCTION soniq._release(parents uuid[], failed boolean DEFAULT false) RETURNS void
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
CREATE FUNCTION soniq._dependency_failed(parents uuid[], why text) RETURNS void
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
CREATE FUNCTION soniq._dependents_follow(yielded uuid, duplicate uuid) RETURNS void
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
CREATE FUNCTION soniq._rearm(dead uuid, replayed uuid, OUT rearmed bigint, OUT left_cancelled bigint)
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
CREATE FUNCTION soniq.dependency_results(job_id uuid, worker_id uuid, attempt int) RETURNS TABLE (
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
