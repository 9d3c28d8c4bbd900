-- flow: queue_configure and its bad input; max_running, per-key limits and fair share, rate
-- limits and their window, concurrency keys from the task's registered field, queue_limits.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, :''LAST_ERROR_MESSAGE'' AS error;'
SELECT soniq.register_worker('host-a', 100, concurrency => 100) AS w \gset

-- Settings: each given key set, JSON null removes one, others kept; the result is returned.
SELECT soniq.queue_configure('mail', '{"max_running": 3, "rate_limit": 10, "rate_period": 60}');
SELECT soniq.queue_configure('mail', '{"rate_limit": null}');
SELECT soniq.queue_configure('mail', '{"key_weights": {"gold": 3}, "fair_share": true}');
SELECT soniq.queue_configure('mail', '{"key_weights": null, "fair_share": null, "rate_period": null}');

-- Bad input: 22023 with a message, nothing written.
CREATE TEMP TABLE before AS SELECT * FROM soniq.queues;
SELECT soniq.queue_configure('mail', '{"max_running": 0}');
:error
SELECT soniq.queue_configure('mail', '{"max_running": -5}');
:error
SELECT soniq.queue_configure('mail', '{"max_running": 2.5}');
:error
SELECT soniq.queue_configure('mail', '{"max_running": "4"}');
:error
SELECT soniq.queue_configure('mail', '{"max_running_per_key": 100001}');
:error
SELECT soniq.queue_configure('mail', '{"rate_limit": 5}');
:error
SELECT soniq.queue_configure('mail', '{"rate_limit": 5, "rate_period": 0.5}');
:error
SELECT soniq.queue_configure('mail', '{"rate_limit": 5, "rate_period": 86401}');
:error
SELECT soniq.queue_configure('mail', '{"rate_limit_per_key": 0, "rate_period": 10}');
:error
SELECT soniq.queue_configure('mail', '{"max_runnning": 3, "burst": 1}');
:error
SELECT soniq.queue_configure('mail', '{"fair_share": "yes"}');
:error
SELECT soniq.queue_configure('mail', '{"key_weights": {"gold": 0}}');
:error
SELECT soniq.queue_configure('mail', '{"key_weights": [1]}');
:error
SELECT soniq.queue_configure('mail', '[]');
:error
SELECT soniq.queue_configure('mail', NULL);
:error
SELECT soniq.queue_configure('bad name', '{"max_running": 1}');
:error
SELECT count(*) AS unchanged FROM (SELECT * FROM soniq.queues EXCEPT SELECT * FROM before) d;
-- A key field that does not name an args field.
SELECT soniq.register_task('t.bad', '{"concurrency_key": "tenant id"}');
:error
SELECT soniq.register_task('t.bad', '{"concurrency_key": ""}');
:error
SELECT count(*) AS no_task FROM soniq.tasks WHERE task_name = 't.bad';

-- max_running: a claim takes no more than the room left; a finished job frees a slot.
SELECT count(*) FROM soniq.enqueue_many('mail.send', array_fill('{}'::jsonb, ARRAY[10]), queue => 'mail');
SELECT count(*) AS first_claim FROM soniq.claim(:'w', '{mail}', 10);
SELECT count(*) AS at_limit FROM soniq.claim(:'w', '{mail}', 10);
SELECT queue, settings, running, runnable, waiting_for_limit FROM soniq.queue_limits;
SELECT queue, runnable, limits, waiting_for_limit FROM soniq.queue_overview WHERE queue = 'mail';
SELECT held_back FROM soniq.queues WHERE name = 'mail';
SELECT soniq.complete(id, :'w', attempts) FROM soniq.jobs WHERE queue = 'mail' AND status = 'processing' LIMIT 1;
SELECT count(*) AS one_slot_freed FROM soniq.claim(:'w', '{mail}', 10);
-- A limit raised takes effect at the next claim; removed, the queue claims as any other.
SELECT soniq.queue_configure('mail', '{"max_running": 5}');
SELECT count(*) AS two_more FROM soniq.claim(:'w', '{mail}', 10);
SELECT soniq.queue_configure('mail', '{"max_running": null}');
SELECT count(*) AS the_rest FROM soniq.claim(:'w', '{mail}', 10);
SELECT count(*) AS no_limited_queue FROM soniq.queue_limits;

