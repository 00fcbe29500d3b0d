//! Masking strategies as a user of a masked column or a masked log line sees
//! them.

use std::borrow::Cow;

use hoop_common::mask::{MaskError, Masker, Strategy, REDACTED};
use hoop_common::pan::find_pans;

const KEY: &[u8] = b"test key, 32 bytes long, really";

fn masker(strategy: Strategy) -> Masker {
    Masker::new(strategy, Some(KEY)).expect("valid masker")
}

#[test]
fn strategy_names_round_trip() {
    for strategy in Strategy::ALL {
        assert_eq!(strategy.as_str().parse::<Strategy>(), Ok(strategy));
        assert_eq!(strategy.to_string(), strategy.as_str());
        assert_eq!(masker(strategy).strategy(), strategy);
    }
    assert_eq!("PAN_LAST4".parse::<Strategy>(), Ok(Strategy::PanLast4));
    assert_eq!(
        "last4".parse::<Strategy>(),
        Err(MaskError::UnknownStrategy("last4".into()))
    );
    assert_eq!(
        "".parse::<Strategy>(),
        Err(MaskError::UnknownStrategy(String::new()))
    );
}

#[test]
fn pan_token_fails_closed_without_a_good_key() {
    assert_eq!(
        Masker::new(Strategy::PanToken, None).err(),
        Some(MaskError::MissingTokenKey)
    );
    assert_eq!(
        Masker::new(Strategy::PanToken, Some(b"short")).err(),
        Some(MaskError::TokenKeyTooShort)
    );
    assert!(Masker::new(Strategy::PanToken, Some(&[7u8; 16])).is_ok());
    // Other strategies need no key.
    for strategy in [Strategy::PanLast4, Strategy::PanBinLast4, Strategy::Redact] {
        assert!(Masker::new(strategy, None).is_ok(), "{strategy}");
    }
    assert!(MaskError::MissingTokenKey
        .to_string()
        .contains("hoop.token_key"));
}

#[test]
fn mask_value_table() {
    let cases: &[(Strategy, &str, &str)] = &[
        (Strategy::PanLast4, "4111111111111111", "************1111"),
        (
            Strategy::PanLast4,
            "4111 1111 1111 1111",
            "**** **** **** 1111",
        ),
        (
            Strategy::PanLast4,
            "4111-1111-1111-1111",
            "****-****-****-1111",
        ),
        (Strategy::PanLast4, "378282246310005", "***********0005"),
        (Strategy::PanLast4, "1234", "1234"),
        (Strategy::PanLast4, "12345", "*2345"),
        (Strategy::PanLast4, "", ""),
        (Strategy::PanLast4, "no digits", "no digits"),
        // Not a valid card: masked anyway, the column is declared.
        (Strategy::PanLast4, "4111111111111112", "************1112"),
        (
            Strategy::PanBinLast4,
            "4111111111111111",
            "411111******1111",
        ),
        (
            Strategy::PanBinLast4,
            "4111 1111 1111 1111",
            "4111 11** **** 1111",
        ),
        (
            Strategy::PanBinLast4,
            "3782 822463 10005",
            "3782 82**** *0005",
        ),
        (
            Strategy::PanBinLast4,
            "4000000000000000006",
            "400000*********0006",
        ),
        (Strategy::PanBinLast4, "411111111111", "********1111"),
        (Strategy::Redact, "4111111111111111", REDACTED),
        (Strategy::Redact, "", REDACTED),
    ];
    for &(strategy, value, expected) in cases {
        assert_eq!(
            masker(strategy).mask_value(value),
            expected,
            "{strategy} {value}"
        );
    }
}

#[test]
fn mask_value_keeps_non_ascii_text() {
    assert_eq!(
        masker(Strategy::PanLast4).mask_value("carte nº 4111 1111 1111 1111 ✓"),
        "carte nº **** **** **** 1111 ✓"
    );
}

