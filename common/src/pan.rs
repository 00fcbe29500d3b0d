//! Finding primary account numbers (card numbers, PANs) in arbitrary bytes.
//!
//! The gateway runs this over every result cell, error message and notice, and
//! the extension over every masked value, so it has to be fast on text without
//! card numbers and precise on text full of other numbers. A PAN is reported
//! only when all of the following hold:
//!
//! 1. **Shape.** One of:
//!    - one unbroken run of 13 to 19 digits, also as the integer part of a
//!      decimal (`4012888888881881.00`, a `numeric(20,2)`, an error DETAIL
//!      `Key (x)=(…)`) and after a `+` when it has 16 digits or more (an
//!      E.164 phone number has at most 15);
//!    - digit groups in a layout cards are actually printed with, joined by
//!      one to three separators (space, dash, underscore, dot, slash, tab;
//!      doubled or mixed):
//!
//!    | digits | layout        | who prints it                               |
//!    |-------:|---------------|---------------------------------------------|
//!    | 13     | 4-4-5, 4-3-3-3| old 13-digit Visa                           |
//!    | 14     | 4-6-4         | Diners Club                                 |
//!    | 15     | 4-6-5         | American Express                            |
//!    | 16     | 4-4-4-4       | almost everybody                            |
//!    | 17–19  | 4-4-4-4-1/2/3 | long Discover, JCB, UnionPay, Maestro, Visa |
//!
//!    - an amount with thousands separators (`money`, locale formatting:
//!      `4,012,888,888,881,881.00`, `4.012.888.888.881.881,00`, `4 012 …`,
//!      `4'012'…`);
//!    - a float in scientific notation whose digits, padded by the exponent,
//!      make the number (`4.012888888881881e+15`, how `float8` prints).
//!
//!    Full-width digits count as digits, no-break and other fixed-width
//!    spaces as a space, zero-width characters as nothing (see
//!    `normalized_char`). Other layouts are
//!    not card numbers as anyone writes them. When more space-separated
//!    groups follow, the longest layout that is a valid card wins, so
//!    `5555 5555 5555 4444 12/25` (a PAN and its expiry date) is still
//!    found; groups that go on after a dash, dot, slash or underscore are an
//!    identifier.
//! 2. **Standing alone.** The number is not part of a longer token: no
//!    letter, digit or `_` touches it (`GB82WEST1234…`, `0x4111…`,
//!    `ord_4111…`); it is not glued by a dash to a word or hex group
//!    (UUIDs, `INV-4111…`, `4111…-01`); it is not the fraction of a decimal
//!    (`0.4111111111111111` is a float); it does not follow `+` unless it is
//!    too long for an E.164 phone number; it does not follow an IBAN's first group
//!    (two letters, two check digits) through a chain of 4-character groups
//!    (`GB82 WEST 1234 …`, `DE89 4111…`); and a grouped number is not the
//!    tail of a longer sequence of short digit groups (`DE89 3704 0044 0532
//!    0130 00`, phone and account numbers). A grouped number right after a
//!    PAN, or after a run of 13 or more digits, is a number of its own.
//! 3. **Brand.** The issuer prefix and the length fit a real brand (see
//!    [`brand_of`]). No brand starts with 0, 1, 7, 8 or 9, which is what keeps
//!    epoch timestamps (`1700000000000`, 13 to 19 digits starting with 1)
//!    from ever matching.
//! 4. **Luhn.** The check digit is right (see [`luhn_valid`]).
//!
//! Everything else — phone numbers, order and invoice numbers, IBANs, digit
//! runs inside UUIDs and longer IDs — is left alone.

/// Card brands recognised by issuer prefix (IIN/BIN range) and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    DinersClub,
    UnionPay,
    Maestro,
}

/// One card number found in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanMatch {
    /// Byte offset of the first digit.
    pub start: usize,
    /// Byte offset just past the last digit; separators inside are included.
    pub end: usize,
    pub brand: Brand,
}

/// Shortest PAN we report. ISO/IEC 7812 allows 8 to 19 digits, but 12-digit
/// Maestro cards are gone from circulation while 12-digit order, account and
/// phone numbers are everywhere: going lower would buy almost no recall for a
/// lot of false positives.
pub(crate) const MIN_PAN_DIGITS: usize = 13;

/// Longest PAN ISO/IEC 7812 allows.
pub(crate) const MAX_PAN_DIGITS: usize = 19;