-- A claim from several queues: the limited one gives its room, the others what they have,
-- the batch in claim order.
SELECT soniq.queue_configure('slow', '{"max_running": 2}');
SELECT count(*) FROM soniq.enqueue_many('slow.job', array_fill('{}'::jsonb, ARRAY[5]), queue => 'slow', priority => 1);
SELECT count(*) FROM soniq.enqueue_many('fast.job', array_fill('{}'::jsonb, ARRAY[3]), queue => 'fast', priority => 50);
SELECT queue, priority FROM soniq.claim(:'w', NULL, 4);
SELECT queue, count(*) FROM soniq.claim(:'w', NULL, 10) GROUP BY queue ORDER BY queue;

-- Concurrency keys: from the field the task names, '' when the args lack it; a long value is
-- stored as its hash.
SELECT soniq.register_task('tenant.job', '{"concurrency_key": "customer.id"}');
SELECT soniq.queue_configure('tenants', '{"max_running_per_key": 2}');
SELECT count(*) FROM soniq.enqueue_many('tenant.job',
    ARRAY(SELECT jsonb_build_object('customer', jsonb_build_object('id', 'a'), 'n', g) FROM generate_series(1, 50) g),
    queue => 'tenants');
SELECT count(*) FROM soniq.enqueue_many('tenant.job',
    ARRAY(SELECT jsonb_build_object('customer', jsonb_build_object('id', 'b'), 'n', g) FROM generate_series(1, 3) g),
    queue => 'tenants');
SELECT soniq.enqueue('tenant.job', '{"n": 1}', queue => 'tenants') IS NOT NULL AS no_key;
SELECT soniq.enqueue('tenant.job', jsonb_build_object('customer', jsonb_build_object('id', repeat('x', 300))),
                     queue => 'tenants') IS NOT NULL AS long_key;
SELECT concurrency_key = '' AS default_key, left(concurrency_key, 7) AS prefix, count(*)
  FROM soniq.jobs WHERE queue = 'tenants' GROUP BY 1, 2 ORDER BY 1, 2;
-- Fair share: a's 50 jobs do not keep b's 3 from their turn; each key within its limit.
SELECT left(args -> 'customer' ->> 'id', 5) AS customer, args ->> 'n' AS n
  FROM soniq.claim(:'w', '{tenants}', 10) ORDER BY 1, 2;
SELECT count(*) AS every_key_at_its_limit FROM soniq.claim(:'w', '{tenants}', 10);
SELECT concurrency_key = '' AS default_key, running, runnable, waiting_for_limit
  FROM soniq.queue_limits WHERE queue = 'tenants' AND concurrency_key IN ('', 'a', 'b')
 ORDER BY concurrency_key;

-- Fair share with weights, no limits: each round a key gives its weight's share, and the next
-- claim starts after the key this one stopped at.
SELECT soniq.register_task('w.job', '{"concurrency_key": "k"}');
SELECT soniq.queue_configure('weighted', '{"fair_share": true, "key_weights": {"k1": 2}}');
SELECT count(*) FROM soniq.enqueue_many('w.job',
    ARRAY(SELECT jsonb_build_object('k', 'k' || (g % 4), 'n', g) FROM generate_series(0, 39) g), queue => 'weighted');
SELECT args ->> 'k' AS key, count(*) FROM soniq.claim(:'w', '{weighted}', 5) GROUP BY 1 ORDER BY 1;
SELECT key_cursor FROM soniq.queues WHERE name = 'weighted';
SELECT args ->> 'k' AS key, count(*) FROM soniq.claim(:'w', '{weighted}', 5) GROUP BY 1 ORDER BY 1;

