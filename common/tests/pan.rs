//! PAN detection against the public test cards of every brand, in the ways
//! people write them, and against the numbers that must never be mistaken for
//! one.

use hoop_common::pan::{brand_of, contains_pan, find_pans, luhn_valid, Brand, PanMatch};

/// Public test card numbers, one or more per brand and length.
const TEST_CARDS: &[(&str, Brand)] = &[
    ("4111111111111111", Brand::Visa),
    ("4012888888881881", Brand::Visa),
    ("4222222222222", Brand::Visa),
    ("4000000000000000006", Brand::Visa),
    ("5555555555554444", Brand::Mastercard),
    ("5105105105105100", Brand::Mastercard),
    ("2223003122003222", Brand::Mastercard),
    ("2720999999999996", Brand::Mastercard),
    ("378282246310005", Brand::Amex),
    ("371449635398431", Brand::Amex),
    ("6011111111111117", Brand::Discover),
    ("6011000990139424", Brand::Discover),
    ("60110000000000001", Brand::Discover),
    ("6011000000000000001", Brand::Discover),
    ("6221260000000000", Brand::Discover),
    ("3530111333300000", Brand::Jcb),
    ("3566002020360505", Brand::Jcb),
    ("3530111333300000001", Brand::Jcb),
    ("30569309025904", Brand::DinersClub),
    ("38520000023237", Brand::DinersClub),
    ("36227206271667", Brand::DinersClub),
    ("3056930902590400", Brand::DinersClub),
    ("6200000000000005", Brand::UnionPay),
    ("6229260000000002", Brand::UnionPay),
    ("6212345678901234569", Brand::UnionPay),
    ("6759649826438453", Brand::Maestro),
    ("6759000000005", Brand::Maestro),
    ("6759649826438453003", Brand::Maestro),
];

fn spans(text: &str) -> Vec<&str> {
    find_pans(text.as_bytes())
        .into_iter()
        .map(|m| &text[m.start..m.end])
        .collect()
}

#[test]
fn every_test_card_is_found_with_its_brand() {
    for &(card, brand) in TEST_CARDS {
        assert!(luhn_valid(card.as_bytes()), "{card} Luhn");
        assert_eq!(brand_of(card.as_bytes()), Some(brand), "{card} brand");
        assert_eq!(
            find_pans(card.as_bytes()),
            vec![PanMatch {
                start: 0,
                end: card.len(),
                brand
            }],
            "{card}"
        );
        assert!(contains_pan(card.as_bytes()), "{card}");
        let in_text = format!("paid with {card}, thanks");
        assert_eq!(spans(&in_text), vec![card], "{in_text}");
    }
}

#[test]
fn printed_layouts_are_found_whole() {
    let cases: &[(&str, Brand)] = &[
        ("4111 1111 1111 1111", Brand::Visa),
        ("4111-1111-1111-1111", Brand::Visa),
        ("5555 5555 5555 4444", Brand::Mastercard),
        ("2223-0031-2200-3222", Brand::Mastercard),
        ("3782 822463 10005", Brand::Amex),
        ("3714-496353-98431", Brand::Amex),
        ("3056 930902 5904", Brand::DinersClub),
        ("3852-000002-3237", Brand::DinersClub),
        ("6011 0009 9013 9424", Brand::Discover),
        ("3566 0020 2036 0505", Brand::Jcb),
        ("6200 0000 0000 0005", Brand::UnionPay),
        ("6759 6498 2643 8453", Brand::Maestro),
        ("4222 2222 22222", Brand::Visa),
        ("4222 222 222 222", Brand::Visa),
        ("6011 0000 0000 0000 1", Brand::Discover),
        ("4000 0000 0000 0000 006", Brand::Visa),
        ("6212-3456-7890-1234-569", Brand::UnionPay),
        ("6759 6498 2643 8453 003", Brand::Maestro),
    ];
    for &(card, brand) in cases {
        assert_eq!(
            find_pans(card.as_bytes()),
            vec![PanMatch {
                start: 0,
                end: card.len(),
                brand
            }],
            "{card}"
        );
    }
}

