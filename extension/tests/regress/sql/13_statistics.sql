-- Column statistics hold sample values: in a database with protected tables
-- only a superuser outside gateway sessions reads them.
\set VERBOSITY terse
CREATE TABLE public.notes (id int, note text);
INSERT INTO public.notes SELECT g, 'card ' || :'pan1' FROM generate_series(1, 50) g;
SELECT hoop_protect('public.notes');
GRANT SELECT ON public.notes TO fraud_agent, hoop_migrator;
ANALYZE public.notes;
ANALYZE public.payments;
SELECT count(*) > 0 AS superuser_reads_stats FROM pg_stats WHERE tablename = 'notes';
-- An exempt role (direct access allowed, values masked) and a plain role.
SET ROLE hoop_migrator;
SELECT most_common_vals FROM pg_stats WHERE tablename = 'notes';
SELECT count(*) FROM pg_stats_ext;
RESET ROLE;
SET ROLE outsider;
SELECT attname FROM pg_stats WHERE tablename = 'merchants';
RESET ROLE;
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
\set VERBOSITY terse
SELECT most_common_vals FROM pg_stats WHERE tablename = 'notes' AND attname = 'note';
SELECT histogram_bounds FROM pg_stats WHERE tablename = 'payments';
EXPLAIN (COSTS OFF) SELECT * FROM pg_stats;
SELECT count(*) FROM public.notes;
