//! Reading and writing the pieces of PostgreSQL message bodies the masker
//! touches. Every read is bounds-checked: a body that does not hold what its
//! message type promises is a [`MaskFailure::Malformed`], never a panic.

use crate::masking::MaskFailure;

pub(crate) struct Reader<'a> {
    body: &'a [u8],
    position: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8], message: &'static str) -> Reader<'a> {
        Reader {
            body,
            position: 0,
            message,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn is_at_end(&self) -> bool {
        self.position == self.body.len()
    }

    fn malformed(&self, what: &'static str) -> MaskFailure {
        MaskFailure::Malformed {
            message: self.message,
            problem: what,
        }
    }

    pub(crate) fn bytes(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<&'a [u8], MaskFailure> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&end| end <= self.body.len())
            .ok_or_else(|| self.malformed(what))?;
        let bytes = &self.body[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, MaskFailure> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, MaskFailure> {
        let bytes = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, MaskFailure> {
        let bytes = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, MaskFailure> {
        Ok(self.i32(what)? as u32)
    }

    /// A NUL-terminated string, without its NUL.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], MaskFailure> {
        let rest = &self.body[self.position..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed(what))?;
        let text = &rest[..len];
        self.position += len + 1;
        Ok(text)
    }

    /// Fails unless the whole body was read.
    pub(crate) fn expect_end(&self) -> Result<(), MaskFailure> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err(self.malformed("trailing bytes after the last field"))
        }
    }
}

/// Appends a C string, refusing an interior NUL (which would end the field
/// early on the client and shift every field after it).
pub(crate) fn put_cstr(
    out: &mut Vec<u8>,
    text: &[u8],
    message: &'static str,
) -> Result<(), MaskFailure> {
    if text.contains(&0) {
        return Err(MaskFailure::Malformed {
            message,
            problem: "masked text holds a NUL byte",
        });
    }
    out.extend_from_slice(text);
    out.push(0);
    Ok(())
}
