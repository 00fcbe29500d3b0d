-- Parallel query: workers inherit the leader's session and mask the same way.
\set VERBOSITY terse
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
SELECT * FROM public.explain_lines($q$SELECT count(*) FROM public.payments WHERE card_number LIKE '%6467'$q$, false);
SELECT count(*) FROM public.payments WHERE card_number LIKE '%6467';
SELECT count(*) FROM public.payments WHERE card_number = :'pan1';
SELECT card_number, count(*) FROM public.payments GROUP BY card_number ORDER BY 1;
SELECT string_agg(DISTINCT card_number, ',') FROM public.payments;
-- The same with a session that may unmask: the workers agree with the leader.
\set role payments_admin
\set unmask '--unmask public.payments.card_number'
\ir include/gateway.sql
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
SELECT count(*) FROM public.payments WHERE card_number = :'pan1';
