//! Masking what the server sends, one message body at a time.
//!
//! The relay hands over message BODIES (the bytes after the type byte and
//! the length) and gets back `None` ("forward the frame untouched") or a new
//! body to frame and send. Nothing here holds more than one message, so a
//! result of any size streams through.
//!
//! Two mechanisms, both always on:
//!
//! - **Declared columns.** A field whose RowDescription names a column in
//!   `hoop.masked_columns` (table OID + attribute number) is masked whole with
//!   that column's strategy, card number or not — unless the session may
//!   unmask it, the only way a full PAN reaches a client.
//! - **Content detection.** Every other field, and every error, notice,
//!   notification and COPY chunk, is scanned with `hoop_common`'s detector and
//!   each card number in it is replaced with the content strategy.
//!
//! Binary format: for text-like types (`text`, `varchar`, `bpchar`, `name`,
//! `json`, `xml`, `unknown`, `bytea`, and `jsonb` after its version byte) the
//! bytes are the text, so both mechanisms apply as for text format. For any
//! other type the raw bytes are still scanned — a binary `text[]` or record
//! carries its elements' text verbatim — and masked in place with `pan_last4`,
//! which keeps the length, so the value's inner structure stays valid. A
//! declared column of a non-text type requested in binary cannot be masked
//! with its strategy and fails closed ([`MaskFailure::BinaryDeclaredColumn`]).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use hoop_common::mask::{MaskError, Masker, Strategy};
use hoop_common::pan;

use crate::wire::{put_cstr, Reader};

/// One row of the extension's view `hoop.masked_columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedColumn {
    /// `pg_class` OID of the table: what RowDescription reports.
    pub relid: u32,
    pub attnum: i16,
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    /// `pan_last4`, `pan_bin_last4`, `pan_token` or `redact`.
    pub strategy: String,
}

impl MaskedColumn {
    fn qualified(&self) -> String {
        format!(
            "{}.{}.{}",
            self.schema_name, self.table_name, self.column_name
        )
    }
}

/// Why a message could not be masked. The relay must not forward the
/// message: it ends the statement with an error instead (fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskFailure {
    /// The body is not what its message type says.
    Malformed {
        message: &'static str,
        problem: &'static str,
    },
    /// A DataRow with a different number of fields than its RowDescription.
    FieldCount { expected: usize, found: usize },
    /// Bind asked for a number of result format codes that fits no row shape.
    FormatCodes { fields: usize, codes: usize },
    /// A declared column of a non-text type was requested in binary format.
    BinaryDeclaredColumn { column: String, type_oid: u32 },
    /// `hoop.masked_columns` names a strategy this gateway does not know.
    UnknownStrategy { column: String, strategy: String },
    /// A strategy could not be set up (`pan_token` without a key).
    Masker(MaskError),
}

impl fmt::Display for MaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskFailure::Malformed { message, problem } => {
                write!(f, "malformed {message} from the server: {problem}")
            }
            MaskFailure::FieldCount { expected, found } => write!(
                f,
                "a row has {found} fields but its row description has {expected}"
            ),
            MaskFailure::FormatCodes { fields, codes } => write!(
                f,
                "{codes} result format codes for a row of {fields} fields"
            ),
            MaskFailure::BinaryDeclaredColumn { column, type_oid } => write!(
                f,
                "masked column {column} (type oid {type_oid}) cannot be masked in binary \
                 format; request it in text format"
            ),
            MaskFailure::UnknownStrategy { column, strategy } => write!(
                f,
                "masked column {column} uses strategy {strategy:?}, which this gateway \
                 does not know"
            ),
            MaskFailure::Masker(error) => write!(f, "masking is not configured: {error}"),
        }
    }
}

impl std::error::Error for MaskFailure {}

/// The maskers a session uses; shared by every row shape of the session.
#[derive(Clone)]
struct Maskers {
    /// Content detection in free text, with the configured strategy.
    content: Masker,
    /// Content detection inside binary values whose length must not change.
    length_preserving: Masker,
    /// One per strategy declared columns use.
    by_strategy: HashMap<Strategy, Masker>,
}

