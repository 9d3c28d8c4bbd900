-- Soniq SQL: workers: register, heartbeat, deregister. Conventions: sql/helpers.sql.

-- register_worker: a runner process announces itself; returns its id, which claims and
-- heartbeats present. queues NULL means all queues; task_names, the tasks it has handlers
-- for (NULL: any), tells the control plane which jobs nobody serves (check_unserved).
CREATE FUNCTION soniq.register_worker(
    hostname    text    DEFAULT NULL,
    pid         int     DEFAULT NULL,
    queues      text[]  DEFAULT NULL,
    concurrency int     DEFAULT 1,
    version     text    DEFAULT NULL,
    metadata    jsonb   DEFAULT '{}',
    task_names  text[]  DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id uuid;
BEGIN
    PERFORM soniq._check_filter(queues, 'queues');
    PERFORM soniq._check_queue_name(q) FROM unnest(queues) q;
    PERFORM soniq._check_filter(task_names, 'task_names');
    PERFORM soniq._check_task_name(t) FROM unnest(task_names) t;
    IF concurrency IS NULL OR concurrency < 1 THEN
        RAISE EXCEPTION 'concurrency must be at least 1, got %', coalesce(concurrency::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO soniq.workers AS w (hostname, pid, queues, concurrency, version, metadata, task_names)
    VALUES (register_worker.hostname, register_worker.pid, register_worker.queues,
            register_worker.concurrency, register_worker.version, register_worker.metadata,
            register_worker.task_names)
    RETURNING w.id INTO new_id;
    RETURN new_id;
END
$$;

-- heartbeat: the worker is alive. Returns the ids of the jobs it holds whose cancellation
-- was requested (soniq.cancel_job): the worker should abort them.
CREATE FUNCTION soniq.heartbeat(worker_id uuid) RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    UPDATE soniq.workers w SET last_heartbeat = now() WHERE w.id = heartbeat.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered', worker_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'It was presumed dead and its leases were taken back; register again.';
    END IF;
    RETURN QUERY
    SELECT j.id FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id AND j.cancel_requested;
END
$$;

-- heartbeat (with the jobs the worker is running, or finished and still recording): as
-- above, and takes back the jobs this worker holds but does not know of, once held longer
-- than grace. A claim whose answer was lost with its connection leaves such jobs: the worker
-- stays alive, so without this they would wait for their timeout.
CREATE FUNCTION soniq.heartbeat(worker_id uuid, running uuid[], grace interval DEFAULT '30 seconds')
RETURNS SETOF uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    unknown uuid[];
BEGIN
    PERFORM soniq._require(running, 'running');
    PERFORM soniq._require(grace, 'grace');
    PERFORM soniq._check_interval(grace, 'grace', interval '1 day');
    PERFORM soniq._check_worker_owner(worker_id);
    SELECT array_agg(j.id) INTO unknown FROM soniq.jobs j
     WHERE j.status = 'processing' AND j.worker_id = heartbeat.worker_id
       AND j.id <> ALL (running) AND j.started_at < now() - grace;
    IF unknown IS NOT NULL THEN
        PERFORM soniq._take_back(ARRAY[worker_id], 'its worker had lost track of it', unknown);
    END IF;
    RETURN QUERY SELECT soniq.heartbeat(worker_id);
END
$$;

-- deregister_worker: a worker leaves. Jobs it still holds are taken back (queued again,
-- or dead-lettered if that was their last attempt). Returns how many.
CREATE FUNCTION soniq.deregister_worker(worker_id uuid) RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(worker_id, 'worker_id');
    PERFORM soniq._check_worker_owner(worker_id);
    DELETE FROM soniq.workers w WHERE w.id = deregister_worker.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered', worker_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN soniq._take_back(ARRAY[worker_id], format('worker %s deregistered', worker_id));
END
$$;

-- _forget_stale_workers: remove the workers silent for longer than timeout.
CREATE FUNCTION soniq._forget_stale_workers(timeout interval) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(timeout, 'timeout');
    IF timeout <= interval '0' OR timeout > interval '30 days' THEN
        RAISE EXCEPTION 'timeout must be more than 0 and at most 30 days, got %', timeout
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM soniq.workers w WHERE w.last_heartbeat < now() - timeout;
END
$$;

-- recover_stale_workers: workers silent for longer than timeout (at most 30 days) are presumed
-- dead and removed; their jobs are taken back (see _take_back), and so are the jobs held by
-- any worker that no longer exists. Returns how many jobs were taken back.
CREATE FUNCTION soniq.recover_stale_workers(timeout interval DEFAULT '5 minutes') RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lost uuid[];
BEGIN
    PERFORM soniq._forget_stale_workers(timeout);
    lost := ARRAY(
        SELECT DISTINCT j.worker_id FROM soniq.jobs j
         WHERE j.status = 'processing'
           AND NOT EXISTS (SELECT FROM soniq.workers w WHERE w.id = j.worker_id));
    IF cardinality(lost) = 0 THEN
        RETURN 0;
    END IF;
    RETURN soniq._take_back(lost, 'its worker stopped heartbeating');
END
$$;
