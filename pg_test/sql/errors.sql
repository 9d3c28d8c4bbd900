-- Bad input: every entry point refuses it with a clear message and a standard SQLSTATE,
-- and the database is left exactly as it was (checked with a fingerprint of every table).
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- An expected error shows its SQLSTATE and message (ids masked, they differ per run).
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
CREATE FUNCTION pg_temp.fingerprint() RETURNS text LANGUAGE sql AS $$
    SELECT md5(concat_ws('|',
        (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM soniq.jobs t),
        (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM soniq.workers t),
        (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM soniq.dead_letter_jobs t),
        (SELECT string_agg(t::text, ',' ORDER BY t.task_name) FROM soniq.tasks t),
        (SELECT string_agg(t::text, ',' ORDER BY t.name) FROM soniq.queues t),
        (SELECT string_agg(t::text, ',' ORDER BY t.name) FROM soniq.schedules t),
        (SELECT string_agg(t::text, ',' ORDER BY t.task_name, t.queue) FROM soniq.unserved t),
        (SELECT string_agg(t::text, ',' ORDER BY t.subsystem) FROM soniq.control_plane t)))
$$;
-- Some state to protect: a task, a worker holding a job, a queued job, a dead job.
SELECT soniq.register_task('err.task', '{"retries": 0}');
SELECT soniq.register_worker() AS w \gset
SELECT soniq.enqueue('err.task') AS held \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w');
SELECT soniq.enqueue('err.task', '{"queued": true}') AS queued \gset
SELECT soniq.enqueue('err.dead') AS dead \gset
SELECT soniq.dead_letter_move(:'dead');
SELECT soniq.uuid_v7() AS unknown \gset
CREATE TEMP TABLE fp AS SELECT pg_temp.fingerprint() AS v;
\set unchanged 'SELECT v = pg_temp.fingerprint() AS unchanged FROM fp;'

-- enqueue: names
SELECT soniq.enqueue(NULL);
:error
:unchanged
SELECT soniq.enqueue('');
:error
:unchanged
SELECT soniq.enqueue('send email');
:error
:unchanged
SELECT soniq.enqueue('1st.task');
:error
:unchanged
SELECT soniq.enqueue(repeat('t', 201));
:error
:unchanged
SELECT soniq.enqueue('x''); DROP TABLE soniq.jobs; --');
:error
:unchanged
SELECT soniq.enqueue('ok.task', queue => '');
:error
:unchanged
SELECT soniq.enqueue('ok.task', queue => 'q''; DELETE FROM soniq.jobs; --');
:error
:unchanged
-- enqueue: args
SELECT soniq.enqueue('ok.task', NULL);
:error
:unchanged
SELECT soniq.enqueue('ok.task', '[1, 2]');
:error
:unchanged
SELECT soniq.enqueue('ok.task', '"text"');
:error
:unchanged
SELECT soniq.enqueue('ok.task', 'null');
:error
:unchanged
SELECT soniq.enqueue('ok.task', jsonb_build_object('blob', repeat('x', 2000000)));
:error
:unchanged
-- enqueue: numbers and intervals
SELECT soniq.enqueue('ok.task', priority => 0);
:error
:unchanged
SELECT soniq.enqueue('ok.task', priority => 1001);
:error
:unchanged
SELECT soniq.enqueue('ok.task', retries => -1);
:error
:unchanged
SELECT soniq.enqueue('ok.task', retries => 1001);
:error
:unchanged
SELECT soniq.enqueue('ok.task', timeout => '-5 seconds');
:error
:unchanged
SELECT soniq.enqueue('ok.task', dedup_key => '');
:error
:unchanged
-- Every interval has a range whose sums cannot overflow (300000 years once stopped rescue).
SELECT soniq.enqueue('ok.task', timeout => '300000 years');
:error
:unchanged
SELECT soniq.enqueue('ok.task', timeout => '31 days');
:error
:unchanged
SELECT soniq.enqueue('ok.task', scheduled_at => 'infinity');
:error
:unchanged
SELECT soniq.enqueue('ok.task', scheduled_at => '-infinity');
:error
:unchanged
-- Sizes: a dedup key long enough to break the index, a 50 MiB producer id.
SELECT soniq.enqueue('ok.task', dedup_key => repeat('k', 513));
:error
:unchanged
SELECT soniq.enqueue('ok.task', dedup_key => repeat('k', 3000));
:error
:unchanged
SELECT soniq.enqueue('ok.task', producer_id => repeat('p', 513));
:error
:unchanged
SELECT soniq.enqueue('ok.task', producer_id => repeat('p', 50 * 1024 * 1024));
:error
:unchanged

