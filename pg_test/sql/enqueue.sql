-- enqueue: defaults, precedence, dedup, transactions.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'

-- System defaults: queue default, priority 100, retries 3 (4 attempts), timeout 300 s.
SELECT soniq.enqueue('mail.send', '{"to": "a@example.com"}') AS id \gset
SELECT task_name, args, status, queue, priority, attempts, max_attempts, timeout, scheduled_at IS NULL AS immediate,
       result_ttl, args_hash IS NULL AS not_unique, dedup_key, worker_id
  FROM soniq.jobs WHERE id = :'id';
-- args default to an empty object
SELECT soniq.enqueue('mail.ping') AS id \gset
SELECT args FROM soniq.jobs WHERE id = :'id';

-- Registered defaults apply to a plain-SQL producer...
SELECT soniq.register_task('billing.send_invoice',
       '{"queue": "billing", "priority": 10, "retries": 5, "timeout": 120, "retry_delay": [1, 5, 30], "result_ttl": 60}');
SELECT task_name, queue, priority, retries, timeout, retry_policy, result_ttl, unique_job FROM soniq.tasks;
SELECT soniq.enqueue('billing.send_invoice', '{"order_id": 7}') AS id \gset
SELECT queue, priority, max_attempts, timeout, retry_policy, result_ttl FROM soniq.jobs WHERE id = :'id';
-- ...and the call overrides them.
SELECT soniq.enqueue('billing.send_invoice', '{"order_id": 8}',
                     queue => 'urgent', priority => 1, retries => 0, timeout => '10 seconds') AS id \gset
SELECT queue, priority, max_attempts, timeout FROM soniq.jobs WHERE id = :'id';
-- timeout 0 means no timeout, from the call or from the task.
SELECT soniq.enqueue('mail.send', timeout => '0') AS id \gset
SELECT timeout IS NULL AS no_timeout FROM soniq.jobs WHERE id = :'id';
SELECT soniq.register_task('report.build', '{"timeout": 0}');
SELECT soniq.enqueue('report.build') AS id \gset
SELECT timeout IS NULL AS no_timeout FROM soniq.jobs WHERE id = :'id';
-- Re-registering replaces the previous defaults (omitted options fall back to the system's).
SELECT soniq.register_task('billing.send_invoice', '{"priority": 20}');
SELECT soniq.enqueue('billing.send_invoice', '{"order_id": 9}') AS id \gset
SELECT queue, priority, max_attempts FROM soniq.jobs WHERE id = :'id';

-- scheduled_at in the future; a time in the past is accepted and runs at once.
SELECT soniq.enqueue('mail.send', scheduled_at => now() + interval '1 hour') AS id \gset
SELECT scheduled_at > now() AS later FROM soniq.jobs WHERE id = :'id';
SELECT soniq.enqueue('mail.send', scheduled_at => now() - interval '1 hour') AS id \gset
SELECT scheduled_at < now() AS earlier FROM soniq.jobs WHERE id = :'id';

-- producer_id is stamped on the job
SELECT soniq.enqueue('mail.send', producer_id => 'web-1:4242') AS id \gset
SELECT producer_id FROM soniq.jobs WHERE id = :'id';

-- unique_job: the same args (key order does not matter) give the queued job's id back and write nothing.
SELECT soniq.enqueue('dedup.args', '{"a": 1, "b": 2}', unique_job => true) AS u1 \gset
SELECT count(*) AS jobs_before FROM soniq.jobs \gset
SELECT soniq.enqueue('dedup.args', '{"b": 2, "a": 1}', unique_job => true, priority => 5) = :'u1' AS same_job;
SELECT count(*) = :jobs_before AS nothing_written, (SELECT priority FROM soniq.jobs WHERE id = :'u1') AS priority_kept FROM soniq.jobs;
-- other args, another task or no unique flag make a new job
SELECT soniq.enqueue('dedup.args', '{"a": 2}', unique_job => true) <> :'u1' AS other_args;
SELECT soniq.enqueue('dedup.other', '{"a": 1, "b": 2}', unique_job => true) <> :'u1' AS other_task;
SELECT soniq.enqueue('dedup.args', '{"a": 1, "b": 2}') <> :'u1' AS not_unique;
-- a task registered unique dedups without the flag; the call can turn it off
SELECT soniq.register_task('dedup.registered', '{"unique": true}');
SELECT soniq.enqueue('dedup.registered', '{"k": 1}') = soniq.enqueue('dedup.registered', '{"k": 1}') AS registered_unique;
SELECT soniq.enqueue('dedup.registered', '{"k": 1}') <> soniq.enqueue('dedup.registered', '{"k": 1}', unique_job => false) AS call_overrides;

-- dedup_key: at most one queued job per key, across task names.
SELECT soniq.enqueue('dedup.key', dedup_key => 'order-7') AS k1 \gset
SELECT soniq.enqueue('dedup.other_task', dedup_key => 'order-7') = :'k1' AS same_key_same_job;
SELECT count(*) AS keyed FROM soniq.jobs WHERE dedup_key = 'order-7';
-- unique and dedup_key on one call: whichever matches returns the queued job, never an error.
SELECT soniq.enqueue('dedup.args', '{"a": 1, "b": 2}', unique_job => true, dedup_key => 'fresh-key') = :'u1' AS unique_match_wins;
-- once the job is no longer queued, the key is free again
SELECT soniq.register_worker() AS w \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dedup.key}');
SELECT soniq.enqueue('dedup.key', dedup_key => 'order-7') <> :'k1' AS new_job_after_claim;


