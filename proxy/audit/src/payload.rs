//! Defense in depth: the relay already masks what it records, but the store
//! masks every string again (and any number that reads as a card number)
//! before anything is hashed or written, so a caller's slip can never put a
//! readable PAN on disk (PCI DSS 3.5.1).

use std::borrow::Cow;

use hoop_common::mask::{Masker, Strategy};
use hoop_common::pan;
use hoop_common::time::Timestamp;
use serde_json::Value;

use crate::error::{AuditError, Result};
use crate::record::{Record, RecordedDecision, StatementBegin, StatementEnd, StatementOutcome};

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

/// [`canonical_payload`] of a `statement` record, written directly: every
/// statement writes one, so no JSON tree and no copy of the record are
/// built for it. The bytes are exactly those of the generic path (keys in
/// sorted order, each string masked as [`mask_value`] masks it; a test
/// holds the two together), which it falls back to for a number long
/// enough to read as a card number. `masked_session_id` is the record's
/// session id as [`mask_string`] masked it (once per statement, for this
/// record, the entry's column and the statement's end record).
pub(crate) fn statement_begin_payload(
    masker: &Masker,
    begin: &StatementBegin,
    masked_session_id: &str,
) -> Result<String> {
    // Naming every field: a new one must be added here (or the build fails).
    let StatementBegin {
        session_id: _,
        sequence,
        received_at,
        sql,
        params,
        kind,
        tables,
        decision,
        executed_sql,
    } = begin;
    if may_read_as_pan(*sequence) {
        return canonical_payload(masker, &Record::Statement(begin.clone()));
    }
    let mut out = Json::new(masker, 160 + sql.len());
    out.open();
    out.key("decision");
    out.decision(decision);
    if let Some(executed_sql) = executed_sql {
        out.key("executed_sql");
        out.string(executed_sql);
    }
    out.key("kind");
    out.string(kind);
    out.key("params");
    out.list(params, |out, param| out.optional_string(param.as_deref()));
    out.key("received_at");
    out.timestamp(received_at);
    out.key("sequence");
    out.number(*sequence);
    out.key("session_id");
    out.masked(masked_session_id);
    out.key("sql");
    out.string(sql);
    out.key("tables");
    out.list(tables, |out, table| out.string(table));
    out.close();
    out.finish()
}

/// [`canonical_payload`] of the `statement_end` record completing the
/// statement `sequence` of the session whose masked id is
/// `masked_session_id` (begun at chain position `begin_seq`), keeping the
/// first `record_rows` result rows (and the column names only with rows):
/// written directly, as [`statement_begin_payload`].
pub(crate) fn statement_end_payload(
    masker: &Masker,
    masked_session_id: &str,
    sequence: u64,
    begin_seq: u64,
    outcome: &StatementOutcome,
    record_rows: usize,
) -> Result<String> {
    let StatementOutcome {
        command_tag,
        rows,
        sqlstate,
        message,
        duration_us,
        columns,
        result_rows,
    } = outcome;
    let result_rows = &result_rows[..result_rows.len().min(record_rows)];
    let columns: &[String] = if result_rows.is_empty() { &[] } else { columns };
    if [sequence, begin_seq, *duration_us, rows.unwrap_or(0)]
        .into_iter()
        .any(may_read_as_pan)
    {
        let mut outcome = outcome.clone();
        outcome.result_rows.truncate(record_rows);
        if outcome.result_rows.is_empty() {
            outcome.columns.clear();
        }
        // Masking the masked id again leaves it as it is.
        let end = StatementEnd {
            session_id: masked_session_id.to_owned(),
            sequence,
            begin_seq,
            outcome,
        };
        return canonical_payload(masker, &Record::StatementEnd(end));
    }
    let mut out = Json::new(masker, 200);
    out.open();
    out.key("begin_seq");
    out.number(begin_seq);
    out.key("outcome");
    out.open();
    out.key("columns");
    out.list(columns, |out, column| out.string(column));
    out.key("command_tag");
    out.optional_string(command_tag.as_deref());
    out.key("duration_us");
    out.number(*duration_us);
    out.key("message");
    out.optional_string(message.as_deref());
    out.key("result_rows");
    out.list(result_rows, |out, row| {
        out.list(row, |out, value| out.optional_string(value.as_deref()))
    });
    out.key("rows");
    match rows {
        Some(rows) => out.number(*rows),
        None => out.null(),
    }
    out.key("sqlstate");
    out.optional_string(sqlstate.as_deref());
    out.close();
    out.key("sequence");
    out.number(sequence);
    out.key("session_id");
    out.masked(masked_session_id);
    out.close();
    out.finish()
}

