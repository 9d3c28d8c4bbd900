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
