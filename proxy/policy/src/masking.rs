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
//! Values keep their type (issue 13): content detection works by the
//! column's type ([`ValueKind`]). Types that cannot hold a card number are
//! not scanned. Text is masked with the content strategy; a number (`int8`,
//! `numeric`, `float8`, `money`, a JSON number, a number inside an array,
//! range or record, a COPY field) becomes a number — its last four digits —
//! so the client can still parse it. Binary values are decoded by type
//! (`int8`, `numeric`, `float8`, `money`, arrays, ranges, records, and
//! unknown types by their structure) and masked in the same binary type;
//! what does not decode fails closed ([`MaskFailure::Undecodable`]). A
//! declared column of a number type is masked as a number; of another
//! non-text type in binary, it fails closed
//! ([`MaskFailure::BinaryDeclaredColumn`]).

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
    /// A binary value that does not decode as its type says, or that reads
    /// as a card number in a form the gateway cannot mask in its type.
    Undecodable {
        type_oid: u32,
        problem: &'static str,
    },
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
            MaskFailure::Undecodable { type_oid, problem } => write!(
                f,
                "a binary value of type oid {type_oid} could not be checked for card numbers: \
                 {problem}"
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

const JSONB: u32 = 3802;
const BYTEA: u32 = 17;

/// How one result column is masked.
#[derive(Clone)]
struct Field {
    treatment: Treatment,
    type_oid: u32,
    /// What content detection does with the type, looked up once per shape.
    kind: ValueKind,
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

impl std::fmt::Debug for RowShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowShape")
            .field("fields", &self.fields.len())
            .finish_non_exhaustive()
    }
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
                kind: ValueKind::of(type_oid),
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
                if field.binary && !field.kind.is_text() && !field.kind.is_number() {
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

/// Masks a FunctionCallResponse body: the fast-path function's result (its
/// length, -1 for NULL, then the value in the format the call asked for).
/// Its type is not known: a text result is scanned as text; a binary one
/// as a value of a type the gateway does not know (records and arrays by
/// their structure, text in place), refusing an 8-byte value that reads as
/// a card number. `Ok(None)`: forward it as it came.
pub fn mask_function_result(
    policy: &ColumnPolicy,
    body: &[u8],
    binary: bool,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    const MESSAGE: &str = "FunctionCallResponse";
    let mut reader = Reader::new(body, MESSAGE);
    let len = reader.i32("result length")?;
    if len == -1 {
        reader.expect_end()?;
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| MaskFailure::Malformed {
        message: MESSAGE,
        problem: "negative result length",
    })?;
    let value = reader.bytes(len, "result")?;
    reader.expect_end()?;
    let masked = if binary {
        mask_untyped_binary(&policy.maskers, 0, value, Untyped::REFUSE)?
    } else {
        mask_content(&policy.maskers.content, value)
    };
    Ok(masked.map(|masked| {
        let mut out = Vec::with_capacity(masked.len() + 4);
        out.extend_from_slice(&(masked.len() as i32).to_be_bytes());
        out.extend_from_slice(&masked);
        out
    }))
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
    match &field.treatment {
        Treatment::Unmasked => Ok(None),
        Treatment::Declared { strategy, .. } => {
            let kind = field.kind;
            if kind.is_number() {
                // The column's strategy would make text its type cannot
                // parse: the value becomes its last four digits, a number.
                return if field.binary {
                    mask_binary_number(kind, value, true)
                } else if value.iter().any(u8::is_ascii_digit) {
                    Ok(Some(masked_number_text(value)))
                } else {
                    // NaN, Infinity: nothing to mask.
                    Ok(None)
                };
            }
            // jsonb's binary form is a version byte, then the text.
            let (prefix, text) = match (field.binary, field.type_oid, value.split_first()) {
                (true, JSONB, Some((version, rest))) => (Some(*version), rest),
                _ => (None, value),
            };
            let masker = maskers
                .by_strategy
                .get(strategy)
                .unwrap_or(&maskers.length_preserving);
            let masked = masker.mask_value(&String::from_utf8_lossy(text));
            if masked.as_bytes() == text {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(masked.len() + 1);
            out.extend(prefix);
            out.extend_from_slice(masked.as_bytes());
            Ok(Some(out))
        }
        Treatment::Content if field.kind == ValueKind::Skip => {
            fits_its_type(field, value)?;
            Ok(None)
        }
        Treatment::Content if field.binary => {
            mask_binary_kind(maskers, field.kind, field.type_oid, value, Untyped::REFUSE)
        }
        Treatment::Content => Ok(mask_text_value(maskers, field.kind, value)),
    }
}

/// A value of a type that cannot hold a card number is not scanned; for
/// the short types among them the row is checked to be what its
/// description says, as a second line: a value no value of its type
/// could be (a run of 13 digits in an `int4`'s text, a 16-byte `int4`)
/// means the description belongs to other rows, and the row is not sent.
/// (The relay describes each portal from the statement it was bound to;
/// this catches what it might still get wrong.)
fn fits_its_type(field: &Field, value: &[u8]) -> Result<(), MaskFailure> {
    // bool, int2, int4, oid, xid, cid, float4, date, time, timestamp,
    // timestamptz, timetz, uuid, pg_lsn, macaddr, macaddr8: their binary
    // size; in text none has 13 digits in a row.
    let size = match field.type_oid {
        16 => 1,
        21 => 2,
        23 | 26 | 28 | 29 | 700 | 1082 => 4,
        1083 | 1114 | 1184 | 3220 | 774 => 8,
        1266 => 12,
        2950 => 16,
        829 => 6,
        _ => return Ok(()),
    };
    let fits = if field.binary {
        value.len() == size
    } else {
        value.len() < 13
            || !value
                .split(|b| !b.is_ascii_digit())
                .any(|run| run.len() >= 13)
    };
    if fits {
        Ok(())
    } else {
        Err(undecodable(
            field.type_oid,
            "a value no value of its column's type could be: the row is not what its \
             description says",
        ))
    }
}

/// What content detection does with a value, by its type. Which types are
/// scanned, and why, is in the README ("Which types are scanned").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    /// Cannot hold a 13-digit number in a form that survives output:
    /// booleans, 2- and 4-byte integers, float4 (7 significant digits),
    /// dates and times (their digits are a calendar), intervals, uuids,
    /// network and geometric types, bit strings, OIDs. Not scanned.
    Skip,
    /// Text, and what is sent as text in binary: masked with the content
    /// strategy.
    Text,
    /// json: text in both formats; numbers outside strings stay numbers.
    Json,
    /// jsonb: a version byte, then the text, in binary.
    Jsonb,
    Bytea,
    Int8,
    Numeric,
    Float8,
    Money,
    /// Fixed 8-byte numbers after a header of `header` bytes: float8
    /// coordinates (geometric types) or int8 xids (snapshots).
    Packed {
        header: usize,
        float: bool,
    },
    /// An array (binary arrays name their element type).
    Array(u32),
    /// A range with this subtype.
    Range(u32),
    /// A multirange with this range subtype.
    Multirange(u32),
    /// An anonymous record (binary records name each column's type).
    Record,
    /// Anything else: user-defined types, composite row types, enums,
    /// domains inside records, extension types. Scanned as text in text
    /// format; decoded by structure in binary (see [`mask_untyped_binary`]).
    Other,
}

impl ValueKind {
    fn of(type_oid: u32) -> ValueKind {
        match type_oid {
            // text, varchar, bpchar, name, xml, unknown, cstring, "char":
            // their binary form is the text. (tsvector and tsquery carry
            // text inside a structure: `Other`, masked in place in binary.)
            25 | 1043 | 1042 | 19 | 142 | 705 | 2275 | 18 => ValueKind::Text,
            114 => ValueKind::Json,
            JSONB => ValueKind::Jsonb,
            BYTEA => ValueKind::Bytea,
            // xid8 prints as a decimal and is an 8-byte integer in binary.
            20 | 5069 => ValueKind::Int8,
            1700 => ValueKind::Numeric,
            701 => ValueKind::Float8,
            790 => ValueKind::Money,
            2249 => ValueKind::Record,
            // Geometric types are float8 coordinates: point, lseg, box,
            // line, circle; path (closed flag, point count) and polygon
            // (point count) have a header first.
            600 | 601 | 603 | 628 | 718 => ValueKind::Packed {
                header: 0,
                float: true,
            },
            602 => ValueKind::Packed {
                header: 5,
                float: true,
            },
            604 => ValueKind::Packed {
                header: 4,
                float: true,
            },
            // pg_snapshot and txid_snapshot: count, then 8-byte xids.
            5038 | 2970 => ValueKind::Packed {
                header: 4,
                float: false,
            },
            // bool, int2, int4, oid, tid, xid, cid, int2vector, oidvector,
            // float4, dates, times, timestamps, intervals, uuid, pg_lsn,
            // inet, cidr, macaddr(8), bit, varbit, reg*, int4range,
            // date/timestamp ranges and their multiranges.
            16
            | 21
            | 22
            | 23
            | 24
            | 26..=30
            | 700
            | 1082
            | 1083
            | 1114
            | 1184
            | 1186
            | 1266
            | 2950
            | 3220
            | 869
            | 650
            | 829
            | 774
            | 1560
            | 1562
            | 2202..=2206
            | 3734
            | 3769
            | 4089
            | 4096
            | 4191
            | 3904
            | 3908
            | 3910
            | 3912
            | 4451
            | 4533..=4535 => ValueKind::Skip,
            // Arrays of the above.
            1000
            | 1005
            | 1006
            | 1007
            | 1008
            | 1028
            | 1010..=1013
            | 1021
            | 1182
            | 1183
            | 1115
            | 1185
            | 1187
            | 1270
            | 2951
            | 3221
            | 1041
            | 651
            | 1040
            | 775
            | 1561
            | 1563
            | 2207..=2211
            | 3735
            | 3770
            | 4090
            | 4097
            | 4192
            | 3905
            | 3909
            | 3911
            | 3913
            | 6150
            | 6152
            | 6153
            | 6155 => ValueKind::Skip,
            1009 => ValueKind::Array(25),
            1015 => ValueKind::Array(1043),
            1014 => ValueKind::Array(1042),
            1003 => ValueKind::Array(19),
            143 => ValueKind::Array(142),
            1263 => ValueKind::Array(2275),
            1002 => ValueKind::Array(18),
            199 => ValueKind::Array(114),
            3807 => ValueKind::Array(JSONB),
            1001 => ValueKind::Array(BYTEA),
            1016 => ValueKind::Array(20),
            271 => ValueKind::Array(5069),
            1231 => ValueKind::Array(1700),
            1022 => ValueKind::Array(701),
            791 => ValueKind::Array(790),
            2287 => ValueKind::Array(2249),
            1017 => ValueKind::Array(600),
            1018 => ValueKind::Array(601),
            1019 => ValueKind::Array(602),
            1020 => ValueKind::Array(603),
            1027 => ValueKind::Array(604),
            629 => ValueKind::Array(628),
            719 => ValueKind::Array(718),
            3926 => ValueKind::Range(20),
            3906 => ValueKind::Range(1700),
            3927 => ValueKind::Array(3926),
            3907 => ValueKind::Array(3906),
            4536 => ValueKind::Multirange(20),
            4532 => ValueKind::Multirange(1700),
            6157 => ValueKind::Array(4536),
            6151 => ValueKind::Array(4532),
            _ => ValueKind::Other,
        }
    }

    fn is_text(self) -> bool {
        matches!(
            self,
            ValueKind::Text | ValueKind::Json | ValueKind::Jsonb | ValueKind::Bytea
        )
    }

    fn is_number(self) -> bool {
        matches!(
            self,
            ValueKind::Int8 | ValueKind::Numeric | ValueKind::Float8 | ValueKind::Money
        )
    }
}

/// Delimiters of the fields of text and CSV COPY, and of the arrays,
/// ranges and records in them.
const COPY_DELIMITERS: &[u8] = b"\t\n,(){}[]\"";

/// Delimiters of the fields of array, range and record text.
const CONTAINER_DELIMITERS: &[u8] = b",(){}[]<>:\"";

/// The masked value of a text-format field under content detection.
fn mask_text_value(maskers: &Maskers, kind: ValueKind, text: &[u8]) -> Option<Vec<u8>> {
    match kind {
        ValueKind::Skip => None,
        ValueKind::Bytea => {
            if let Some(masked) = mask_bytea_hex(&maskers.content, text) {
                return Some(masked);
            }
            mask_content(&maskers.content, text)
        }
        ValueKind::Text => mask_content(&maskers.content, text),
        ValueKind::Json | ValueKind::Jsonb => mask_json_text(&maskers.content, text),
        // A number's text: it becomes a number.
        _ if kind.is_number() => {
            pan::contains_pan(text).then(|| mask_fields(&maskers.content, text, b""))
        }
        ValueKind::Array(element) if ValueKind::of(element) == ValueKind::Skip => None,
        // Text elements: the content strategy, as for a text column.
        ValueKind::Array(element) if ValueKind::of(element) == ValueKind::Text => {
            mask_content(&maskers.content, text)
        }
        // Arrays, ranges, records, other types: numbers among the fields
        // stay numbers, anything else gets the content strategy.
        _ => pan::contains_pan(text)
            .then(|| mask_fields(&maskers.content, text, CONTAINER_DELIMITERS)),
    }
}

/// Content detection on text: `None` when there is no card number.
fn mask_content(masker: &Masker, text: &[u8]) -> Option<Vec<u8>> {
    if !pan::contains_pan(text) {
        return None;
    }
    match masker.mask_bytes(text) {
        Cow::Borrowed(_) => None,
        Cow::Owned(masked) => Some(masked),
    }
}

/// Masks every card number in `text` whose field (the bytes between two of
/// `delimiters`) is a number: the number becomes its last four digits
/// (sign, currency sign and fraction kept, exponent dropped), which every
/// numeric type parses and which is no card number. Every other card number
/// gets the content strategy.
fn mask_fields(masker: &Masker, text: &[u8], delimiters: &[u8]) -> Vec<u8> {
    mask_matches(masker, text, |start, end| {
        // A number printed with thousands separators that are also field
        // delimiters (`4,012,888,…` in CSV) may span fields: masked in
        // place, so no field boundary moves.
        if text[start..end].iter().any(|b| delimiters.contains(b)) {
            return None;
        }
        let field_start = text[..start]
            .iter()
            .rposition(|b| delimiters.contains(b))
            .map_or(0, |i| i + 1);
        let field_end = text[end..]
            .iter()
            .position(|b| delimiters.contains(b))
            .map_or(text.len(), |i| end + i);
        number_field(text, field_start, start, end, field_end)
    })
}

/// For the card number at `start..end` in the field `field_start..field_end`:
/// `Some((replacement, end of what it replaces))` when the field is a number.
fn number_field(
    text: &[u8],
    field_start: usize,
    start: usize,
    end: usize,
    field_end: usize,
) -> Option<(Vec<u8>, usize)> {
    let prefix = &text[field_start..start];
    let suffix = &text[end..field_end];
    let prefix_ok = prefix.iter().all(|b| b" \t-+$".contains(b));
    let suffix_ok = suffix
        .iter()
        .all(|b| b.is_ascii_digit() || b" \t.,eE+-".contains(b));
    let span_ok = text[start..end]
        .iter()
        .all(|b| b.is_ascii_digit() || b".,' ".contains(b));
    if !(prefix_ok && suffix_ok && span_ok) {
        return None;
    }
    let mut out = last4_number(&text[start..end]).into_bytes();
    // Keep the fraction, drop an exponent.
    let mut consumed = end;
    if let [separator @ (b'.' | b','), rest @ ..] = suffix {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            out.push(*separator);
            out.extend_from_slice(&rest[..digits]);
            consumed = end + 1 + digits;
        }
    }
    if let Some(b'e' | b'E') = text.get(consumed) {
        let exponent = text[consumed + 1..field_end]
            .iter()
            .enumerate()
            .take_while(|&(i, b)| b.is_ascii_digit() || (i == 0 && (*b == b'+' || *b == b'-')))
            .count();
        consumed += 1 + exponent;
    }
    Some((out, consumed))
}

/// The last four digits of a card number's span, as a number (no leading
/// zeros, so it is also valid JSON).
fn last4_number(span: &[u8]) -> String {
    let digits: Vec<u8> = span.iter().copied().filter(u8::is_ascii_digit).collect();
    let tail = &digits[digits.len().saturating_sub(4)..];
    let value = tail
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
    value.to_string()
}

/// Replaces each card number in `text`: with what `replace` returns for it
/// (the replacement and the end of what it replaces), or else with the
/// content masker's masking of it. The result is scanned once more, for
/// a number that masking itself brought out.
fn mask_matches(
    masker: &Masker,
    text: &[u8],
    mut replace: impl FnMut(usize, usize) -> Option<(Vec<u8>, usize)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut copied = 0;
    for found in pan::find_pans(text) {
        if found.start < copied {
            continue;
        }
        out.extend_from_slice(&text[copied..found.start]);
        match replace(found.start, found.end) {
            Some((replacement, consumed)) => {
                out.extend_from_slice(&replacement);
                copied = consumed;
            }
            None => {
                out.extend_from_slice(&masker.mask_bytes(&text[found.start..found.end]));
                copied = found.end;
            }
        }
    }
    out.extend_from_slice(&text[copied..]);
    match masker.mask_bytes(&out) {
        Cow::Borrowed(_) => out,
        Cow::Owned(again) => again,
    }
}

/// JSON text: a card number inside a string gets the content strategy; a
/// JSON number that is a card number becomes a number (its last four
/// digits), so the document stays valid JSON.
fn mask_json_text(masker: &Masker, text: &[u8]) -> Option<Vec<u8>> {
    if !pan::contains_pan(text) {
        return None;
    }
    // Whether a position is inside a string, found by walking forward.
    let mut in_string = false;
    let mut escaped = false;
    let mut walked = 0;
    let masked = mask_matches(masker, text, |start, end| {
        for &byte in &text[walked..start] {
            if escaped {
                escaped = false;
            } else if in_string && byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = !in_string;
            }
        }
        walked = start;
        if in_string {
            return None;
        }
        let field_end = text[end..]
            .iter()
            .position(|b| b",]} \t\r\n".contains(b))
            .map_or(text.len(), |i| end + i);
        let field_start = text[..start]
            .iter()
            .rposition(|b| b",[{: \t\r\n".contains(b))
            .map_or(0, |i| i + 1);
        let found = number_field(text, field_start, start, end, field_end);
        if let Some((_, consumed)) = &found {
            walked = *consumed;
        }
        found
    });
    Some(masked)
}

