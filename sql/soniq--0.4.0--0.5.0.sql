-- soniq 0.4.0 -> 0.5.0
--   * enqueue_many is set-based: a batch is checked, defaulted and inserted in a few
--     statements instead of one enqueue call per job (_insert_jobs, _insert_unique_jobs;
--     options resolve in one place, _job_rows); plain jobs skip ON CONFLICT; unique and dedup
--     jobs are deduplicated against the table and within the batch;
--   * enqueue checks the common case in one expression and writes a plain job in one
--     statement (_job_ok, _check_job, _names_ok);
--   * errors are unchanged: the first bad element is named by its position (_refuse_specs).
-- tests/survival.rs checks that an updated database equals a fresh install.

-- The names of a batch, checked in one call (src/names.rs).
CREATE FUNCTION soniq."_names_ok"("task_names" TEXT[], "queues" TEXT[]) RETURNS bool
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'names_ok_wrapper';

-- Every function defined otherwise than in the released 0.4.0, as a fresh install defines it.
CREATE OR REPLACE FUNCTION soniq._check_job(
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

CREATE OR REPLACE FUNCTION soniq._job_ok(
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

CREATE OR REPLACE FUNCTION soniq._json_in_range(value jsonb, low numeric, high numeric, whole boolean) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(value)
               WHEN 'number' THEN value::numeric BETWEEN low AND high
                                  AND (NOT whole OR value::numeric = trunc(value::numeric))
               WHEN 'null' THEN true
               ELSE value IS NULL
           END
$$;

CREATE OR REPLACE FUNCTION soniq._spec_ok(spec jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(spec) = 'object' THEN
               spec - '{task_name,args,queue,priority,scheduled_at,retries,unique,dedup_key,timeout,producer_id}'::text[]
                   = '{}'
               AND coalesce(jsonb_typeof(spec -> 'unique'), 'null') IN ('boolean', 'null')
               AND soniq._json_in_range(spec -> 'priority', 1, 1000, true)
               AND soniq._json_in_range(spec -> 'retries', 0, 1000, true)
               AND soniq._json_in_range(spec -> 'timeout', 0, 2592000, false)
           ELSE false END
$$;

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
                             'unique', 'dedup_key', 'timeout', 'producer_id');
            IF unknown IS NOT NULL THEN
                RAISE EXCEPTION 'unknown key(s) in job spec: %', unknown
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(spec -> 'unique') NOT IN ('boolean', 'null') THEN
                RAISE EXCEPTION 'unique must be true or false, got %', spec -> 'unique'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
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

CREATE OR REPLACE FUNCTION soniq._as_specs(
    task_names    text[],
    args          jsonb[],
    queues        text[],
    priorities    int[],
    scheduled_ats timestamptz[],
    retries       int[],
    unique_jobs   boolean[],
    dedup_keys    text[],
    timeouts      interval[],
    producer_ids  text[]
) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(
               jsonb_build_object('task_name', r.task_name, 'args', r.args)
               || jsonb_strip_nulls(jsonb_build_object(
                      'queue', r.queue, 'priority', r.priority, 'scheduled_at', r.scheduled_at,
                      'retries', r.retries, 'unique', r.unique_job, 'dedup_key', r.dedup_key,
                      'timeout', extract(epoch FROM r.timeout), 'producer_id', r.producer_id))
               ORDER BY r.n), '[]')
      FROM unnest(task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs, dedup_keys,
                  timeouts, producer_ids)
           WITH ORDINALITY AS r(task_name, args, queue, priority, scheduled_at, retries, unique_job,
                                dedup_key, timeout, producer_id, n)
$$;

CREATE OR REPLACE FUNCTION soniq._job_rows(
    task_names    text[],
    args          jsonb[],
    queues        text[],
    priorities    int[],
    scheduled_ats timestamptz[],
    retries       int[],
    unique_jobs   boolean[],
    dedup_keys    text[],
    timeouts      interval[],
    producer_ids  text[]
) RETURNS TABLE (
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
    well_formed  boolean
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
                                  r.producer_id), false)
      FROM unnest(task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs, dedup_keys,
                  timeouts, producer_ids)
           WITH ORDINALITY AS r(task_name, args, queue, priority, scheduled_at, retries, unique_job,
                                dedup_key, timeout, producer_id, n)
      LEFT JOIN soniq.tasks t ON t.task_name = r.task_name
