-- Dependencies: a job waits for the jobs it depends on, is queued when they are all done,
-- is cancelled (or runs anyway) when one fails, and waits again when the dead one is replayed.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
-- The jobs of tasks starting with a prefix, with their dependency state (ids masked).
CREATE FUNCTION states(prefix text) RETURNS TABLE (task text, status text, waiting_on int, cancelled_by text, last_error text)
LANGUAGE sql AS $$
    SELECT j.task_name, j.status, j.waiting_on, c.task_name,
           regexp_replace(j.last_error, '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<id>', 'g')
      FROM soniq.jobs j LEFT JOIN soniq.job_info c ON c.id = j.cancelled_by
     WHERE j.task_name LIKE prefix || '%' ORDER BY j.task_name, j.created_at
$$;
-- Claim every due job of a task and complete it (returns how many).
CREATE FUNCTION run(task text, w uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(soniq.complete(c.id, w, c.attempt, jsonb_build_object('by', c.task_name)))
      FROM soniq.claim(w, NULL, 100, ARRAY[task]) c
$$;
SELECT soniq.register_worker() AS w \gset

-- Fan-in: c waits for a and b; each completion counts one off; the last queues it.
SELECT soniq.enqueue('fan.a') AS a \gset
SELECT soniq.enqueue('fan.b') AS b \gset
SELECT soniq.enqueue('fan.c', depends_on => ARRAY[:'a', :'b']::uuid[]) AS c \gset
SELECT * FROM states('fan.');
SELECT count(*) AS claimable FROM soniq.claim(:'w', NULL, 10, ARRAY['fan.c']);
SELECT run('fan.a', :'w') AS ran;
SELECT * FROM states('fan.');
SELECT run('fan.b', :'w') AS ran;
SELECT * FROM states('fan.');
SELECT depends_on = ARRAY[:'a', :'b']::uuid[] AS named_parents, status FROM soniq.get_job(:'c');
-- The handler reads its parents' results, in the order it named them, through its lease.
SELECT id = :'c' AS claimed_c, attempt FROM soniq.claim(:'w', NULL, 1, ARRAY['fan.c']);
SELECT parent_id = :'a' AS is_a, task_name, status, result FROM soniq.dependency_results(:'c', :'w', 1);
SELECT soniq.register_worker() AS other \gset
SELECT * FROM soniq.dependency_results(:'c', :'other', 1);
:error
SELECT * FROM soniq.dependency_results(:'c', :'w', 2);
:error

-- Both parents completed in one complete_many: counted off together.
SELECT soniq.enqueue('pair.a') AS a \gset
SELECT soniq.enqueue('pair.b') AS b \gset
SELECT soniq.enqueue('pair.c', depends_on => ARRAY[:'a', :'b']::uuid[]) AS c \gset
SELECT count(*) AS completed FROM soniq.complete_many(
    (SELECT array_agg(id ORDER BY id) FROM soniq.claim(:'w', NULL, 10, ARRAY['pair.a', 'pair.b'])), :'w', ARRAY[1, 1]);
SELECT * FROM states('pair.');

-- A parent already done counts as finished: the job is queued at once. A parent named twice counts once.
SELECT soniq.enqueue('done.child', depends_on => ARRAY[:'a', :'a', :'b']::uuid[]) AS d \gset
SELECT * FROM states('done.');
SELECT cardinality(depends_on) AS parents FROM soniq.jobs WHERE id = :'d';

-- A chain three levels deep: the root dies, the chain is cancelled level by level; a job that
-- runs anyway is queued instead, and its own dependents wait for it as usual.
SELECT soniq.enqueue('chain.1') AS r1 \gset
SELECT soniq.enqueue('chain.2', depends_on => ARRAY[:'r1']::uuid[]) AS r2 \gset
SELECT soniq.enqueue('chain.3', depends_on => ARRAY[:'r2']::uuid[]) AS r3 \gset
SELECT soniq.enqueue('chain.4', depends_on => ARRAY[:'r3']::uuid[]) AS r4 \gset
SELECT soniq.enqueue('chain.anyway', depends_on => ARRAY[:'r1']::uuid[], on_dependency_failure => 'run') AS any \gset
SELECT soniq.enqueue('chain.after_anyway', depends_on => ARRAY[:'any']::uuid[]) AS after \gset
SELECT id = :'r1' AS claimed_root FROM soniq.claim(:'w', NULL, 1, ARRAY['chain.1']);
SELECT soniq.fail(:'r1', :'w', 1, 'root broke', reason => 'permanent_failure');
SELECT * FROM states('chain.');

-- Replaying the dead root re-arms the chain: each level waits again, for the new root in
-- the old one's place.
SELECT soniq.replay(:'r1') AS new_root \gset
SELECT * FROM states('chain.');
SELECT depends_on = ARRAY[:'new_root']::uuid[] AS waits_for_the_replayed FROM soniq.jobs WHERE id = :'r2';
SELECT run('chain.1', :'w') AS ran;
SELECT run('chain.2', :'w') AS ran;
SELECT * FROM states('chain.');
-- A replay whose dependent has another failed parent leaves it cancelled, and says so.
SELECT soniq.enqueue('twice.a') AS a \gset
SELECT soniq.enqueue('twice.b') AS b \gset
SELECT soniq.enqueue('twice.child', depends_on => ARRAY[:'a', :'b']::uuid[]) AS c \gset
SELECT soniq.dead_letter_move(:'a');
SELECT soniq.dead_letter_move(:'b');
SELECT count(*) AS new_job FROM (SELECT soniq.replay(:'a')) r;
SELECT * FROM states('twice.');

-- A parent that is cancelled or dead when its dependent is enqueued: the dependent is
-- cancelled at once (or queued, when it runs anyway); a replay re-arms it.
SELECT soniq.enqueue('gone.cancelled') AS gc \gset
SELECT soniq.cancel_job(:'gc');
SELECT soniq.enqueue('gone.child_of_cancelled', depends_on => ARRAY[:'gc']::uuid[]) IS NOT NULL AS enqueued;
SELECT soniq.enqueue('gone.runs_anyway', depends_on => ARRAY[:'gc']::uuid[], on_dependency_failure => 'run') IS NOT NULL AS enqueued;
SELECT soniq.enqueue('gone.dead') AS gd \gset
SELECT soniq.dead_letter_move(:'gd');
SELECT soniq.enqueue('gone.child_of_dead', depends_on => ARRAY[:'gd']::uuid[]) IS NOT NULL AS enqueued;
SELECT * FROM states('gone.');
SELECT count(*) AS new_job FROM (SELECT soniq.replay(:'gd')) r;
SELECT * FROM states('gone.child_of_dead');

-- Cancelling a queued or waiting job, aborting a running one, deleting one, taking back a
-- running one whose cancellation was asked: each fails its dependents.
SELECT soniq.enqueue('cx.parent') AS p \gset
SELECT soniq.enqueue('cx.waiter', depends_on => ARRAY[:'p']::uuid[]) AS wt \gset
SELECT soniq.enqueue('cx.grandchild', depends_on => ARRAY[:'wt']::uuid[]) IS NOT NULL AS enqueued;
SELECT soniq.cancel_job(:'wt');
SELECT * FROM states('cx.');
SELECT soniq.enqueue('ab.parent') AS p \gset
SELECT soniq.enqueue('ab.child', depends_on => ARRAY[:'p']::uuid[]) IS NOT NULL AS enqueued;
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 1, ARRAY['ab.parent']);
SELECT soniq.abort(:'p', :'w', 1, 'stopped by hand');
SELECT * FROM states('ab.');
SELECT soniq.enqueue('del.parent') AS p \gset
SELECT soniq.enqueue('del.child', depends_on => ARRAY[:'p']::uuid[]) IS NOT NULL AS enqueued;
SELECT soniq.delete_job(:'p');
SELECT * FROM states('del.');
SELECT soniq.register_worker() AS doomed \gset
SELECT soniq.enqueue('tb.parent') AS p \gset
SELECT soniq.enqueue('tb.child', depends_on => ARRAY[:'p']::uuid[]) IS NOT NULL AS enqueued;
SELECT count(*) AS claimed FROM soniq.claim(:'doomed', NULL, 1, ARRAY['tb.parent']);
SELECT soniq.cancel_job(:'p') AS cancel_requested;
SELECT soniq.deregister_worker(:'doomed');
SELECT * FROM states('tb.');