/// What to do with a binary value of a type the gateway does not know that
/// reads as a card number only when taken as an 8-byte integer or float.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guess {
    /// In a DataRow: refuse the row (the error names the type).
    Refuse,
    /// In binary COPY, which carries no types and no way to refuse a row:
    /// replace it in place with its last four digits.
    MaskInPlace,
}

/// How deep records, arrays and ranges may nest inside one value. Deeper is
/// refused: the decoder recurses, and a crafted `ROW(ROW(ROW(…)))` must not
/// exhaust the connection task's stack.
const MAX_NESTING: u8 = 32;

/// The walk through one binary value: the guess for values of unknown
/// types, and how deep inside containers it is.
#[derive(Clone, Copy)]
struct Untyped {
    guess: Guess,
    depth: u8,
}

impl Untyped {
    const REFUSE: Untyped = Untyped {
        guess: Guess::Refuse,
        depth: 0,
    };
    const MASK_IN_PLACE: Untyped = Untyped {
        guess: Guess::MaskInPlace,
        depth: 0,
    };

    /// The walk one container further in.
    fn nested(self, type_oid: u32) -> Result<Untyped, MaskFailure> {
        if self.depth >= MAX_NESTING {
            return Err(undecodable(type_oid, "values nested too deeply"));
        }
        Ok(Untyped {
            depth: self.depth + 1,
            ..self
        })
    }
}