-- Keys at their limit are walked past: with every key at its limit of one, the job of the
-- last key finished and the walk starting after that key (so round the end, past the three
-- others at their limit), a claim of one still finds the key with room.
SELECT soniq.register_task('walk.job', '{"concurrency_key": "k"}');
SELECT soniq.queue_configure('walked', '{"max_running_per_key": 1}');
SELECT count(*) FROM soniq.enqueue_many('walk.job',
    ARRAY(SELECT jsonb_build_object('k', 'k' || (g % 4), 'n', g) FROM generate_series(0, 7) g), queue => 'walked');
SELECT args ->> 'k' AS key FROM soniq.claim(:'w', '{walked}', 3) ORDER BY 1;
SELECT args ->> 'k' AS key FROM soniq.claim(:'w', '{walked}', 1);
SELECT count(soniq.complete(id, :'w', attempts)) AS finished FROM soniq.jobs
 WHERE queue = 'walked' AND status = 'processing' AND args ->> 'k' = 'k3';
SELECT key_cursor FROM soniq.queues WHERE name = 'walked';
SELECT args ->> 'k' AS key FROM soniq.claim(:'w', '{walked}', 1);
SELECT count(*) AS every_key_at_its_limit FROM soniq.claim(:'w', '{walked}', 1);

-- Rate limit: at most rate_limit starts in any window of rate_period; a window full leaves the
-- queue's next edge for the control plane to wake its workers at.
SELECT soniq.queue_configure('rated', '{"rate_limit": 4, "rate_period": 3600}');
SELECT count(*) FROM soniq.enqueue_many('rated.job', array_fill('{}'::jsonb, ARRAY[10]), queue => 'rated');
SELECT count(*) AS three FROM soniq.claim(:'w', '{rated}', 3);
SELECT count(*) AS one_left_in_window FROM soniq.claim(:'w', '{rated}', 3);
SELECT count(*) AS window_full FROM soniq.claim(:'w', '{rated}', 3);
SELECT wake_at > now() + interval '59 minutes' AS edge_an_hour_on FROM soniq.queues WHERE name = 'rated';
SELECT started_in_window, runnable, waiting_for_limit FROM soniq.queue_limits WHERE queue = 'rated';
-- Finishing a job frees no start: a rate counts starts, not jobs running.
SELECT count(soniq.complete(id, :'w', attempts)) FROM soniq.jobs WHERE queue = 'rated' AND status = 'processing';
SELECT count(*) AS still_full FROM soniq.claim(:'w', '{rated}', 3);
-- The window slides: starts older than the period no longer count.
UPDATE soniq.queue_starts SET started_at = started_at - interval '1 hour' WHERE queue = 'rated';
SELECT count(*) AS four_more FROM soniq.claim(:'w', '{rated}', 10);

-- A window filled by one claim: its next edge is this claim's own start plus the period.
SELECT soniq.queue_configure('rated2', '{"rate_limit": 3, "rate_period": 3600}');
SELECT count(*) FROM soniq.enqueue_many('rated.job', array_fill('{}'::jsonb, ARRAY[5]), queue => 'rated2');
SELECT count(*) AS three FROM soniq.claim(:'w', '{rated2}', 10);
SELECT held_back, wake_at > now() + interval '59 minutes' AS edge_an_hour_on FROM soniq.queues WHERE name = 'rated2';
-- Configuring a queue clears its marks; the next claim sets them again.
SELECT soniq.queue_configure('rated2', '{"rate_limit": 3}') IS NOT NULL AS configured;
SELECT held_back, wake_at FROM soniq.queues WHERE name = 'rated2';
-- held_back(queues, task_names): runnable jobs of those tasks in limited queues.
SELECT soniq.held_back('{rated2}', '{rated.job}') AS rated_jobs_wait,
       soniq.held_back('{rated2}', '{other.task}') AS none_of_other_tasks,
       soniq.held_back('{mail}') AS mail_has_no_limit;

