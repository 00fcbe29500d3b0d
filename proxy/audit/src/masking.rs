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

/// Masks one free-text field (entry columns outside the payload).
pub(crate) fn mask_field(masker: &Masker, text: &str) -> String {
    masker.mask_text(text).into_owned()
}

fn mask_value(masker: &Masker, value: &mut Value) {
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(masked) = masker.mask_text(text) {
                *text = masked;
            }
        }
        Value::Number(number) => {
            let digits = number.to_string();
            if pan::contains_pan(digits.as_bytes()) {
                *value = Value::String(masker.mask_text(&digits).into_owned());
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
        assert!(payload.starts_with("{\"application_name\""), "keys sorted: {payload}");
    }
}
