-- hoop SQL API (runs last in CREATE EXTENSION hoop, after the functions
-- written in Rust exist).

GRANT USAGE ON SCHEMA hoop TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Declaring policies. In pg_catalog so they are found whatever the
-- search_path and cannot be shadowed. The checks (owner or superuser, column
-- type, strategy) are done by the hoop._declare_* functions as the caller.

CREATE FUNCTION pg_catalog.hoop_mask(relation regclass, column_name name, strategy text DEFAULT 'pan_last4')
RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT hoop._declare_mask($1::oid, $2::text, $3) $$;
COMMENT ON FUNCTION pg_catalog.hoop_mask(regclass, name, text) IS
    'hoop: mask a card-number column (pan_last4, pan_bin_last4, pan_token, redact); calling it again changes the strategy';

CREATE FUNCTION pg_catalog.hoop_unmask(relation regclass, column_name name)
RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT hoop._declare_unmask($1::oid, $2::text) $$;
COMMENT ON FUNCTION pg_catalog.hoop_unmask(regclass, name) IS 'hoop: stop masking a column';

CREATE FUNCTION pg_catalog.hoop_protect(relation regclass)
RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT hoop._declare_protect($1::oid) $$;
COMMENT ON FUNCTION pg_catalog.hoop_protect(regclass) IS
    'hoop: require a gateway session for a table that has no masked column';

CREATE FUNCTION pg_catalog.hoop_unprotect(relation regclass)
RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT hoop._declare_unprotect($1::oid) $$;
COMMENT ON FUNCTION pg_catalog.hoop_unprotect(regclass) IS
    'hoop: undo hoop_protect (a table with masked columns stays protected)';

-- ---------------------------------------------------------------------------
-- Catalog writes, run by the hoop._declare_* functions as the catalog owner
-- once they have checked the caller. Never executable by PUBLIC.

-- No histogram or most-common-values list may keep raw values: the column's
-- statistics target becomes 0 (ANALYZE skips it) and its statistics go.
CREATE FUNCTION hoop._hide_statistics(p_relid oid, p_column name)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS 0', p_relid::regclass, p_column);
    DELETE FROM pg_statistic s
     USING (SELECT p_relid AS relid UNION SELECT t.relid::oid FROM pg_partition_tree(p_relid) t) tree,
           pg_attribute a
     WHERE s.starelid = tree.relid
       AND a.attrelid = tree.relid AND a.attname = p_column AND s.staattnum = a.attnum;
END
$$;

CREATE FUNCTION hoop._store_mask(p_relid oid, p_attnum int2, p_column name, p_strategy text, p_by name)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text;
BEGIN
    SELECT m.strategy INTO previous
      FROM hoop.masked_column_rules m WHERE m.relid = p_relid AND m.attnum = p_attnum;
    INSERT INTO hoop.masked_column_rules (relid, attnum, column_name, strategy, declared_by)
    VALUES (p_relid, p_attnum, p_column, p_strategy, p_by)
    ON CONFLICT (relid, attnum) DO UPDATE
       SET strategy = EXCLUDED.strategy, column_name = EXCLUDED.column_name,
           declared_by = EXCLUDED.declared_by, declared_at = now();
    INSERT INTO hoop.policy_history (changed_by, action, relid, table_name, column_name, strategy, previous_strategy)
    VALUES (p_by, 'mask', p_relid, p_relid::regclass::text, p_column, p_strategy, previous);
    PERFORM hoop._hide_statistics(p_relid, p_column);
    RETURN previous;
END
$$;

CREATE FUNCTION hoop._drop_mask(p_relid oid, p_column name, p_by name)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text;
BEGIN
    DELETE FROM hoop.masked_column_rules m
     USING pg_attribute a
     WHERE m.relid = p_relid AND a.attrelid = p_relid AND a.attname = p_column AND m.attnum = a.attnum
    RETURNING m.strategy INTO previous;
    IF previous IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO hoop.policy_history (changed_by, action, relid, table_name, column_name, previous_strategy)
    VALUES (p_by, 'unmask', p_relid, p_relid::regclass::text, p_column, previous);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS -1', p_relid::regclass, p_column);
    RETURN previous;