/// How one session's results are masked: the declared columns (minus the
/// ones the session may unmask) and the content masker.
#[derive(Clone)]
pub struct ColumnPolicy {
    maskers: Arc<Maskers>,
    declared: HashMap<(u32, i16), Declared>,
    protected_tables: HashSet<String>,
}

#[derive(Clone)]
enum Declared {
    Masked {
        column: Arc<str>,
        strategy: Strategy,
    },
    Unmasked,
}

impl ColumnPolicy {
    /// Builds the policy from the rows of `hoop.masked_columns`, the
    /// session's unmask set (`schema.table.column`, as in the session token)
    /// and the content masker (the configured strategy, `pan_last4` by
    /// default). `token_key` is needed when any column uses `pan_token`.
    pub fn new(
        masked_columns: &[MaskedColumn],
        unmask: &[String],
        content: Masker,
        token_key: Option<&[u8]>,
    ) -> Result<ColumnPolicy, MaskFailure> {
        let unmask: HashSet<&str> = unmask.iter().map(String::as_str).collect();
        let mut by_strategy = HashMap::new();
        let mut declared = HashMap::new();
        let mut protected_tables = HashSet::new();
        for column in masked_columns {
            let qualified = column.qualified();
            protected_tables.insert(format!("{}.{}", column.schema_name, column.table_name));
            let strategy: Strategy =
                column
                    .strategy
                    .parse()
                    .map_err(|_| MaskFailure::UnknownStrategy {
                        column: qualified.clone(),
                        strategy: column.strategy.clone(),
                    })?;
            if let Entry::Vacant(slot) = by_strategy.entry(strategy) {
                slot.insert(Masker::new(strategy, token_key).map_err(MaskFailure::Masker)?);
            }
            let entry = if unmask.contains(qualified.as_str()) {
                Declared::Unmasked
            } else {
                Declared::Masked {
                    column: Arc::from(qualified),
                    strategy,
                }
            };
            declared.insert((column.relid, column.attnum), entry);
        }
        let length_preserving =
            Masker::new(Strategy::PanLast4, None).map_err(MaskFailure::Masker)?;
        Ok(ColumnPolicy {
            maskers: Arc::new(Maskers {
                content,
                length_preserving,
                by_strategy,
            }),
            declared,
            protected_tables,
        })
    }

    /// `schema.table` of every table with a declared column, for
    /// [`crate::PolicyContext::protected_tables`].
    pub fn protected_tables(&self) -> &HashSet<String> {
        &self.protected_tables
    }

    /// The content masker, for errors, notices, notifications, COPY and audit text.
    pub fn content_masker(&self) -> &Masker {
        &self.maskers.content
    }
}

/// PostgreSQL type OIDs whose binary send format is the text itself.
const TEXT_LIKE_TYPES: [u32; 9] = [
    25,   // text
    1043, // varchar
    1042, // bpchar
    19,   // name
    114,  // json
    142,  // xml
    705,  // unknown
    2275, // cstring
    17,   // bytea: raw bytes, which is where a PAN would be
];
const JSONB: u32 = 3802;
const BYTEA: u32 = 17;

/// How one result column is masked.
#[derive(Clone)]
struct Field {
    treatment: Treatment,
    type_oid: u32,
    binary: bool,
}

#[derive(Clone)]
enum Treatment {
    Declared {
        column: Arc<str>,
        strategy: Strategy,
    },
    Unmasked,
    Content,
}

/// The masking plan for the rows of one result: built from its
/// RowDescription, kept by the relay per statement and portal (Execute does
/// not resend RowDescription).
#[derive(Clone)]
pub struct RowShape {
    fields: Vec<Field>,
    maskers: Arc<Maskers>,
}

