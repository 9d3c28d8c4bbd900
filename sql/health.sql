-- Soniq SQL: the control plane's own state and soniq.health. Conventions: sql/helpers.sql.

-- _control_plane_started: the background worker announces itself.
CREATE FUNCTION soniq._control_plane_started(pid int) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET pid = $1, started_at = now(), last_run_at = now()
     WHERE c.subsystem = 'control_plane'
$$;

-- _control_plane_round_done: the worker finished a round; the queues whose full rate window
-- has moved on are woken (_wake_windows). Returns the seconds until the next schedule is due
-- or the next window edge (NULL when neither is), so the worker sleeps no longer than that.
CREATE FUNCTION soniq._control_plane_round_done() RETURNS float8
LANGUAGE sql VOLATILE AS $$
    UPDATE soniq.control_plane c SET last_run_at = now(), last_success_at = now(), runs = c.runs + 1
     WHERE c.subsystem = 'control_plane';
    SELECT least(extract(epoch FROM min(s.next_fire_at) - clock_timestamp())::float8, soniq._wake_windows())
      FROM soniq.schedules s WHERE s.enabled;
$$;

-- health: is the control plane alive and keeping up? One row per subsystem.
-- lag: control_plane (the background worker itself), time since its last round; scheduler, how late the most overdue schedule
-- is; rescue, time since its last successful round; prune, age of the oldest done job
-- past its result TTL; unserved, how long the longest-unserved task has waited for a worker
-- (soniq.unserved lists them). alive: the control plane's process runs; a login that may not
-- read other sessions' details (not a superuser or pg_read_all_stats) sees its pid only.
CREATE VIEW soniq.health AS
SELECT c.subsystem,
       EXISTS (SELECT FROM pg_stat_activity a
                WHERE a.pid = w.pid
                  AND (a.backend_type = 'soniq control plane' OR a.backend_type IS NULL)) AS alive,
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
