-- Soniq 0.12.0 -> 0.13.0: a cheaper claim from a queue with per-key limits or fair share.
-- * _pick_by_key walks the keys with queued jobs until `room` of them have room, past the keys
--   at one of their limits only (it walked past every key with a job running), however many
--   (it stopped at twice the room, and came back empty behind keys at their limit while a key
--   further on had room), and finds the default key's jobs with an equality on the queue (a
--   range there read every queued job of a queue without default-key jobs).
-- Then the privileges as a fresh install sets them (sql/privileges.sql).

-- _pick_by_key: _pick_limited for a queue with per-key limits or fair share. Keys are visited
-- in rounds, from the one after the queue's cursor and wrapping around (the default key '' at
-- the wrap); in a round each key with room gives up to its weight times an equal share of what
-- is left to take, within its own limits. So a tenant with a huge backlog takes its turn like
-- one with a few jobs, and the next claim begins where this one stopped.
CREATE OR REPLACE FUNCTION soniq._pick_by_key(queue soniq.queues, room int, task_names text[], window_start timestamptz)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    at_limit int;      -- keys at one of their limits: walked past
    walk text[];
    keys text[];
    rooms int[];
    weights int[];
    share int;
    turn_keys text[];
    turn_asked int[];
    rounds int := 0;
    took uuid[];
    took_keys text[];
    picked uuid[] := '{}';
