-- Soniq SQL: operators' views: queues, workers, unserved tasks. Conventions: sql/helpers.sql.

-- queue_overview: one row per known queue with its jobs by state and its pause state.
-- runnable = queued and due now; scheduled = queued for later; unserved = queued jobs of a
-- task no live worker serves in this queue (see check_unserved); limits = the queue's flow
-- control (NULL: none) and waiting_for_limit = runnable jobs held back by a reached limit
-- (soniq.queue_limits has them per key); waiting = jobs waiting for the jobs they depend on.
CREATE VIEW soniq.queue_overview AS
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
         WHERE u.queue = n.name) AS unserved,
       (SELECT l.settings FROM soniq.queue_limits l WHERE l.queue = n.name AND l.concurrency_key IS NULL) AS limits,
       coalesce((SELECT l.waiting_for_limit FROM soniq.queue_limits l
                  WHERE l.queue = n.name AND l.concurrency_key IS NULL), 0) AS waiting_for_limit,
       count(j.id) FILTER (WHERE j.status = 'waiting') AS waiting
  FROM names n
  LEFT JOIN soniq.queues q ON q.name = n.name
  LEFT JOIN soniq.jobs j ON j.queue = n.name
 GROUP BY n.name, q.paused;

-- unserved_jobs: the tasks and queues whose queued jobs no live worker serves, longest
-- unserved first, with how many jobs wait.
CREATE VIEW soniq.unserved_jobs AS
SELECT u.task_name, u.queue, u.since, now() - u.since AS unserved_for,
       (SELECT count(*) FROM soniq.jobs j
         WHERE j.status = 'queued' AND j.task_name = u.task_name AND j.queue = u.queue) AS jobs
  FROM soniq.unserved u
 ORDER BY u.since, u.task_name, u.queue;

-- worker_overview: registered workers, how long each has been silent and what it holds.
CREATE VIEW soniq.worker_overview AS
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.version, w.started_at, w.last_heartbeat,
       now() - w.last_heartbeat AS silent_for,
       (SELECT count(*) FROM soniq.jobs j WHERE j.status = 'processing' AND j.worker_id = w.id) AS jobs_held
  FROM soniq.workers w;
