-- Soniq 0.10.0 -> 0.11.0: the dashboard's per-minute outcomes and a schedule's "fire now".
-- * outcome_minutes: what each worker completed and failed per queue and minute;
--   complete_many and _fail add to it (_tally), prune_jobs keeps two hours of it.
-- * schedule_fire: a schedule's job now, its timing kept.
-- Then the privileges as a fresh install sets them (sql/privileges.sql): schedule_fire is an
-- API function (its owner's rights, soniq_admin's), and soniq_viewer reads the new table.

-- Outcomes by minute (since 0.11.0): how many attempts each worker completed and failed in
-- each queue each minute, for the dashboard's chart (sql/outcomes.sql adds to it; a failed
-- attempt is one its worker reported or one the rescue found timed out). One row per minute,
-- queue and worker: workers never add to each other's rows, so they never wait on each other;
-- prune_jobs keeps the last two hours. Runtime state: pg_dump leaves it out.
-- (Without room for HOT updates, a drain at concurrency 1 ran 18 % slower with the tally.)
CREATE TABLE soniq.outcome_minutes (
    minute    timestamptz NOT NULL,
    queue     text NOT NULL,
    worker_id uuid NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue, worker_id)
) WITH (fillfactor = 30);  -- every outcome updates its row: room on the page keeps that HOT

-- _tally: count attempts that ended in each of queues (one entry per attempt) into this
-- minute's outcome_minutes rows of the worker, as completed or failed. Rows are taken in queue
-- order, so two transactions that add to the same worker's rows (its outcomes, the rescue
-- failing its timed-out attempt) wait for each other instead of deadlocking.
CREATE FUNCTION soniq._tally(worker_id uuid, queues text[], completed boolean) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO soniq.outcome_minutes AS m (minute, queue, worker_id, completed, failed)
    SELECT date_trunc('minute', now()), q, $1, CASE WHEN $3 THEN count(*) ELSE 0 END,
           CASE WHEN $3 THEN 0 ELSE count(*) END
      FROM unnest($2) q
     GROUP BY q
     ORDER BY q
        ON CONFLICT (minute, queue, worker_id)
        DO UPDATE SET completed = m.completed + EXCLUDED.completed, failed = m.failed + EXCLUDED.failed
$$;

-- complete_many: finish many attempts of one worker in one round trip. Returns the ids it
-- completed; an id missing from the result was not held under that lease (it was taken
-- back) and stays as it is. A job whose result TTL is 0 is deleted at once. Jobs that wait
-- for the completed ones count them off, and become queued when none is left.
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
    ended_in text[];  -- the queue of each job completed, for outcome_minutes
    followed soniq._ended_job[];  -- the jobs completed that others follow (sql/finished.sql)
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
        RETURNING j.id, j.queue, j.has_dependents, j.awaited, j.batch_id
    ), dropped AS (
        DELETE FROM soniq.jobs j
         USING lease l
         WHERE j.id = l.id AND j.status = l.status AND j.worker_id = l.worker_id
           AND j.attempts = l.attempt AND j.result_ttl <= interval '0'
        RETURNING j.id, j.queue, j.has_dependents, j.awaited, j.batch_id
    ), finished AS (
        SELECT k.* FROM kept k UNION ALL SELECT d.* FROM dropped d
    )
    SELECT array_agg(f.id), array_agg(DISTINCT f.queue), array_agg(f.queue),
           array_agg(ROW(f.id, f.has_dependents, f.awaited, f.batch_id)::soniq._ended_job)
               FILTER (WHERE f.has_dependents OR f.awaited OR f.batch_id IS NOT NULL)
      INTO completed, freed, ended_in, followed
      FROM finished f;
    PERFORM soniq._slots_freed(freed);
    IF ended_in IS NOT NULL THEN
        PERFORM soniq._tally(complete_many.worker_id, ended_in, true);
    END IF;
    -- A later statement, which sees a dependent whose enqueue this one waited for.
    IF followed IS NOT NULL THEN
        PERFORM soniq._finished(followed, 'done', NULL);
    END IF;
    RETURN QUERY SELECT unnest(completed);
END
$$;

-- _fail: the one implementation behind fail and fail_many. Returns the job's new state
-- ('queued', 'dead', or 'merged' when a queued duplicate runs instead: see _requeue), or NULL
-- when the lease is not current. The error is stored up to 8192 characters. Its callers
-- check the worker's login (_check_worker_owner) once per call.
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
    PERFORM soniq._tally(_fail.worker_id, ARRAY[job.queue], false);

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

