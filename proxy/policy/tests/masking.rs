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
        Some(b"order 1700000000000 shipped, call +4111111111111111"),
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

    // A declared column of a non-text type cannot be masked in binary.
    let declared_int8 = shape(&[(PAYMENTS_OID, 2, INT8, 0)]);
    assert!(matches!(
        declared_int8.with_result_formats(&[1]),
        Err(MaskFailure::BinaryDeclaredColumn { .. })
    ));
    assert!(matches!(
        RowShape::from_row_description(&row_description(&[(PAYMENTS_OID, 2, INT8, 1)]), &policy()),
        Err(MaskFailure::BinaryDeclaredColumn { .. })
    ));
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
    let row = format!("1\t{VISA}\tnote\n");
    let out = masker.mask_copy_data(row.as_bytes());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].as_ref(), b"1\t************1111\tnote\n");

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
