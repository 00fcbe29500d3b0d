//! Client text in the encoding the server reads it in.
//!
//! PostgreSQL converts what a client sends from its `client_encoding` to the
//! server's encoding before it parses it, so the gateway must read a
//! statement's text in the same encoding to read the same statement. ASCII
//! reads alike in every encoding the gateway lets a session use (see
//! [`hoop_policy::unreadable_client_encoding`] for those it does not):
//! UTF-8 is read as it is, and the 27 single-byte encodings are decoded
//! here.
//! The multibyte ones other than UTF-8 (EUC_JP, EUC_KR, EUC_CN, EUC_TW,
//! EUC_JIS_2004, MULE_INTERNAL) are not: their non-ASCII text is refused.
//!
//! Each byte above 0x7F decodes to the character PostgreSQL's own
//! conversion gives it; a byte PostgreSQL has no character for makes the
//! server refuse the text, so whatever it decodes to here is never run.
//! `every_byte_decodes_as_postgresql_converts_it` (proxy/tests/policy.rs)
//! checks all 128 of them in every encoding against a real server.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// The single-byte client encodings whose non-ASCII text the gateway reads
/// (canonical names, as the server reports them).
pub const SINGLE_BYTE: [&str; 27] = [
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN866",
    "WIN874",
    "WIN1250",
    "WIN1251",
    "WIN1252",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1256",
    "WIN1257",
    "WIN1258",
    "KOI8R",
    "KOI8U",
];

/// How one client encoding is read.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// As it is.
    Utf8,
    /// ISO 8859-1: each byte is the code point of its value.
    Latin1,
    /// ISO 8859-9: windows-1254 above 0x9F, control characters below (the
    /// WHATWG tables name it windows-1254 throughout).
    Latin5,
    /// KOI8-U (RFC 2319): the WHATWG table is KOI8-RU's, which has two
    /// Belarusian letters where KOI8-U has box drawings.
    Koi8u,
    /// A single-byte encoding whose WHATWG table is PostgreSQL's.
    Table(&'static Encoding),
}

/// The decoder for a client encoding, by the canonical name the server
/// reports; `None`: one whose non-ASCII text the gateway does not read.
fn reader(encoding: &str) -> Option<Reader> {
    use encoding_rs::{
        IBM866, ISO_8859_10, ISO_8859_13, ISO_8859_14, ISO_8859_15, ISO_8859_16, ISO_8859_2,
        ISO_8859_3, ISO_8859_4, ISO_8859_5, ISO_8859_6, ISO_8859_7, ISO_8859_8, KOI8_R,
        WINDOWS_1250, WINDOWS_1251, WINDOWS_1252, WINDOWS_1253, WINDOWS_1254, WINDOWS_1255,
        WINDOWS_1256, WINDOWS_1257, WINDOWS_1258, WINDOWS_874,
    };
    Some(match encoding {
        // A SQL_ASCII server takes the bytes as they are.
        "UTF8" | "SQL_ASCII" => Reader::Utf8,
        "LATIN1" => Reader::Latin1,
        "LATIN2" => Reader::Table(ISO_8859_2),
        "LATIN3" => Reader::Table(ISO_8859_3),
        "LATIN4" => Reader::Table(ISO_8859_4),
        "LATIN5" => Reader::Latin5,
        "LATIN6" => Reader::Table(ISO_8859_10),
        "LATIN7" => Reader::Table(ISO_8859_13),
        "LATIN8" => Reader::Table(ISO_8859_14),
        "LATIN9" => Reader::Table(ISO_8859_15),
        "LATIN10" => Reader::Table(ISO_8859_16),
        "ISO_8859_5" => Reader::Table(ISO_8859_5),
        "ISO_8859_6" => Reader::Table(ISO_8859_6),
        "ISO_8859_7" => Reader::Table(ISO_8859_7),
        "ISO_8859_8" => Reader::Table(ISO_8859_8),
        "WIN866" => Reader::Table(IBM866),
        "WIN874" => Reader::Table(WINDOWS_874),
        "WIN1250" => Reader::Table(WINDOWS_1250),
        "WIN1251" => Reader::Table(WINDOWS_1251),
        "WIN1252" => Reader::Table(WINDOWS_1252),
        "WIN1253" => Reader::Table(WINDOWS_1253),
        "WIN1254" => Reader::Table(WINDOWS_1254),
        "WIN1255" => Reader::Table(WINDOWS_1255),
        "WIN1256" => Reader::Table(WINDOWS_1256),
        "WIN1257" => Reader::Table(WINDOWS_1257),
        "WIN1258" => Reader::Table(WINDOWS_1258),
        "KOI8R" => Reader::Table(KOI8_R),
        "KOI8U" => Reader::Koi8u,
        _ => return None,
    })
}

/// Why a text cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The gateway does not read non-ASCII text in this encoding.
    Unsupported,
    /// Not valid in the encoding (the server refuses it too).
    Invalid,
}

