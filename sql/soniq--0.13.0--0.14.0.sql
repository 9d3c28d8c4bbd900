-- Soniq 0.13.0 -> 0.14.0: cheaper claims.
-- * claim runs with plan_cache_mode = force_generic_plan and without incremental sorts: its
--   pick was planned again at every claim (the plan for the batch size given looked cheaper
--   than one for any), and planning took four times as long as the pick itself.
-- * A claim from several named queues reads each queue's jobs from its own index (the new
--   _pick_each_queue, in claim and _claim_limited): the general index walked past every queued
--   job of the queues not named. So does a claim from every queue while a paused queue, or
--   one with flow control, holds queued jobs (the general index walked past them, 18-21 ms a
--   claim behind 100,000). Both claim and _claim_limited pick through the new _pick_queues;
--   the queues with jobs come from the new _queued_queues (the walk _claim_limited wrote out).
-- * _queue_room is PL/pgSQL: the SQL function it was, not inlined where a limited claim calls
--   it, parsed and planned its body at every call.
-- Then the privileges as a fresh install sets them (sql/privileges.sql).

-- claim: lease up to batch_size due jobs to a worker, in priority order (lower number
-- first), never-scheduled before scheduled, oldest first. Skips paused queues and rows
-- other claimers hold. queues / task_names restrict the claim (NULL: any); a worker
-- passes the task names it can run so it never takes a job it does not know. A queue with flow
-- control (soniq.queue_configure) gives no more than its limits allow (sql/flow.sql); such a
-- claim must run under READ COMMITTED, where each statement sees what the claims before it took.
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
    created_at   timestamptz,
    traceparent  text  -- (since 0.12.0) the producer's trace context, for the attempt's span
)
LANGUAGE plpgsql VOLATILE
-- Claims read the claim index in order, never sort the backlog: right after a bulk load,
-- before ANALYZE, the planner would otherwise pick a sort of every queued row. (The one sort
-- left, of the claimed batch, then looks costly enough to JIT-compile: no JIT either.)
-- Each statement is planned once per session (since 0.14.0): the pick was planned again at
-- every claim, its plan for the batch size given costing less than one for any, and planning
-- took four times as long as running it. Without sorts the one plan for any value is the
-- index read in claim order (an incremental sort of a queue's jobs was the only other).
SET enable_sort = off
SET enable_incremental_sort = off
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
DECLARE
    paused text[];
    limited soniq.queues[];
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
    SELECT coalesce(array_agg(q.name) FILTER (WHERE q.paused), '{}'),
           array_agg(q ORDER BY q.name) FILTER (WHERE NOT q.paused AND soniq._limited(q)
                                                  AND (claim.queues IS NULL OR q.name = ANY (claim.queues)))
      INTO paused, limited
      FROM soniq.queues q;

    IF limited IS NOT NULL THEN
        picked := soniq._claim_limited(claim.queues, claim.batch_size, claim.task_names, paused, limited);
    -- One queue's batch from its own index (queue first: the hot path, written out), any
    -- other selection's through _pick_queues. The three reads in claim order (this one,
    -- _pick_each_queue's and _pick_queues') differ only in the index: keep them in step.
    ELSIF cardinality(claim.queues) = 1 THEN
        SELECT array_agg(b.id) INTO picked FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.queue >= claim.queues[1] AND j.queue <= claim.queues[1]
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
               AND (claim.task_names IS NULL OR j.task_name = ANY (claim.task_names))
               AND j.queue <> ALL (paused)
             ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
             LIMIT claim.batch_size
               FOR UPDATE SKIP LOCKED) b;
    ELSE
        picked := nullif(soniq._pick_queues(claim.queues, paused, claim.batch_size, claim.task_names), '{}');
    END IF;
    IF picked IS NULL THEN
        -- A malformed name matches no job: say so instead of claiming nothing forever (checked
        -- only here, off the path of claims that find work).
        PERFORM soniq._check_queue_name(q) FROM unnest(claim.queues) q;
        PERFORM soniq._check_task_name(t) FROM unnest(claim.task_names) t;
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
           c.scheduled_at, c.created_at, c.traceparent
      FROM claimed c
     ORDER BY c.priority, c.scheduled_at NULLS FIRST, c.created_at, c.id;
    -- (Read again: a rate set while this claim waited for the lock counts its starts.)
    IF EXISTS (SELECT FROM soniq.queues q
                WHERE q.name IN (SELECT (l).name FROM unnest(limited) l) AND q.rate_period IS NOT NULL) THEN
        PERFORM soniq._record_starts(picked);
    END IF;
