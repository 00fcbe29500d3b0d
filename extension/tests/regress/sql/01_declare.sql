-- Declaring, changing and removing masking policies.
\set VERBOSITY terse
CREATE TABLE scratch.cards (id int, pan varchar(19), pan2 char(16), amount int, note text);
INSERT INTO scratch.cards VALUES (1, :'pan1', :'pan2', 10, 'n');
SELECT hoop_mask('scratch.cards', 'amount', 'pan_last4');
SELECT hoop_mask('scratch.cards', 'missing', 'pan_last4');
SELECT hoop_mask('scratch.cards', 'pan', 'rot13');
SELECT hoop_mask('public.payments_view', 'card_number', 'redact');
SELECT hoop_mask('scratch.cards', 'pan', 'pan_token');
SELECT hoop_mask('scratch.cards', 'pan', 'pan_bin_last4');
SELECT hoop_mask('scratch.cards', 'pan2');
SELECT table_name, column_name, strategy FROM hoop.masked_columns ORDER BY table_name, column_name;
-- Calling it again changes the strategy.
SELECT hoop_mask('scratch.cards', 'pan', 'redact');
SELECT strategy FROM hoop.masked_columns WHERE table_name = 'cards' AND column_name = 'pan';
-- Renames follow (keyed by OID and attribute number).
ALTER TABLE scratch.cards RENAME COLUMN pan TO card;
ALTER TABLE scratch.cards RENAME TO cards_renamed;
SELECT table_name, column_name, strategy FROM hoop.masked_columns WHERE schema_name = 'scratch' ORDER BY column_name;
-- A masked column must stay text-like.
ALTER TABLE scratch.cards_renamed ALTER COLUMN card TYPE bytea USING card::bytea;
-- Only the owner (or a superuser) may declare.
GRANT SELECT ON scratch.cards_renamed TO outsider;
SET ROLE outsider;
SELECT hoop_unmask('scratch.cards_renamed', 'card');
SELECT hoop_protect('public.merchants');
RESET ROLE;
ALTER TABLE scratch.cards_renamed OWNER TO payments_admin;
SET ROLE payments_admin;
SELECT hoop_unmask('scratch.cards_renamed', 'pan2');
SELECT hoop_unmask('scratch.cards_renamed', 'pan2');
RESET ROLE;
-- Statistics never keep raw values: ANALYZE skips masked columns.
ANALYZE scratch.cards_renamed;
ANALYZE public.payments;
SELECT attname, count(*) FROM pg_stats WHERE tablename IN ('payments', 'cards_renamed') GROUP BY attname ORDER BY attname;
SELECT count(*) AS card_stats FROM pg_statistic s JOIN pg_attribute a ON a.attrelid = s.starelid AND a.attnum = s.staattnum
 WHERE s.starelid = 'public.payments'::regclass AND a.attname = 'card_number';
SELECT attname, attstattarget FROM pg_attribute WHERE attrelid = 'public.payments'::regclass AND attname = 'card_number';
-- Dropping the column or the table removes the policy.
ALTER TABLE scratch.cards_renamed DROP COLUMN card;
SELECT count(*) AS policies_left FROM hoop.masked_columns WHERE schema_name = 'scratch';
SELECT hoop_mask('scratch.cards_renamed', 'note', 'redact');
DROP TABLE scratch.cards_renamed;
SELECT count(*) AS policies_left FROM hoop.masked_columns WHERE schema_name = 'scratch';
-- Every change is recorded.
SELECT action, table_name, column_name, strategy, previous_strategy
  FROM hoop.policy_history WHERE table_name NOT LIKE 'public.%' ORDER BY id;
-- Partitions follow their partitioned table.
CREATE TABLE scratch.parted (id int, pan text) PARTITION BY RANGE (id);
CREATE TABLE scratch.parted_1 PARTITION OF scratch.parted FOR VALUES FROM (0) TO (100);
INSERT INTO scratch.parted VALUES (1, :'pan4');
SELECT hoop_mask('scratch.parted', 'pan', 'pan_last4');
GRANT SELECT ON scratch.parted, scratch.parted_1 TO fraud_agent;
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
SELECT pan FROM scratch.parted;
SELECT pan FROM scratch.parted_1;