/// Printed layouts, as group lengths, tried in this order; a layout may match
/// a prefix of a longer group sequence (see the module documentation), so
/// longer layouts come before their own prefixes.
const GROUP_LAYOUTS: [&[usize]; 8] = [
    &[4, 4, 4, 4, 3],
    &[4, 4, 4, 4, 2],
    &[4, 4, 4, 4, 1],
    &[4, 4, 4, 4],
    &[4, 6, 5],
    &[4, 6, 4],
    &[4, 4, 5],
    &[4, 3, 3, 3],
];

/// Most groups any layout has.
const MAX_GROUPS: usize = 5;

/// Longest single group in any layout.
const MAX_GROUP_DIGITS: usize = 6;

/// Every PAN in `input`, left to right, non-overlapping.
pub fn find_pans(input: &[u8]) -> Vec<PanMatch> {
    pans(input).collect()
}

/// Whether `input` holds at least one PAN; stops at the first and does not
/// allocate, for callers that only need to decide whether to look closer.
pub fn contains_pan(input: &[u8]) -> bool {
    pans(input).next().is_some()
}

/// The Luhn (mod 10) check over ASCII digits, the last one being the check
/// digit. Anything that is not an ASCII digit, and the empty slice, fails.
pub fn luhn_valid(digits: &[u8]) -> bool {
    // Value of a digit after doubling and adding the two digits of the result.
    const DOUBLED: [u64; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u64;
    for (position_from_right, &byte) in digits.iter().rev().enumerate() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return false;
        }
        sum += if position_from_right % 2 == 1 {
            DOUBLED[usize::from(digit)]
        } else {
            u64::from(digit)
        };
    }
    sum % 10 == 0
}

/// The brand whose issuer prefix and allowed lengths fit `digits` (ASCII
/// digits only, no separators), or `None`.
///
/// | brand       | prefixes                                        | lengths   |
/// |-------------|-------------------------------------------------|-----------|
/// | Visa        | 4                                               | 13, 16, 19|
/// | Mastercard  | 51–55, 2221–2720                                | 16        |
/// | Amex        | 34, 37                                          | 15        |
/// | Discover    | 6011, 644–649, 65, 622126–622925                | 16–19     |
/// | JCB         | 3528–3589                                       | 16–19     |
/// | Diners Club | 300–305, 3095, 36, 38–39                        | 14–19     |
/// | UnionPay    | 62 (other than the Discover co-brand range)     | 16–19     |
/// | Maestro     | 5018, 5020, 5038, 5893, 6304, 6759, 6761–6763   | 13–19     |
///
/// Every prefix belongs to exactly one brand, so a wrong length means "not a
/// card" rather than "try another brand". Maestro's 12-digit cards are left
/// out on purpose (see `MIN_PAN_DIGITS`).
pub fn brand_of(digits: &[u8]) -> Option<Brand> {
    let len = digits.len();
    if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&len) || !digits.iter().all(|&b| is_digit(b)) {
        return None;
    }
    // At least 13 digits, so every prefix below exists.
    let prefix = |n: usize| {
        digits[..n]
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let (p2, p3, p4, p6) = (prefix(2), prefix(3), prefix(4), prefix(6));

    let (brand, lengths) = if digits[0] == b'4' {
        (Brand::Visa, &[13, 16, 19][..])
    } else if p2 == 34 || p2 == 37 {
        (Brand::Amex, &[15][..])
    } else if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        (Brand::Mastercard, &[16][..])
    } else if matches!(p4, 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761..=6763) {
        (Brand::Maestro, &[13, 14, 15, 16, 17, 18, 19][..])
    } else if p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6)
    {
        // Checked before UnionPay: 622126–622925 is the co-branded range.
        (Brand::Discover, &[16, 17, 18, 19][..])
    } else if p2 == 62 {
        (Brand::UnionPay, &[16, 17, 18, 19][..])
    } else if (3528..=3589).contains(&p4) {
        (Brand::Jcb, &[16, 17, 18, 19][..])
    } else if (300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39 {
        (Brand::DinersClub, &[14, 15, 16, 17, 18, 19][..])
    } else {
        return None;
    };
    lengths.contains(&len).then_some(brand)
}

/// Lazily finds PANs; [`find_pans`] collects it, [`contains_pan`] takes the
/// first, and the masker streams it without an intermediate vector.
///
/// Input holding characters that read as digits or separators without being
/// ASCII (full-width digits, no-break and zero-width spaces; see
/// `normalized_char`) takes a slower path: it is read through an ASCII copy and
/// the matches are mapped back to the original offsets.
pub(crate) fn pans(input: &[u8]) -> Pans<'_> {
    if needs_normalizing(input) {
        return Pans::Normalized(normalized_pans(input).into_iter());
    }
    Pans::Ascii(AsciiPans {
        input,
        position: 0,
        last_match_end: None,
    })
}

