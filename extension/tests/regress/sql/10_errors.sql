-- Errors pass through hoop untouched and never take the server down.
--
-- Every ERROR below is raised by Postgres inside a statement that goes
-- through hoop's hooks (parse analysis, planning, executor start, utility),
-- at top level, in subtransactions, PL/pgSQL exception blocks, cursors and
-- two-phase commit, directly (superuser) and in a gateway session. The
-- output shows every field psql prints (DETAIL, HINT, CONTEXT, LINE/position):
-- it must be what Postgres alone prints. After each block the backend is the
-- same (pid) and the postmaster never restarted.
\set VERBOSITY default
\set SHOW_CONTEXT always
SELECT pg_backend_pid() AS pid0, pg_postmaster_start_time() AS started \gset
CREATE TABLE pc (a int PRIMARY KEY, b text CHECK (b <> 'bad'));
INSERT INTO pc VALUES (1, 'one');

-- The repro of the crash: TRUNCATE in a transaction, an error, ROLLBACK.
BEGIN;
TRUNCATE pc;
SELECT 1/0;
ROLLBACK;
SELECT count(*) FROM pc;
-- The same with a temporary table (any login role can do this).
BEGIN;
CREATE TEMP TABLE tt (x int);
TRUNCATE tt;
SELECT 1/0;
ROLLBACK;
-- COMMIT of an aborted transaction, and a protected table in the mix.
BEGIN;
TRUNCATE pc;
SELECT count(*) FROM public.payments;
SELECT 1/0;
COMMIT;
-- Error fields: position, DETAIL, constraint names.
SELECT 1 +
  'x'::int;
INSERT INTO pc VALUES (1, 'dup');
INSERT INTO pc VALUES (2, 'bad');
SELECT * FROM pc WHERE nosuchcolumn = 1;
-- PL/pgSQL: CONTEXT lines, exception blocks that catch and go on.
DO $$ BEGIN PERFORM 1/0; END $$;
DO $$
BEGIN
    BEGIN
        TRUNCATE pc;
        PERFORM 1/0;
    EXCEPTION WHEN division_by_zero THEN
        RAISE NOTICE 'caught %', SQLERRM;
    END;
    BEGIN
        EXECUTE 'CREATE VIEW v_bad AS SELECT nosuch FROM pc';
    EXCEPTION WHEN undefined_column THEN
        RAISE NOTICE 'caught %', SQLERRM;
    END;
    PERFORM count(*) FROM public.payments;
END $$;
-- Savepoints.
BEGIN;
SAVEPOINT s1;
TRUNCATE pc;
SELECT 1/0;
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
CREATE VIEW v_err AS SELECT 1/0 AS boom;
SELECT * FROM v_err;
ROLLBACK TO s2;
SELECT count(*) FROM pc;
SELECT count(card_number) FROM public.payments;
COMMIT;
-- An error while planning a statement that reads a masked table, then reads.
BEGIN;
SELECT card_number FROM public.payments WHERE id = 1/0;
ROLLBACK;
SELECT count(card_number) FROM public.payments;
-- Cursors.
BEGIN;
DECLARE c CURSOR FOR SELECT 10 / (a - 1) FROM pc;
FETCH c;
CLOSE c;
ROLLBACK;
-- Two-phase commit (needs max_prepared_transactions).
BEGIN;
TRUNCATE pc;
PREPARE TRANSACTION 'hoop_errors_2pc';
ROLLBACK PREPARED 'hoop_errors_2pc';
SELECT count(*) FROM pc;
-- SET TRANSACTION still works once hoop has read its policies.
BEGIN;
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;
SELECT count(*) FROM public.payments;
COMMIT;
SELECT pg_backend_pid() = :pid0 AS same_backend,
       pg_postmaster_start_time() = :'started' AS postmaster_not_restarted;

-- The same in a gateway session.
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
\set VERBOSITY default
\set SHOW_CONTEXT always
SELECT pg_backend_pid() AS pid1 \gset
BEGIN;
CREATE TEMP TABLE tt (x int);
TRUNCATE tt;
SELECT 1/0;
ROLLBACK;
BEGIN;
SAVEPOINT a;
SELECT card_number FROM public.payments WHERE id = 1/0;
ROLLBACK TO a;
SELECT card_number FROM public.payments ORDER BY id LIMIT 1;
COMMIT;
DO $$
BEGIN
    PERFORM card_number FROM public.payments WHERE id = 1/0;
EXCEPTION WHEN division_by_zero THEN
    RAISE NOTICE 'caught in a gateway session';
END $$;
SELECT 1 +
  'x'::int;
-- hoop's own refusals still carry hoop's message.
\set VERBOSITY terse
SET ROLE payments_admin;
BEGIN;
SET ROLE payments_admin;
ROLLBACK;
SELECT pg_backend_pid() = :pid1 AS same_backend,
       pg_postmaster_start_time() = :'started' AS postmaster_not_restarted;
SELECT card_number FROM public.payments ORDER BY id LIMIT 1;
