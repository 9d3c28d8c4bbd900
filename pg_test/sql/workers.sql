-- Workers: registration, heartbeats, cancellation requests, deregistration, stale-worker recovery.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker('host-a', 4242, '{emails,billing}', 8, '0.1.0', '{"region": "eu"}') AS w \gset
SELECT hostname, pid, queues, concurrency, version, metadata, last_heartbeat = started_at AS fresh
  FROM soniq.workers WHERE id = :'w';
-- Every registration is a new worker, even from the same host and pid.
SELECT soniq.register_worker('host-a', 4242) <> :'w' AS distinct_ids;

-- heartbeat refreshes last_heartbeat and reports jobs whose cancellation was requested.
UPDATE soniq.workers SET last_heartbeat = now() - interval '1 minute' WHERE id = :'w';  -- test shortcut: age it
SELECT count(*) AS cancel_requests FROM soniq.heartbeat(:'w');
SELECT last_heartbeat > now() - interval '10 seconds' AS refreshed FROM soniq.workers WHERE id = :'w';
SELECT soniq.enqueue('w.long', queue => 'emails') AS long_job \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', queues => '{emails}');
SELECT soniq.cancel_job(:'long_job') AS cancel_requested;
SELECT status, cancel_requested FROM soniq.jobs WHERE id = :'long_job';
SELECT h = :'long_job' AS told_to_abort FROM soniq.heartbeat(:'w') h;
SELECT soniq.abort(:'long_job', :'w', 1, 'cancelled on request');
SELECT status FROM soniq.jobs WHERE id = :'long_job';

-- deregister_worker takes back the jobs it still holds.
SELECT soniq.register_worker() AS leaving \gset
SELECT soniq.enqueue('w.held') AS held \gset
SELECT count(*) AS claimed FROM soniq.claim(:'leaving', task_names => '{w.held}');
SELECT soniq.deregister_worker(:'leaving') AS taken_back;
SELECT status, worker_id IS NULL AS no_holder, attempts, last_error LIKE '%deregistered during attempt 1' AS explained
  FROM soniq.jobs WHERE id = :'held';
SELECT count(*) AS gone FROM soniq.workers WHERE id = :'leaving';
SELECT soniq.heartbeat(:'leaving');
:error
SELECT count(*) FROM soniq.claim(:'leaving');
:error

-- recover_stale_workers: silent workers are removed and their jobs taken back.
SELECT soniq.register_worker() AS dead \gset
SELECT soniq.register_worker() AS alive \gset
SELECT soniq.enqueue('w.rescued', retries => 3) AS rescued \gset
SELECT soniq.enqueue('w.last_try', retries => 0) AS last_try \gset
SELECT soniq.enqueue('w.cancelled', retries => 3) AS cancelled \gset
SELECT soniq.enqueue('w.busy') AS busy \gset
SELECT count(*) AS claimed FROM soniq.claim(:'dead', task_names => '{w.rescued,w.last_try,w.cancelled}', batch_size => 3);
SELECT count(*) AS claimed FROM soniq.claim(:'alive', task_names => '{w.busy}');
SELECT soniq.cancel_job(:'cancelled') AS cancel_requested;
UPDATE soniq.workers SET last_heartbeat = now() - interval '10 minutes' WHERE id = :'dead';  -- it stopped heartbeating
SELECT soniq.recover_stale_workers('5 minutes') AS recovered;
-- queued again, attempt kept, lease revoked
SELECT status, attempts, worker_id IS NULL AS no_holder FROM soniq.jobs WHERE id = :'rescued';
-- the crash-loop guard: a job whose last attempt was lost goes to the dead letter, not back to the queue
SELECT dead_letter_reason, attempts, max_attempts FROM soniq.dead_letter_jobs WHERE id = :'last_try';
-- a job whose cancellation was requested ends cancelled
SELECT status FROM soniq.jobs WHERE id = :'cancelled';
-- the live worker and its job are untouched
SELECT status, worker_id = :'alive' AS still_held FROM soniq.jobs WHERE id = :'busy';
SELECT count(*) AS dead_worker_rows FROM soniq.workers WHERE id = :'dead';
-- the old lease is refused; the new attempt's outcome stands
SELECT soniq.complete(:'rescued', :'dead', 1);
:error
SELECT soniq.register_worker() AS successor \gset
SELECT attempt FROM soniq.claim(:'successor', task_names => '{w.rescued}');
SELECT soniq.complete(:'rescued', :'dead', 1);
:error
SELECT soniq.complete(:'rescued', :'successor', 2);
SELECT status, worker_id = :'successor' AS finished_by_successor FROM soniq.jobs WHERE id = :'rescued';
SELECT soniq.recover_stale_workers() AS nothing_stale;

