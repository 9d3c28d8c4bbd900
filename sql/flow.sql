-- Soniq SQL: flow control: a queue's concurrency and rate limits, per queue and per concurrency
-- key, and fair share between keys, all enforced by soniq.claim. Conventions: sql/helpers.sql.
--
-- How a claim keeps a limit without a race: it locks the row of each limited queue it serves
-- (soniq.queues, FOR NO KEY UPDATE, in name order, so claimers never wait in a cycle), and only
-- then, in later statements (each with a fresh snapshot under READ COMMITTED), counts what runs
-- and what started. A claimer that waited for the lock therefore sees the jobs the claimer
-- before it took. Slots are counted from rows (jobs processing, starts recorded), so the slots
-- of a killed worker come back with its jobs. No advisory lock, nothing held across statements
-- or transactions: it works the same through PgBouncer's transaction mode.
--
-- What a rate limit counts: attempts started, i.e. jobs claimed (a retry is a new start). A
-- claim whose transaction started at t may start k jobs of a queue only if the starts stamped
-- after t - period, plus k, are at most the limit; each job's started_at is t. So in every
-- window (x - period, x] at most rate_limit jobs start, whatever the burst: a full window's
-- worth may start at once, and the next starts wait until the first of them is period old.

-- _limited: whether claims of the queue go through flow control (queue_limits writes it out).
CREATE FUNCTION soniq._limited(queue soniq.queues) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT queue.max_running IS NOT NULL OR queue.max_running_per_key IS NOT NULL
        OR queue.rate_limit IS NOT NULL OR queue.rate_limit_per_key IS NOT NULL OR queue.fair_share
        OR queue.priority_aging IS NOT NULL
$$;

-- _concurrency_key: a job's key as stored, from the value of its task's key field in its args:
-- '' (the default key) when there is none; a value over 256 bytes is stored as its SHA-256, so
-- every key fits the index. STABLE, as convert_to is: declared IMMUTABLE it was not inlined,
-- and every enqueue planned it again (about 20 µs of a single enqueue).
CREATE FUNCTION soniq._concurrency_key(value text) RETURNS text
LANGUAGE sql STABLE AS $$
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
-- PL/pgSQL, for its plan is kept (since 0.14.0): a call of the SQL function it was, not
-- inlined, parsed and planned its body again, a fifth of a limited claim.
CREATE FUNCTION soniq._queue_room(queue soniq.queues, want int) RETURNS int
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
             WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name
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
         WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name AND j.id <> ALL (picked)
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
        (SELECT j.priority FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name
          ORDER BY j.queue, j.priority LIMIT 1)
        UNION ALL
        SELECT (SELECT j.priority FROM soniq.jobs j
                 WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name AND j.priority > l.priority
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
           WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name AND j.priority = l.priority
             AND j.scheduled_at IS NULL AND (task_names IS NULL OR j.task_name = ANY (task_names))
           ORDER BY j.queue, j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
           LIMIT room)
         UNION ALL
         (SELECT j.id, j.priority, j.scheduled_at, j.created_at, j.scheduled_at
            FROM soniq.jobs j
           WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name AND j.priority = l.priority
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
                                   WHERE j.status = 'queued' AND j.queue >= q.name AND j.queue <= q.name
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
-- The view writes out _limited and _queue_settings: a view calls functions with its reader's
-- rights, and the helpers are granted to nobody (an admin or viewer reading it was refused).
CREATE VIEW soniq.queue_limits AS
WITH limited AS (
    SELECT q.* FROM soniq.queues q
     WHERE q.max_running IS NOT NULL OR q.max_running_per_key IS NOT NULL
        OR q.rate_limit IS NOT NULL OR q.rate_limit_per_key IS NOT NULL OR q.fair_share
        OR q.priority_aging IS NOT NULL
), queue_use AS (
    SELECT q.name AS queue, NULL::text AS concurrency_key,
           jsonb_strip_nulls(jsonb_build_object(
               'max_running', q.max_running, 'max_running_per_key', q.max_running_per_key,
               'rate_limit', q.rate_limit, 'rate_limit_per_key', q.rate_limit_per_key,
               'rate_period', extract(epoch FROM q.rate_period)::int,
               'fair_share', CASE WHEN q.fair_share THEN true END, 'key_weights', q.key_weights,
               'priority_aging', extract(epoch FROM q.priority_aging)::int)) AS settings,
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
