//! Masking strategies: what a card number turns into when a session may not
//! see it.
//!
//! Two entry points with different assumptions:
//! - [`Masker::mask_value`] masks the whole value of a column declared with
//!   `hoop_mask()`: the value is a card number by declaration, valid or not,
//!   so nothing is detected, everything is masked.
//! - [`Masker::mask_text`] / [`Masker::mask_bytes`] mask only the PANs that
//!   [`crate::pan::find_pans`] detects in free text (notes, error messages,
//!   JSON), leaving everything else byte for byte.
//!
//! Both are idempotent and never emit a PAN: masking a masked value changes
//! nothing, which is what lets the extension and the gateway both mask
//! without coordinating.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pan;

/// How a card number is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Every digit but the last four becomes `*`: `**** **** **** 1111`.
    PanLast4,
    /// First six (the BIN) and last four digits kept, the PCI DSS 3.4.1
    /// maximum: `4111 11** **** 1111`.
    PanBinLast4,
    /// A keyed, stable token: `tok_…`. Same card and key, same token, so
    /// joins and counts still work; no digits, so it is never a PAN.
    PanToken,
    /// A fixed text: [`REDACTED`].
    Redact,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::PanLast4,
        Strategy::PanBinLast4,
        Strategy::PanToken,
        Strategy::Redact,
    ];

    /// The name used in SQL (`hoop_mask(…, 'pan_last4')`) and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::PanLast4 => "pan_last4",
            Strategy::PanBinLast4 => "pan_bin_last4",
            Strategy::PanToken => "pan_token",
            Strategy::Redact => "redact",
        }
    }
}

impl FromStr for Strategy {
    type Err = MaskError;

    /// Accepts the names of [`Strategy::as_str`], ignoring ASCII case.
    fn from_str(name: &str) -> Result<Strategy, MaskError> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| MaskError::UnknownStrategy(name.to_owned()))
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskError {
    UnknownStrategy(String),
    MissingTokenKey,
    TokenKeyTooShort,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskError::UnknownStrategy(name) => write!(
                f,
                "unknown masking strategy {name:?}; use one of pan_last4, pan_bin_last4, pan_token, redact"
            ),
            MaskError::MissingTokenKey => f.write_str(
                "masking strategy pan_token needs a token key (hoop.token_key) and none is set",
            ),
            MaskError::TokenKeyTooShort => write!(
                f,
                "the pan_token key is shorter than {MIN_TOKEN_KEY_LEN} bytes; use a longer random key"
            ),
        }
    }
}

impl std::error::Error for MaskError {}

/// Shortest accepted `pan_token` key. Tokens are only as secret as the key:
/// with a guessable key, every token can be reversed by hashing the few
/// billion PANs of a known BIN.
pub const MIN_TOKEN_KEY_LEN: usize = 16;

/// What [`Strategy::Redact`] puts in place of a card number.
pub const REDACTED: &str = "[redacted]";

/// Start of every `pan_token` token.
const TOKEN_PREFIX: &str = "tok_";

/// The token alphabet: 16 consonants. No digits, so a token can never contain
/// (or be part of) a card number, and no vowels, so it never spells a word.
const TOKEN_ALPHABET: &[u8; 16] = b"bcdfghjklmnpqrst";

/// Bytes of the HMAC output kept: 128 bits, far beyond any collision risk for
/// the number of cards a database can hold.
const TOKEN_BYTES: usize = 16;

/// Length of a whole token, prefix included.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 2 * TOKEN_BYTES;

/// Separates `pan_token` tokens from any other use of the same key, and lets a
/// future token format coexist with this one.
const TOKEN_DOMAIN: &[u8] = b"hoop pan_token v1\0";

/// Masked positions are written as this byte.
const MASK_CHAR: u8 = b'*';

/// A configured masker; cheap to clone and to share between threads.
#[derive(Clone)]
pub struct Masker {
    method: Method,
}

