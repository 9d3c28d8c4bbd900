-- Soniq 0.6.0 -> 0.7.0: flow control (sql/flow.sql): per-queue and per-key concurrency and
-- rate limits and fair share between keys, enforced in soniq.claim; a task's concurrency key
-- (register_task's concurrency_key, resolved at enqueue into jobs.concurrency_key).
\echo Use "ALTER EXTENSION soniq UPDATE TO '0.7.0'" to load this file. \quit

-- The columns, in the order a fresh install has them (each table's new ones last).
ALTER TABLE soniq.tasks ADD COLUMN concurrency_key text[];
ALTER TABLE soniq.queues
    ADD COLUMN max_running         int,
    ADD COLUMN max_running_per_key int,
    ADD COLUMN rate_limit          int,
    ADD COLUMN rate_limit_per_key  int,
    ADD COLUMN rate_period         interval,
    ADD COLUMN fair_share          boolean NOT NULL DEFAULT false,
    ADD COLUMN key_weights         jsonb,
    ADD COLUMN key_cursor          text,
    ADD COLUMN held_back           boolean NOT NULL DEFAULT false,
    ADD COLUMN wake_at             timestamptz,
    ADD COLUMN priority_aging      interval,
    ADD CONSTRAINT queues_limits_range CHECK (
        max_running BETWEEN 1 AND 100000 AND max_running_per_key BETWEEN 1 AND 100000
        AND rate_limit BETWEEN 1 AND 1000000 AND rate_limit_per_key BETWEEN 1 AND 1000000
        AND rate_period BETWEEN interval '1 second' AND interval '1 day'
        AND priority_aging BETWEEN interval '1 second' AND interval '1 day'),
    ADD CONSTRAINT queues_rate_has_period CHECK (
        (rate_limit IS NULL AND rate_limit_per_key IS NULL) OR rate_period IS NOT NULL),
    SET (fillfactor = 50);
-- A constant default: no rewrite of the table, every existing job in the default key.
ALTER TABLE soniq.jobs ADD COLUMN concurrency_key text NOT NULL DEFAULT '';
CREATE INDEX jobs_key_claim_idx ON soniq.jobs (queue, concurrency_key, priority, scheduled_at NULLS FIRST, created_at, id)
    WHERE status = 'queued';

CREATE TABLE soniq.queue_starts (
    queue           text NOT NULL,
    concurrency_key text NOT NULL,
    started_at      timestamptz NOT NULL,
    jobs            int NOT NULL
);
CREATE INDEX queue_starts_window_idx ON soniq.queue_starts (queue, started_at);

-- What sql/flow.sql defines.
-- _limited: whether claims of the queue go through flow control.
CREATE FUNCTION soniq._limited(queue soniq.queues) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT queue.max_running IS NOT NULL OR queue.max_running_per_key IS NOT NULL
        OR queue.rate_limit IS NOT NULL OR queue.rate_limit_per_key IS NOT NULL OR queue.fair_share
        OR queue.priority_aging IS NOT NULL
$$;

-- _concurrency_key: a job's key as stored, from the value of its task's key field in its args:
-- '' (the default key) when there is none; a value over 256 bytes is stored as its SHA-256, so
-- every key fits the index.
CREATE FUNCTION soniq._concurrency_key(value text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value IS NULL THEN ''
                WHEN octet_length(value) <= 256 THEN value
                ELSE 'sha256:' || encode(sha256(convert_to(value, 'UTF8')), 'hex') END
$$;

-- queue_configure: set a queue's flow control from a JSON object of settings; a key set to
-- JSON null removes that setting, a key left out keeps it. Settings:
--   max_running          1 to 100000: jobs of the queue processing at once, across every worker;
--   max_running_per_key  1 to 100000: the same for each concurrency key;
--   rate_limit           1 to 1000000: jobs started per rate_period (a sliding window);
--   rate_limit_per_key   1 to 1000000: the same for each concurrency key;
--   rate_period          seconds, 1 to 86400: the window of both rate limits;
--   fair_share           true: claims rotate across keys (implied by a per-key limit);
--   key_weights          {"key": n, ...}, n 1 to 100: a key's jobs per round (1 when not named);
--   priority_aging       seconds, 1 to 86400: a job's priority counts one better per this much
--                        time it has been due (off by default; not with fair share).
-- Takes effect at the next claim. Returns the queue's settings after the change.
CREATE FUNCTION soniq.queue_configure(name text, settings jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    unknown text;
    configured soniq.queues;
BEGIN
    PERFORM soniq._check_queue_name(name);
    PERFORM soniq._require(settings, 'settings');
    IF jsonb_typeof(settings) <> 'object' THEN
        RAISE EXCEPTION 'settings must be a JSON object, got a JSON %', jsonb_typeof(settings)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO unknown FROM jsonb_object_keys(settings) k
     WHERE k NOT IN ('max_running', 'max_running_per_key', 'rate_limit', 'rate_limit_per_key', 'rate_period',
                     'fair_share', 'key_weights', 'priority_aging');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown queue setting(s): %', unknown USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Known: max_running, max_running_per_key, rate_limit, rate_limit_per_key, rate_period, fair_share, key_weights, priority_aging.';
    END IF;
    IF coalesce(jsonb_typeof(settings -> 'fair_share'), 'null') NOT IN ('boolean', 'null') THEN
        RAISE EXCEPTION 'fair_share must be true or false, got %', settings -> 'fair_share'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM soniq._check_key_weights(settings -> 'key_weights');

    -- The settings as they will be: those given, over the queue's current ones.
    SELECT * INTO configured FROM soniq.queues q WHERE q.name = queue_configure.name FOR UPDATE;
    IF settings ? 'max_running' THEN
        configured.max_running := soniq._integer(settings -> 'max_running', 'max_running', 1, 100000);
    END IF;
    IF settings ? 'max_running_per_key' THEN
        configured.max_running_per_key :=
            soniq._integer(settings -> 'max_running_per_key', 'max_running_per_key', 1, 100000);
    END IF;
    IF settings ? 'rate_limit' THEN
        configured.rate_limit := soniq._integer(settings -> 'rate_limit', 'rate_limit', 1, 1000000);
    END IF;
    IF settings ? 'rate_limit_per_key' THEN
        configured.rate_limit_per_key :=
            soniq._integer(settings -> 'rate_limit_per_key', 'rate_limit_per_key', 1, 1000000);
    END IF;
    IF settings ? 'rate_period' THEN
        configured.rate_period := make_interval(secs => soniq._integer(settings -> 'rate_period', 'rate_period', 1, 86400));
    END IF;
    IF settings ? 'fair_share' THEN
        configured.fair_share := coalesce((settings ->> 'fair_share')::boolean, false);
    END IF;
    IF settings ? 'key_weights' THEN
        configured.key_weights := nullif(settings -> 'key_weights', 'null');
    END IF;
    IF settings ? 'priority_aging' THEN
        configured.priority_aging :=
            make_interval(secs => soniq._integer(settings -> 'priority_aging', 'priority_aging', 1, 86400));
    END IF;
    IF configured.priority_aging IS NOT NULL
       AND (configured.fair_share OR configured.max_running_per_key IS NOT NULL
            OR configured.rate_limit_per_key IS NOT NULL) THEN
        RAISE EXCEPTION 'priority_aging does not combine with fair share or per-key limits'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Fair share orders each key''s jobs by their own priority; clear one of the two.';
    END IF;
    IF (configured.rate_limit IS NOT NULL OR configured.rate_limit_per_key IS NOT NULL)
       AND configured.rate_period IS NULL THEN
        RAISE EXCEPTION 'a rate limit needs a rate_period' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Set rate_period (seconds, 1 to 86400) with rate_limit or rate_limit_per_key.';
    END IF;

    INSERT INTO soniq.queues AS q (name, max_running, max_running_per_key, rate_limit, rate_limit_per_key,
                                   rate_period, fair_share, key_weights, priority_aging)
    VALUES (queue_configure.name, configured.max_running, configured.max_running_per_key, configured.rate_limit,
            configured.rate_limit_per_key, configured.rate_period, coalesce(configured.fair_share, false),
            configured.key_weights, configured.priority_aging)
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE
       SET max_running = excluded.max_running, max_running_per_key = excluded.max_running_per_key,
           rate_limit = excluded.rate_limit, rate_limit_per_key = excluded.rate_limit_per_key,
           rate_period = excluded.rate_period, fair_share = excluded.fair_share,
           key_weights = excluded.key_weights, priority_aging = excluded.priority_aging,
           held_back = false, wake_at = NULL, updated_at = now()  -- the next claim marks it again
    RETURNING q.* INTO configured;
    -- A limit raised or removed may let waiting jobs start now.
    PERFORM soniq._wake(name);
    RETURN soniq._queue_settings(configured);
END
$$;

-- _check_key_weights: key_weights is JSON null or an object of whole numbers from 1 to 100.
CREATE FUNCTION soniq._check_key_weights(weights jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    entry record;
BEGIN
    IF weights IS NULL OR weights = 'null' THEN
        RETURN;
    END IF;
    IF jsonb_typeof(weights) <> 'object' THEN
        RAISE EXCEPTION 'key_weights must be a JSON object of key: weight, got a JSON %', jsonb_typeof(weights)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR entry IN SELECT * FROM jsonb_each(weights) LOOP
        PERFORM soniq._integer(entry.value, format('key_weights[%s]', entry.key), 1, 100);
    END LOOP;
END
$$;

-- _queue_settings: a queue's flow-control settings as queue_configure takes them (set ones only).
CREATE FUNCTION soniq._queue_settings(queue soniq.queues) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'max_running', queue.max_running, 'max_running_per_key', queue.max_running_per_key,
        'rate_limit', queue.rate_limit, 'rate_limit_per_key', queue.rate_limit_per_key,
        'rate_period', extract(epoch FROM queue.rate_period)::int,
        'fair_share', CASE WHEN queue.fair_share THEN true END, 'key_weights', queue.key_weights,
        'priority_aging', extract(epoch FROM queue.priority_aging)::int))
$$;

-- _queued_keys: up to max_keys concurrency keys with queued jobs in the queue, in order from
-- the first after `after` (so never the default key ''): one index probe per key (a loose
-- index scan), however many jobs each key holds.
CREATE FUNCTION soniq._queued_keys(queue text, after text, max_keys int) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE walk(key, n) AS (
        (SELECT j.concurrency_key, 1 FROM soniq.jobs j
          WHERE j.status = 'queued' AND j.queue = $1 AND j.concurrency_key > $2
          ORDER BY j.queue, j.concurrency_key LIMIT 1)
        UNION ALL
        SELECT (SELECT j.concurrency_key FROM soniq.jobs j
                 WHERE j.status = 'queued' AND j.queue = $1 AND j.concurrency_key > w.key
                 ORDER BY j.queue, j.concurrency_key LIMIT 1), w.n + 1
          FROM walk w WHERE w.key IS NOT NULL AND w.n < $3
    )
    SELECT w.key FROM walk w WHERE w.key IS NOT NULL
$$;

-- _queue_room: how many of want jobs the queue's own limits (not its per-key ones) let start
-- now, as this statement's snapshot sees the jobs running and the starts in the window.
CREATE FUNCTION soniq._queue_room(queue soniq.queues, want int) RETURNS int
LANGUAGE sql STABLE AS $$
    SELECT least(want,
                 queue.max_running - (SELECT count(*) FROM soniq.jobs j
                                       WHERE j.queue = queue.name AND j.status = 'processing'
                                         AND queue.max_running IS NOT NULL),
                 queue.rate_limit - (SELECT coalesce(sum(s.jobs), 0) FROM soniq.queue_starts s
                                      WHERE s.queue = queue.name AND queue.rate_limit IS NOT NULL
                                        AND s.started_at > now() - queue.rate_period))::int
$$;

-- _pick_limited: the jobs a claim may take from one limited queue, whose row the caller has
-- locked: up to want due jobs (of task_names, when given) within every limit of the queue,
-- locked for the claim. Records what the next outcome and the control plane need to wake the
-- queue's workers when a limit held jobs back (held_back, wake_at).
CREATE FUNCTION soniq._pick_limited(queue soniq.queues, want int, task_names text[]) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    limit_room int := soniq._queue_room(queue, 2147483647);  -- what the queue's own limits leave
    room int := least(want, limit_room);
    picked uuid[];
    window_start timestamptz := now() - queue.rate_period;
    kept_back boolean;  -- runnable jobs left that a limit kept from this claim
    next_edge timestamptz;
BEGIN
    IF room <= 0 THEN
        picked := '{}';
    ELSIF queue.fair_share OR queue.max_running_per_key IS NOT NULL OR queue.rate_limit_per_key IS NOT NULL THEN
        picked := soniq._pick_by_key(queue, room, task_names, window_start);
    ELSIF queue.priority_aging IS NOT NULL THEN
        picked := soniq._pick_aged(queue, room, task_names);
    ELSE
        SELECT coalesce(array_agg(b.id), '{}') INTO picked FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.queue = queue.name
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
               AND (task_names IS NULL OR j.task_name = ANY (task_names))
             ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
             LIMIT room
               FOR UPDATE SKIP LOCKED) b;
    END IF;

    -- Jobs left that a limit keeps back — this claim got fewer than it wanted, or took the
    -- last of the queue's room: the queue's outcomes wake its workers (and, when a rate window
    -- is full, the control plane at the window's next edge). A queue at its limit keeps the
    -- mark from claim to claim, so the row is written only when that changes.
    kept_back := (cardinality(picked) < want OR cardinality(picked) >= limit_room) AND EXISTS (
        SELECT FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.queue = queue.name AND j.id <> ALL (picked)
           AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
           AND (task_names IS NULL OR j.task_name = ANY (task_names)));
    IF kept_back AND queue.rate_period IS NOT NULL THEN
        -- The first start in the window, this claim's own among them (recorded after it).
        SELECT least(min(s.started_at), CASE WHEN cardinality(picked) > 0 THEN now() END) + queue.rate_period
          INTO next_edge
          FROM soniq.queue_starts s WHERE s.queue = queue.name AND s.started_at > window_start;
    END IF;
    IF (queue.held_back, queue.wake_at) IS DISTINCT FROM (kept_back, next_edge) THEN
        UPDATE soniq.queues q SET held_back = kept_back, wake_at = next_edge
         WHERE q.name = queue.name;
        IF next_edge IS NOT NULL THEN
            PERFORM soniq._wake_control_plane();
        END IF;
    END IF;
    RETURN picked;
END
$$;

-- _pick_aged: _pick_limited for a queue with priority aging: the room's first jobs by
-- effective priority, their priority less one per priority_aging since they were due (ties in
-- claim order). Within one priority the job due longest ages most, so the candidates are each
-- level's first `room` unscheduled jobs (by age) and first `room` due scheduled ones (by the
-- time they were due): two index walks per priority level in use.
CREATE FUNCTION soniq._pick_aged(queue soniq.queues, room int, task_names text[]) RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    candidates uuid[];
    picked uuid[];
BEGIN
    WITH RECURSIVE level(priority) AS (
        (SELECT j.priority FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue = queue.name
          ORDER BY j.queue, j.priority LIMIT 1)
        UNION ALL
        SELECT (SELECT j.priority FROM soniq.jobs j
                 WHERE j.status = 'queued' AND j.queue = queue.name AND j.priority > l.priority
                 ORDER BY j.queue, j.priority LIMIT 1)
          FROM level l WHERE l.priority IS NOT NULL
    )
    SELECT array_agg(c.id ORDER BY c.effective, c.priority, c.scheduled_at NULLS FIRST, c.created_at, c.id)
      INTO candidates
      FROM level l
     CROSS JOIN LATERAL (
         -- Due since created: the unscheduled, oldest first; due since scheduled: by that time.
         (SELECT j.id, j.priority, j.scheduled_at, j.created_at, j.created_at AS due_since
            FROM soniq.jobs j
           WHERE j.status = 'queued' AND j.queue = queue.name AND j.priority = l.priority
             AND j.scheduled_at IS NULL AND (task_names IS NULL OR j.task_name = ANY (task_names))
           ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
           LIMIT room)
         UNION ALL
         (SELECT j.id, j.priority, j.scheduled_at, j.created_at, j.scheduled_at
            FROM soniq.jobs j
           WHERE j.status = 'queued' AND j.queue = queue.name AND j.priority = l.priority
             AND j.scheduled_at <= now() AND (task_names IS NULL OR j.task_name = ANY (task_names))
           ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
           LIMIT room)) h
     CROSS JOIN LATERAL (
         SELECT h.id, h.priority, h.scheduled_at, h.created_at,
                h.priority - extract(epoch FROM now() - h.due_since) / extract(epoch FROM queue.priority_aging)
                    AS effective) c
     WHERE l.priority IS NOT NULL;
    -- The first `room` of them that no one else holds, in that order.
    SELECT array_agg(x.id ORDER BY x.n) INTO picked FROM (
        SELECT c.id, c.n FROM unnest(candidates) WITH ORDINALITY AS c(id, n)
          JOIN soniq.jobs j ON j.id = c.id
         WHERE j.status = 'queued'
         ORDER BY c.n
         LIMIT room
           FOR UPDATE OF j SKIP LOCKED) x;
    RETURN coalesce(picked, '{}');
END
$$;

-- _pick_by_key: _pick_limited for a queue with per-key limits or fair share. Keys are visited
-- in rounds, from the one after the queue's cursor and wrapping around (the default key '' at
-- the wrap); in a round each key with room gives up to its weight times an equal share of what
-- is left to take, within its own limits. So a tenant with a huge backlog takes its turn like
-- one with a few jobs, and the next claim begins where this one stopped.
CREATE FUNCTION soniq._pick_by_key(queue soniq.queues, room int, task_names text[], window_start timestamptz)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    busy int;          -- keys with jobs running: some may be at their limit, walked past
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
    -- Enough keys that `room` of them may have room after those at a limit are left out:
    -- every key with jobs running or starts in the window may be at its limit.
    SELECT (SELECT count(DISTINCT j.concurrency_key) FROM soniq.jobs j
             WHERE j.queue = queue.name AND j.status = 'processing' AND queue.max_running_per_key IS NOT NULL)
         + (SELECT count(DISTINCT s.concurrency_key) FROM soniq.queue_starts s
             WHERE s.queue = queue.name AND s.started_at > window_start AND queue.rate_limit_per_key IS NOT NULL)
      INTO busy;
    -- (At most twice room more: a claim walks a bounded number of keys, however many are busy.)
    busy := least(busy, 2 * room);
    walk := ARRAY(SELECT k FROM soniq._queued_keys(queue.name, coalesce(queue.key_cursor, ''), room + busy) k);
    IF cardinality(walk) < room + busy THEN
        -- Round the end: the default key, then the keys up to the cursor.
        IF EXISTS (SELECT FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue = queue.name AND j.concurrency_key = '') THEN
            walk := walk || ''::text;
        END IF;
        walk := walk || ARRAY(SELECT k FROM soniq._queued_keys(queue.name, '', room + busy - cardinality(walk)) k
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
                  WHERE j.status = 'queued' AND j.queue = queue.name AND j.concurrency_key = t.key
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

-- _record_starts: the starts of a claim's jobs in rate-limited queues (by key where the queue
-- limits keys), and the removal of those well past every window (a minute of slack for claims
-- of transactions that began earlier).
CREATE FUNCTION soniq._record_starts(claimed uuid[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO soniq.queue_starts (queue, concurrency_key, started_at, jobs)
    SELECT j.queue, CASE WHEN q.rate_limit_per_key IS NOT NULL THEN j.concurrency_key ELSE '' END, now(), count(*)
      FROM soniq.jobs j JOIN soniq.queues q ON q.name = j.queue
     WHERE j.id = ANY (claimed) AND q.rate_period IS NOT NULL
     GROUP BY 1, 2;
    DELETE FROM soniq.queue_starts s
     USING soniq.queues q
     WHERE q.name = s.queue AND s.started_at < now() - coalesce(q.rate_period, interval '0') - interval '1 minute'
       AND q.name IN (SELECT j.queue FROM soniq.jobs j WHERE j.id = ANY (claimed));
$$;

-- _slots_freed: jobs of these queues stopped processing (an outcome, a take-back): wake the
-- workers of those with flow control, whose limit may have held jobs back. Every such queue,
-- not only those marked held back: a claim marking it at this moment would not be seen here.
CREATE FUNCTION soniq._slots_freed(queues text[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._wake(q.name) FROM soniq.queues q WHERE q.name = ANY (queues) AND soniq._limited(q);
END
$$;

-- held_back: whether any of these queues (NULL: any) with flow control has runnable jobs (of
-- these tasks; NULL: any): after a claim that found nothing, jobs a limit holds back. A worker
-- that runs until its queues are empty keeps waiting for them instead of stopping.
CREATE FUNCTION soniq.held_back(queues text[] DEFAULT NULL, task_names text[] DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM soniq.queues q
                    WHERE soniq._limited(q) AND NOT q.paused AND ($1 IS NULL OR q.name = ANY ($1))
                      AND EXISTS (SELECT FROM soniq.jobs j
                                   WHERE j.status = 'queued' AND j.queue = q.name
                                     AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                                     AND ($2 IS NULL OR j.task_name = ANY ($2))))
$$;

-- _wake_windows: the control plane at a rate window's edge: wake the workers of the queues
-- whose full window has moved on. Returns the seconds until the next such edge (NULL: none).
CREATE FUNCTION soniq._wake_windows() RETURNS float8
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    edge_passed text;
BEGIN
    -- In name order as claims lock queues, and past the rows claims hold (the next round, at
    -- once, takes them): never a deadlock with a claim.
    FOR edge_passed IN
        SELECT q.name FROM soniq.queues q WHERE q.wake_at <= clock_timestamp()
         ORDER BY q.name FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        UPDATE soniq.queues q SET wake_at = NULL WHERE q.name = edge_passed;
        PERFORM soniq._wake(edge_passed);
    END LOOP;
    RETURN (SELECT extract(epoch FROM min(q.wake_at) - clock_timestamp())::float8 FROM soniq.queues q);
END
$$;

-- queue_limits: each queue with flow control, its settings, what it uses now, its runnable
-- jobs and how many of them wait because a limit is reached (all of them while it is). One row
-- per queue (concurrency_key NULL), then one per concurrency key with jobs queued or processing
-- in a queue with per-key limits or fair share.
CREATE VIEW soniq.queue_limits AS
WITH limited AS (
    SELECT q.* FROM soniq.queues q WHERE soniq._limited(q)
), queue_use AS (
    SELECT q.name AS queue, NULL::text AS concurrency_key, soniq._queue_settings(q) AS settings,
           (SELECT count(*) FROM soniq.jobs j WHERE j.queue = q.name AND j.status = 'processing') AS running,
           (SELECT coalesce(sum(s.jobs), 0) FROM soniq.queue_starts s
             WHERE s.queue = q.name AND s.started_at > now() - q.rate_period) AS started_in_window,
           (SELECT count(*) FROM soniq.jobs j WHERE j.queue = q.name AND j.status = 'queued'
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())) AS runnable,
           q.max_running AS running_limit, q.rate_limit AS start_limit
      FROM limited q
), key_use AS (
    SELECT k.queue, k.key AS concurrency_key, NULL::jsonb AS settings, k.running,
           (SELECT coalesce(sum(s.jobs), 0) FROM soniq.queue_starts s
             WHERE s.queue = k.queue AND s.concurrency_key = k.key AND s.started_at > now() - k.rate_period
               AND k.start_limit IS NOT NULL) AS started_in_window,
           k.runnable, k.running_limit, k.start_limit
      FROM (SELECT q.name AS queue, j.concurrency_key AS key, q.rate_period,
                   q.max_running_per_key AS running_limit, q.rate_limit_per_key AS start_limit,
                   count(*) FILTER (WHERE j.status = 'processing') AS running,
                   count(*) FILTER (WHERE j.status = 'queued' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()))
                       AS runnable
              FROM limited q
              JOIN soniq.jobs j ON j.queue = q.name AND j.status IN ('queued', 'processing')
             WHERE q.max_running_per_key IS NOT NULL OR q.rate_limit_per_key IS NOT NULL OR q.fair_share
             GROUP BY 1, 2, 3, 4, 5) k
)
SELECT u.queue, u.concurrency_key, u.settings, u.running, u.started_in_window, u.runnable,
       CASE WHEN u.running >= u.running_limit OR u.started_in_window >= u.start_limit THEN u.runnable ELSE 0 END
           AS waiting_for_limit
  FROM (SELECT * FROM queue_use UNION ALL SELECT * FROM key_use) u;

-- The functions that changed.
DROP FUNCTION soniq._job_rows(soniq._job_batch);
-- _job_rows: jobs as they will be stored, one per element of the arrays (all of one length),
-- n their position from 1. An option the caller left NULL resolves from the task's registered
-- defaults, then from the system defaults (queue 'default', priority 100, retries 3, timeout
-- 300 s, result TTL 300 s); the concurrency key from the args field the task names.
-- well_formed: whether the job's fields are in range (_job_ok; its names are _names_ok's). The one place options resolve, for enqueue and enqueue_many alike;
-- inlined into their statements (no call per job).
CREATE FUNCTION soniq._job_rows(batch soniq._job_batch) RETURNS TABLE (
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
    SELECT r.n, r.task_name, r.args,
           coalesce(r.queue, t.queue, 'default'),
           coalesce(r.priority, t.priority, 100),
           coalesce(r.retries, t.retries, 3) + 1,
           r.scheduled_at,
           nullif(coalesce(r.timeout, t.timeout, interval '300 seconds'), interval '0'),
           t.retry_policy,
           coalesce(t.result_ttl, interval '300 seconds'),
           -- jsonb's text form is canonical (keys sorted, whitespace fixed), so equal args hash equal.
           CASE WHEN coalesce(r.unique_job, t.unique_job, false)
                THEN encode(sha256(convert_to(r.args::text, 'UTF8')), 'hex') END,
           r.dedup_key,
           r.producer_id,
           -- What the caller left out follows the task's options while the job waits (_follow_task).
           16 | 32 | CASE WHEN r.queue IS NULL THEN 1 ELSE 0 END
                   | CASE WHEN r.priority IS NULL THEN 2 ELSE 0 END
                   | CASE WHEN r.retries IS NULL THEN 4 ELSE 0 END
                   | CASE WHEN r.timeout IS NULL THEN 8 ELSE 0 END,
           coalesce(soniq._job_ok(r.args, r.priority, r.retries, r.timeout, r.scheduled_at, r.dedup_key,
                                  r.producer_id), false),
           soniq._concurrency_key(r.args #>> t.concurrency_key)
      FROM unnest(batch.task_names, batch.args, batch.queues, batch.priorities, batch.scheduled_ats,
                  batch.retries, batch.unique_jobs, batch.dedup_keys, batch.timeouts, batch.producer_ids)
           WITH ORDINALITY AS r(task_name, args, queue, priority, scheduled_at, retries, unique_job,
                                dedup_key, timeout, producer_id, n)
      LEFT JOIN soniq.tasks t ON t.task_name = r.task_name
$$;

-- register_task: publish a handler's options; an omitted option at enqueue resolves from
-- here before the system default. Re-registering replaces the previous defaults, and queued
-- jobs that took an option from them follow the new ones (_follow_task).
CREATE OR REPLACE FUNCTION soniq.register_task(task_name text, defaults jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    d jsonb;
    before soniq.tasks;
    published soniq.tasks;
BEGIN
    PERFORM soniq._check_task_name(task_name);
    d := soniq._normalize_task_defaults(defaults);
    SELECT * INTO before FROM soniq.tasks t WHERE t.task_name = register_task.task_name FOR UPDATE;
    INSERT INTO soniq.tasks AS t (task_name, queue, priority, retries, timeout, retry_policy, result_ttl, unique_job,
                                  concurrency_key)
    VALUES (register_task.task_name,
            d ->> 'queue',
            (d ->> 'priority')::int,
            (d ->> 'retries')::int,
            make_interval(secs => (d ->> 'timeout')::float8),
            d -> 'retry_policy',
            make_interval(secs => (d ->> 'result_ttl')::float8),
            (d ->> 'unique')::boolean,
            CASE WHEN d ? 'concurrency_key' THEN ARRAY(SELECT jsonb_array_elements_text(d -> 'concurrency_key')) END)
    ON CONFLICT ON CONSTRAINT tasks_pkey DO UPDATE
       SET queue = excluded.queue, priority = excluded.priority, retries = excluded.retries,
           timeout = excluded.timeout, retry_policy = excluded.retry_policy,
           result_ttl = excluded.result_ttl, unique_job = excluded.unique_job,
           concurrency_key = excluded.concurrency_key, updated_at = now()
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

-- _insert_jobs: the set-based enqueue behind enqueue_many and enqueue: one job per element of
-- the arrays, ids returned in input order; if any element is bad nothing is written and the
-- error names the first (_refuse_specs). A unique or dedup job with a queued duplicate of the
-- same login — in the table or earlier in the same batch — returns that job's id and writes
-- nothing (another login's jobs never match: a duplicate reveals nothing of them).
CREATE OR REPLACE FUNCTION soniq._insert_jobs(batch soniq._job_batch) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET jit = off  -- as _insert_unique_jobs: a large batch must not wait for a compiler
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
-- (another login's jobs never match: a duplicate reveals nothing of them).
-- Runs in the caller's transaction: rolled back, the job never existed.
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
    producer_id  text        DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    one soniq._job_batch := ROW(ARRAY[task_name], ARRAY[args], ARRAY[queue], ARRAY[priority], ARRAY[scheduled_at],
                                ARRAY[retries], ARRAY[unique_job], ARRAY[dedup_key], ARRAY[timeout], ARRAY[producer_id]);
    job record;
BEGIN
    -- The common case checked in one expression; a bad call pays for finding out why.
    IF NOT coalesce(soniq._check_task_name(task_name)
                    AND (queue IS NULL OR soniq._check_queue_name(queue))
                    AND soniq._job_ok(args, priority, retries, timeout, scheduled_at, dedup_key, producer_id),
                    false) THEN
        PERFORM soniq._check_job(task_name, args, queue, priority, scheduled_at, retries, dedup_key, timeout,
                                 producer_id);
    END IF;
    -- A plain job is written here; a unique or dedup one, whose duplicate may be queued, takes
    -- the batch path, which finds it.
    INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                 retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key)
    SELECT soniq.uuid_v7(), g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
           g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key
      FROM soniq._job_rows(one) g
     WHERE g.args_hash IS NULL AND g.dedup_key IS NULL
    RETURNING j.id, j.queue INTO job;
    IF FOUND THEN
        IF enqueue.scheduled_at IS NULL OR enqueue.scheduled_at <= now() THEN
            PERFORM soniq._wake(job.queue);
        END IF;
        RETURN job.id;
    END IF;
    RETURN soniq._insert_jobs(one);
END
$$;

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
    -- The batch in claim order: one queue's from its own index (queue first), any other
    -- selection from the general one. The two statements differ only there: keep them in step.
    ELSIF cardinality(claim.queues) = 1 THEN
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
           c.scheduled_at, c.created_at
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
                                        WHERE j.status = 'queued' AND j.queue = (l).name
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

    -- The queues without limits, unless every queue named has one.
    IF queues IS NULL AND cardinality(backlogged) > 0 THEN
        -- From every queue while limited ones hold a backlog: each other queue's first jobs,
        -- found queue by queue (one index probe per queue with queued jobs), for the claim
        -- index would walk past the limited queues' backlog job by job.
        SELECT array_agg(b.id) INTO picked FROM (
            WITH RECURSIVE queued(name) AS (
                (SELECT j.queue FROM soniq.jobs j WHERE j.status = 'queued' ORDER BY j.queue LIMIT 1)
                UNION ALL
                SELECT (SELECT j.queue FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue > q.name
                         ORDER BY j.queue LIMIT 1)
                  FROM queued q WHERE q.name IS NOT NULL
            )
            SELECT h.id FROM queued n
             CROSS JOIN LATERAL (
                 SELECT j.id FROM soniq.jobs j
                  WHERE j.status = 'queued' AND j.queue = n.name
                    AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                    AND (task_names IS NULL OR j.task_name = ANY (task_names))
                  ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
                  LIMIT batch_size
                    FOR UPDATE SKIP LOCKED) h
             WHERE n.name IS NOT NULL AND n.name <> ALL (paused)
               AND n.name NOT IN (SELECT (l).name FROM unnest(limited) l)) b;
    ELSIF queues IS NULL OR EXISTS (SELECT FROM unnest(queues) n WHERE n NOT IN (SELECT (l).name FROM unnest(limited) l))
    THEN
        SELECT array_agg(b.id) INTO picked FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued'
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
               AND (queues IS NULL OR j.queue = ANY (queues))
               AND (task_names IS NULL OR j.task_name = ANY (task_names))
               AND j.queue <> ALL (paused) AND j.queue NOT IN (SELECT (l).name FROM unnest(limited) l)
             ORDER BY j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED) b;
    END IF;
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

-- complete_many: finish many attempts of one worker in one round trip. Returns the ids it
-- completed; an id missing from the result was not held under that lease (it was taken
-- back) and stays as it is. A job whose result TTL is 0 is deleted at once.
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

    WITH lease AS (
        SELECT * FROM unnest(job_ids, complete_many.attempts, results) AS l(id, attempt, result)
    ), kept AS (
        UPDATE soniq.jobs j
           SET status = 'done', result = l.result, finished_at = now(), updated_at = now(),
               expires_at = now() + j.result_ttl
          FROM lease l
         WHERE j.id = l.id AND j.status = 'processing' AND j.worker_id = complete_many.worker_id
           AND j.attempts = l.attempt AND j.result_ttl > interval '0'
        RETURNING j.id, j.queue
    ), dropped AS (
        DELETE FROM soniq.jobs j
         USING lease l
         WHERE j.id = l.id AND j.status = 'processing' AND j.worker_id = complete_many.worker_id
           AND j.attempts = l.attempt AND j.result_ttl <= interval '0'
        RETURNING j.id, j.queue
    ), finished AS (
        SELECT k.id, k.queue FROM kept k UNION ALL SELECT d.id, d.queue FROM dropped d
    )
    SELECT array_agg(f.id), array_agg(DISTINCT f.queue) INTO completed, freed FROM finished f;
    PERFORM soniq._slots_freed(freed);
    RETURN QUERY SELECT unnest(completed);
END
$$;

-- abort: the worker ends its attempt and the job as cancelled (the handler cancelled
-- itself, or heartbeat reported a cancellation request).
CREATE OR REPLACE FUNCTION soniq.abort(job_id uuid, worker_id uuid, attempt int, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    freed text;  -- the job's queue
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
    RETURNING j.queue INTO freed;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
    PERFORM soniq._slots_freed(ARRAY[freed]);
END
$$;

-- _bury: move jobs into the dead letter with a reason and their last error.
CREATE OR REPLACE FUNCTION soniq._bury(job_ids uuid[], reason text, error text) RETURNS int
LANGUAGE sql VOLATILE AS $$
    WITH gone AS (
        DELETE FROM soniq.jobs j WHERE j.id = ANY (job_ids) RETURNING j.*
    ), freed AS (
        SELECT soniq._slots_freed(array_agg(DISTINCT g.queue)) FROM gone g WHERE g.status = 'processing'
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
    SELECT count(*)::int FROM buried, (SELECT count(*) FROM freed) f
$$;

-- _queue_again: the update behind _requeue.
CREATE OR REPLACE FUNCTION soniq._queue_again(job soniq.jobs, attempts int, run_at timestamptz, error text) RETURNS void
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

-- _control_plane_round_done: the worker finished a round; the queues whose full rate window
-- has moved on are woken (_wake_windows). Returns the seconds until the next schedule is due
-- or the next window edge (NULL when neither is), so the worker sleeps no longer than that.
CREATE OR REPLACE FUNCTION soniq._control_plane_round_done() RETURNS float8
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET last_run_at = now(), last_success_at = now(), runs = c.runs + 1
     WHERE c.subsystem = 'control_plane';
    SELECT least(extract(epoch FROM min(s.next_fire_at) - clock_timestamp())::float8, soniq._wake_windows())
      FROM soniq.schedules s WHERE s.enabled;
$$;

-- replay: mint a fresh job from a dead one (new id, same args and policy; queue, priority
-- and max_attempts may be overridden). Attempts start again from 0 unless reset_attempts is
-- false (then max_attempts must leave an attempt). The dead row stays, with its
-- resurrection_count incremented. Returns the new job's id. With unless_replayed, a dead job
-- that was replayed before is left alone and NULL is returned: running the same replay twice,
-- or two operators at once, makes one job (the dead row is locked while it is replayed).
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
    RETURN new_id;
END
$$;

-- delete_job: remove a job in any state (a processing job's lease is revoked with it).
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
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = delete_job.job_id) THEN
        RAISE EXCEPTION 'job % is in the dead letter', job_id USING ERRCODE = 'no_data_found',
            HINT = 'Use soniq.dead_letter_delete() for dead jobs.';
    END IF;
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
END
$$;

-- queue_overview: one row per known queue with its jobs by state and its pause state.
-- runnable = queued and due now; scheduled = queued for later; unserved = queued jobs of a
-- task no live worker serves in this queue (see check_unserved); limits = the queue's flow
-- control (NULL: none) and waiting_for_limit = runnable jobs held back by a reached limit
-- (soniq.queue_limits has them per key).
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
                  WHERE l.queue = n.name AND l.concurrency_key IS NULL), 0) AS waiting_for_limit
  FROM names n
  LEFT JOIN soniq.queues q ON q.name = n.name
  LEFT JOIN soniq.jobs j ON j.queue = n.name
 GROUP BY n.name, q.paused;


-- Privileges as a fresh install sets them (sql/privileges.sql), queue_configure among them.
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
         WHERE p.pronamespace = 'soniq'::regnamespace AND p.proname NOT LIKE '\_%'
    LOOP
        IF language IN ('sql', 'plpgsql') THEN
            EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', api);
        END IF;
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO soniq_admin', api);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA soniq FROM PUBLIC;
GRANT USAGE ON SCHEMA soniq TO soniq_producer, soniq_worker, soniq_admin;

GRANT EXECUTE ON FUNCTION
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text),
    soniq.job_status(uuid)
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
    soniq.held_back(text[], text[])
TO soniq_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_admin;