pub(crate) enum Pans<'a> {
    Ascii(AsciiPans<'a>),
    Normalized(std::vec::IntoIter<PanMatch>),
}

impl Iterator for Pans<'_> {
    type Item = PanMatch;

    fn next(&mut self) -> Option<PanMatch> {
        match self {
            Pans::Ascii(pans) => pans.next(),
            Pans::Normalized(pans) => pans.next(),
        }
    }
}

pub(crate) struct AsciiPans<'a> {
    input: &'a [u8],
    /// Where the search for the next digit resumes.
    position: usize,
    /// End of the previous match: a grouped number that follows a PAN after
    /// one space starts a new number instead of continuing a sequence.
    last_match_end: Option<usize>,
}

impl Iterator for AsciiPans<'_> {
    type Item = PanMatch;

    fn next(&mut self) -> Option<PanMatch> {
        loop {
            let start = next_digit(self.input, self.position)?;
            let run_end = end_of_digits(self.input, start);
            if self.input.get(run_end).is_some_and(u8::is_ascii_alphabetic) {
                // A letter right after the run: no shape ends there (a
                // number stands alone, rule 2) or goes on from there
                // (groups, amounts and floats go on after a separator or a
                // dot), and no later digit of the token starts one (a
                // letter, digit or `_` before it): skip the rest of the
                // token at once (hex, base64, UUID groups, names with
                // digits) instead of trying each of its digit runs.
                self.position = end_of_word(self.input, run_end);
                continue;
            }
            if let Some(found) = match_at(self.input, start, run_end, self.last_match_end) {
                self.position = found.end;
                self.last_match_end = Some(found.end);
                return Some(found);
            }
            self.position = run_end;
        }
    }
}

/// Whether `input` holds a character [`normalized_char`] reads that can be
/// part of a card number: a full-width digit (U+FF10..U+FF19, what Japanese
/// and Chinese input methods type), or a no-break, fixed-width or
/// zero-width space or full-width hyphen right after a digit (and at most
/// three ASCII separators). Typographic quotes and dashes, and spaces away
/// from digits, keep the fast path.
fn needs_normalizing(input: &[u8]) -> bool {
    if input.is_ascii() {
        return false;
    }
    let mut at = 0;
    while let Some(offset) = input.get(at..).and_then(|rest| {
        rest.iter()
            .position(|&b| matches!(b, 0xC2 | 0xE2 | 0xE3 | 0xEF))
    }) {
        let lead = at + offset;
        match normalized_char(input, lead) {
            Some((Normalized::Byte(byte), _)) if is_digit(byte) => return true,
            Some(_) if follows_digit(input, lead) => return true,
            _ => {}
        }
        at = lead + 1;
    }
    false
}

/// Whether a digit (ASCII or full-width) ends just before `at`, possibly
/// followed by up to three ASCII separators.
fn follows_digit(input: &[u8], at: usize) -> bool {
    let end = at - separator_run_before(input, at);
    byte_before(input, end, 1).is_some_and(is_digit)
        || (end >= 3 && matches!(input[end - 3..end], [0xEF, 0xBC, 0x90..=0x99]))
}

/// What a non-ASCII character counts as for detection.
enum Normalized {
    /// An ASCII byte it stands for.
    Byte(u8),
    /// Nothing: a zero-width character.
    Nothing,
}

/// The character at `at` if it is one [`needs_normalizing`] looks for, with
/// its length in bytes.
fn normalized_char(input: &[u8], at: usize) -> Option<(Normalized, usize)> {
    match input.get(at..)? {
        [0xEF, 0xBC, digit @ 0x90..=0x99, ..] => Some((Normalized::Byte(b'0' + (digit - 0x90)), 3)),
        [0xEF, 0xBC, 0x8D, ..] => Some((Normalized::Byte(b'-'), 3)),
        [0xC2, 0xA0, ..] => Some((Normalized::Byte(b' '), 2)),
        // Zero-width space, non-joiner, joiner; word joiner; BOM.
        [0xE2, 0x80, 0x8B..=0x8D, ..] | [0xE2, 0x81, 0xA0, ..] | [0xEF, 0xBB, 0xBF, ..] => {
            Some((Normalized::Nothing, 3))
        }
        // En quad .. hair space, narrow no-break space, ideographic space.
        [0xE2, 0x80, 0x80..=0x8A | 0xAF, ..] | [0xE3, 0x80, 0x80, ..] => {
            Some((Normalized::Byte(b' '), 3))
        }
        _ => None,
    }
}

