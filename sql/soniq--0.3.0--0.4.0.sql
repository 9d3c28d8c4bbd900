-- soniq 0.3.0 -> 0.4.0
--   * dead_letter_get: one dead job by id (the runner read the table);
--   * unserved_jobs: the tasks and queues no live worker serves, with their queued jobs
--     (soniq status read the tables);
--   * the dead-letter reasons are one domain, soniq.dead_letter_reason;
--   * the Rust-backed helpers that are not API take the "_" of internal functions:
--     _check_task_name, _check_queue_name, _check_schedule_name, _normalize_task_defaults,
--     _retry_delay (granted to nobody, as every "_" function);
--   * the control plane's own row in soniq.control_plane and soniq.health is 'control_plane'
--     (it was 'worker'), and each round is a function of its own (_round_scheduler,
--     _round_rescue, _round_prune, _round_unserved) recorded in one place.
--   * what main gained under the version number 0.3.0 after 0.3.0 was released: jobs.inherited
--     (queued jobs follow their task's options published after them), _check_worker_owner
--     returning whether the worker is registered, and the functions using them. Written to
--     apply to a database at the released 0.3.0 and to one at that later state alike.
-- tests/survival.rs checks that an updated database equals a fresh install.

-- After the release of 0.3.0, its version number on main gained these.
ALTER TABLE soniq.jobs ADD COLUMN IF NOT EXISTS inherited smallint NOT NULL DEFAULT 0;
-- Its result became a boolean (re-created with the changed functions below).
DROP FUNCTION soniq._check_worker_owner(uuid);

CREATE VIEW soniq.unserved_jobs AS
SELECT u.task_name, u.queue, u.since, now() - u.since AS unserved_for,
       (SELECT count(*) FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.task_name = u.task_name AND j.queue = u.queue) AS jobs
  FROM soniq.unserved u
 ORDER BY u.since, u.task_name, u.queue;

CREATE FUNCTION soniq.dead_letter_get(job_id uuid) RETURNS SETOF soniq.dead_letter_jobs
LANGUAGE sql STABLE AS $$
    SELECT d.* FROM soniq.dead_letter_jobs d WHERE d.id = job_id
$$;

-- The reasons' domain. The column's view (and the functions returning its rows) go while
-- its type changes, and come back as a fresh install defines them.
CREATE DOMAIN soniq.dead_letter_reason AS text CONSTRAINT dead_letter_reason_known CHECK (VALUE IN (
    'max_retries_exceeded', 'permanent_failure', 'job_not_found',
    'invalid_arguments', 'timeout', 'manual_move'));
DROP FUNCTION soniq.get_job(uuid);
DROP FUNCTION soniq.list_jobs(text, text, int, int);
DROP VIEW soniq.job_info;
ALTER TABLE soniq.dead_letter_jobs DROP CONSTRAINT dead_letter_reason_check,
    ALTER COLUMN dead_letter_reason TYPE soniq.dead_letter_reason;
CREATE VIEW soniq.job_info AS
SELECT j.id, j.task_name, j.args, j.status, j.queue, j.priority, j.attempts, j.max_attempts,
       j.scheduled_at, j.timeout, j.last_error, j.result, j.worker_id, j.cancel_requested,
       j.producer_id, NULL::text AS dead_letter_reason, j.created_at, j.updated_at,
       j.started_at, j.finished_at, j.expires_at, j.enqueued_by
  FROM soniq.jobs j
UNION ALL
SELECT d.id, d.task_name, d.args, 'dead', d.queue, d.priority, d.attempts, d.max_attempts,
       NULL, d.timeout, d.last_error, NULL, NULL, false,
       d.producer_id, d.dead_letter_reason, d.original_created_at, d.moved_to_dead_letter_at,
       NULL, d.moved_to_dead_letter_at, NULL, d.enqueued_by
  FROM soniq.dead_letter_jobs d;
CREATE FUNCTION soniq.get_job(job_id uuid) RETURNS SETOF soniq.job_info
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.job_info i WHERE i.id = job_id
$$;

-- The helpers' new names (the library's symbols are the same).
DROP FUNCTION soniq.check_task_name(text);
DROP FUNCTION soniq.check_queue_name(text);
DROP FUNCTION soniq.check_schedule_name(text);
DROP FUNCTION soniq.normalize_task_defaults(jsonb);
DROP FUNCTION soniq.retry_delay(jsonb, int, uuid);
CREATE FUNCTION soniq."_check_task_name"("name" TEXT) RETURNS bool
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'check_task_name_wrapper';
CREATE FUNCTION soniq."_check_queue_name"("name" TEXT) RETURNS bool
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'check_queue_name_wrapper';
CREATE FUNCTION soniq."_check_schedule_name"("name" TEXT) RETURNS bool
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'check_schedule_name_wrapper';
CREATE FUNCTION soniq."_normalize_task_defaults"("defaults" jsonb) RETURNS jsonb
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'normalize_task_defaults_wrapper';
CREATE FUNCTION soniq."_retry_delay"("policy" jsonb, "attempt" INT, "job_id" uuid) RETURNS double precision
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'retry_delay_wrapper';