/// The masked binary value of a field of `type_oid` (`None`: unchanged).
fn mask_binary_value(
    maskers: &Maskers,
    type_oid: u32,
    value: &[u8],
    untyped: Untyped,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    mask_binary_kind(maskers, ValueKind::of(type_oid), type_oid, value, untyped)
}

/// [`mask_binary_value`] with the type's kind already looked up.
fn mask_binary_kind(
    maskers: &Maskers,
    kind: ValueKind,
    type_oid: u32,
    value: &[u8],
    untyped: Untyped,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    match kind {
        ValueKind::Skip => Ok(None),
        ValueKind::Text | ValueKind::Bytea => Ok(mask_content(&maskers.content, value)),
        ValueKind::Json => Ok(mask_json_text(&maskers.content, value)),
        ValueKind::Jsonb => match value.split_first() {
            Some((&version, rest)) => Ok(mask_json_text(&maskers.content, rest).map(|masked| {
                let mut out = Vec::with_capacity(masked.len() + 1);
                out.push(version);
                out.extend_from_slice(&masked);
                out
            })),
            None => Ok(None),
        },
        _ if kind.is_number() => mask_binary_number(kind, value, false),
        ValueKind::Packed { header, float } => mask_packed(value, header, float, type_oid),
        ValueKind::Array(_) => mask_binary_array(maskers, value, untyped, type_oid),
        ValueKind::Range(subtype) => mask_binary_range(maskers, subtype, value, untyped),
        ValueKind::Multirange(subtype) => mask_binary_multirange(maskers, subtype, value, untyped),
        ValueKind::Record => mask_binary_record(maskers, value, untyped, type_oid),
        _ => mask_untyped_binary(maskers, type_oid, value, untyped),
    }
}

