-- The yardstick: a plain INSERT into a table shaped like soniq.jobs (bench_jobs, made by scripts/bench-enqueue).
INSERT INTO bench_jobs (task_name, args, queue) VALUES ('bench.job', '{"n": 1}', 'bench');