END
$$;

-- _claim_limited: claim's pick when its selection has queues with flow control (limited, in
-- name order): each such queue with runnable jobs has its row locked, then gives what its
-- limits allow (_pick_limited); the other queues of the selection give what they have; the
-- batch is the first batch_size of all of it in claim order. (A job picked and left out stays
-- locked, so skipped by other claimers, until the claim's transaction ends.)
CREATE OR REPLACE FUNCTION soniq._claim_limited(queues text[], batch_size int, task_names text[], paused text[],
                                     limited soniq.queues[])
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    queue soniq.queues;
    backlogged text[];   -- the limited queues with runnable jobs
    open_queues text[];  -- those this claim may take from
    picked uuid[];
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a claim from a queue with flow control must run under READ COMMITTED, not %',
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'A snapshot taken before other claims committed would count their jobs as not running.';
    END IF;
    -- The limited queues with runnable jobs of these tasks: the others give nothing, and are
    -- not locked (a worker serving every queue must not take turns on an empty queue's row).
    backlogged := ARRAY(SELECT (l).name FROM unnest(limited) l
                         WHERE EXISTS (SELECT FROM soniq.jobs j
                                        WHERE j.status = 'queued' AND j.queue >= (l).name AND j.queue <= (l).name
                                          AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                                          AND (task_names IS NULL OR j.task_name = ANY (task_names))));
    -- A queue at its limit whose outcomes will wake its workers anyway (held_back) is left
    -- out without its lock: claimers that cannot take anything do not queue up behind the one
    -- that can (each lock is held until its claim commits).
    open_queues := ARRAY(SELECT (l).name FROM unnest(limited) l
                          WHERE (l).name = ANY (backlogged)
                            AND NOT ((l).held_back AND soniq._queue_room(l, batch_size) <= 0));
    -- Locked first, all of them, then counted: a claimer that waited here sees what the one
    -- before it claimed.
    PERFORM FROM soniq.queues q WHERE q.name = ANY (open_queues) ORDER BY q.name FOR NO KEY UPDATE;

    -- The queues without limits (none, when every queue named has one).
    picked := soniq._pick_queues(queues, paused || ARRAY(SELECT (l).name FROM unnest(limited) l), batch_size, task_names);
    -- Each with its settings as they are now that it is locked (a change committed meanwhile
    -- counts from this claim on).
    FOR queue IN SELECT q.* FROM soniq.queues q WHERE q.name = ANY (open_queues) ORDER BY q.name LOOP
        picked := coalesce(picked, '{}') || soniq._pick_limited(queue, batch_size, task_names);
    END LOOP;
    IF cardinality(picked) > batch_size THEN
        picked := ARRAY(SELECT j.id FROM soniq.jobs j WHERE j.id = ANY (picked)
                         ORDER BY j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
                         LIMIT batch_size);
    END IF;
    RETURN nullif(picked, '{}');
END
$$;

-- _pick_queues: the first batch_size due jobs (of task_names, when given) of these queues
-- (NULL: every queue) but the excluded ones (paused, or counted by flow control), in claim
-- order, locked; '{}' when there are none. Named queues, and every queue while an excluded one
-- holds queued jobs, are read queue by queue (_pick_each_queue): the general index, read in
-- claim order, walks past the other queues' backlog job by job (55 ms a claim of two queues
-- behind 300,000 other jobs, 18-21 ms one of every queue behind a paused queue's 100,000).
CREATE OR REPLACE FUNCTION soniq._pick_queues(queues text[], excluded text[], batch_size int, task_names text[])
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    picked uuid[];
BEGIN
    IF queues IS NOT NULL
       OR EXISTS (SELECT FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue = ANY (excluded)) THEN
        RETURN soniq._pick_each_queue(
            ARRAY(SELECT n FROM unnest(coalesce(queues, ARRAY(SELECT soniq._queued_queues()))) n
                   WHERE n <> ALL (excluded)),
            batch_size, task_names);
    END IF;
    SELECT coalesce(array_agg(b.id), '{}') INTO picked FROM (
        SELECT j.id FROM soniq.jobs j
         WHERE j.status = 'queued'
           AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
           AND (task_names IS NULL OR j.task_name = ANY (task_names))
           AND j.queue <> ALL (excluded)
         ORDER BY j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
         LIMIT batch_size
           FOR UPDATE SKIP LOCKED) b;
    RETURN picked;
END
$$;

-- _queued_queues: the queues with queued jobs, one index probe each (a loose index scan).
CREATE OR REPLACE FUNCTION soniq._queued_queues() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE queued(name) AS (
        (SELECT j.queue FROM soniq.jobs j WHERE j.status = 'queued' ORDER BY j.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue > q.name
                 ORDER BY j.queue LIMIT 1)
          FROM queued q WHERE q.name IS NOT NULL
    )
    SELECT q.name FROM queued q WHERE q.name IS NOT NULL
$$;

-- _pick_each_queue: the first batch_size due jobs (of task_names, when given) of these queues
-- together, in claim order, locked: each queue's first batch_size read from its own index,
-- then the batch taken from all of them. Those read and left out stay locked, so skipped by
-- other claimers, until the claim's transaction ends. '{}' when there are none.
CREATE OR REPLACE FUNCTION soniq._pick_each_queue(queues text[], batch_size int, task_names text[]) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN ARRAY(
        SELECT h.id FROM (SELECT DISTINCT n FROM unnest(queues) n) q(name)
         CROSS JOIN LATERAL (
             SELECT j.id, j.priority, j.scheduled_at, j.created_at FROM soniq.jobs j
              WHERE j.status = 'queued' AND j.queue >= q.name AND j.queue <= q.name
                AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                AND (task_names IS NULL OR j.task_name = ANY (task_names))
              ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
              LIMIT batch_size
                FOR UPDATE SKIP LOCKED) h
         ORDER BY h.priority, h.scheduled_at NULLS FIRST, h.created_at, h.id
         LIMIT batch_size);
END
$$;

-- _queue_room: how many of want jobs the queue's own limits (not its per-key ones) let start
-- now, as this statement's snapshot sees the jobs running and the starts in the window.
-- PL/pgSQL, for its plan is kept (since 0.14.0): a call of the SQL function it was, not
-- inlined, parsed and planned its body again, a fifth of a limited claim.
CREATE OR REPLACE FUNCTION soniq._queue_room(queue soniq.queues, want int) RETURNS int
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN least(want,
                 queue.max_running - (SELECT count(*) FROM soniq.jobs j
                                       WHERE j.queue = queue.name AND j.status = 'processing'
                                         AND queue.max_running IS NOT NULL),
                 queue.rate_limit - (SELECT coalesce(sum(s.jobs), 0) FROM soniq.queue_starts s
                                      WHERE s.queue = queue.name AND queue.rate_limit IS NOT NULL
                                        AND s.started_at > now() - queue.rate_period))::int;
END
$$;

-- Privileges as a fresh install sets them (sql/privileges.sql).
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['soniq_producer', 'soniq_worker', 'soniq_admin', 'soniq_viewer'] LOOP
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
    IF NOT pg_catalog.pg_has_role('soniq_admin', 'soniq_viewer', 'MEMBER') THEN
        GRANT soniq_viewer TO soniq_admin;
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
GRANT USAGE ON SCHEMA soniq TO soniq_producer, soniq_worker, soniq_admin, soniq_viewer;

GRANT EXECUTE ON FUNCTION
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text, uuid[], text, boolean, uuid, text),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text, text),
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

-- soniq_viewer reads what an operator's screens show, and changes nothing.
GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_viewer;
GRANT EXECUTE ON FUNCTION
    soniq.get_job(uuid),
    soniq.list_jobs(text, text, int, int),
    soniq.queue_stats(text),
    soniq.dead_letter_get(uuid),
    soniq.dead_letter_list(text, text, text, timestamptz, timestamptz, text[], boolean, int, int),
    soniq.dead_letter_stats(interval),
    soniq.schedule_get(text),
    soniq.schedule_list(boolean)
TO soniq_viewer;

-- await_job runs with the caller's rights (a procedure that commits cannot be SECURITY
-- DEFINER) and reads only through job_result.
GRANT EXECUTE ON PROCEDURE soniq.await_job(uuid, interval, text, jsonb, text) TO soniq_producer, soniq_admin;
