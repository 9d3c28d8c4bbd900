-- Soniq SQL: managing queues and jobs: pause and resume a queue; cancel, delete, look up and list
-- jobs. Conventions: sql/helpers.sql.

-- pause_queue: workers stop claiming from the queue; jobs keep arriving. Returns whether
-- this call changed the state.
CREATE FUNCTION soniq.pause_queue(name text) RETURNS boolean
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

-- resume_queue: workers claim from the queue again (and are woken at once).
CREATE FUNCTION soniq.resume_queue(name text) RETURNS boolean
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

-- cancel_job: a queued or waiting job becomes cancelled and never runs (and so do the jobs
-- that depend on it, unless they run anyway); a processing job is flagged, and its worker
-- learns it from its next heartbeat. Returns false when the job already finished (done,
-- cancelled or dead).
CREATE FUNCTION soniq.cancel_job(job_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_status text;
    ended soniq.jobs;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    SELECT j.status INTO current_status FROM soniq.jobs j WHERE j.id = cancel_job.job_id FOR UPDATE;
    IF current_status IN ('queued', 'waiting') THEN
        UPDATE soniq.jobs j SET status = 'cancelled', finished_at = now(), updated_at = now()
         WHERE j.id = cancel_job.job_id
        RETURNING j.* INTO ended;
        PERFORM soniq._ended(ended, 'cancelled', 'was cancelled');
        RETURN true;
    ELSIF current_status = 'processing' THEN
        UPDATE soniq.jobs j SET cancel_requested = true, updated_at = now() WHERE j.id = cancel_job.job_id;
        RETURN true;
    ELSIF current_status IS NOT NULL
          OR EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = cancel_job.job_id) THEN
        RETURN false;
    END IF;
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
END
$$;

-- delete_job: remove a job in any state (a processing job's lease is revoked with it); the
-- jobs waiting for it are cancelled (or run, if they said so).
CREATE FUNCTION soniq.delete_job(job_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    deleted soniq.jobs;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    DELETE FROM soniq.jobs j WHERE j.id = delete_job.job_id RETURNING j.* INTO deleted;
    IF FOUND THEN
        IF deleted.status = 'processing' THEN
            PERFORM soniq._slots_freed(ARRAY[deleted.queue]);  -- its slot of a limit is free
        END IF;
        PERFORM soniq._ended(deleted, 'cancelled', 'was deleted');
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM soniq.dead_letter_jobs d WHERE d.id = delete_job.job_id) THEN
        RAISE EXCEPTION 'job % is in the dead letter', job_id USING ERRCODE = 'no_data_found',
            HINT = 'Use soniq.dead_letter_delete() for dead jobs.';
    END IF;
    RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
END
$$;

-- job_info: one job as lookups return it; status 'dead' for a dead-lettered job. Since 0.9.0:
-- depends_on, the jobs it waits (or waited) for; progress and progress_at, what its attempt
-- last reported (sql/progress.sql).
CREATE VIEW soniq.job_info AS
SELECT j.id, j.task_name, j.args, j.status, j.queue, j.priority, j.attempts, j.max_attempts,
       j.scheduled_at, j.timeout, j.last_error, j.result, j.worker_id, j.cancel_requested,
       j.producer_id, NULL::text AS dead_letter_reason, j.created_at, j.updated_at,
       j.started_at, j.finished_at, j.expires_at, j.enqueued_by, j.depends_on, p.progress, p.progress_at
  FROM soniq.jobs j
  LEFT JOIN soniq.job_progress p ON p.job_id = j.id
UNION ALL
SELECT d.id, d.task_name, d.args, 'dead', d.queue, d.priority, d.attempts, d.max_attempts,
       NULL, d.timeout, d.last_error, NULL, NULL, false,
       d.producer_id, d.dead_letter_reason, d.original_created_at, d.moved_to_dead_letter_at,
       NULL, d.moved_to_dead_letter_at, NULL, d.enqueued_by, NULL, NULL, NULL
  FROM soniq.dead_letter_jobs d;

-- get_job: a job by id, also when it is dead; no row when unknown.
CREATE FUNCTION soniq.get_job(job_id uuid) RETURNS SETOF soniq.job_info
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.job_info i WHERE i.id = job_id
$$;

-- job_status: where a job stands, without its args or result: what a producer may see of
-- the jobs its login enqueued (admins see every job's). No row when unknown, or enqueued by
-- another login; status 'dead' when dead.
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
      FROM soniq.job_info i WHERE i.id = job_id AND (i.enqueued_by = session_user OR soniq._is_admin())
$$;

-- list_jobs: jobs newest first, filtered by queue and status (waiting, queued, processing,
-- done, cancelled), paged by row_limit and row_offset. Dead jobs: soniq.dead_letter_list().
CREATE FUNCTION soniq.list_jobs(
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
    IF list_jobs.status NOT IN ('waiting', 'queued', 'processing', 'done', 'cancelled') THEN
        RAISE EXCEPTION 'status must be waiting, queued, processing, done or cancelled, got %', list_jobs.status
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

-- queue_stats: counts of one queue (or of all when queue is NULL), read through the
-- (queue, status) index: every row of the queue is counted, so it costs what the queue holds
-- (done and cancelled rows are bounded by their TTL and the retention).
CREATE FUNCTION soniq.queue_stats(queue text DEFAULT NULL) RETURNS TABLE (
    total       bigint,
    queued      bigint,
    processing  bigint,
    done        bigint,
    cancelled   bigint,
    dead_letter bigint,
    waiting     bigint   -- since 0.9.0: waiting for the jobs they depend on
)
LANGUAGE sql STABLE AS $$
    WITH live AS (
        SELECT count(*) FILTER (WHERE j.status = 'waiting') AS waiting,
               count(*) FILTER (WHERE j.status = 'queued') AS queued,
               count(*) FILTER (WHERE j.status = 'processing') AS processing,
               count(*) FILTER (WHERE j.status = 'done') AS done,
               count(*) FILTER (WHERE j.status = 'cancelled') AS cancelled
          FROM soniq.jobs j
         WHERE $1 IS NULL OR j.queue = $1
    ), dead AS (
        SELECT count(*) AS dead_letter FROM soniq.dead_letter_jobs d WHERE $1 IS NULL OR d.queue = $1
    )
    SELECT l.waiting + l.queued + l.processing + l.done + l.cancelled + d.dead_letter,
           l.queued, l.processing, l.done, l.cancelled, d.dead_letter, l.waiting
      FROM live l, dead d
$$;