impl RowShape {
    /// Reads a RowDescription body: per field name, table OID, attribute
    /// number, type OID, type size, type modifier, format code.
    pub fn from_row_description(
        body: &[u8],
        policy: &ColumnPolicy,
    ) -> Result<RowShape, MaskFailure> {
        const MESSAGE: &str = "RowDescription";
        let mut reader = Reader::new(body, MESSAGE);
        let count = reader.i16("field count")?;
        let count = usize::try_from(count).map_err(|_| MaskFailure::Malformed {
            message: MESSAGE,
            problem: "negative field count",
        })?;
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            reader.cstr("field name")?;
            let table_oid = reader.u32("table oid")?;
            let attnum = reader.i16("column number")?;
            let type_oid = reader.u32("type oid")?;
            reader.i16("type size")?;
            reader.i32("type modifier")?;
            let format = reader.i16("format code")?;
            let treatment = match policy.declared.get(&(table_oid, attnum)) {
                Some(Declared::Masked { column, strategy }) if table_oid != 0 => {
                    Treatment::Declared {
                        column: Arc::clone(column),
                        strategy: *strategy,
                    }
                }
                Some(Declared::Unmasked) if table_oid != 0 => Treatment::Unmasked,
                _ => Treatment::Content,
            };
            fields.push(Field {
                treatment,
                type_oid,
                binary: format_is_binary(format, MESSAGE)?,
            });
        }
        reader.expect_end()?;
        let shape = RowShape {
            fields,
            maskers: Arc::clone(&policy.maskers),
        };
        shape.check_binary_declared()?;
        Ok(shape)
    }

    /// The shape with Bind's result-column format codes applied: none means
    /// all text, one applies to every column, otherwise one per column
    /// (RowDescription from Describe of a statement always says text).
    pub fn with_result_formats(&self, formats: &[i16]) -> Result<RowShape, MaskFailure> {
        let mut shape = self.clone();
        let count = shape.fields.len();
        match formats.len() {
            0 => shape.fields.iter_mut().for_each(|f| f.binary = false),
            1 => {
                let binary = format_is_binary(formats[0], "Bind")?;
                shape.fields.iter_mut().for_each(|f| f.binary = binary);
            }
            n if n == count => {
                for (field, &format) in shape.fields.iter_mut().zip(formats) {
                    field.binary = format_is_binary(format, "Bind")?;
                }
            }
            n => {
                return Err(MaskFailure::FormatCodes {
                    fields: count,
                    codes: n,
                })
            }
        }
        shape.check_binary_declared()?;
        Ok(shape)
    }

    /// Number of fields in each row.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// A declared column of a non-text type cannot be masked in binary:
    /// refuse when the shape is made, before any row arrives.
    fn check_binary_declared(&self) -> Result<(), MaskFailure> {
        for field in &self.fields {
            if let Treatment::Declared { column, .. } = &field.treatment {
                if field.binary && !is_text_like(field.type_oid) && field.type_oid != JSONB {
                    return Err(MaskFailure::BinaryDeclaredColumn {
                        column: column.to_string(),
                        type_oid: field.type_oid,
                    });
                }
            }
        }
        Ok(())
    }
}

fn format_is_binary(code: i16, message: &'static str) -> Result<bool, MaskFailure> {
    match code {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(MaskFailure::Malformed {
            message,
            problem: "format code is neither 0 (text) nor 1 (binary)",
        }),
    }
}

fn is_text_like(type_oid: u32) -> bool {
    TEXT_LIKE_TYPES.contains(&type_oid)
}

