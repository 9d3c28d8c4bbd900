-- Soniq 0.7.0 -> 0.8.0: the claims that read one queue's (or one key's) queued jobs name it as a
-- range, so the planner reads that queue's own index instead of walking, in the index of every
-- queue's jobs, past the backlog of the others (sql/helpers.sql, conventions); _concurrency_key
-- is STABLE, so enqueue inlines it instead of planning it at every call; a single enqueue
-- resolves its job without making it a batch of one; due schedules fire as one batch of jobs;
-- an outcome reaches its job by id (jobs_worker_idx gains the id). No table changes.
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

-- A single enqueue resolves its job through _job_row instead of a batch of one.
-- _job_row: one job as it will be stored. An option the caller left NULL resolves from the
-- task's registered defaults, then from the system defaults (queue 'default', priority 100,
-- retries 3, timeout 300 s, result TTL 300 s); the concurrency key from the args field the
-- task names. well_formed: whether the job's fields are in range (_job_ok; its names are
-- _names_ok's). The one place options resolve, for enqueue and enqueue_many alike; inlined
-- into their statements (no call per job). A single enqueue reads it directly: as a batch of
-- one (_job_rows) its INSERT cost it ~25 µs more.
CREATE FUNCTION soniq._job_row(
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

-- An outcome reaches its job by id: jobs_worker_idx gains the id (an outcome's look-up read
-- every job the worker held), and complete_many compares each lease with its job as a join.
-- Building the index reads soniq.jobs once (it holds only processing rows).
DROP INDEX soniq.jobs_worker_idx;
CREATE INDEX jobs_worker_idx ON soniq.jobs (worker_id, id) WHERE status = 'processing';

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
        RETURNING j.id, j.queue
    ), dropped AS (
        DELETE FROM soniq.jobs j
         USING lease l
         WHERE j.id = l.id AND j.status = l.status AND j.worker_id = l.worker_id
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
