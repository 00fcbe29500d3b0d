//! Masking message bodies built by hand, in text and binary format, and
//! properties: no PAN survives, no input panics.

use std::borrow::Cow;

use hoop_common::mask::{Masker, Strategy as MaskStrategy};
use hoop_common::pan;
use hoop_policy::{
    mask_data_row, mask_error_or_notice, mask_notification, mask_sql_text, ColumnPolicy,
    CopyMasker, MaskFailure, MaskedColumn, RowShape,
};
use proptest::prelude::*;

const PAYMENTS_OID: u32 = 16_384;
const TEXT: u32 = 25;
const INT4: u32 = 23;
const JSONB: u32 = 3802;
const BYTEA: u32 = 17;
const TEXT_ARRAY: u32 = 1009;
const INT8: u32 = 20;
const INT8_ARRAY: u32 = 1016;

const VISA: &str = "4111111111111111";
const MASTERCARD: &str = "5555555555554444";
const AMEX_GROUPED: &str = "3782 822463 10005";

/// (table oid, attnum, type oid, format)
type Column = (u32, i16, u32, i16);

fn row_description(columns: &[Column]) -> Vec<u8> {
    let mut body = (columns.len() as i16).to_be_bytes().to_vec();
    for (i, (table, attnum, type_oid, format)) in columns.iter().enumerate() {
        body.extend_from_slice(format!("col{i}\0").as_bytes());
        body.extend_from_slice(&table.to_be_bytes());
        body.extend_from_slice(&attnum.to_be_bytes());
        body.extend_from_slice(&type_oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
    }
    body
}

fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for value in values {
        match value {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                body.extend_from_slice(bytes);
            }
        }
    }
    body
}

fn fields(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let count = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(body[at..at + len as usize].to_vec()));
            at += len as usize;
        }
    }
    assert_eq!(at, body.len(), "well-formed output");
    out
}

fn last4() -> Masker {
    Masker::new(MaskStrategy::PanLast4, None).expect("no key needed")
}

/// payments: attnum 2 = card_number (declared, pan_last4), attnum 3 =
/// card_alias (declared, redact, unmasked for this session).
fn policy() -> ColumnPolicy {
    let declared = |attnum: i16, column: &str, strategy: &str| MaskedColumn {
        relid: PAYMENTS_OID,
        attnum,
        schema_name: "public".to_owned(),
        table_name: "payments".to_owned(),
        column_name: column.to_owned(),
        strategy: strategy.to_owned(),
    };
    ColumnPolicy::new(
        &[
            declared(2, "card_number", "pan_last4"),
            declared(3, "card_alias", "redact"),
        ],
        &["public.payments.card_alias".to_owned()],
        last4(),
        None,
    )
    .expect("valid policy")
}

fn shape(columns: &[Column]) -> RowShape {
    RowShape::from_row_description(&row_description(columns), &policy()).expect("valid shape")
}

fn masked_fields(shape: &RowShape, values: &[Option<&[u8]>]) -> Option<Vec<Option<Vec<u8>>>> {
    mask_data_row(shape, &data_row(values))
        .expect("well-formed row")
        .map(|body| fields(&body))
}

#[test]
fn declared_undeclared_and_unmasked_columns_in_text_format() {
    let shape = shape(&[
        (PAYMENTS_OID, 1, INT4, 0),
        (PAYMENTS_OID, 2, TEXT, 0),
        (PAYMENTS_OID, 3, TEXT, 0),
        (0, 0, TEXT, 0),
        (PAYMENTS_OID, 5, TEXT, 0),
    ]);
    let note = format!("card {MASTERCARD} on file");
    let out = masked_fields(
        &shape,
        &[
            Some(b"42"),
            // Declared: masked whole, even when it is not a valid PAN.
            Some(b"1234-5678-9012-3456"),
            // Declared but unmasked for this session: as stored.
            Some(VISA.as_bytes()),
            // An expression column: content detection.
            Some(note.as_bytes()),
            None,
        ],
    )
    .expect("something masked");
    assert_eq!(out[0].as_deref(), Some(&b"42"[..]));
    assert_eq!(out[1].as_deref(), Some(&b"****-****-****-3456"[..]));
    assert_eq!(out[2].as_deref(), Some(VISA.as_bytes()));
    assert_eq!(
        out[3].as_deref(),
        Some(&b"card ************4444 on file"[..])
    );
    assert_eq!(out[4], None);
}

#[test]
fn a_row_without_card_numbers_is_forwarded_untouched() {
    let shape = shape(&[(PAYMENTS_OID, 1, INT4, 0), (0, 0, TEXT, 0)]);
    let row = data_row(&[
        Some(b"7"),
        // After `+`, up to 15 digits are an E.164 phone number.
        Some(b"order 1700000000000 shipped, call +491511234567893"),
    ]);
    assert_eq!(mask_data_row(&shape, &row), Ok(None));
}