/// `text` as the server reads it when the client encoding is `encoding`
/// (a canonical name, as the server reports it).
pub fn decode<'t>(encoding: &str, text: &'t [u8]) -> Result<Cow<'t, str>, DecodeError> {
    if text.is_ascii() {
        // ASCII is valid UTF-8, and the same text in every encoding read.
        return std::str::from_utf8(text)
            .map(Cow::Borrowed)
            .map_err(|_| DecodeError::Invalid);
    }
    match reader(encoding).ok_or(DecodeError::Unsupported)? {
        Reader::Utf8 => std::str::from_utf8(text)
            .map(Cow::Borrowed)
            .map_err(|_| DecodeError::Invalid),
        Reader::Latin1 => Ok(Cow::Owned(text.iter().map(|&b| char::from(b)).collect())),
        Reader::Latin5 => Ok(Cow::Owned(
            text.iter()
                .map(|&b| match b {
                    0x80..=0x9f => char::from(b),
                    _ => single(encoding_rs::WINDOWS_1254, b),
                })
                .collect(),
        )),
        Reader::Koi8u => Ok(Cow::Owned(
            text.iter()
                .map(|&b| match b {
                    0xae => '\u{255d}',
                    0xbe => '\u{256c}',
                    _ => single(encoding_rs::KOI8_U, b),
                })
                .collect(),
        )),
        Reader::Table(table) => table
            .decode_without_bom_handling_and_without_replacement(text)
            .ok_or(DecodeError::Invalid),
    }
}

/// Byte `b` of a single-byte table that maps every byte.
fn single(table: &'static Encoding, b: u8) -> char {
    table
        .decode_without_bom_handling_and_without_replacement(&[b])
        .and_then(|c| c.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Whether the gateway reads non-ASCII text in `encoding`.
pub fn reads_text_in(encoding: &str) -> bool {
    reader(encoding).is_some()
}

/// `text` (the gateway's own: a refusal, a notice) in the client encoding,
/// as the server converts its messages: a character the encoding lacks
/// becomes `?`. In an encoding the gateway does not read, only ASCII is
/// kept.
pub fn encode<'t>(encoding: &str, text: &'t str) -> Cow<'t, [u8]> {
    if text.is_ascii() {
        return Cow::Borrowed(text.as_bytes());
    }
    let Some(reader) = reader(encoding) else {
        return Cow::Owned(
            text.chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
        );
    };
    let byte_of = |c: char| -> u8 {
        if c.is_ascii() {
            return c as u8;
        }
        let mut one = [0u8; 4];
        let c_str: &str = c.encode_utf8(&mut one);
        let table = match reader {
            Reader::Utf8 => unreachable!("UTF-8 is written as it is"),
            Reader::Latin1 => return u8::try_from(u32::from(c)).unwrap_or(b'?'),
            Reader::Latin5 if ('\u{80}'..='\u{9f}').contains(&c) => return c as u8,
            Reader::Latin5 => encoding_rs::WINDOWS_1254,
            Reader::Koi8u => match c {
                '\u{255d}' => return 0xae,
                '\u{256c}' => return 0xbe,
                // KOI8-RU's letters at those bytes are not KOI8-U's.
                '\u{45e}' | '\u{40e}' => return b'?',
                _ => encoding_rs::KOI8_U,
            },
            Reader::Table(table) => table,
        };
        let (bytes, _, unmappable) = table.encode(c_str);
        match (unmappable, bytes.as_ref()) {
            (false, [byte]) => *byte,
            _ => b'?',
        }
    };
    match reader {
        Reader::Utf8 => Cow::Borrowed(text.as_bytes()),
        _ => Cow::Owned(text.chars().map(byte_of).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a byte decodes to encodes back to that byte: the gateway's
    /// messages use the same table as its reading (which a test checks
    /// against the server, proxy/tests/policy.rs).
    #[test]
    fn every_character_read_is_written_back_as_its_byte() {
        for encoding in SINGLE_BYTE {
            assert!(reads_text_in(encoding), "{encoding}");
            for byte in 0x80..=0xffu8 {
                let one = [byte];
                let Ok(text) = decode(encoding, &one) else {
                    continue;
                };
                assert_eq!(
                    encode(encoding, &text).as_ref(),
                    [byte],
                    "{encoding} {byte:#x} ({text})"
                );
            }
        }
    }

    #[test]
    fn what_an_encoding_lacks_is_written_as_a_question_mark() {
        assert_eq!(encode("LATIN1", "a€b").as_ref(), b"a?b");
        assert_eq!(encode("LATIN9", "a€b").as_ref(), b"a\xa4b");
        assert_eq!(encode("KOI8U", "\u{45e}").as_ref(), b"?");
        assert_eq!(encode("EUC_JP", "é").as_ref(), b"?");
        assert_eq!(encode("UTF8", "é").as_ref(), "é".as_bytes());
        // A SQL_ASCII database takes bytes as they are.
        assert_eq!(encode("SQL_ASCII", "é").as_ref(), "é".as_bytes());
    }
}
