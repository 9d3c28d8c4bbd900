-- Dead letter: list, replay, manual move, delete, purge.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
SELECT soniq.register_worker() AS w \gset
SELECT soniq.register_task('dl.charge', '{"queue": "payments", "priority": 5, "retries": 0, "retry_delay": 30}');
SELECT soniq.enqueue('dl.charge', '{"order_id": 1}') AS a \gset
SELECT soniq.enqueue('dl.charge', '{"order_id": 2}') AS b \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', batch_size => 2);
SELECT soniq.fail(:'a', :'w', 1, 'card declined');
SELECT soniq.fail(:'b', :'w', 1, 'bad args', reason => 'invalid_arguments');

SELECT args, queue, priority, attempts, max_attempts, last_error, dead_letter_reason, resurrection_count,
       original_created_at <= moved_to_dead_letter_at AS ordered_times
  FROM soniq.dead_letter_list(task_name => 'dl.charge') ORDER BY args->>'order_id';
SELECT count(*) AS by_reason FROM soniq.dead_letter_list(reason => 'invalid_arguments');
SELECT count(*) AS by_queue FROM soniq.dead_letter_list(queue => 'payments', row_limit => 1);

-- replay mints a fresh job; the dead row stays with its resurrection count.
SELECT soniq.replay(:'a') AS r1 \gset
SELECT id <> :'a' AS new_id, task_name, args, status, attempts, max_attempts, queue, priority, retry_policy
  FROM soniq.jobs WHERE id = :'r1';
SELECT resurrection_count, last_resurrection_at IS NOT NULL AS stamped FROM soniq.dead_letter_jobs WHERE id = :'a';
SELECT soniq.replay(:'a', queue => 'retry_lane', priority => 1, max_attempts => 3) AS r2 \gset
SELECT queue, priority, max_attempts FROM soniq.jobs WHERE id = :'r2';
SELECT resurrection_count FROM soniq.dead_letter_jobs WHERE id = :'a';
-- the replayed job runs like any other
SELECT task_name, attempt FROM soniq.claim(:'w', queues => '{payments}');

-- dead_letter_move: an operator buries a queued or cancelled job (manual_move).
SELECT soniq.enqueue('dl.stuck') AS s \gset
SELECT soniq.dead_letter_move(:'s', 'poison message');
SELECT dead_letter_reason, last_error FROM soniq.dead_letter_jobs WHERE id = :'s';
SELECT soniq.enqueue('dl.running') AS run \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dl.running}');
SELECT soniq.dead_letter_move(:'run');
:error

-- Tags, filters by time, tags and replay, replay keeping attempts, replay_many, stats.
SELECT soniq.dead_letter_tag(:'b', '{billing,urgent}') AS tags;
SELECT soniq.dead_letter_tag(:'b', '{urgent,checked}') AS tags_merged;
SELECT count(*) AS tagged FROM soniq.dead_letter_list(tags => '{urgent}');
SELECT count(*) AS tagged_both FROM soniq.dead_letter_list(tags => '{urgent,billing}');
SELECT count(*) AS replayed_ones FROM soniq.dead_letter_list(replayed => true);
SELECT count(*) AS never_replayed FROM soniq.dead_letter_list(replayed => false);
SELECT count(*) AS died_since_an_hour FROM soniq.dead_letter_list(moved_after => now() - interval '1 hour');
SELECT count(*) AS died_before_an_hour FROM soniq.dead_letter_list(moved_before => now() - interval '1 hour');
SELECT soniq.replay(:'b', reset_attempts => false);
:error
SELECT soniq.replay(:'b', reset_attempts => false, max_attempts => 3) AS kept \gset
SELECT attempts, max_attempts FROM soniq.jobs WHERE id = :'kept';
SELECT count(*) AS replayed_together FROM soniq.replay_many(ARRAY[:'a', :'b']::uuid[], queue => 'bulk_replay');
SELECT count(*) AS in_bulk_queue FROM soniq.jobs WHERE queue = 'bulk_replay';
SELECT stats - 'by_day' - 'oldest_age_seconds' AS stats,
       (stats->'by_day') = jsonb_build_object(current_date::text, 3) AS by_day_is_today,
       (stats->>'oldest_age_seconds')::numeric < 60 AS recent
  FROM soniq.dead_letter_stats() stats;
SELECT soniq.dead_letter_stats('1 hour')->'total' AS total_last_hour;

-- delete and purge.
SELECT soniq.dead_letter_delete(:'s');
SELECT count(*) AS deleted FROM soniq.dead_letter_jobs WHERE id = :'s';
SELECT soniq.dead_letter_purge('1 day') AS purged_old;
UPDATE soniq.dead_letter_jobs SET moved_to_dead_letter_at = now() - interval '2 days' WHERE id = :'b';  -- test shortcut: age it
SELECT soniq.dead_letter_purge('1 day') AS purged_old;
SELECT count(*) AS left FROM soniq.dead_letter_jobs;
SELECT soniq.dead_letter_purge('0') AS purged_all;

-- An idempotent replay: with unless_replayed a dead job replayed before is left alone (NULL),
-- so replaying the same selection twice makes each job once.
SELECT soniq.register_task('dl.again', '{"retries": 0}');
SELECT soniq.enqueue('dl.again', '{"n": 1}') AS x \gset
SELECT soniq.enqueue('dl.again', '{"n": 2}') AS y \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{dl.again}', batch_size => 2);
SELECT count(*) AS dead FROM soniq.fail_many(ARRAY[:'x', :'y']::uuid[], :'w', '{1,1}', '{e,e}');
SELECT soniq.replay(:'x', unless_replayed => true) IS NOT NULL AS first_replay_made_a_job;
SELECT soniq.replay(:'x', unless_replayed => true) IS NULL AS second_replay_made_none;
SELECT dead_job_id = :'x' AS is_x, job_id IS NOT NULL AS made_a_job
  FROM soniq.replay_many(ARRAY[:'x', :'y']::uuid[], unless_replayed => true) ORDER BY 1;
SELECT count(*) AS jobs FROM soniq.jobs WHERE task_name = 'dl.again';
SELECT resurrection_count FROM soniq.dead_letter_jobs WHERE id IN (:'x', :'y') ORDER BY id;
-- Without it, replay mints another job each time (as before).
SELECT soniq.replay(:'x') IS NOT NULL AS replayed_again;
SELECT count(*) AS jobs FROM soniq.jobs WHERE task_name = 'dl.again';
