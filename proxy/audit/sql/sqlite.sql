-- hoop audit store, SQLite. One row per chain entry; hashes are raw bytes
-- (BLOB) so no hex text that could resemble a number sits on disk.
CREATE TABLE IF NOT EXISTS audit_entries (
    instance   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    time_us    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    session_id TEXT,
    payload    TEXT    NOT NULL,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL,
    PRIMARY KEY (instance, seq)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS audit_entries_time ON audit_entries (time_us);
-- No index on session_id: with many sessions writing at once every append
-- lands on a different leaf page of it, and each dirty page costs a whole
-- page in the WAL at commit (about 5 KB per record with 256 sessions
-- against 0.9 KB without). Replaying a session scans the table instead;
-- stores created before this dropped the index here.
DROP INDEX IF EXISTS audit_entries_session;

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    instance  TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    length    INTEGER NOT NULL,
    head_hash BLOB    NOT NULL,
    time_us   INTEGER NOT NULL,
    key_id    TEXT    NOT NULL,
    signature TEXT    NOT NULL
);

CREATE INDEX IF NOT EXISTS audit_checkpoints_instance ON audit_checkpoints (instance, length);