/// Whether a number has the 13 digits a card number needs: such a number
/// is masked into a string, which only the generic path does.
fn may_read_as_pan(number: u64) -> bool {
    number >= 1_000_000_000_000
}

/// Canonical JSON written by hand: serde_json's own string escaping, keys
/// given in sorted order by the caller, every string masked.
struct Json<'m> {
    masker: &'m Masker,
    out: Vec<u8>,
    /// Whether the next value or key needs a comma before it.
    comma: bool,
}

impl<'m> Json<'m> {
    fn new(masker: &'m Masker, capacity: usize) -> Json<'m> {
        Json {
            masker,
            out: Vec::with_capacity(capacity),
            comma: false,
        }
    }

    fn separate(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
    }

    fn open(&mut self) {
        self.separate();
        self.out.push(b'{');
        self.comma = false;
    }

    fn close(&mut self) {
        self.out.push(b'}');
        self.comma = true;
    }

    /// A key: one of the record's own names, which need no escaping.
    fn key(&mut self, key: &'static str) {
        debug_assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{key}"
        );
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.comma = false;
    }

    fn escaped(&mut self, text: &str) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, text);
    }

    fn string(&mut self, text: &str) {
        let masked = mask_string(self.masker, text);
        self.masked(&masked);
    }

    /// A string [`mask_string`] already masked.
    fn masked(&mut self, masked: &str) {
        self.separate();
        self.escaped(masked);
        self.comma = true;
    }

    /// A timestamp in its RFC 3339 form (`2026-12-06T13:57:01.123456Z`),
    /// which masking leaves as it is: its longest run of digits joined by
    /// the separators a card number may have is the date's 8 (a test
    /// holds this), and a card number needs 13. Nothing in it needs
    /// escaping.
    fn timestamp(&mut self, time: &Timestamp) {
        use std::io::Write as _;
        self.separate();
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "\"{time}\"");
        self.comma = true;
    }

    fn optional_string(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.string(text),
            None => self.null(),
        }
    }

    fn null(&mut self) {
        self.separate();
        self.out.extend_from_slice(b"null");
        self.comma = true;
    }

    fn number(&mut self, number: u64) {
        self.separate();
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "{number}");
        self.comma = true;
    }

    fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Json<'m>, &T)) {
        self.separate();
        self.out.push(b'[');
        self.comma = false;
        for each in items {
            item(self, each);
        }
        self.out.push(b']');
        self.comma = true;
    }

    fn decision(&mut self, decision: &RecordedDecision) {
        let RecordedDecision {
            action,
            rule,
            reason,
            review_id,
            reviewer,
        } = decision;
        self.open();
        self.key("action");
        self.separate();
        // A unit variant: its snake_case name, no digits to mask.
        let _ = serde_json::to_writer(&mut self.out, action);
        self.comma = true;
        self.key("reason");
        self.optional_string(reason.as_deref());
        self.key("review_id");
        self.optional_string(review_id.as_deref());
        self.key("reviewer");
        self.optional_string(reviewer.as_deref());
        self.key("rule");
        self.optional_string(rule.as_deref());
        self.close();
    }

    /// The payload, refused as [`canonical_payload`] refuses one.
    fn finish(self) -> Result<String> {
        let payload = String::from_utf8(self.out)
            .map_err(|e| AuditError::Malformed(format!("record does not serialise: {e}")))?;
        if pan::contains_pan(payload.as_bytes()) {
            return Err(AuditError::Malformed(
                "record still holds a card number after masking; refusing to write it".into(),
            ));
        }
        Ok(payload)
    }
}

