-- The walk-through run by scripts/demo (psql plays the application and the worker).
\pset footer off
\echo '== 1. A task registers its defaults (runners do this at start)'
SELECT soniq.register_task('billing.send_invoice', '{"queue": "billing", "retries": 1, "retry_delay": 0}');

\echo '== 2. Enqueue inside the application''s transaction: rolled back, the job never existed'
CREATE TABLE orders (id int PRIMARY KEY, total numeric);
BEGIN;
INSERT INTO orders VALUES (7, 99.50);
SELECT soniq.enqueue('billing.send_invoice', '{"order_id": 7}') IS NOT NULL AS enqueued;
ROLLBACK;
SELECT count(*) AS jobs_after_rollback FROM soniq.jobs;
BEGIN;
INSERT INTO orders VALUES (7, 99.50);
SELECT soniq.enqueue('billing.send_invoice', '{"order_id": 7}') AS invoice_job \gset
COMMIT;
SELECT task_name, args, queue, status, max_attempts FROM soniq.jobs WHERE id = :'invoice_job';

\echo '== 3. A worker registers, claims the job and completes it with a result'
SELECT soniq.register_worker('demo-host', pg_backend_pid(), '{billing}') AS worker \gset
SELECT task_name, args, attempt, max_attempts FROM soniq.claim(:'worker', '{billing}');
SELECT soniq.complete(:'invoice_job', :'worker', 1, '{"invoice": "INV-0007"}');
SELECT status, result FROM soniq.get_job(:'invoice_job');

\echo '== 4. A job that keeps failing uses its retry, then lands in the dead letter'
SELECT soniq.enqueue('billing.send_invoice', '{"order_id": 8}') AS failing_job \gset
SELECT attempt FROM soniq.claim(:'worker', '{billing}');
SELECT soniq.fail(:'failing_job', :'worker', 1, 'SMTP 451: try again later') AS after_attempt_1;
SELECT attempt FROM soniq.claim(:'worker', '{billing}');
SELECT soniq.fail(:'failing_job', :'worker', 2, 'SMTP 451: try again later') AS after_attempt_2;
SELECT task_name, args, attempts, last_error, dead_letter_reason FROM soniq.dead_letter_list();

\echo '== 5. An operator replays it: a fresh job runs, the dead row keeps its history'
SELECT soniq.replay(:'failing_job') AS replayed_job \gset
SELECT attempt FROM soniq.claim(:'worker', '{billing}');
SELECT soniq.complete(:'replayed_job', :'worker', 1);
SELECT status FROM soniq.get_job(:'replayed_job');
SELECT resurrection_count FROM soniq.dead_letter_jobs WHERE id = :'failing_job';

\echo '== 6. The control plane (a background worker inside Postgres) fires a schedule every second'
SELECT name, task_name, every FROM soniq.schedule_add('demo.heartbeat', 'metrics.flush', every => '1 second');
SELECT pg_sleep(3.5);
SELECT task_name, scheduled_at::time(0) AS slot, producer_id FROM soniq.jobs
 WHERE producer_id = 'schedule:demo.heartbeat' ORDER BY scheduled_at;
SELECT soniq.schedule_remove('demo.heartbeat');

\echo '== 7. What an operator sees'
SELECT queue, paused, runnable, processing, done, dead FROM soniq.queue_overview ORDER BY queue;
SELECT subsystem, alive, runs, failures, lag FROM soniq.health;
SELECT hostname, jobs_held, silent_for < interval '1 minute' AS alive FROM soniq.worker_overview;
SELECT soniq.deregister_worker(:'worker') AS jobs_taken_back;