/// The ASCII matcher over a copy of `input` in which every character of
/// [`normalized_char`] is replaced by the ASCII byte it stands for (or
/// dropped), with matches mapped back to `input`'s offsets. The map keeps
/// one entry per replaced character, not per byte, so a long value costs
/// one copy of itself.
fn normalized_pans(input: &[u8]) -> Vec<PanMatch> {
    let mut ascii = Vec::with_capacity(input.len());
    // (index in `ascii`, offset in `input`) from which bytes map one to one;
    // sorted, the last entry for an index wins.
    let mut shifts: Vec<(usize, usize)> = vec![(0, 0)];
    let mut at = 0;
    while at < input.len() {
        match normalized_char(input, at) {
            Some((Normalized::Byte(byte), len)) => {
                shifts.push((ascii.len(), at));
                ascii.push(byte);
                at += len;
                shifts.push((ascii.len(), at));
            }
            Some((Normalized::Nothing, len)) => {
                at += len;
                shifts.push((ascii.len(), at));
            }
            None => {
                ascii.push(input[at]);
                at += 1;
            }
        }
    }
    let original = |index: usize| {
        let entry = shifts.partition_point(|&(from, _)| from <= index) - 1;
        let (from, offset) = shifts[entry];
        offset + (index - from)
    };
    let found = AsciiPans {
        input: &ascii,
        position: 0,
        last_match_end: None,
    };
    found
        .map(|m| {
            let last = original(m.end - 1);
            let last_len = normalized_char(input, last).map_or(1, |(_, len)| len);
            PanMatch {
                start: original(m.start),
                end: last + last_len,
                brand: m.brand,
            }
        })
        .collect()
}

/// The digit at `at`, ASCII or full-width, as its value and its length in
/// bytes; the masker uses it to mask both kinds of digits in place.
pub(crate) fn digit_at(input: &[u8], at: usize) -> Option<(u8, usize)> {
    match input.get(at..)? {
        [digit @ b'0'..=b'9', ..] => Some((*digit - b'0', 1)),
        [0xEF, 0xBC, digit @ 0x90..=0x99, ..] => Some((*digit - 0x90, 3)),
        _ => None,
    }
}

#[inline]
fn is_digit(byte: u8) -> bool {
    byte.wrapping_sub(b'0') < 10
}