fn undecodable(type_oid: u32, problem: &'static str) -> MaskFailure {
    MaskFailure::Undecodable { type_oid, problem }
}

/// A binary value of a type the gateway does not know: a composite row
/// type is a record, an array of one an array; either is decoded when its
/// structure reads exactly. Otherwise its text is scanned and masked in
/// place (enums, citext, hstore keep their text in binary), and an 8-byte
/// value that reads as a card number as an integer (a domain over bigint
/// inside a record) is refused or masked per `untyped`.
fn mask_untyped_binary(
    maskers: &Maskers,
    type_oid: u32,
    value: &[u8],
    untyped: Untyped,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    if looks_like_record(value) {
        if let Ok(masked) = mask_binary_record(maskers, value, untyped, type_oid) {
            return Ok(masked);
        }
    }
    if looks_like_array(value) {
        if let Ok(masked) = mask_binary_array(maskers, value, untyped, type_oid) {
            return Ok(masked);
        }
    }
    // Only 13 to 18 digits: a 19-digit integer has the bits of an ordinary
    // float8 (2.0 reads as 4611686018427387904), and eight printable bytes
    // are text.
    if let Ok(bytes) = <[u8; 8]>::try_from(value) {
        let integer = i64::from_be_bytes(bytes);
        let printable = bytes.iter().all(|b| (0x20..0x7f).contains(b));
        if integer.unsigned_abs() < 1_000_000_000_000_000_000
            && !printable
            && is_pan_number(integer.unsigned_abs())
        {
            return match untyped.guess {
                Guess::Refuse => Err(undecodable(
                    type_oid,
                    "an 8-byte value of a type the gateway does not know reads as a card \
                     number; request it in text format",
                )),
                Guess::MaskInPlace => Ok(Some(masked_int8(integer))),
            };
        }
        // The same bits as a float8 holding a whole card number (a float
        // that is a whole number of 13 to 19 digits is what a cast makes).
        let float = f64::from_be_bytes(bytes);
        if float.is_finite() && float.fract() == 0.0 && (1e12..1e19).contains(&float.abs()) {
            if let Ok(Some(masked)) = mask_binary_number(ValueKind::Float8, value, false) {
                return match untyped.guess {
                    Guess::Refuse => Err(undecodable(
                        type_oid,
                        "an 8-byte value of a type the gateway does not know reads as a card \
                         number; request it in text format",
                    )),
                    Guess::MaskInPlace => Ok(Some(masked)),
                };
            }
        }
    }
    if untyped.guess == Guess::MaskInPlace {
        if let Ok(Some(masked)) = mask_binary_numeric(value, false) {
            return Ok(Some(masked));
        }
    }
    match maskers.length_preserving.mask_bytes(value) {
        Cow::Borrowed(_) => Ok(None),
        Cow::Owned(masked) if masked.len() == value.len() => Ok(Some(masked)),
        Cow::Owned(_) => Err(undecodable(type_oid, "value could not be masked in place")),
    }
}