#[test]
fn casts_and_wrappers_of_undeclared_columns_are_caught_by_content() {
    let shape = shape(&[(0, 0, TEXT, 0)]);
    for value in [
        format!("{{{VISA},{MASTERCARD}}}"),
        format!("{{\"card\": \"{VISA}\"}}"),
        format!("({VISA},x)"),
        AMEX_GROUPED.to_owned(),
        format!("{VISA}{VISA}"),
    ] {
        let out = masked_fields(&shape, &[Some(value.as_bytes())]);
        let field = out
            .and_then(|f| f[0].clone())
            .unwrap_or_else(|| value.clone().into_bytes());
        assert!(
            !pan::contains_pan(&field),
            "{value} -> {}",
            String::from_utf8_lossy(&field)
        );
    }
}

#[test]
fn binary_text_jsonb_and_arrays() {
    let shape = shape(&[
        (0, 0, TEXT, 1),
        (0, 0, JSONB, 1),
        (0, 0, TEXT_ARRAY, 1),
        (0, 0, INT4, 1),
        (PAYMENTS_OID, 2, TEXT, 1),
    ]);
    let mut jsonb = vec![1u8];
    jsonb.extend_from_slice(format!("{{\"pan\": \"{VISA}\"}}").as_bytes());
    // A one-dimensional text[] in binary: header, then length-prefixed elements.
    let mut array = Vec::new();
    for word in [1i32, 0, TEXT as i32, 1, 1, VISA.len() as i32] {
        array.extend_from_slice(&word.to_be_bytes());
    }
    array.extend_from_slice(VISA.as_bytes());
    let int4 = 4_111_111i32.to_be_bytes();
    let out = masked_fields(
        &shape,
        &[
            Some(MASTERCARD.as_bytes()),
            Some(&jsonb),
            Some(&array),
            Some(&int4),
            Some(VISA.as_bytes()),
        ],
    )
    .expect("masked");
    assert_eq!(out[0].as_deref(), Some(&b"************4444"[..]));
    let masked_jsonb = out[1].clone().expect("not null");
    assert_eq!(masked_jsonb[0], 1, "version byte kept");
    assert_eq!(&masked_jsonb[1..], b"{\"pan\": \"************1111\"}");
    let masked_array = out[2].clone().expect("not null");
    assert_eq!(
        masked_array.len(),
        array.len(),
        "structure keeps its lengths"
    );
    assert!(!pan::contains_pan(&masked_array));
    assert_eq!(out[3].as_deref(), Some(&int4[..]));
    assert_eq!(out[4].as_deref(), Some(&b"************1111"[..]));
}

#[test]
fn bind_result_formats_apply_to_the_shape() {
    let text_shape = shape(&[(0, 0, TEXT, 0), (0, 0, INT4, 0)]);
    assert!(text_shape.with_result_formats(&[]).is_ok());
    assert!(text_shape.with_result_formats(&[1]).is_ok());
    assert!(text_shape.with_result_formats(&[1, 0]).is_ok());
    assert_eq!(
        text_shape.with_result_formats(&[1, 0, 1]).err(),
        Some(MaskFailure::FormatCodes {
            fields: 2,
            codes: 3
        })
    );
    assert!(matches!(
        text_shape.with_result_formats(&[2]),
        Err(MaskFailure::Malformed { .. })
    ));

    // A declared column of a type with no masked form in binary (an array)
    // is refused before any row; a declared number is masked as a number.
    let declared_array = shape(&[(PAYMENTS_OID, 2, INT8_ARRAY, 0)]);
    assert!(matches!(
        declared_array.with_result_formats(&[1]),
        Err(MaskFailure::BinaryDeclaredColumn { .. })
    ));
    assert!(matches!(
        RowShape::from_row_description(
            &row_description(&[(PAYMENTS_OID, 2, INT8_ARRAY, 1)]),
            &policy()
        ),
        Err(MaskFailure::BinaryDeclaredColumn { .. })
    ));
    let declared_int8 = shape(&[(PAYMENTS_OID, 2, INT8, 0)])
        .with_result_formats(&[1])
        .expect("a declared int8 is masked as a number in binary");
    let out = masked_fields(
        &declared_int8,
        &[Some(&4_012_888_888_881_881i64.to_be_bytes())],
    )
    .expect("masked");
    assert_eq!(out[0].as_deref(), Some(&1881i64.to_be_bytes()[..]));
}

#[test]
fn bytea_in_hex_is_decoded_before_scanning() {
    let shape = shape(&[(0, 0, BYTEA, 0)]);
    let hex: String = VISA.bytes().map(|b| format!("{b:02x}")).collect();
    let value = format!("\\x{hex}");
    let out = masked_fields(&shape, &[Some(value.as_bytes())]).expect("masked");
    let expected: String = "************1111"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(out[0].as_deref(), Some(format!("\\x{expected}").as_bytes()));
}