/// Masks one DataRow body. `Ok(None)`: nothing to mask, forward the frame as
/// it came. `Ok(Some(body))`: send this body instead. `Err`: the row is not
/// what `shape` describes — do not forward it.
pub fn mask_data_row(shape: &RowShape, body: &[u8]) -> Result<Option<Vec<u8>>, MaskFailure> {
    const MESSAGE: &str = "DataRow";
    let mut reader = Reader::new(body, MESSAGE);
    let count = reader.i16("field count")?;
    if usize::try_from(count).ok() != Some(shape.fields.len()) {
        return Err(MaskFailure::FieldCount {
            expected: shape.fields.len(),
            found: usize::try_from(count).unwrap_or(0),
        });
    }
    // (start of the length word, end of the value, replacement)
    let mut replacements: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for field in &shape.fields {
        let start = reader.position();
        let len = reader.i32("field length")?;
        if len == -1 {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| MaskFailure::Malformed {
            message: MESSAGE,
            problem: "negative field length",
        })?;
        let value = reader.bytes(len, "field value")?;
        if let Some(masked) = mask_field(field, &shape.maskers, value)? {
            replacements.push((start, reader.position(), masked));
        }
    }
    reader.expect_end()?;
    if replacements.is_empty() {
        return Ok(None);
    }
    let extra: usize = replacements.iter().map(|(_, _, v)| v.len()).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut copied = 0;
    for (start, end, value) in replacements {
        out.extend_from_slice(&body[copied..start]);
        let len = i32::try_from(value.len()).map_err(|_| MaskFailure::Malformed {
            message: MESSAGE,
            problem: "masked value too long",
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&value);
        copied = end;
    }
    out.extend_from_slice(&body[copied..]);
    Ok(Some(out))
}

/// The masked value of one non-NULL field, or `None` when it stays as it is.
fn mask_field(
    field: &Field,
    maskers: &Maskers,
    value: &[u8],
) -> Result<Option<Vec<u8>>, MaskFailure> {
    // jsonb's binary form is a version byte, then the text.
    let (prefix, text) = match (field.binary, field.type_oid, value.split_first()) {
        (true, JSONB, Some((version, rest))) => (Some(*version), rest),
        _ => (None, value),
    };
    let with_prefix = |masked: Vec<u8>| -> Vec<u8> {
        match prefix {
            Some(version) => {
                let mut out = Vec::with_capacity(masked.len() + 1);
                out.push(version);
                out.extend_from_slice(&masked);
                out
            }
            None => masked,
        }
    };
    match &field.treatment {
        Treatment::Unmasked => Ok(None),
        Treatment::Declared { strategy, .. } => {
            let masker = maskers
                .by_strategy
                .get(strategy)
                .unwrap_or(&maskers.length_preserving);
            let masked = masker.mask_value(&String::from_utf8_lossy(text));
            if masked.as_bytes() == text {
                return Ok(None);
            }
            Ok(Some(with_prefix(masked.into_bytes())))
        }
        Treatment::Content if field.binary && !is_text_like(field.type_oid) && prefix.is_none() => {
            // Structured binary value: mask in place, keeping every length word valid.
            match maskers.length_preserving.mask_bytes(value) {
                Cow::Borrowed(_) => Ok(None),
                Cow::Owned(masked) if masked.len() == value.len() => Ok(Some(masked)),
                Cow::Owned(_) => Err(MaskFailure::Malformed {
                    message: "DataRow",
                    problem: "binary value could not be masked in place",
                }),
            }
        }
        Treatment::Content => {
            if !field.binary && field.type_oid == BYTEA {
                if let Some(masked) = mask_bytea_hex(&maskers.content, text) {
                    return Ok(Some(masked));
                }
            }
            if !pan::contains_pan(text) {
                return Ok(None);
            }
            match maskers.content.mask_bytes(text) {
                Cow::Borrowed(_) => Ok(None),
                Cow::Owned(masked) => Ok(Some(with_prefix(masked))),
            }
        }
    }
}

/// bytea in text format is `\x` and hex digits: `convert_to(card_number,
/// 'UTF8')` would carry a PAN past any text scan. Decode, look, re-encode.
fn mask_bytea_hex(masker: &Masker, text: &[u8]) -> Option<Vec<u8>> {
    let hex = text.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let decoded: Option<Vec<u8>> = hex
        .chunks_exact(2)
        .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
        .collect();
    let decoded = decoded?;
    if !pan::contains_pan(&decoded) {
        return None;
    }
    let masked = masker.mask_bytes(&decoded);
    let mut out = Vec::with_capacity(2 + masked.len() * 2);
    out.extend_from_slice(b"\\x");
    for byte in masked.iter() {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Masks every field of an ErrorResponse or NoticeResponse body (message,
/// detail, hint, context, where … — errors echo values, `RAISE NOTICE`
/// prints anything). `None`: forward untouched.
pub fn mask_error_or_notice(masker: &Masker, body: &[u8]) -> Result<Option<Vec<u8>>, MaskFailure> {
    const MESSAGE: &str = "ErrorResponse/NoticeResponse";
    let mut reader = Reader::new(body, MESSAGE);
    let mut fields = Vec::new();
    loop {
        let code = reader.u8("field type")?;
        if code == 0 {
            break;
        }
        fields.push((code, reader.cstr("field value")?));
    }
    reader.expect_end()?;
    let masked: Vec<(u8, Cow<[u8]>)> = fields
        .into_iter()
        .map(|(code, value)| (code, masker.mask_bytes(value)))
        .collect();
    if masked
        .iter()
        .all(|(_, value)| matches!(value, Cow::Borrowed(_)))
    {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    for (code, value) in masked {
        out.push(code);
        put_cstr(&mut out, &value, MESSAGE)?;
    }
    out.push(0);
    Ok(Some(out))
}

/// Masks a NotificationResponse body (sender pid, channel, payload): a
/// `NOTIFY ch, '4111…'` or `pg_notify(…, card_number)` must not deliver a PAN.
pub fn mask_notification(masker: &Masker, body: &[u8]) -> Result<Option<Vec<u8>>, MaskFailure> {
    const MESSAGE: &str = "NotificationResponse";
    let mut reader = Reader::new(body, MESSAGE);
    let pid = reader.bytes(4, "process id")?;
    let channel = reader.cstr("channel")?;
    let payload = reader.cstr("payload")?;
    reader.expect_end()?;
    let masked_channel = masker.mask_bytes(channel);
    let masked_payload = masker.mask_bytes(payload);
    if matches!(
        (&masked_channel, &masked_payload),
        (Cow::Borrowed(_), Cow::Borrowed(_))
    ) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(pid);
    put_cstr(&mut out, &masked_channel, MESSAGE)?;
    put_cstr(&mut out, &masked_payload, MESSAGE)?;
    Ok(Some(out))
}

/// Masks SQL text (and bind values) for the audit record: every card number
/// literal becomes its masked form. Text that spells a PAN in pieces
/// (`'4111' || '1111…'`) is not recognised — the audit store holds the
/// statement as sent, so such a statement leaks only its own pieces.
pub fn mask_sql_text<'a>(masker: &Masker, sql: &'a str) -> Cow<'a, str> {
    masker.mask_text(sql)
}

/// Masks `COPY … TO STDOUT` data, one CopyData body at a time.
///
/// PostgreSQL sends one row per CopyData, but nothing in the protocol makes
/// that a promise, so a card number could be split across messages. The
/// masker therefore holds back a message that ends in digits or separators
/// until the next one shows how the number goes on (a run of messages made
/// only of digits is held together, never more than the last 64 bytes'
/// worth); the part spanning a boundary is
/// masked in place on both sides with `pan_last4`, which keeps lengths, so
/// message boundaries — which some clients treat as row boundaries — never
/// move and no message is merged or split. Call [`CopyMasker::finish`] at
/// CopyDone (and before forwarding an error that ends the COPY) to release
/// what is held.
///
/// Binary COPY is masked like binary fields of non-text types: in place with
/// `pan_last4`, so tuple and field lengths stay valid.
pub struct CopyMasker {
    maskers: Arc<Maskers>,
    binary: bool,
    held: Vec<Vec<u8>>,
}

/// How far around a message boundary the detector must see to judge a card
/// number there as it would in one piece: the number itself (at most 23
/// bytes printed), the 13-digit run before a grouped number that makes it a
/// number of its own, and the boundary bytes on either side.
const BOUNDARY_CONTEXT: usize = 64;

impl CopyMasker {
    /// `binary`: CopyOutResponse's overall format is 1.
    pub fn new(policy: &ColumnPolicy, binary: bool) -> CopyMasker {
        CopyMasker {
            maskers: Arc::clone(&policy.maskers),
            binary,
            held: Vec::new(),
        }
    }

    /// Masks one CopyData body; returns the bodies to forward now, in order
    /// (none when this one is held back; `Borrowed` means the body as it came).
    pub fn mask_copy_data<'a>(&mut self, body: &'a [u8]) -> Vec<Cow<'a, [u8]>> {
        let masker = if self.binary {
            &self.maskers.length_preserving
        } else {
            &self.maskers.content
        };
        let current = masker.mask_bytes(body);
        if self.held.is_empty() {
            if ends_in_number(&current) {
                self.held.push(current.into_owned());
                return Vec::new();
            }
            return vec![current];
        }
        self.held.push(current.into_owned());
        mask_held(&self.maskers.length_preserving, &mut self.held);
        let keep = messages_to_hold(&self.held);
        let release = self.held.len() - keep;
        self.held.drain(..release).map(Cow::Owned).collect()
    }

    /// What is held back, to forward (in order) before CopyDone.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.held)
    }
}

