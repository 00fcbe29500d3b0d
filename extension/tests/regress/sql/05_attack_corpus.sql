-- Attack corpus: a gateway session that may not unmask tries every path to a
-- raw card number. The runner fails this file if any raw test number (or its
-- reverse, hex, base64 or middle digits) appears anywhere in the output.
\set VERBOSITY terse
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
-- The agent's own tables.
CREATE TABLE scratch.audit_copy (id bigint, card text);
CREATE TABLE scratch.inbox (id bigint, note text);
-- Direct reads, every column, whole rows.
SELECT * FROM public.payments ORDER BY id LIMIT 4;
TABLE public.payments LIMIT 1;
SELECT p FROM public.payments p WHERE id = 1;
SELECT (p).card_number FROM public.payments p WHERE id = 2;
SELECT row_to_json(p) FROM public.payments p WHERE id = 3;
SELECT to_jsonb(p) ->> 'card_number' FROM public.payments p WHERE id = 4;
SELECT json_agg(p ORDER BY id) FROM (SELECT * FROM public.payments WHERE id <= 2) p;
SELECT jsonb_build_object('c', card_number) FROM public.payments WHERE id = 1;
SELECT p.*::text FROM public.payments p WHERE id = 1;
-- Casts, concatenation, pieces, reversal, encodings.
SELECT card_number::varchar(30), card_number::bpchar, card_number::name FROM public.payments WHERE id = 1;
SELECT 'x' || card_number || 'y', concat(card_number, '!'), format('%s|%I|%L', card_number, card_number, card_number) FROM public.payments WHERE id = 1;
SELECT substr(card_number, 7, 6), substring(card_number from 1 for 8), left(card_number, 12), right(card_number, 4), split_part(card_number, '*', 1) FROM public.payments WHERE id = 1;
SELECT overlay(card_number placing 'X' from 1 for 1), translate(card_number, '0123456789', 'abcdefghij'), regexp_replace(card_number, '\*', '', 'g') FROM public.payments WHERE id = 1;
SELECT reverse(card_number), upper(card_number), lower(card_number), md5(card_number) = md5(:'pan2') AS md5_matches FROM public.payments WHERE id = 1;
SELECT encode(convert_to(card_number, 'UTF8'), 'hex'), encode(convert_to(card_number, 'UTF8'), 'base64'), encode(card_number::bytea, 'escape') FROM public.payments WHERE id = 1;
SELECT decode(encode(convert_to(card_number, 'UTF8'), 'base64'), 'base64') FROM public.payments WHERE id = 1;
SELECT ascii(substr(card_number, 1, 1)), length(card_number), char_length(card_number) FROM public.payments WHERE id = 1;
SELECT string_to_array(card_number, NULL) FROM public.payments WHERE id = 1;
-- Aggregates, sets, windows.
SELECT array_agg(card_number ORDER BY id) FROM public.payments WHERE id <= 4;
SELECT string_agg(card_number, ',' ORDER BY id) FROM public.payments WHERE id <= 4;
SELECT min(card_number), max(card_number), count(DISTINCT card_number) FROM public.payments;
SELECT card_number, count(*) FROM public.payments GROUP BY card_number ORDER BY 1;
SELECT DISTINCT card_number FROM public.payments ORDER BY 1;
SELECT id, lag(card_number) OVER (ORDER BY id) FROM public.payments ORDER BY id LIMIT 2;
SELECT card_number FROM public.payments WHERE id = 1 UNION SELECT card_number FROM public.payments WHERE id = 2 ORDER BY 1;
-- Filtering on the real value infers nothing (WHERE, JOIN, HAVING, LIKE, regex).
SELECT count(*) FROM public.payments WHERE card_number = :'pan1';
SELECT count(*) FROM public.payments WHERE card_number LIKE '4539%';
SELECT count(*) FROM public.payments WHERE card_number ~ '^[0-9]{16}$';
SELECT count(*) FROM public.payments WHERE substr(card_number, 1, 6) = '453914';
SELECT count(*) FROM public.payments WHERE card_number IN (:'pan1', :'pan2', :'pan3', :'pan4');
SELECT count(*) FROM public.payments WHERE md5(card_number) = md5(:'pan1');
SELECT count(*) FROM public.payments p JOIN (VALUES (:'pan1')) v(c) ON p.card_number = v.c;
SELECT card_number FROM public.payments GROUP BY card_number HAVING card_number = :'pan1';
SELECT EXISTS (SELECT 1 FROM public.payments WHERE card_number = :'pan1');
SELECT count(*) FROM public.payments WHERE card_number > '4' AND card_number < '5';
SET enable_seqscan = off;
SELECT count(*) FROM public.payments WHERE card_number = :'pan1';
RESET enable_seqscan;
-- Errors that echo values.
SELECT card_number::int FROM public.payments WHERE id = 1;
SELECT card_number::numeric FROM public.payments WHERE id = 2;
SELECT card_number::date FROM public.payments WHERE id = 3;
SELECT to_number(card_number, '9999999999999999') FROM public.payments WHERE id = 4;
SELECT 1 / (card_number = :'pan1')::int FROM public.payments WHERE id = 1;
-- Subqueries, CTEs, LATERAL, recursive CTEs.
SELECT (SELECT card_number FROM public.payments WHERE id = 1);
WITH c AS (SELECT id, card_number FROM public.payments) SELECT card_number FROM c WHERE id = 2;
WITH RECURSIVE r(n, c) AS (SELECT 1, (SELECT card_number FROM public.payments WHERE id = 3) UNION ALL SELECT n + 1, c FROM r WHERE n < 2) SELECT * FROM r;
SELECT m.name, x.card_number FROM public.merchants m, LATERAL (SELECT card_number FROM public.payments WHERE id = m.id) x;
SELECT * FROM (SELECT card_number AS c FROM public.payments ORDER BY id LIMIT 1) s;
-- Views owned by others; SECURITY DEFINER and SQL/PL/pgSQL functions.
SELECT card_number FROM public.payments_view WHERE id = 1;
SELECT public.card_of(2);
CREATE FUNCTION scratch.cards_sql() RETURNS SETOF text LANGUAGE sql STABLE AS $$ SELECT card_number FROM public.payments ORDER BY id LIMIT 2 $$;
SELECT * FROM scratch.cards_sql();
SELECT scratch.cards_sql();
CREATE FUNCTION scratch.card_plpgsql(bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text; BEGIN SELECT card_number INTO r FROM public.payments WHERE id = $1; RETURN r; END $$;
SELECT scratch.card_plpgsql(3);
CREATE FUNCTION scratch.card_dynamic(bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text; BEGIN EXECUTE format('SELECT card_number FROM public.payments WHERE id = %s', $1) INTO r; RETURN r; END $$;
SELECT scratch.card_dynamic(4);
CREATE FUNCTION scratch.row_plpgsql(bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r public.payments; BEGIN SELECT * INTO r FROM public.payments WHERE id = $1; RETURN r.card_number || ' ' || r::text; END $$;
SELECT scratch.row_plpgsql(1);
CREATE FUNCTION scratch.atomic_cards() RETURNS SETOF text LANGUAGE sql STABLE
BEGIN ATOMIC SELECT card_number FROM public.payments ORDER BY id LIMIT 2; END;
SELECT * FROM scratch.atomic_cards();
CREATE FUNCTION scratch.atomic_card() RETURNS text LANGUAGE sql STABLE
BEGIN ATOMIC SELECT card_number FROM public.payments WHERE id = 1; END;
SELECT scratch.atomic_card();
-- RAISE NOTICE in a DO block.
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT card_number FROM public.payments ORDER BY id LIMIT 2 LOOP RAISE NOTICE 'card %', r.card_number; END LOOP;
END $$;
DO $$ BEGIN RAISE EXCEPTION 'card %', (SELECT card_number FROM public.payments WHERE id = 3); END $$;
-- Triggers and rules: none on the protected table; the agent's own see masked values.
CREATE FUNCTION scratch.copy_card() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO scratch.audit_copy SELECT id, card_number FROM public.payments WHERE id = NEW.id;
  RAISE NOTICE 'trigger saw %', (SELECT card_number FROM public.payments WHERE id = NEW.id);
  RETURN NEW;
END $$;
CREATE TRIGGER copy_card AFTER INSERT ON scratch.inbox FOR EACH ROW EXECUTE FUNCTION scratch.copy_card();
INSERT INTO scratch.inbox VALUES (1, 'hello');
SELECT * FROM scratch.audit_copy;
CREATE TRIGGER steal AFTER UPDATE ON public.payments FOR EACH ROW EXECUTE FUNCTION scratch.copy_card();
CREATE RULE steal AS ON SELECT TO public.payments DO INSTEAD SELECT * FROM public.payments;
CREATE RULE copy_on_insert AS ON INSERT TO scratch.inbox DO ALSO INSERT INTO scratch.audit_copy SELECT id, card_number FROM public.payments WHERE id = NEW.id;
INSERT INTO scratch.inbox VALUES (2, 'again');
SELECT * FROM scratch.audit_copy ORDER BY id, card;
-- Cursors and prepared statements.
BEGIN;
DECLARE c CURSOR FOR SELECT id, card_number FROM public.payments ORDER BY id;
FETCH 2 FROM c;
MOVE 1 IN c;
FETCH 1 FROM c;
CLOSE c;
COMMIT;
-- Output columns are masked by a node above the plan (extension/src/output.rs);
-- a scrollable cursor kept past its transaction, read forward, backward, rewound.
SELECT * FROM public.explain_lines($q$SELECT id, card_number FROM public.payments$q$, false);
BEGIN;
DECLARE h SCROLL CURSOR WITH HOLD FOR SELECT id, card_number FROM public.payments WHERE id <= 2;
COMMIT;
FETCH ALL FROM h;
FETCH BACKWARD 1 FROM h;
FETCH ABSOLUTE 1 FROM h;
CLOSE h;
PREPARE q(bigint) AS SELECT card_number FROM public.payments WHERE id = $1;
EXECUTE q(1);
EXECUTE q(2);
-- Copies: CREATE TABLE AS, INSERT … SELECT, SELECT INTO, materialized views.
CREATE TABLE scratch.stolen AS SELECT * FROM public.payments WHERE id <= 4;
SELECT id, card_number FROM scratch.stolen ORDER BY id;
INSERT INTO scratch.stolen SELECT * FROM public.payments WHERE id = 5;
SELECT card_number FROM scratch.stolen WHERE id = 5;
SELECT card_number INTO scratch.stolen2 FROM public.payments WHERE id = 6;
TABLE scratch.stolen2;
CREATE MATERIALIZED VIEW scratch.mv AS SELECT id, card_number FROM public.payments WHERE id <= 2;
SELECT * FROM scratch.mv ORDER BY id;
REFRESH MATERIALIZED VIEW scratch.mv;
SELECT * FROM scratch.mv ORDER BY id;
CREATE TEMP TABLE t AS SELECT card_number FROM public.payments_view WHERE id = 3;
TABLE t;
-- EXPLAIN (ANALYZE, VERBOSE) shows the masking function, never a value.
SELECT * FROM public.explain_lines($q$SELECT card_number FROM public.payments WHERE card_number LIKE '%6467' ORDER BY card_number$q$);
-- pg_stats and pg_statistic cannot be read at all (13_statistics).
SELECT count(*) AS card_stats FROM pg_stats WHERE tablename = 'payments' AND attname = 'card_number';
SELECT count(*) FROM pg_statistic;
-- Collations, ONLY, system-column tricks.
SELECT card_number COLLATE "C" FROM ONLY public.payments WHERE id = 1;
SELECT tableoid::regclass, card_number FROM public.payments WHERE id = 1;
-- Nothing above changed the session.
SELECT current_user, (hoop.session_info()).subject;