#[test]
fn pans_in_context() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"card":"4111111111111111","amount":12.50}"#,
            &["4111111111111111"],
        ),
        (r#"{"card":4111111111111111}"#, &["4111111111111111"]),
        (
            "[4111111111111111,4012888888881881]",
            &["4111111111111111", "4012888888881881"],
        ),
        ("card: 4111 1111 1111 1111.", &["4111 1111 1111 1111"]),
        ("(4111-1111-1111-1111)", &["4111-1111-1111-1111"]),
        ("PAN=5555555555554444;exp=12/25", &["5555555555554444"]),
        (
            "card 5555 5555 5555 4444 12/25 cvv 123",
            &["5555 5555 5555 4444"],
        ),
        ("**4111111111111111**", &["4111111111111111"]),
        ("VISA 4111 1111 1111 1111", &["4111 1111 1111 1111"]),
        ("Visa ending 4111111111111111\n", &["4111111111111111"]),
        ("1 4111111111111111", &["4111111111111111"]),
        (
            "id 1700000000000 card 378282246310005",
            &["378282246310005"],
        ),
        (
            "4111 1111 1111 1111 4012 8888 8888 1881",
            &["4111 1111 1111 1111", "4012 8888 8888 1881"],
        ),
        (
            "5555555555554444 4111 1111 1111 1111",
            &["5555555555554444", "4111 1111 1111 1111"],
        ),
        ("tab\t4111111111111111\tsep", &["4111111111111111"]),
        ("-4111111111111111", &["4111111111111111"]),
        ("carte n° 4111111111111111", &["4111111111111111"]),
    ];
    for &(text, expected) in cases {
        assert_eq!(spans(text), expected, "{text}");
    }
}

#[test]
fn pans_between_non_utf8_bytes() {
    let input = b"\xff\xfe4111111111111111\x80";
    assert_eq!(
        find_pans(input),
        vec![PanMatch {
            start: 2,
            end: 18,
            brand: Brand::Visa
        }]
    );
}

