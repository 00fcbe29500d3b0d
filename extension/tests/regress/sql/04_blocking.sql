-- Commands refused in gateway sessions (the gateway refuses them too; this
-- is the backstop).
\set VERBOSITY terse
\set role fraud_agent
\set unmask ''
\ir include/gateway.sql
SET ROLE payments_admin;
SET ROLE NONE;
RESET ROLE;
SET SESSION AUTHORIZATION payments_admin;
SET SESSION AUTHORIZATION DEFAULT;
RESET SESSION AUTHORIZATION;
SET LOCAL ROLE payments_admin;
SELECT set_config('role', 'payments_admin', false);
SELECT set_config('session_authorization', 'postgres', false);
SELECT set_config('hoop.enforce_superuser', 'off', false);
SELECT set_config(lower('ROLE'), 'payments_admin', false);
SELECT * FROM set_config('ro' || 'le', 'payments_admin', false);
DO $$ BEGIN PERFORM set_config('role', 'payments_admin', false); END $$;
DO $$ BEGIN EXECUTE 'SET ROLE payments_admin'; END $$;
SET hoop.enforce_superuser = off;
SET hoop.exempt_roles = 'fraud_agent';
ALTER SYSTEM SET hoop.enforce_superuser = off;
CREATE EXTENSION IF NOT EXISTS plpgsql;
ALTER EXTENSION hoop UPDATE;
DROP EXTENSION hoop;
CREATE ROLE sneaky;
ALTER ROLE fraud_agent SUPERUSER;
DROP ROLE outsider;
GRANT payments_admin TO fraud_agent;
COPY (SELECT 1) TO PROGRAM 'id';
COPY public.merchants FROM PROGRAM 'id';
COPY (SELECT 1) TO '/tmp/hoop-regress-out';
COPY public.merchants FROM '/etc/passwd';
LOAD 'hoop';
DISCARD ALL;
CREATE FUNCTION scratch.elevate() RETURNS int LANGUAGE sql SET role = 'payments_admin' AS 'SELECT 1';
CREATE TRIGGER t BEFORE INSERT ON public.payments FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
CREATE RULE r AS ON INSERT TO public.payments DO ALSO NOTHING;
-- The role and the session are unchanged, and ordinary work goes on.
SELECT current_user, session_user <> current_user AS role_was_set, (hoop.session_info()).subject;
SET work_mem = '8MB';
SELECT set_config('application_name', 'agent', false);
SET statement_timeout = '10s';
RESET ALL;
SELECT current_user;
COPY (SELECT name FROM public.merchants) TO STDOUT;
CREATE TABLE scratch.notes (id int);
DROP TABLE scratch.notes;
-- application_name is visible to every role (pg_stat_activity): only a literal.
SELECT set_config('application_name', 'agent-tool', false);
SELECT set_config('application_name', split_part(note, ' ', 1), false) FROM public.payments WHERE id = 1;
SELECT set_config('application_name', card_number, false) FROM public.payments WHERE id = 1;
