-- Batches: jobs enqueued into an open batch; once it is closed and all have ended, its
-- callback is enqueued once, with the counts and the failures.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
CREATE FUNCTION status(b uuid) RETURNS TABLE (jobs int, pending int, done int, dead int, cancelled int, failures int,
                                              closed boolean, finished boolean, callbacks bigint)
LANGUAGE sql AS $$
    SELECT s.jobs, s.pending, s.done, s.dead, s.cancelled, cardinality(s.failed_ids), s.closed_at IS NOT NULL,
           s.finished_at IS NOT NULL,
           (SELECT count(*) FROM soniq.jobs j WHERE j.task_name = 'report.done')
      FROM soniq.batch_status(b) s
$$;
SELECT soniq.register_worker() AS w \gset

SELECT soniq.batch_open('report.done', '{"report": 7}', 'reports') AS b \gset
SELECT soniq.enqueue('part.ok', batch_id => :'b') AS ok \gset
SELECT soniq.enqueue('part.bad', batch_id => :'b') AS bad \gset
SELECT count(*) AS enqueued FROM soniq.enqueue_many(format('[{"task_name": "part.ok", "batch_id": "%s"},
                                                             {"task_name": "part.skip", "batch_id": "%s"},
                                                             {"task_name": "part.outside"}]', :'b', :'b')::jsonb);
SELECT * FROM status(:'b');
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 10, ARRAY['part.ok', 'part.bad']);
SELECT count(*) AS completed FROM soniq.complete_many(
    (SELECT array_agg(id ORDER BY id) FROM soniq.jobs WHERE task_name = 'part.ok'), :'w', ARRAY[1, 1]);
SELECT soniq.fail(:'bad', :'w', 1, 'broken', reason => 'permanent_failure');
-- All but one ended, but the batch is open: no callback yet.
SELECT soniq.cancel_job(id) FROM soniq.jobs WHERE task_name = 'part.skip';
SELECT * FROM status(:'b');
-- Closing a complete batch enqueues the callback now; closing again changes nothing.
SELECT soniq.batch_close(:'b');
SELECT soniq.batch_close(:'b');
SELECT * FROM status(:'b');
SELECT queue, args -> 'report' AS report, (args -> 'batch') - 'id' - 'failed_ids' AS counts,
       jsonb_array_length(args -> 'batch' -> 'failed_ids') AS failures,
       (args -> 'batch' ->> 'id')::uuid = :'b' AS names_batch
  FROM soniq.jobs WHERE task_name = 'report.done';
SELECT callback_job_id = (SELECT id FROM soniq.jobs WHERE task_name = 'report.done') AS recorded FROM soniq.batch_status(:'b');
-- A closed batch takes no more jobs.
SELECT soniq.enqueue('part.late', batch_id => :'b');
:error

-- Closed first: the last job's end enqueues the callback; a job deleted counts as cancelled.
DELETE FROM soniq.jobs WHERE task_name = 'report.done';
SELECT soniq.batch_open('report.done') AS b2 \gset
SELECT soniq.enqueue('two.a', batch_id => :'b2') AS a \gset
SELECT soniq.enqueue('two.b', batch_id => :'b2') AS b \gset
SELECT soniq.batch_close(:'b2');
SELECT soniq.delete_job(:'b');
SELECT * FROM status(:'b2');
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 10, ARRAY['two.a']);
SELECT soniq.complete(:'a', :'w', 1);
SELECT * FROM status(:'b2');

-- An empty batch closed: its callback at once, with zero counts.
DELETE FROM soniq.jobs WHERE task_name = 'report.done';
SELECT soniq.batch_open('report.done') AS b3 \gset
SELECT soniq.batch_close(:'b3');
SELECT * FROM status(:'b3');

-- With dependencies: a dependent cancelled by its parent's death counts as cancelled, also
-- when it was cancelled at enqueue; a taken-back job is counted when it ends, not before.
DELETE FROM soniq.jobs WHERE task_name = 'report.done';
SELECT soniq.batch_open('report.done') AS b4 \gset
SELECT soniq.enqueue('dep.parent', batch_id => :'b4') AS p \gset
SELECT soniq.enqueue('dep.child', depends_on => ARRAY[:'p']::uuid[], batch_id => :'b4') IS NOT NULL AS enqueued;
SELECT soniq.batch_close(:'b4');
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 10, ARRAY['dep.parent']);
SELECT soniq.deregister_worker(:'w');
SELECT * FROM status(:'b4');
SELECT soniq.register_worker() AS w \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 10, ARRAY['dep.parent']);
SELECT soniq.fail(:'p', :'w', 2, 'gone', reason => 'permanent_failure');
SELECT * FROM status(:'b4');
DELETE FROM soniq.jobs WHERE task_name = 'report.done';
SELECT soniq.batch_open('report.done') AS b6 \gset
SELECT soniq.enqueue('dep.late', depends_on => ARRAY[:'p']::uuid[], batch_id => :'b6') IS NOT NULL AS enqueued;
SELECT soniq.batch_close(:'b6');
SELECT * FROM status(:'b6');

-- Bad input: nothing written.
SELECT count(*) AS jobs_before FROM soniq.jobs \gset
SELECT soniq.batch_open('report.done') AS b5 \gset
SELECT soniq.enqueue('bad', batch_id => '00000000-0000-0000-0000-000000000000');
:error
SELECT soniq.enqueue('bad', '{"n": 1}', unique_job => true, batch_id => :'b5');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad", "batch_id": "not-a-uuid"}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad", "batch_id": 7}]');
:error
SELECT soniq.batch_open('');
:error
SELECT soniq.batch_open('report.done', '[]');
:error
SELECT soniq.batch_close('00000000-0000-0000-0000-000000000000');
:error
SELECT count(*) AS status_rows FROM soniq.batch_status('00000000-0000-0000-0000-000000000000');
SELECT count(*) - :jobs_before AS jobs_written FROM soniq.jobs;
SELECT jobs FROM soniq.batch_status(:'b5');
