-- The extension, its parameters and its SQL API.
\set VERBOSITY terse
SELECT extname, extversion IS NOT NULL AS has_version, extnamespace::regnamespace AS schema
  FROM pg_extension WHERE extname = 'hoop';
SELECT name, context, setting FROM pg_settings WHERE name LIKE 'hoop.%' AND name <> 'hoop.trusted_keys' ORDER BY name;
SELECT setting <> '' AS trusted_keys_configured FROM pg_settings WHERE name = 'hoop.trusted_keys';
-- hoop.session and hoop.token_key are hidden from listings.
SELECT count(*) AS hidden FROM pg_settings WHERE name IN ('hoop.session', 'hoop.token_key');
SELECT schema_name, table_name, column_name, strategy, declared_by FROM hoop.masked_columns;
SELECT schema_name, table_name, explicitly_protected, masked_columns FROM hoop.protected_tables ORDER BY table_name;
SELECT hoop.session_info() IS NULL AS no_session;
-- The strategies, from the same code the gateway runs.
SELECT s AS strategy, hoop.mask_pan(:'pan1', s) AS masked
  FROM unnest(ARRAY['pan_last4', 'pan_bin_last4', 'redact']) s;
SELECT hoop.mask_pan(:'pan1', 'pan_token');
SELECT hoop.mask_pan(:'pan1', 'rot13');
SET hoop.token_key = 'regression-token-key-0123456789';
SELECT hoop.mask_pan(:'pan1', 'pan_token') = hoop.mask_pan(:'pan1', 'pan_token') AS deterministic,
       hoop.mask_pan(:'pan1', 'pan_token') LIKE 'tok\_%' AS is_token;
SHOW hoop.token_key;
SELECT hoop.mask_text('paid with ' || :'pan2' || ' yesterday') AS free_text;
SELECT hoop.contains_pan(:'pan3') AS detects, hoop.contains_pan('order 12345') AS ignores;
-- Ordinary roles cannot touch the catalog.
SET ROLE outsider;
SELECT count(*) FROM hoop.masked_column_rules;
INSERT INTO hoop.protected_table_rules VALUES ('public.merchants', 'outsider');
SELECT count(*) AS visible_rules FROM hoop.masked_columns;
SELECT hoop_unmask('public.payments', 'card_number');
RESET ROLE;