/// Whether `value` starts like a binary record whose column count fits.
fn looks_like_record(value: &[u8]) -> bool {
    value.len() >= 4
        && usize::try_from(i32::from_be_bytes([value[0], value[1], value[2], value[3]]))
            .is_ok_and(|columns| columns <= 1664 && columns * 8 <= value.len() - 4)
}

/// Whether `value` starts like a binary array header.
fn looks_like_array(value: &[u8]) -> bool {
    value.len() >= 12
        && (0..=6).contains(&i32::from_be_bytes([
            value[0], value[1], value[2], value[3],
        ]))
        && matches!(
            i32::from_be_bytes([value[4], value[5], value[6], value[7]]),
            0 | 1
        )
}

/// Whether an integer's decimal digits are a card number.
fn is_pan_number(value: u64) -> bool {
    if value < 1_000_000_000_000 {
        return false;
    }
    let digits = value.to_string();
    pan::brand_of(digits.as_bytes()).is_some() && pan::luhn_valid(digits.as_bytes())
}

/// An int8 whose last four digits stand for it, sign kept.
fn masked_int8(value: i64) -> Vec<u8> {
    let masked = (value.unsigned_abs() % 10_000) as i64;
    (if value < 0 { -masked } else { masked })
        .to_be_bytes()
        .to_vec()
}

/// The text of a number masked whole (a declared number column): its last
/// four digits, sign, currency sign and fraction kept.
fn masked_number_text(text: &[u8]) -> Vec<u8> {
    let integer_end = text
        .iter()
        .position(|b| matches!(b, b'.' | b'e' | b'E'))
        .unwrap_or(text.len());
    let digits_start = text
        .iter()
        .position(u8::is_ascii_digit)
        .unwrap_or(integer_end)
        .min(integer_end);
    let mut out = text[..digits_start].to_vec();
    out.extend_from_slice(last4_number(&text[digits_start..integer_end]).as_bytes());
    if let [b'.', rest @ ..] = &text[integer_end..] {
        out.push(b'.');
        out.extend(rest.iter().take_while(|b| b.is_ascii_digit()));
    }
    out
}