END
$$;

CREATE FUNCTION hoop._store_protect(p_relid oid, p_by name)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO hoop.protected_table_rules (relid, declared_by) VALUES (p_relid, p_by)
    ON CONFLICT (relid) DO NOTHING;
    INSERT INTO hoop.policy_history (changed_by, action, relid, table_name)
    VALUES (p_by, 'protect', p_relid, p_relid::regclass::text);
    RETURN NULL;
END
$$;

CREATE FUNCTION hoop._drop_protect(p_relid oid, p_by name)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM hoop.protected_table_rules WHERE relid = p_relid;
    INSERT INTO hoop.policy_history (changed_by, action, relid, table_name)
    VALUES (p_by, 'unprotect', p_relid, p_relid::regclass::text);
    RETURN CASE WHEN EXISTS (SELECT 1 FROM hoop.masked_column_rules WHERE relid = p_relid)
                THEN 'masked' END;
END
$$;

REVOKE ALL ON FUNCTION hoop._hide_statistics(oid, name), hoop._store_mask(oid, int2, name, text, name),
    hoop._drop_mask(oid, name, name), hoop._store_protect(oid, name), hoop._drop_protect(oid, name),
    hoop._invalidate_relation(oid)
    FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- What is masked, readable by everyone (the gateway loads it).

CREATE VIEW hoop.masked_columns AS
SELECT m.relid::oid   AS relid,
       m.attnum       AS attnum,
       n.nspname      AS schema_name,
       c.relname      AS table_name,
       a.attname      AS column_name,
       m.strategy     AS strategy,
       m.declared_by  AS declared_by,
       m.declared_at  AS declared_at
  FROM hoop.masked_column_rules m
  JOIN pg_catalog.pg_class c ON c.oid = m.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = m.relid AND a.attnum = m.attnum AND NOT a.attisdropped;

CREATE VIEW hoop.protected_tables AS
SELECT DISTINCT ON (p.relid)
       p.relid        AS relid,
       n.nspname      AS schema_name,
       c.relname      AS table_name,
       EXISTS (SELECT 1 FROM hoop.protected_table_rules x WHERE x.relid = p.relid) AS explicitly_protected,
       (SELECT count(*) FROM hoop.masked_column_rules m WHERE m.relid = p.relid)::int AS masked_columns
  FROM (SELECT relid::oid AS relid FROM hoop.masked_column_rules
        UNION SELECT relid::oid FROM hoop.protected_table_rules) p
  JOIN pg_catalog.pg_class c ON c.oid = p.relid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace;

-- Policy changes, without values. Readable by superusers only (grant it to auditors).
CREATE VIEW hoop.history AS SELECT * FROM hoop.policy_history;
REVOKE ALL ON hoop.history FROM PUBLIC;

GRANT SELECT ON hoop.masked_columns, hoop.protected_tables TO PUBLIC;

-- ---------------------------------------------------------------------------
-- The current gateway session's verified claims, or NULL.

CREATE FUNCTION hoop.session_info()
RETURNS hoop.session_claims LANGUAGE sql STABLE
AS $$
    SELECT (c->>'session_id',
            c->>'subject',
            ARRAY(SELECT jsonb_array_elements_text(c->'groups')),
            c->>'role',
            c->>'database',
            ARRAY(SELECT jsonb_array_elements_text(c->'unmask')),
            to_timestamp((c->>'issued_at')::bigint),
            to_timestamp((c->>'expires_at')::bigint))::hoop.session_claims
      FROM (SELECT hoop._session_claims() AS c) s
     WHERE c IS NOT NULL
$$;

-- ---------------------------------------------------------------------------
-- Keeping policies right when the catalog or the tables change.