-- register_task
SELECT soniq.register_task('bad name', '{}');
:error
:unchanged
SELECT soniq.register_task('ok.task', NULL);
:error
:unchanged
SELECT soniq.register_task('ok.task', '[]');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"retry": 5}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"priority": "high"}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"priority": 0}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"retry_delay": -1}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"retry_delay": [1, 2], "retry_backoff": true}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"queue": "no spaces"}');
:error
:unchanged
-- 1e300 seconds once overflowed into a negative interval; a 300,000-entry list was copied into every job.
SELECT soniq.register_task('ok.task', '{"timeout": 1e300}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"timeout": 2592001}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"result_ttl": 1e300}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"retry_delay": 1e300}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"retry_max_delay": 1e12}');
:error
:unchanged
SELECT soniq.register_task('ok.task', jsonb_build_object('retry_delay', (SELECT jsonb_agg(1) FROM generate_series(1, 101))));
:error
:unchanged
SELECT soniq.register_task('ok.task', jsonb_build_object('retry_delay', (SELECT jsonb_agg(1) FROM generate_series(1, 300000))));
:error
:unchanged

-- enqueue_many
SELECT soniq.enqueue_many('{"task_name": "ok.task"}'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task"}, 7]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "prio": 1}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"args": {}}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "priority": "urgent"}]'::jsonb);
:error
:unchanged
-- Numbers that do not fit are 22023 like any other bad value, never a cast's own code.
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "priority": 1.5}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "retries": 1e20}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "timeout": "NaN"}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "timeout": 9.2e12}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "timeout": -1}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "unique": "yes"}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('[{"task_name": "ok.task", "scheduled_at": "next tuesday"}]'::jsonb);
:error
:unchanged
SELECT soniq.enqueue_many('ok.task', ARRAY['{}']::jsonb[], timeout => '300000 years');
:error
:unchanged
SELECT soniq.enqueue_many('ok.task', NULL::jsonb[]);
:error
:unchanged
SELECT soniq.enqueue_many('ok.task', ARRAY['{}', '[]']::jsonb[]);
:error
:unchanged

-- workers
SELECT soniq.register_worker(concurrency => 0);
:error
:unchanged
SELECT soniq.register_worker(queues => '{}');
:error
:unchanged
SELECT soniq.register_worker(queues => '{"bad queue"}');
:error
:unchanged
SELECT soniq.register_worker(metadata => '[]');
:error
:unchanged
SELECT soniq.heartbeat(NULL);
:error
:unchanged
SELECT soniq.heartbeat(:'unknown');
:error
:unchanged
SELECT soniq.deregister_worker(:'unknown');
:error
:unchanged
SELECT soniq.recover_stale_workers(NULL);
:error
:unchanged
SELECT soniq.recover_stale_workers('0');
:error
:unchanged
SELECT soniq.recover_stale_workers('-1 minute');
:error
:unchanged

-- claim
SELECT * FROM soniq.claim(NULL);
:error
:unchanged
SELECT * FROM soniq.claim(:'unknown');
:error
:unchanged
SELECT * FROM soniq.claim(:'w', batch_size => 0);
:error
:unchanged
SELECT * FROM soniq.claim(:'w', batch_size => 10001);
:error
:unchanged
SELECT * FROM soniq.claim(:'w', queues => '{}');
:error
:unchanged
SELECT * FROM soniq.claim(:'w', task_names => '{NULL}');
:error
:unchanged