/// A binary int8, numeric, float8 or money: `Some` when it is a card number
/// (or, with `whole`, always: a declared column), masked to its last four
/// digits in the same type.
fn mask_binary_number(
    kind: ValueKind,
    value: &[u8],
    whole: bool,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let eight = || -> Result<[u8; 8], MaskFailure> {
        value
            .try_into()
            .map_err(|_| undecodable(0, "a binary 8-byte number is not 8 bytes"))
    };
    match kind {
        ValueKind::Int8 => {
            let integer = i64::from_be_bytes(eight()?);
            Ok((whole || is_pan_number(integer.unsigned_abs())).then(|| masked_int8(integer)))
        }
        ValueKind::Money => {
            let cents = i64::from_be_bytes(eight()?);
            let (units, fraction) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
            if !(whole || is_pan_number(units)) {
                return Ok(None);
            }
            let masked = ((units % 10_000) * 100 + fraction) as i64;
            Ok(Some(
                (if cents < 0 { -masked } else { masked })
                    .to_be_bytes()
                    .to_vec(),
            ))
        }
        ValueKind::Float8 => {
            let float = f64::from_be_bytes(eight()?);
            let magnitude = float.abs();
            if !float.is_finite() || !(whole || (1e12..1e19).contains(&magnitude)) {
                return Ok(None);
            }
            let integer = magnitude.trunc();
            if !(whole || is_pan_number(integer as u64)) {
                return Ok(None);
            }
            let masked = (integer % 10_000.0) + (magnitude - integer);
            let signed = if float < 0.0 { -masked } else { masked };
            Ok(Some(signed.to_be_bytes().to_vec()))
        }
        ValueKind::Numeric => mask_binary_numeric(value, whole),
        _ => Ok(None),
    }
}

/// Binary numeric: digit count, weight (of the first base-10000 digit),
/// sign, display scale, then the base-10000 digits. A card number is the
/// integer part; masked, the integer part becomes its last four digits and
/// the fraction stays.
fn mask_binary_numeric(value: &[u8], whole: bool) -> Result<Option<Vec<u8>>, MaskFailure> {
    const NUMERIC: u32 = 1700;
    let short = |_| undecodable(NUMERIC, "short numeric");
    let mut reader = Reader::new(value, "numeric");
    let ndigits = reader.i16("digit count").map_err(short)?;
    let weight = reader.i16("weight").map_err(short)?;
    let sign = reader.i16("sign").map_err(short)? as u16;
    let dscale = reader.i16("scale").map_err(short)?;
    let ndigits =
        usize::try_from(ndigits).map_err(|_| undecodable(NUMERIC, "negative digit count"))?;
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        let digit = reader.i16("digit").map_err(short)?;
        if !(0..10_000).contains(&digit) {
            return Err(undecodable(NUMERIC, "numeric digit out of range"));
        }
        digits.push(digit);
    }
    if !reader.is_at_end() {
        return Err(undecodable(NUMERIC, "trailing bytes after a numeric"));
    }
    if !matches!(sign, 0x0000 | 0x4000) {
        // NaN and the infinities.
        return Ok(None);
    }
    // The integer part: the base-10000 digits at positions 0..=weight.
    let integer_groups = usize::try_from(i32::from(weight) + 1).unwrap_or(0);
    if !whole && !(4..=5).contains(&integer_groups) {
        // Fewer than 13 or more than 20 integer digits: no card number.
        return Ok(None);
    }
    let mut integer: u128 = 0;
    for position in 0..integer_groups.min(6) {
        let group = digits.get(position).copied().unwrap_or(0);
        integer = integer * 10_000 + group.unsigned_abs() as u128;
    }
    if !whole && !u64::try_from(integer).is_ok_and(is_pan_number) {
        return Ok(None);
    }
    let fraction: Vec<i16> = if weight >= 0 {
        digits.get(integer_groups..).unwrap_or_default().to_vec()
    } else {
        // A pure fraction: its leading zero groups are implied by the weight.
        let mut groups = vec![0i16; usize::try_from(-i32::from(weight) - 1).unwrap_or(0)];
        groups.extend_from_slice(&digits);
        groups
    };
    let masked_integer = (integer % 10_000) as i16;
    // Canonical form: no leading or trailing zero groups.
    let (mut groups, mut masked_weight) = if masked_integer > 0 {
        (vec![masked_integer], 0i16)
    } else {
        (Vec::new(), -1i16)
    };
    groups.extend_from_slice(&fraction);
    while groups.first() == Some(&0) {
        groups.remove(0);
        masked_weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let masked_sign = if groups.is_empty() {
        masked_weight = 0;
        0
    } else {
        sign
    };
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&masked_weight.to_be_bytes());
    out.extend_from_slice(&masked_sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Ok(Some(out))
}

/// A header of `header` bytes, then 8-byte numbers (float8 or int8), each
/// masked in place as its type when it is a card number.
fn mask_packed(
    value: &[u8],
    header: usize,
    float: bool,
    type_oid: u32,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let numbers = value
        .get(header..)
        .filter(|rest| rest.len() % 8 == 0)
        .ok_or_else(|| undecodable(type_oid, "not a whole number of 8-byte values"))?;
    let kind = if float {
        ValueKind::Float8
    } else {
        ValueKind::Int8
    };
    let mut out: Option<Vec<u8>> = None;
    for (index, number) in numbers.chunks_exact(8).enumerate() {
        if let Some(masked) = mask_binary_number(kind, number, false)? {
            let at = header + index * 8;
            out.get_or_insert_with(|| value.to_vec())[at..at + 8].copy_from_slice(&masked);
        }
    }
    Ok(out)
}