#[test]
fn malformed_rows_fail_closed() {
    let shape = shape(&[(0, 0, TEXT, 0), (0, 0, TEXT, 0)]);
    let good = data_row(&[Some(b"a"), Some(b"b")]);
    assert_eq!(
        mask_data_row(&shape, &data_row(&[Some(b"a")])),
        Err(MaskFailure::FieldCount {
            expected: 2,
            found: 1
        })
    );
    for truncated in 0..good.len() {
        assert!(
            mask_data_row(&shape, &good[..truncated]).is_err(),
            "{truncated}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(mask_data_row(&shape, &trailing).is_err());
    let mut negative = data_row(&[Some(b"a"), None]);
    negative[7..11].copy_from_slice(&(-2i32).to_be_bytes());
    assert!(mask_data_row(&shape, &negative).is_err());
    assert!(RowShape::from_row_description(&[0xff, 0xff], &policy()).is_err());
}

#[test]
fn a_short_typed_value_that_no_value_of_its_type_could_be_fails_closed() {
    // An int4 column, text and binary: what an int4 can be passes
    // unscanned; a card number where an int4 should be means the row is
    // not what its description says (described from other rows).
    let text = shape(&[(0, 0, INT4, 0)]);
    for fine in [&b"42"[..], b"-2147483648", b"2147483647"] {
        assert_eq!(mask_data_row(&text, &data_row(&[Some(fine)])), Ok(None));
    }
    assert!(mask_data_row(&text, &data_row(&[Some(VISA.as_bytes())])).is_err());
    let binary = shape(&[(0, 0, INT4, 1)]);
    assert_eq!(
        mask_data_row(&binary, &data_row(&[Some(&42i32.to_be_bytes())])),
        Ok(None)
    );
    assert!(mask_data_row(&binary, &data_row(&[Some(VISA.as_bytes())])).is_err());
    // NULL is any type's.
    assert_eq!(mask_data_row(&binary, &data_row(&[None])), Ok(None));
}

fn error_body(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in fields {
        body.push(*code);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    body
}

#[test]
fn errors_notices_and_notifications() {
    let masker = last4();
    let clean = error_body(&[(b'S', "ERROR"), (b'C', "22P02"), (b'M', "invalid input")]);
    assert_eq!(mask_error_or_notice(&masker, &clean), Ok(None));

    let leaky = error_body(&[
        (b'S', "ERROR"),
        (b'C', "22P02"),
        (
            b'M',
            &format!("invalid input syntax for type integer: \"{VISA}\""),
        ),
        (b'D', &format!("Key (card)=({MASTERCARD}) already exists.")),
    ]);
    let masked = mask_error_or_notice(&masker, &leaky)
        .expect("well formed")
        .expect("changed");
    assert_eq!(
        masked,
        error_body(&[
            (b'S', "ERROR"),
            (b'C', "22P02"),
            (
                b'M',
                "invalid input syntax for type integer: \"************1111\""
            ),
            (b'D', "Key (card)=(************4444) already exists."),
        ])
    );
    assert!(mask_error_or_notice(&masker, b"Mno terminator").is_err());
    assert!(mask_error_or_notice(&masker, b"").is_err());

    let mut notification = 77i32.to_be_bytes().to_vec();
    notification.extend_from_slice(b"cards\0");
    notification.extend_from_slice(format!("new card {VISA}\0").as_bytes());
    let masked = mask_notification(&masker, &notification)
        .expect("well formed")
        .expect("changed");
    let mut expected = 77i32.to_be_bytes().to_vec();
    expected.extend_from_slice(b"cards\0new card ************1111\0");
    assert_eq!(masked, expected);
    assert!(mask_notification(&masker, &notification[..6]).is_err());
}

#[test]
fn sql_text_for_the_audit_record() {
    let masker = last4();
    assert_eq!(
        mask_sql_text(
            &masker,
            &format!("SELECT * FROM payments WHERE card_number = '{VISA}'")
        ),
        "SELECT * FROM payments WHERE card_number = '************1111'"
    );
    assert!(matches!(
        mask_sql_text(&masker, "SELECT 1"),
        Cow::Borrowed(_)
    ));
}

fn copy_all(masker: &mut CopyMasker, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for chunk in chunks {
        out.extend(
            masker
                .mask_copy_data(chunk)
                .into_iter()
                .map(Cow::into_owned),
        );
    }
    out.extend(masker.finish());
    out
}

#[test]
fn copy_data_rows_and_split_card_numbers() {
    let mut masker = CopyMasker::new(&policy(), false);
    // COPY names no types: a field that is a number (it may be a bigint or
    // numeric column) becomes a number, its last four digits; a card number
    // inside text gets the content strategy.
    let row = format!("1\t{VISA}\tnote {VISA}\t4012888888881881.00\n");
    let out = masker.mask_copy_data(row.as_bytes());
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].as_ref(),
        b"1\t1111\tnote ************1111\t1881.00\n"
    );

    // CSV: a card number in thousands groups spans fields; masked in place,
    // the fields stay where they were.
    let mut csv = CopyMasker::new(&policy(), false);
    let out = csv.mask_copy_data(b"4,012,888,888,881,881\n");
    assert_eq!(out[0].as_ref(), b"*,***,***,***,**1,881\n");
    // After another number it is a list of numbers, not an amount.
    let out = csv.mask_copy_data(b"7,4,012,888,888,881,881\n");
    assert!(matches!(out.as_slice(), [Cow::Borrowed(_)]));

    let clean = b"2\tno card\n";
    let out = masker.mask_copy_data(clean);
    assert!(
        matches!(out.as_slice(), [Cow::Borrowed(_)]),
        "untouched rows are borrowed"
    );

    // A card number split at every possible point across two messages.
    let line = format!("3\t{AMEX_GROUPED}\n");
    for split in 1..line.len() {
        let (a, b) = line.as_bytes().split_at(split);
        let mut masker = CopyMasker::new(&policy(), false);
        let out = copy_all(&mut masker, &[a, b]);
        assert_eq!(out.len(), 2, "boundaries kept at split {split}");
        let joined: Vec<u8> = out.concat();
        assert!(
            !pan::contains_pan(&joined),
            "split {split}: {}",
            String::from_utf8_lossy(&joined)
        );
    }

    // Binary COPY keeps lengths.
    let mut masker = CopyMasker::new(&policy(), true);
    let out = copy_all(&mut masker, &[VISA.as_bytes()]);
    assert_eq!(out.concat(), b"************1111".to_vec());
}

fn luhn_pan() -> impl Strategy<Value = String> {
    // Visa 16-digit numbers with a correct check digit.
    proptest::collection::vec(0u8..10, 14).prop_map(|digits| {
        let mut number: Vec<u8> = std::iter::once(4u8).chain(digits).collect();
        let check = (0..10u8)
            .find(|&c| {
                let mut candidate = number.clone();
                candidate.push(c);
                let ascii: Vec<u8> = candidate.iter().map(|d| b'0' + d).collect();
                pan::luhn_valid(&ascii)
            })
            .unwrap_or(0);
        number.push(check);
        number.iter().map(|d| char::from(b'0' + d)).collect()
    })
}

/// `4111 1111 1111 1111`: the printed layout.
fn grouped(pan: &str, separator: char) -> String {
    let groups: Vec<&str> = (0..pan.len())
        .step_by(4)
        .map(|i| &pan[i..(i + 4).min(pan.len())])
        .collect();
    groups.join(&separator.to_string())
}

fn text_with_pans() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            luhn_pan(),
            luhn_pan().prop_map(|pan| grouped(&pan, ' ')),
            luhn_pan().prop_map(|pan| grouped(&pan, '-')),
            "[a-z ,.:;(){}\"\\-]{0,12}",
            "[0-9]{1,6}",
        ],
        0..8,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_text_field_keeps_a_pan(values in proptest::collection::vec(text_with_pans(), 1..5)) {
        let columns: Vec<Column> = values.iter().map(|_| (0, 0, TEXT, 0)).collect();
        let shape = shape(&columns);
        let row: Vec<Option<&[u8]>> = values.iter().map(|v| Some(v.as_bytes())).collect();
        let out = masked_fields(&shape, &row)
            .unwrap_or_else(|| values.iter().map(|v| Some(v.clone().into_bytes())).collect());
        for field in out.into_iter().flatten() {
            prop_assert!(!pan::contains_pan(&field), "{}", String::from_utf8_lossy(&field));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let shape = shape(&[(0, 0, TEXT, 0), (PAYMENTS_OID, 2, TEXT, 1)]);
        let _ = mask_data_row(&shape, &body);
        let _ = RowShape::from_row_description(&body, &policy());
        let _ = mask_error_or_notice(&last4(), &body);
        let _ = mask_notification(&last4(), &body);
        let mut copy = CopyMasker::new(&policy(), false);
        let _ = copy.mask_copy_data(&body);
    }

    #[test]
    fn copy_output_keeps_no_pan_wherever_messages_split(
        text in text_with_pans(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for point in points {
            chunks.push(&bytes[start..point]);
            start = point;
        }
        chunks.push(&bytes[start..]);
        let chunks: Vec<&[u8]> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let mut masker = CopyMasker::new(&policy(), false);
        let out = copy_all(&mut masker, &chunks);
        prop_assert_eq!(out.len(), chunks.len());
        let joined = out.concat();
        prop_assert!(!pan::contains_pan(&joined), "{}", String::from_utf8_lossy(&joined));
    }
}

const INT8_PAN: i64 = 4_012_888_888_881_881;
const NUMERIC: u32 = 1700;
const FLOAT8: u32 = 701;
const MONEY: u32 = 790;
const JSON: u32 = 114;
const NUMERIC_ARRAY: u32 = 1231;
const RECORD: u32 = 2249;
const INT8RANGE: u32 = 3926;
const TIMESTAMPTZ: u32 = 1184;
/// A composite row type: its OID is not one the gateway knows.
const ROW_TYPE: u32 = 16_500;

/// Binary numeric from base-10000 digits.
fn numeric(weight: i16, negative: bool, dscale: i16, digits: &[i16]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_be_bytes());
    }
    out
}

