-- The signed session token.
\set VERBOSITY terse
SELECT pg_backend_pid() AS pid \gset
SET ROLE fraud_agent;
-- Tokens that must be refused. (Error messages name pids and times, so only
-- the SQLSTATE is shown.)
\set VERBOSITY sqlstate
\set expired `:signer --pid :pid --role fraud_agent --db :DBNAME --ttl -60 --issued-offset -120`
SET hoop.session = :'expired';
\set wrongkey `:signer --kid regress --pid :pid --role fraud_agent --db :DBNAME --seed-base64 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=`
SET hoop.session = :'wrongkey';
\set unknownkid `:signer --kid nobody --pid :pid --role fraud_agent --db :DBNAME`
SET hoop.session = :'unknownkid';
SELECT :pid + 1 AS otherpid \gset
\set wrongpid `:signer --pid :otherpid --role fraud_agent --db :DBNAME`
SET hoop.session = :'wrongpid';
\set wrongrole `:signer --pid :pid --role payments_admin --db :DBNAME`
SET hoop.session = :'wrongrole';
\set wrongdb `:signer --pid :pid --role fraud_agent --db postgres`
SET hoop.session = :'wrongdb';
SET hoop.session = 'garbage';
SET hoop.session = 'hoop1.e30.AAAA';
-- Altered claims: the payload of one token with the signature of another.
\set plain `:signer --pid :pid --role fraud_agent --db :DBNAME`
\set wider `:signer --pid :pid --role fraud_agent --db :DBNAME --unmask public.payments.card_number`
SELECT split_part(:'plain', '.', 1) || '.' || split_part(:'wider', '.', 2) || '.' || split_part(:'plain', '.', 3) AS altered \gset
SET hoop.session = :'altered';
\set VERBOSITY terse
SELECT hoop.session_info() IS NULL AS still_no_session;
SELECT count(*) FROM public.payments;
-- A valid token.
SET hoop.session = :'plain';
SELECT (hoop.session_info()).subject, (hoop.session_info()).role, (hoop.session_info()).groups,
       (hoop.session_info()).expires_at > now() AS valid;
SELECT count(*) FROM public.payments;
-- The token cannot be read back.
SHOW hoop.session;
SELECT current_setting('hoop.session');
SELECT count(*) FROM pg_settings WHERE name = 'hoop.session';
SELECT count(*) FROM pg_show_all_settings() WHERE name = 'hoop.session';
-- Nor cleared, reset or downgraded.
RESET hoop.session;
SET hoop.session = '';
SET hoop.session TO DEFAULT;
SELECT set_config('hoop.session', '', false);
RESET ALL;
DISCARD ALL;
BEGIN;
SET LOCAL hoop.session = '';
ROLLBACK;
SELECT (hoop.session_info()).subject AS still_agent;
-- Replacing it with a bad token fails and keeps the session.
\set VERBOSITY sqlstate
SET hoop.session = :'expired';
\set VERBOSITY terse
SET hoop.session = :'altered';
SELECT (hoop.session_info()).subject AS still_agent;
-- Replacing it with another valid token for this backend works.
\set second `:signer --pid :pid --role fraud_agent --db :DBNAME --sub agent-8`
SET hoop.session = :'second';
SELECT (hoop.session_info()).subject AS now_agent_8;
-- A token copied to another connection is worthless.
\c
SET ROLE fraud_agent;
\set VERBOSITY sqlstate
SET hoop.session = :'second';
\set VERBOSITY terse
SELECT hoop.session_info() IS NULL AS no_session;
-- Even a superuser's own session token is never shown.
\c
SELECT pg_backend_pid() AS pid \gset
\set su `:signer --pid :pid --role postgres --db :DBNAME`
SET hoop.session = :'su';
SHOW hoop.session;
SELECT (hoop.session_info()).role;