-- Transactional: a rolled-back enqueue leaves no job.
SELECT count(*) AS before_rollback FROM soniq.jobs \gset
BEGIN;
SELECT soniq.enqueue('tx.rolled_back') AS rb \gset
SELECT count(*) = 1 AS visible_inside FROM soniq.jobs WHERE id = :'rb';
ROLLBACK;
SELECT count(*) = :before_rollback AS no_job_after_rollback FROM soniq.jobs;
SELECT count(*) AS rolled_back_jobs FROM soniq.jobs WHERE task_name = 'tx.rolled_back';
BEGIN;
SELECT soniq.enqueue('tx.committed') AS c \gset
COMMIT;
SELECT status FROM soniq.jobs WHERE id = :'c';

-- enqueue_many, one task and many args: ids in input order, options shared.
SELECT array_agg(id) AS ids FROM soniq.enqueue_many('bulk.item', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], priority => 7) AS id \gset
SELECT array_agg(j.args->>'n' ORDER BY m.ord) AS args_in_order, bool_and(j.priority = 7) AS shared_priority
  FROM unnest(:'ids'::uuid[]) WITH ORDINALITY AS m(id, ord) JOIN soniq.jobs j ON j.id = m.id;
SELECT count(*) AS empty_batch FROM soniq.enqueue_many('bulk.item', '{}'::jsonb[]);
-- enqueue_many, specs: each job its own options.
SELECT array_agg(id) AS ids
  FROM soniq.enqueue_many('[{"task_name": "spec.a", "args": {"x": 1}, "queue": "q1", "priority": 3},
                            {"task_name": "spec.b", "retries": 0, "timeout": 30, "dedup_key": "spec-b"}]') AS id \gset
SELECT j.task_name, j.args, j.queue, j.priority, j.max_attempts, j.timeout, j.dedup_key
  FROM unnest(:'ids'::uuid[]) WITH ORDINALITY AS m(id, ord) JOIN soniq.jobs j ON j.id = m.id
 ORDER BY m.ord;
-- a batch with one bad element writes nothing and names the element
SELECT count(*) AS before_bad_batch FROM soniq.jobs \gset
SELECT soniq.enqueue_many('[{"task_name": "spec.ok"}, {"task_name": "spec.ok", "priority": 0}]');
:error
SELECT count(*) = :before_bad_batch AS batch_rolled_back FROM soniq.jobs;
-- a bad element late in a large batch, after good ones with dedup keys: still nothing written
SELECT soniq.enqueue_many(
    (SELECT jsonb_agg(CASE WHEN g = 900 THEN jsonb_build_object('task_name', 'bad name')
                           ELSE jsonb_build_object('task_name', 'spec.ok', 'dedup_key', 'late-' || g) END ORDER BY g)
       FROM generate_series(1, 1000) g));