-- A unique parent that yields to its queued duplicate hands its dependents to it.
SELECT soniq.enqueue('uq.parent', '{"n": 1}', unique_job => true) AS u1 \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', NULL, 1, ARRAY['uq.parent']);
SELECT soniq.enqueue('uq.child', depends_on => ARRAY[:'u1']::uuid[]) AS uc \gset
SELECT soniq.enqueue('uq.parent', '{"n": 1}', unique_job => true) AS u2 \gset
SELECT soniq.fail(:'u1', :'w', 1, 'retry me');
SELECT depends_on = ARRAY[:'u2']::uuid[] AS follows_the_duplicate FROM soniq.jobs WHERE id = :'uc';
SELECT run('uq.parent', :'w') AS ran;
SELECT * FROM states('uq.');

-- A whole graph in one enqueue_many: positions name earlier elements (a diamond here).
SELECT array_agg(id ORDER BY n) AS g FROM soniq.enqueue_many('[
    {"task_name": "dag.top"},
    {"task_name": "dag.left", "depends_on": [0]},
    {"task_name": "dag.right", "depends_on": [0]},
    {"task_name": "dag.bottom", "depends_on": [1, 2]},
    {"task_name": "dag.outside", "depends_on": null}
]') WITH ORDINALITY AS e(id, n) \gset
SELECT * FROM states('dag.');
SELECT run('dag.top', :'w') AS ran;
SELECT run('dag.left', :'w') AS ran;
SELECT * FROM states('dag.');
SELECT run('dag.right', :'w') AS ran;
SELECT * FROM states('dag.bottom');
-- Ids from earlier calls and positions mix; a dead parent in the batch cancels its chain.
SELECT count(*) AS enqueued FROM soniq.enqueue_many(format('[
    {"task_name": "mix.a", "depends_on": ["%s"]},
    {"task_name": "mix.b", "depends_on": [0]},
    {"task_name": "mix.c", "depends_on": [1], "on_dependency_failure": "run"}
]', :'gd')::jsonb);
SELECT * FROM states('mix.');

-- Waiting jobs in the counts and the lists.
SELECT waiting, queued FROM soniq.queue_stats();
SELECT queue, waiting FROM soniq.queue_overview;
SELECT count(*) AS listed FROM soniq.list_jobs(status => 'waiting');
SELECT status FROM soniq.job_status(:'c');

-- Pruning keeps a done job while a job that depends on it has not run; then it goes.
SELECT soniq.register_task('keep.parent', '{"result_ttl": 0.001}');
SELECT soniq.enqueue('keep.parent') AS kp \gset
SELECT soniq.enqueue('keep.slow') AS ks \gset
SELECT soniq.enqueue('keep.child', depends_on => ARRAY[:'kp', :'ks']::uuid[]) AS kc \gset
SELECT run('keep.parent', :'w') AS ran;
SELECT pg_sleep(0.01);
SELECT soniq.prune_jobs() >= 0 AS pruned;
SELECT count(*) AS parent_kept FROM soniq.jobs WHERE id = :'kp';
SELECT run('keep.slow', :'w') AS ran;
SELECT soniq.prune_jobs() >= 0 AS pruned;
SELECT count(*) AS parent_kept_while_child_queued FROM soniq.jobs WHERE id = :'kp';
SELECT run('keep.child', :'w') AS ran;
SELECT soniq.prune_jobs() >= 0 AS pruned;
SELECT count(*) AS parent_kept_after_child_ran FROM soniq.jobs WHERE id = :'kp';
-- A parent already pruned (result TTL 0: deleted when done) reads as 'pruned'.
SELECT soniq.register_task('flash.parent', '{"result_ttl": 0}');
SELECT soniq.enqueue('flash.parent') AS fp \gset
SELECT soniq.enqueue('flash.child', depends_on => ARRAY[:'fp']::uuid[]) AS fc \gset
SELECT run('flash.parent', :'w') AS ran;
SELECT id = :'fc' AS claimed_child FROM soniq.claim(:'w', NULL, 1, ARRAY['flash.child']);
SELECT status, result FROM soniq.dependency_results(:'fc', :'w', 1);

-- Bad input: a clear error, and nothing written.
SELECT count(*) AS jobs_before FROM soniq.jobs \gset
SELECT soniq.enqueue('bad', depends_on => '{}');
:error
SELECT soniq.enqueue('bad', depends_on => ARRAY[NULL]::uuid[]);
:error
SELECT soniq.enqueue('bad', depends_on => ARRAY(SELECT soniq.uuid_v7() FROM generate_series(1, 1001)));
:error
SELECT soniq.enqueue('bad', depends_on => ARRAY['00000000-0000-0000-0000-000000000000']::uuid[]);
:error
SELECT soniq.enqueue('bad', depends_on => ARRAY[:'a']::uuid[], on_dependency_failure => 'maybe');
:error
SELECT soniq.enqueue('bad', on_dependency_failure => 'run');
:error
SELECT soniq.enqueue('bad', depends_on => ARRAY[:'a']::uuid[], unique_job => true);
:error
SELECT soniq.enqueue('bad', depends_on => ARRAY[:'a']::uuid[], dedup_key => 'k');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": [1]}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": [2]}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": [-1]}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": [0.5]}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0", "depends_on": 0}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0", "depends_on": [true]}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0", "depends_on": ["not-an-id"]}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0", "depends_on": []}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "on_dependency_failure": "run"}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": [0], "on_dependency_failure": "skip"}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": [0], "unique": true}]');
:error
SELECT soniq.enqueue_many('[{"task_name": "bad.0"}, {"task_name": "bad.1", "depends_on": ["00000000-0000-0000-0000-000000000000"]}]');
:error
SELECT count(*) - :jobs_before AS jobs_written FROM soniq.jobs;
