-- soniq 0.2.0 -> 0.3.0
--   * a unique or dedup job going back to the queue (retry, snooze, take-back) while its
--     duplicate is queued yields to the duplicate instead of failing with 23505 (_requeue);
--   * take-backs lock and re-check each job, so a completion that commits meanwhile stands;
--   * one job that cannot be taken back no longer stops the rescue round (rescue_jobs);
--   * every interval and size an entry point takes has a documented range (22023, 54000);
--     jobs.timeout and jobs.result_ttl are constrained to them;
--   * snooze records a reason, replay can skip dead jobs replayed before (unless_replayed);
--   * a refused lease no longer names another worker; a dead job's refusal is 55000;
--   * a clean control-plane round clears the last error of its subsystem.
-- tests/survival.rs checks that an updated database equals a fresh install.

-- Rows written before the ranges existed: a timeout or TTL past them (or overflowed into a
-- negative interval) meant "very long", and becomes the longest allowed.
UPDATE soniq.jobs SET timeout = interval '30 days' WHERE timeout > interval '30 days' OR timeout < interval '0';
UPDATE soniq.jobs SET timeout = NULL WHERE timeout = interval '0';
UPDATE soniq.jobs SET result_ttl = interval '365 days'
 WHERE result_ttl > interval '365 days' OR result_ttl < interval '0';
UPDATE soniq.dead_letter_jobs SET timeout = interval '30 days'
 WHERE timeout > interval '30 days' OR timeout < interval '0';
UPDATE soniq.dead_letter_jobs SET timeout = NULL WHERE timeout = interval '0';
UPDATE soniq.dead_letter_jobs SET result_ttl = interval '365 days'
 WHERE result_ttl > interval '365 days' OR result_ttl < interval '0';
UPDATE soniq.tasks SET timeout = interval '30 days' WHERE timeout > interval '30 days' OR timeout < interval '0';
UPDATE soniq.tasks SET result_ttl = interval '365 days'
 WHERE result_ttl > interval '365 days' OR result_ttl < interval '0';
UPDATE soniq.schedules SET timeout = interval '30 days' WHERE timeout > interval '30 days' OR timeout < interval '0';

ALTER TABLE soniq.jobs
    ADD CONSTRAINT jobs_timeout_range CHECK (timeout > interval '0' AND timeout <= interval '30 days'),
    ADD CONSTRAINT jobs_result_ttl_range CHECK (result_ttl BETWEEN interval '0' AND interval '365 days');

-- Signatures that changed.
DROP FUNCTION soniq._check_interval(interval, text);
DROP FUNCTION soniq.snooze(uuid, uuid, int, interval);
DROP FUNCTION soniq.replay_many(uuid[], text, int, int, boolean);
DROP FUNCTION soniq.replay(uuid, text, int, int, boolean);

-- Tasks nobody serves (check_unserved), and the logins workers and jobs belong to. Rows from
-- before are bound to no login (NULL): an old worker keeps working until it registers again,
-- and an old job's status is an admin's to see.
ALTER TABLE soniq.workers ADD COLUMN task_names text[], ADD COLUMN registered_by text;
ALTER TABLE soniq.workers ALTER COLUMN registered_by SET DEFAULT session_user;
ALTER TABLE soniq.jobs ADD COLUMN enqueued_by text;
ALTER TABLE soniq.jobs ALTER COLUMN enqueued_by SET DEFAULT session_user;
ALTER TABLE soniq.dead_letter_jobs ADD COLUMN enqueued_by text;
ALTER TABLE soniq.dead_letter_jobs ALTER COLUMN enqueued_by SET DEFAULT session_user;

-- Deduplication within the jobs of one login.
DROP INDEX soniq.jobs_unique_args_idx;
CREATE UNIQUE INDEX jobs_unique_args_idx ON soniq.jobs (enqueued_by, task_name, args_hash)
    WHERE status = 'queued' AND args_hash IS NOT NULL;
DROP INDEX soniq.jobs_dedup_key_idx;
CREATE UNIQUE INDEX jobs_dedup_key_idx ON soniq.jobs (enqueued_by, dedup_key)
    WHERE status = 'queued' AND dedup_key IS NOT NULL;

