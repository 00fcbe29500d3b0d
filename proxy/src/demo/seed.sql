-- The demo's roles, database and data. Run by `hoop demo` with psql as the
-- cluster superuser; idempotent (safe on every start).
-- Variables: gw_password (via \getenv), with_extension (true/false).
\set ON_ERROR_STOP on
\getenv gw_password HOOP_DEMO_GATEWAY_PASSWORD

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hoop_gateway') THEN
        -- The gateway's own login: it never acts with its own rights, only
        -- through SET ROLE to a mapped role.
        CREATE ROLE hoop_gateway LOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fraud_agent') THEN
        CREATE ROLE fraud_agent NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'payments_admin') THEN
        CREATE ROLE payments_admin NOLOGIN;
    END IF;
END
$$;
ALTER ROLE hoop_gateway PASSWORD :'gw_password';
GRANT fraud_agent, payments_admin TO hoop_gateway;

SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'payments') AS need_database \gset
\if :need_database
CREATE DATABASE payments;
\endif
\connect payments

\if :with_extension
CREATE EXTENSION IF NOT EXISTS hoop;
\endif

CREATE TABLE IF NOT EXISTS public.payments (
    id bigint PRIMARY KEY,
    card_number text NOT NULL,
    cardholder text NOT NULL,
    amount numeric(12,2) NOT NULL,
    note text,
    created_at timestamptz NOT NULL
);

-- Luhn check digit for a string of digits.
CREATE FUNCTION pg_temp.luhn_check_digit(digits text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((10 - sum(CASE WHEN (length(digits) - i) % 2 = 0
                           THEN (CASE WHEN d * 2 > 9 THEN d * 2 - 9 ELSE d * 2 END)
                           ELSE d END) % 10) % 10)::text
    FROM (SELECT i, substr(digits, i, 1)::int AS d
          FROM generate_series(1, length(digits)) AS i) AS s
$$;

-- 1,200 payments with test PANs from four brands (Visa, Mastercard, Amex,
-- Discover test ranges); amounts up to 19,999.99; now and then a note that
-- quotes the card number in free text.
INSERT INTO public.payments (id, card_number, cardholder, amount, note, created_at)
SELECT g,
       pan,
       (ARRAY['Ada Lovelace', 'Alan Turing', 'Grace Hopper', 'Edsger Dijkstra',
              'Barbara Liskov', 'Donald Knuth', 'Frances Allen', 'Ken Thompson'])[1 + g % 8],
       round(((g * 7919) % 2000000) / 100.0, 2),
       CASE WHEN g % 50 = 0 THEN 'customer read the card ' || pan || ' over the phone'
            WHEN g % 7 = 0 THEN 'refund requested'
            WHEN g % 11 = 0 THEN 'flagged by velocity rule'
            ELSE NULL END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes'
FROM generate_series(1, 1200) AS g,
LATERAL (SELECT CASE g % 4
                  WHEN 0 THEN '411111' || lpad(((g * 104729) % 1000000000)::text, 9, '0')
                  WHEN 1 THEN '555555' || lpad(((g * 104729) % 1000000000)::text, 9, '0')
                  WHEN 2 THEN '378282' || lpad(((g * 104729) % 100000000)::text, 8, '0')
                  ELSE        '601111' || lpad(((g * 104729) % 1000000000)::text, 9, '0')
                END AS partial) AS p,
LATERAL (SELECT p.partial || pg_temp.luhn_check_digit(p.partial) AS pan) AS c
WHERE NOT EXISTS (SELECT 1 FROM public.payments);

GRANT USAGE ON SCHEMA public TO fraud_agent, payments_admin;
GRANT SELECT ON public.payments TO fraud_agent, payments_admin;
GRANT INSERT, UPDATE, DELETE ON public.payments TO payments_admin;

\if :with_extension
SELECT NOT EXISTS (SELECT 1 FROM hoop.masked_columns
                   WHERE schema_name = 'public' AND table_name = 'payments'
                     AND column_name = 'card_number') AS need_mask \gset
\if :need_mask
SELECT hoop_mask('public.payments'::regclass, 'card_number', 'pan_last4');
\endif
\endif