-- outcomes
SELECT soniq.complete(:'unknown', :'w', 1);
:error
:unchanged
SELECT soniq.complete(:'held', :'unknown', 1);
:error
:unchanged
SELECT soniq.complete(:'held', :'w', 2);
:error
:unchanged
SELECT soniq.complete(:'held', :'w', NULL);
:error
:unchanged
SELECT soniq.complete(:'queued', :'w', 0);
:error
:unchanged
SELECT soniq.complete_many(ARRAY[:'held']::uuid[], :'w', '{1,2}');
:error
:unchanged
SELECT soniq.complete_many(ARRAY[NULL]::uuid[], :'w', '{1}');
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, NULL);
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, 'e', reason => 'max_retries_exceeded');
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, 'e', reason => 'nonsense');
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, 'e', retry_in => '-1 second');
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, 'e', retry_in => '366 days');
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, repeat('e', 65537));
:error
:unchanged
SELECT * FROM soniq.fail_many(ARRAY[:'held']::uuid[], :'w', '{1}', ARRAY[repeat('e', 65537)]);
:error
:unchanged
SELECT soniq.complete(:'held', :'w', 1, jsonb_build_object('big', repeat('r', 1048577)));
:error
:unchanged
SELECT soniq.complete_many(ARRAY[:'held']::uuid[], :'w', '{1}', ARRAY[jsonb_build_object('big', repeat('r', 1048577))]);
:error
:unchanged
SELECT soniq.fail(:'held', :'unknown', 1, 'e');
:error
:unchanged
SELECT * FROM soniq.fail_many(ARRAY[:'held']::uuid[], :'w', '{1}', '{a,b}');
:error
:unchanged
SELECT soniq.snooze(:'held', :'w', 1, NULL);
:error
:unchanged
SELECT soniq.snooze(:'held', :'w', 1, '-1 minute');
:error
:unchanged
SELECT soniq.snooze(:'held', :'w', 1, '100 years');
:error
:unchanged
SELECT soniq.snooze(:'held', :'w', 1, '31 days');
:error
:unchanged
SELECT soniq.snooze(:'held', :'w', 1, '1 minute', repeat('r', 65537));
:error
:unchanged
SELECT soniq.abort(:'held', :'w', 1, repeat('r', 65537));
:error
:unchanged
SELECT soniq.heartbeat(:'w', '{}', '2 days');
:error
:unchanged
SELECT soniq.abort(:'held', :'unknown', 1);
:error
:unchanged

-- managing jobs
SELECT soniq.cancel_job(NULL);
:error
:unchanged
SELECT soniq.cancel_job(:'unknown');
:error
:unchanged
SELECT soniq.delete_job(:'unknown');
:error
:unchanged
SELECT * FROM soniq.list_jobs(status => 'failed');
:error
:unchanged
SELECT * FROM soniq.list_jobs(row_limit => 0);
:error
:unchanged
SELECT * FROM soniq.list_jobs(row_offset => -1);
:error
:unchanged
SELECT soniq.pause_queue('');
:error
:unchanged
SELECT soniq.resume_queue(NULL);
:error
:unchanged

-- dead letter
SELECT soniq.replay(:'unknown');
:error
:unchanged
SELECT soniq.replay(:'dead', priority => 0);
:error
:unchanged
SELECT soniq.replay(:'dead', max_attempts => 0);
:error
:unchanged
SELECT soniq.replay(:'dead', queue => 'bad queue');
:error
:unchanged
SELECT soniq.dead_letter_move(:'held');
:error
:unchanged
SELECT soniq.dead_letter_move(:'unknown');
:error
:unchanged
SELECT soniq.dead_letter_delete(:'unknown');
:error
:unchanged
SELECT soniq.dead_letter_purge(NULL);
:error
:unchanged
SELECT soniq.dead_letter_purge('-1 day');
:error
:unchanged
SELECT * FROM soniq.dead_letter_list(row_limit => 100000);
:error
:unchanged
SELECT soniq.dead_letter_tag(:'dead', NULL);
:error
:unchanged
SELECT * FROM soniq.dead_letter_list(tags => '{}');
:error
:unchanged
SELECT soniq.dead_letter_stats('-1 day');
:error
:unchanged
SELECT soniq.dead_letter_tag(:'dead', '{}');
:error
:unchanged
SELECT soniq.dead_letter_tag(:'dead', '{""}');
:error
:unchanged
SELECT soniq.dead_letter_tag(:'unknown', '{x}');
:error
:unchanged
SELECT soniq.replay(:'dead', reset_attempts => NULL);
:error
:unchanged
SELECT soniq.replay(:'dead', unless_replayed => NULL);
:error
:unchanged
SELECT soniq.dead_letter_tag(:'dead', ARRAY[repeat('t', 201)]);
:error
:unchanged
SELECT soniq.dead_letter_tag(:'dead', ARRAY(SELECT 'tag' || n FROM generate_series(1, 51) n));
:error
:unchanged
SELECT * FROM soniq.replay_many(NULL);
:error
:unchanged
SELECT * FROM soniq.replay_many(ARRAY[:'dead', :'unknown']::uuid[]);
:error
:unchanged