/// Reads a length-prefixed value (`None`: NULL) inside a container.
fn read_element<'a>(
    reader: &mut Reader<'a>,
    type_oid: u32,
) -> Result<Option<&'a [u8]>, MaskFailure> {
    let len = reader
        .i32("element length")
        .map_err(|_| undecodable(type_oid, "short element"))?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| undecodable(type_oid, "negative length"))?;
    reader
        .bytes(len, "element")
        .map(Some)
        .map_err(|_| undecodable(type_oid, "element runs past the value"))
}

/// Writes a length-prefixed value.
fn put_element(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// Binary array: dimensions, null flag, element type, (size, lower bound)
/// per dimension, then the elements, each masked by its type.
fn mask_binary_array(
    maskers: &Maskers,
    value: &[u8],
    untyped: Untyped,
    type_oid: u32,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let untyped = untyped.nested(type_oid)?;
    let short = |_| undecodable(type_oid, "short array");
    let mut reader = Reader::new(value, "array");
    let ndim = reader.i32("dimensions").map_err(short)?;
    let flags = reader.i32("flags").map_err(short)?;
    let element_oid = reader.u32("element type").map_err(short)?;
    if !(0..=6).contains(&ndim) || !matches!(flags, 0 | 1) {
        return Err(undecodable(type_oid, "array header out of range"));
    }
    let mut count: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let size = reader.i32("dimension").map_err(short)?;
        reader.i32("lower bound").map_err(short)?;
        let size =
            usize::try_from(size).map_err(|_| undecodable(type_oid, "negative dimension"))?;
        count = count
            .checked_mul(size)
            .filter(|&c| c <= value.len() / 4)
            .ok_or_else(|| undecodable(type_oid, "array larger than its bytes"))?;
    }
    let header_end = reader.position();
    if ValueKind::of(element_oid) == ValueKind::Skip {
        return Ok(None);
    }
    mask_elements(
        &mut reader,
        &value[..header_end],
        count,
        type_oid,
        "trailing bytes after an array",
        |bytes| mask_binary_value(maskers, element_oid, bytes, untyped),
    )
}

/// The body shared by arrays and multiranges: `count` length-prefixed
/// elements (`-1`: NULL) after `header`, each masked by `mask`; `None` when
/// no element changed. The value must end with the last element.
fn mask_elements<'a>(
    reader: &mut Reader<'a>,
    header: &[u8],
    count: usize,
    type_oid: u32,
    trailing: &'static str,
    mut mask: impl FnMut(&'a [u8]) -> Result<Option<Vec<u8>>, MaskFailure>,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let mut masked_any = false;
    let mut elements = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let element = read_element(reader, type_oid)?;
        let masked = element.map(&mut mask).transpose()?.flatten();
        masked_any |= masked.is_some();
        elements.push((element, masked));
    }
    if !reader.is_at_end() {
        return Err(undecodable(type_oid, trailing));
    }
    if !masked_any {
        return Ok(None);
    }
    let mut out = header.to_vec();
    for (element, masked) in &elements {
        put_element(&mut out, masked.as_deref().or(*element));
    }
    Ok(Some(out))
}

/// Binary record: column count, then per column its type, length and value.
fn mask_binary_record(
    maskers: &Maskers,
    value: &[u8],
    untyped: Untyped,
    type_oid: u32,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let untyped = untyped.nested(type_oid)?;
    let short = |_| undecodable(type_oid, "short record");
    let mut reader = Reader::new(value, "record");
    let columns = reader.i32("columns").map_err(short)?;
    let columns =
        usize::try_from(columns).map_err(|_| undecodable(type_oid, "negative column count"))?;
    let mut masked_any = false;
    let mut fields = Vec::new();
    for _ in 0..columns {
        let column_oid = reader.u32("column type").map_err(short)?;
        let element = read_element(&mut reader, type_oid)?;
        let masked = match element {
            Some(bytes) => mask_binary_value(maskers, column_oid, bytes, untyped)?,
            None => None,
        };
        masked_any |= masked.is_some();
        fields.push((column_oid, element, masked));
    }
    if !reader.is_at_end() {
        return Err(undecodable(type_oid, "trailing bytes after a record"));
    }
    if !masked_any {
        return Ok(None);
    }
    let mut out = value[..4].to_vec();
    for (column_oid, element, masked) in &fields {
        out.extend_from_slice(&column_oid.to_be_bytes());
        put_element(&mut out, masked.as_deref().or(*element));
    }
    Ok(Some(out))
}

/// Binary range: a flags byte, then the bounds that exist (not empty, not
/// infinite), each length-prefixed.
fn mask_binary_range(
    maskers: &Maskers,
    subtype: u32,
    value: &[u8],
    untyped: Untyped,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let untyped = untyped.nested(subtype)?;
    const EMPTY: u8 = 0x01;
    const LOWER_INFINITE: u8 = 0x08;
    const UPPER_INFINITE: u8 = 0x10;
    let mut reader = Reader::new(value, "range");
    let flags = reader
        .u8("flags")
        .map_err(|_| undecodable(subtype, "empty range value"))?;
    let mut bounds = Vec::new();
    if flags & EMPTY == 0 {
        for infinite in [LOWER_INFINITE, UPPER_INFINITE] {
            if flags & infinite == 0 {
                bounds.push(read_element(&mut reader, subtype)?);
            }
        }
    }
    if !reader.is_at_end() {
        return Err(undecodable(subtype, "trailing bytes after a range"));
    }
    let mut masked_any = false;
    let mut masked = Vec::new();
    for bound in &bounds {
        let m = match bound {
            Some(bytes) => mask_binary_value(maskers, subtype, bytes, untyped)?,
            None => None,
        };
        masked_any |= m.is_some();
        masked.push(m);
    }
    if !masked_any {
        return Ok(None);
    }
    let mut out = vec![flags];
    for (bound, m) in bounds.iter().zip(&masked) {
        put_element(&mut out, m.as_deref().or(*bound));
    }
    Ok(Some(out))
}

