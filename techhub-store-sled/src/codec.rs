//! The binary row format's primitives: fixed-width big-endian numbers, LEB128 lengths before variable-length
//! bytes, a tag byte before optional values, and times as microseconds since the Unix epoch (the core's clocks
//! have microsecond precision, so times round-trip exactly).

use std::fmt;

use chrono::{DateTime, Utc};
use techhub_core::storage::StoreError;
use uuid::Uuid;

/// Stored bytes are not what this crate writes: a row is cut short, has an unknown tag or format version.
#[derive(Debug)]
pub(crate) struct DecodeError(pub(crate) &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undecodable stored row: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for StoreError {
    fn from(error: DecodeError) -> Self {
        StoreError::corrupt(error)
    }
}

/// A failure to decode, as a store error (for `ok_or_else`).
pub(crate) fn corrupt(why: &'static str) -> StoreError {
    DecodeError(why).into()
}

/// Appends values to a row.
#[derive(Debug, Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// A writer appending to `bytes`.
    pub(crate) fn from_vec(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn i32(&mut self, value: i32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn time(&mut self, at: DateTime<Utc>) {
        self.0.extend_from_slice(&at.timestamp_micros().to_be_bytes());
    }

    pub(crate) fn uuid(&mut self, id: &Uuid) {
        self.0.extend_from_slice(id.as_bytes());
    }

    /// LEB128: lengths are mostly tiny, so they take one byte.
    fn length(&mut self, mut value: usize) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) {
        self.length(value.len());
        self.0.extend_from_slice(value);
    }

    pub(crate) fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    /// Bytes without a length: only as a row's last field, which runs to the end.
    pub(crate) fn rest(&mut self, value: &[u8]) {
        self.0.extend_from_slice(value);
    }

    /// A tag byte (0 for none, 1 for some), then the value.
    pub(crate) fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
            None => self.u8(0),
        }
    }
}

/// Reads values back in the order they were written.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Where the next value starts.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len()).ok_or(DecodeError("cut short"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("not a boolean")),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn time(&mut self) -> Result<DateTime<Utc>, DecodeError> {
        let micros = i64::from_be_bytes(self.array()?);
        DateTime::from_timestamp_micros(micros).ok_or(DecodeError("time out of range"))
    }

    pub(crate) fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid::from_bytes(self.array()?))
    }

    fn length(&mut self) -> Result<usize, DecodeError> {
        let mut value: usize = 0;
        for shift in (0..usize::BITS).step_by(7) {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f).checked_shl(shift).ok_or(DecodeError("length overflows"))?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("length overflows"))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.length()?;
        self.take(length)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError("text is not UTF-8"))
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// Everything after the last value read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    pub(crate) fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(DecodeError("not an option tag")),
        }
    }

    /// Checks that the row was read to its end: trailing bytes mean a format this code does not know.
    /// Whether every byte was read (a row written by an older version may end before its newer fields).
    pub(crate) fn rest_is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.at == self.bytes.len() { Ok(()) } else { Err(DecodeError("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let at = DateTime::from_timestamp_micros(1_893_456_000_123_456).expect("in range");
        let id = Uuid::now_v7();
        let long = "x".repeat(300);
        let mut writer = Writer::default();
        writer.u8(7);
        writer.bool(true);
        writer.u32(u32::MAX);
        writer.i32(-5);
        writer.u64(1 << 40);
        writer.time(at);
        writer.uuid(&id);
        writer.str(&long);
        writer.option(Some("yes"), |w, v| w.str(v));
        writer.option(None::<&str>, |w, v| w.str(v));
        writer.rest(b"tail");
        let bytes = writer.into_bytes();

        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8().expect("u8"), 7);
        assert!(reader.bool().expect("bool"));
        assert_eq!(reader.u32().expect("u32"), u32::MAX);
        assert_eq!(reader.i32().expect("i32"), -5);
        assert_eq!(reader.u64().expect("u64"), 1 << 40);
        assert_eq!(reader.time().expect("time"), at);
        assert_eq!(reader.uuid().expect("uuid"), id);
        assert_eq!(reader.str().expect("str"), long);
        assert_eq!(reader.option(|r| r.string()).expect("some"), Some("yes".to_owned()));
        assert_eq!(reader.option(|r| r.string()).expect("none"), None);
        assert_eq!(reader.rest(), b"tail");
        reader.finish().expect("read to the end");
    }

    #[test]
    fn short_or_malformed_rows_are_errors() {
        assert!(Reader::new(&[0, 0]).u32().is_err());
        assert!(Reader::new(&[5, b'a']).str().is_err());
        assert!(Reader::new(&[2]).bool().is_err());
        assert!(Reader::new(&[9]).option(|r| r.u8()).is_err());
        assert!(Reader::new(&[0xff; 12]).bytes().is_err());
        assert!(Reader::new(&[1, 2]).finish().is_err());
    }
}