ALTER TABLE soniq.control_plane DROP CONSTRAINT control_plane_subsystem,
    ADD CONSTRAINT control_plane_subsystem CHECK (subsystem IN ('worker', 'scheduler', 'rescue', 'prune', 'unserved'));
INSERT INTO soniq.control_plane (subsystem) VALUES ('unserved');
CREATE TABLE soniq.unserved (
    task_name text NOT NULL,
    queue     text NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_name, queue)
);
CREATE INDEX jobs_queued_task_idx ON soniq.jobs (task_name, queue) WHERE status = 'queued';

DROP FUNCTION soniq.register_worker(text, int, text[], int, text, jsonb);
DROP FUNCTION soniq._run_subsystem(text, interval, interval, interval, int);

-- A producer no longer publishes task options (a worker publishes its handlers').
REVOKE EXECUTE ON FUNCTION soniq.register_task(text, jsonb) FROM soniq_producer;


CREATE OR REPLACE FUNCTION soniq._check_interval(value interval, what text, longest interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value < interval '0' OR value > longest THEN
        RAISE EXCEPTION '% must be between 0 and %, got %', what, longest, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION soniq._seconds(value jsonb, what text, longest interval) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR value = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) <> 'number' OR value::numeric NOT BETWEEN 0 AND extract(epoch FROM longest) THEN
        RAISE EXCEPTION '% must be a number of seconds between 0 and % (%), got %', what,
                        extract(epoch FROM longest)::bigint, longest,
                        CASE jsonb_typeof(value) WHEN 'number' THEN trim_scale(value::numeric)::text ELSE value::text END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN make_interval(secs => value::numeric::float8);
END
$$;
CREATE OR REPLACE FUNCTION soniq._integer(value jsonb, what text, low int, high int) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL OR value = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(value) <> 'number' OR value::numeric <> trunc(value::numeric)
       OR value::numeric NOT BETWEEN low AND high THEN
        RAISE EXCEPTION '% must be a whole number between % and %, got %', what, low, high, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN value::numeric::int;
END
$$;
CREATE OR REPLACE FUNCTION soniq._check_size(value text, what text, limit_bytes int) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF octet_length(value) > limit_bytes THEN
        RAISE EXCEPTION '% takes % bytes, more than the % it may take', what, octet_length(value), limit_bytes
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION soniq._check_job_options(priority int, retries int, timeout interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF priority NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'priority must be between 1 and 1000, got %', priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF retries NOT BETWEEN 0 AND 1000 THEN
        RAISE EXCEPTION 'retries must be between 0 and 1000, got %', retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM soniq._check_interval(timeout, 'timeout', interval '30 days');
END
$$;
CREATE OR REPLACE FUNCTION soniq._check_result(result jsonb, job_id uuid) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF pg_column_size(result) > 1048576 THEN
        RAISE EXCEPTION 'the result of job % takes % bytes, more than the 1 MiB a result may take',
                        job_id, pg_column_size(result)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Store large outputs elsewhere and return a reference to them.';
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION soniq._is_admin() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.pg_has_role(session_user, 'soniq_admin', 'MEMBER')
$$;
CREATE OR REPLACE FUNCTION soniq._check_worker_owner(worker_id uuid) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF EXISTS (SELECT FROM soniq.workers w
                WHERE w.id = _check_worker_owner.worker_id AND w.registered_by <> session_user)
       AND NOT soniq._is_admin() THEN
        RAISE EXCEPTION 'worker % was registered by another login', worker_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A worker''s claims, outcomes and heartbeats come from the login that registered it.';
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION soniq._lease_refused(job_id uuid, worker_id uuid, attempt int) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- Nothing about the job's present holder is told: the caller is not it.
    IF NOT EXISTS (SELECT FROM soniq.jobs j WHERE j.id = _lease_refused.job_id)
       AND NOT EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = _lease_refused.job_id) THEN
        RAISE EXCEPTION 'job % does not exist', job_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'It may have been deleted or pruned after its lease was taken back.';
    END IF;
    RAISE EXCEPTION 'worker % does not hold the lease on attempt % of job %', worker_id, attempt, job_id
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = 'The lease was taken back (the worker was presumed dead), or the job finished or was dead-lettered; this attempt''s outcome is discarded.';
END
$$;
CREATE OR REPLACE FUNCTION soniq._bury(job_ids uuid[], reason text, error text) RETURNS int
LANGUAGE sql VOLATILE AS $$
    WITH gone AS (
        DELETE FROM soniq.jobs j WHERE j.id = ANY (job_ids) RETURNING j.*
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
    SELECT count(*)::int FROM buried
$$;
CREATE OR REPLACE FUNCTION soniq._queued_duplicate(job soniq.jobs) RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT d.id FROM soniq.jobs d
     WHERE d.status = 'queued' AND d.id <> job.id AND d.enqueued_by = job.enqueued_by
       AND ((job.dedup_key IS NOT NULL AND d.dedup_key = job.dedup_key)
            OR (job.args_hash IS NOT NULL AND d.task_name = job.task_name AND d.args_hash = job.args_hash))
     LIMIT 1
$$;
CREATE OR REPLACE FUNCTION soniq._queue_again(job soniq.jobs, attempts int, run_at timestamptz, error text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE soniq.jobs j
       SET status = 'queued', worker_id = NULL, attempts = _queue_again.attempts,
           scheduled_at = run_at, last_error = error, updated_at = now()
     WHERE j.id = job.id;
    IF run_at IS NULL OR run_at <= now() THEN
        PERFORM soniq._wake(job.queue);
    END IF;
END
$$;
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
    PERFORM soniq.check_task_name(task_name);
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
    PERFORM soniq.check_queue_name(job.queue);
    job.priority := coalesce(enqueue.priority, task.priority, 100);
    job.max_attempts := coalesce(enqueue.retries, task.retries, 3) + 1;
    job.timeout := nullif(coalesce(enqueue.timeout, task.timeout, interval '300 seconds'), interval '0');
    job.result_ttl := coalesce(task.result_ttl, interval '300 seconds');
    IF coalesce(enqueue.unique_job, task.unique_job, false) THEN
        -- jsonb's text form is canonical (keys sorted, whitespace fixed), so equal args hash equal.
        job.args_hash := encode(sha256(convert_to(args::text, 'UTF8')), 'hex');
    END IF;

    -- A duplicate is found by the look-ups below; if it leaves the queued state between the
    -- INSERT and the look-up, the INSERT goes through on the next turn.
    FOR turn IN 1..10 LOOP
        INSERT INTO soniq.jobs AS j (id, task_name, args, queue, priority, max_attempts, scheduled_at,
                                     timeout, retry_policy, result_ttl, args_hash, dedup_key, producer_id)
        VALUES (job.id, enqueue.task_name, enqueue.args, job.queue, job.priority, job.max_attempts,
                enqueue.scheduled_at, job.timeout, task.retry_policy, job.result_ttl, job.args_hash,
                enqueue.dedup_key, enqueue.producer_id)
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
CREATE OR REPLACE FUNCTION soniq.enqueue_many(jobs jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    spec jsonb;
    n int := 0;
    unknown text;
    message text;
    code text;
BEGIN
    PERFORM soniq._require(jobs, 'jobs');
    IF jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION 'jobs must be a JSON array of job specs, got a JSON %', jsonb_typeof(jobs)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One exception block around the whole loop (not one per job: a subtransaction per
    -- row would overflow the subtransaction cache on large batches); n survives the
    -- rollback, so the error names the element that failed.
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
            RETURN NEXT soniq.enqueue(
                task_name    => spec ->> 'task_name',
                args         => coalesce(spec -> 'args', '{}'),
                queue        => spec ->> 'queue',
                priority     => soniq._integer(spec -> 'priority', 'priority', 1, 1000),
                scheduled_at => (spec ->> 'scheduled_at')::timestamptz,
                retries      => soniq._integer(spec -> 'retries', 'retries', 0, 1000),
                unique_job   => (spec ->> 'unique')::boolean,
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
    PERFORM soniq.check_queue_name(q) FROM unnest(queues) q;
    PERFORM soniq._check_filter(task_names, 'task_names');
    PERFORM soniq.check_task_name(t) FROM unnest(task_names) t;
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
CREATE OR REPLACE FUNCTION soniq.heartbeat(worker_id uuid) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    UPDATE soniq.workers w SET last_heartbeat = now() WHERE w.id = heartbeat.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered', worker_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'It was presumed dead and its leases were taken back; register again.';
    END IF;
    RETURN QUERY
    SELECT j.id FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id AND j.cancel_requested;
END
$$;
CREATE OR REPLACE FUNCTION soniq.heartbeat(worker_id uuid, running uuid[], grace interval DEFAULT '30 seconds')
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    unknown uuid[];
BEGIN
    PERFORM soniq._require(running, 'running');
    PERFORM soniq._require(grace, 'grace');
    PERFORM soniq._check_interval(grace, 'grace', interval '1 day');
    PERFORM soniq._check_worker_owner(worker_id);
    SELECT array_agg(j.id) INTO unknown FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id
       AND j.id <> ALL (running) AND j.started_at < now() - grace;
    IF unknown IS NOT NULL THEN
        PERFORM soniq._take_back(ARRAY[worker_id], 'its worker had lost track of it', unknown);
    END IF;
    RETURN QUERY SELECT soniq.heartbeat(worker_id);
END
$$;
CREATE OR REPLACE FUNCTION soniq.deregister_worker(worker_id uuid) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    DELETE FROM soniq.workers w WHERE w.id = deregister_worker.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered', worker_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN soniq._take_back(ARRAY[worker_id], format('worker %s deregistered', worker_id));
END
$$;
CREATE OR REPLACE FUNCTION soniq._forget_stale_workers(timeout interval) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(timeout, 'timeout');
    IF timeout <= interval '0' OR timeout > interval '30 days' THEN
        RAISE EXCEPTION 'timeout must be more than 0 and at most 30 days, got %', timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM soniq.workers w WHERE w.last_heartbeat < now() - timeout;
END
$$;
CREATE OR REPLACE FUNCTION soniq.recover_stale_workers(timeout interval DEFAULT '5 minutes') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lost uuid[];
BEGIN
    PERFORM soniq._forget_stale_workers(timeout);
    lost := ARRAY(
        SELECT DISTINCT j.worker_id FROM soniq.jobs j
         WHERE j.status = 'processing'
           AND NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = j.worker_id));
    IF cardinality(lost) = 0 THEN
        RETURN 0;
    END IF;
    RETURN soniq._take_back(lost, 'its worker stopped heartbeating');
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
    PERFORM soniq._check_worker_owner(claim.worker_id);
    PERFORM soniq._check_filter(claim.queues, 'queues');
    PERFORM soniq._check_filter(claim.task_names, 'task_names');
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, got %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = claim.worker_id) THEN
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
        PERFORM soniq.check_queue_name(q) FROM unnest(claim.queues) q;
        PERFORM soniq.check_task_name(t) FROM unnest(claim.task_names) t;
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
CREATE OR REPLACE FUNCTION soniq.complete_many(
    job_ids   uuid[],
    worker_id uuid,
    attempts  int[],
    results   jsonb[] DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
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

    RETURN QUERY
    WITH lease AS (
        SELECT * FROM unnest(job_ids, complete_many.attempts, results) AS l(id, attempt, result)
    ), kept AS (
        UPDATE soniq.jobs j
           SET status = 'done', result = l.result, finished_at = now(), updated_at = now(),
               expires_at = now() + j.result_ttl
          FROM lease l
         WHERE j.id = l.id AND j.status = 'processing' AND j.worker_id = complete_many.worker_id
           AND j.attempts = l.attempt AND j.result_ttl > interval '0'
        RETURNING j.id
    ), dropped AS (
        DELETE FROM soniq.jobs j
         USING lease l
         WHERE j.id = l.id AND j.status = 'processing' AND j.worker_id = complete_many.worker_id
           AND j.attempts = l.attempt AND j.result_ttl <= interval '0'
        RETURNING j.id
    )
    SELECT k.id FROM kept k UNION ALL SELECT d.id FROM dropped d;
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
    PERFORM soniq._check_worker_owner(worker_id);
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

    delay := coalesce(retry_in, make_interval(secs => soniq.retry_delay(job.retry_policy, job.attempts, job.id)));
    RETURN soniq._requeue(job, job.attempts, CASE WHEN delay > interval '0' THEN now() + delay END,
                          left(error, 8192));
END
$$;
CREATE OR REPLACE FUNCTION soniq.snooze(job_id uuid, worker_id uuid, attempt int, delay interval, reason text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    job soniq.jobs;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._require(delay, 'delay');
    PERFORM soniq._check_interval(delay, 'delay', interval '30 days');
    PERFORM soniq._check_size(reason, 'reason', 65536);
    SELECT * INTO job FROM soniq.jobs j
     WHERE j.id = snooze.job_id AND j.status = 'processing' AND j.worker_id = snooze.worker_id
       AND j.attempts = snooze.attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
    PERFORM soniq._requeue(job, job.attempts - 1, now() + delay,
                           'snoozed' || coalesce(': ' || left(reason, 8192), ''));
END
$$;
CREATE OR REPLACE FUNCTION soniq.abort(job_id uuid, worker_id uuid, attempt int, reason text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
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
       AND j.attempts = abort.attempt;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, worker_id, attempt);
    END IF;
END
$$;
CREATE OR REPLACE VIEW soniq.job_info AS
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

CREATE OR REPLACE FUNCTION soniq.job_status(job_id uuid) RETURNS TABLE (
    id           uuid,
    task_name    text,
    queue        text,
    status       text,
    attempts     int,
    max_attempts int,
    last_error   text,
    scheduled_at timestamptz,
    created_at   timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT i.id, i.task_name, i.queue, i.status, i.attempts, i.max_attempts, i.last_error,
           i.scheduled_at, i.created_at, i.started_at, i.finished_at
      FROM soniq.job_info i WHERE i.id = job_id AND (i.enqueued_by = session_user OR soniq._is_admin())
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
        PERFORM soniq.check_queue_name(replay.queue);
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
CREATE OR REPLACE FUNCTION soniq.replay_many(
    dead_job_ids    uuid[],
    queue           text    DEFAULT NULL,
    priority        int     DEFAULT NULL,
    max_attempts    int     DEFAULT NULL,
    reset_attempts  boolean DEFAULT true,
    unless_replayed boolean DEFAULT false
) RETURNS TABLE (dead_job_id uuid, job_id uuid)
LANGUAGE sql VOLATILE AS $$
    SELECT d.id, soniq.replay(d.id, $2, $3, $4, $5, $6)
      FROM unnest(soniq._require_value($1, 'dead_job_ids')) WITH ORDINALITY AS d(id, n)
     ORDER BY d.n
$$;
CREATE OR REPLACE FUNCTION soniq.dead_letter_tag(dead_job_id uuid, tags text[]) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    result text[];
BEGIN
    PERFORM soniq._require(dead_job_id, 'dead_job_id');
    PERFORM soniq._require(tags, 'tags');
    PERFORM soniq._check_filter(tags, 'tags');
    IF EXISTS (SELECT FROM unnest(tags) t WHERE t = '') THEN
        RAISE EXCEPTION 'tags must not be empty strings' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM soniq._check_size(t, 'a tag', 200) FROM unnest(tags) t;
    UPDATE soniq.dead_letter_jobs d
       SET tags = ARRAY(SELECT DISTINCT t FROM unnest(d.tags || dead_letter_tag.tags) t ORDER BY t)
     WHERE d.id = dead_job_id
    RETURNING d.tags INTO result;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead job % does not exist', dead_job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF cardinality(result) > 50 THEN
        RAISE EXCEPTION 'a dead job may carry at most 50 tags, this one would carry %', cardinality(result)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN result;
END
$$;
CREATE OR REPLACE FUNCTION soniq.dead_letter_stats(since interval DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM soniq._check_interval(since, 'since', interval '100 years');
    RETURN (
    WITH dead AS (  -- only the columns counted: args can be large
        SELECT d.task_name, d.queue, d.dead_letter_reason, d.moved_to_dead_letter_at, d.resurrection_count
          FROM soniq.dead_letter_jobs d
         WHERE dead_letter_stats.since IS NULL OR d.moved_to_dead_letter_at >= now() - dead_letter_stats.since
    )
    SELECT jsonb_build_object(
        'total', (SELECT count(*) FROM dead),
        'by_task', coalesce((SELECT jsonb_object_agg(task_name, n) FROM
                             (SELECT task_name, count(*) AS n FROM dead GROUP BY task_name) t), '{}'),
        'by_queue', coalesce((SELECT jsonb_object_agg(queue, n) FROM
                              (SELECT queue, count(*) AS n FROM dead GROUP BY queue) q), '{}'),
        'by_reason', coalesce((SELECT jsonb_object_agg(dead_letter_reason, n) FROM
                               (SELECT dead_letter_reason, count(*) AS n FROM dead GROUP BY dead_letter_reason) r), '{}'),
        'by_day', coalesce((SELECT jsonb_object_agg(day, n) FROM
                            (SELECT moved_to_dead_letter_at::date::text AS day, count(*) AS n FROM dead
                              WHERE moved_to_dead_letter_at >= current_date - 6 GROUP BY 1) d), '{}'),
        'oldest_age_seconds', (SELECT round(extract(epoch FROM now() - min(moved_to_dead_letter_at))) FROM dead),
        'replayed', (SELECT count(*) FROM dead WHERE resurrection_count > 0)));
END
$$;
CREATE OR REPLACE FUNCTION soniq.dead_letter_purge(older_than interval) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM soniq._require(older_than, 'older_than');
    PERFORM soniq._check_interval(older_than, 'older_than', interval '100 years');
    DELETE FROM soniq.dead_letter_jobs d WHERE d.moved_to_dead_letter_at <= now() - older_than;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
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
         WHERE u.queue = n.name) AS unserved
  FROM names n
  LEFT JOIN soniq.queues q ON q.name = n.name
  LEFT JOIN soniq.jobs j ON j.queue = n.name
 GROUP BY n.name, q.paused;

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
    PERFORM soniq.check_schedule_name(name);
    PERFORM soniq.check_task_name(coalesce(schedule_add.task_name, name));
    PERFORM soniq._check_args(args);
    PERFORM soniq._require(time_zone, 'time_zone');
    PERFORM soniq._require(enabled, 'enabled');
    IF schedule_add.queue IS NOT NULL THEN
        PERFORM soniq.check_queue_name(schedule_add.queue);
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
CREATE OR REPLACE FUNCTION soniq._expire(expired soniq.jobs, lease_grace interval) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT soniq._fail(expired.id, expired.worker_id, expired.attempts,
                       format('attempt %s outlived its timeout of %s by more than %s and was taken back',
                              expired.attempts, expired.timeout, lease_grace),
                       NULL, 'timeout')
$$;
CREATE OR REPLACE FUNCTION soniq._rescue(heartbeat_timeout interval, lease_grace interval) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken int;
    expired soniq.jobs;
BEGIN
    taken := soniq.recover_stale_workers(heartbeat_timeout);
    FOR expired IN
        SELECT * FROM soniq.jobs j
         WHERE j.status = 'processing' AND j.timeout IS NOT NULL
           AND j.started_at + j.timeout + lease_grace < now()
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM soniq._expire(expired, lease_grace);
        taken := taken + 1;
    END LOOP;
    RETURN taken;
END
$$;
CREATE OR REPLACE FUNCTION soniq.rescue_jobs(heartbeat_timeout interval DEFAULT '5 minutes',
                                  lease_grace interval DEFAULT '1 minute') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken int := 0;
    due soniq.jobs;
    message text;
BEGIN
    PERFORM soniq._require(heartbeat_timeout, 'heartbeat_timeout');
    PERFORM soniq._require(lease_grace, 'lease_grace');
    PERFORM soniq._check_interval(lease_grace, 'lease_grace', interval '7 days');
    BEGIN
        RETURN soniq._rescue(heartbeat_timeout, lease_grace);
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- a job in the round failed: find it below
    END;

    -- The stale workers go first (a plain delete), then their jobs and the expired ones.
    PERFORM soniq._forget_stale_workers(heartbeat_timeout);
    FOR due IN
        SELECT * FROM soniq.jobs j
         WHERE j.status = 'processing'
           AND (NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = j.worker_id)
                OR (j.timeout IS NOT NULL AND j.started_at + j.timeout + lease_grace < now()))
         ORDER BY j.started_at
         LIMIT 50
           FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            IF EXISTS (SELECT FROM soniq.workers w WHERE w.id = due.worker_id) THEN
                PERFORM soniq._expire(due, lease_grace);
            ELSE
                PERFORM soniq._take_back(ARRAY[due.worker_id], 'its worker stopped heartbeating', ARRAY[due.id]);
            END IF;
            taken := taken + 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            UPDATE soniq.control_plane c
               SET last_error = format('job %s: %s', due.id, message), last_error_at = now(),
                   failures = c.failures + 1
             WHERE c.subsystem = 'rescue';
        END;
    END LOOP;
    RETURN taken;
END
$$;
CREATE OR REPLACE FUNCTION soniq.prune_jobs(retention interval DEFAULT '7 days', batch_size int DEFAULT 1000,
                                 max_batches int DEFAULT 10) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    done_rows int;
    cancelled_rows int;
    total bigint := 0;
BEGIN
    PERFORM soniq._require(retention, 'retention');
    PERFORM soniq._check_interval(retention, 'retention', interval '100 years');
    IF batch_size IS NULL OR batch_size < 1 OR max_batches IS NULL OR max_batches < 1 THEN
        RAISE EXCEPTION 'batch_size and max_batches must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR batch IN 1..max_batches LOOP
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT d.id FROM soniq.jobs d WHERE d.status = 'done' AND d.expires_at < now()
             ORDER BY d.expires_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS done_rows = ROW_COUNT;
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT c.id FROM soniq.jobs c WHERE c.status = 'cancelled' AND c.finished_at < now() - retention
             ORDER BY c.finished_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS cancelled_rows = ROW_COUNT;
        total := total + done_rows + cancelled_rows;
        EXIT WHEN done_rows < batch_size AND cancelled_rows < batch_size;
    END LOOP;
    RETURN total;
END
$$;
CREATE OR REPLACE FUNCTION soniq.check_unserved(grace interval DEFAULT '1 day') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    pair soniq.unserved;
    ids uuid[];
    buried int := 0;
BEGIN
    PERFORM soniq._require(grace, 'grace');
    PERFORM soniq._check_interval(grace, 'grace', interval '30 days');
    WITH RECURSIVE queued AS (  -- each (task, queue) with queued jobs: one index probe each
        (SELECT j.task_name, j.queue FROM soniq.jobs j WHERE j.status = 'queued'
          ORDER BY j.task_name, j.queue LIMIT 1)
        UNION ALL
        SELECT later.task_name, later.queue FROM queued q CROSS JOIN LATERAL (
            SELECT j.task_name, j.queue FROM soniq.jobs j
             WHERE j.status = 'queued' AND (j.task_name, j.queue) > (q.task_name, q.queue)
             ORDER BY j.task_name, j.queue LIMIT 1) later
    ), nobody AS (
        SELECT q.task_name, q.queue FROM queued q
         WHERE NOT EXISTS (SELECT FROM soniq.workers w
                            WHERE (w.task_names IS NULL OR q.task_name = ANY (w.task_names))
                              AND (w.queues IS NULL OR q.queue = ANY (w.queues)))
    ), served_again AS (
        DELETE FROM soniq.unserved u
         WHERE NOT EXISTS (SELECT FROM nobody n WHERE n.task_name = u.task_name AND n.queue = u.queue)
    )
    INSERT INTO soniq.unserved (task_name, queue)
    SELECT n.task_name, n.queue FROM nobody n
    ON CONFLICT ON CONSTRAINT unserved_pkey DO NOTHING;

    IF grace = interval '0' OR NOT EXISTS (SELECT FROM soniq.workers) THEN
        RETURN 0;
    END IF;
    FOR pair IN SELECT * FROM soniq.unserved u WHERE u.since < now() - grace ORDER BY u.since LOOP
        SELECT array_agg(j.id) INTO ids FROM (
            SELECT j.id FROM soniq.jobs j
             WHERE j.status = 'queued' AND j.task_name = pair.task_name AND j.queue = pair.queue
               AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
             LIMIT 1000 - buried
               FOR UPDATE SKIP LOCKED) j;
        buried := buried + soniq._bury(coalesce(ids, '{}'), 'job_not_found',
                                       format('no live worker served task %s in queue %s for %s', pair.task_name,
                                              pair.queue, grace));
        EXIT WHEN buried >= 1000;
    END LOOP;
    RETURN buried;
END
$$;
CREATE OR REPLACE FUNCTION soniq._run_subsystem(subsystem text, heartbeat_timeout interval, lease_grace interval,
                                     retention interval, batch_size int,
                                     unserved_grace interval DEFAULT '1 day') RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    result bigint;
    message text;
BEGIN
    BEGIN
        result := CASE subsystem
            WHEN 'scheduler' THEN soniq.fire_due_schedules(batch_size)
            WHEN 'rescue' THEN soniq.rescue_jobs(heartbeat_timeout, lease_grace)
            WHEN 'prune' THEN soniq.prune_jobs(retention, batch_size, max_batches => 1)
            WHEN 'unserved' THEN soniq.check_unserved(unserved_grace)
        END;
        -- A clean round clears the last error; one recorded during this round (a skipped
        -- schedule or job, at now(): the same transaction) stays.
        UPDATE soniq.control_plane c
           SET last_run_at = now(), last_success_at = now(), last_result = result, runs = c.runs + 1,
               last_error = CASE WHEN c.last_error_at = now() THEN c.last_error END,
               last_error_at = CASE WHEN c.last_error_at = now() THEN c.last_error_at END
         WHERE c.subsystem = _run_subsystem.subsystem;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
        UPDATE soniq.control_plane c
           SET last_run_at = now(), last_error = message, last_error_at = now(), runs = c.runs + 1,
               failures = c.failures + 1
         WHERE c.subsystem = _run_subsystem.subsystem;
        result := 0;
    END;
    RETURN result;
END
$$;
CREATE OR REPLACE VIEW soniq.health AS
SELECT c.subsystem,
       EXISTS (SELECT FROM pg_stat_activity a
                WHERE a.pid = w.pid AND a.backend_type = 'soniq control plane') AS alive,
       c.pid, c.started_at, c.last_run_at, c.last_success_at, c.last_result, c.last_error,
       c.last_error_at, c.runs, c.failures,
       CASE c.subsystem
           WHEN 'worker' THEN now() - c.last_run_at
           WHEN 'scheduler' THEN coalesce((SELECT now() - min(s.next_fire_at) FROM soniq.schedules s
                                            WHERE s.enabled AND s.next_fire_at <= now()), interval '0')
           WHEN 'rescue' THEN now() - c.last_success_at
           WHEN 'prune' THEN coalesce((SELECT now() - min(j.expires_at) FROM soniq.jobs j
                                        WHERE j.status = 'done' AND j.expires_at < now()), interval '0')
           WHEN 'unserved' THEN coalesce((SELECT now() - min(u.since) FROM soniq.unserved u), interval '0')
       END AS lag
  FROM soniq.control_plane c
  CROSS JOIN (SELECT pid FROM soniq.control_plane WHERE subsystem = 'worker') w;

-- Privileges: sql/privileges.sql, verbatim (CREATE OR REPLACE resets SECURITY DEFINER and
-- search_path; this sets them again, and grants the new signatures).

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
