-- Opens a new backend and establishes a gateway session for :role, as the
-- gateway does: SET ROLE, then SET hoop.session to a token signed for this
-- backend's pid (:unmask holds extra signer options, e.g. --unmask …).
\c
SELECT pg_backend_pid() AS pid \gset
SET ROLE :"role";
\set tok `:signer --pid :pid --role :role --db :DBNAME --sub agent-7 --sid 00000000000000000000000000000007 --group fraud-agents :unmask`
SET hoop.session = :'tok';
