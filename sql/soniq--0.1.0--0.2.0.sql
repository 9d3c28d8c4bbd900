-- soniq 0.1.0 -> 0.2.0
--   * job ids (uuid_v7) and wake-ups (_wake, now throttled at commit) made in Rust;
--   * the control plane fires due schedules in batches of 1,000 (fire_due_schedules);
--   * roles soniq_producer, soniq_worker and soniq_admin; the API runs SECURITY DEFINER with a
--     pinned search_path (the privileges part below is sql/privileges.sql, verbatim);
--   * job_status for producers.
-- Tables are unchanged. tests/survival.rs checks that an updated database equals a fresh install.

CREATE OR REPLACE FUNCTION soniq.uuid_v7() RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'uuid_v7_wrapper';

CREATE OR REPLACE FUNCTION soniq._wake(queue text) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'wake_wrapper';

CREATE OR REPLACE FUNCTION soniq.fire_due_schedules(max_fires int DEFAULT 1000) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    due soniq.schedules;
    handled int := 0;
    job_id uuid;
    message text;
BEGIN
    BEGIN
        WITH batch AS (
            SELECT * FROM soniq.schedules s
             WHERE s.enabled AND s.next_fire_at <= now()
             ORDER BY s.next_fire_at
             LIMIT max_fires
               FOR UPDATE SKIP LOCKED
        ), fired AS MATERIALIZED (
            SELECT b.name, b.next_fire_at AS fired_at,
                   soniq.enqueue(b.task_name, b.args, b.queue, b.priority, b.next_fire_at,
                                 b.retries, NULL, NULL, b.timeout, 'schedule:' || b.name) AS job_id,
                   soniq._next_fire(b.cron, soniq._every_seconds(b.every), b.time_zone,
                                    b.next_fire_at, now()) AS next_fire_at
              FROM batch b
        )
        UPDATE soniq.schedules s
           SET last_fire_at = f.fired_at, last_job_id = f.job_id, fire_count = s.fire_count + 1,
               next_fire_at = f.next_fire_at, updated_at = now()
          FROM fired f
         WHERE s.name = f.name;
        GET DIAGNOSTICS handled = ROW_COUNT;
        RETURN handled;
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
            job_id := soniq.enqueue(due.task_name, due.args, due.queue, due.priority, due.next_fire_at,
                                    due.retries, NULL, NULL, due.timeout, 'schedule:' || due.name);
            UPDATE soniq.schedules s
               SET last_fire_at = due.next_fire_at, last_job_id = job_id, fire_count = s.fire_count + 1,
                   next_fire_at = soniq._next_fire(due.cron, soniq._every_seconds(due.every), due.time_zone,
                                                   due.next_fire_at, now()),
                   updated_at = now()
             WHERE s.name = due.name;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT;
            PERFORM soniq._schedule_failed(due, message);
        END;
    END LOOP;
    RETURN handled;
END
$$;

CREATE FUNCTION soniq.job_status(job_id uuid) RETURNS TABLE (
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
      FROM soniq.job_info i WHERE i.id = job_id
$$;

-- Privileges (sql/privileges.sql)

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

-- The API: every SQL and PL/pgSQL function whose name does not start with "_".
DO $$
DECLARE
    api regprocedure;
BEGIN
    FOR api IN
        SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'soniq'::regnamespace AND l.lanname IN ('sql', 'plpgsql')
           AND p.proname NOT LIKE '\_%'
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp', api);
    END LOOP;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA soniq FROM PUBLIC;
GRANT USAGE ON SCHEMA soniq TO soniq_producer, soniq_worker, soniq_admin;

GRANT EXECUTE ON FUNCTION
    soniq.enqueue(text, jsonb, text, int, timestamptz, int, boolean, text, interval, text),
    soniq.enqueue_many(jsonb),
    soniq.enqueue_many(text, jsonb[], text, int, timestamptz, int, boolean, interval, text),
    soniq.job_status(uuid),
    soniq.register_task(text, jsonb)  -- runners publish a task's options before enqueueing it
TO soniq_producer;

GRANT EXECUTE ON FUNCTION
    soniq.register_worker(text, int, text[], int, text, jsonb),
    soniq.heartbeat(uuid),
    soniq.deregister_worker(uuid),
    soniq.claim(uuid, text[], int, text[]),
    soniq.complete(uuid, uuid, int, jsonb),
    soniq.complete_many(uuid[], uuid, int[], jsonb[]),
    soniq.fail(uuid, uuid, int, text, interval, text),
    soniq.fail_many(uuid[], uuid, int[], text[], interval[], text[]),
    soniq.snooze(uuid, uuid, int, interval),
    soniq.abort(uuid, uuid, int, text)
TO soniq_worker;

DO $$
DECLARE
    api regprocedure;
BEGIN
    FOR api IN
        SELECT p.oid FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'soniq'::regnamespace AND p.proname NOT LIKE '\_%'
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO soniq_admin', api);
    END LOOP;
END
$$;
GRANT SELECT ON ALL TABLES IN SCHEMA soniq TO soniq_admin;
