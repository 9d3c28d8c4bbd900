-- Soniq schema: the tables behind the SQL API.
--
-- Only the functions of the other files in sql/ write these tables (one seam
-- for state).
-- Every table is registered with pg_extension_config_dump so pg_dump keeps the rows.

-- uuid_v7: time-ordered ids (RFC 9562, with the sub-millisecond clock in the 12 bits after
-- the version), so new jobs land at the right edge of the primary-key index and ids created
-- one after another sort in creation order (the tie-break of the claim order). In Rust
-- (src/ids.rs): every enqueue makes one, and SQL arithmetic on the clock cost 25 µs a call.
CREATE FUNCTION soniq.uuid_v7() RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'uuid_v7_wrapper';

-- Registered defaults of a task, published by runners (soniq.register_task).
-- NULL columns mean "not registered": the system default applies.
CREATE TABLE soniq.tasks (
    task_name     text PRIMARY KEY,
    queue         text,
    priority      int,
    retries       int,
    timeout       interval,
    retry_policy  jsonb,
    result_ttl    interval,
    unique_job    boolean,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    concurrency_key text[]     -- the path in a job's args to its concurrency key (since 0.7.0)
);

-- Queues exist implicitly (a routing tag on a job); a row here records pause state and the
-- queue's flow control (soniq.queue_configure; NULL: no limit). Since 0.7.0 the columns after
-- updated_at.
CREATE TABLE soniq.queues (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    paused_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    max_running         int,       -- jobs processing at once, cluster-wide
    max_running_per_key int,       -- the same, per concurrency key
    rate_limit          int,       -- jobs started per rate_period
    rate_limit_per_key  int,       -- the same, per concurrency key
    rate_period         interval,
    fair_share          boolean NOT NULL DEFAULT false,  -- claims rotate across keys
    key_weights         jsonb,     -- fair share: jobs per round of a key (1 when not named)
    key_cursor          text,      -- fair share: the key the last claim's round ended at
    held_back           boolean NOT NULL DEFAULT false,  -- a limit left runnable jobs: outcomes wake the queue
    wake_at             timestamptz,  -- a rate window's next edge: the control plane wakes the queue then
    priority_aging      interval,  -- a waiting job's priority improves by one per this much waiting
    CONSTRAINT queues_limits_range CHECK (
        max_running BETWEEN 1 AND 100000 AND max_running_per_key BETWEEN 1 AND 100000
        AND rate_limit BETWEEN 1 AND 1000000 AND rate_limit_per_key BETWEEN 1 AND 1000000
        AND rate_period BETWEEN interval '1 second' AND interval '1 day'
        AND priority_aging BETWEEN interval '1 second' AND interval '1 day'),
    CONSTRAINT queues_rate_has_period CHECK (
        (rate_limit IS NULL AND rate_limit_per_key IS NULL) OR rate_period IS NOT NULL)
) WITH (fillfactor = 50);  -- claims of a limited queue update its row: HOT updates

-- The starts of rate-limited queues' jobs, a row per claim and key (the default key '' when the
-- queue has no per-key rate): the window a claim counts. Claims delete what is well past it.
-- Runtime state, like soniq.control_plane.
CREATE TABLE soniq.queue_starts (
    queue           text NOT NULL,
    concurrency_key text NOT NULL,
    started_at      timestamptz NOT NULL,
    jobs            int NOT NULL
);
CREATE INDEX queue_starts_window_idx ON soniq.queue_starts (queue, started_at);

-- Runner processes. A worker is alive while it heartbeats; a stale one is removed by
-- soniq.recover_stale_workers and its jobs are taken back.
CREATE TABLE soniq.workers (
    id             uuid PRIMARY KEY DEFAULT soniq.uuid_v7(),
    hostname       text,
    pid            int,
    queues         text[],
    concurrency    int NOT NULL DEFAULT 1,
    version        text,
    metadata       jsonb NOT NULL DEFAULT '{}',
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    task_names     text[],                     -- the tasks it serves; NULL: any
    registered_by  text DEFAULT session_user   -- the login it is bound to (NULL: before 0.3.0)
) WITH (fillfactor = 70);  -- heartbeats are HOT updates

