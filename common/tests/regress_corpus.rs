//! The detector's false positives on PostgreSQL's own regression suite: the
//! expected output and data files are ordinary database content (numbers of
//! every type, timestamps, JSON, geometry) with no card numbers in them, so
//! every match is a false positive. Run with the regression sources that
//! setup keeps:
//!
//! `HOOP_PG17_REGRESS=/var/cache/hoop/pg17-regress cargo test -p hoop-common
//! --test regress_corpus -- --ignored --nocapture`

use hoop_common::mask::{Masker, Strategy};
use hoop_common::pan::find_pans;

#[test]
#[ignore = "needs the PostgreSQL regression sources (HOOP_PG17_REGRESS)"]
fn false_positives_on_the_regression_suite() {
    let root = std::env::var("HOOP_PG17_REGRESS").expect("HOOP_PG17_REGRESS");
    let masker = Masker::new(Strategy::PanLast4, None).expect("no key needed");
    let (mut files, mut lines, mut long_numbers, mut matches) = (0, 0, 0, 0);
    for dir in ["expected", "data"] {
        let Ok(entries) = std::fs::read_dir(format!("{root}/{dir}")) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read(entry.path()) else {
                continue;
            };
            files += 1;
            for line in text.split(|&b| b == b'\n') {
                lines += 1;
                long_numbers += line
                    .split(|b| !b.is_ascii_digit())
                    .filter(|run| (13..=19).contains(&run.len()))
                    .count();
                let found = find_pans(line).len();
                if found > 0 {
                    matches += found;
                    println!(
                        "{}: {}",
                        entry.path().display(),
                        String::from_utf8_lossy(&masker.mask_bytes(line))
                    );
                }
            }
        }
    }
    println!(
        "{files} files, {lines} lines, {long_numbers} runs of 13-19 digits, {matches} matches"
    );
    assert!(files > 0, "no regression files under {root}");
}