/// A strategy with whatever it needs, so a `pan_token` masker without a key
/// cannot exist.
#[derive(Clone)]
enum Method {
    PanLast4,
    PanBinLast4,
    /// HMAC state already keyed; each token only hashes the digits.
    PanToken(Hmac<Sha256>),
    Redact,
}

impl fmt::Debug for Masker {
    /// Shows the strategy only; the token key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("strategy", &self.strategy())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// `pan_token` requires a key of at least [`MIN_TOKEN_KEY_LEN`] bytes and
    /// fails closed without one; other strategies ignore the key.
    pub fn new(strategy: Strategy, token_key: Option<&[u8]>) -> Result<Masker, MaskError> {
        let method = match strategy {
            Strategy::PanLast4 => Method::PanLast4,
            Strategy::PanBinLast4 => Method::PanBinLast4,
            Strategy::Redact => Method::Redact,
            Strategy::PanToken => {
                let key = token_key.ok_or(MaskError::MissingTokenKey)?;
                if key.len() < MIN_TOKEN_KEY_LEN {
                    return Err(MaskError::TokenKeyTooShort);
                }
                let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .map_err(|_| MaskError::TokenKeyTooShort)?;
                Method::PanToken(mac)
            }
        };
        Ok(Masker { method })
    }

    pub fn strategy(&self) -> Strategy {
        match self.method {
            Method::PanLast4 => Strategy::PanLast4,
            Method::PanBinLast4 => Strategy::PanBinLast4,
            Method::PanToken(_) => Strategy::PanToken,
            Method::Redact => Strategy::Redact,
        }
    }

    /// Masks the WHOLE value of a declared column, which is a card number by
    /// declaration (valid or not, any formatting):
    ///
    /// - `pan_last4`: every ASCII digit but the last four becomes `*`, other
    ///   characters are kept.
    /// - `pan_bin_last4`: with at least 13 digit positions, the first six and
    ///   the last four are kept and the digits between become `*`; otherwise
    ///   like `pan_last4`. A `*` counts as a (masked) digit position, so a
    ///   value masked once keeps its shape when masked again.
    /// - `pan_token`: `tok_` and the token of the value's digits, so
    ///   differently formatted copies of one card get one token. A value that
    ///   already is a token is returned as it is.
    /// - `redact`: [`REDACTED`].
    ///
    /// Idempotent, and the result never holds a PAN: at most four
    /// (`pan_last4`) or ten (`pan_bin_last4`) ASCII digits survive, and tokens
    /// have none.
    pub fn mask_value(&self, value: &str) -> String {
        let mut out = Vec::with_capacity(value.len().max(TOKEN_LEN));
        self.mask_value_into(value.as_bytes(), &mut out);
        ascii_edit_to_string(out)
    }

    /// [`Masker::mask_value`] of a value's bytes into `out` (cleared first),
    /// for a caller that masks one value per row and reuses one buffer. Only
    /// ASCII bytes change, so UTF-8 input gives UTF-8 output.
    pub fn mask_value_into(&self, value: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match &self.method {
            Method::PanLast4 => mask_last4(value, out),
            Method::PanBinLast4 => mask_bin_last4(value, out),
            Method::PanToken(_) if is_token(value) => out.extend_from_slice(value),
            Method::PanToken(key) => write_token(key, value, out),
            Method::Redact => out.extend_from_slice(REDACTED.as_bytes()),
        }
    }

    /// Whether this strategy gives every value a result of the same length
    /// (`pan_last4`, `pan_bin_last4`: a digit becomes a mask character of
    /// its own width), so that [`Masker::mask_value_to_slice`] can be used.
    pub fn keeps_length(&self) -> bool {
        matches!(self.method, Method::PanLast4 | Method::PanBinLast4)
    }

