-- Template database for the hoop regression suite (run once per cluster as
-- the superuser; every test file gets a fresh copy).
CREATE ROLE fraud_agent;
CREATE ROLE payments_admin;
CREATE ROLE payments_clerk;
CREATE ROLE hoop_migrator;
CREATE ROLE outsider;
CREATE DATABASE hoop_template;
\c hoop_template
CREATE EXTENSION hoop;

CREATE TABLE public.payments (
    id          bigint PRIMARY KEY,
    card_number text,
    cardholder  text,
    amount      numeric(12,2),
    note        text,
    created_at  timestamptz DEFAULT '2024-01-01 00:00:00+00'
);
INSERT INTO public.payments (id, card_number, cardholder, amount, note)
SELECT g,
       (ARRAY[:'pan1', :'pan2', :'pan3', :'pan4'])[1 + g % 4],
       'holder ' || g,
       (g * 7 % 1000) + 0.5,
       CASE WHEN g % 10 = 0 THEN 'flagged' ELSE 'ok' END
  FROM generate_series(1, 400) g;
SELECT hoop_mask('public.payments', 'card_number', 'pan_last4');
ANALYZE public.payments;

GRANT SELECT ON public.payments TO fraud_agent, payments_admin, payments_clerk, outsider, hoop_migrator;
GRANT INSERT, UPDATE, DELETE ON public.payments TO payments_admin, payments_clerk;

-- A protected table without masked columns.
CREATE TABLE public.secrets (id int, label text);
INSERT INTO public.secrets VALUES (1, 'vault');
SELECT hoop_protect('public.secrets');
GRANT SELECT ON public.secrets TO fraud_agent, outsider, hoop_migrator;

-- An unprotected table.
CREATE TABLE public.merchants (id int, name text);
INSERT INTO public.merchants VALUES (1, 'acme');
GRANT SELECT ON public.merchants TO PUBLIC;

-- Objects owned by others that read payments.
CREATE VIEW public.payments_view AS SELECT id, card_number, amount FROM public.payments;
ALTER VIEW public.payments_view OWNER TO payments_admin;
GRANT SELECT ON public.payments_view TO fraud_agent, outsider;
CREATE FUNCTION public.card_of(bigint) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    AS $$ SELECT card_number FROM public.payments WHERE id = $1 $$;

-- A playground the agents may create objects in.
CREATE SCHEMA scratch;
GRANT ALL ON SCHEMA scratch TO fraud_agent, payments_clerk, payments_admin, outsider;

-- EXPLAIN output reduced to the lines that carry expressions, with the
-- relation OID (which differs between clusters) replaced.
CREATE FUNCTION public.explain_lines(query text, do_analyze boolean DEFAULT true) RETURNS SETOF text
    LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE format('EXPLAIN (ANALYZE %s, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF) %s',
                            CASE WHEN do_analyze THEN 'true' ELSE 'false' END, query) LOOP
        IF line ~ '(Output|Filter|Gather|Sort Key|Group Key|Custom Scan|Masked Columns)' THEN
            RETURN NEXT regexp_replace(trim(line), '''\d+''::oid', '''<relid>''::oid', 'g');
        END IF;
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION public.explain_lines(text, boolean) TO PUBLIC;
