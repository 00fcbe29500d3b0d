//! Classifies every statement of PostgreSQL's regression suite and decides
//! it with the shipped rules: `cargo run --release -p hoop-policy --example
//! regress_sweep -- DIR/sql`. psql meta-command lines are dropped.
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("the regression suite's sql directory");
    let rules = hoop_policy::RuleSet::with_defaults(vec![]).expect("rules");
    let identity = hoop_policy::Identity {
        subject: "regress".into(),
        groups: vec!["regress".into()],
        ..Default::default()
    };
    let context = hoop_policy::PolicyContext::default();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let (mut total, mut errors) = (0usize, 0usize);
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut error_kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let started = Instant::now();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('\\'))
            .map(|l| format!("{l}\n"))
            .collect();
        let Ok(pieces) = pg_query::split_with_scanner(&text) else {
            continue;
        };
        for piece in pieces {
            total += 1;
            let classified = hoop_policy::classify(piece);
            if let Some(error) = classified.syntax_error() {
                errors += 1;
                let key = error
                    .message
                    .split(" at or near")
                    .next()
                    .unwrap_or("")
                    .to_owned();
                *error_kinds.entry(key).or_default() += 1;
                continue;
            }
            for facts in &classified.statements {
                *kinds
                    .entry(facts.kind.names().pop().unwrap_or_default())
                    .or_default() += 1;
            }
            let decision = hoop_policy::decide_all(&classified, &identity, &context, &rules);
            if let Some(rule) = decision.rule() {
                *by_rule.entry(rule.to_owned()).or_default() += 1;
                examples
                    .entry(rule.to_owned())
                    .or_insert_with(|| piece.chars().take(100).collect());
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "statements: {total}, rejected by the grammar: {errors}, {:.1} µs/statement",
        elapsed.as_secs_f64() * 1e6 / total as f64
    );
    println!("grammar errors by message: {error_kinds:#?}");
    println!("refused or held by hoop-defaults: {by_rule:#?}");
    println!("examples: {examples:#?}");
    println!("kinds: {kinds:?}");
}