-- prune_jobs: delete done jobs whose result TTL has passed (but not while a job that
-- depends on them has yet to run: it reads their results) and cancelled jobs finished more
-- than retention ago (and batches finished that long ago), up to batch_size of each per batch and at most max_batches
-- batches (the control plane runs one batch per transaction), and outcome_minutes rows more
-- than two hours old. Returns how many jobs were deleted.
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
    DELETE FROM soniq.outcome_minutes m WHERE m.minute < now() - interval '2 hours';
    FOR batch IN 1..max_batches LOOP
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT d.id FROM soniq.jobs d WHERE d.status = 'done' AND d.expires_at < now()
               AND NOT (d.has_dependents AND EXISTS (
                   SELECT FROM soniq.jobs c WHERE c.depends_on && ARRAY[d.id]
                      AND c.status IN ('waiting', 'queued', 'processing')))
             ORDER BY d.expires_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS done_rows = ROW_COUNT;
        DELETE FROM soniq.jobs j WHERE j.id IN (
            SELECT c.id FROM soniq.jobs c WHERE c.status = 'cancelled' AND c.finished_at < now() - retention
             ORDER BY c.finished_at LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS cancelled_rows = ROW_COUNT;
        -- What attempts of jobs now gone recorded, and batches finished as long ago as a
        -- cancelled job is kept (neither counted in the total).
        DELETE FROM soniq.job_progress p WHERE p.job_id IN (
            SELECT q.job_id FROM soniq.job_progress q
             WHERE NOT EXISTS (SELECT FROM soniq.jobs j WHERE j.id = q.job_id)
             LIMIT batch_size FOR UPDATE SKIP LOCKED);
        DELETE FROM soniq.batches b WHERE b.id IN (
            SELECT f.id FROM soniq.batches f WHERE f.finished_at < now() - retention
             LIMIT batch_size FOR UPDATE SKIP LOCKED);
        total := total + done_rows + cancelled_rows;
        EXIT WHEN done_rows < batch_size AND cancelled_rows < batch_size;
    END LOOP;
    RETURN total;
END
$$;

-- schedule_fire: make the schedule's job now, whatever its timing and also while it is
-- paused (since 0.11.0); its next fire time stays. It counts as a fire: last fire, last job
-- and fire count. Returns the job's id.
CREATE FUNCTION soniq.schedule_fire(name text) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current soniq.schedules := soniq._schedule(name);
    fired uuid;
BEGIN
    SELECT id INTO fired
      FROM soniq._insert_jobs(ROW(ARRAY[current.task_name], ARRAY[current.args], ARRAY[current.queue],
                                  ARRAY[current.priority], ARRAY[NULL::timestamptz], ARRAY[current.retries],
                                  ARRAY[NULL::boolean], ARRAY[NULL::text], ARRAY[current.timeout],
                                  ARRAY['schedule:' || current.name])::soniq._job_batch) AS id;
    UPDATE soniq.schedules s
       SET last_fire_at = now(), last_job_id = fired, fire_count = s.fire_count + 1, updated_at = now()
     WHERE s.name = current.name;
    RETURN fired;
END
$$;

-- Soniq roles and privileges.
--
-- Four roles, created once per cluster (roles are cluster-wide) and granted to login roles by
-- the operator:
--   soniq_producer  enqueues jobs and reads the status of those its login enqueued (by id, not
--                   their args), and their result once they end (job_result, await_job);
--                   opens, closes and reads its login's batches;
--   soniq_worker    runs jobs: registers, claims, heartbeats, completes, fails, snoozes,
--                   aborts, reads the results of the jobs its job depends on
--                   (dependency_results), records progress and checkpoints
--                   (report_progress, save_checkpoint, read_checkpoint), asks whether a
--                   queue's limit holds jobs back (held_back), and
--                   publishes its handlers' options (register_task); a member of
--                   soniq_producer (handlers enqueue follow-up jobs). A worker is bound to the
--                   login that registered it: no other login (but an admin) may act for it;
--   soniq_admin     everything: every function (dead letter, schedules, cancellation,
--                   maintenance rounds) and read access to every table and view; a member of
--                   soniq_worker and of soniq_viewer;
--   soniq_viewer    reads: every table and view, and the read functions (jobs, queue counts,
--                   the dead letter, schedules); calls nothing that writes (a dashboard's or
--                   an operator's read-only login).
-- No role writes a table directly: the API functions run with their owner's rights
-- (SECURITY DEFINER) and a pinned search_path, so a caller's schemas cannot stand in for
-- pg_catalog's objects inside them. Internal helpers (names starting with "_") are called
-- only from those functions and granted to nobody.

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
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text, uuid[], text, boolean, uuid),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text),
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
