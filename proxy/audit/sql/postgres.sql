-- hoop audit store, PostgreSQL: a separate database several gateway
-- instances share, each appending its own chain (instance, seq).
-- Apply as the tables' owner, then grant the gateway's role INSERT and SELECT
-- on both tables (DELETE only if it purges); the gateway runs this itself
-- only when the tables are missing.
CREATE TABLE IF NOT EXISTS audit_entries (
    instance   text   NOT NULL,
    seq        bigint NOT NULL,
    time_us    bigint NOT NULL,
    kind       text   NOT NULL,
    session_id text,
    payload    text   NOT NULL,
    prev_hash  bytea  NOT NULL,
    hash       bytea  NOT NULL,
    PRIMARY KEY (instance, seq)
);

CREATE INDEX IF NOT EXISTS audit_entries_time ON audit_entries (time_us);
CREATE INDEX IF NOT EXISTS audit_entries_session ON audit_entries (session_id)
    WHERE session_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    instance  text   NOT NULL,
    kind      text   NOT NULL,
    length    bigint NOT NULL,
    head_hash bytea  NOT NULL,
    time_us   bigint NOT NULL,
    key_id    text   NOT NULL,
    signature text   NOT NULL
);

CREATE INDEX IF NOT EXISTS audit_checkpoints_instance ON audit_checkpoints (instance, length);
