-- COPY … TO goes through the same masking as a query.
\set VERBOSITY terse
CREATE TABLE public.cards4 AS SELECT id, card_number, cardholder FROM public.payments WHERE id <= 4;
SELECT hoop_mask('public.cards4', 'card_number', 'pan_bin_last4');
GRANT SELECT ON public.cards4 TO fraud_agent;
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
COPY public.cards4 TO STDOUT WITH (FORMAT csv, HEADER);
COPY public.cards4 (card_number, id) TO STDOUT;
COPY public.cards4 TO STDOUT WITH (FORMAT binary) \g /dev/null
COPY (SELECT card_number FROM public.payments WHERE id <= 3 ORDER BY id) TO STDOUT;
COPY (SELECT p FROM public.payments p WHERE id = 1) TO STDOUT;
COPY (SELECT * FROM public.payments_view WHERE id = 2) TO STDOUT;
COPY public.secrets TO STDOUT;
\copy (SELECT id, card_number FROM public.payments WHERE id = 2) TO STDOUT
\copy public.cards4 TO STDOUT
