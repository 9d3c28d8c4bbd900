-- Soniq SQL: enqueue: a task's published options, and jobs in (enqueue, enqueue_many).
-- Conventions: sql/helpers.sql.

-- register_task: publish a handler's options; an omitted option at enqueue resolves from
-- here before the system default. Re-registering replaces the previous defaults, and queued
-- jobs that took an option from them follow the new ones (_follow_task).
CREATE FUNCTION soniq.register_task(task_name text, defaults jsonb DEFAULT '{}') RETURNS void
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

-- _follow_task: the queued (and waiting) jobs of a task take its newly published options wherever their
-- producer left an option out (soniq.jobs.inherited), so a job enqueued before its task was
-- published runs with the task's retries, timeout, retry policy, result TTL, priority and
-- queue. Options given at enqueue stay; a job already processing is not changed. A job keeps
-- at least one attempt.
CREATE FUNCTION soniq._follow_task(task soniq.tasks) RETURNS void
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

-- A job's fields and their ranges, twice: _check_job raises the first rule a job breaks, with
-- its own message; _job_ok is the same rules as one expression, for the checks of the common
-- case and of a whole batch at once. Keep the two in step (pg_test/sql/errors.sql tries each
-- rule through enqueue and enqueue_many). Names are checked in Rust (src/names.rs).
CREATE FUNCTION soniq._check_job(
    task_name    text,
    args         jsonb,
    queue        text,
    priority     int,
    scheduled_at timestamptz,
    retries      int,
    dedup_key    text,
    timeout      interval,
    producer_id  text
) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM soniq._check_task_name(task_name);
    PERFORM soniq._check_args(args);
    PERFORM soniq._check_job_options(priority, retries, timeout);
    IF NOT isfinite(scheduled_at) THEN
        RAISE EXCEPTION 'scheduled_at must be a finite time, got %', scheduled_at
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL to run as soon as possible.';
    END IF;
    IF dedup_key = '' THEN
        RAISE EXCEPTION 'dedup_key must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL for no deduplication key.';
    END IF;
    PERFORM soniq._check_size(dedup_key, 'dedup_key', 512);
    PERFORM soniq._check_size(producer_id, 'producer_id', 512);
    IF queue IS NOT NULL THEN
        PERFORM soniq._check_queue_name(queue);
    END IF;
END
$$;

CREATE FUNCTION soniq._job_ok(
    args         jsonb,
    priority     int,
    retries      int,
    timeout      interval,
    scheduled_at timestamptz,
    dedup_key    text,
    producer_id  text
) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT jsonb_typeof(args) = 'object' AND pg_column_size(args) <= 1048576
       AND (priority IS NULL OR priority BETWEEN 1 AND 1000)
       AND (retries IS NULL OR retries BETWEEN 0 AND 1000)
       AND (timeout IS NULL OR timeout BETWEEN interval '0' AND interval '30 days')
       AND (scheduled_at IS NULL OR isfinite(scheduled_at))
       AND (dedup_key IS NULL OR octet_length(dedup_key) BETWEEN 1 AND 512)
       AND (producer_id IS NULL OR octet_length(producer_id) <= 512)
$$;

