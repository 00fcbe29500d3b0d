-- Declarations follow the data: inheritance children and materialized views.
\set VERBOSITY terse
-- A legacy inheritance child of a masked table (a partition is covered the same way).
CREATE TABLE public.payments_archive () INHERITS (public.payments);
INSERT INTO public.payments_archive (id, card_number, cardholder, amount, note)
VALUES (9001, :'pan5', 'archived', 1.00, 'old');
GRANT SELECT ON public.payments_archive TO fraud_agent;
-- A grandchild with its columns in another order.
CREATE TABLE public.payments_cold (extra int, LIKE public.payments);
ALTER TABLE public.payments_cold INHERIT public.payments_archive;
INSERT INTO public.payments_cold (id, card_number, extra) VALUES (9002, :'pan5', 1);
GRANT SELECT ON public.payments_cold TO fraud_agent;
SELECT table_name, explicitly_protected, masked_columns FROM hoop.protected_tables ORDER BY 1;
-- A materialized view over the masked table, built and refreshed by a
-- superuser, who sees raw values in the table itself.
CREATE MATERIALIZED VIEW public.payments_mv AS
    SELECT id, card_number, upper(card_number) AS loud, p AS whole FROM public.payments p WHERE id <= 3;
GRANT SELECT ON public.payments_mv TO fraud_agent;
SELECT id, card_number, loud, whole FROM public.payments_mv ORDER BY id;
REFRESH MATERIALIZED VIEW public.payments_mv;
SELECT id, card_number FROM public.payments_mv ORDER BY id;
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
\set VERBOSITY terse
SELECT id, card_number FROM ONLY public.payments_archive;
SELECT id, card_number FROM public.payments_archive ORDER BY id;
SELECT id, card_number FROM ONLY public.payments_cold;
SELECT id, card_number FROM public.payments WHERE id > 9000 ORDER BY id;
SELECT count(*) FROM public.payments_archive WHERE card_number = :'pan5';
SELECT id, card_number FROM public.payments_mv ORDER BY id;
