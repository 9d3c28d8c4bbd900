-- Awaiting a job's end: awaitable jobs are marked (their end notifies soniq_job_finished, which
-- the runner's tests observe); job_result gives the outcome; await_job waits for it.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker() AS w \gset

-- Marked only when asked: by enqueue, by an enqueue_many spec, and a duplicate returned instead.
SELECT soniq.enqueue('aw.plain') AS plain \gset
SELECT soniq.enqueue('aw.awaited', awaitable => true) AS awaited \gset
SELECT soniq.enqueue('aw.unique', '{"n": 1}', unique_job => true) AS u \gset
SELECT soniq.enqueue('aw.unique', '{"n": 1}', unique_job => true, awaitable => true) = :'u' AS same_job;
SELECT count(*) AS enqueued FROM soniq.enqueue_many('[{"task_name": "aw.many", "awaitable": true}, {"task_name": "aw.many"}]');
SELECT task_name, awaited FROM soniq.jobs ORDER BY created_at;

-- job_result: the status, and the result once done.
SELECT * FROM soniq.job_result(:'awaited');
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 10, ARRAY['aw.awaited']);
SELECT soniq.complete(:'awaited', :'w', 1, '{"answer": 42}');
SELECT * FROM soniq.job_result(:'awaited');
SELECT count(*) AS unknown FROM soniq.job_result('00000000-0000-0000-0000-000000000000');

-- await_job: an ended job returns at once; a job that stays queued returns its state on the timeout.
CALL soniq.await_job(:'awaited', '1 second');
CALL soniq.await_job(:'plain', '0.05 seconds');
SELECT soniq.cancel_job(:'plain');
CALL soniq.await_job(:'plain', '0');
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 10, ARRAY['aw.unique']);
SELECT soniq.fail(:'u', :'w', 1, 'no', reason => 'permanent_failure');
CALL soniq.await_job(:'u', '1 second');

-- Bad input.
CALL soniq.await_job(:'plain', '-1 second');
:error
CALL soniq.await_job(:'plain', '2 hours');
:error
CALL soniq.await_job(NULL, '1 second');
:error
CALL soniq.await_job('00000000-0000-0000-0000-000000000000', '1 second');
:error
BEGIN;
CALL soniq.await_job(:'plain', '0.05 seconds');
ROLLBACK;
-- Inside a transaction block it cannot commit while it waits: refused (2D000).
BEGIN;
SELECT soniq.enqueue('aw.in_tx') AS t \gset
CALL soniq.await_job(:'t', '0.05 seconds');
ROLLBACK;
SELECT soniq.enqueue_many('[{"task_name": "aw.bad", "awaitable": "yes"}]');
:error
