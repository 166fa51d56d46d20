//! Protobuf wire format: varints, field keys and length-delimited values. Reading never panics
//! and never allocates from a length it has not checked against the input.

use super::ProtoError;

/// Wire types.
pub(super) const VARINT: u8 = 0;
pub(super) const LEN: u8 = 2;

pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(ProtoError::malformed("unexpected EOF in a varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(ProtoError::malformed("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtoError::malformed("varint longer than 10 bytes"))
    }

    /// A field key: (number, wire type).
    pub fn key(&mut self) -> Result<(u32, u8), ProtoError> {
        let key = self.varint()?;
        let number = key >> 3;
        let wire = (key & 7) as u8;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(ProtoError::malformed(format!(
                "illegal field number {number}"
            )));
        }
        Ok((number as u32, wire))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| ProtoError::malformed("unexpected EOF in a length-delimited field"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
}

#[derive(Default)]
pub(super) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn key(&mut self, number: u32, wire: u8) {
        self.varint((u64::from(number) << 3) | u64::from(wire));
    }

    pub fn bytes_field(&mut self, number: u32, bytes: &[u8]) {
        self.key(number, LEN);
        self.varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    pub fn varint_field(&mut self, number: u32, v: u64) {
        self.key(number, VARINT);
        self.varint(v);
    }
}