/// Binary multirange: range count, then each range length-prefixed.
fn mask_binary_multirange(
    maskers: &Maskers,
    subtype: u32,
    value: &[u8],
    untyped: Untyped,
) -> Result<Option<Vec<u8>>, MaskFailure> {
    let untyped = untyped.nested(subtype)?;
    let mut reader = Reader::new(value, "multirange");
    let count = reader
        .i32("ranges")
        .map_err(|_| undecodable(subtype, "short multirange"))?;
    let count = usize::try_from(count).map_err(|_| undecodable(subtype, "negative count"))?;
    mask_elements(
        &mut reader,
        &value[..4],
        count,
        subtype,
        "trailing bytes after a multirange",
        |bytes| mask_binary_range(maskers, subtype, bytes, untyped),
    )
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
/// Text COPY: a field that is a number stays a number (its last four
/// digits), other card numbers get the content strategy. Binary COPY is
/// decoded tuple by tuple (`mask_binary_copy`); bytes that are not whole
/// tuples are masked in place with `pan_last4`, so lengths stay valid.
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

/// How far from a message boundary a card number found in the window
/// around it may lie and still be masked there: the bytes that decide
/// whether digits are a number of their own (a run of 13 digits and a
/// separator, a letter glued to it) reach at most this far.
const BOUNDARY_REACH: usize = 24;

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
        if self.binary && self.held.is_empty() {
            if let Some(masked) = mask_binary_copy(&self.maskers, body) {
                return vec![masked];
            }
        }
        let current = if self.binary {
            self.maskers.length_preserving.mask_bytes(body)
        } else if pan::contains_pan(body) {
            // A field that is a number stays a number.
            Cow::Owned(mask_fields(&self.maskers.content, body, COPY_DELIMITERS))
        } else {
            Cow::Borrowed(body)
        };
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

/// A value inside a container as it came (`None`: NULL), and its masked
/// form when it changed.
type MaskedElement<'a> = (Option<&'a [u8]>, Option<Vec<u8>>);

/// The signature binary COPY data starts with.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Masks a CopyData body of binary COPY that holds whole tuples (what
/// PostgreSQL sends: the header with the first tuple, one tuple per
/// message, the trailer alone). Binary COPY names no types, so each field
/// is decoded by its structure (see [`mask_untyped_binary`]: records and
/// arrays name their element types; an 8-byte field that reads as a card
/// number of 13 to 18 digits is masked in place as an int8; a numeric by its
/// layout; text is scanned). `None`: the body is not whole tuples; the
/// caller scans its bytes instead.
fn mask_binary_copy<'a>(maskers: &Maskers, body: &'a [u8]) -> Option<Cow<'a, [u8]>> {
    let mut reader = Reader::new(body, "CopyData");
    if body.starts_with(COPY_SIGNATURE) {
        reader.bytes(COPY_SIGNATURE.len() + 4, "header").ok()?;
        let extension = usize::try_from(reader.i32("header extension").ok()?).ok()?;
        reader.bytes(extension, "header extension").ok()?;
    }
    let header_end = reader.position();
    let mut tuples: Vec<Vec<MaskedElement>> = Vec::new();
    let mut trailer = false;
    while !reader.is_at_end() {
        let count = reader.i16("field count").ok()?;
        if count == -1 {
            trailer = true;
            break;
        }
        let mut fields = Vec::with_capacity(usize::try_from(count).ok()?);
        for _ in 0..count {
            let field = read_element(&mut reader, 0).ok()?;
            let masked = match field {
                Some(bytes) => {
                    mask_untyped_binary(maskers, 0, bytes, Untyped::MASK_IN_PLACE).ok()?
                }
                None => None,
            };
            fields.push((field, masked));
        }
        tuples.push(fields);
    }
    if !reader.is_at_end() {
        return None;
    }
    if tuples.iter().flatten().all(|(_, masked)| masked.is_none()) {
        return Some(Cow::Borrowed(body));
    }
    let mut out = body[..header_end].to_vec();
    for fields in &tuples {
        out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
        for (field, masked) in fields {
            put_element(&mut out, masked.as_deref().or(*field));
        }
    }
    if trailer {
        out.extend_from_slice(&(-1i16).to_be_bytes());
    }
    Some(Cow::Owned(out))
}

fn is_number_byte(byte: u8) -> bool {
    byte.is_ascii_digit() || matches!(byte, b' ' | b'-' | b'_' | b'.' | b'/' | b',' | b'\'')
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
    // Only a number at the boundary is this function's business: one
    // crossing it, or one beside it that the other side's bytes may make a
    // card number (`…00024000|000000000002 4000 0000 0000 0002`, a 32-digit
    // run cut after 20: a run of 13 or more digits before a grouped number
    // makes it one of its own, and the right message alone holds 12). The
    // rest of the window was judged with its own message.
    let at_boundary = pan::find_pans(&window)
        .iter()
        .any(|m| m.start < split + BOUNDARY_REACH && m.end + BOUNDARY_REACH > split);
    if !at_boundary {
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
