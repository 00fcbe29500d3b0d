-- Sessions whose token lists a column see it raw; everyone else, masked; the
-- decision follows the token in effect at each call, also for cached plans.
\set VERBOSITY terse
\set role payments_admin
\set unmask '--unmask public.payments.card_number'
\ir include/gateway.sql
\echo hoop:raw-allowed
SELECT id, card_number FROM public.payments ORDER BY id LIMIT 2;
SELECT row_to_json(p) ->> 'card_number' FROM public.payments p WHERE id = 3;
SELECT count(*) FROM public.payments WHERE card_number = :'pan1';
PREPARE q AS SELECT card_number FROM public.payments WHERE id = 1;
EXECUTE q;
CREATE FUNCTION scratch.first_card() RETURNS text LANGUAGE plpgsql AS $$
BEGIN RETURN (SELECT card_number FROM public.payments WHERE id = 1); END $$;
SELECT scratch.first_card();
\echo hoop:raw-forbidden
-- The same backend gets a token without the unmask claim.
\set narrower `:signer --pid :pid --role payments_admin --db :DBNAME`
SET hoop.session = :'narrower';
EXECUTE q;
SELECT scratch.first_card();
SELECT count(*) FROM public.payments WHERE card_number = :'pan1';
BEGIN;
DECLARE c CURSOR FOR SELECT card_number FROM public.payments ORDER BY id;
FETCH 1 FROM c;
-- … and back to the wider one, in the middle of a cursor.
SET hoop.session = :'tok';
\echo hoop:raw-allowed
FETCH 1 FROM c;
\echo hoop:raw-forbidden
COMMIT;
-- An unmask claim for another column unmasks nothing here.
\set other `:signer --pid :pid --role payments_admin --db :DBNAME --unmask public.payments.note --unmask public.other.card_number`
SET hoop.session = :'other';
EXECUTE q;
-- An expired session stops working at once (no access, no unmasking).
\set shortlived `:signer --pid :pid --role payments_admin --db :DBNAME --ttl 2 --unmask public.payments.card_number`
SET hoop.session = :'shortlived';
SELECT pg_sleep(3);
EXECUTE q;
SELECT hoop.session_info() IS NULL AS expired;