-- A producer's trace context: a W3C traceparent of version 00, '00-' 32 hex digits (the trace
-- id) '-' 16 (the parent span id) '-' 2 (the flags), lowercase, neither id all zeros
-- (https://www.w3.org/TR/trace-context/#traceparent-header). NULL: none. _traceparent_ok is the
-- rule as an expression, _check_traceparent raises it.
CREATE FUNCTION soniq._traceparent_ok(traceparent text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT traceparent IS NULL
        OR (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            AND substr(traceparent, 4, 32) <> repeat('0', 32)
            AND substr(traceparent, 37, 16) <> repeat('0', 16))
$$;

CREATE FUNCTION soniq._check_traceparent(traceparent text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT soniq._traceparent_ok(traceparent) THEN
        RAISE EXCEPTION 'traceparent must be a W3C trace context, got %', left(traceparent, 100)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The form is 00-<32 hex digits: trace id>-<16 hex digits: span id>-<2 hex digits: flags>, '
                         'lowercase, neither id all zeros; NULL for none.';
    END IF;
END
$$;

-- _json_in_range: whether a job spec's value is absent, JSON null, or a JSON number from low to
-- high (a whole one when whole): the rule of _integer and _seconds as an expression.
CREATE FUNCTION soniq._json_in_range(value jsonb, low numeric, high numeric, whole boolean) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(value)
               WHEN 'number' THEN value::numeric BETWEEN low AND high
                                  AND (NOT whole OR value::numeric = trunc(value::numeric))
               WHEN 'null' THEN true
               ELSE value IS NULL
           END
$$;

-- _spec_ok: whether a job spec of enqueue_many is well formed: an object of known keys whose
-- numbers are in range (the rest is _job_ok's). _refuse_specs says what is wrong with one.
CREATE FUNCTION soniq._spec_ok(spec jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(spec) = 'object' THEN
               spec - '{task_name,args,queue,priority,scheduled_at,retries,unique,dedup_key,timeout,producer_id,depends_on,on_dependency_failure,awaitable,batch_id,traceparent}'::text[]
                   = '{}'
               AND coalesce(jsonb_typeof(spec -> 'traceparent'), 'null') IN ('string', 'null')
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
CREATE FUNCTION soniq._refuse_specs(jobs jsonb) RETURNS void
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
                             'on_dependency_failure', 'awaitable', 'batch_id', 'traceparent');
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
            IF jsonb_typeof(spec -> 'traceparent') NOT IN ('string', 'null') THEN
                RAISE EXCEPTION 'traceparent must be a string, got %', spec -> 'traceparent'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            PERFORM soniq._check_traceparent(spec ->> 'traceparent');
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

-- _job_batch: jobs as columns, one array per field (all of one length): how a batch travels
-- between the functions that check, resolve and insert it.
CREATE TYPE soniq._job_batch AS (
    task_names    text[],
    args          jsonb[],
    queues        text[],
    priorities    int[],
    scheduled_ats timestamptz[],
    retries       int[],
    unique_jobs   boolean[],
    dedup_keys    text[],
    timeouts      interval[],
    producer_ids  text[],
    traceparents  text[]  -- (since 0.12.0) NULL: none for any job
);

-- _as_specs: a batch given as arrays, as the job specs enqueue_many(jsonb) takes (timeout in
-- seconds), for _refuse_specs to say what is wrong with it.
CREATE FUNCTION soniq._as_specs(batch soniq._job_batch) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(
               jsonb_build_object('task_name', r.task_name, 'args', r.args)
               || jsonb_strip_nulls(jsonb_build_object(
                      'queue', r.queue, 'priority', r.priority, 'scheduled_at', r.scheduled_at,
                      'retries', r.retries, 'unique', r.unique_job, 'dedup_key', r.dedup_key,
                      'timeout', extract(epoch FROM r.timeout), 'producer_id', r.producer_id,
                      'traceparent', r.traceparent))
               ORDER BY r.n), '[]')
      FROM unnest(batch.task_names, batch.args, batch.queues, batch.priorities, batch.scheduled_ats,
                  batch.retries, batch.unique_jobs, batch.dedup_keys, batch.timeouts, batch.producer_ids,
                  batch.traceparents)
           WITH ORDINALITY AS r(task_name, args, queue, priority, scheduled_at, retries, unique_job,
                                dedup_key, timeout, producer_id, traceparent, n)
$$;

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
    producer_id  text,
    traceparent  text
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
    concurrency_key text,
    traceparent  text
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
                                  _job_row.scheduled_at, _job_row.dedup_key, _job_row.producer_id)
                    AND soniq._traceparent_ok(_job_row.traceparent), false),
           soniq._concurrency_key(_job_row.args #>> t.concurrency_key),
           _job_row.traceparent
      FROM (SELECT) one
      LEFT JOIN soniq.tasks t ON t.task_name = _job_row.task_name
$$;

-- _job_rows: a batch's jobs as they will be stored (_job_row), one per element of the arrays
-- (all of one length), n their position from 1.
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
    concurrency_key text,
    traceparent  text
)
LANGUAGE sql STABLE AS $$
    SELECT r.n, g.*
      FROM unnest(batch.task_names, batch.args, batch.queues, batch.priorities, batch.scheduled_ats,
                  batch.retries, batch.unique_jobs, batch.dedup_keys, batch.timeouts, batch.producer_ids,
                  batch.traceparents)
           WITH ORDINALITY AS r(task_name, args, queue, priority, scheduled_at, retries, unique_job,
                                dedup_key, timeout, producer_id, traceparent, n)
     CROSS JOIN LATERAL soniq._job_row(r.task_name, r.args, r.queue, r.priority, r.scheduled_at, r.retries,
                                       r.unique_job, r.dedup_key, r.timeout, r.producer_id, r.traceparent) g
$$;

-- _insert_jobs: the set-based enqueue behind enqueue_many and enqueue: one job per element of
-- the arrays, ids returned in input order; if any element is bad nothing is written and the
-- error names the first (_refuse_specs). A unique or dedup job with a queued duplicate of the
-- same login — in the table or earlier in the same batch — returns that job's id and writes
-- nothing (another login's jobs never match: a duplicate reveals nothing of them).
CREATE FUNCTION soniq._insert_jobs(batch soniq._job_batch) RETURNS SETOF uuid
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
                                     retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key,
                                     traceparent)
        SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
               g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key,
               g.traceparent
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
CREATE FUNCTION soniq._insert_unique_jobs(batch soniq._job_batch, ids uuid[], pending bigint[]) RETURNS uuid[]
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
                                         retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key,
                                         traceparent)
            SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
                   g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key,
                   g.traceparent
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
-- the same login (sql/batches.sql). With traceparent (a W3C trace context) each attempt's span
-- links to the producer's; a duplicate returned instead keeps its own. Runs in the caller's
-- transaction: rolled back, the job never existed.
CREATE FUNCTION soniq.enqueue(
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
    batch_id     uuid        DEFAULT NULL,
    traceparent  text        DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job record;
    id uuid;
BEGIN
    -- The common case checked in one expression; a bad call pays for finding out why.
    IF NOT coalesce(soniq._check_task_name(task_name)
                    AND (queue IS NULL OR soniq._check_queue_name(queue))
                    AND soniq._job_ok(args, priority, retries, timeout, scheduled_at, dedup_key, producer_id)
                    AND soniq._traceparent_ok(traceparent),
                    false) THEN
        PERFORM soniq._check_job(task_name, args, queue, priority, scheduled_at, retries, dedup_key, timeout,
                                 producer_id);
        PERFORM soniq._check_traceparent(traceparent);
    END IF;
    IF awaitable OR batch_id IS NOT NULL THEN
        id := soniq.enqueue(task_name, args, queue, priority, scheduled_at, retries, unique_job, dedup_key, timeout,
                            producer_id, depends_on, on_dependency_failure, traceparent => traceparent);
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
                ARRAY[unique_job], ARRAY[dedup_key], ARRAY[timeout], ARRAY[producer_id], ARRAY[traceparent]),
            ARRAY[to_jsonb(depends_on)], ARRAY[on_dependency_failure], labelled => false);
    END IF;
    -- A plain job is written here; a unique or dedup one, whose duplicate may be queued, takes
    -- the batch path, which finds it.
    INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                 retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited, concurrency_key,
                                 traceparent)
    SELECT soniq.uuid_v7(), g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
           g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited, g.concurrency_key,
           g.traceparent
      FROM soniq._job_row(task_name, args, queue, priority, scheduled_at, retries, unique_job, dedup_key, timeout,
                          producer_id, traceparent) g
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
                                  ARRAY[producer_id], ARRAY[traceparent]));