$$;

CREATE OR REPLACE FUNCTION soniq._insert_jobs(
    task_names    text[],
    args          jsonb[],
    queues        text[],
    priorities    int[],
    scheduled_ats timestamptz[],
    retries       int[],
    unique_jobs   boolean[],
    dedup_keys    text[],
    timeouts      interval[],
    producer_ids  text[]
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE
SET jit = off  -- as _insert_unique_jobs: a large batch must not wait for a compiler
AS $$
DECLARE
    ids uuid[];        -- by position: the job's id, or its queued duplicate's
    pending bigint[];  -- positions of unique and dedup jobs neither written nor matched yet
    due text[];
BEGIN
    IF NOT soniq._names_ok(task_names, queues) THEN
        PERFORM soniq._refuse_specs(soniq._as_specs(task_names, args, queues, priorities, scheduled_ats, retries,
                                                    unique_jobs, dedup_keys, timeouts, producer_ids));
    END IF;

    -- Every job is checked as it is made (a bad one stops the statement before it commits
    -- anything: _refuse_specs raises). Plain jobs cannot collide with one another and go in
    -- without ON CONFLICT, whose speculative insertion costs ~3 µs a row; ids are made in input
    -- order, the claim's tie-break. Unique and dedup jobs follow.
    WITH job AS MATERIALIZED (
        SELECT soniq.uuid_v7() AS id, r.*,
               CASE WHEN NOT r.well_formed THEN
                   soniq._refuse_specs(soniq._as_specs(task_names, _insert_jobs.args, queues, priorities,
                                                       scheduled_ats, retries, unique_jobs, dedup_keys, timeouts,
                                                       producer_ids))
               END AS refused
          FROM (SELECT * FROM soniq._job_rows(task_names, args, queues, priorities, scheduled_ats, retries,
                                              unique_jobs, dedup_keys, timeouts, producer_ids)
                 ORDER BY 1) r
    ), written AS (
        INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                     retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited)
        SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
               g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited
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
        ids := soniq._insert_unique_jobs(task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs,
                                         dedup_keys, timeouts, producer_ids, ids, pending);
    END IF;
    PERFORM soniq._wake(q) FROM unnest(due) q;
    RETURN QUERY SELECT unnest(ids);
END
$$;

CREATE OR REPLACE FUNCTION soniq._insert_unique_jobs(
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
    ids           uuid[],
    pending       bigint[]
) RETURNS uuid[]
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
              FROM (SELECT * FROM soniq._job_rows(task_names, args, queues, priorities, scheduled_ats, retries,
                                                  unique_jobs, dedup_keys, timeouts, producer_ids) x
                     WHERE x.n IN (SELECT unnest(pending))
                     ORDER BY 1) r
        ), inserted AS (
            INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at, timeout,
                                         retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited)
            SELECT g.id, g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
                   g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited
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
                     AND j.dedup_key = dedup_keys[p.n]
                   LIMIT 1) by_key ON true
              LEFT JOIN LATERAL (
                  SELECT j.id FROM soniq.jobs j
                   WHERE w.id IS NULL AND by_key.id IS NULL AND j.status = 'queued'
                     AND j.enqueued_by = session_user
                     AND j.task_name = task_names[p.n] AND j.args_hash = p.args_hash
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
    RAISE EXCEPTION 'could not enqueue % after repeated deduplication races', task_names[pending[1]]
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END
$$;

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
                                 retry_policy, result_ttl, args_hash, dedup_key, producer_id, inherited)
    SELECT soniq.uuid_v7(), g.task_name, g.args, g.queue, g.priority, g.max_attempts, g.scheduled_at, g.timeout,
           g.retry_policy, g.result_ttl, g.args_hash, g.dedup_key, g.producer_id, g.inherited
      FROM soniq._job_rows(ARRAY[task_name], ARRAY[args], ARRAY[queue], ARRAY[priority], ARRAY[scheduled_at],
                           ARRAY[retries], ARRAY[unique_job], ARRAY[dedup_key], ARRAY[timeout], ARRAY[producer_id]) g
     WHERE g.args_hash IS NULL AND g.dedup_key IS NULL
    RETURNING j.id, j.queue INTO job;
    IF FOUND THEN
        IF enqueue.scheduled_at IS NULL OR enqueue.scheduled_at <= now() THEN
            PERFORM soniq._wake(job.queue);
        END IF;
        RETURN job.id;
    END IF;
    RETURN soniq._insert_jobs(ARRAY[task_name], ARRAY[args], ARRAY[queue], ARRAY[priority], ARRAY[scheduled_at],
                              ARRAY[retries], ARRAY[unique_job], ARRAY[dedup_key], ARRAY[timeout],
                              ARRAY[producer_id]);
