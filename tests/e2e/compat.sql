-- The psql leg of the client compatibility script (run with -a; output compared).
\set VERBOSITY default
DROP SCHEMA IF EXISTS :schema CASCADE;
CREATE SCHEMA :schema;
SET search_path = :schema;
CREATE TABLE t(id int primary key, n numeric(12,2), f float8, b bytea, ts timestamptz, j jsonb, a int[], u uuid, txt text);
INSERT INTO t SELECT g, g * 10.07, g * 1.5, decode(lpad(to_hex(g), 2, '0') || '00ff', 'hex'),
       timestamptz '2024-01-01 00:00+00' + g * interval '1 hour', jsonb_build_object('k', g, 's', 'é'),
       ARRAY[g, g + 1], lpad(to_hex(g), 32, '0')::uuid, 'héllo ' || g
FROM generate_series(1, 20) g;
SELECT * FROM t ORDER BY id;
PREPARE sel(int) AS SELECT txt, n FROM t WHERE id = $1;
EXECUTE sel(3);
EXECUTE sel(5);
BEGIN;
INSERT INTO t(id) VALUES (100);
ROLLBACK;
SELECT count(*) FROM t;
SELECT 1/0;
SELECT 42;
COPY (SELECT id, txt FROM t ORDER BY id) TO STDOUT;
CREATE TABLE c(id int, txt text);
\copy c from stdin
1	one
2	two
\.
SELECT count(*), sum(id) FROM c;
LISTEN ch;
NOTIFY ch, 'hello';
SELECT 'after notify';
DROP SCHEMA :schema CASCADE;