END
$$;
-- enqueue_many (specs): a JSON array of job specs, each an object with the keys task_name
-- (required), args, queue, priority, scheduled_at, retries, unique, dedup_key,
-- timeout (seconds), producer_id, depends_on, on_dependency_failure, awaitable, batch_id and
-- traceparent. Ids come back in
-- input order; an error names the offending element, and nothing is written. Jobs are
-- deduplicated as by enqueue, against the table and within the batch (a later element
-- returns the id of an earlier duplicate). depends_on is an array of job ids (strings) and
-- positions (integers from 0) of earlier elements of the same call, so a whole graph of jobs
-- goes in with one call.
CREATE FUNCTION soniq.enqueue_many(jobs jsonb) RETURNS SETOF uuid
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
    traceparents text[];
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
               array_agg(e.spec ->> 'traceparent' ORDER BY e.n),
               array_agg(nullif(e.spec -> 'depends_on', 'null') ORDER BY e.n),
               array_agg(e.spec ->> 'on_dependency_failure' ORDER BY e.n),
               bool_or(e.spec ? 'depends_on' OR e.spec ? 'on_dependency_failure'),
               bool_or(e.spec ?| '{depends_on,on_dependency_failure,awaitable,batch_id}'),
               array_agg(e.n) FILTER (WHERE (e.spec ->> 'awaitable')::boolean),
               array_agg((e.spec ->> 'batch_id')::uuid ORDER BY e.n)
          INTO well_formed, task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs,
               dedup_keys, timeouts, producer_ids, traceparents, depends, on_failure, dependent, followed, awaited, batches
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
                                                   unique_jobs, dedup_keys, timeouts, producer_ids, traceparents));
        RETURN;
    END IF;
    IF dependent THEN
        ids := ARRAY(SELECT soniq._insert_dependent_jobs(
            ROW(task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs, dedup_keys, timeouts,
                producer_ids, traceparents),
            depends, on_failure, labelled => true));
    ELSE
        ids := ARRAY(SELECT soniq._insert_jobs(ROW(task_names, args, queues, priorities, scheduled_ats, retries,
                                                   unique_jobs, dedup_keys, timeouts, producer_ids, traceparents)));
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

-- enqueue_many (one task, many args): one job per element of args, ids in input order; every
-- job carries the one traceparent (the producer's span that enqueued them all).
CREATE FUNCTION soniq.enqueue_many(
    task_name    text,
    args         jsonb[],
    queue        text        DEFAULT NULL,
    priority     int         DEFAULT NULL,
    scheduled_at timestamptz DEFAULT NULL,
    retries      int         DEFAULT NULL,
    unique_job   boolean     DEFAULT NULL,
    timeout      interval    DEFAULT NULL,
    producer_id  text        DEFAULT NULL,
    traceparent  text        DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n int := cardinality(soniq._require_value(args, 'args'));
BEGIN
    PERFORM soniq._check_traceparent(traceparent);
    RETURN QUERY SELECT soniq._insert_jobs(ROW(
        array_fill(task_name, ARRAY[n]), args, array_fill(queue, ARRAY[n]), array_fill(priority, ARRAY[n]),
        array_fill(scheduled_at, ARRAY[n]), array_fill(retries, ARRAY[n]), array_fill(unique_job, ARRAY[n]),
        array_fill(NULL::text, ARRAY[n]), array_fill(timeout, ARRAY[n]), array_fill(producer_id, ARRAY[n]),
        array_fill(traceparent, ARRAY[n])));
END
$$;
