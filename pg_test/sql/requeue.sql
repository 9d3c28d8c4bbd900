-- A job going back to the queue (a retry, a snooze, a take-back) while its duplicate is queued.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
\set mask 'regexp_replace(last_error, ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'')'
SELECT soniq.register_worker() AS w \gset

-- While unique job A runs, the same enqueue makes B (A is no longer queued). A's retry then
-- yields to B: A ends cancelled naming B, B stays queued and runs once. No 23505.
SELECT soniq.enqueue('dup.task', '{"n": 1}', unique_job => true) AS a \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dup.task}');
SELECT soniq.enqueue('dup.task', '{"n": 1}', unique_job => true) AS b \gset
SELECT :'a' <> :'b' AS a_new_job;
SELECT soniq.fail(:'a', :'w', 1, 'boom') AS state;
SELECT status, :mask AS last_error, replace(last_error, :'b', '<b>') LIKE '%job <b>%' AS names_b
  FROM soniq.jobs WHERE id = :'a';
SELECT status FROM soniq.jobs WHERE id = :'b';
-- B runs to the end.
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dup.task}');
SELECT soniq.complete(:'b', :'w', 1);

-- The same with a dedup key, through snooze: the snoozed job yields to its queued duplicate.
SELECT soniq.enqueue('dup.task', dedup_key => 'k1') AS a \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dup.task}');
SELECT soniq.enqueue('dup.task', dedup_key => 'k1') AS b \gset
SELECT soniq.snooze(:'a', :'w', 1, '1 minute', 'rate limited');
SELECT status, :mask AS last_error FROM soniq.jobs WHERE id = :'a';
SELECT status FROM soniq.jobs WHERE id = :'b';
SELECT soniq.delete_job(:'b');

-- fail_many reports the merged job as such and records the others.
SELECT soniq.enqueue('dup.task', dedup_key => 'k2') AS a \gset
SELECT soniq.enqueue('dup.plain') AS p \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dup.task,dup.plain}', batch_size => 2);
SELECT soniq.enqueue('dup.task', dedup_key => 'k2') AS b \gset
SELECT job_id = :'a' AS is_a, state FROM soniq.fail_many(ARRAY[:'a', :'p']::uuid[], :'w', '{1,1}', '{e,e}') ORDER BY 1 DESC;
SELECT soniq.delete_job(:'b');
SELECT soniq.delete_job(:'p');

-- Without a duplicate, a retried unique job goes back to the queue as before.
SELECT soniq.enqueue('dup.task', '{"n": 2}', unique_job => true) AS a \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dup.task}');
SELECT soniq.fail(:'a', :'w', 1, 'boom') AS state;
SELECT status, last_error FROM soniq.jobs WHERE id = :'a';
SELECT soniq.delete_job(:'a');

-- Take-backs follow the same rule: deregister_worker, the heartbeat's take-back of a job the
-- worker lost track of, and the rescue round of a silent worker.
SELECT soniq.register_worker() AS leaving \gset
SELECT soniq.enqueue('dup.task', dedup_key => 'k3') AS a \gset
SELECT count(*) AS claimed FROM soniq.claim(:'leaving', task_names => '{dup.task}');
SELECT soniq.enqueue('dup.task', dedup_key => 'k3') AS b \gset
SELECT soniq.deregister_worker(:'leaving') AS taken_back;
SELECT status, :mask AS last_error FROM soniq.jobs WHERE id = :'a';
SELECT soniq.delete_job(:'b');

SELECT soniq.register_worker() AS forgetful \gset
SELECT soniq.enqueue('dup.task', '{"n": 3}', unique_job => true) AS a \gset
SELECT count(*) AS claimed FROM soniq.claim(:'forgetful', task_names => '{dup.task}');
SELECT soniq.enqueue('dup.task', '{"n": 3}', unique_job => true) AS b \gset
SELECT count(*) AS cancellations FROM soniq.heartbeat(:'forgetful', '{}', '0');
SELECT status FROM soniq.jobs WHERE id = :'a';
SELECT soniq.delete_job(:'b');

-- A silent worker holding a unique job A (duplicate B queued) and a plain job C: the rescue
-- round takes both back; it used to fail on every tick with a duplicate key.
SELECT soniq.register_worker() AS silent \gset
SELECT soniq.enqueue('dup.task', '{"n": 4}', unique_job => true) AS a \gset
SELECT soniq.enqueue('dup.plain') AS c \gset
SELECT count(*) AS claimed FROM soniq.claim(:'silent', task_names => '{dup.task,dup.plain}', batch_size => 2);
SELECT soniq.enqueue('dup.task', '{"n": 4}', unique_job => true) AS b \gset
UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = :'silent';
SELECT soniq._round_rescue('5 minutes', '1 minute') AS taken_back;
SELECT id = :'a' AS is_a, status FROM soniq.jobs WHERE id IN (:'a', :'c') ORDER BY 1 DESC;
SELECT last_error FROM soniq.health WHERE subsystem = 'rescue';
SELECT soniq.delete_job(:'b');
SELECT soniq.delete_job(:'c');

-- One job that cannot be taken back (here: a trigger refuses it) does not stop the round:
-- the other jobs are taken back, the failure is recorded in soniq.health.
CREATE FUNCTION pg_temp.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.task_name = 'dup.poison' AND NEW.status = 'queued' THEN
        RAISE EXCEPTION 'poisoned row';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER refuse_poison BEFORE UPDATE ON soniq.jobs FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_poison();
SELECT soniq.register_worker() AS silent \gset
SELECT soniq.enqueue('dup.poison') AS poison \gset
SELECT soniq.enqueue('dup.plain') AS c1 \gset
SELECT soniq.enqueue('dup.plain') AS c2 \gset
SELECT count(*) AS claimed FROM soniq.claim(:'silent', task_names => '{dup.poison,dup.plain}', batch_size => 3);
UPDATE soniq.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = :'silent';
SELECT soniq._round_rescue('5 minutes', '1 minute') AS taken_back;
SELECT task_name, status, count(*) FROM soniq.jobs WHERE id IN (:'poison', :'c1', :'c2') GROUP BY 1, 2 ORDER BY 1;
SELECT :mask AS last_error, failures FROM soniq.health WHERE subsystem = 'rescue';
-- Once the row can move again, the next clean round takes it back and clears the error.
DROP TRIGGER refuse_poison ON soniq.jobs;
SELECT soniq._round_rescue('5 minutes', '1 minute') AS taken_back;
SELECT status FROM soniq.jobs WHERE id = :'poison';
SELECT last_error FROM soniq.health WHERE subsystem = 'rescue';
