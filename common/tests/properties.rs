//! Properties that must hold for every input, not just the ones we thought
//! of: detection and verification never panic, masking is idempotent and
//! never lets a card number through.

use std::borrow::Cow;

use hoop_common::mask::{Masker, Strategy as MaskStrategy};
use hoop_common::pan::{brand_of, contains_pan, find_pans, luhn_valid};
use hoop_common::token::{SessionClaims, SessionSigner, TrustedKeys, TOKEN_VERSION};
use proptest::prelude::*;

fn maskers() -> Vec<Masker> {
    MaskStrategy::ALL
        .into_iter()
        .map(|s| Masker::new(s, Some(b"property test key, 32 bytes long")).expect("masker"))
        .collect()
}

/// Completes `body` with the Luhn check digit.
fn with_check_digit(body: &str) -> String {
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|candidate| luhn_valid(candidate.as_bytes()))
        .expect("exactly one check digit fits")
}

/// A Luhn-valid card number of a real brand, as bare digits.
fn card_number() -> impl proptest::strategy::Strategy<Value = String> {
    let prefixes_and_lengths: Vec<(&str, usize)> = vec![
        ("4", 16),
        ("4", 13),
        ("4", 19),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("2720", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("65", 19),
        ("644", 17),
        ("3528", 16),
        ("3589", 18),
        ("36", 14),
        ("300", 14),
        ("38", 16),
        ("62", 16),
        ("622126", 19),
        ("6759", 13),
        ("5018", 19),
    ];
    (
        proptest::sample::select(prefixes_and_lengths),
        proptest::collection::vec(0u8..10, 19),
    )
        .prop_map(|((prefix, length), digits)| {
            let mut body = prefix.to_owned();
            for d in digits.into_iter().take(length - 1 - prefix.len()) {
                body.push(char::from(b'0' + d));
            }
            with_check_digit(&body)
        })
}

/// A card number written the way a person would: bare, or in 4-4-4-4.
fn written_card() -> impl proptest::strategy::Strategy<Value = String> {
    (card_number(), prop_oneof![Just(""), Just(" "), Just("-")]).prop_map(|(card, sep)| {
        if card.len() != 16 || sep.is_empty() {
            return card;
        }
        card.as_bytes()
            .chunks(4)
            .map(|group| std::str::from_utf8(group).expect("digits"))
            .collect::<Vec<_>>()
            .join(sep)
    })
}

/// Text mixing card numbers with everything that surrounds them in practice.
fn pan_rich_text() -> impl proptest::strategy::Strategy<Value = String> {
    let fragment = prop_oneof![
        3 => written_card(),
        2 => "[0-9]{1,20}",
        2 => prop_oneof![
            Just(" "), Just("-"), Just("."), Just(","), Just("+"), Just("*"),
            Just("\n"), Just("  "), Just("_"), Just("\""), Just(":")
        ]
        .prop_map(str::to_owned),
        1 => "[a-zA-Z]{1,6}",
        1 => prop_oneof![Just("é"), Just("₂"), Just("日本"), Just("\u{0}")].prop_map(str::to_owned),
        1 => Just("1700000000000".to_owned()),
        1 => Just("550e8400-e29b-41d4-a716-446655440000".to_owned()),
        1 => Just("DE89 3704 0044 0532 0130 00".to_owned()),
    ];
    proptest::collection::vec(fragment, 0..30).prop_map(|parts| parts.concat())
}

fn ascii_digits(text: &str) -> usize {
    text.bytes().filter(u8::is_ascii_digit).count()
}

proptest! {
    #[test]
    fn find_pans_never_panics_and_reports_real_cards(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let found = find_pans(&input);
        prop_assert_eq!(contains_pan(&input), !found.is_empty());
        let mut previous_end = 0;
        for m in found {
            prop_assert!(previous_end <= m.start && m.start < m.end && m.end <= input.len());
            let digits: Vec<u8> = input[m.start..m.end].iter().copied().filter(u8::is_ascii_digit).collect();
            prop_assert_eq!(brand_of(&digits), Some(m.brand));
            prop_assert!(luhn_valid(&digits));
            previous_end = m.end;
        }
    }

    #[test]
    fn find_pans_on_digit_heavy_bytes(input in proptest::collection::vec(prop_oneof![b'0'..=b'9', Just(b' '), Just(b'-'), Just(b'.'), Just(b'a')], 0..512)) {
        for m in find_pans(&input) {
            let digits: Vec<u8> = input[m.start..m.end].iter().copied().filter(u8::is_ascii_digit).collect();
            prop_assert!((13..=19).contains(&digits.len()));
            prop_assert!(luhn_valid(&digits));
        }
    }

    #[test]
    fn written_cards_are_found(card in written_card(), before in "[ (\"':=/]?", after in "[ )\"',;/]?") {
        let text = format!("{before}{card}{after}");
        let found = find_pans(text.as_bytes());
        prop_assert_eq!(found.len(), 1, "{:?}", text);
        prop_assert_eq!(&text[found[0].start..found[0].end], card.as_str());
    }

    #[test]
    fn mask_text_leaves_no_pan_and_is_idempotent(text in pan_rich_text()) {
        for masker in maskers() {
            let once = masker.mask_text(&text);
            prop_assert!(find_pans(once.as_bytes()).is_empty(), "{:?} -> {:?}", text, once);
            let twice = masker.mask_text(&once);
            prop_assert!(matches!(twice, Cow::Borrowed(_)));
            prop_assert_eq!(&twice, &once);
            let as_bytes = masker.mask_bytes(text.as_bytes());
            prop_assert_eq!(as_bytes.as_ref(), once.as_bytes());
            if find_pans(text.as_bytes()).is_empty() {
                prop_assert!(matches!(once, Cow::Borrowed(_)));
            }
            if matches!(masker.strategy(), MaskStrategy::PanLast4 | MaskStrategy::PanBinLast4) {
                // Digits become '*', nothing else changes.
                prop_assert_eq!(once.len(), text.len());
                for (before, after) in text.bytes().zip(once.bytes()) {
                    prop_assert!(before == after || (before.is_ascii_digit() && after == b'*'));
                }
            }
        }
    }

    #[test]
    fn mask_bytes_never_panics(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
        for masker in maskers() {
            let once = masker.mask_bytes(&input);
            prop_assert!(find_pans(&once).is_empty());
            let twice = masker.mask_bytes(&once);
            prop_assert_eq!(twice.as_ref(), once.as_ref());
        }
    }

    #[test]
    fn mask_value_is_idempotent_and_keeps_no_pan(value in prop_oneof![any::<String>(), pan_rich_text(), written_card()]) {
        for masker in maskers() {
            let once = masker.mask_value(&value);
            prop_assert_eq!(masker.mask_value(&once), once.clone(), "{} {:?}", masker.strategy(), value);
            prop_assert!(find_pans(once.as_bytes()).is_empty());
            let max_digits = match masker.strategy() {
                MaskStrategy::PanLast4 => 4,
                MaskStrategy::PanBinLast4 => 10,
                MaskStrategy::PanToken | MaskStrategy::Redact => 0,
            };
            prop_assert!(ascii_digits(&once) <= max_digits, "{} {:?} -> {:?}", masker.strategy(), value, once);
        }
    }

    #[test]
    fn verify_never_panics(token in prop_oneof![any::<String>(), "hoop1\\.[A-Za-z0-9_=.-]{0,200}"], pid in any::<i32>(), now in any::<i64>()) {
        let keys = TrustedKeys::parse(&SessionSigner::from_seed("k", &[1; 32]).trusted_key_entry()).expect("key");
        prop_assert!(keys.verify(&token, pid, now).is_err());
    }

    #[test]
    fn trusted_keys_parse_never_panics(text in any::<String>()) {
        let _ = TrustedKeys::parse(&text);
    }

    #[test]
    fn no_single_character_edit_of_a_token_verifies(position in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let signer = SessionSigner::from_seed("k", &[3; 32]);
        let keys = TrustedKeys::parse(&signer.trusted_key_entry()).expect("key");
        let token = signer.sign(&SessionClaims {
            v: TOKEN_VERSION,
            kid: "k".into(),
            sid: "s".into(),
            sub: "agent".into(),
            groups: vec![],
            role: "r".into(),
            db: "d".into(),
            pid: 7,
            unmask: vec![],
            iat: 0,
            exp: 100,
        });
        let mut chars: Vec<char> = token.chars().collect();
        let at = position.index(chars.len());
        prop_assume!(chars[at] != replacement);
        chars[at] = replacement;
        let altered: String = chars.into_iter().collect();
        prop_assert!(keys.verify(&altered, 7, 50).is_err());
    }
}

/// A card number written with full-width digits, no-break or zero-width
/// spaces, or ASCII digits, mixed with other text.
fn wide_text() -> impl proptest::strategy::Strategy<Value = String> {
    let wide = |card: String| -> String {
        card.chars()
            .map(|c| char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap_or(c))
            .collect()
    };
    let fragment = prop_oneof![
        2 => card_number().prop_map(wide),
        2 => card_number(),
        2 => prop_oneof![
            Just("\u{a0}"), Just("\u{200b}"), Just("\u{3000}"), Just("\u{202f}"), Just("－"),
            Just("“"), Just("”"), Just(" "), Just("_"),
        ]
        .prop_map(str::to_owned),
        1 => "[０-９]{1,6}",
        1 => "[0-9]{1,6}",
        1 => "[a-zあ-ん]{1,4}",
    ];
    proptest::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn wide_and_invisible_forms_are_masked_in_place(text in wide_text()) {
        for m in find_pans(text.as_bytes()) {
            prop_assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
        }
        for masker in maskers() {
            let once = masker.mask_text(&text);
            prop_assert!(find_pans(once.as_bytes()).is_empty(), "{:?} -> {:?}", text, once);
            prop_assert_eq!(masker.mask_text(&once), once.clone());
            if matches!(masker.strategy(), MaskStrategy::PanLast4 | MaskStrategy::PanBinLast4) {
                prop_assert_eq!(once.len(), text.len());
            }
        }
    }
}
