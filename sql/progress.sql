-- Soniq SQL: progress and checkpoints (since 0.9.0): what a running attempt records on its
-- lease. Conventions: sql/helpers.sql.
--
-- Progress is a JSON value for people to look at (get_job, list_jobs, soniq inspect), kept at
-- most once a second per job, so a handler reporting in a tight loop costs the table one
-- write a second. A checkpoint is the JSON value the job's next attempt reads back — after a
-- failure, a timeout, a take-back from a dead worker — so a long job resumes where it was. Both
-- stay with the job when it finishes; a replayed job starts without them. A write whose lease
-- is gone (the attempt was taken back, or finished) is refused with 55000, so a late write
-- of a presumed-dead worker never overwrites what the attempt after it recorded.

-- report_progress: record an attempt's progress (a JSON value of at most 64 KiB). Returns
-- whether it was kept: false when the job's progress was written less than a second ago.
CREATE FUNCTION soniq.report_progress(job_id uuid, worker_id uuid, attempt int, progress jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(report_progress.worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._check_worker_owner(report_progress.worker_id);
    IF pg_column_size(progress) > 65536 THEN
        RAISE EXCEPTION 'progress takes % bytes, more than the 64 KiB it may take', pg_column_size(progress)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Report a summary: counts, a percentage, a phase.';
    END IF;
    UPDATE soniq.jobs j SET progress = report_progress.progress, progress_at = now()
     WHERE j.id = report_progress.job_id AND j.status = 'processing' AND j.worker_id = report_progress.worker_id
       AND j.attempts = report_progress.attempt
       AND (j.progress_at IS NULL OR j.progress_at <= now() - interval '1 second');
    IF FOUND THEN
        RETURN true;
    END IF;
    IF EXISTS (SELECT FROM soniq.jobs j
                WHERE j.id = report_progress.job_id AND j.status = 'processing'
                  AND j.worker_id = report_progress.worker_id AND j.attempts = report_progress.attempt) THEN
        RETURN false;  -- written less than a second ago
    END IF;
    PERFORM soniq._lease_refused(job_id, report_progress.worker_id, attempt);
    RETURN false;
END
$$;

-- save_checkpoint: what the job's next attempt resumes from (a JSON value of at most 1 MiB;
-- NULL clears it). Every call is kept.
CREATE FUNCTION soniq.save_checkpoint(job_id uuid, worker_id uuid, attempt int, checkpoint jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(save_checkpoint.worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._check_worker_owner(save_checkpoint.worker_id);
    IF pg_column_size(checkpoint) > 1048576 THEN
        RAISE EXCEPTION 'the checkpoint takes % bytes, more than the 1 MiB it may take', pg_column_size(checkpoint)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Store large state elsewhere and checkpoint a reference.';
    END IF;
    UPDATE soniq.jobs j SET checkpoint = save_checkpoint.checkpoint
     WHERE j.id = save_checkpoint.job_id AND j.status = 'processing' AND j.worker_id = save_checkpoint.worker_id
       AND j.attempts = save_checkpoint.attempt;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, save_checkpoint.worker_id, attempt);
    END IF;
END
$$;

-- read_checkpoint: the checkpoint an earlier attempt (or this one) saved; NULL if none.
CREATE FUNCTION soniq.read_checkpoint(job_id uuid, worker_id uuid, attempt int) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    saved jsonb;
BEGIN
    PERFORM soniq._require(job_id, 'job_id');
    PERFORM soniq._require(read_checkpoint.worker_id, 'worker_id');
    PERFORM soniq._require(attempt, 'attempt');
    PERFORM soniq._check_worker_owner(read_checkpoint.worker_id);
    SELECT j.checkpoint INTO saved FROM soniq.jobs j
     WHERE j.id = read_checkpoint.job_id AND j.status = 'processing' AND j.worker_id = read_checkpoint.worker_id
       AND j.attempts = read_checkpoint.attempt;
    IF NOT FOUND THEN
        PERFORM soniq._lease_refused(job_id, read_checkpoint.worker_id, attempt);
    END IF;
    RETURN saved;
END
$$;
