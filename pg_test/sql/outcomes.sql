-- complete, fail, snooze, abort and the lease they must present.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker() AS w \gset
SELECT soniq.register_worker() AS other \gset

-- complete keeps the result for the task's result TTL (default 300 s).
SELECT soniq.enqueue('out.ok') AS j \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w');
SELECT soniq.complete(:'j', :'w', 1, '{"sent": true}');
SELECT status, result, finished_at IS NOT NULL AS finished, expires_at - finished_at AS kept_for, worker_id = :'w' AS last_holder
  FROM soniq.jobs WHERE id = :'j';
-- A second completion of the same attempt is refused: the lease is gone.
SELECT soniq.complete(:'j', :'w', 1);
:error

-- result TTL 0 deletes the job at once.
SELECT soniq.register_task('out.ephemeral', '{"result_ttl": 0}');
SELECT soniq.enqueue('out.ephemeral') AS e \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w');
SELECT soniq.complete(:'e', :'w', 1);
SELECT count(*) AS rows_left FROM soniq.jobs WHERE id = :'e';

-- Only the lease holder, at the current attempt, may finish.
SELECT soniq.enqueue('out.lease') AS l \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w');
SELECT soniq.complete(:'l', :'other', 1);
:error
SELECT soniq.complete(:'l', :'w', 2);
:error
SELECT soniq.fail(:'l', :'other', 1, 'not mine');
:error
SELECT soniq.snooze(:'l', :'other', 1, '1 minute');
:error
SELECT soniq.abort(:'l', :'other', 1);
:error
SELECT status, attempts FROM soniq.jobs WHERE id = :'l';

-- complete_many: returns the ids it completed; a job not held under the lease is left alone.
SELECT count(*) AS enqueued FROM soniq.enqueue_many('out.batch', array_fill('{}'::jsonb, ARRAY[3]));
SELECT array_agg(id ORDER BY created_at, id) AS batch FROM soniq.claim(:'w', queues => '{default}', task_names => '{out.batch}', batch_size => 3) \gset
SELECT count(*) AS completed
  FROM soniq.complete_many(:'batch'::uuid[] || soniq.uuid_v7(), :'w', '{1,1,1,1}', '{"{\"n\":1}",null,null,null}');
SELECT count(*) AS done, count(result) AS with_result FROM soniq.jobs WHERE task_name = 'out.batch' AND status = 'done';
SELECT count(*) AS completed_twice FROM soniq.complete_many(:'batch', :'w', '{1,1,1}');

-- fail: retries at once by default (scheduled_at NULL, claimable again), last_error kept.
SELECT soniq.enqueue('out.flaky', retries => 2) AS f \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.flaky}');
SELECT soniq.fail(:'f', :'w', 1, 'connection reset') AS state;
SELECT status, attempts, last_error, scheduled_at IS NULL AS immediate, worker_id IS NULL AS no_holder
  FROM soniq.jobs WHERE id = :'f';
SELECT attempt FROM soniq.claim(:'w', task_names => '{out.flaky}');
-- retry_in from a runner's own policy wins over the stored one
SELECT soniq.fail(:'f', :'w', 2, 'again', retry_in => '10 minutes') AS state;
SELECT scheduled_at BETWEEN now() + interval '9 minutes' AND now() + interval '11 minutes' AS in_ten_minutes
  FROM soniq.jobs WHERE id = :'f';
SELECT count(*) AS not_yet_due FROM soniq.claim(:'w', task_names => '{out.flaky}');
-- the last attempt failing moves the job to the dead letter
UPDATE soniq.jobs SET scheduled_at = now() WHERE id = :'f';  -- test shortcut: make the retry due
SELECT attempt, max_attempts FROM soniq.claim(:'w', task_names => '{out.flaky}');
SELECT soniq.fail(:'f', :'w', 3, 'gave up') AS state;
SELECT count(*) AS still_in_jobs FROM soniq.jobs WHERE id = :'f';
SELECT task_name, attempts, max_attempts, last_error, dead_letter_reason FROM soniq.dead_letter_jobs WHERE id = :'f';

-- The task's retry policy sets the delay: per-attempt list, backoff with cap.
SELECT soniq.register_task('out.policy', '{"retry_delay": [60, 600], "retries": 5}');
SELECT soniq.enqueue('out.policy') AS p \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.policy}');
SELECT soniq.fail(:'p', :'w', 1, 'e1');
SELECT round(extract(epoch FROM scheduled_at - now())) AS delay_after_attempt_1 FROM soniq.jobs WHERE id = :'p';
UPDATE soniq.jobs SET scheduled_at = now() WHERE id = :'p';
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.policy}');
SELECT soniq.fail(:'p', :'w', 2, 'e2');
SELECT round(extract(epoch FROM scheduled_at - now())) AS delay_after_attempt_2 FROM soniq.jobs WHERE id = :'p';

-- reason: permanent_failure, invalid_arguments, job_not_found dead-letter at once;
-- timeout retries like any failure but names itself when attempts run out.
SELECT soniq.enqueue('out.reason', retries => 5) AS r1 \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.reason}');
SELECT soniq.fail(:'r1', :'w', 1, 'card declined', reason => 'permanent_failure') AS state;
SELECT dead_letter_reason, attempts FROM soniq.dead_letter_jobs WHERE id = :'r1';
SELECT soniq.enqueue('out.timeout', retries => 1) AS t \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.timeout}');
SELECT soniq.fail(:'t', :'w', 1, 'timed out after 2s', reason => 'timeout') AS state;
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.timeout}');
SELECT soniq.fail(:'t', :'w', 2, 'timed out after 2s', reason => 'timeout') AS state;
SELECT dead_letter_reason, last_error FROM soniq.dead_letter_jobs WHERE id = :'t';
-- long errors are cut to 8192 characters
SELECT soniq.enqueue('out.long_error', retries => 0) AS le \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.long_error}');
SELECT soniq.fail(:'le', :'w', 1, repeat('x', 10000));
SELECT length(last_error) FROM soniq.dead_letter_jobs WHERE id = :'le';

