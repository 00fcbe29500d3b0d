//! Defense in depth: the relay already masks what it records, but the store
//! masks every string again (and any number that reads as a card number)
//! before anything is hashed or written, so a caller's slip can never put a
//! readable PAN on disk (PCI DSS 3.5.1).

use hoop_common::mask::{Masker, Strategy};
use hoop_common::pan;
use serde_json::Value;

use crate::error::{AuditError, Result};
use crate::record::Record;

/// The masker the store uses: `pan_last4`, which needs no key.
pub(crate) fn store_masker() -> Result<Masker> {
    Masker::new(Strategy::PanLast4, None)
        .map_err(|e| AuditError::Config(format!("cannot build the audit masker: {e}")))
}

/// Masks a record and returns its canonical payload: JSON, object keys
/// sorted, no whitespace. The result is what gets hashed and stored.
pub(crate) fn canonical_payload(masker: &Masker, record: &Record) -> Result<String> {
    let mut value = record
        .to_value()
        .map_err(|e| AuditError::Malformed(format!("record does not serialise: {e}")))?;
    mask_value(masker, &mut value);
    // serde_json's map is ordered by key (no `preserve_order` feature), so
    // this serialisation is canonical.
    let payload = serde_json::to_string(&value)
        .map_err(|e| AuditError::Malformed(format!("record does not serialise: {e}")))?;
    if pan::contains_pan(payload.as_bytes()) {
        // A PAN spread over JSON tokens; refuse rather than write it.
        return Err(AuditError::Malformed(
            "record still holds a card number after masking; refusing to write it".into(),
        ));
    }
    Ok(payload)
}

/// Masks one free-text field: the shared detector first, then the
/// stricter pass below.
pub(crate) fn mask_field(masker: &Masker, text: &str) -> String {
    mask_glued_pans(&masker.mask_text(text))
}

/// The shared detector leaves digits glued to words alone
/// (`agent-4111111111111111`, `x5555555555554444`) to spare identifiers in
/// live results. The audit log is stricter: any run of 13 to 19 digits
/// (single spaces or dashes between them allowed) that is a valid card
/// number by brand and Luhn check keeps only its last four digits.
fn mask_glued_pans(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut index = 0;
    while index < bytes.len() {
        if !bytes[index].is_ascii_digit() {
            index += 1;
            continue;
        }
        // A maximal run: digits, with single separators between digits.
        let start = index;
        let mut end = index;
        let mut digits = Vec::new();
        while end < bytes.len() {
            let byte = bytes[end];
            if byte.is_ascii_digit() {
                digits.push(byte);
                end += 1;
            } else if (byte == b' ' || byte == b'-')
                && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
                && end > start
            {
                end += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len())
            && pan::brand_of(&digits).is_some()
            && pan::luhn_valid(&digits)
        {
            let mut to_mask = digits.len() - 4;
            for byte in &mut out[start..end] {
                if to_mask == 0 {
                    break;
                }
                if byte.is_ascii_digit() {
                    *byte = b'*';
                    to_mask -= 1;
                }
            }
        }
        index = end;
    }
    // Only ASCII digits were replaced by ASCII, so this stays UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Whether `text` has enough digits to hold a card number: 13, counting
/// every non-ASCII byte as one (full-width digits, and the separators the
/// detector ignores, are non-ASCII). Text with fewer is what most fields of
/// a record are (kinds, table names, short statements), and is left as it
/// is without running the detectors over it.
fn may_hold_pan(text: &str) -> bool {
    text.bytes()
        .filter(|b| b.is_ascii_digit() || !b.is_ascii())
        .nth(12)
        .is_some()
}

fn mask_value(masker: &Masker, value: &mut Value) {
    match value {
        Value::String(text) if !may_hold_pan(text) => {}
        Value::String(text) => {
            let masked = mask_field(masker, text);
            if masked != *text {
                *text = masked;
            }
        }
        Value::Number(number) => {
            let digits = number.to_string();
            let masked = mask_field(masker, &digits);
            if masked != digits {
                *value = Value::String(masked);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask_value(masker, item)),
        Value::Object(map) => {
            // Keys are our own field names; values are what callers passed.
            map.values_mut().for_each(|item| mask_value(masker, item));
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Event;

    #[test]
    fn masks_every_string_and_pan_like_numbers() {
        let masker = store_masker().expect("masker");
        let record = Record::Event(Event::LoginFailed {
            client_addr: "10.0.0.1:5000".into(),
            user_name: Some("card 4111 1111 1111 1111".into()),
            database: Some("5555-5555-5555-4444".into()),
            application_name: Some("378282246310005".into()),
            subject: None,
            reason: "bad token".into(),
        });
        let payload = canonical_payload(&masker, &record).expect("payload");
        assert!(!pan::contains_pan(payload.as_bytes()), "{payload}");
        assert!(payload.contains("1111"), "last four kept: {payload}");
        assert!(
            payload.starts_with("{\"application_name\""),
            "keys sorted: {payload}"
        );
    }

    #[test]
    fn short_of_thirteen_digits_nothing_is_scanned() {
        assert!(!may_hold_pan(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345"
        ));
        assert!(may_hold_pan("4111111111111111"));
        assert!(may_hold_pan("4111 1111 1111 1"));
        // Full-width digits are not ASCII: counted, so scanned.
        assert!(may_hold_pan("４１１１１１１１１１１１１１１１"));
    }

    #[test]
    fn masks_card_numbers_glued_to_words_too() {
        let masker = store_masker().expect("masker");
        assert_eq!(
            mask_field(
                &masker,
                "agent-4111111111111111 x5555-5555-5555-4444 id=378282246310005"
            ),
            "agent-************1111 x****-****-****-4444 id=***********0005"
        );
        // Dates, UUIDs and short numbers are left alone.
        let plain = "2024-05-01T12:00:00Z 550e8400-e29b-41d4-a716-446655440000 12345";
        assert_eq!(mask_field(&masker, plain), plain);
    }
}
