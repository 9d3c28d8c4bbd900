-- Jobs no worker serves: found by check_unserved, shown by queue_overview and soniq.health,
-- and dead-lettered as job_not_found after the grace, only while some worker is alive.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'

-- No worker at all: everything is unserved, and nothing is buried however old.
SELECT soniq.enqueue('billing.charge', queue => 'billing') AS charge \gset
SELECT soniq.enqueue('billing.chrage', queue => 'billing') AS typo \gset
SELECT soniq.check_unserved('1 second') AS buried;
SELECT task_name, queue FROM soniq.unserved ORDER BY 1;
UPDATE soniq.unserved SET since = now() - interval '1 day';  -- test shortcut: age them
SELECT soniq.check_unserved('1 second') AS buried;

-- A worker serving billing.charge in queue billing: the typo stays unserved (and is shown),
-- the served task leaves the list.
SELECT soniq.register_worker(queues => '{billing}', task_names => '{billing.charge}') AS w \gset
SELECT soniq.check_unserved('2 days') AS buried;
SELECT task_name, queue, since < now() AS since_before FROM soniq.unserved ORDER BY 1;
SELECT queue, runnable, unserved FROM soniq.queue_overview WHERE queue = 'billing';
SELECT subsystem, lag > interval '1 hour' AS waiting_long FROM soniq.health WHERE subsystem = 'unserved';

-- A worker of any task, but another queue, does not serve it either; a job scheduled for
-- later is listed but not buried before it is due.
SELECT soniq.register_worker(queues => '{other}') AS other \gset
SELECT soniq.enqueue('billing.chrage', queue => 'billing', scheduled_at => now() + interval '1 day') AS later \gset
-- Past the grace: the due typo job goes to the dead letter, named and explained.
SELECT soniq.check_unserved('1 hour') AS buried;
SELECT task_name, dead_letter_reason, last_error FROM soniq.dead_letter_jobs WHERE id = :'typo';
SELECT status FROM soniq.jobs WHERE id IN (:'charge', :'later') ORDER BY task_name;
-- grace 0 never buries.
UPDATE soniq.jobs SET scheduled_at = NULL WHERE id = :'later';
SELECT soniq.check_unserved('0') AS buried;
-- Once a worker serves it, the task leaves the list.
SELECT soniq.register_worker(task_names => '{billing.chrage}') AS fixed \gset
SELECT soniq.check_unserved('1 hour') AS buried;
SELECT count(*) AS unserved FROM soniq.unserved;
SELECT unserved FROM soniq.queue_overview WHERE queue = 'billing';

-- Bad input.
SELECT soniq.check_unserved(NULL);
:error
SELECT soniq.check_unserved('-1 second');
:error
SELECT soniq.check_unserved('31 days');
:error
SELECT soniq.register_worker(task_names => '{}');
:error
SELECT soniq.register_worker(task_names => '{"not a name"}');
:error
