-- Soniq SQL: the dead letter: list, get, replay, tag, move, delete, purge, stats. Conventions:
-- sql/helpers.sql.

-- dead_letter_get: one dead job by its original id; no row when it is not dead.
CREATE FUNCTION soniq.dead_letter_get(job_id uuid) RETURNS SETOF soniq.dead_letter_jobs
LANGUAGE sql STABLE AS $$
    SELECT d.* FROM soniq.dead_letter_jobs d WHERE d.id = job_id
$$;

-- dead_letter_list: dead jobs, most recently dead first, filtered and paged: by task,
-- queue, reason, when they died (moved_after <= t < moved_before), tags (all of them) and
-- whether they were replayed.
CREATE FUNCTION soniq.dead_letter_list(
    task_name    text        DEFAULT NULL,
    queue        text        DEFAULT NULL,
    reason       text        DEFAULT NULL,
    moved_after  timestamptz DEFAULT NULL,
    moved_before timestamptz DEFAULT NULL,
    tags         text[]      DEFAULT NULL,
    replayed     boolean     DEFAULT NULL,
    row_limit    int         DEFAULT 100,
    row_offset   int         DEFAULT 0
) RETURNS SETOF soniq.dead_letter_jobs
LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM soniq._check_filter(dead_letter_list.tags, 'tags');
    IF row_limit IS NULL OR row_limit NOT BETWEEN 1 AND 10000 OR row_offset IS NULL OR row_offset < 0 THEN
        RAISE EXCEPTION 'row_limit must be between 1 and 10000 and row_offset at least 0'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT d.* FROM soniq.dead_letter_jobs d
     WHERE (dead_letter_list.task_name IS NULL OR d.task_name = dead_letter_list.task_name)
       AND (dead_letter_list.queue IS NULL OR d.queue = dead_letter_list.queue)
       AND (dead_letter_list.reason IS NULL OR d.dead_letter_reason = dead_letter_list.reason)
       AND (moved_after IS NULL OR d.moved_to_dead_letter_at >= moved_after)
       AND (moved_before IS NULL OR d.moved_to_dead_letter_at < moved_before)
       AND (dead_letter_list.tags IS NULL OR d.tags @> dead_letter_list.tags)
       AND (replayed IS NULL OR (d.resurrection_count > 0) = replayed)
     ORDER BY d.moved_to_dead_letter_at DESC, d.id DESC
     LIMIT row_limit OFFSET row_offset;
END
$$;

-- replay: mint a fresh job from a dead one (new id, same args and policy; queue, priority
-- and max_attempts may be overridden). Attempts start again from 0 unless reset_attempts is
-- false (then max_attempts must leave an attempt). The dead row stays, with its
-- resurrection_count incremented. Returns the new job's id. With unless_replayed, a dead job
-- that was replayed before is left alone and NULL is returned: running the same replay twice,
-- or two operators at once, makes one job (the dead row is locked while it is replayed). The
-- jobs its death cancelled (and theirs) wait for the new job instead, unless another job they
-- depend on failed too; a notice says how many wait again and how many stay cancelled.
CREATE FUNCTION soniq.replay(
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
    dependents record;
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
                            retry_policy, result_ttl, producer_id, enqueued_by, concurrency_key)
    VALUES (new_id, dead.task_name, dead.args, coalesce(replay.queue, dead.queue),
            coalesce(replay.priority, dead.priority), attempts_so_far,
            coalesce(replay.max_attempts, dead.max_attempts),
            dead.timeout, dead.retry_policy, dead.result_ttl, dead.producer_id, dead.enqueued_by,
            -- the key as the task names it now (the dead letter keeps none)
            soniq._concurrency_key(dead.args #>> (SELECT t.concurrency_key FROM soniq.tasks t
                                                   WHERE t.task_name = dead.task_name)));
    PERFORM soniq._wake(coalesce(replay.queue, dead.queue));
    SELECT * INTO dependents FROM soniq._rearm(dead_job_id, new_id);
    IF dependents.rearmed + dependents.left_cancelled > 0 THEN
        RAISE NOTICE 'replayed job %: % job(s) that depend on it wait again, % stay cancelled (another job they depend on failed)',
                     new_id, dependents.rearmed, dependents.left_cancelled;
    END IF;
    RETURN new_id;
END
$$;

-- replay_many: replay each of the dead jobs (see replay) in one call; all or nothing. With
-- unless_replayed, a dead job replayed before gets a NULL job_id.
CREATE FUNCTION soniq.replay_many(
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

-- dead_letter_tag: add labels to a dead job (at most 50, each at most 200 bytes); returns all its tags.
CREATE FUNCTION soniq.dead_letter_tag(dead_job_id uuid, tags text[]) RETURNS text[]
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

-- dead_letter_stats: counts of the dead letter (or of the jobs that died within `since`):
-- total, by task, queue and reason, by day over the last 7 days, the oldest's age in
-- seconds, and how many were replayed at least once.
CREATE FUNCTION soniq.dead_letter_stats(since interval DEFAULT NULL) RETURNS jsonb
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

-- dead_letter_move: move a job that is not running (waiting, queued or cancelled) into the
-- dead letter by hand, reason manual_move.
CREATE FUNCTION soniq.dead_letter_move(job_id uuid, note text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current_status text;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    SELECT j.status INTO current_status FROM soniq.jobs j WHERE j.id = dead_letter_move.job_id FOR UPDATE;
    IF current_status IS NULL THEN
        RAISE EXCEPTION 'job % does not exist', job_id USING ERRCODE = 'no_data_found';
    ELSIF current_status NOT IN ('waiting', 'queued', 'cancelled') THEN
        RAISE EXCEPTION 'job % is %; only a waiting, queued or cancelled job can be moved to the dead letter', job_id, current_status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM soniq._bury(ARRAY[job_id], 'manual_move', note);
END
$$;

-- dead_letter_delete: remove one dead job for good.
CREATE FUNCTION soniq.dead_letter_delete(dead_job_id uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(dead_job_id, 'dead_job_id');
    DELETE FROM soniq.dead_letter_jobs d WHERE d.id = dead_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dead job % does not exist', dead_job_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

-- dead_letter_purge: remove dead jobs that died more than older_than ago (interval '0'
-- removes them all). Returns how many were removed.
CREATE FUNCTION soniq.dead_letter_purge(older_than interval) RETURNS bigint
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