-- SQL injection attempts in text arguments are data: refused as malformed names, never run.
SELECT soniq.enqueue('x''); DROP TABLE soniq.jobs; --');
:error
:unchanged
SELECT * FROM soniq.enqueue_many('[{"task_name": "x\"; DROP TABLE soniq.jobs; --"}]');
:error
:unchanged
SELECT soniq.register_task('t; DROP TABLE soniq.jobs', '{}');
:error
:unchanged
SELECT soniq.register_task('ok.task', '{"queue": "q''; DROP TABLE soniq.jobs; --"}');
:error
:unchanged
SELECT * FROM soniq.claim(:'w', queues => ARRAY['q''); DELETE FROM soniq.jobs; --']);
:error
:unchanged
SELECT * FROM soniq.claim(:'w', task_names => ARRAY['t'' OR ''1''=''1']);
:error
:unchanged
SELECT * FROM soniq.list_jobs(status => 'queued'' OR 1=1 --');
:error
:unchanged
SELECT * FROM soniq.list_jobs(queue => 'q; DELETE FROM soniq.jobs');
:error
:unchanged
SELECT soniq.pause_queue('q; DROP SCHEMA soniq CASCADE');
:error
:unchanged
SELECT soniq.fail(:'held', :'w', 1, 'boom', reason => 'timeout''; DROP TABLE soniq.jobs; --');
:error
:unchanged
SELECT soniq.schedule_add('s''; DROP TABLE soniq.schedules; --', every => '1 hour');
:error
:unchanged
SELECT soniq.schedule_add('ok.sched', every => '400 days');
:error
:unchanged
SELECT soniq.schedule_add('ok.sched', every => '1 hour', timeout => '1000 years');
:error
:unchanged
SELECT soniq.rescue_jobs(lease_grace => '8 days');
:error
:unchanged
SELECT soniq.recover_stale_workers('31 days');
:error
:unchanged
SELECT soniq.schedule_add('ok.sched', cron => '* * * * *; DROP TABLE soniq.jobs');
:error
:unchanged
SELECT soniq.schedule_add('ok.sched', every => '1 hour', time_zone => 'UTC''; DROP TABLE soniq.jobs; --');
:error
:unchanged
SELECT soniq.cron_next('0 0 * * *''); DROP TABLE soniq.jobs; --', now());
:error
:unchanged
SELECT count(*) AS schedules FROM soniq.schedules;

-- The direct table writes a bug could make are refused by constraints as well.
INSERT INTO soniq.jobs (task_name, args) VALUES ('direct', '[]');
:error
INSERT INTO soniq.jobs (task_name, priority) VALUES ('direct', 0);
:error
INSERT INTO soniq.jobs (task_name, attempts, max_attempts) VALUES ('direct', 4, 4);
:error
:unchanged

-- Free text (dedup keys, producer ids, errors, notes) is stored as given, never run.
SELECT soniq.enqueue('ok.task', dedup_key => 'k''); DROP TABLE soniq.jobs; --',
                     producer_id => '"; DELETE FROM soniq.jobs; --') AS injected \gset
SELECT dedup_key, producer_id FROM soniq.jobs WHERE id = :'injected';
SELECT soniq.dead_letter_move(:'injected', note => '''); TRUNCATE soniq.dead_letter_jobs; --');
SELECT dead_letter_reason, last_error FROM soniq.dead_letter_jobs WHERE id = :'injected';
SELECT count(*) AS jobs, (SELECT count(*) FROM soniq.dead_letter_jobs) AS dead FROM soniq.jobs;
