-- Roles: soniq_producer, soniq_worker, soniq_admin and soniq_viewer, each proven both ways: what it may do,
-- and what it is refused (42501) with nothing written.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set VERBOSITY sqlstate
\set error 'SELECT :''LAST_ERROR_SQLSTATE'' AS sqlstate, regexp_replace(:''LAST_ERROR_MESSAGE'', ''[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}'', ''<id>'', ''g'') AS error;'
\set rows 'SELECT (SELECT count(*) FROM soniq.jobs) AS jobs, (SELECT count(*) FROM soniq.workers) AS workers, (SELECT count(*) FROM soniq.dead_letter_jobs) AS dead, (SELECT count(*) FROM soniq.schedules) AS schedules;'

SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'soniq\_%' ORDER BY 1;
SELECT r.rolname AS role, g.rolname AS member_of
  FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
 WHERE r.rolname LIKE 'soniq\_%' ORDER BY 1;
-- Every function that runs with its owner's rights pins search_path; no helper is anyone's.
SELECT count(*) FILTER (WHERE prosecdef) AS definer,
       count(*) FILTER (WHERE prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (proconfig)) AS pinned
  FROM pg_proc WHERE pronamespace = 'soniq'::regnamespace;
SELECT proname AS helper_granted FROM pg_proc
 WHERE pronamespace = 'soniq'::regnamespace AND proname LIKE '\_%'
   AND (has_function_privilege('soniq_admin', oid, 'EXECUTE') OR proacl IS NULL);
-- What each role may call.
SELECT r AS role, string_agg(p.proname, ' ' ORDER BY p.proname) AS may_call
  FROM unnest(ARRAY['soniq_producer', 'soniq_worker', 'soniq_viewer']) r,
       (SELECT DISTINCT ON (proname) oid, proname FROM pg_proc WHERE pronamespace = 'soniq'::regnamespace) p
 WHERE has_function_privilege(r, p.oid, 'EXECUTE') GROUP BY r ORDER BY r;

-- soniq_producer: enqueues, reads status by id.
SET ROLE soniq_worker;
SELECT soniq.register_task('roles.task', '{"retries": 1}');
SET ROLE soniq_producer;
SELECT soniq.enqueue('roles.task', '{"secret": "s3cret"}') AS job \gset
SELECT soniq.enqueue('roles.other', '{"card": "4111"}') AS other \gset
SELECT count(*) AS bulk FROM soniq.enqueue_many('roles.bulk', ARRAY['{}'::jsonb, '{}']);
SELECT task_name, status, attempts, max_attempts FROM soniq.job_status(:'job');
-- refused: claiming, reading args, writing tables, anything else
SELECT * FROM soniq.claim('00000000-0000-7000-8000-000000000000');
:error
SELECT args FROM soniq.jobs WHERE id = :'other';
:error
SELECT args FROM soniq.get_job(:'other');
:error
SELECT args FROM soniq.job_info;
:error
INSERT INTO soniq.jobs (task_name) VALUES ('roles.direct');
:error
UPDATE soniq.jobs SET status = 'done';
:error
DELETE FROM soniq.jobs;
:error
SELECT soniq.register_worker();
:error
-- A producer does not publish task options: a worker publishes its own handlers' (a producer
-- could otherwise reroute, deduplicate or strip the retries of another team's jobs).
SELECT soniq.register_task('roles.task', '{"queue": "blackhole", "retries": 0, "unique": true, "result_ttl": 0}');
:error
SELECT soniq.cancel_job(:'other');
:error
SELECT soniq.schedule_add('roles.every', every => '1 hour');
:error
SELECT soniq._bury(ARRAY[:'other'::uuid], 'discarded', 'x');
:error
SELECT soniq._wake('default');
:error
-- A caller's search_path cannot stand in for pg_catalog inside the API.
RESET ROLE;
CREATE SCHEMA roles_evil;
CREATE FUNCTION roles_evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'object' $$;
GRANT USAGE ON SCHEMA roles_evil TO soniq_producer;
SET ROLE soniq_producer;
SET search_path = roles_evil, pg_catalog;
SELECT soniq.enqueue('roles.task', '[1]');
:error
RESET search_path;
RESET ROLE;
DROP SCHEMA roles_evil CASCADE;
:rows