-- Fair share rotates through the default key too: claims of one take a, b, '', a, b, ''.
SELECT soniq.register_task('r.job', '{"concurrency_key": "k"}');
SELECT soniq.queue_configure('rotating', '{"fair_share": true}');
SELECT count(*) FROM soniq.enqueue_many('r.job',
    ARRAY['{"k": "a"}', '{"k": "a"}', '{"k": "b"}', '{"k": "b"}', '{}', '{}']::jsonb[], queue => 'rotating');
\set take_one 'SELECT coalesce(args ->> ''k'', ''(default)'') AS key FROM soniq.claim(:''w'', ''{rotating}'', 1);'
:take_one
:take_one
:take_one
:take_one
:take_one
:take_one

-- A per-key rate: the walk goes past keys at their limit, so each claim finds the next key.
SELECT soniq.queue_configure('per_key_rate', '{"rate_limit_per_key": 1, "rate_period": 3600}');
SELECT count(*) FROM soniq.enqueue_many('r.job',
    ARRAY['{"k": "k1"}', '{"k": "k1"}', '{"k": "k2"}', '{"k": "k2"}', '{"k": "k3"}', '{"k": "k3"}']::jsonb[],
    queue => 'per_key_rate');
\set take_one 'SELECT count(*) AS claimed, max(args ->> ''k'') AS key FROM soniq.claim(:''w'', ''{per_key_rate}'', 1);'
:take_one
:take_one
:take_one
:take_one

-- A replayed job takes its key again from its task (the dead letter keeps none).
SELECT soniq.enqueue('r.job', '{"k": "replayed"}', queue => 'rotating') AS keyed_job \gset
SELECT soniq.dead_letter_move(:'keyed_job');
SELECT soniq.replay(:'keyed_job') AS replayed \gset
SELECT concurrency_key FROM soniq.jobs WHERE id = :'replayed';

-- Priority aging: a job's priority counts one better per priority_aging it has been due, so a
-- long-waiting job of a worse priority overtakes newer better ones; off, priority alone orders.
SELECT soniq.queue_configure('aged', '{"priority_aging": 60}');
SELECT soniq.enqueue('aged.job', '{"n": "old, priority 50"}', queue => 'aged', priority => 50) AS old_job \gset
UPDATE soniq.jobs SET created_at = now() - interval '1 hour' WHERE id = :'old_job';  -- due for an hour: 50 - 60 = -10
SELECT count(*) FROM soniq.enqueue_many('aged.job', ARRAY['{"n": "new, priority 1"}'::jsonb, '{"n": "new, priority 1"}'],
                                        queue => 'aged', priority => 1);
SELECT soniq.enqueue('aged.job', '{"n": "new, priority 20"}', queue => 'aged', priority => 20) IS NOT NULL AS queued;
SELECT args ->> 'n' AS job FROM soniq.claim(:'w', '{aged}', 2);
SELECT soniq.queue_configure('aged', '{"priority_aging": null}');
SELECT args ->> 'n' AS job FROM soniq.claim(:'w', '{aged}', 1);
-- A retry due for an hour ages from when it was due, ahead of the new unscheduled jobs of its
-- priority that claim order puts first.
SELECT soniq.queue_configure('aged', '{"priority_aging": 60}') IS NOT NULL AS aging_again;
SELECT soniq.enqueue('aged.job', '{"n": "due an hour, priority 50"}', queue => 'aged', priority => 50,
                     scheduled_at => now() - interval '1 hour') IS NOT NULL AS queued;
SELECT soniq.enqueue('aged.job', '{"n": "new, priority 50"}', queue => 'aged', priority => 50) IS NOT NULL AS queued;
SELECT args ->> 'n' AS job FROM soniq.claim(:'w', '{aged}', 1);
SELECT soniq.queue_configure('aged', '{"priority_aging": 0}');
:error
SELECT soniq.queue_configure('aged', '{"priority_aging": 60, "fair_share": true}');
:error

-- A claim on a limited queue outside READ COMMITTED is refused (its snapshot would miss the
-- jobs other claims took).
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM soniq.claim(:'w', '{rated}', 1);
ROLLBACK;
:error
