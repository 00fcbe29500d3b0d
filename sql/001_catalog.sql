-- hoop catalog (runs first in CREATE EXTENSION hoop).
--
-- Policies are keyed by table (regclass: pg_dump writes the qualified name,
-- pg_restore maps it back to the new OID) and attribute number (renames
-- follow); the column name is kept in step by an event trigger so a restore
-- into a table with different attribute numbers finds the right column.
-- All three tables are extension configuration tables, so pg_dump and
-- pg_restore carry their rows. Ordinary roles cannot read or write them:
-- they use hoop_mask()/hoop_unmask()/hoop_protect() and the hoop.masked_columns view.

CREATE TABLE hoop.masked_column_rules (
    relid       regclass    NOT NULL,
    attnum      int2        NOT NULL,
    column_name name        NOT NULL,
    strategy    text        NOT NULL
        CHECK (strategy IN ('pan_last4', 'pan_bin_last4', 'pan_token', 'redact')),
    declared_by name        NOT NULL,
    declared_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relid, attnum)
);

CREATE TABLE hoop.protected_table_rules (
    relid       regclass    PRIMARY KEY,
    declared_by name        NOT NULL,
    declared_at timestamptz NOT NULL DEFAULT now()
);

-- Every policy change, in order; never values.
CREATE TABLE hoop.policy_history (
    id                bigserial   PRIMARY KEY,
    changed_at        timestamptz NOT NULL DEFAULT now(),
    changed_by        name        NOT NULL,
    action            text        NOT NULL
        CHECK (action IN ('mask', 'unmask', 'protect', 'unprotect', 'drop')),
    relid             oid         NOT NULL,
    table_name        text        NOT NULL,
    column_name       name,
    strategy          text,
    previous_strategy text
);

SELECT pg_catalog.pg_extension_config_dump('hoop.masked_column_rules', '');
SELECT pg_catalog.pg_extension_config_dump('hoop.protected_table_rules', '');
SELECT pg_catalog.pg_extension_config_dump('hoop.policy_history', '');
SELECT pg_catalog.pg_extension_config_dump('hoop.policy_history_id_seq', '');

REVOKE ALL ON hoop.masked_column_rules, hoop.protected_table_rules, hoop.policy_history FROM PUBLIC;
REVOKE ALL ON SEQUENCE hoop.policy_history_id_seq FROM PUBLIC;

-- What hoop.session_info() returns.
CREATE TYPE hoop.session_claims AS (
    session_id text,
    subject    text,
    groups     text[],
    role       text,
    database   text,
    unmask     text[],
    issued_at  timestamptz,
    expires_at timestamptz
);