-- fail_many: one round trip, per-job outcome; jobs not held under the lease are skipped.
SELECT count(*) AS enqueued FROM soniq.enqueue_many('out.fail_many', array_fill('{}'::jsonb, ARRAY[2]), retries => 1);
SELECT array_agg(id ORDER BY created_at, id) AS fb FROM soniq.claim(:'w', task_names => '{out.fail_many}', batch_size => 2) \gset
SELECT state FROM soniq.fail_many(:'fb'::uuid[] || soniq.uuid_v7(), :'w', '{1,1,1}', '{e1,e2,e3}',
                                  reasons => ARRAY[NULL, 'permanent_failure', NULL]);

-- snooze: back to queued after the delay without using up an attempt.
SELECT soniq.enqueue('out.snooze', retries => 0) AS s \gset
SELECT attempt, max_attempts FROM soniq.claim(:'w', task_names => '{out.snooze}');
SELECT soniq.snooze(:'s', :'w', 1, '5 minutes');
SELECT status, attempts, worker_id IS NULL AS no_holder,
       scheduled_at BETWEEN now() + interval '4 minutes' AND now() + interval '6 minutes' AS in_five_minutes
  FROM soniq.jobs WHERE id = :'s';
SELECT soniq.snooze(:'s', :'w', 1, '0');  -- the lease went with the first snooze
:error
UPDATE soniq.jobs SET scheduled_at = now() WHERE id = :'s';
SELECT attempt, max_attempts FROM soniq.claim(:'w', task_names => '{out.snooze}');
SELECT soniq.snooze(:'s', :'w', 1, '0');
SELECT attempt FROM soniq.claim(:'w', task_names => '{out.snooze}');

-- abort: the worker ends the job as cancelled.
SELECT soniq.abort(:'s', :'w', 1, 'stopped by the handler');
SELECT status, last_error, finished_at IS NOT NULL AS finished FROM soniq.jobs WHERE id = :'s';

-- snooze records why (the job's last error), and without a reason just that it snoozed.
SELECT soniq.enqueue('out.snoozy') AS z \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.snoozy}');
SELECT soniq.snooze(:'z', :'w', 1, '0', 'rate limited by the API');
SELECT status, attempts, last_error FROM soniq.jobs WHERE id = :'z';
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.snoozy}');
SELECT soniq.snooze(:'z', :'w', 1, '0');
SELECT status, attempts, last_error FROM soniq.jobs WHERE id = :'z';

-- A refused lease tells nothing about the job's present holder (not even in its detail).
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{out.snoozy}');
CREATE FUNCTION pg_temp.refusal(job uuid, worker uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    message text;
    detail text;
    hint text;
BEGIN
    PERFORM soniq.complete(job, worker, 1);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', SQLSTATE, message, detail, hint);
END
$$;
SELECT strpos(pg_temp.refusal(:'z', :'other'), :'w') = 0 AS holder_not_named,
       left(pg_temp.refusal(:'z', :'other'), 5) AS sqlstate;

-- An outcome for a job the rescue dead-lettered is a lease no longer current: 55000.
SELECT soniq.enqueue('out.buried', retries => 0) AS d \gset
SELECT count(*) AS claimed FROM soniq.claim(:'other', task_names => '{out.buried}');
SELECT soniq.deregister_worker(:'other') AS taken_back;
SELECT dead_letter_reason FROM soniq.dead_letter_jobs WHERE id = :'d';
SELECT soniq.complete(:'d', :'other', 1);
:error

-- outcome_minutes: each worker's completed and failed attempts per queue and minute (the
-- dashboard's chart); a retried failure counts, as a dead one would.
SELECT soniq.register_worker() AS t \gset
SELECT count(soniq.enqueue('tally.work', queue => 'tally')) AS enqueued FROM generate_series(1, 3);
SELECT soniq.enqueue('tally.bad', queue => 'tally', retries => 1) AS tb \gset
SELECT count(*) AS claimed FROM soniq.claim(:'t', ARRAY['tally'], 10);
SELECT count(*) AS completed
  FROM soniq.complete_many(ARRAY(SELECT id FROM soniq.jobs WHERE task_name = 'tally.work' ORDER BY id), :'t', '{1,1,1}');
SELECT soniq.fail(:'tb', :'t', 1, 'boom') AS first_failure;
SELECT queue, sum(completed) AS completed, sum(failed) AS failed, count(DISTINCT worker_id) AS workers,
       bool_and(minute = date_trunc('minute', minute)) AS whole_minutes
  FROM soniq.outcome_minutes WHERE queue = 'tally' GROUP BY queue;
-- prune_jobs keeps two hours of them.
UPDATE soniq.outcome_minutes SET minute = minute - interval '3 hours' WHERE queue = 'tally';
SELECT soniq.prune_jobs() >= 0 AS pruned;
SELECT count(*) AS rows_left FROM soniq.outcome_minutes WHERE queue = 'tally';