BEGIN
    -- Enough keys that `room` of them have room after those at a limit are left out (every
    -- other key walked has queued jobs and room for one at least). Not capped: a claim that
    -- walked fewer came back empty behind keys at their limit while a key further on had
    -- room, and its worker waited for the next outcome. The walk adds a probe per key at its
    -- limit, whose running jobs or starts in the window the counts here read anyway.
    SELECT (SELECT count(*) FROM (SELECT FROM soniq.jobs j
                                   WHERE j.queue = queue.name AND j.status = 'processing'
                                     AND queue.max_running_per_key IS NOT NULL
                                   GROUP BY j.concurrency_key HAVING count(*) >= queue.max_running_per_key) k)
         + (SELECT count(*) FROM (SELECT FROM soniq.queue_starts s
                                   WHERE s.queue = queue.name AND s.started_at > window_start
                                     AND queue.rate_limit_per_key IS NOT NULL
                                   GROUP BY s.concurrency_key HAVING sum(s.jobs) >= queue.rate_limit_per_key) k)
      INTO at_limit;
    walk := ARRAY(SELECT k FROM soniq._queued_keys(queue.name, coalesce(queue.key_cursor, ''), room + at_limit) k);
    IF cardinality(walk) < room + at_limit THEN
        -- Round the end: the default key, then the keys up to the cursor. (An equality, not the
        -- range of a read in claim order: the range left the key out of the index's bounds,
        -- and this check walked every queued job of a queue without default-key jobs.)
        IF EXISTS (SELECT FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue = queue.name AND j.concurrency_key = '') THEN
            walk := walk || ''::text;
        END IF;
        walk := walk || ARRAY(SELECT k FROM soniq._queued_keys(queue.name, '', room + at_limit - cardinality(walk)) k
                               WHERE k <= queue.key_cursor);
    END IF;

    -- Each key's room within its own limits, and its weight.
    WITH running AS (
        SELECT j.concurrency_key AS key, count(*) AS n FROM soniq.jobs j
         WHERE j.queue = queue.name AND j.status = 'processing' AND queue.max_running_per_key IS NOT NULL
         GROUP BY 1
    ), started AS (
        SELECT s.concurrency_key AS key, sum(s.jobs) AS n FROM soniq.queue_starts s
         WHERE s.queue = queue.name AND s.started_at > window_start AND queue.rate_limit_per_key IS NOT NULL
         GROUP BY 1
    ), key_room AS (
        SELECT w.key, w.ord,
               least(room, coalesce(queue.max_running_per_key - coalesce(r.n, 0), room),
                     coalesce(queue.rate_limit_per_key - coalesce(s.n, 0), room))::int AS room,
               coalesce((queue.key_weights ->> w.key)::int, 1) AS weight
          FROM unnest(walk) WITH ORDINALITY AS w(key, ord)
          LEFT JOIN running r ON r.key = w.key
          LEFT JOIN started s ON s.key = w.key
    )
    SELECT array_agg(k.key ORDER BY k.ord), array_agg(k.room ORDER BY k.ord), array_agg(k.weight ORDER BY k.ord)
      INTO keys, rooms, weights
      FROM key_room k WHERE k.room > 0;

    IF keys IS NULL AND cardinality(walk) > 0 THEN
        -- Every key walked is at its limit: the next claim walks on from the last of them.
        queue.key_cursor := walk[cardinality(walk)];
    END IF;
    WHILE room > 0 AND cardinality(keys) > 0 LOOP
        share := greatest(1, room / (SELECT sum(w) FROM unnest(weights) w));
        -- This round's turn: each key in walk order asks its weight's share within its room,
        -- until the round asks what is left to take.
        SELECT array_agg(a.key ORDER BY a.ord), array_agg(least(a.n, room - (a.total - a.n))::int ORDER BY a.ord)
          INTO turn_keys, turn_asked
          FROM (SELECT k.key, k.ord, least(k.room, k.weight * share) AS n,
                       sum(least(k.room, k.weight * share)) OVER (ORDER BY k.ord) AS total
                  FROM unnest(keys, rooms, weights) WITH ORDINALITY AS k(key, room, weight, ord)) a
         WHERE a.total - a.n < room;
        IF rounds = 0 THEN
            -- The next claim begins after the last key of this claim's first round.
            queue.key_cursor := coalesce(turn_keys[cardinality(turn_keys)], queue.key_cursor);
        END IF;
        rounds := rounds + 1;
        -- One statement a round: each key's next jobs in claim order.
        WITH taken AS (
            SELECT t.key, x.id
              FROM unnest(turn_keys, turn_asked) AS t(key, n)
             CROSS JOIN LATERAL (
                 SELECT j.id FROM soniq.jobs j
                  WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name AND j.concurrency_key >= t.key AND j.concurrency_key <= t.key
                    AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                    AND (task_names IS NULL OR j.task_name = ANY (task_names))
                    AND j.id <> ALL (picked)
                  ORDER BY j.queue, j.concurrency_key, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
                  LIMIT t.n
                    FOR UPDATE SKIP LOCKED) x
        )
        SELECT array_agg(x.id), array_agg(x.key) INTO took, took_keys FROM taken x;
        EXIT WHEN took IS NULL;
        picked := picked || took;
        room := room - cardinality(took);
        EXIT WHEN room <= 0;
        -- The next round: the keys this round did not reach first, then those that gave all
        -- they were asked and have room left.
        SELECT array_agg(k.key ORDER BY t.key IS NOT NULL, k.ord),
               array_agg(k.room - coalesce(g.n, 0) ORDER BY t.key IS NOT NULL, k.ord),
               array_agg(k.weight ORDER BY t.key IS NOT NULL, k.ord)
          INTO keys, rooms, weights
          FROM unnest(keys, rooms, weights) WITH ORDINALITY AS k(key, room, weight, ord)
          LEFT JOIN unnest(turn_keys, turn_asked) AS t(key, asked) ON t.key = k.key
          LEFT JOIN (SELECT g.key, count(*) AS n FROM unnest(took_keys) AS g(key) GROUP BY 1) g ON g.key = k.key
         WHERE t.key IS NULL OR (coalesce(g.n, 0) = t.asked AND k.room - t.asked > 0);
    END LOOP;
    UPDATE soniq.queues q SET key_cursor = queue.key_cursor
     WHERE q.name = queue.name AND q.key_cursor IS DISTINCT FROM queue.key_cursor;
    RETURN picked;
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