-- The background worker's own row of soniq.control_plane is 'control_plane' (it was 'worker'),
-- and its rounds are one function each, recorded in one place (the string switch
-- _run_subsystem goes). The library of 0.4.0 calls them: restart PostgreSQL after the update.
ALTER TABLE soniq.control_plane DROP CONSTRAINT control_plane_subsystem;
UPDATE soniq.control_plane SET subsystem = 'control_plane' WHERE subsystem = 'worker';
ALTER TABLE soniq.control_plane ADD CONSTRAINT control_plane_subsystem
    CHECK (subsystem IN ('control_plane', 'scheduler', 'rescue', 'prune', 'unserved'));
DROP FUNCTION soniq._run_subsystem(text, interval, interval, interval, int, interval);
CREATE FUNCTION soniq._round_done(subsystem text, result bigint) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c
       SET last_run_at = now(), last_success_at = now(), last_result = $2, runs = c.runs + 1,
           last_error = CASE WHEN c.last_error_at = now() THEN c.last_error END,
           last_error_at = CASE WHEN c.last_error_at = now() THEN c.last_error_at END
     WHERE c.subsystem = $1;
    SELECT $2;
$$;

CREATE FUNCTION soniq._round_failed(subsystem text, message text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c
       SET last_run_at = now(), last_error = $2, last_error_at = now(), runs = c.runs + 1,
           failures = c.failures + 1
     WHERE c.subsystem = $1;
    SELECT 0::bigint;
$$;

CREATE FUNCTION soniq._round_scheduler(batch_size int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('scheduler', soniq.fire_due_schedules(batch_size));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('scheduler', message);
END
$$;

CREATE FUNCTION soniq._round_rescue(heartbeat_timeout interval, lease_grace interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('rescue', soniq.rescue_jobs(heartbeat_timeout, lease_grace));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('rescue', message);
END
$$;

CREATE FUNCTION soniq._round_prune(retention interval, batch_size int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('prune', soniq.prune_jobs(retention, batch_size, max_batches => 1));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('prune', message);
END
$$;

CREATE FUNCTION soniq._round_unserved(grace interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    message text;
BEGIN
    RETURN soniq._round_done('unserved', soniq.check_unserved(grace));
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
    RETURN soniq._round_failed('unserved', message);
END
$$;

CREATE OR REPLACE VIEW soniq.health AS
SELECT c.subsystem,
       EXISTS (SELECT FROM pg_stat_activity a
                WHERE a.pid = w.pid AND a.backend_type = 'soniq control plane') AS alive,
       c.pid, c.started_at, c.last_run_at, c.last_success_at, c.last_result, c.last_error,
       c.last_error_at, c.runs, c.failures,
       CASE c.subsystem
           WHEN 'control_plane' THEN now() - c.last_run_at
           WHEN 'scheduler' THEN coalesce((SELECT now() - min(s.next_fire_at) FROM soniq.schedules s
                                            WHERE s.enabled AND s.next_fire_at <= now()), interval '0')
           WHEN 'rescue' THEN now() - c.last_success_at
           WHEN 'prune' THEN coalesce((SELECT now() - min(j.expires_at) FROM soniq.jobs j
                                        WHERE j.status = 'done' AND j.expires_at < now()), interval '0')
           WHEN 'unserved' THEN coalesce((SELECT now() - min(u.since) FROM soniq.unserved u), interval '0')
       END AS lag
  FROM soniq.control_plane c
  CROSS JOIN (SELECT pid FROM soniq.control_plane WHERE subsystem = 'control_plane') w;


-- Every function defined otherwise than in the released 0.3.0, as a fresh install defines it.
CREATE OR REPLACE FUNCTION soniq._check_worker_owner(worker_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    owner text;
BEGIN
    SELECT w.registered_by INTO owner FROM soniq.workers w WHERE w.id = _check_worker_owner.worker_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF owner <> session_user AND NOT soniq._is_admin() THEN
        RAISE EXCEPTION 'worker % was registered by another login', worker_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A worker''s claims, outcomes and heartbeats come from the login that registered it.';
    END IF;
    RETURN true;
END
$$;

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
    INSERT INTO soniq.tasks AS t (task_name, queue, priority, retries, timeout, retry_policy, result_ttl, unique_job)
    VALUES (register_task.task_name,
            d ->> 'queue',
            (d ->> 'priority')::int,
            (d ->> 'retries')::int,
            make_interval(secs => (d ->> 'timeout')::float8),
            d -> 'retry_policy',
            make_interval(secs => (d ->> 'result_ttl')::float8),
            (d ->> 'unique')::boolean)
    ON CONFLICT ON CONSTRAINT tasks_pkey DO UPDATE
       SET queue = excluded.queue, priority = excluded.priority, retries = excluded.retries,
           timeout = excluded.timeout, retry_policy = excluded.retry_policy,
           result_ttl = excluded.result_ttl, unique_job = excluded.unique_job, updated_at = now()
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

CREATE OR REPLACE FUNCTION soniq._follow_task(task soniq.tasks) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due_in text[];
BEGIN
    WITH followed AS (
        UPDATE soniq.jobs j
           SET queue = CASE WHEN j.inherited & 1 <> 0 THEN coalesce(task.queue, 'default') ELSE j.queue END,
               priority = CASE WHEN j.inherited & 2 <> 0 THEN coalesce(task.priority, 100) ELSE j.priority END,
               max_attempts = CASE WHEN j.inherited & 4 <> 0
                                   THEN greatest(coalesce(task.retries, 3) + 1, j.attempts + 1)
                                   ELSE j.max_attempts END,
               timeout = CASE WHEN j.inherited & 8 <> 0
                              THEN nullif(coalesce(task.timeout, interval '300 seconds'), interval '0')
                              ELSE j.timeout END,
               retry_policy = CASE WHEN j.inherited & 16 <> 0 THEN task.retry_policy ELSE j.retry_policy END,
               result_ttl = CASE WHEN j.inherited & 32 <> 0 THEN coalesce(task.result_ttl, interval '300 seconds')
                                 ELSE j.result_ttl END,
               updated_at = now()
         WHERE j.task_name = task.task_name AND j.status = 'queued' AND j.inherited <> 0
        RETURNING j.queue, j.scheduled_at
    )
    SELECT array_agg(DISTINCT f.queue) INTO due_in
      FROM followed f WHERE f.scheduled_at IS NULL OR f.scheduled_at <= now();
    PERFORM soniq._wake(q) FROM unnest(due_in) q;
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
    task soniq.tasks;
    job soniq.jobs;
    found_id uuid;
BEGIN
    PERFORM soniq._check_task_name(task_name);
    PERFORM soniq._check_args(args);
    PERFORM soniq._check_job_options(enqueue.priority, enqueue.retries, enqueue.timeout);
    IF NOT isfinite(enqueue.scheduled_at) THEN
        RAISE EXCEPTION 'scheduled_at must be a finite time, got %', enqueue.scheduled_at
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL to run as soon as possible.';
    END IF;
    IF enqueue.dedup_key = '' THEN
        RAISE EXCEPTION 'dedup_key must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass NULL for no deduplication key.';
    END IF;
    PERFORM soniq._check_size(enqueue.dedup_key, 'dedup_key', 512);
    PERFORM soniq._check_size(enqueue.producer_id, 'producer_id', 512);

    SELECT * INTO task FROM soniq.tasks t WHERE t.task_name = enqueue.task_name;

    job.id := soniq.uuid_v7();
    job.queue := coalesce(enqueue.queue, task.queue, 'default');
    PERFORM soniq._check_queue_name(job.queue);
    job.priority := coalesce(enqueue.priority, task.priority, 100);
    job.max_attempts := coalesce(enqueue.retries, task.retries, 3) + 1;
    job.timeout := nullif(coalesce(enqueue.timeout, task.timeout, interval '300 seconds'), interval '0');
    job.result_ttl := coalesce(task.result_ttl, interval '300 seconds');
    -- What this call left out follows the task's options while the job waits (_follow_task).
    job.inherited := 16 | 32 | CASE WHEN enqueue.queue IS NULL THEN 1 ELSE 0 END
                             | CASE WHEN enqueue.priority IS NULL THEN 2 ELSE 0 END
                             | CASE WHEN enqueue.retries IS NULL THEN 4 ELSE 0 END
                             | CASE WHEN enqueue.timeout IS NULL THEN 8 ELSE 0 END;
    IF coalesce(enqueue.unique_job, task.unique_job, false) THEN
        -- jsonb's text form is canonical (keys sorted, whitespace fixed), so equal args hash equal.
        job.args_hash := encode(sha256(convert_to(args::text, 'UTF8')), 'hex');
    END IF;

    -- A duplicate is found by the look-ups below; if it leaves the queued state between the
    -- INSERT and the look-up, the INSERT goes through on the next turn.
    FOR turn IN 1..10 LOOP
        INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at,
                                     timeout, retry_policy, result_ttl, args_hash, dedup_key, producer_id,
                                     inherited)
        VALUES (job.id, enqueue.task_name, enqueue.args, job.queue, job.priority, job.max_attempts,
                enqueue.scheduled_at, job.timeout, task.retry_policy, job.result_ttl, job.args_hash,
                enqueue.dedup_key, enqueue.producer_id, job.inherited)
        ON CONFLICT DO NOTHING
        RETURNING j.id INTO found_id;
        IF found_id IS NOT NULL THEN
            IF enqueue.scheduled_at IS NULL OR enqueue.scheduled_at <= now() THEN
                PERFORM soniq._wake(job.queue);
            END IF;
            RETURN found_id;
        END IF;

        SELECT j.id INTO found_id FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.enqueued_by = session_user AND j.dedup_key = enqueue.dedup_key;
        IF found_id IS NULL THEN
            SELECT j.id INTO found_id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.enqueued_by = session_user
               AND j.task_name = enqueue.task_name AND j.args_hash = job.args_hash;
        END IF;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'could not enqueue % after repeated deduplication races', task_name
        USING ERRCODE = 'serialization_failure', HINT = 'Retry the transaction.';
END
$$;

CREATE OR REPLACE FUNCTION soniq.register_worker(
    hostname    text    DEFAULT NULL,
    pid         int     DEFAULT NULL,
    queues      text[]  DEFAULT NULL,
    concurrency int     DEFAULT 1,
    version     text    DEFAULT NULL,
    metadata    jsonb   DEFAULT '{}',
    task_names  text[]  DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM soniq._check_filter(queues, 'queues');
    PERFORM soniq._check_queue_name(q) FROM unnest(queues) q;
    PERFORM soniq._check_filter(task_names, 'task_names');
    PERFORM soniq._check_task_name(t) FROM unnest(task_names) t;
    IF concurrency IS NULL OR concurrency < 1 THEN
        RAISE EXCEPTION 'concurrency must be at least 1, got %', coalesce(concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO soniq.workers AS w (hostname, pid, queues, concurrency, version, metadata, task_names)
    VALUES (register_worker.hostname, register_worker.pid, register_worker.queues,
            register_worker.concurrency, register_worker.version, register_worker.metadata,
            register_worker.task_names)
    RETURNING w.id INTO new_id;
    RETURN new_id;
END
$$;

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
    SELECT coalesce(array_agg(q.name), '{}') INTO paused FROM soniq.queues q WHERE q.paused;

    -- The batch in claim order: one queue's from its own index (queue first), any other
    -- selection from the general one. The two statements differ only there: keep them in step.
    IF cardinality(claim.queues) = 1 THEN
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
END
$$;

CREATE OR REPLACE FUNCTION soniq._fail(job_id uuid, worker_id uuid, attempt int, error text, retry_in interval, reason text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job soniq.jobs;
    delay interval;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._require(error, 'error');
    PERFORM soniq._check_size(error, 'error', 65536);
    PERFORM soniq._check_interval(retry_in, 'retry_in', interval '365 days');
    IF reason NOT IN ('timeout', 'permanent_failure', 'invalid_arguments', 'job_not_found') THEN
        RAISE EXCEPTION 'reason must be timeout, permanent_failure, invalid_arguments or job_not_found, got %', reason
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass NULL for an ordinary failure that retries while attempts remain.';
    END IF;

    SELECT * INTO job FROM soniq.jobs j
     WHERE j.id = _fail.job_id AND j.status = 'processing' AND j.worker_id = _fail.worker_id
       AND j.attempts = _fail.attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    IF reason IN ('permanent_failure', 'invalid_arguments', 'job_not_found') OR job.attempts >= job.max_attempts THEN
        PERFORM soniq._bury(ARRAY[job.id],
                            CASE WHEN reason IS NULL THEN 'max_retries_exceeded' ELSE reason END,
                            left(error, 8192));
        RETURN 'dead';
    END IF;

    delay := coalesce(retry_in, make_interval(secs => soniq._retry_delay(job.retry_policy, job.attempts, job.id)));
    RETURN soniq._requeue(job, job.attempts, CASE WHEN delay > interval '0' THEN now() + delay END,
                          left(error, 8192));
END
$$;

CREATE OR REPLACE FUNCTION soniq.fail(
    job_id    uuid,
    worker_id uuid,
    attempt   int,
    error     text,
    retry_in  interval DEFAULT NULL,
    reason    text     DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    outcome text;
BEGIN
    PERFORM soniq._check_worker_owner(worker_id);
    outcome := soniq._fail(job_id, worker_id, attempt, error, retry_in, reason);
    IF outcome IS NULL THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
    RETURN outcome;
END
$$;

CREATE OR REPLACE FUNCTION soniq.fail_many(
    job_ids   uuid[],
    worker_id uuid,
    attempts  int[],
    errors    text[],
    retry_in  interval[] DEFAULT NULL,
    reasons   text[]     DEFAULT NULL
) RETURNS TABLE (job_id uuid, state text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_ids, 'job_ids');
    PERFORM soniq._require(fail_many.attempts, 'attempts');
    PERFORM soniq._require(errors, 'errors');
    PERFORM soniq._check_worker_owner(fail_many.worker_id);  -- once, not per job
    IF cardinality(job_ids) <> cardinality(fail_many.attempts)
       OR cardinality(job_ids) <> cardinality(errors)
       OR cardinality(job_ids) <> coalesce(cardinality(fail_many.retry_in), cardinality(job_ids))
       OR cardinality(job_ids) <> coalesce(cardinality(reasons), cardinality(job_ids)) THEN
        RAISE EXCEPTION 'job_ids, attempts, errors, retry_in and reasons must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT f.id, f.state
      FROM (SELECT l.id, soniq._fail(l.id, fail_many.worker_id, l.attempt, l.error, l.delay, l.reason) AS state, l.n
              FROM unnest(job_ids, fail_many.attempts, errors, fail_many.retry_in, reasons)
                   WITH ORDINALITY AS l(id, attempt, error, delay, reason, n)) f
     WHERE f.state IS NOT NULL
     ORDER BY f.n;
END
$$;

CREATE OR REPLACE FUNCTION soniq.pause_queue(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    changed boolean;
BEGIN
    PERFORM soniq._check_queue_name(name);
    INSERT INTO soniq.queues AS q (name, paused, paused_at) VALUES (pause_queue.name, true, now())
    ON CONFLICT ON CONSTRAINT queues_pkey DO UPDATE
       SET paused = true, paused_at = now(), updated_at = now()
     WHERE NOT q.paused
    RETURNING true INTO changed;
    RETURN coalesce(changed, false);
END
$$;

CREATE OR REPLACE FUNCTION soniq.resume_queue(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._check_queue_name(name);
    UPDATE soniq.queues q SET paused = false, paused_at = NULL, updated_at = now()
     WHERE q.name = resume_queue.name AND q.paused;
    IF FOUND THEN
        PERFORM soniq._wake(name);
        RETURN true;
    END IF;
    RETURN false;
END
$$;

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
    IF list_jobs.status NOT IN ('queued', 'processing', 'done', 'cancelled') THEN
        RAISE EXCEPTION 'status must be queued, processing, done or cancelled, got %', list_jobs.status
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
                            retry_policy, result_ttl, producer_id, enqueued_by)
    VALUES (new_id, dead.task_name, dead.args, coalesce(replay.queue, dead.queue),
            coalesce(replay.priority, dead.priority), attempts_so_far,
            coalesce(replay.max_attempts, dead.max_attempts),
            dead.timeout, dead.retry_policy, dead.result_ttl, dead.producer_id, dead.enqueued_by);
    PERFORM soniq._wake(coalesce(replay.queue, dead.queue));
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION soniq._wake_control_plane() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT soniq._wake_control_plane_at_commit(c.pid)
      FROM soniq.control_plane c
     WHERE c.subsystem = 'control_plane' AND c.pid IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION soniq.schedule_add(
    name      text,
    task_name text     DEFAULT NULL,
    cron      text     DEFAULT NULL,
    every     interval DEFAULT NULL,
    args      jsonb    DEFAULT '{}',
    time_zone text     DEFAULT 'UTC',
    queue     text     DEFAULT NULL,
    priority  int      DEFAULT NULL,
    retries   int      DEFAULT NULL,
    timeout   interval DEFAULT NULL,
    enabled   boolean  DEFAULT true
) RETURNS soniq.schedules
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    row_out soniq.schedules;
    every_seconds float8;
BEGIN
    PERFORM soniq._check_schedule_name(name);
    PERFORM soniq._check_task_name(coalesce(schedule_add.task_name, name));
    PERFORM soniq._check_args(args);
    PERFORM soniq._require(time_zone, 'time_zone');
    PERFORM soniq._require(enabled, 'enabled');
    IF schedule_add.queue IS NOT NULL THEN
        PERFORM soniq._check_queue_name(schedule_add.queue);
    END IF;
    PERFORM soniq._check_job_options(schedule_add.priority, schedule_add.retries, schedule_add.timeout);
    PERFORM soniq._check_interval(schedule_add.every, 'every', interval '365 days');
    every_seconds := soniq._every_seconds(schedule_add.every);
    PERFORM soniq._check_schedule(schedule_add.cron, every_seconds, time_zone);

    INSERT INTO soniq.schedules AS s (name, task_name, args, cron, every, time_zone, queue, priority,
                                      retries, timeout, enabled, next_fire_at)
    VALUES (name, coalesce(schedule_add.task_name, name), args, schedule_add.cron, schedule_add.every,
            time_zone, schedule_add.queue, schedule_add.priority, schedule_add.retries,
            schedule_add.timeout, enabled,
            CASE WHEN enabled THEN soniq._next_fire(schedule_add.cron, every_seconds, time_zone, NULL, now()) END)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
       SET task_name = excluded.task_name, args = excluded.args, cron = excluded.cron,
           every = excluded.every, time_zone = excluded.time_zone, queue = excluded.queue,
           priority = excluded.priority, retries = excluded.retries, timeout = excluded.timeout,
           enabled = excluded.enabled, updated_at = now(),
           next_fire_at = CASE
               WHEN NOT excluded.enabled THEN NULL
               WHEN s.enabled AND s.cron IS NOT DISTINCT FROM excluded.cron
                    AND s.every IS NOT DISTINCT FROM excluded.every
                    AND s.time_zone = excluded.time_zone THEN s.next_fire_at
               ELSE excluded.next_fire_at END
    RETURNING s.* INTO row_out;
    PERFORM soniq._wake_control_plane();
    RETURN row_out;
END
$$;

CREATE OR REPLACE FUNCTION soniq._control_plane_started(pid int) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET pid = $1, started_at = now(), last_run_at = now()
     WHERE c.subsystem = 'control_plane'
$$;

CREATE OR REPLACE FUNCTION soniq._control_plane_round_done() RETURNS float8
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET last_run_at = now(), last_success_at = now(), runs = c.runs + 1
     WHERE c.subsystem = 'control_plane';
    SELECT extract(epoch FROM min(s.next_fire_at) - clock_timestamp())::float8
      FROM soniq.schedules s WHERE s.enabled;
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