#[test]
fn tokens_are_stable_keyed_and_digit_free() {
    let token = masker(Strategy::PanToken);
    let a = token.mask_value("4111111111111111");
    assert!(a.starts_with("tok_"), "{a}");
    assert!(!a.bytes().any(|b| b.is_ascii_digit()), "{a}");
    // Same card, any formatting, same token.
    assert_eq!(token.mask_value("4111 1111 1111 1111"), a);
    assert_eq!(token.mask_value("4111-1111-1111-1111"), a);
    // Different card, different token.
    assert_ne!(token.mask_value("4012888888881881"), a);
    // Different key, different token.
    let other = Masker::new(
        Strategy::PanToken,
        Some(b"another key, 32 bytes long......"),
    )
    .expect("valid key");
    assert_ne!(other.mask_value("4111111111111111"), a);
    // Free text gets the same token as the column value.
    assert_eq!(
        token.mask_text("card 4111 1111 1111 1111 on file"),
        format!("card {a} on file")
    );
}

#[test]
fn mask_value_is_idempotent_for_every_strategy() {
    let values = [
        "4111111111111111",
        "4111 1111 1111 1111",
        "3782-822463-10005",
        "411111******1111",
        "****1111",
        "1234567890123456789012",
        "",
        "tok_bcdf",
        "x",
    ];
    for strategy in Strategy::ALL {
        let masker = masker(strategy);
        for value in values {
            let once = masker.mask_value(value);
            assert_eq!(masker.mask_value(&once), once, "{strategy} {value}");
            assert_eq!(find_pans(once.as_bytes()), vec![], "{strategy} {value}");
        }
    }
}

#[test]
fn mask_text_replaces_only_detected_pans() {
    let text = r#"{"id":"550e8400-e29b-41d4-a716-446655440000","ts":1700000000000,"card":"4111 1111 1111 1111","amount":12.50,"also":"378282246310005"}"#;
    let cases: &[(Strategy, &str)] = &[
        (
            Strategy::PanLast4,
            r#"{"id":"550e8400-e29b-41d4-a716-446655440000","ts":1700000000000,"card":"**** **** **** 1111","amount":12.50,"also":"***********0005"}"#,
        ),
        (
            Strategy::PanBinLast4,
            r#"{"id":"550e8400-e29b-41d4-a716-446655440000","ts":1700000000000,"card":"4111 11** **** 1111","amount":12.50,"also":"378282*****0005"}"#,
        ),
        (
            Strategy::Redact,
            r#"{"id":"550e8400-e29b-41d4-a716-446655440000","ts":1700000000000,"card":"[redacted]","amount":12.50,"also":"[redacted]"}"#,
        ),
    ];
    for &(strategy, expected) in cases {
        assert_eq!(masker(strategy).mask_text(text), expected, "{strategy}");
    }
}

#[test]
fn nothing_to_mask_borrows() {
    let text = "order 1700000000000 for 12.50 EUR, IBAN DE89 3704 0044 0532 0130 00";
    for strategy in Strategy::ALL {
        let masker = masker(strategy);
        assert!(
            matches!(masker.mask_text(text), Cow::Borrowed(_)),
            "{strategy}"
        );
        assert!(
            matches!(masker.mask_bytes(text.as_bytes()), Cow::Borrowed(_)),
            "{strategy}"
        );
    }
}

#[test]
fn mask_bytes_leaves_non_utf8_alone() {
    let input = b"\xff\x00 4111111111111111 \xc3\x28 end";
    let masked = masker(Strategy::PanLast4).mask_bytes(input);
    assert_eq!(&masked[..], b"\xff\x00 ************1111 \xc3\x28 end");
}

