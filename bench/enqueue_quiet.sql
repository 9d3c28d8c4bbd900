-- One enqueue per transaction, due later: the same work without the NOTIFY.
SELECT soniq.enqueue('bench.job', '{"n": 1}', queue => 'bench', scheduled_at => now() + interval '1 hour');
