-- No card number reaches the server log (scripts/regress.sh scans the whole
-- log for the test card numbers after the run). Each statement below makes
-- Postgres log a message or a STATEMENT line built from a card number.
\set VERBOSITY terse
SELECT :'pan1'::int;
CREATE TABLE uq (x numeric PRIMARY KEY, t text UNIQUE);
INSERT INTO uq VALUES (:'pan2', 'a');
INSERT INTO uq VALUES (:'pan2', 'b');
INSERT INTO uq VALUES (1, :'pan3');
INSERT INTO uq VALUES (2, :'pan3');
SELECT 1/0 AS boom, :'pan4' AS literal;
SET my.pan = :'pan5';
DO $$ BEGIN RAISE WARNING 'card %', current_setting('my.pan'); END $$;
DO $$ BEGIN RAISE EXCEPTION 'card %', current_setting('my.pan') USING DETAIL = 'again ' || current_setting('my.pan'), HINT = current_setting('my.pan'); END $$;
PREPARE p(text) AS SELECT $1::int;
EXECUTE p(:'pan5');
