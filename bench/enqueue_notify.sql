-- One enqueue per transaction, due now: sends NOTIFY soniq_new_job.
SELECT soniq.enqueue('bench.job', '{"n": 1}', queue => 'bench');
