-- Task options published after a job was enqueued: the job follows them wherever its producer
-- left an option out; options given at enqueue win; a processing job is not changed.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
\set show 'SELECT task_name, queue, priority, max_attempts, timeout, result_ttl, retry_policy, status FROM soniq.jobs WHERE id = '
SELECT soniq.register_worker() AS w \gset
-- Before any worker published late.task: system defaults.
SELECT soniq.enqueue('late.task', '{"n": 3}') AS running \gset
SELECT count(*) AS claimed FROM soniq.claim(:'w', task_names => '{late.task}');
SELECT soniq.enqueue('late.task', '{"n": 1}') AS plain \gset
SELECT soniq.enqueue('late.task', '{"n": 2}', queue => 'mine', retries => 7, priority => 5) AS explicit \gset
:show :'plain';

-- A worker publishes the task: retries 0, its own queue, a timeout, a result TTL, a retry policy.
SELECT soniq.register_task('late.task', '{"retries": 0, "queue": "late", "priority": 50, "timeout": 30, "result_ttl": 60, "retry_delay": 5}');
:show :'plain';
-- Given at enqueue: queue, retries and priority stay; the rest follows the task.
:show :'explicit';
-- Already running: untouched.
:show :'running';

-- A job that already used attempts keeps one more, whatever the new retries say.
SELECT soniq.enqueue('late.retried') AS worn \gset
UPDATE soniq.jobs SET attempts = 2 WHERE id = :'worn';  -- test shortcut: two failed attempts
SELECT soniq.enqueue('late.retried') AS fresh \gset
SELECT soniq.register_task('late.retried', '{"retries": 0}');
SELECT id = :'worn' AS is_worn, attempts, max_attempts FROM soniq.jobs WHERE task_name = 'late.retried' ORDER BY 1;

-- Publishing the same options again changes no job (a redeploy touches nothing).
SELECT updated_at AS stamp FROM soniq.jobs WHERE id = :'plain' \gset
SELECT soniq.register_task('late.task', '{"retries": 0, "queue": "late", "priority": 50, "timeout": 30, "result_ttl": 60, "retry_delay": 5}');
SELECT updated_at = :'stamp' AS untouched FROM soniq.jobs WHERE id = :'plain';
-- New options again: followed again.
SELECT soniq.register_task('late.task', '{"retries": 2}');
:show :'plain';

-- A replayed job keeps what its dead original had.
SELECT soniq.enqueue('late.dead') AS d \gset
SELECT soniq.dead_letter_move(:'d');
SELECT soniq.replay(:'d') AS replayed \gset
SELECT soniq.register_task('late.dead', '{"retries": 9, "queue": "elsewhere"}');
:show :'replayed';
