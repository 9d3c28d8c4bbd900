-- Soniq SQL: progress and checkpoints (since 0.9.0): what a running attempt records on its
-- lease. Conventions: sql/helpers.sql.
--
-- Progress is a JSON value for people to look at (get_job, list_jobs, soniq inspect), kept at
-- most once a second per job, so a handler reporting in a tight loop costs the table one
-- write a second. A checkpoint is the JSON value the job's next attempt reads back — after a
-- failure, a timeout, a take-back from a dead worker — so a long job resumes where it was. Both
-- stay with the job when it finishes; a replayed job starts without them. A write whose lease
-- is gone (the attempt was taken back, or finished) is refused with 55000, so a late write
-- of a presumed-dead worker never overwrites what the attempt after it recorded (a write
-- holds its job's row FOR SHARE: _hold_lease, so a take-back waits for it). Both live in soniq.job_progress.

-- report_progress: record an attempt's progress (a JSON value of at most 64 KiB). Returns
-- whether it was kept: false when the job's progress was written less than a second ago.
CREATE FUNCTION soniq.report_progress(job_id uuid, worker_id uuid, attempt int, progress jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    kept boolean;
BEGIN
    IF pg_column_size(progress) > 65536 THEN
        RAISE EXCEPTION 'progress takes % bytes, more than the 64 KiB it may take', pg_column_size(progress)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Report a summary: counts, a percentage, a phase.';
    END IF;
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    INSERT INTO soniq.job_progress AS p (job_id, progress, progress_at)
    VALUES (report_progress.job_id, report_progress.progress, now())
    ON CONFLICT ON CONSTRAINT job_progress_pkey DO UPDATE
       SET progress = excluded.progress, progress_at = excluded.progress_at
     WHERE p.progress_at IS NULL OR p.progress_at <= now() - interval '1 second'
    RETURNING true INTO kept;
    RETURN coalesce(kept, false);  -- not kept: written less than a second ago
END
$$;

-- save_checkpoint: what the job's next attempt resumes from (a JSON value of at most 1 MiB;
-- NULL clears it). Every call is kept.
CREATE FUNCTION soniq.save_checkpoint(job_id uuid, worker_id uuid, attempt int, checkpoint jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_column_size(checkpoint) > 1048576 THEN
        RAISE EXCEPTION 'the checkpoint takes % bytes, more than the 1 MiB it may take', pg_column_size(checkpoint)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Store large state elsewhere and checkpoint a reference.';
    END IF;
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    INSERT INTO soniq.job_progress AS p (job_id, checkpoint) VALUES (save_checkpoint.job_id, save_checkpoint.checkpoint)
    ON CONFLICT ON CONSTRAINT job_progress_pkey DO UPDATE SET checkpoint = excluded.checkpoint;
END
$$;

-- read_checkpoint: the checkpoint an earlier attempt (or this one) saved; NULL if none.
CREATE FUNCTION soniq.read_checkpoint(job_id uuid, worker_id uuid, attempt int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM soniq._hold_lease(job_id, worker_id, attempt);
    RETURN (SELECT p.checkpoint FROM soniq.job_progress p WHERE p.job_id = read_checkpoint.job_id);
END
$$;