-- soniq_worker: registers, claims, heartbeats, completes, fails, snoozes, aborts; enqueues.
SET ROLE soniq_worker;
SELECT soniq.register_worker('host', 1, concurrency => 4) AS w \gset
SELECT task_name, args, attempt FROM soniq.claim(:'w', task_names => '{roles.task,roles.other}', batch_size => 2) ORDER BY 1;
SELECT count(*) AS cancellations FROM soniq.heartbeat(:'w');
SELECT soniq.complete(:'job', :'w', 1, '{"ok": true}');
SELECT soniq.fail(:'other', :'w', 1, 'boom') AS state;
SELECT attempt FROM soniq.claim(:'w', task_names => '{roles.other}');
SELECT soniq.snooze(:'other', :'w', 2, '0 seconds');
SELECT attempt FROM soniq.claim(:'w', task_names => '{roles.other}');
SELECT soniq.abort(:'other', :'w', 2, 'gave up');
SELECT soniq.enqueue('roles.followup') IS NOT NULL AS enqueued_follow_up;
SELECT soniq.held_back(NULL) AS a_limit_holds_jobs_back;
-- refused: the dead letter, schedules, cancellation, flow control, maintenance, tables
SELECT * FROM soniq.dead_letter_list();
:error
SELECT soniq.replay(:'other');
:error
SELECT soniq.schedule_add('roles.every', every => '1 hour');
:error
SELECT soniq.cancel_job(:'job');
:error
SELECT soniq.pause_queue('default');
:error
SELECT soniq.queue_configure('default', '{"max_running": 1}');
:error
SELECT * FROM soniq.queue_limits;
:error
SELECT soniq.rescue_jobs();
:error
SELECT soniq.prune_jobs();
:error
SELECT count(*) FROM soniq.workers;
:error
UPDATE soniq.jobs SET attempts = 0;
:error
SELECT soniq.deregister_worker(:'w');
RESET ROLE;
:rows

-- soniq_admin: everything through the API, and reads every table and view.
SET ROLE soniq_admin;
SELECT status FROM soniq.get_job(:'job');
SELECT count(*) AS jobs FROM soniq.jobs;
SELECT soniq.enqueue('roles.doomed') AS doomed \gset
SELECT soniq.dead_letter_move(:'doomed');
SELECT task_name, dead_letter_reason FROM soniq.dead_letter_list();
SELECT soniq.replay(:'doomed') IS NOT NULL AS replayed;
SELECT name FROM soniq.schedule_add('roles.every', every => '1 hour');
SELECT soniq.pause_queue('roles');
SELECT soniq.cancel_job(:'other');
SELECT soniq.queue_configure('roles_limited', '{"max_running": 2}') AS settings;
SELECT queue, settings, running, waiting_for_limit FROM soniq.queue_limits;
SELECT queue, paused, limits FROM soniq.queue_overview WHERE queue LIKE 'roles%' ORDER BY 1;
SELECT count(*) AS subsystems FROM soniq.health;
SELECT soniq.rescue_jobs() AS rescued, soniq.prune_jobs() AS pruned;
-- refused: writing tables directly, the internal helpers
DELETE FROM soniq.jobs;
:error
INSERT INTO soniq.schedules (name, task_name, every) VALUES ('roles.direct', 'x', '1 hour');
:error
SELECT soniq._bury(ARRAY[:'job'::uuid], 'discarded', 'x');
:error
RESET ROLE;
:rows