    /// [`Masker::mask_value`] of `value` written into `out`, which must be
    /// exactly as long: for a caller that masks one value per row straight
    /// into the result it returns (the extension, into a Postgres datum).
    /// Returns `false`, writing nothing, when the strategy does not keep
    /// lengths ([`Masker::keeps_length`]) or `out` has another length; use
    /// [`Masker::mask_value_into`] then.
    pub fn mask_value_to_slice(&self, value: &[u8], out: &mut [u8]) -> bool {
        if out.len() != value.len() {
            return false;
        }
        match self.method {
            // The usual value (a declared column holding a card number):
            // one pass to count, one to write, nothing allocated.
            Method::PanLast4 => match pan::ascii_digit_count(value) {
                Some(digits) => mask_last4_ascii(value, digits, out),
                None => return self.mask_value_via_vec(value, out),
            },
            Method::PanBinLast4 if value.is_ascii() => mask_bin_last4_ascii(value, out),
            Method::PanBinLast4 => return self.mask_value_via_vec(value, out),
            Method::PanToken(_) | Method::Redact => return false,
        }
        true
    }

    /// [`Masker::mask_value_to_slice`] of a value with non-ASCII bytes (a
    /// full-width digit is masked by a full-width `*`, as long as it).
    fn mask_value_via_vec(&self, value: &[u8], out: &mut [u8]) -> bool {
        let mut masked = Vec::with_capacity(value.len());
        self.mask_value_into(value, &mut masked);
        if masked.len() != out.len() {
            return false;
        }
        out.copy_from_slice(&masked);
        true
    }

    /// Replaces every PAN [`pan::find_pans`] detects in `text`; everything
    /// else is kept byte for byte. Borrowed when there is nothing to mask.
    pub fn mask_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(ascii_edit_to_string(bytes)),
        }
    }

    /// [`Masker::mask_text`] for bytes that need not be UTF-8 (COPY data,
    /// bytea, other encodings): only the ASCII spans of detected PANs change.
    ///
    /// Masking changes what surrounds neighbouring digits: the last four
    /// digits a masked PAN keeps may now start a card number with the digit
    /// groups after it (`5555555555084111 1111 1111 1111` masks to
    /// `************4111 1111 1111 1111`). So the output is checked again,
    /// and if it still holds a PAN, every digit of every stretch of digits,
    /// spaces and dashes holding 13 or more digits is masked. One check and
    /// one fallback, not a loop until clean: a crafted chain of such numbers
    /// would otherwise cost one full rescan per link. The result holds no PAN
    /// (a PAN only lives in such a stretch), which is also what makes masking
    /// idempotent.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut found = pan::pans(bytes).peekable();
        if found.peek().is_none() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + TOKEN_LEN);
        let mut copied = 0;
        for pan in found {
            out.extend_from_slice(&bytes[copied..pan.start]);
            self.mask_detected(&bytes[pan.start..pan.end], &mut out);
            copied = pan.end;
        }
        out.extend_from_slice(&bytes[copied..]);
        if pan::contains_pan(&out) {
            mask_long_digit_stretches(&mut out);
            if pan::contains_pan(&out) {
                mask_remaining_pans(&mut out);
            }
        }
        Cow::Owned(out)
    }

    /// Masks one detected PAN (digits and separators, 13 to 19 digits).
    fn mask_detected(&self, span: &[u8], out: &mut Vec<u8>) {
        match &self.method {
            Method::PanLast4 => mask_last4(span, out),
            Method::PanBinLast4 => mask_bin_last4(span, out),
            Method::PanToken(key) => write_token(key, span, out),
            Method::Redact => out.extend_from_slice(REDACTED.as_bytes()),
        }
    }
}

/// Full-width asterisk: a masked full-width digit, three bytes like the
/// digit, so masking in place keeps lengths.
const WIDE_MASK_CHAR: [u8; 3] = [0xEF, 0xBC, 0x8A];