-- A job whose workers keep dying runs at most max_attempts times, then is dead-lettered.
SELECT soniq.enqueue('w.crashy', retries => 1) AS crashy \gset
SELECT soniq.register_worker() AS c1 \gset
SELECT attempt FROM soniq.claim(:'c1', task_names => '{w.crashy}');
UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = :'c1';
SELECT soniq.recover_stale_workers('5 minutes') AS recovered;
SELECT soniq.register_worker() AS c2 \gset
SELECT attempt FROM soniq.claim(:'c2', task_names => '{w.crashy}');
UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = :'c2';
SELECT soniq.recover_stale_workers('5 minutes') AS recovered;
SELECT count(*) AS claimable FROM soniq.claim(:'alive', task_names => '{w.crashy}');
SELECT dead_letter_reason, attempts FROM soniq.dead_letter_jobs WHERE id = :'crashy';

-- Jobs held by a worker row that no longer exists are taken back too.
SELECT soniq.register_worker() AS ghost \gset
SELECT soniq.enqueue('w.orphan') AS orphan \gset
SELECT count(*) AS claimed FROM soniq.claim(:'ghost', task_names => '{w.orphan}');
DELETE FROM soniq.workers WHERE id = :'ghost';  -- test shortcut: a worker row lost without recovery
SELECT soniq.recover_stale_workers() AS recovered;
SELECT status FROM soniq.jobs WHERE id = :'orphan';

-- worker_overview shows what each worker holds and how long it has been silent.
SELECT jobs_held, silent_for < interval '1 minute' AS recent FROM soniq.worker_overview WHERE id = :'alive';

-- heartbeat with the jobs the worker holds: a job it claimed but does not know of (the
-- claim's answer was lost with its connection) is taken back once held past the grace.
SELECT soniq.register_worker() AS hw \gset
SELECT soniq.enqueue('hb.known') AS known \gset
SELECT soniq.enqueue('hb.lost', retries => 2) AS lost \gset
SELECT count(*) AS claimed FROM soniq.claim(:'hw', task_names => '{hb.known,hb.lost}', batch_size => 2);
SELECT count(*) AS cancellations FROM soniq.heartbeat(:'hw', ARRAY[:'known']::uuid[]);
SELECT task_name, status FROM soniq.jobs WHERE id IN (:'known', :'lost') ORDER BY 1;
UPDATE soniq.jobs SET started_at = now() - interval '1 minute' WHERE id IN (:'known', :'lost');  -- test shortcut: time passed
SELECT count(*) AS cancellations FROM soniq.heartbeat(:'hw', ARRAY[:'known']::uuid[]);
SELECT task_name, status, attempts, worker_id IS NULL AS released, last_error FROM soniq.jobs
 WHERE id IN (:'known', :'lost') ORDER BY 1;
-- A grace of its own, and bad input.
SELECT count(*) AS cancellations FROM soniq.heartbeat(:'hw', '{}', grace => '2 minutes');
SELECT status FROM soniq.jobs WHERE id = :'known';
SELECT soniq.heartbeat(:'hw', NULL);
:error
SELECT soniq.heartbeat(:'hw', '{}', '-1 second');
:error
SELECT soniq.heartbeat(soniq.uuid_v7(), '{}');
:error