/// Bytes that make a digit run part of a longer identifier.
#[inline]
fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` that is an ASCII digit (SWAR: eight
/// bytes per step, no branch per byte). XOR with `'0'` maps exactly the
/// digits to 0..=9; adding 0x76 to the low seven bits sets the high bit for
/// 10..=127 without carrying into the next byte, and OR-ing the original
/// high bit covers 128..=255.
#[inline]
pub(crate) fn digit_bits(word: u64) -> u64 {
    let shifted = word ^ (u64::from(b'0') * ONES);
    let non_digit = (((shifted & !HIGH_BITS) + 0x76 * ONES) | shifted) & HIGH_BITS;
    !non_digit & HIGH_BITS
}

/// How many bytes of `input` are ASCII digits, or `None` when it is not all
/// ASCII: one pass, eight bytes per step.
pub(crate) fn ascii_digit_count(input: &[u8]) -> Option<usize> {
    let mut words = input.chunks_exact(8);
    let mut count = 0;
    let mut high_bits = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        high_bits |= word & HIGH_BITS;
        // One bit per digit byte, moved to the byte's low bit; the multiply
        // sums the eight bytes into the top one.
        count += (((digit_bits(word) >> 7).wrapping_mul(ONES)) >> 56) as usize;
    }
    let rest = words.remainder();
    if high_bits != 0 || !rest.is_ascii() {
        return None;
    }
    Some(count + rest.iter().filter(|b| is_digit(**b)).count())
}

/// Eight bytes at `offset` in little-endian order, so that the lowest set
/// bit of a mask belongs to the first byte.
#[inline]
fn word_at(input: &[u8], offset: usize) -> Option<u64> {
    let bytes: [u8; 8] = input.get(offset..offset.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Byte index, within its word, of the lowest byte flagged in `bits`.
#[inline]
fn first_flagged_byte(bits: u64) -> usize {
    (bits.trailing_zeros() / 8) as usize
}

/// Offset of the first ASCII digit at or after `from`.
///
/// Two regimes: in number-dense text (JSON, CSV) the next digit is usually in
/// the next eight bytes, found with one SWAR step; in prose, whole 32-byte
/// blocks are skipped at once, the OR-fold having no early exit so that the
/// compiler turns it into a few SIMD compares per block.
#[inline]
fn next_digit(input: &[u8], from: usize) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut offset = from;
    if let Some(word) = word_at(input, offset) {
        let bits = digit_bits(word);
        if bits != 0 {
            return Some(offset + first_flagged_byte(bits));
        }
        offset += 8;
    }
    let rest = input.get(offset..)?;
    for block in rest.chunks_exact(BLOCK) {
        let any_digit = block
            .iter()
            .fold(false, |seen, &byte| seen | is_digit(byte));
        if any_digit {
            break;
        }
        offset += BLOCK;
    }
    while let Some(word) = word_at(input, offset) {
        let bits = digit_bits(word);
        if bits != 0 {
            return Some(offset + first_flagged_byte(bits));
        }
        offset += 8;
    }
    let position = input.get(offset..)?.iter().position(|&b| is_digit(b))?;
    Some(offset + position)
}

/// Offset just past the digit run that starts at `start`.
#[inline]
fn end_of_digits(input: &[u8], start: usize) -> usize {
    let mut offset = start;
    while let Some(word) = word_at(input, offset) {
        let non_digits = !digit_bits(word) & HIGH_BITS;
        if non_digits != 0 {
            return offset + first_flagged_byte(non_digits);
        }
        offset += 8;
    }
    input
        .get(offset..)
        .and_then(|rest| rest.iter().position(|&b| !is_digit(b)))
        .map_or(input.len(), |length| offset + length)
}

/// Offset just past the token (letters, digits, `_`) that `start` is in.
#[inline]
fn end_of_word(input: &[u8], start: usize) -> usize {
    input[start..]
        .iter()
        .position(|&b| !is_word(b))
        .map_or(input.len(), |length| start + length)
}

fn byte_before(input: &[u8], offset: usize, distance: usize) -> Option<u8> {
    offset
        .checked_sub(distance)
        .and_then(|i| input.get(i))
        .copied()
}

/// Bytes that may stand between the digit groups of a printed card number:
/// space, dash, underscore, dot, slash, tab (no-break and other spaces are
/// read as a space, see [`normalized_char`]).
#[inline]
fn is_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'-' | b'_' | b'.' | b'/' | b'\t')
}

/// Most separator bytes between two groups: one, doubled, or mixed (` - `).
const MAX_SEPARATOR_RUN: usize = 3;

/// Length of the run of separators at `at`, when a digit follows it.
fn separator_run(input: &[u8], at: usize) -> Option<usize> {
    let mut length = 0;
    while length < MAX_SEPARATOR_RUN && input.get(at + length).copied().is_some_and(is_separator) {
        length += 1;
    }
    (length > 0 && input.get(at + length).copied().is_some_and(is_digit)).then_some(length)
}

/// Length of the run of separators ending just before `end` (at most
/// [`MAX_SEPARATOR_RUN`]).
fn separator_run_before(input: &[u8], end: usize) -> usize {
    input[..end]
        .iter()
        .rev()
        .take(MAX_SEPARATOR_RUN)
        .take_while(|&&b| is_separator(b))
        .count()
}

/// Fewest digits a number after `+` must have to be a card number rather
/// than an E.164 phone number (at most 15 digits).
const MIN_DIGITS_AFTER_PLUS: usize = 16;

/// The PAN starting at the digit run `start..run_end`, if there is one.
fn match_at(
    input: &[u8],
    start: usize,
    run_end: usize,
    last_match_end: Option<usize>,
) -> Option<PanMatch> {
    let run_length = run_end - start;
    if (MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&run_length) {
        let digits = &input[start..run_end];
        let brand = brand_of(digits)?;
        let standalone = left_boundary_ok(input, start, run_length)
            && run_right_boundary_ok(input, run_end)
            && !follows_iban_prefix(input, start);
        return (standalone && luhn_valid(digits)).then_some(PanMatch {
            start,
            end: run_end,
            brand,
        });
    }
    if run_length == 4 {
        if let Some(found) = grouped_match_at(input, start, run_end, last_match_end) {
            return Some(found);
        }
    }
    if (1..=3).contains(&run_length) {
        if let Some(found) = thousands_match_at(input, start, run_end) {
            return Some(found);
        }
    }
    if run_length == 1 {
        return scientific_match_at(input, start, run_end);
    }
    None
}

/// A PAN printed in groups, starting with the 4-digit group `start..first_end`.
fn grouped_match_at(
    input: &[u8],
    start: usize,
    first_end: usize,
    last_match_end: Option<usize>,
) -> Option<PanMatch> {
    separator_run(input, first_end)?;
    // After `+` only an unbroken number counts: grouped digits there are a
    // phone number (`+44 7911 123456`).
    if !left_boundary_ok(input, start, 0) || follows_iban_prefix(input, start) {
        return None;
    }
    let separators_before = separator_run_before(input, start);
    let continues_sequence = separators_before > 0
        && byte_before(input, start - separators_before, 1).is_some_and(is_digit)
        && last_match_end != Some(start - separators_before);
    if continues_sequence && digits_ending_at(input, start - separators_before) < MIN_PAN_DIGITS {
        // The tail of a longer group sequence (IBAN, phone number, account
        // number), not a number of its own. A whole PAN-length run before it
        // is a separate number, though.
        return None;
    }

    let mut group_lengths = [0usize; MAX_GROUPS];
    let mut group_ends = [0usize; MAX_GROUPS];
    let mut groups = 0;
    let (mut group_start, mut group_end) = (start, first_end);
    loop {
        group_lengths[groups] = group_end - group_start;
        group_ends[groups] = group_end;
        groups += 1;
        let next = if groups < MAX_GROUPS {
            separator_run(input, group_end)
        } else {
            None
        };
        let Some(separators) = next else {
            break;
        };
        group_start = group_end + separators;
        group_end = end_of_digits(input, group_start);
        if group_end - group_start > MAX_GROUP_DIGITS {
            break;
        }
    }

    for layout in GROUP_LAYOUTS {
        if layout.len() > groups || group_lengths[..layout.len()] != *layout {
            continue;
        }
        let end = group_ends[layout.len() - 1];
        if !grouped_right_boundary_ok(input, end) {
            continue;
        }
        let mut digits = [0u8; MAX_PAN_DIGITS];
        let mut count = 0;
        for &byte in &input[start..end] {
            if is_digit(byte) {
                digits[count] = byte;
                count += 1;
            }
        }
        let digits = &digits[..count];
        if let Some(brand) = brand_of(digits) {
            if luhn_valid(digits) {
                return Some(PanMatch { start, end, brand });
            }
        }
    }
    None
}

/// A PAN printed as an amount with thousands separators, the way `money`
/// and locale-aware number formatting print it: `4,012,888,888,881,881.00`,
/// `4.012.888.888.881.881,00`, `4 012 888 888 881 881`, `4'012'888'888'881'881`.
/// The first group has one to three digits, every other group three; the
/// same separator throughout.
fn thousands_match_at(input: &[u8], start: usize, first_end: usize) -> Option<PanMatch> {
    let separator = *input.get(first_end)?;
    if !matches!(separator, b',' | b'.' | b' ' | b'\'') {
        return None;
    }
    if !left_boundary_ok(input, start, 0) {
        return None;
    }
    // Not the tail of a longer list of numbers: `1,234,567,…`.
    if matches!(
        byte_before(input, start, 1),
        Some(b',' | b'.' | b' ' | b'\'')
    ) && byte_before(input, start, 2).is_some_and(is_digit)
    {
        return None;
    }
    let mut digits = [0u8; MAX_PAN_DIGITS];
    let mut count = first_end - start;
    digits[..count].copy_from_slice(&input[start..first_end]);
    let mut end = first_end;
    while input.get(end) == Some(&separator) {
        let group_end = end_of_digits(input, end + 1);
        if group_end - (end + 1) != 3 {
            break;
        }
        if count + 3 > MAX_PAN_DIGITS {
            return None;
        }
        digits[count..count + 3].copy_from_slice(&input[end + 1..group_end]);
        count += 3;
        end = group_end;
    }
    if count < MIN_PAN_DIGITS {
        return None;
    }
    // The separator going on into digits: groups that are not thousands.
    if input.get(end) == Some(&separator) && input.get(end + 1).copied().is_some_and(is_digit) {
        return None;
    }
    if input.get(end).copied().is_some_and(is_word) {
        return None;
    }
    let digits = &digits[..count];
    let brand = brand_of(digits)?;
    luhn_valid(digits).then_some(PanMatch { start, end, brand })
}