fn is_number_byte(byte: u8) -> bool {
    byte.is_ascii_digit() || byte == b' ' || byte == b'-'
}

fn ends_in_number(bytes: &[u8]) -> bool {
    bytes.last().is_some_and(|&b| is_number_byte(b))
}

/// How many of the last held messages the next boundary may still need:
/// those holding the last [`BOUNDARY_CONTEXT`] bytes of the trailing run of
/// digits and separators (none when the last message does not end in one).
fn messages_to_hold(held: &[Vec<u8>]) -> usize {
    let mut needed = BOUNDARY_CONTEXT;
    let mut keep = 0;
    for message in held.iter().rev() {
        let run = message
            .iter()
            .rev()
            .take_while(|&&b| is_number_byte(b))
            .count();
        if run == 0 {
            break;
        }
        keep += 1;
        if run < message.len() || run >= needed {
            break;
        }
        needed -= run;
    }
    keep
}

/// Masks card numbers spanning the boundaries between held messages, and
/// any that masking itself brings out (a masked digit can end the decimal or
/// the longer number a card number was part of), until nothing changes.
/// Every round that changes something masks digits, so this ends.
fn mask_held(masker: &Masker, held: &mut [Vec<u8>]) {
    loop {
        let mut changed = false;
        for end in 1..held.len() {
            changed |= mask_boundary(masker, &mut held[..=end]);
        }
        for message in held.iter_mut() {
            if let Cow::Owned(masked) = masker.mask_bytes(message) {
                if masked.len() == message.len() {
                    *message = masked;
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
    }
}

/// Masks a card number that spans the boundary before the last of
/// `messages`, judged on up to [`BOUNDARY_CONTEXT`] bytes either side, and
/// writes the masked bytes back in place in every message they came from.
/// Returns whether anything changed.
fn mask_boundary(masker: &Masker, messages: &mut [Vec<u8>]) -> bool {
    let Some((last, earlier)) = messages.split_last_mut() else {
        return false;
    };
    if !last.first().copied().is_some_and(is_number_byte)
        || !earlier
            .last()
            .and_then(|m| m.last())
            .copied()
            .is_some_and(is_number_byte)
    {
        return false;
    }
    // (message index, start) of each piece of the left side, oldest first.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut wanted = BOUNDARY_CONTEXT;
    for (index, message) in earlier.iter().enumerate().rev() {
        let take = message.len().min(wanted);
        pieces.push((index, message.len() - take));
        wanted -= take;
        if wanted == 0 {
            break;
        }
    }
    pieces.reverse();
    let head_len = last.len().min(BOUNDARY_CONTEXT);
    let mut window = Vec::with_capacity(2 * BOUNDARY_CONTEXT);
    for &(index, start) in &pieces {
        window.extend_from_slice(&earlier[index][start..]);
    }
    let split = window.len();
    window.extend_from_slice(&last[..head_len]);
    // Only a number crossing the boundary is this function's business; the
    // rest of the window was judged with its own message.
    let crosses = pan::find_pans(&window)
        .iter()
        .any(|m| m.start < split && m.end > split);
    if !crosses {
        return false;
    }
    let Cow::Owned(masked) = masker.mask_bytes(&window) else {
        return false;
    };
    if masked.len() != window.len() {
        return false;
    }
    let mut at = 0;
    for &(index, start) in &pieces {
        let message = &mut earlier[index];
        let len = message.len() - start;
        message[start..].copy_from_slice(&masked[at..at + len]);
        at += len;
    }
    last[..head_len].copy_from_slice(&masked[at..]);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ColumnPolicy {
        let content = Masker::new(Strategy::PanLast4, None).expect("pan_last4 needs no key");
        ColumnPolicy::new(&[], &[], content, None).expect("no columns")
    }

    #[test]
    fn junction_masks_a_pan_split_across_two_messages() {
        let mut masker = CopyMasker::new(&policy(), false);
        let first = masker.mask_copy_data(b"1\tcard 41111111");
        assert!(first.is_empty(), "the message ending in digits is held");
        let second = masker.mask_copy_data(b"11111111\tok\n");
        let joined: Vec<u8> = second.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, b"1\tcard ************1111\tok\n".to_vec());
        assert_eq!(second.len(), 2, "message boundaries are kept");
        assert!(masker.finish().is_empty());
    }
}
