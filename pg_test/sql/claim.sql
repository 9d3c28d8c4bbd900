-- claim: order, batches, filters, paused queues, future jobs.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker('host-a', 100, concurrency => 4) AS w \gset

-- Priority first (lower number sooner), then never-scheduled before due-scheduled, then age.
SELECT soniq.enqueue('order.low', priority => 200) IS NOT NULL AS low;
SELECT soniq.enqueue('order.due_scheduled', scheduled_at => now() - interval '1 minute') IS NOT NULL AS due;
SELECT soniq.enqueue('order.first', priority => 100) IS NOT NULL AS first;
SELECT soniq.enqueue('order.second', priority => 100) IS NOT NULL AS second;
SELECT soniq.enqueue('order.urgent', priority => 1) IS NOT NULL AS urgent;
SELECT soniq.enqueue('order.future', scheduled_at => now() + interval '1 hour') IS NOT NULL AS future;
-- (each enqueue is its own transaction, so created_at decides between first and second)
SELECT task_name, attempt, max_attempts, queue, priority, timeout
  FROM soniq.claim(:'w', batch_size => 10);
-- The future job is not due: nothing more to claim.
SELECT count(*) AS nothing_due FROM soniq.claim(:'w');
-- Claimed jobs are processing, leased to the worker, attempt 1.
SELECT task_name, status, attempts, worker_id = :'w' AS leased, started_at IS NOT NULL AS started
  FROM soniq.jobs WHERE task_name LIKE 'order.%' ORDER BY task_name;

-- Batches: at most batch_size jobs per call.
SELECT count(*) AS enqueued FROM soniq.enqueue_many('batch.job', array_fill('{}'::jsonb, ARRAY[7]));
SELECT count(*) AS first_batch FROM soniq.claim(:'w', batch_size => 5);
SELECT count(*) AS second_batch FROM soniq.claim(:'w', batch_size => 5);

-- Queue filter.
SELECT soniq.enqueue('queue.job', queue => 'emails') IS NOT NULL AS e1;
SELECT soniq.enqueue('queue.job', queue => 'billing') IS NOT NULL AS b1;
SELECT queue FROM soniq.claim(:'w', queues => '{emails}', batch_size => 10);
SELECT queue FROM soniq.claim(:'w', queues => '{emails,reports}', batch_size => 10);
SELECT queue FROM soniq.claim(:'w', queues => '{billing}', batch_size => 10);

-- Task-name filter: a worker never takes a job it cannot run.
SELECT soniq.enqueue('known.task') IS NOT NULL AS k;
SELECT soniq.enqueue('unknown.task') IS NOT NULL AS u;
SELECT task_name FROM soniq.claim(:'w', task_names => '{known.task,other.task}', batch_size => 10);
SELECT task_name FROM soniq.claim(:'w', batch_size => 10);

-- Paused queues are skipped; jobs still arrive; resume makes them claimable again.
SELECT soniq.pause_queue('paused_q') AS paused;
SELECT soniq.pause_queue('paused_q') AS paused_again;
SELECT soniq.enqueue('pause.job', queue => 'paused_q') IS NOT NULL AS enqueued_while_paused;
SELECT count(*) AS claimed_while_paused FROM soniq.claim(:'w', batch_size => 10);
SELECT count(*) AS claimed_by_name_while_paused FROM soniq.claim(:'w', queues => '{paused_q}');
SELECT name, paused, paused_at IS NOT NULL AS has_paused_at FROM soniq.queues;
SELECT soniq.resume_queue('paused_q') AS resumed;
SELECT soniq.resume_queue('paused_q') AS resumed_again;
SELECT soniq.resume_queue('never_paused') AS resumed_unknown;
SELECT task_name FROM soniq.claim(:'w', batch_size => 10);

-- Several queues named: the batch in claim order across them (priority, then age), each
-- queue's jobs read from its own index; a paused one gives nothing, a name given twice counts
-- once, the task filter holds; another queue's backlog is left alone.
SELECT count(*) AS backlog FROM soniq.enqueue_many('other.job', array_fill('{}'::jsonb, ARRAY[50]), queue => 'bulk');
SELECT soniq.enqueue('multi.job', '{"n": 1}', queue => 'qa', priority => 50) IS NOT NULL AS a1;
SELECT soniq.enqueue('multi.job', '{"n": 2}', queue => 'qb', priority => 10) IS NOT NULL AS b1;
SELECT soniq.enqueue('multi.job', '{"n": 3}', queue => 'qa', priority => 10) IS NOT NULL AS a2;
SELECT soniq.enqueue('skip.job', '{"n": 4}', queue => 'qb', priority => 1) IS NOT NULL AS b2;
SELECT soniq.enqueue('multi.job', '{"n": 5}', queue => 'qc', priority => 1) IS NOT NULL AS c1;
SELECT soniq.pause_queue('qc') AS paused;
SELECT queue, priority, args ->> 'n' AS n
  FROM soniq.claim(:'w', queues => '{qa,qb,qc,qa}', batch_size => 2, task_names => '{multi.job}');
SELECT queue, priority, args ->> 'n' AS n
  FROM soniq.claim(:'w', queues => '{qa,qb,qc,qa}', batch_size => 10, task_names => '{multi.job}');
SELECT count(*) FILTER (WHERE status = 'queued') AS bulk_left FROM soniq.jobs WHERE queue = 'bulk';
-- Every queue while a paused one holds queued jobs: read queue by queue too, the paused one left out.
SELECT queue, priority, args ->> 'n' AS n FROM soniq.claim(:'w', batch_size => 10, task_names => '{multi.job,skip.job}');
SELECT soniq.resume_queue('qc') AS resumed;
DELETE FROM soniq.jobs WHERE queue IN ('bulk', 'qb', 'qc');

-- A retried job's attempt counter keeps climbing; max_attempts comes along.
SELECT soniq.enqueue('attempts.job', retries => 2) AS a \gset
SELECT attempt, max_attempts FROM soniq.claim(:'w');
SELECT soniq.fail(:'a', :'w', 1, 'first failure');
SELECT attempt, max_attempts FROM soniq.claim(:'w');

-- The claim uses the partial index that matches its order, not a sort of the backlog.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT j.id FROM soniq.jobs j
 WHERE j.status = 'queued' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
 ORDER BY j.priority, j.scheduled_at NULLS FIRST, j.created_at, j.id
 LIMIT 10 FOR UPDATE SKIP LOCKED;
RESET enable_seqscan;