/// Calls `each` for every unit of `value`: `Some(len)` for a digit (ASCII,
/// or full-width: three bytes), `None` for any other byte.
fn for_each_unit(value: &[u8], mut each: impl FnMut(&[u8], Option<usize>)) {
    let mut at = 0;
    while at < value.len() {
        match pan::digit_at(value, at) {
            Some((_, len)) => {
                each(&value[at..at + len], Some(len));
                at += len;
            }
            None => {
                each(&value[at..=at], None);
                at += 1;
            }
        }
    }
}

/// Writes a masked digit of `len` bytes (1: ASCII, 3: full-width).
fn push_mask(out: &mut Vec<u8>, len: usize) {
    if len == 1 {
        out.push(MASK_CHAR);
    } else {
        out.extend_from_slice(&WIDE_MASK_CHAR);
    }
}

/// Every digit (ASCII or full-width) but the last four becomes `*` (`＊`
/// for a full-width one, so lengths stay the same).
fn mask_last4(value: &[u8], out: &mut Vec<u8>) {
    if value.is_ascii() {
        // The usual value (a declared column holding a card number): copy it
        // and mask the digits in place, no per-byte unit walk.
        let start = out.len();
        out.resize(start + value.len(), 0);
        let digits = value.iter().filter(|byte| byte.is_ascii_digit()).count();
        mask_last4_ascii(value, digits, &mut out[start..]);
        return;
    }
    let mut digits = 0;
    for_each_unit(value, |_, digit| digits += usize::from(digit.is_some()));
    let mut seen = 0;
    for_each_unit(value, |unit, digit| match digit {
        Some(len) => {
            seen += 1;
            if seen + 4 > digits {
                out.extend_from_slice(unit);
            } else {
                push_mask(out, len);
            }
        }
        None => out.extend_from_slice(unit),
    });
}

/// [`mask_last4`] of an ASCII value with `digits` digits, into `out` (as
/// long as `value`). Runs once per value read from a masked column: reads
/// the value, not what was just written (no store-to-load stall), and no
/// branch per byte.
fn mask_last4_ascii(value: &[u8], digits: usize, out: &mut [u8]) {
    let masked = digits.saturating_sub(4);
    if digits == value.len() {
        // A card number stored as digits only.
        out[..masked].fill(MASK_CHAR);
        out[masked..].copy_from_slice(&value[masked..]);
        return;
    }
    let mut seen = 0;
    for (to, &byte) in out.iter_mut().zip(value) {
        let digit = byte.is_ascii_digit();
        *to = if digit && seen < masked {
            MASK_CHAR
        } else {
            byte
        };
        seen += usize::from(digit);
    }
}

/// [`mask_bin_last4`] of an ASCII value into `out` (as long as `value`); in
/// ASCII, a digit position is a digit or `*`.
fn mask_bin_last4_ascii(value: &[u8], out: &mut [u8]) {
    let is_position = |byte: u8| byte.is_ascii_digit() || byte == MASK_CHAR;
    let positions = value.iter().filter(|&&byte| is_position(byte)).count();
    if positions < pan::MIN_PAN_DIGITS {
        let digits = value.iter().filter(|byte| byte.is_ascii_digit()).count();
        mask_last4_ascii(value, digits, out);
        return;
    }
    let mut seen = 0;
    for (to, &byte) in out.iter_mut().zip(value) {
        *to = byte;
        if is_position(byte) {
            if seen >= 6 && seen + 4 < positions {
                *to = MASK_CHAR;
            }
            seen += 1;
        }
    }
}

/// Whether `unit` is a digit position: a digit or a masked one.
fn is_position(unit: &[u8], digit: Option<usize>) -> bool {
    digit.is_some() || unit == [MASK_CHAR] || unit == WIDE_MASK_CHAR
}