CREATE TABLE soniq.jobs (
    id               uuid PRIMARY KEY DEFAULT soniq.uuid_v7(),
    task_name        text NOT NULL,
    args             jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'queued',
    queue            text NOT NULL DEFAULT 'default',
    priority         int NOT NULL DEFAULT 100,
    attempts         int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL DEFAULT 4,
    scheduled_at     timestamptz,               -- NULL: run as soon as possible
    timeout          interval,                  -- NULL: no timeout
    retry_policy     jsonb,                     -- NULL: retry at once
    result_ttl       interval NOT NULL DEFAULT '300 seconds',
    args_hash        text,                      -- set only for unique jobs
    dedup_key        text,
    worker_id        uuid,                      -- the lease holder while processing
    cancel_requested boolean NOT NULL DEFAULT false,
    last_error       text,
    result           jsonb,
    producer_id      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,               -- start of the current (or last) attempt
    finished_at      timestamptz,
    expires_at       timestamptz,               -- a done job may be pruned after this
    enqueued_by      text DEFAULT session_user, -- the login, which alone sees its status (NULL: before 0.3.0)
    -- The options its producer left out, which follow the task's published options while the
    -- job is queued (bits: 1 queue, 2 priority, 4 retries, 8 timeout, 16 retry policy, 32
    -- result TTL); a replayed job or a row from before 0.3.0 keeps what it has (0).
    inherited        smallint NOT NULL DEFAULT 0,
    -- Flow control's key (a tenant, a customer): '' is the default key, of every job whose
    -- task names no key or whose args lack it (since 0.7.0).
    concurrency_key  text NOT NULL DEFAULT '',
    -- Dependencies (since 0.9.0; sql/dependencies.sql): the jobs this one waits for (NULL:
    -- none); while it waits, how many of them have not finished; what a failed one does to it
    -- ('cancel' or 'run'); whether some job depends on this one (its outcome then looks for
    -- them); the failed job that cancelled it (for a replay to re-arm it).
    depends_on       uuid[],
    waiting_on       int NOT NULL DEFAULT 0,
    on_dependency_failure text,
    has_dependents   boolean NOT NULL DEFAULT false,
    cancelled_by     uuid,
    -- A producer awaits its end: it notifies soniq_job_finished (since 0.9.0; sql/awaiting.sql).
    awaited          boolean NOT NULL DEFAULT false,
    -- The batch it belongs to (since 0.9.0; sql/batches.sql).
    batch_id         uuid,
    -- The W3C trace context (traceparent) of the span that enqueued it, which each attempt's
    -- span links to (since 0.12.0); NULL: none given.
    traceparent      text,
    -- waiting: until the jobs it depends on are done.
    CONSTRAINT jobs_status_check CHECK (status IN ('queued', 'processing', 'done', 'cancelled', 'waiting')),
    CONSTRAINT jobs_args_object CHECK (jsonb_typeof(args) = 'object'),
    CONSTRAINT jobs_priority_range CHECK (priority BETWEEN 1 AND 1000),
    CONSTRAINT jobs_attempts_range CHECK (attempts >= 0 AND max_attempts >= 1),
    -- A queued job always has an attempt left: a job whose attempts are used up goes to the
    -- dead letter instead (this is the crash-loop guard, see recover_stale_workers).
    CONSTRAINT jobs_queued_has_attempt_left CHECK (status <> 'queued' OR attempts < max_attempts),
    -- Only a processing job has a lease holder; a finished job keeps the last one as history.
    CONSTRAINT jobs_lease_holder CHECK (CASE status
        WHEN 'processing' THEN worker_id IS NOT NULL
        WHEN 'queued' THEN worker_id IS NULL
        ELSE true END),
    -- The documented ranges (every entry point checks them first, with a clearer error): no
    -- sum of times a round computes can overflow.
    CONSTRAINT jobs_timeout_range CHECK (timeout > interval '0' AND timeout <= interval '30 days'),
    CONSTRAINT jobs_result_ttl_range CHECK (result_ttl BETWEEN interval '0' AND interval '365 days')
    -- No check on the dependency columns: every UPDATE of a row evaluates each check, and one
    -- more cost the drain 5 % (docs/benchmarks.md); only sql/dependencies.sql writes them.
) WITH (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 2000,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim order: priority, then never-scheduled before due-scheduled, then age.
-- Partial, so it holds only runnable rows and stays small however large the history grows.
CREATE INDEX jobs_claim_idx ON soniq.jobs (priority, scheduled_at NULLS FIRST, created_at, id)
    WHERE status = 'queued';
-- The same order inside one queue, for workers that serve a single queue.
CREATE INDEX jobs_queue_claim_idx ON soniq.jobs (queue, priority, scheduled_at NULLS FIRST, created_at, id)
    WHERE status = 'queued';
-- Flow control: the keys with queued jobs of a queue (the default key '' among them), and
-- each key's jobs in claim order.
CREATE INDEX jobs_key_claim_idx ON soniq.jobs (queue, concurrency_key, priority, scheduled_at NULLS FIRST, created_at, id)
    WHERE status = 'queued';
-- Leases held by a worker (heartbeat, deregistration, stale-worker recovery), and one of
-- them by id: the planner, which rarely sees processing rows in the statistics, takes this
-- index for an outcome's look-up of its job too, and by worker alone that read every job
-- the worker held.
CREATE INDEX jobs_worker_idx ON soniq.jobs (worker_id, id) WHERE status = 'processing';
-- Dependencies: the jobs that depend on a job (a finished one's outcome finds the waiting
-- ones, pruning keeps a done job while one has not run, a replay of a failed one re-arms the
-- cancelled ones). Only jobs with dependencies are in it, and its predicate is one test: each
-- UPDATE statement of soniq.jobs prepares every partial index's predicate.
CREATE INDEX jobs_dependents_idx ON soniq.jobs USING gin (depends_on) WHERE depends_on IS NOT NULL;
-- Listing and statistics by queue and state.
CREATE INDEX jobs_queue_status_idx ON soniq.jobs (queue, status);
-- Pruning of finished jobs.
CREATE INDEX jobs_expires_idx ON soniq.jobs (expires_at) WHERE expires_at IS NOT NULL;
-- Pruning of cancelled jobs.
CREATE INDEX jobs_cancelled_idx ON soniq.jobs (finished_at) WHERE status = 'cancelled';
-- The tasks and queues that have queued jobs, read one pair at a time (a loose index scan).
CREATE INDEX jobs_queued_task_idx ON soniq.jobs (task_name, queue) WHERE status = 'queued';
-- Deduplication: at most one queued job per (task, args hash) and per dedup key, within the
-- jobs of one login (another login's job is neither found nor revealed by a duplicate).
CREATE UNIQUE INDEX jobs_unique_args_idx ON soniq.jobs (enqueued_by, task_name, args_hash)
    WHERE status = 'queued' AND args_hash IS NOT NULL;
CREATE UNIQUE INDEX jobs_dedup_key_idx ON soniq.jobs (enqueued_by, dedup_key)
    WHERE status = 'queued' AND dedup_key IS NOT NULL;

-- Why a job is in the dead letter, the one list of reasons: it used its last attempt
-- (max_retries_exceeded), or its last one timed out (timeout); the handler gave up
-- (permanent_failure); its arguments do not fit the handler (invalid_arguments); no worker
-- has a handler for its task (job_not_found); an operator moved it (manual_move).
CREATE DOMAIN soniq.dead_letter_reason AS text CONSTRAINT dead_letter_reason_known CHECK (VALUE IN (
    'max_retries_exceeded', 'permanent_failure', 'job_not_found',
    'invalid_arguments', 'timeout', 'manual_move'));

-- Jobs that ran out of attempts or were discarded. The id is the original job's id.
CREATE TABLE soniq.dead_letter_jobs (
    id                      uuid PRIMARY KEY,
    task_name               text NOT NULL,
    args                    jsonb NOT NULL,
    queue                   text NOT NULL,
    priority                int NOT NULL,
    attempts                int NOT NULL,
    max_attempts            int NOT NULL,
    timeout                 interval,
    retry_policy            jsonb,
    result_ttl              interval NOT NULL,
    last_error              text,
    dead_letter_reason      soniq.dead_letter_reason NOT NULL,
    producer_id             text,
    original_created_at     timestamptz NOT NULL,
    moved_to_dead_letter_at timestamptz NOT NULL DEFAULT now(),
    resurrection_count      int NOT NULL DEFAULT 0,
    last_resurrection_at    timestamptz,
    tags                    text[] NOT NULL DEFAULT '{}',   -- an operator's labels
    enqueued_by             text DEFAULT session_user
);
CREATE INDEX dead_letter_task_idx ON soniq.dead_letter_jobs (task_name);
CREATE INDEX dead_letter_queue_idx ON soniq.dead_letter_jobs (queue);
CREATE INDEX dead_letter_moved_idx ON soniq.dead_letter_jobs (moved_to_dead_letter_at);

SELECT pg_catalog.pg_extension_config_dump('soniq.tasks', '');
SELECT pg_catalog.pg_extension_config_dump('soniq.queues', '');
SELECT pg_catalog.pg_extension_config_dump('soniq.workers', '');
SELECT pg_catalog.pg_extension_config_dump('soniq.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('soniq.dead_letter_jobs', '');

-- Outcomes by minute (since 0.11.0): how many attempts each worker completed and failed in
-- each queue each minute, for the dashboard's chart (sql/outcomes.sql adds to it; a failed
-- attempt is one its worker reported or one the rescue found timed out). One row per minute,
-- queue and worker: workers never add to each other's rows, so they never wait on each other;
-- prune_jobs keeps the last two hours. Runtime state: pg_dump leaves it out.
-- (Without room for HOT updates, a drain at concurrency 1 ran 18 % slower with the tally.)
CREATE TABLE soniq.outcome_minutes (
    minute    timestamptz NOT NULL,
    queue     text NOT NULL,
    worker_id uuid NOT NULL,
    completed bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, queue, worker_id)
) WITH (fillfactor = 30);  -- every outcome updates its row: room on the page keeps that HOT

-- What running attempts recorded (since 0.9.0; sql/progress.sql): a job's last progress and
-- when, and the checkpoint its next attempt resumes from. A row only for a job whose handler
-- recorded something (every column of soniq.jobs costs each of its updates, and most jobs
-- record nothing); a row whose job is gone is pruned with the finished jobs.
CREATE TABLE soniq.job_progress (
    job_id      uuid PRIMARY KEY,
    progress    jsonb,
    progress_at timestamptz,
    checkpoint  jsonb
);
SELECT pg_catalog.pg_extension_config_dump('soniq.job_progress', '');

-- Batches (since 0.9.0; sql/batches.sql): a callback enqueued once every job of the batch
-- has ended, the batch closed. Its jobs by how they ended, counted as they end.
CREATE TABLE soniq.batches (
    id              uuid PRIMARY KEY DEFAULT soniq.uuid_v7(),
    callback_task   text NOT NULL,
    callback_args   jsonb NOT NULL DEFAULT '{}',
    callback_queue  text,           -- NULL: the task's
    jobs            int NOT NULL DEFAULT 0,
    done            int NOT NULL DEFAULT 0,
    dead            int NOT NULL DEFAULT 0,
    cancelled       int NOT NULL DEFAULT 0,
    failed_ids      uuid[] NOT NULL DEFAULT '{}',  -- the first 1,000 dead or cancelled
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,    -- no more jobs join it
    finished_at     timestamptz,    -- its callback was enqueued
    callback_job_id uuid,
    enqueued_by     text DEFAULT session_user
) WITH (fillfactor = 70);  -- every ended job of a batch updates its row: HOT updates
SELECT pg_catalog.pg_extension_config_dump('soniq.batches', '');

-- Periodic definitions the control plane turns into jobs. Exactly one of cron and every.
-- next_fire_at is NULL while the schedule is paused.
CREATE TABLE soniq.schedules (
    name          text PRIMARY KEY,
    task_name     text NOT NULL,
    args          jsonb NOT NULL DEFAULT '{}',
    cron          text,
    every         interval,
    time_zone     text NOT NULL DEFAULT 'UTC',
    queue         text,
    priority      int,
    retries       int,
    timeout       interval,
    enabled       boolean NOT NULL DEFAULT true,
    next_fire_at  timestamptz,
    last_fire_at  timestamptz,
    last_job_id   uuid,
    fire_count    bigint NOT NULL DEFAULT 0,
    last_error    text,
    last_error_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_cron_or_every CHECK ((cron IS NULL) <> (every IS NULL))
);
CREATE INDEX schedules_due_idx ON soniq.schedules (next_fire_at) WHERE enabled;
SELECT pg_catalog.pg_extension_config_dump('soniq.schedules', '');

-- The control plane's own state, one row per subsystem, read through the soniq.health view.
-- Runtime state, not user data: pg_dump leaves it out.
CREATE TABLE soniq.control_plane (
    subsystem       text PRIMARY KEY,
    pid             int,            -- the background worker (row 'control_plane')
    started_at      timestamptz,
    last_run_at     timestamptz,
    last_success_at timestamptz,
    last_result     bigint,         -- what the last run did: jobs fired, taken back, pruned
    last_error      text,
    last_error_at   timestamptz,
    runs            bigint NOT NULL DEFAULT 0,
    failures        bigint NOT NULL DEFAULT 0,
    CONSTRAINT control_plane_subsystem CHECK (subsystem IN ('control_plane', 'scheduler', 'rescue', 'prune', 'unserved'))
);
INSERT INTO soniq.control_plane (subsystem) VALUES ('control_plane'), ('scheduler'), ('rescue'), ('prune'), ('unserved');

-- Each task and queue with queued jobs that no live worker serves (its task name or its queue),
-- since when the control plane has seen it so; a row goes once a worker serves it again.
-- Runtime state, like soniq.control_plane.
CREATE TABLE soniq.unserved (
    task_name text NOT NULL,
    queue     text NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_name, queue)
);
