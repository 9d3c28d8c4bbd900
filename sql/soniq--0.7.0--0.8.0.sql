-- Soniq 0.7.0 -> 0.8.0: the claims that read one queue's (or one key's) queued jobs name it as a
-- range, so the planner reads that queue's own index instead of walking, in the index of every
-- queue's jobs, past the backlog of the others (sql/helpers.sql, conventions); _concurrency_key
-- is STABLE, so enqueue inlines it instead of planning it at every call; due schedules fire as
-- one batch of jobs. No table changes.
\echo Use "ALTER EXTENSION soniq UPDATE TO '0.8.0'" to load this file. \quit

-- _concurrency_key: a job's key as stored, from the value of its task's key field in its args:
-- '' (the default key) when there is none; a value over 256 bytes is stored as its SHA-256, so
-- every key fits the index. STABLE, as convert_to is: declared IMMUTABLE it was not inlined,
-- and every enqueue planned it again (about 20 µs of a single enqueue).
CREATE OR REPLACE FUNCTION soniq._concurrency_key(value text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN value IS NULL THEN ''
                WHEN octet_length(value) <= 256 THEN value
                ELSE 'sha256:' || encode(sha256(convert_to(value, 'UTF8')), 'hex') END
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
             WHERE j.status = 'queued' AND j.queue >= claim.queues[1] AND j.queue <= claim.queues[1]
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
                  WHERE j.status = 'queued' AND j.queue >= n.name AND j.queue <= n.name
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

-- _pick_limited: the jobs a claim may take from one limited queue, whose row the caller has
-- locked: up to want due jobs (of task_names, when given) within every limit of the queue,
-- locked for the claim. Records what the next outcome and the control plane need to wake the
-- queue's workers when a limit held jobs back (held_back, wake_at).
CREATE OR REPLACE FUNCTION soniq._pick_limited(queue soniq.queues, want int, task_names text[]) RETURNS uuid[]
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
CREATE OR REPLACE FUNCTION soniq._pick_aged(queue soniq.queues, room int, task_names text[]) RETURNS uuid[]
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
CREATE OR REPLACE FUNCTION soniq._pick_by_key(queue soniq.queues, room int, task_names text[], window_start timestamptz)
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
        IF EXISTS (SELECT FROM soniq.jobs j WHERE j.status = 'queued' AND j.queue >= queue.name AND j.queue <= queue.name AND j.concurrency_key = '') THEN
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

-- held_back: whether any of these queues (NULL: any) with flow control has runnable jobs (of
-- these tasks; NULL: any): after a claim that found nothing, jobs a limit holds back. A worker
-- that runs until its queues are empty keeps waiting for them instead of stopping.
CREATE OR REPLACE FUNCTION soniq.held_back(queues text[] DEFAULT NULL, task_names text[] DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM soniq.queues q
                    WHERE soniq._limited(q) AND NOT q.paused AND ($1 IS NULL OR q.name = ANY ($1))
                      AND EXISTS (SELECT FROM soniq.jobs j
                                   WHERE j.status = 'queued' AND j.queue >= q.name AND j.queue <= q.name
                                     AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
                                     AND ($2 IS NULL OR j.task_name = ANY ($2))))
$$;

-- Schedules fire as one batch of jobs (_insert_jobs) instead of one enqueue per schedule.
DROP FUNCTION soniq._fire(soniq.schedules);

-- _fire: enqueue the due schedules' jobs in one batch (_insert_jobs) and move each schedule to
-- its next fire time (the jobs and the new fire times commit together, so a fire time never
-- makes two jobs). A schedule that fell behind fires once, then continues from its next slot
-- after now. Returns how many schedules fired.
CREATE FUNCTION soniq._fire(due soniq.schedules[]) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    jobs soniq._job_batch;
    ids uuid[];
BEGIN
    SELECT array_agg(d.task_name ORDER BY d.ordinality), array_agg(d.args ORDER BY d.ordinality),
           array_agg(d.queue ORDER BY d.ordinality), array_agg(d.priority ORDER BY d.ordinality),
           array_agg(d.next_fire_at ORDER BY d.ordinality), array_agg(d.retries ORDER BY d.ordinality),
           array_fill(NULL::boolean, ARRAY[count(*)::int]), array_fill(NULL::text, ARRAY[count(*)::int]),
           array_agg(d.timeout ORDER BY d.ordinality), array_agg('schedule:' || d.name ORDER BY d.ordinality)
      INTO jobs
      FROM unnest(due) WITH ORDINALITY d;
    IF jobs.task_names IS NULL THEN
        RETURN 0;
    END IF;
    ids := ARRAY(SELECT soniq._insert_jobs(jobs));
    UPDATE soniq.schedules s
       SET last_fire_at = d.next_fire_at, last_job_id = ids[d.ordinality], fire_count = s.fire_count + 1,
           next_fire_at = soniq._next_fire(d.cron, soniq._every_seconds(d.every), d.time_zone,
                                           d.next_fire_at, now()),
           updated_at = now()
      FROM unnest(due) WITH ORDINALITY d
     WHERE s.name = d.name;
    RETURN cardinality(ids);
END
$$;

-- fire_due_schedules: fire each due schedule (at most max_fires, oldest fire time first).
-- The whole batch is one _fire; if any schedule in it fails, the batch is redone one
-- schedule at a time (each in a subtransaction, at most 50: more would overflow the
-- subtransaction cache and slow every snapshot), the failing fire recorded on its schedule
-- and skipped, a schedule whose next fire time cannot be computed paused. Returns how many
-- schedules it handled.
CREATE OR REPLACE FUNCTION soniq.fire_due_schedules(max_fires int DEFAULT 1000) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due soniq.schedules;
    handled int := 0;
    message text;
BEGIN
    BEGIN
        RETURN soniq._fire(ARRAY(SELECT d FROM soniq.schedules d
                                  WHERE d.enabled AND d.next_fire_at <= now()
                                  ORDER BY d.next_fire_at
                                  LIMIT max_fires
                                    FOR UPDATE SKIP LOCKED));
    EXCEPTION WHEN OTHERS THEN
        NULL; -- a schedule in the batch failed: find it below
    END;

    FOR due IN
        SELECT * FROM soniq.schedules s
         WHERE s.enabled AND s.next_fire_at <= now()
         ORDER BY s.next_fire_at
         LIMIT least(max_fires, 50)
           FOR UPDATE SKIP LOCKED
    LOOP
        handled := handled + 1;
        BEGIN
            -- Alone, a bad job is refused in enqueue's words, not as element 0 of a batch.
            PERFORM soniq._check_job(due.task_name, due.args, due.queue, due.priority, due.next_fire_at,
                                     due.retries, NULL, due.timeout, 'schedule:' || due.name);
            PERFORM soniq._fire(ARRAY[due]);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            PERFORM soniq._schedule_failed(due, message);
        END;
    END LOOP;
    RETURN handled;
END
$$;

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