-- soniq_viewer: reads every table and view and the read functions; writes nothing.
SET ROLE soniq_viewer;
SELECT status FROM soniq.get_job(:'job');
SELECT count(*) AS listed FROM soniq.list_jobs();
SELECT total, done, cancelled FROM soniq.queue_stats();
SELECT task_name, dead_letter_reason FROM soniq.dead_letter_list();
SELECT task_name FROM soniq.dead_letter_get(:'doomed');
SELECT soniq.dead_letter_stats() ->> 'total' AS dead_total;
SELECT name, enabled FROM soniq.schedule_list();
SELECT task_name FROM soniq.schedule_get('roles.every');
SELECT count(*) AS subsystems FROM soniq.health;
SELECT queue, paused, limits FROM soniq.queue_overview WHERE queue LIKE 'roles%' ORDER BY 1;
SELECT queue, settings, running, waiting_for_limit FROM soniq.queue_limits;
SELECT count(*) AS jobs, count(args) AS with_args FROM soniq.jobs;
SELECT count(*) AS workers FROM soniq.workers;
-- refused: every write, through the API or not, and row locks
SELECT soniq.enqueue('roles.viewer');
:error
SELECT soniq.register_worker();
:error
SELECT soniq.replay(:'doomed');
:error
SELECT soniq.dead_letter_tag(:'doomed', ARRAY['seen']);
:error
SELECT soniq.dead_letter_delete(:'doomed');
:error
SELECT soniq.pause_queue('default');
:error
SELECT soniq.resume_queue('roles');
:error
SELECT soniq.queue_configure('default', '{"max_running": 1}');
:error
SELECT soniq.schedule_pause('roles.every');
:error
SELECT soniq.schedule_fire('roles.every');
:error
SELECT soniq.cancel_job(:'job');
:error
SELECT soniq.delete_job(:'job');
:error
SELECT soniq.prune_jobs();
:error
UPDATE soniq.jobs SET priority = 1;
:error
DELETE FROM soniq.dead_letter_jobs;
:error
SELECT id FROM soniq.jobs FOR UPDATE;
:error
SELECT soniq._wake('default');
:error
RESET ROLE;
:rows

-- Logins: a worker is bound to the login that registered it, and a producer sees only the
-- jobs its login enqueued. (SET SESSION AUTHORIZATION acts as each login.)
SET client_min_messages = warning;
DROP ROLE IF EXISTS roles_w1, roles_w2, roles_p1, roles_p2;
RESET client_min_messages;
CREATE ROLE roles_w1 LOGIN IN ROLE soniq_worker;
CREATE ROLE roles_w2 LOGIN IN ROLE soniq_worker;
CREATE ROLE roles_p1 LOGIN IN ROLE soniq_producer;
CREATE ROLE roles_p2 LOGIN IN ROLE soniq_producer;
SET SESSION AUTHORIZATION roles_p1;
SELECT soniq.enqueue('login.task', '{"card": "4111"}', dedup_key => 'order-7') AS p1_job \gset
SELECT soniq.enqueue('login.unique', '{"guess": 1}', unique_job => true) AS p1_unique \gset
SELECT soniq.enqueue('login.fail', retries => 1) AS p1_fail \gset
SELECT soniq.batch_open('login.batch_done') AS p1_batch \gset
SELECT task_name, status FROM soniq.job_status(:'p1_job');
SET SESSION AUTHORIZATION roles_w1;
SELECT soniq.register_worker() AS w1 \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w1', task_names => '{login.fail}');
RESET SESSION AUTHORIZATION;
CREATE TEMP TABLE login_before AS SELECT (SELECT string_agg(j::text, ',' ORDER BY j.id) FROM soniq.jobs j) AS jobs,
                                        (SELECT string_agg(w::text, ',' ORDER BY w.id) FROM soniq.workers w) AS workers;
