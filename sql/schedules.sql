-- Soniq SQL: schedules: add, pause, resume, remove, list, get. Conventions: sql/helpers.sql.

-- _every_seconds: a schedule's interval as seconds; months and years are refused, since
-- their length varies (a cron expression says "monthly" exactly).
CREATE FUNCTION soniq._every_seconds(every interval) RETURNS float8
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF extract(month FROM every) <> 0 OR extract(year FROM every) <> 0 THEN
        RAISE EXCEPTION 'every must be a fixed duration, got %', every
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use days, hours, minutes or seconds, or a cron expression such as ''0 0 1 * *''.';
    END IF;
    RETURN extract(epoch FROM every);
END
$$;

-- _wake_control_plane: wake the background worker when this transaction commits.
CREATE FUNCTION soniq._wake_control_plane() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT soniq._wake_control_plane_at_commit(c.pid)
      FROM soniq.control_plane c
     WHERE c.subsystem = 'control_plane' AND c.pid IS NOT NULL
$$;

-- schedule_add: create or update (by name) a periodic job. Exactly one of cron (5 fields,
-- in time_zone) and every (a fixed interval of 1 second to 365 days). task_name defaults to
-- the schedule's name; queue, priority, retries and timeout default like enqueue's.
-- Re-adding with the same timing keeps the next fire time, so redeploys do not delay it.
CREATE FUNCTION soniq.schedule_add(
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

-- _schedule: the named schedule, locked; P0002 when there is none.
CREATE FUNCTION soniq._schedule(name text) RETURNS soniq.schedules
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_row soniq.schedules;
BEGIN
    PERFORM soniq._require(name, 'name');
    SELECT * INTO found_row FROM soniq.schedules s WHERE s.name = _schedule.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schedule % does not exist', name USING ERRCODE = 'no_data_found';
    END IF;
    RETURN found_row;
END
$$;

-- schedule_pause: stop firing. Returns whether this call changed the state.
CREATE FUNCTION soniq.schedule_pause(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT (soniq._schedule(name)).enabled THEN
        RETURN false;
    END IF;
    UPDATE soniq.schedules s SET enabled = false, next_fire_at = NULL, updated_at = now()
     WHERE s.name = schedule_pause.name;
    RETURN true;
END
$$;

-- schedule_resume: fire again, from the next fire time after now (no backlog of the pause).
CREATE FUNCTION soniq.schedule_resume(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    current soniq.schedules := soniq._schedule(name);
BEGIN
    IF current.enabled THEN
        RETURN false;
    END IF;
    UPDATE soniq.schedules s
       SET enabled = true, updated_at = now(),
           next_fire_at = soniq._next_fire(s.cron, soniq._every_seconds(s.every), s.time_zone, NULL, now())
     WHERE s.name = schedule_resume.name;
    PERFORM soniq._wake_control_plane();
    RETURN true;
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
                                  ARRAY['schedule:' || current.name], NULL::text[])::soniq._job_batch) AS id;
    UPDATE soniq.schedules s
       SET last_fire_at = now(), last_job_id = fired, fire_count = s.fire_count + 1, updated_at = now()
     WHERE s.name = current.name;
    RETURN fired;
END
$$;

-- schedule_remove: delete a schedule (jobs it already made stay).
CREATE FUNCTION soniq.schedule_remove(name text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._schedule(name);
    DELETE FROM soniq.schedules s WHERE s.name = schedule_remove.name;
END
$$;

-- schedule_get: one schedule; no row when unknown.
CREATE FUNCTION soniq.schedule_get(name text) RETURNS SETOF soniq.schedules
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.schedules s WHERE s.name = $1
$$;

-- schedule_list: all schedules by name, or only enabled (true) or paused (false) ones.
CREATE FUNCTION soniq.schedule_list(enabled boolean DEFAULT NULL) RETURNS SETOF soniq.schedules
LANGUAGE sql STABLE AS $$
    SELECT * FROM soniq.schedules s WHERE $1 IS NULL OR s.enabled = $1 ORDER BY s.name
$$;