/// A string of a record as the store writes it: masked by [`mask_field`]
/// when it has the digits to hold a card number, as it is otherwise.
pub(crate) fn mask_string<'t>(masker: &Masker, text: &'t str) -> Cow<'t, str> {
    if may_hold_pan(text) {
        Cow::Owned(mask_field(masker, text))
    } else {
        Cow::Borrowed(text)
    }
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

    /// Texts that exercise masking and escaping: card numbers plain,
    /// grouped, glued to words and in full-width digits, quotes,
    /// backslashes, control characters, non-ASCII.
    const TEXTS: [&str; 10] = [
        "",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 83512;",
        "SELECT * FROM payments WHERE card_number = '4111111111111111'",
        "card 5555 5555 5555 4444 and agent-378282246310005",
        "quote \" backslash \\ tab \t newline \n nul \u{0} del \u{7f} bell \u{7}",
        "ünïcødé ✓ — “quoted” ４１１１１１１１１１１１１１１１",
        "2024-05-01T12:00:00Z 550e8400-e29b-41d4-a716-446655440000",
        "4111-1111-1111-1111",
        "1b10c6e8234401eca21fe2007184e10d",
        "12345678901234567890 digits only, not a card",
    ];

    fn generic_begin(masker: &Masker, begin: &StatementBegin) -> Result<String> {
        canonical_payload(masker, &Record::Statement(begin.clone()))
    }

    fn text(index: usize) -> String {
        TEXTS[index % TEXTS.len()].to_owned()
    }

    #[test]
    fn statement_payloads_are_written_as_the_generic_path_writes_them() {
        use crate::record::{Action, StatementEnd};
        let masker = store_masker().expect("masker");
        let mut compared = 0;
        for index in 0..TEXTS.len() * 3 {
            let optional = |offset: usize| (index % 3 != 0).then(|| text(index + offset));
            let begin = StatementBegin {
                session_id: text(index + 8),
                sequence: [1, 999_999_999_999, 4_111_111_111_111_111, u64::MAX][index % 4],
                received_at: hoop_common::time::Timestamp::from_unix_micros(
                    1_700_000_000_000_000 + index as i64,
                ),
                sql: text(index),
                params: (0..index % 4)
                    .map(|p| (p != 1).then(|| text(index + p)))
                    .collect(),
                kind: text(index + 1),
                tables: (0..index % 3).map(|t| text(index + t + 2)).collect(),
                decision: RecordedDecision {
                    action: [Action::Allow, Action::Block, Action::Review][index % 3],
                    rule: optional(3),
                    reason: optional(4),
                    review_id: optional(5),
                    reviewer: optional(6),
                },
                executed_sql: optional(7),
            };
            let session_id = mask_string(&masker, &begin.session_id);
            let fast = statement_begin_payload(&masker, &begin, &session_id);
            let generic = generic_begin(&masker, &begin);
            match (&fast, &generic) {
                (Ok(fast), Ok(generic)) => {
                    assert_eq!(fast, generic);
                    compared += 1;
                }
                (Err(_), Err(_)) => {}
                _ => panic!("{fast:?} against {generic:?}"),
            }
            for record_rows in [0, 1, 3] {
                let outcome = StatementOutcome {
                    command_tag: optional(1),
                    rows: (index % 5 != 0).then_some([0, 7, 4_111_111_111_111_111][index % 3]),
                    sqlstate: optional(2),
                    message: optional(3),
                    duration_us: [2627, 5_555_555_555_554_444][index % 2],
                    columns: (0..index % 3).map(|c| text(index + c)).collect(),
                    result_rows: (0..index % 4)
                        .map(|r| {
                            (0..2)
                                .map(|c| (c + r != 2).then(|| text(index + r + c)))
                                .collect()
                        })
                        .collect(),
                };
                let (sequence, begin_seq) = (begin.sequence, index as u64 * 1_000_003);
                let fast = statement_end_payload(
                    &masker,
                    &session_id,
                    sequence,
                    begin_seq,
                    &outcome,
                    record_rows,
                );
                let mut kept = outcome.clone();
                kept.result_rows.truncate(record_rows);
                if kept.result_rows.is_empty() {
                    kept.columns.clear();
                }
                let end = Record::StatementEnd(StatementEnd {
                    session_id: begin.session_id.clone(),
                    sequence,
                    begin_seq,
                    outcome: kept,
                });
                let generic = canonical_payload(&masker, &end);
                match (&fast, &generic) {
                    (Ok(fast), Ok(generic)) => {
                        assert_eq!(fast, generic);
                        compared += 1;
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("{fast:?} against {generic:?}"),
                }
            }
        }
        assert!(
            compared > 50,
            "most records compared byte for byte: {compared}"
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
    fn masking_leaves_timestamps_as_they_are() {
        let masker = store_masker().expect("masker");
        // Digits in every position of the date and the time, from 1970
        // to year 9987: no run of 13 digits ever forms.
        let mut micros: i64 = 0;
        while micros < 253_000_000_000_000_000 {
            let time = Timestamp::from_unix_micros(micros).to_string();
            assert!(!may_hold_pan(&time) || mask_field(&masker, &time) == time);
            let mut json = Json::new(&masker, 40);
            json.timestamp(&Timestamp::from_unix_micros(micros));
            assert_eq!(
                String::from_utf8(json.out).expect("utf-8"),
                serde_json::to_string(&time).expect("json")
            );
            micros += 77_777_777_777_777;
        }
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