-- Restores (and manual inserts) name the column; the attribute number is
-- looked up again, since it can differ in the restored table.
CREATE FUNCTION hoop._normalize_rule()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_attnum int2;
BEGIN
    SELECT a.attnum INTO found_attnum
      FROM pg_attribute a
     WHERE a.attrelid = NEW.relid AND a.attname = NEW.column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF found_attnum IS NULL THEN
        RAISE EXCEPTION 'hoop: column % of % does not exist', NEW.column_name, NEW.relid
              USING ERRCODE = '42703';
    END IF;
    NEW.attnum := found_attnum;
    RETURN NEW;
END
$$;

CREATE TRIGGER normalize_rule BEFORE INSERT ON hoop.masked_column_rules
    FOR EACH ROW EXECUTE FUNCTION hoop._normalize_rule();

-- Every change reaches every backend: cached policies and cached plans.
CREATE FUNCTION hoop._rules_changed()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM hoop._invalidate_relation(NEW.relid::oid);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM hoop._invalidate_relation(OLD.relid::oid);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER rules_changed AFTER INSERT OR UPDATE OR DELETE ON hoop.masked_column_rules
    FOR EACH ROW EXECUTE FUNCTION hoop._rules_changed();
CREATE TRIGGER rules_changed AFTER INSERT OR UPDATE OR DELETE ON hoop.protected_table_rules
    FOR EACH ROW EXECUTE FUNCTION hoop._rules_changed();

-- Dropping a table or column removes its policy.
CREATE FUNCTION hoop._on_sql_drop()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped record;
BEGIN
    FOR dropped IN
        SELECT d.objid, d.objsubid, d.object_identity
          FROM pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND hoop._declared(d.objid)
    LOOP
        WITH gone AS (
            DELETE FROM hoop.masked_column_rules m
             WHERE m.relid = dropped.objid AND (dropped.objsubid = 0 OR m.attnum = dropped.objsubid)
            RETURNING m.column_name, m.strategy
        )
        INSERT INTO hoop.policy_history (changed_by, action, relid, table_name, column_name, previous_strategy)
        SELECT current_user, 'drop', dropped.objid,
               CASE WHEN dropped.objsubid = 0 THEN dropped.object_identity
                    ELSE dropped.objid::regclass::text END,
               g.column_name, g.strategy
          FROM gone g;
        IF dropped.objsubid = 0 THEN
            DELETE FROM hoop.protected_table_rules p WHERE p.relid = dropped.objid;
        END IF;
    END LOOP;
END
$$;

CREATE EVENT TRIGGER hoop_drop_policies ON sql_drop EXECUTE FUNCTION hoop._on_sql_drop();

-- Renames keep the column name in step; a masked column must stay text-like.
CREATE FUNCTION hoop._on_alter_table()
RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
                    WHERE c.classid = 'pg_catalog.pg_class'::regclass AND hoop._declared(c.objid)) THEN
        RETURN;  -- not a table with a policy: nothing of hoop's is touched
    END IF;
    UPDATE hoop.masked_column_rules m
       SET column_name = a.attname
      FROM pg_attribute a
     WHERE a.attrelid = m.relid AND a.attnum = m.attnum AND a.attname <> m.column_name;
    SELECT m.relid, a.attname, format_type(a.atttypid, a.atttypmod) AS type_name INTO bad
      FROM hoop.masked_column_rules m
      JOIN pg_attribute a ON a.attrelid = m.relid AND a.attnum = m.attnum
      JOIN pg_type t ON t.oid = a.atttypid
     WHERE (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)
           NOT IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'hoop: column % of % is masked and must stay text, varchar or char (not %)',
              bad.attname, bad.relid, bad.type_name
              USING ERRCODE = '42804', HINT = 'Call hoop_unmask() first.';
    END IF;
END
$$;

CREATE EVENT TRIGGER hoop_alter_table ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION hoop._on_alter_table();
