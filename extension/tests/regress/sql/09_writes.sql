-- Writes still work for roles with the privilege; only reads are masked.
\set VERBOSITY terse
\set role payments_clerk
\set unmask ''
\ir include/gateway.sql
INSERT INTO public.payments (id, card_number, cardholder, amount) VALUES (1001, :'pan5', 'new', 1.00) RETURNING id, card_number;
UPDATE public.payments SET amount = amount + 1 WHERE id = 1001 RETURNING card_number;
INSERT INTO public.payments (id, card_number) VALUES (1001, :'pan2')
    ON CONFLICT (id) DO UPDATE SET card_number = EXCLUDED.card_number RETURNING card_number;
INSERT INTO public.payments (id, card_number) VALUES (1002, :'pan3')
    ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note;
-- Copying the column into another one copies the masked value.
UPDATE public.payments SET note = card_number WHERE id = 1002 RETURNING note;
DELETE FROM public.payments WHERE id = 1002 RETURNING card_number;
-- What was stored is the real number.
\c
\echo hoop:raw-allowed
SELECT id, card_number, note FROM public.payments WHERE id >= 1001 ORDER BY id;
\echo hoop:raw-forbidden