/// Numbers that look like card numbers to a naive regex.
#[test]
fn false_positive_corpus_is_left_alone() {
    let corpus: &[(&str, &str)] = &[
        ("epoch milliseconds", "1700000000000"),
        ("epoch milliseconds, Luhn-valid", "1700000000004"),
        ("epoch microseconds, Luhn-valid", "1700000000000001"),
        ("epoch nanoseconds", "1700000000000000000"),
        ("timestamp in JSON", r#"{"ts":1700000000004}"#),
        ("UUID", "550e8400-e29b-41d4-a716-446655440000"),
        (
            "UUID with digit groups",
            "41111111-1111-4111-8111-111111111111",
        ),
        (
            "UUID holding a card",
            "12345678-4111-1111-1111-111111111111",
        ),
        ("longer ID", "41111111111111111111"),
        ("hex ID", "a4111111111111111b"),
        ("hex literal", "0x4111111111111111"),
        ("prefixed ID", "ord_4111111111111111"),
        ("suffixed ID", "4111111111111111x"),
        ("dashed ID", "INV-4111111111111111"),
        ("dashed ID suffix", "4111111111111111-01"),
        ("invoice failing Luhn", "invoice 4111111111111112"),
        ("order failing Luhn", "order 5555555555554445"),
        ("16 digits failing Luhn", "1234567812345678"),
        ("no brand, Luhn-valid", "0000000000000000"),
        ("Visa with a Visa-invalid length", "41111111111114"),
        ("Amex prefix with 16 digits", "3782822463100003"),
        ("Mastercard out of the 2-series range", "2721000000000004"),
        ("phone", "+1 415 555 0100"),
        ("phone with parentheses", "(415) 555-0100"),
        ("E.164 phone, Luhn-valid Visa-13 digits", "+4915112345678"),
        ("IBAN printed", "DE89 3704 0044 0532 0130 00"),
        ("IBAN electronic", "GB82WEST12345698765432"),
        ("IBAN printed with bank code", "GB82 WEST 1234 5698 7654 32"),
        ("IBAN digits holding a card", "XX12 4111 1111 1111 1111"),
        ("IBAN letters then a card", "GB82 WEST 4111 1111 1111 1111"),
        ("IBAN electronic holding a card", "DE894111111111111111"),
        (
            "IBAN prefix then contiguous digits",
            "DE89 4111111111111111",
        ),
        ("French IBAN", "FR76 3000 6000 0112 3456 7890 189"),
        ("float", "0.4111111111111111"),
        ("float in JSON", r#"{"score":0.5105105105105100}"#),
        ("Amex in a 16-digit layout", "3782 8224 6310 005"),
        ("wrong layout", "41111 11111 11111 1"),
        ("dashed groups continuing", "4111-1111-1111-1111-1111"),
        ("12 digits", "411111111111"),
        ("digits with letters around", "abc4111111111111111def"),
        ("letter prefix: an identifier", "A4012888888881881"),
        ("ISO 8601 duration, letters glued on", "PT4012888888881881S"),
        ("E.164 phone after +, 15 digits", "+491511234567893"),
        (
            "grouped digits after + are a phone number",
            "+4111 1111 1111 1111",
        ),
        ("fraction of a float", "0.4012888888881881"),
        ("dotted groups continuing", "4111.1111.1111.1111.1111"),
        ("slashed groups continuing", "4111/1111/1111/1111/1111"),
        (
            "four separators between groups",
            "4111    1111    1111    1111",
        ),
        (
            "thousands groups continuing past 19 digits",
            "4,012,888,888,881,881,123",
        ),
        ("list of 3-digit numbers", "12, 401,288,888,888,188,1"),
        (
            "scientific notation, too small to be 13 digits",
            "4.012888888881881e+10",
        ),
        (
            "scientific notation, negative exponent",
            "4.012888888881881e-15",
        ),
        (
            "full-width digits failing Luhn",
            "４１１１１１１１１１１１１１１２",
        ),
        ("version string", "1.2.4111111111111111"),
    ];
    for &(what, text) in corpus {
        assert_eq!(find_pans(text.as_bytes()), vec![], "{what}: {text}");
        assert!(!contains_pan(text.as_bytes()), "{what}: {text}");
    }
}

#[test]
fn no_brand_starts_with_one_so_timestamps_never_match() {
    // Every Luhn-valid 13- to 19-digit number starting with 1, like epoch
    // milliseconds, microseconds and nanoseconds.
    for length in 13..=19 {
        for first_rest in ["", "7", "70000", "699999"] {
            let mut digits = format!("1{first_rest}");
            digits.extend(std::iter::repeat_n('0', length - 1 - digits.len()));
            let check = (0..10)
                .map(|d| format!("{digits}{d}"))
                .find(|n| luhn_valid(n.as_bytes()))
                .expect("one check digit fits");
            assert_eq!(brand_of(check.as_bytes()), None, "{check}");
            assert!(!contains_pan(check.as_bytes()), "{check}");
        }
    }
}

#[test]
fn luhn() {
    assert!(luhn_valid(b"79927398713"));
    assert!(!luhn_valid(b"79927398710"));
    assert!(luhn_valid(b"0"));
    assert!(!luhn_valid(b""));
    assert!(!luhn_valid(b"4111 1111 1111 1111"));
    assert!(!luhn_valid(b"411111111111111a"));
}

#[test]
fn brand_rules_edges() {
    let cases: &[(&str, Option<Brand>)] = &[
        ("2221000000000009", Some(Brand::Mastercard)),
        ("2220990000000000", None),
        ("5000000000000000", None),
        ("5600000000000000", None),
        ("3400000000000000", None),
        ("340000000000000", Some(Brand::Amex)),
        ("3000000000000", None),
        ("30000000000000", Some(Brand::DinersClub)),
        ("30600000000000", None),
        ("30950000000000", Some(Brand::DinersClub)),
        ("3527000000000000", None),
        ("3528000000000000", Some(Brand::Jcb)),
        ("3589000000000000", Some(Brand::Jcb)),
        ("3590000000000000", None),
        ("6440000000000000", Some(Brand::Discover)),
        ("6500000000000000", Some(Brand::Discover)),
        ("6221250000000000", Some(Brand::UnionPay)),
        ("6229250000000000", Some(Brand::Discover)),
        ("5018000000000", Some(Brand::Maestro)),
        ("6763000000000000000", Some(Brand::Maestro)),
        ("6764000000000000", None),
        ("7000000000000000", None),
        ("8000000000000000", None),
        ("9000000000000000", None),
        ("4111111111111", Some(Brand::Visa)),
        ("411111111111", None),
        ("41111111111111111111", None),
        ("411111111111111a", None),
    ];
    for &(digits, brand) in cases {
        assert_eq!(brand_of(digits.as_bytes()), brand, "{digits}");
    }
}

/// Forms a real system holds card numbers in, beyond bare digits and card
/// groups (issue 16, item 5): each is found, whole.
#[test]
fn other_written_forms_are_found() {
    let cases: &[(&str, &str, &str)] = &[
        ("underscores", "4012_8888_8888_1881", "4012_8888_8888_1881"),
        ("dots", "4012.8888.8888.1881", "4012.8888.8888.1881"),
        ("slashes", "4012/8888/8888/1881", "4012/8888/8888/1881"),
        ("tabs", "4012\t8888\t8888\t1881", "4012\t8888\t8888\t1881"),
        (
            "doubled spaces",
            "4012  8888  8888  1881",
            "4012  8888  8888  1881",
        ),
        (
            "mixed separators",
            "4012 8888-8888_1881",
            "4012 8888-8888_1881",
        ),
        (
            "spaced dashes",
            "4012 - 8888 - 8888 - 1881",
            "4012 - 8888 - 8888 - 1881",
        ),
        (
            "Amex with underscores",
            "3782_822463_10005",
            "3782_822463_10005",
        ),
        (
            "no-break spaces",
            "4012\u{a0}8888\u{a0}8888\u{a0}1881",
            "4012\u{a0}8888\u{a0}8888\u{a0}1881",
        ),
        (
            "zero-width spaces anywhere",
            "card 40128\u{200b}88888881881.",
            "40128\u{200b}88888881881",
        ),
        (
            "narrow no-break spaces",
            "4012\u{202f}8888\u{202f}8888\u{202f}1881",
            "4012\u{202f}8888\u{202f}8888\u{202f}1881",
        ),
        (
            "full-width digits",
            "カード４０１２８８８８８８８８１８８１です",
            "４０１２８８８８８８８８１８８１",
        ),
        (
            "full-width digits in groups",
            "４０１２\u{3000}８８８８\u{3000}８８８８\u{3000}１８８１",
            "４０１２\u{3000}８８８８\u{3000}８８８８\u{3000}１８８１",
        ),
        ("numeric(20,2)", "4012888888881881.00", "4012888888881881"),
        (
            "error detail",
            "Key (x)=(4012888888881881.00) already exists.",
            "4012888888881881",
        ),
        (
            "negative numeric",
            "-4012888888881881.50",
            "4012888888881881",
        ),
        (
            "float8 output",
            "4.012888888881881e+15",
            "4.012888888881881",
        ),
        (
            "float with trailing zeros dropped",
            "5.1051051051051e+15",
            "5.1051051051051",
        ),
        ("Python float", "4012888888881881.0", "4012888888881881"),
        (
            "money",
            "$4,012,888,888,881,881.00",
            "4,012,888,888,881,881",
        ),
        (
            "money, German locale",
            "4.012.888.888.881.881,00 €",
            "4.012.888.888.881.881",
        ),
        (
            "thousands with spaces",
            "4 012 888 888 881 881",
            "4 012 888 888 881 881",
        ),
        (
            "Swiss thousands",
            "4'012'888'888'881'881",
            "4'012'888'888'881'881",
        ),
        ("signed with +", "+4012888888881881", "4012888888881881"),
    ];
    for &(what, text, expected) in cases {
        let found = find_pans(text.as_bytes());
        assert_eq!(found.len(), 1, "{what}: {text}");
        assert_eq!(&text[found[0].start..found[0].end], expected, "{what}");
    }
}