/// Fewest significant digits of a card number in scientific notation.
const MIN_SCIENTIFIC_DIGITS: usize = 12;

/// A PAN printed as a floating-point number in scientific notation, the way
/// PostgreSQL prints a `float8` of 16 digits: `4.012888888881881e+15`. The
/// number is the mantissa's digits followed by as many zeros as the exponent
/// asks for; the match covers the mantissa, so masking keeps the exponent.
fn scientific_match_at(input: &[u8], start: usize, run_end: usize) -> Option<PanMatch> {
    if input.get(run_end) != Some(&b'.') {
        return None;
    }
    let fraction_start = run_end + 1;
    let fraction_end = end_of_digits(input, fraction_start);
    let fraction = &input[fraction_start..fraction_end];
    if fraction.is_empty() || !matches!(input.get(fraction_end), Some(b'e' | b'E')) {
        return None;
    }
    let mut exponent_start = fraction_end + 1;
    if input.get(exponent_start) == Some(&b'+') {
        exponent_start += 1;
    }
    let exponent_end = end_of_digits(input, exponent_start);
    let exponent = &input[exponent_start..exponent_end];
    if exponent.is_empty() || exponent.len() > 2 {
        return None;
    }
    let exponent = exponent
        .iter()
        .fold(0usize, |acc, &b| acc * 10 + usize::from(b - b'0'));
    let length = exponent + 1;
    // At least 12 significant digits: a float4 prints at most 9, and a card
    // number with more than a few trailing zeros is not one anybody holds.
    if !(MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&length)
        || fraction.len() > exponent
        || fraction.len() + 1 < MIN_SCIENTIFIC_DIGITS
    {
        return None;
    }
    if !left_boundary_ok(input, start, length) || !run_right_boundary_ok(input, exponent_end) {
        return None;
    }
    let mut digits = [b'0'; MAX_PAN_DIGITS];
    digits[0] = input[start];
    digits[1..=fraction.len()].copy_from_slice(fraction);
    let digits = &digits[..length];
    let brand = brand_of(digits)?;
    luhn_valid(digits).then_some(PanMatch {
        start,
        end: fraction_end,
        brand,
    })
}