#[test]
fn masking_never_leaves_a_pan_behind_a_masked_one() {
    // The last four digits of a masked PAN followed by more digit groups
    // could read as a new card number; the output is checked again and cleaned.
    for strategy in Strategy::ALL {
        let masker = masker(strategy);
        for text in [
            "5555555555554444 4111 1111 1111 1111",
            "5555555555554444 1111 1111 1111",
            // Masked to `************4111 1111 1111 1111`, whose tail is the
            // Luhn-valid Visa 4111 1111 1111 1111 until the rescan masks it.
            "5555555555084111 1111 1111 1111",
            "4111 1111 1111 1111 4012 8888 8888 1881 5555 5555 5555 4444",
        ] {
            let once = masker.mask_text(text);
            assert_eq!(
                find_pans(once.as_bytes()),
                vec![],
                "{strategy} {text} -> {once}"
            );
            assert_eq!(masker.mask_text(&once), once, "{strategy} {text}");
        }
    }
}

#[test]
fn rescan_masks_a_pan_formed_by_masking() {
    let text = "5555555555084111 1111 1111 1111";
    assert_eq!(find_pans(text.as_bytes()).len(), 1);
    assert_eq!(
        masker(Strategy::PanLast4).mask_text(text),
        concat!("************", "**** **** **** ****")
    );
}

/// A chain where masking each card reveals the next: every link starts and
/// ends with the group 4111. Masking must stay linear in the input and still
/// leave no card behind.
#[test]
fn chains_of_revealed_pans_are_masked_in_linear_time() {
    let link = "4111 1004 0000 4111";
    assert_eq!(find_pans(link.as_bytes()).len(), 1, "link is a card");
    let mut text = String::from("5555555555084111");
    for _ in 0..20_000 {
        text.push_str(&link[4..]);
    }
    for strategy in Strategy::ALL {
        let masked = masker(strategy).mask_text(&text);
        assert_eq!(find_pans(masked.as_bytes()), vec![], "{strategy}");
    }
}

#[test]
fn masker_debug_hides_the_key() {
    let debug = format!("{:?}", masker(Strategy::PanToken));
    assert!(debug.contains("PanToken"), "{debug}");
    assert!(!debug.contains("test key"), "{debug}");
}

/// The gateway shares one masker between connection tasks and the extension
/// keeps one per backend in a static; both need it thread-safe.
const _: () = {
    const fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Masker>();
};

#[test]
fn other_written_forms_are_masked_in_place() {
    let last4 = masker(Strategy::PanLast4);
    let cases: &[(&str, &str)] = &[
        (
            "４０１２８８８８８８８８１８８１",
            "＊＊＊＊＊＊＊＊＊＊＊＊１８８１",
        ),
        ("4012_8888_8888_1881", "****_****_****_1881"),
        (
            "4012\u{a0}8888\u{a0}8888 1881",
            "****\u{a0}****\u{a0}**** 1881",
        ),
        // A zero-width space is nothing: the digits around it are one run.
        ("40128888\u{200b}88881881", "********\u{200b}****1881"),
        (
            "Key (x)=(4012888888881881.00)",
            "Key (x)=(************1881.00)",
        ),
        ("4.012888888881881e+15", "*.***********1881e+15"),
        ("$4,012,888,888,881,881.00", "$*,***,***,***,**1,881.00"),
    ];
    for &(text, expected) in cases {
        let masked = last4.mask_text(text);
        assert_eq!(masked, expected, "{text}");
        assert_eq!(masked.len(), text.len(), "in place: {text}");
        assert!(find_pans(masked.as_bytes()).is_empty());
    }
    // pan_bin_last4 keeps the BIN of a full-width number too, and pan_token
    // gives it the token of the ASCII number.
    assert_eq!(
        masker(Strategy::PanBinLast4).mask_text("４０１２８８８８８８８８１８８１"),
        "４０１２８８＊＊＊＊＊＊１８８１"
    );
    let token = masker(Strategy::PanToken);
    assert_eq!(
        token.mask_text("４０１２８８８８８８８８１８８１"),
        token.mask_text("4012888888881881")
    );
}
