-- Progress and checkpoints: written on the attempt's lease, progress at most once a second,
-- a checkpoint read back by the next attempt; a taken-back attempt's late write is refused.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker() AS w \gset
SELECT soniq.register_worker() AS other \gset
SELECT soniq.enqueue('long.import', retries => 2) AS j \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w');

-- Progress: kept, then refused within the second (each call is its own transaction here).
SELECT soniq.report_progress(:'j', :'w', 1, '{"done": 10, "of": 100}') AS kept;
SELECT soniq.report_progress(:'j', :'w', 1, '{"done": 11, "of": 100}') AS kept;
SELECT progress, progress_at IS NOT NULL AS stamped FROM soniq.get_job(:'j');
UPDATE soniq.job_progress SET progress_at = progress_at - interval '1 second' WHERE job_id = :'j';  -- a second later
SELECT soniq.report_progress(:'j', :'w', 1, '{"done": 20, "of": 100}') AS kept;
SELECT progress FROM soniq.list_jobs(status => 'processing');

-- A checkpoint: every call kept, read back by the attempt.
SELECT soniq.read_checkpoint(:'j', :'w', 1) AS none_yet;
SELECT soniq.save_checkpoint(:'j', :'w', 1, '{"row": 1000}');
SELECT soniq.save_checkpoint(:'j', :'w', 1, '{"row": 2000}');
SELECT soniq.read_checkpoint(:'j', :'w', 1) AS saved;

-- The attempt fails; the next one reads the checkpoint, and the old lease can write nothing.
SELECT soniq.fail(:'j', :'w', 1, 'connection reset');
SELECT attempt FROM soniq.claim(:'w');
SELECT soniq.read_checkpoint(:'j', :'w', 2) AS resumes_from;
SELECT soniq.save_checkpoint(:'j', :'w', 1, '{"row": 0}');
:error
SELECT soniq.report_progress(:'j', :'w', 1, '{"done": 0}');
:error
SELECT soniq.read_checkpoint(:'j', :'w', 1);
:error
-- Another worker holds no lease on it.
SELECT soniq.save_checkpoint(:'j', :'other', 2, '{"row": 0}');
:error
SELECT soniq.read_checkpoint(:'j', :'w', 2) AS unchanged;

-- Taken back from a dead worker: the checkpoint waits for the next attempt.
SELECT soniq.deregister_worker(:'w');
SELECT soniq.register_worker() AS w \gset
SELECT attempt FROM soniq.claim(:'w');
SELECT soniq.read_checkpoint(:'j', :'w', 3) AS after_take_back;
SELECT soniq.save_checkpoint(:'j', :'w', 3, NULL);
SELECT soniq.read_checkpoint(:'j', :'w', 3) AS cleared;
SELECT soniq.complete(:'j', :'w', 3);
SELECT status, progress FROM soniq.get_job(:'j');

-- Bad input: sizes, NULLs; nothing written.
SELECT soniq.enqueue('long.other') AS k \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w');
SELECT soniq.report_progress(:'k', :'w', 1, jsonb_build_object('pad', repeat('x', 70000)));
:error
SELECT soniq.save_checkpoint(:'k', :'w', 1, jsonb_build_object('pad', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 40000) g)));
:error
SELECT soniq.save_checkpoint(NULL, :'w', 1, '{}');
:error
SELECT soniq.report_progress(:'k', :'w', NULL, '{}');
:error
SELECT count(*) AS recorded FROM soniq.job_progress WHERE job_id = :'k';
-- A job's record goes when the job does (pruned with the finished jobs).
SELECT soniq.delete_job(:'k');
SELECT count(*) AS recorded FROM soniq.job_progress WHERE job_id = :'j';
DELETE FROM soniq.jobs WHERE id = :'j';
SELECT soniq.prune_jobs() >= 0 AS pruned;
SELECT count(*) AS recorded FROM soniq.job_progress;