END
$$;

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
               array_agg(e.spec ->> 'producer_id' ORDER BY e.n)
          INTO well_formed, task_names, args, queues, priorities, scheduled_ats, retries, unique_jobs,
               dedup_keys, timeouts, producer_ids
          FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(spec, n);
    EXCEPTION WHEN data_exception THEN
        well_formed := false;
    END;
    IF NOT coalesce(well_formed, true) THEN
        PERFORM soniq._refuse_specs(jobs);
    END IF;
    RETURN QUERY SELECT soniq._insert_jobs(task_names, args, queues, priorities, scheduled_ats, retries,
                                           unique_jobs, dedup_keys, timeouts, producer_ids);
END
$$;

CREATE OR REPLACE FUNCTION soniq.enqueue_many(
    task_name    text,
    args         jsonb[],
    queue        text        DEFAULT NULL,
    priority     int         DEFAULT NULL,
    scheduled_at timestamptz DEFAULT NULL,
    retries      int         DEFAULT NULL,
    unique_job   boolean     DEFAULT NULL,
    timeout      interval    DEFAULT NULL,
    producer_id  text        DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n int := cardinality(soniq._require_value(args, 'args'));
BEGIN
    RETURN QUERY SELECT soniq._insert_jobs(
        array_fill(task_name, ARRAY[n]), args, array_fill(queue, ARRAY[n]), array_fill(priority, ARRAY[n]),
        array_fill(scheduled_at, ARRAY[n]), array_fill(retries, ARRAY[n]), array_fill(unique_job, ARRAY[n]),
        array_fill(NULL::text, ARRAY[n]), array_fill(timeout, ARRAY[n]), array_fill(producer_id, ARRAY[n]));
END
$$;

-- Privileges, as a fresh install grants them (sql/privileges.sql).
-- Soniq roles and privileges.
--
-- Three roles, created once per cluster (roles are cluster-wide) and granted to login roles by
-- the operator:
--   soniq_producer  enqueues jobs and reads the status of those its login enqueued (by id, not
--                   their args or results);
--   soniq_worker    runs jobs: registers, claims, heartbeats, completes, fails, snoozes,
--                   aborts, and publishes its handlers' options (register_task); a member of
--                   soniq_producer (handlers enqueue follow-up jobs). A worker is bound to the
--                   login that registered it: no other login (but an admin) may act for it;
--   soniq_admin     everything: every function (dead letter, schedules, cancellation,
--                   maintenance rounds) and read access to every table and view; a member of
--                   soniq_worker.
-- No role writes a table directly: the API functions run with their owner's rights
-- (SECURITY DEFINER) and a pinned search_path, so a caller's schemas cannot stand in for
-- pg_catalog's objects inside them. Internal helpers (names starting with "_") are called
-- only from those functions and granted to nobody.

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
    soniq.abort(uuid, uuid, int, text)
TO soniq_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_admin;
