-- Protected tables need a gateway session.
\set VERBOSITY terse
-- A direct connection as an ordinary role is refused, however the table is reached.
SET ROLE fraud_agent;
SELECT count(*) FROM public.payments;
SELECT count(*) FROM public.secrets;
SELECT count(*) FROM public.payments_view;
SELECT public.card_of(1);
SELECT count(*) FROM public.merchants;
COPY public.payments TO STDOUT;
COPY public.secrets TO STDOUT;
COPY (SELECT id FROM public.payments LIMIT 1) TO STDOUT;
DO $$ BEGIN PERFORM count(*) FROM public.payments; END $$;
RESET ROLE;
SET ROLE payments_clerk;
INSERT INTO public.payments (id, card_number) VALUES (9999, :'pan5');
UPDATE public.payments SET note = 'x' WHERE id = 1;
TRUNCATE public.payments;
RESET ROLE;
-- The refusal names the table and the reason.
\set VERBOSITY default
SET ROLE fraud_agent;
SELECT count(*) FROM public.payments;
RESET ROLE;
\set VERBOSITY terse
-- Exempt roles pass, still masked (and logged).
SET ROLE hoop_migrator;
SELECT id, card_number FROM public.payments ORDER BY id LIMIT 2;
SELECT count(*) FROM public.secrets;
RESET ROLE;
-- Superusers pass and see raw values unless hoop.enforce_superuser is on.
\echo hoop:raw-allowed
SELECT id, card_number FROM public.payments ORDER BY id LIMIT 2;
\echo hoop:raw-forbidden
SET hoop.enforce_superuser = on;
SELECT id, card_number FROM public.payments ORDER BY id LIMIT 2;
RESET hoop.enforce_superuser;
-- Masking is decided by the session's role: a SECURITY DEFINER function
-- owned by a superuser does not unmask for its caller.
SET ROLE hoop_migrator;
SELECT public.card_of(1);
RESET ROLE;
-- A valid gateway session opens the door.
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
SELECT count(*) FROM public.payments;
SELECT count(*) FROM public.secrets;
SELECT id, card_number FROM public.payments_view ORDER BY id LIMIT 2;