/// Whether the byte before `start` lets a number of `digits` digits begin
/// there.
fn left_boundary_ok(input: &[u8], start: usize, digits: usize) -> bool {
    let Some(before) = byte_before(input, start, 1) else {
        return true;
    };
    let two_before = byte_before(input, start, 2);
    match before {
        b if is_word(b) => false,
        // E.164 phone numbers (+4915112345678) have at most 15 digits; a
        // longer number after `+` is a signed number.
        b'+' => digits >= MIN_DIGITS_AFTER_PLUS,
        // Dashed identifiers and UUID groups: INV-2024-…, …-446655440000.
        b'-' => !two_before.is_some_and(is_word),
        // The fraction of a decimal: 0.4111111111111111 is a float.
        b'.' => !two_before.is_some_and(is_digit),
        _ => true,
    }
}

/// Whether the byte after an unbroken run of digits ending at `end` lets a
/// number end there. The integer part of a decimal
/// (`4012888888881881.00`, a `numeric(20,2)`) is a number of its own.
fn run_right_boundary_ok(input: &[u8], end: usize) -> bool {
    let Some(&after) = input.get(end) else {
        return true;
    };
    let two_after = input.get(end + 1).copied();
    match after {
        b if is_word(b) => false,
        b'-' => !two_after.is_some_and(is_word),
        _ => true,
    }
}

/// Whether the byte after a grouped number ending at `end` lets it end
/// there: not when the digits go on after a separator other than a space or
/// tab (`4111-1111-1111-1111-1111`, `4111.1111.1111.1111.1` are identifiers).
fn grouped_right_boundary_ok(input: &[u8], end: usize) -> bool {
    let Some(&after) = input.get(end) else {
        return true;
    };
    let two_after = input.get(end + 1).copied();
    match after {
        b if is_word(b) => false,
        b' ' | b'\t' => true,
        b if is_separator(b) => !two_after.is_some_and(is_word),
        _ => true,
    }
}

/// Number of consecutive digits ending just before `end`.
fn digits_ending_at(input: &[u8], end: usize) -> usize {
    input[..end]
        .iter()
        .rev()
        .take_while(|&&b| is_digit(b))
        .count()
}