/// First six and last four digit positions kept when there are at least 13;
/// otherwise [`mask_last4`]. Positions are digits and `*`, so masking
/// `411111******1111` again keeps it as it is instead of treating it as a
/// ten-digit value.
fn mask_bin_last4(value: &[u8], out: &mut Vec<u8>) {
    // A full-width `＊` is three bytes, not a unit of its own: count it here.
    let wide_masks = value.windows(3).filter(|w| *w == WIDE_MASK_CHAR).count();
    let mut positions = wide_masks;
    for_each_unit(value, |unit, digit| {
        positions += usize::from(digit.is_some() || unit == [MASK_CHAR])
    });
    if positions < pan::MIN_PAN_DIGITS {
        mask_last4(value, out);
        return;
    }
    let mut seen = 0;
    let mut at = 0;
    while at < value.len() {
        let (unit, digit) = match pan::digit_at(value, at) {
            Some((_, len)) => (&value[at..at + len], Some(len)),
            None if value[at..].starts_with(&WIDE_MASK_CHAR) => (&value[at..at + 3], None),
            None => (&value[at..=at], None),
        };
        at += unit.len();
        if is_position(unit, digit) {
            let keep = seen < 6 || seen + 4 >= positions;
            seen += 1;
            match digit {
                Some(len) if !keep => push_mask(out, len),
                _ => out.extend_from_slice(unit),
            }
        } else {
            out.extend_from_slice(unit);
        }
    }
}

/// Masks every digit of every maximal stretch of digits and separators that
/// holds at least 13 digits. Afterwards no stretch holds 13 digits (a
/// masked stretch has none left, and `*` only splits stretches), so no
/// unbroken or grouped number of card length remains; the caller checks
/// for the rarer forms (full-width digits, scientific notation) after it.
fn mask_long_digit_stretches(text: &mut [u8]) {
    let in_stretch = |b: &u8| {
        b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'_' | b'.' | b'/' | b'\t' | b',' | b'\'')
    };
    for stretch in text.split_mut(|b| !in_stretch(b)) {
        if stretch.iter().filter(|b| b.is_ascii_digit()).count() >= pan::MIN_PAN_DIGITS {
            for byte in stretch.iter_mut().filter(|b| b.is_ascii_digit()) {
                *byte = MASK_CHAR;
            }
        }
    }
}

/// Masks every digit inside every card number still found, until none is:
/// the last resort after [`mask_long_digit_stretches`], for numbers it
/// cannot see (full-width digits, a short mantissa in scientific notation).
/// Each round masks at least nine digits, so this ends.
fn mask_remaining_pans(text: &mut Vec<u8>) {
    loop {
        let found = pan::find_pans(text);
        if found.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut copied = 0;
        for m in found {
            out.extend_from_slice(&text[copied..m.start]);
            for_each_unit(&text[m.start..m.end], |unit, digit| match digit {
                Some(len) => push_mask(&mut out, len),
                None => out.extend_from_slice(unit),
            });
            copied = m.end;
        }
        out.extend_from_slice(&text[copied..]);
        *text = out;
    }
}

/// `tok_` followed by the keyed hash of the ASCII digits of `value`.
fn write_token(key: &Hmac<Sha256>, value: &[u8], out: &mut Vec<u8>) {
    let mut mac = key.clone();
    mac.update(TOKEN_DOMAIN);
    // Digits only: `4111 1111 1111 1111` and `4111111111111111` are one
    // card, and so is the same number in full-width digits.
    let mut at = 0;
    while at < value.len() {
        match pan::digit_at(value, at) {
            Some((digit, len)) => {
                mac.update(&[b'0' + digit]);
                at += len;
            }
            None => at += 1,
        }
    }
    let hash = mac.finalize().into_bytes();
    out.extend_from_slice(TOKEN_PREFIX.as_bytes());
    for &byte in &hash[..TOKEN_BYTES] {
        out.push(TOKEN_ALPHABET[usize::from(byte >> 4)]);
        out.push(TOKEN_ALPHABET[usize::from(byte & 0x0f)]);
    }
}