GRANT SELECT ON login_before TO roles_w2;
\set login_unchanged 'SELECT (SELECT string_agg(j::text, '','' ORDER BY j.id) FROM soniq.jobs j) = jobs AND (SELECT string_agg(w::text, '','' ORDER BY w.id) FROM soniq.workers w) = workers AS unchanged FROM login_before;'
-- Another worker login that knows w1's id may do nothing in its name (42501), and learns nothing.
SET SESSION AUTHORIZATION roles_w2;
SELECT soniq.complete(:'p1_fail', :'w1', 1, '{"forged": true}');
:error
SELECT soniq.complete_many(ARRAY[:'p1_fail']::uuid[], :'w1', '{1}');
:error
SELECT soniq.fail(:'p1_fail', :'w1', 1, 'forged');
:error
SELECT * FROM soniq.fail_many(ARRAY[:'p1_fail']::uuid[], :'w1', '{1}', '{forged}');
:error
SELECT soniq.snooze(:'p1_fail', :'w1', 1, '1 hour');
:error
SELECT soniq.abort(:'p1_fail', :'w1', 1);
:error
SELECT soniq.heartbeat(:'w1');
:error
SELECT soniq.heartbeat(:'w1', '{}', '0');
:error
SELECT soniq.deregister_worker(:'w1');
:error
SELECT soniq.claim(:'w1');
:error
RESET SESSION AUTHORIZATION;
:login_unchanged
-- Its own worker's lease refusals name no other worker.
SET SESSION AUTHORIZATION roles_w2;
SELECT soniq.register_worker() AS w2 \gset
SELECT soniq.complete(:'p1_fail', :'w2', 1);
:error
-- The worker login itself still runs its job.
SET SESSION AUTHORIZATION roles_w1;
SELECT soniq.fail(:'p1_fail', :'w1', 1, 'first try') AS state;
-- Another producer: the same dedup key and the same unique args make jobs of its own (never
-- p1's id), and p1's jobs have no status for it.
SET SESSION AUTHORIZATION roles_p2;
SELECT soniq.enqueue('login.task', dedup_key => 'order-7') AS p2_job \gset
SELECT :'p2_job' <> :'p1_job' AS not_p1s_job;
BEGIN;
SELECT soniq.enqueue('login.unique', '{"guess": 1}', unique_job => true) <> :'p1_unique' AS learns_nothing;
ROLLBACK;
SELECT count(*) AS p1_job_seen FROM soniq.job_status(:'p1_job');
SELECT count(*) AS p1_result_seen FROM soniq.job_result(:'p1_job');
-- p1's batch: not seen, not closed, joined by no job of p2's.
SELECT count(*) AS p1_batch_seen FROM soniq.batch_status(:'p1_batch');
SELECT soniq.batch_close(:'p1_batch');
:error
SELECT soniq.enqueue('login.in_batch', batch_id => :'p1_batch');
:error
CALL soniq.await_job(:'p1_job', '0');
:error
SELECT count(*) AS p1_unique_seen FROM soniq.job_status(:'p1_unique');
SELECT task_name, status FROM soniq.job_status(:'p2_job');
-- Within one login, deduplication is as before: the same key returns the same job.
SELECT soniq.enqueue('login.task', dedup_key => 'order-7') = :'p2_job' AS same_job;
-- p1's jobs cannot be named as dependencies: they are as unknown as a job that never was,
-- and nothing is written.
SELECT soniq.enqueue('login.after', depends_on => ARRAY[:'p1_job']::uuid[]);
:error
SELECT soniq.enqueue_many(format('[{"task_name": "login.after", "depends_on": ["%s"]}]', :'p1_fail')::jsonb);
:error
SELECT soniq.enqueue('login.after', depends_on => ARRAY[:'p2_job']::uuid[]) IS NOT NULL AS own_job_named;
RESET SESSION AUTHORIZATION;
SELECT status, waiting_on FROM soniq.jobs WHERE task_name = 'login.after';
-- An admin sees every job.
SELECT count(*) AS admin_sees FROM soniq.job_status(:'p1_job');
SELECT jobs, closed_at IS NULL AS still_open FROM soniq.batch_status(:'p1_batch');
DELETE FROM soniq.batches WHERE callback_task = 'login.batch_done';
DELETE FROM soniq.jobs WHERE task_name LIKE 'login.%';
DELETE FROM soniq.workers WHERE registered_by LIKE 'roles\_%';
DROP TABLE login_before;
DROP ROLE roles_w1, roles_w2, roles_p1, roles_p2;
