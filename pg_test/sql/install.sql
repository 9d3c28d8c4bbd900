-- Installation: what CREATE EXTENSION puts in place.
-- Each file starts from a fresh install.
DROP EXTENSION IF EXISTS soniq CASCADE;
CREATE EXTENSION soniq;
-- Every table keeps its rows in pg_dump.
SELECT c::text AS dumped_table FROM pg_extension e, unnest(e.extconfig::regclass[]) c WHERE e.extname = 'soniq' ORDER BY 1;
-- The public API.
SELECT p.proname
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'soniq' AND p.proname NOT LIKE '\_%'
 GROUP BY p.proname ORDER BY p.proname;
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'soniq' AND c.relkind IN ('r', 'v') ORDER BY c.relname;
-- The claim index holds only queued rows.
SELECT indexdef FROM pg_indexes WHERE schemaname = 'soniq' AND indexname = 'jobs_claim_idx';