:error
SELECT count(*) = :before_bad_batch AS large_batch_rolled_back FROM soniq.jobs;
-- Deduplication in a batch: a later element with the key (or task and args) of an earlier one
-- returns the earlier one's id, as does an element matching a job queued before the batch.
SELECT soniq.enqueue('batch.dedup', dedup_key => 'batch-queued') AS queued_before \gset
SELECT array_agg(id) AS ids
  FROM soniq.enqueue_many('[{"task_name": "batch.dedup", "dedup_key": "batch-k"},
                            {"task_name": "batch.plain", "args": {"n": 1}},
                            {"task_name": "batch.dedup", "dedup_key": "batch-k"},
                            {"task_name": "batch.unique", "args": {"a": 1, "b": 2}, "unique": true},
                            {"task_name": "batch.unique", "args": {"b": 2, "a": 1}, "unique": true},
                            {"task_name": "batch.dedup", "dedup_key": "batch-queued"},
                            {"task_name": "batch.plain", "args": {"n": 1}}]') AS id \gset
SELECT (:'ids'::uuid[])[1] = (:'ids'::uuid[])[3] AS same_key_same_job,
       (:'ids'::uuid[])[4] = (:'ids'::uuid[])[5] AS same_args_same_job,
       (:'ids'::uuid[])[6] = :'queued_before' AS matches_the_table,
       (:'ids'::uuid[])[2] <> (:'ids'::uuid[])[7] AS plain_jobs_never_merge;
SELECT task_name, count(*) AS rows FROM soniq.jobs WHERE task_name LIKE 'batch.%' GROUP BY 1 ORDER BY 1;
-- the typed form dedups its args too (unique_job), and a batch is claimed in input order
SELECT array_agg(id) AS ids
  FROM soniq.enqueue_many('batch.typed', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 1}', '{"n": 3}']::jsonb[],
                          queue => 'batch.order', unique_job => true) AS id \gset
SELECT (:'ids'::uuid[])[1] = (:'ids'::uuid[])[3] AS typed_dedup, cardinality(:'ids'::uuid[]) AS ids_returned;
SELECT soniq.register_worker('batch-host', 1, ARRAY['batch.order']) AS bw \gset
SELECT array_agg(args->>'n' ORDER BY ord) AS claimed_in_input_order
  FROM soniq.claim(:'bw', ARRAY['batch.order'], 10) WITH ORDINALITY AS c(id, task_name, args, attempt, max_attempts,
                   queue, priority, timeout, scheduled_at, created_at, traceparent, ord);

-- traceparent: the producer's W3C trace context, stored with the job and returned by claim,
-- from enqueue, the one-task enqueue_many and a spec's key; NULL when none is given.
SELECT soniq.enqueue('trace.a', queue => 'trace', traceparent => '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01') AS traced \gset
SELECT count(*) FROM soniq.enqueue_many('trace.b', ARRAY['{}', '{"n": 2}']::jsonb[], queue => 'trace',
                                        traceparent => '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00');
SELECT count(*) FROM soniq.enqueue_many('[{"task_name": "trace.c", "queue": "trace",
                                           "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
                                          {"task_name": "trace.d", "queue": "trace"}]');
-- a duplicate returned instead keeps the context of the job it returns
SELECT soniq.enqueue('trace.a', queue => 'trace', unique_job => true) AS first_unique \gset
SELECT soniq.enqueue('trace.a', queue => 'trace', unique_job => true,
                     traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01') = :'first_unique' AS same_job;
SELECT task_name, traceparent FROM soniq.jobs WHERE queue = 'trace' ORDER BY id;
SELECT soniq.register_worker('trace-host', 1, ARRAY['trace']) AS tw \gset
SELECT task_name, traceparent FROM soniq.claim(:'tw', ARRAY['trace'], 10) WHERE id = :'traced';
-- a malformed context is refused (22023) and writes nothing, from every entry point
SELECT count(*) AS before_bad_trace FROM soniq.jobs \gset
SELECT soniq.enqueue('trace.bad', traceparent => '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01');
:error
SELECT soniq.enqueue('trace.bad', traceparent => '00-00000000000000000000000000000000-b7ad6b7169203331-01');
:error
SELECT soniq.enqueue('trace.bad', traceparent => '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01');
:error
SELECT soniq.enqueue('trace.bad', traceparent => '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
:error
SELECT soniq.enqueue('trace.bad', traceparent => '');
:error
SELECT soniq.enqueue_many('trace.bad', ARRAY['{}']::jsonb[], traceparent => 'not a context');
:error
SELECT soniq.enqueue_many('[{"task_name": "trace.ok"}, {"task_name": "trace.bad", "traceparent": 42}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "trace.ok"}, {"task_name": "trace.bad", "traceparent": "00-1"}]');
:error
SELECT count(*) = :before_bad_trace AS nothing_written FROM soniq.jobs;