/// Whether `value` has exactly the shape [`write_token`] produces.
fn is_token(value: &[u8]) -> bool {
    value.len() == TOKEN_LEN
        && value.starts_with(TOKEN_PREFIX.as_bytes())
        && value[TOKEN_PREFIX.len()..]
            .iter()
            .all(|b| TOKEN_ALPHABET.contains(b))
}

/// Back to a `String` after editing valid UTF-8 by replacing ASCII bytes with
/// ASCII bytes, which keeps it valid; the lossy branch is never taken but
/// spares a panic path.
fn ascii_edit_to_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_masker() -> Masker {
        Masker::new(Strategy::PanToken, Some(b"0123456789abcdef0123")).expect("valid key")
    }

    #[test]
    fn tokens_have_the_recognised_shape() {
        let token = token_masker().mask_value("4111111111111111");
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(is_token(token.as_bytes()), "{token}");
        assert!(!token.bytes().any(|b| b.is_ascii_digit()));
    }

    #[test]
    fn masking_into_a_slice_is_mask_value() {
        let values = [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111 exp 12/29",
            "411111******1111",
            "************1111",
            "378282246310005",
            "1234",
            "12345",
            "",
            "no digits",
            "carte nº 4111 1111 1111 1111 ✓",
            "\u{ff14}\u{ff11}\u{ff11}\u{ff11}111111111111",
            "41111\u{ff0a}\u{ff0a}1111111111",
        ];
        // And every short mix of digits, masks, separators and letters a
        // small generator makes.
        let alphabet = ["0", "4", "9", "*", " ", "-", "x", "\u{ff11}", "\u{ff0a}"];
        let mut seed: u32 = 12345;
        let mut generated = Vec::new();
        for _ in 0..2000 {
            let mut value = String::new();
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            for _ in 0..(seed >> 16) % 24 {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                // Mostly ASCII digits, as in a card number.
                let pick = (seed >> 16) as usize % (alphabet.len() + 6);
                value.push_str(alphabet[pick.saturating_sub(6)]);
            }
            generated.push(value);
        }
        for strategy in Strategy::ALL {
            let masker = Masker::new(strategy, Some(b"0123456789abcdef0123")).expect("masker");
            for value in values
                .iter()
                .copied()
                .chain(generated.iter().map(String::as_str))
            {
                let mut out = vec![0xff; value.len()];
                if masker.mask_value_to_slice(value.as_bytes(), &mut out) {
                    assert!(masker.keeps_length(), "{strategy}");
                    assert_eq!(
                        String::from_utf8(out).expect("UTF-8"),
                        masker.mask_value(value),
                        "{strategy} {value:?}"
                    );
                } else {
                    assert!(!masker.keeps_length(), "{strategy}");
                    assert!(
                        out.iter().all(|&b| b == 0xff),
                        "{strategy}: nothing written"
                    );
                }
                let mut longer = vec![0; value.len() + 1];
                assert!(!masker.mask_value_to_slice(value.as_bytes(), &mut longer));
            }
        }
    }

    #[test]
    fn ascii_digits_are_counted() {
        let all: Vec<u8> = (0..=255).collect();
        let digits: Vec<u8> = b"0123456789".repeat(5);
        for bytes in [&all, &digits] {
            for start in 0..bytes.len() {
                for len in [0, 1, 7, 8, 9, 16, 17, 40] {
                    let slice = &bytes[start..(start + len).min(bytes.len())];
                    let expected = slice
                        .is_ascii()
                        .then(|| slice.iter().filter(|b| b.is_ascii_digit()).count());
                    assert_eq!(pan::ascii_digit_count(slice), expected, "{slice:?}");
                }
            }
        }
    }

    #[test]
    fn alphabet_has_sixteen_distinct_letters() {
        let mut letters = TOKEN_ALPHABET.to_vec();
        letters.sort_unstable();
        letters.dedup();
        assert_eq!(letters.len(), 16);
        assert!(letters.iter().all(u8::is_ascii_lowercase));
    }
}