/// A binary one-dimensional array of `element_oid`.
fn array(element_oid: u32, elements: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in [1i32, 0, element_oid as i32, elements.len() as i32, 1] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    for element in elements {
        match element {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// A binary record of (type oid, value) columns.
fn record(columns: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = (columns.len() as i32).to_be_bytes().to_vec();
    for (oid, value) in columns {
        out.extend_from_slice(&oid.to_be_bytes());
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Issue 16 item 1 and issue 13 item 6: card numbers in binary numbers,
/// arrays and records are found, and masked in their own type (a number
/// whose value is the last four digits), so the client can decode them.
#[test]
fn binary_numbers_arrays_and_records_are_masked_in_their_type() {
    let shape = shape(&[
        (0, 0, INT8, 1),
        (0, 0, NUMERIC, 1),
        (0, 0, FLOAT8, 1),
        (0, 0, MONEY, 1),
        (0, 0, INT8_ARRAY, 1),
        (0, 0, NUMERIC_ARRAY, 1),
        (0, 0, RECORD, 1),
        (0, 0, ROW_TYPE, 1),
        (0, 0, INT8RANGE, 1),
        (0, 0, INT8, 1),
    ]);
    let int8 = INT8_PAN.to_be_bytes();
    let negative = (-INT8_PAN).to_be_bytes();
    // 4012888888881881.00 as numeric(20,2).
    let numeric_pan = numeric(3, false, 2, &[4012, 8888, 8888, 1881]);
    let float = (INT8_PAN as f64).to_be_bytes();
    let money = (INT8_PAN * 100 + 7).to_be_bytes();
    let int8_array = array(INT8, &[Some(&int8), None, Some(&7i64.to_be_bytes())]);
    let numeric_array = array(NUMERIC, &[Some(&numeric_pan)]);
    let anonymous = record(&[(INT4, &5i32.to_be_bytes()), (INT8, &int8)]);
    let nested = record(&[(TEXT, VISA.as_bytes()), (RECORD, &anonymous)]);
    let mut range = vec![0x02u8]; // lower bound inclusive, both bounds present
    for bound in [INT8_PAN, INT8_PAN + 10] {
        range.extend_from_slice(&8i32.to_be_bytes());
        range.extend_from_slice(&bound.to_be_bytes());
    }
    let ordinary = 1_700_000_000_000i64.to_be_bytes();
    let out = masked_fields(
        &shape,
        &[
            Some(&int8),
            Some(&numeric_pan),
            Some(&float),
            Some(&money),
            Some(&int8_array),
            Some(&numeric_array),
            Some(&anonymous),
            Some(&nested),
            Some(&range),
            Some(&ordinary),
        ],
    )
    .expect("masked");
    assert_eq!(out[0].as_deref(), Some(&1881i64.to_be_bytes()[..]));
    assert_eq!(out[1].as_deref(), Some(&numeric(0, false, 2, &[1881])[..]));
    assert_eq!(out[2].as_deref(), Some(&1881f64.to_be_bytes()[..]));
    assert_eq!(out[3].as_deref(), Some(&188_107i64.to_be_bytes()[..]));
    let masked_one = 1881i64.to_be_bytes();
    assert_eq!(
        out[4].as_deref(),
        Some(&array(INT8, &[Some(&masked_one), None, Some(&7i64.to_be_bytes())])[..])
    );
    assert_eq!(
        out[5].as_deref(),
        Some(&array(NUMERIC, &[Some(&numeric(0, false, 2, &[1881]))])[..])
    );
    let masked_anonymous = record(&[(INT4, &5i32.to_be_bytes()), (INT8, &masked_one)]);
    assert_eq!(out[6].as_deref(), Some(&masked_anonymous[..]));
    assert_eq!(
        out[7].as_deref(),
        Some(&record(&[(TEXT, b"************1111"), (RECORD, &masked_anonymous)])[..])
    );
    let mut masked_range = vec![0x02u8];
    // The upper bound is no card number (its check digit is wrong).
    for bound in [1881i64, INT8_PAN + 10] {
        masked_range.extend_from_slice(&8i32.to_be_bytes());
        masked_range.extend_from_slice(&bound.to_be_bytes());
    }
    assert_eq!(out[8].as_deref(), Some(&masked_range[..]));
    assert_eq!(out[9].as_deref(), Some(&ordinary[..]), "not a card number");

    let row = data_row(&[Some(&negative)]);
    let masked = mask_data_row(&self::shape(&[(0, 0, INT8, 1)]), &row)
        .expect("well-formed")
        .expect("masked");
    assert_eq!(
        fields(&masked)[0].as_deref(),
        Some(&(-1881i64).to_be_bytes()[..])
    );
}

/// An 8-byte value of a type the gateway does not know (a domain inside a
/// record reports the domain's OID) that reads as a card number is refused,
/// not guessed at; a binary value that does not decode as its type is too.
#[test]
fn binary_values_the_gateway_cannot_place_fail_closed() {
    let unknown = shape(&[(0, 0, ROW_TYPE, 1)]);
    let row = data_row(&[Some(&INT8_PAN.to_be_bytes())]);
    assert!(matches!(
        mask_data_row(&unknown, &row),
        Err(MaskFailure::Undecodable { .. })
    ));
    let in_record = record(&[(ROW_TYPE + 1, &INT8_PAN.to_be_bytes())]);
    assert!(matches!(
        mask_data_row(&shape(&[(0, 0, RECORD, 1)]), &data_row(&[Some(&in_record)])),
        Err(MaskFailure::Undecodable { .. })
    ));
    for (type_oid, value) in [
        (INT8, vec![0u8; 7]),
        (NUMERIC, vec![0, 1, 0, 0, 0, 0, 0]),
        (NUMERIC, numeric(3, false, 0, &[4012, 8888, 8888, 10_000])),
        (
            INT8_ARRAY,
            vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 9],
        ),
        (RECORD, vec![0, 0, 0, 2, 0, 0, 0, 20]),
    ] {
        assert!(
            mask_data_row(&shape(&[(0, 0, type_oid, 1)]), &data_row(&[Some(&value)])).is_err(),
            "{type_oid}: {value:?}"
        );
    }
}

/// In text format too, a value keeps its type: numbers stay numbers, JSON
/// stays JSON, arrays and records keep numbers where numbers were.
#[test]
fn text_values_stay_valid_for_their_type() {
    let cases: &[(u32, &str, &str)] = &[
        (INT8, "4012888888881881", "1881"),
        (INT8, "-4012888888881881", "-1881"),
        (NUMERIC, "4012888888881881.00", "1881.00"),
        (NUMERIC, "378282246310005", "5"),
        (FLOAT8, "4.012888888881881e+15", "1881"),
        (MONEY, "$4,012,888,888,881,881.00", "$1881.00"),
        (INT8_ARRAY, "{4012888888881881,7,NULL}", "{1881,7,NULL}"),
        (NUMERIC_ARRAY, "{4012888888881881.50}", "{1881.50}"),
        (
            INT8RANGE,
            "[4012888888881881,4111111111111111)",
            "[1881,1111)",
        ),
        (
            RECORD,
            "(7,4012888888881881,\"x 4111111111111111\")",
            "(7,1881,\"x ************1111\")",
        ),
        (
            JSON,
            r#"{"n":4012888888881881,"s":"4012888888881881","f":4012888888881881.5}"#,
            r#"{"n":1881,"s":"************1881","f":1881.5}"#,
        ),
        (
            JSONB,
            r#"[4012888888881881, "a \"4111111111111111\""]"#,
            r#"[1881, "a \"************1111\""]"#,
        ),
    ];
    for &(type_oid, value, expected) in cases {
        let out = masked_fields(&shape(&[(0, 0, type_oid, 0)]), &[Some(value.as_bytes())])
            .unwrap_or_else(|| panic!("{type_oid} {value}: not masked"));
        assert_eq!(
            String::from_utf8_lossy(out[0].as_deref().expect("not null")),
            expected,
            "{type_oid} {value}"
        );
    }
    // The same number in JSON through binary jsonb.
    let mut jsonb = vec![1u8];
    jsonb.extend_from_slice(b"{\"n\": 4012888888881881}");
    let out = masked_fields(&shape(&[(0, 0, JSONB, 1)]), &[Some(&jsonb)]).expect("masked");
    assert_eq!(out[0].as_deref(), Some(&b"\x01{\"n\": 1881}"[..]));
}

/// Types that cannot hold a card number are not scanned: cheaper, and no
/// false positives in them.
#[test]
fn types_that_cannot_hold_a_card_number_are_skipped() {
    // Nothing looks inside: eight bytes that would read as a card number
    // as an int8 pass as the timestamptz they are. (A value no value of
    // its type could be, such as a card number's digits in an int4's
    // text, fails the row: see
    // `a_short_typed_value_that_no_value_of_its_type_could_be_fails_closed`.)
    let shape = shape(&[
        (0, 0, INT4, 0),
        (0, 0, TIMESTAMPTZ, 0),
        (0, 0, TIMESTAMPTZ, 1),
    ]);
    let row = data_row(&[
        Some(b"2147483647"),
        Some(b"2024-01-01 00:00:00+00"),
        Some(&INT8_PAN.to_be_bytes()),
    ]);
    assert_eq!(mask_data_row(&shape, &row), Ok(None));
}

/// A declared column of a number type is masked as a number, in text and
/// binary: `************1881` is not a bigint.
#[test]
fn declared_number_columns_are_masked_as_numbers() {
    let text = shape(&[(PAYMENTS_OID, 2, NUMERIC, 0)]);
    let out = masked_fields(&text, &[Some(b"1234567890123.45")]).expect("masked");
    assert_eq!(out[0].as_deref(), Some(&b"123.45"[..]));
    assert_eq!(masked_fields(&text, &[Some(b"NaN"),]), None);
    let money = shape(&[(PAYMENTS_OID, 2, MONEY, 0)]);
    let out = masked_fields(&money, &[Some(b"-$4,012,888,888,881,881.00")]).expect("masked");
    assert_eq!(out[0].as_deref(), Some(&b"-$1881.00"[..]));
    let binary = shape(&[(PAYMENTS_OID, 2, NUMERIC, 1)]);
    let out = masked_fields(
        &binary,
        &[Some(&numeric(3, false, 0, &[1, 2345, 6789, 123]))],
    )
    .expect("masked");
    assert_eq!(out[0].as_deref(), Some(&numeric(0, false, 0, &[123])[..]));
}

/// The header, one tuple per message and the trailer, as PostgreSQL sends
/// binary COPY.
fn binary_copy_tuple(header: bool, fields: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    if header {
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
    }
    out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for field in fields {
        match field {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// Issue 16 item 1: `COPY … (FORMAT binary)` carries no types; fields are
/// decoded by structure and card numbers masked in a form their type reads.
#[test]
fn binary_copy_masks_numbers_records_and_text() {
    let mut masker = CopyMasker::new(&policy(), true);
    let numeric_pan = numeric(3, false, 2, &[4012, 8888, 8888, 1881]);
    let first = binary_copy_tuple(
        true,
        &[
            Some(&7i32.to_be_bytes()),
            Some(&INT8_PAN.to_be_bytes()),
            Some(&numeric_pan),
            Some(VISA.as_bytes()),
            None,
        ],
    );
    let out = masker.mask_copy_data(&first);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].as_ref(),
        &binary_copy_tuple(
            true,
            &[
                Some(&7i32.to_be_bytes()),
                Some(&1881i64.to_be_bytes()),
                Some(&numeric(0, false, 2, &[1881])),
                Some(b"************1111"),
                None,
            ]
        )[..]
    );
    let arrays = binary_copy_tuple(
        false,
        &[Some(&array(INT8, &[Some(&INT8_PAN.to_be_bytes())]))],
    );
    let out = masker.mask_copy_data(&arrays);
    assert_eq!(
        out[0].as_ref(),
        &binary_copy_tuple(
            false,
            &[Some(&array(INT8, &[Some(&1881i64.to_be_bytes())]))]
        )[..]
    );
    // A float8 holding a card number is masked as a float8.
    let float = binary_copy_tuple(false, &[Some(&(INT8_PAN as f64).to_be_bytes())]);
    assert_eq!(
        masker.mask_copy_data(&float)[0].as_ref(),
        &binary_copy_tuple(false, &[Some(&1881f64.to_be_bytes())])[..]
    );
    // Ordinary values, a float8 and a timestamp of today, pass untouched.
    let ordinary = binary_copy_tuple(
        false,
        &[
            Some(&2.5f64.to_be_bytes()),
            Some(&818_000_000_000_000_000i64.to_be_bytes()),
        ],
    );
    assert!(matches!(
        masker.mask_copy_data(&ordinary).as_slice(),
        [Cow::Borrowed(_)]
    ));
    let trailer = (-1i16).to_be_bytes();
    assert!(matches!(
        masker.mask_copy_data(&trailer).as_slice(),
        [Cow::Borrowed(_)]
    ));
    assert!(masker.finish().is_empty());
}

proptest! {
    /// Whatever an int8 or numeric holds, its masked binary form has the
    /// same type layout and no card number.
    #[test]
    fn binary_int8_never_carries_a_pan(value in any::<i64>(), pan in luhn_pan()) {
        let shape = shape(&[(0, 0, INT8, 1), (0, 0, INT8, 1)]);
        let pan_value: i64 = pan.parse().unwrap_or(0);
        let row = data_row(&[Some(&value.to_be_bytes()), Some(&pan_value.to_be_bytes())]);
        let out = mask_data_row(&shape, &row).expect("int8 always decodes");
        let body = out.unwrap_or(row);
        for field in fields(&body) {
            let bytes = field.expect("not null");
            prop_assert_eq!(bytes.len(), 8);
            let number = i64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            prop_assert!(!pan::contains_pan(number.unsigned_abs().to_string().as_bytes()));
        }
    }
}

/// Text inside a binary structure the gateway does not decode (tsvector:
/// lexeme count, then each lexeme and its positions) is masked in place,
/// whatever the content strategy, so the structure stays readable.
#[test]
fn text_inside_binary_structures_is_masked_in_place() {
    const TSVECTOR: u32 = 3614;
    let redact = Masker::new(MaskStrategy::Redact, None).expect("no key needed");
    let policy = ColumnPolicy::new(&[], &[], redact, None).expect("no columns");
    let shape = RowShape::from_row_description(&row_description(&[(0, 0, TSVECTOR, 1)]), &policy)
        .expect("shape");
    let mut value = 1i32.to_be_bytes().to_vec();
    value.extend_from_slice(VISA.as_bytes());
    value.extend_from_slice(&[0, 0, 1, 0, 1]);
    let out = mask_data_row(&shape, &data_row(&[Some(&value)]))
        .expect("masked")
        .map(|body| fields(&body))
        .expect("changed");
    let masked = out[0].clone().expect("not null");
    assert_eq!(masked.len(), value.len());
    assert!(!pan::contains_pan(&masked));
}

/// `ROW(ROW(ROW(…)))` in binary: decoded to a depth, refused beyond it, and
/// never a stack overflow.
#[test]
fn deeply_nested_records_are_refused_not_recursed_into() {
    let nest = |depth: usize| {
        let mut value = record(&[(INT8, &INT8_PAN.to_be_bytes())]);
        for _ in 0..depth {
            value = record(&[(RECORD, &value)]);
        }
        value
    };
    let shape = shape(&[(0, 0, RECORD, 1)]);
    let shallow = mask_data_row(&shape, &data_row(&[Some(&nest(10))]))
        .expect("decoded")
        .expect("masked");
    assert!(!fields(&shallow)[0]
        .as_deref()
        .expect("not null")
        .windows(8)
        .any(|w| w == INT8_PAN.to_be_bytes()));
    for depth in [40, 5_000] {
        assert!(matches!(
            mask_data_row(&shape, &data_row(&[Some(&nest(depth))])),
            Err(MaskFailure::Undecodable { .. })
        ));
    }
}

proptest! {
    /// Whatever bytes the server sends for a binary value of any type the
    /// masker decodes, it answers (masked, unchanged or refused) and never
    /// panics.
    #[test]
    fn binary_values_never_panic(
        type_oid in proptest::sample::select(vec![
            INT8, NUMERIC, FLOAT8, MONEY, INT8_ARRAY, NUMERIC_ARRAY, RECORD, INT8RANGE,
            ROW_TYPE, JSONB, JSON, TEXT, BYTEA, 4536u32, 3614, 600, 602, 604, 5038,
        ]),
        value in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let shape = shape(&[(0, 0, type_oid, 1)]);
        let _ = mask_data_row(&shape, &data_row(&[Some(&value)]));
        let mut copy = CopyMasker::new(&policy(), true);
        let _ = copy.mask_copy_data(&value);
        let _ = copy.finish();
    }
}

/// A text array's elements are text: the content strategy applies.
#[test]
fn text_array_elements_get_the_content_strategy() {
    let out = masked_fields(
        &shape(&[(0, 0, TEXT_ARRAY, 0)]),
        &[Some(b"{4111111111111111,\"4111 1111 1111 1111\"}")],
    )
    .expect("masked");
    assert_eq!(
        out[0].as_deref(),
        Some(&b"{************1111,\"**** **** **** 1111\"}"[..])
    );
}

/// Geometric types carry float8 coordinates, xid8 and snapshots 8-byte
/// integers: a card number cast into one is masked in its type.
#[test]
fn geometric_types_and_xids_are_masked_in_their_type() {
    const POINT: u32 = 600;
    const POLYGON: u32 = 604;
    const XID8: u32 = 5069;
    const SNAPSHOT: u32 = 5038;
    let pan = INT8_PAN as f64;
    let mut point = pan.to_be_bytes().to_vec();
    point.extend_from_slice(&2.5f64.to_be_bytes());
    let mut polygon = 1i32.to_be_bytes().to_vec();
    polygon.extend_from_slice(&point);
    let mut snapshot = 0i32.to_be_bytes().to_vec();
    snapshot.extend_from_slice(&INT8_PAN.to_be_bytes());
    snapshot.extend_from_slice(&(INT8_PAN + 1).to_be_bytes());
    let shape = shape(&[
        (0, 0, POINT, 1),
        (0, 0, POLYGON, 1),
        (0, 0, XID8, 1),
        (0, 0, SNAPSHOT, 1),
    ]);
    let out = masked_fields(
        &shape,
        &[
            Some(&point),
            Some(&polygon),
            Some(&INT8_PAN.to_be_bytes()),
            Some(&snapshot),
        ],
    )
    .expect("masked");
    let mut masked_point = 1881f64.to_be_bytes().to_vec();
    masked_point.extend_from_slice(&2.5f64.to_be_bytes());
    assert_eq!(out[0].as_deref(), Some(&masked_point[..]));
    assert_eq!(out[1].as_deref().map(|p| &p[4..]), Some(&masked_point[..]));
    assert_eq!(out[2].as_deref(), Some(&1881i64.to_be_bytes()[..]));
    let masked_snapshot = out[3].clone().expect("not null");
    assert_eq!(&masked_snapshot[4..12], &1881i64.to_be_bytes());
    assert_eq!(
        &masked_snapshot[12..],
        &(INT8_PAN + 1).to_be_bytes(),
        "not a card number"
    );

    let text: &[(u32, &str, &str)] = &[
        (POINT, "(4.012888888881881e+15,2.5)", "(1881,2.5)"),
        (718, "<(4.012888888881881e+15,0),1>", "<(1881,0),1>"),
        (XID8, "4012888888881881", "1881"),
        (
            SNAPSHOT,
            "4012888888881881:4012888888881882:",
            "1881:4012888888881882:",
        ),
    ];
    for &(type_oid, value, expected) in text {
        let out = masked_fields(
            &self::shape(&[(0, 0, type_oid, 0)]),
            &[Some(value.as_bytes())],
        )
        .expect("masked");
        assert_eq!(out[0].as_deref(), Some(expected.as_bytes()), "{type_oid}");
    }
}

/// A grouped card number right after a 32-digit run is a number of its own
/// (the run is too long to be its head); cut inside the run, the message
/// holding the number has only the run's tail before it, 12 digits, and
/// alone would read the number as that run's continuation. Found by
/// `copy_output_keeps_no_pan_wherever_messages_split`.
#[test]
fn copy_output_masks_a_number_that_the_previous_message_makes_one() {
    let text = b"40000000000000024000000000000002 4000 0000 0000 0002";
    assert!(pan::contains_pan(text));
    for cut in 1..text.len() {
        let mut masker = CopyMasker::new(&policy(), false);
        let out = copy_all(&mut masker, &[&text[..cut], &text[cut..]]).concat();
        assert!(
            !pan::contains_pan(&out),
            "cut at {cut}: {}",
            String::from_utf8_lossy(&out)
        );
    }
}