/// Whether the number at `start` follows, after one space, a chain of
/// 4-character groups that begins like an IBAN (two letters, two check
/// digits): `GB82 WEST 1234 5698 7654 32`. Only chains of letter groups get
/// here; a chain ending in digits is caught as a sequence continuation.
fn follows_iban_prefix(input: &[u8], start: usize) -> bool {
    // An IBAN has at most 34 characters, so at most 8 groups precede ours.
    const MAX_GROUPS_BEFORE: usize = 8;
    let mut space = start;
    for _ in 0..MAX_GROUPS_BEFORE {
        if byte_before(input, space, 1) != Some(b' ') {
            return false;
        }
        let group_end = space - 1;
        let group_length = input[..group_end]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric())
            .take(5)
            .count();
        if group_length != 4 {
            return false;
        }
        let group = &input[group_end - 4..group_end];
        let iban_start = group[..2].iter().all(u8::is_ascii_alphabetic)
            && group[2..].iter().all(u8::is_ascii_digit);
        if iban_start {
            return true;
        }
        space = group_end - 4;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// Every digit run tried in turn, as the scanner did before it skipped
    /// the rest of a token.
    fn pans_trying_every_run(input: &[u8]) -> Vec<PanMatch> {
        let (mut found, mut position, mut last_match_end) = (Vec::new(), 0, None);
        while let Some(start) = next_digit(input, position) {
            let run_end = end_of_digits(input, start);
            match match_at(input, start, run_end, last_match_end) {
                Some(pan) => {
                    position = pan.end;
                    last_match_end = Some(pan.end);
                    found.push(pan);
                }
                None => position = run_end,
            }
        }
        found
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// Skipping a token's digits finds exactly what trying each of
        /// them finds: text of tokens, separators and card numbers (plain,
        /// grouped, as amounts and floats, glued to words or not).
        #[test]
        fn skipping_tokens_finds_what_trying_every_digit_run_finds(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("[a-f0-9]{1,12}").unwrap(),
                    proptest::string::string_regex("[A-Za-z_0-9]{1,6}").unwrap(),
                    proptest::string::string_regex("[ .,'+/_\\t-]{1,3}").unwrap(),
                    proptest::string::string_regex("[0-9]{1,5}").unwrap(),
                    proptest::sample::select(vec![
                        "4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111",
                        "378282246310005", "3782 822463 10005", "5555555555554444",
                        "4,111,111,111,111,111", "4.111111111111111e+15", "6011111111111117",
                        "4012888888881881.00", "+4111111111111111", "e+15",
                        "4111_1111_1111_1111", "4111111111111111x", "x4111111111111111",
                    ]).prop_map(str::to_owned),
                ],
                0..24,
            )
        ) {
            let input = parts.concat();
            proptest::prop_assert_eq!(
                find_pans(input.as_bytes()),
                pans_trying_every_run(input.as_bytes()),
                "{:?}", input
            );
        }
    }

    #[test]
    fn next_digit_finds_digits_in_and_across_blocks() {
        let mut text = vec![b'x'; 100];
        assert_eq!(next_digit(&text, 0), None);
        for at in [0, 1, 31, 32, 33, 63, 64, 99] {
            text.fill(b'x');
            text[at] = b'7';
            assert_eq!(next_digit(&text, 0), Some(at), "digit at {at}");
            assert_eq!(next_digit(&text, at), Some(at));
            assert_eq!(next_digit(&text, at + 1), None);
        }
        assert_eq!(next_digit(&text, 1000), None);
    }

    #[test]
    fn digit_bits_agrees_with_is_digit_for_every_byte_in_every_lane() {
        for byte in 0..=u8::MAX {
            for lane in 0..8 {
                let mut bytes = [b'x'; 8];
                bytes[lane] = byte;
                let expected = if is_digit(byte) {
                    0x80u64 << (8 * lane)
                } else {
                    0
                };
                assert_eq!(
                    digit_bits(u64::from_le_bytes(bytes)),
                    expected,
                    "{byte} in lane {lane}"
                );
                // Neighbours that are digits or high bytes do not disturb it.
                for filler in [b'0', b'9', 0xff, 0x00] {
                    let mut bytes = [filler; 8];
                    bytes[lane] = byte;
                    let bits = digit_bits(u64::from_le_bytes(bytes));
                    assert_eq!(bits & (0x80 << (8 * lane)) != 0, is_digit(byte));
                }
            }
        }
    }

    #[test]
    fn end_of_digits_at_every_length() {
        for length in 0..40 {
            let mut text = vec![b'7'; length];
            assert_eq!(end_of_digits(&text, 0), length);
            text.extend_from_slice(b"x123");
            assert_eq!(end_of_digits(&text, 0), length);
        }
    }

    #[test]
    fn only_digit_like_characters_leave_the_fast_path() {
        for text in [
            "plain ascii 4111",
            "\u{201c}quoted\u{201d} \u{2013} 2024",
            "a\u{a0}b",
            "日本語のテキスト\u{3000}です",
        ] {
            assert!(!needs_normalizing(text.as_bytes()), "{text}");
        }
        for text in [
            "４",
            "4111\u{a0}1111",
            "4111 \u{a0}1111",
            "4111\u{200b}1111",
            "４１１１\u{3000}１１１１",
        ] {
            assert!(needs_normalizing(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn iban_prefix_chain() {
        let text = b"GB82 WEST 1234 5698 7654 32";
        assert!(follows_iban_prefix(text, 10));
        let text = b"VISA 4111 1111 1111 1111";
        assert!(!follows_iban_prefix(text, 5));
        let text = b"paid with card 4111 1111 1111 1111";
        assert!(!follows_iban_prefix(text, 15));
    }
}
